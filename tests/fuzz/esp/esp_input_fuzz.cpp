// libFuzzer target: inbound ESP parsing on untrusted bytes, as ipsec-forwarder
// runs it (parseHeader, then decapsulate with each real layout). The first
// input byte picks the layout; the rest is the packet.
#include <cstddef>
#include <cstdint>
#include <span>

#include "esp/esp.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ipsec::esp;
  if (size == 0) return 0;
  static constexpr EspLayout kLayouts[] = {{8, 16, 4}, {16, 16, 16}, {16, 0, 16}, {0, 12, 4}, {0, 32, 4}};
  const EspLayout& layout = kLayouts[data[0] % (sizeof kLayouts / sizeof kLayouts[0])];
  const std::span<const uint8_t> packet(data + 1, size - 1);
  const HeaderResult h = parseHeader(packet);
  if (!h.ok() && h.error != EspError::kReservedSpi) return 0;
  const DecapResult d = decapsulate(packet, layout);
  if (d.error == EspError::kOk || d.error == EspError::kDummyPacket) {
    // The inner packet must lie inside the ESP packet, after header and IV.
    if (d.offset != layout.headroom() || d.offset + d.length > packet.size()) __builtin_trap();
  }
  (void)toString(d.error);
  return 0;
}
