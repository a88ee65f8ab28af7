// libFuzzer target for ipsecd's relay of a child's output (the bytes a
// compromised child writes). The contract: every relayed line is one line
// ("\n" only at its end), holds no control byte and no C1 control, and
// stays within its bound (kMaxLineBytes, each byte escaped at most to four).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "child_output.h"

namespace {

void check(std::string_view line) {
  if (line.empty() || line.back() != '\n') std::abort();
  const std::string_view body = line.substr(0, line.size() - 1);
  // time + "ipsec-forwarder[1] L output: " + the escaped line + " [truncated]"
  if (body.size() > 64 + 4 * ipsec::supervisor::kMaxLineBytes + 16) std::abort();
  for (std::size_t i = 0; i < body.size(); ++i) {
    const auto c = static_cast<unsigned char>(body[i]);
    if (c < 0x20 || c == 0x7f) std::abort();
    if (c == 0xc2 && i + 1 < body.size() && static_cast<unsigned char>(body[i + 1]) < 0xa0) std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  ipsec::supervisor::OutputCounters counters;
  ipsec::supervisor::OutputRelay relay("ipsec-forwarder", 1, counters, check);
  // The first byte splits the input in two reads, as a pipe may.
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  const std::size_t cut = size == 0 ? 0 : data[0] % size;
  relay.feed(bytes.substr(0, cut));
  relay.feed(bytes.substr(cut));
  relay.finish();
  return 0;
}
