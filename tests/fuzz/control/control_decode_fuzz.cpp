// libFuzzer target: arbitrary bytes as one received control datagram.
//
// Drives the step every Channel runs on a datagram from a peer process it
// does not trust (lib/control/wire.h DatagramMessages): framing, the split of
// a coalesced datagram into its messages, each message's segment table,
// bounds, nesting and traversal limits. The first input byte says how many
// descriptors "arrived" with it (0 or 1), since a datagram with descriptors
// must hold one message. Every accepted message is then read generically
// (copied into a builder, which visits every object), as a handler would
// read it, to show that acceptance really means safe to read.
#include <capnp/message.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "control/wire.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0 || size - 1 > ipsec::control::kMaxMessageBytes) return 0;
  const std::size_t fds = data[0] & 1;
  ++data;
  --size;
  // recvmsg lands in a word-aligned buffer; so does the fuzz input.
  std::vector<capnp::word> words((size + sizeof(capnp::word) - 1) / sizeof(capnp::word));
  if (size != 0) std::memcpy(static_cast<void*>(words.data()), data, size);
  ipsec::control::DatagramMessages messages(kj::ArrayPtr<const capnp::word>(words.data(), words.size()), size, fds);
  std::string reason;
  while (auto reader = messages.next(reason)) {
    try {
      capnp::MallocMessageBuilder copy;
      copy.setRoot(reader->getRoot<capnp::AnyPointer>());
    } catch (const kj::Exception&) {
      // Refusing is fine (e.g. a capability pointer); crashing is not.
    }
  }
  return 0;
}
