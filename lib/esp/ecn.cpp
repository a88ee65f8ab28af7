// See ecn.h.
#include "esp/ecn.h"

namespace ipsec::esp {

std::uint8_t trafficClass(std::span<const std::uint8_t> p) noexcept {
  if (p.size() < 2) return 0;
  if ((p[0] >> 4) == 4) return p[1];
  if ((p[0] >> 4) == 6) return static_cast<std::uint8_t>(((p[0] & 0x0f) << 4) | (p[1] >> 4));
  return 0;
}

bool markCe(std::span<std::uint8_t> p) noexcept {
  if (p.size() < 2) return false;
  const unsigned version = p[0] >> 4;
  if (version == 6) {
    p[1] = static_cast<std::uint8_t>(p[1] | (kEcnCe << 4));  // the traffic class's low bits
    return true;
  }
  if (version != 4 || p.size() < 20) return false;
  const std::uint16_t oldWord = static_cast<std::uint16_t>((p[0] << 8) | p[1]);
  p[1] = static_cast<std::uint8_t>(p[1] | kEcnCe);
  const std::uint16_t newWord = static_cast<std::uint16_t>((p[0] << 8) | p[1]);
  // RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m')
  std::uint32_t sum = static_cast<std::uint16_t>(~((p[10] << 8) | p[11]));
  sum += static_cast<std::uint16_t>(~oldWord);
  sum += newWord;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  const std::uint16_t check = static_cast<std::uint16_t>(~sum);
  p[10] = static_cast<std::uint8_t>(check >> 8);
  p[11] = static_cast<std::uint8_t>(check);
  return true;
}

}  // namespace ipsec::esp
