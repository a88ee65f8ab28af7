// PF_KEY's view of an address: the IPv4/IPv6 address and port carried in the
// sockaddr that follows a sadb_address or sits inside a tunnel ipsecrequest.
// Used by ipsec-policy (decoding untrusted client requests) and by the setkey
// tool (encoding). Deliberately local to lib/pfkey so the codec has no
// dependency on the data path's address type; converting between the two is
// the caller's business.
#pragma once

#include <sys/socket.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace ipsec::pfkey {

struct SockAddress {
  sa_family_t family = AF_UNSPEC;  // AF_INET or AF_INET6 once valid
  std::array<uint8_t, 16> bytes{};  // network order; IPv4 uses bytes[0..3]
  uint16_t port = 0;                // host order (the sockaddr holds it in network order)

  static SockAddress v4(std::array<uint8_t, 4> a, uint16_t port = 0) noexcept;
  static SockAddress v6(const std::array<uint8_t, 16>& a, uint16_t port = 0) noexcept;
  // Parses a numeric address ("192.0.2.1", "2001:db8::1"); no port, no prefix.
  static std::optional<SockAddress> fromString(std::string_view text);

  bool isV4() const noexcept { return family == AF_INET; }
  bool isV6() const noexcept { return family == AF_INET6; }
  uint8_t fullPrefix() const noexcept { return isV6() ? 128 : 32; }
  // Size of sockaddr_in / sockaddr_in6 (16 / 28), 0 for an invalid family.
  size_t sockaddrSize() const noexcept;
  // Writes sockaddrSize() bytes (zeroing sin_zero, flowinfo, scope id).
  void writeSockaddr(uint8_t* out) const noexcept;
  // Reads a sockaddr_in/sockaddr_in6 from the front of `in`. nullopt if the
  // family is neither or `in` is too short for it.
  static std::optional<SockAddress> readSockaddr(std::span<const uint8_t> in) noexcept;

  // "192.0.2.1", "2001:db8::1" (no port).
  std::string toString() const;
  // Address equality (family and bytes; the port is compared separately).
  bool sameAddress(const SockAddress& o) const noexcept {
    return family == o.family && bytes == o.bytes;
  }
  bool operator==(const SockAddress&) const = default;
};

}  // namespace ipsec::pfkey
