// libFuzzer target: esp::parseRingFrame on arbitrary frames. The input is a
// frame's bytes (its tpacket2_hdr, then whatever the network sent), cut or
// padded to a ring frame's size as the forwarder always passes one whole;
// the parser must never read outside it, and a packet it returns lies inside.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "esp/esp_ring.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace ipsec::esp;
  // Whole frames and short ones (a header that does not fit must be refused too).
  const std::size_t length = size > 0 && (data[0] & 1) ? std::min<std::size_t>(size, kEspRingFrameSize) : kEspRingFrameSize;
  std::vector<std::uint8_t> frame(length, 0);
  std::memcpy(frame.data(), data, std::min(size, length));
  const RingEsp r = parseRingFrame(frame);
  if (r.error == RingFrameError::kNone) {
    if (r.packet.data() < frame.data() || r.packet.data() + r.packet.size() > frame.data() + frame.size()) std::abort();
    if (r.espOffset < 20 || r.espOffset > r.packet.size()) std::abort();
  }
  return 0;
}
