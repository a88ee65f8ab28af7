// libFuzzer target: arbitrary bytes as one received control datagram.
//
// Drives the step every Channel runs on a datagram from a peer process it
// does not trust (lib/control/wire.h decodeDatagram): framing, segment table,
// bounds, nesting and traversal limits. An accepted message is then read
// generically (copied into a builder, which visits every object), as a
// handler would read it, to show that acceptance really means safe to read.
#include <capnp/message.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "control/wire.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > ipsec::control::kMaxMessageBytes) return 0;
  // recvmsg lands in a word-aligned buffer; so does the fuzz input.
  std::vector<capnp::word> words((size + sizeof(capnp::word) - 1) / sizeof(capnp::word));
  if (size != 0) std::memcpy(static_cast<void*>(words.data()), data, size);
  std::string reason;
  auto reader = ipsec::control::decodeDatagram(kj::ArrayPtr<const capnp::word>(words.data(), words.size()), size,
                                               reason);
  if (!reader) return 0;
  try {
    capnp::MallocMessageBuilder copy;
    copy.setRoot(reader->getRoot<capnp::AnyPointer>());
  } catch (const kj::Exception&) {
    // Refusing is fine (e.g. a capability pointer); crashing is not.
  }
  return 0;
}
