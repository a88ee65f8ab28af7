// libFuzzer target: a UDP payload on the NAT-T port, as ipsec-forwarder
// classifies it (RFC 3948 §2), and then, for ESP, parsed as the ESP header it
// must start with. Checks the classification's promises.
#include <cstddef>
#include <cstdint>
#include <span>

#include "esp/esp.h"
#include "esp/udp_encap.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ipsec::esp;
  const std::span<const uint8_t> payload(data, size);
  const UdpPayloadKind kind = classifyUdpPayload(payload);
  switch (kind) {
    case UdpPayloadKind::kKeepalive:
      if (size != 1 || data[0] != kNatKeepalive) __builtin_trap();
      break;
    case UdpPayloadKind::kIke:
      if (size < 4 || data[0] || data[1] || data[2] || data[3]) __builtin_trap();
      break;
    case UdpPayloadKind::kEsp: {
      // ESP from UDP always has a header to parse and a non-zero SPI.
      const HeaderResult h = parseHeader(payload);
      if (!h.ok() || h.header.spi == 0) __builtin_trap();
      break;
    }
    case UdpPayloadKind::kBad:
      if (size >= kEspHeaderLength && (data[0] | data[1] | data[2] | data[3]) != 0) __builtin_trap();
      break;
  }
  (void)toString(kind);
  return 0;
}
