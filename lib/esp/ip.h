// IP addresses, prefixes and the flow key of an inner packet.
//
// Runs in ipsec-forwarder (selectors of packets read from the TUN device and of
// decapsulated inbound packets) and in ipsec-policy (selectors from PF_KEY).
// parseInnerPacket() reads bytes that come from the network or from local
// applications: it trusts nothing, reads only inside the span, and returns
// nullopt for anything malformed. No allocation, no exceptions on that path.
#pragma once

#include <array>
#include <compare>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace ipsec::esp {

enum class IpFamily : uint8_t { kV4 = 4, kV6 = 6 };

// An IPv4 or IPv6 address as a value. IPv4 uses the first 4 bytes of the
// storage; the rest stays zero so that defaulted comparison is meaningful.
// Ordering: all IPv4 addresses sort before all IPv6 addresses.
class IpAddress {
 public:
  IpAddress() noexcept = default;  // 0.0.0.0

  static IpAddress v4(std::span<const uint8_t, 4> bytes) noexcept;
  static IpAddress v6(std::span<const uint8_t, 16> bytes) noexcept;
  // Host-order convenience for tests and configuration: v4(0xc0000201) is 192.0.2.1.
  static IpAddress v4(uint32_t hostOrder) noexcept;
  // Textual form as inet_pton accepts it ("192.0.2.1", "2001:db8::1").
  static std::optional<IpAddress> parse(std::string_view text);

  IpFamily family() const noexcept { return family_; }
  bool isV4() const noexcept { return family_ == IpFamily::kV4; }
  bool isV6() const noexcept { return family_ == IpFamily::kV6; }
  // 4 or 16 bytes, network order.
  std::span<const uint8_t> bytes() const noexcept {
    return {storage_.data(), isV4() ? size_t{4} : size_t{16}};
  }
  // Bit length of the address: 32 or 128.
  unsigned bitLength() const noexcept { return isV4() ? 32u : 128u; }
  std::string toString() const;

  friend auto operator<=>(const IpAddress&, const IpAddress&) = default;
  friend bool operator==(const IpAddress&, const IpAddress&) = default;

 private:
  IpFamily family_ = IpFamily::kV4;
  std::array<uint8_t, 16> storage_{};
};

// An address with a prefix length. The constructor-free aggregate keeps it a
// plain value; use make() or parse() to get one that is checked.
struct Prefix {
  IpAddress address;
  uint8_t length = 0;

  // nullopt if length exceeds the address's bit length.
  static std::optional<Prefix> make(const IpAddress& address, unsigned length);
  // "192.0.2.0/24", "2001:db8::/32"; a bare address means a host prefix.
  static std::optional<Prefix> parse(std::string_view text);
  // True if `a` has the same family and its first `length` bits equal ours.
  bool contains(const IpAddress& a) const noexcept;
  std::string toString() const;

  friend bool operator==(const Prefix&, const Prefix&) = default;
};

// Upper-layer protocol numbers the selectors care about.
inline constexpr uint8_t kProtoIcmp = 1;
inline constexpr uint8_t kProtoTcp = 6;
inline constexpr uint8_t kProtoUdp = 17;
inline constexpr uint8_t kProtoIpv6 = 41;
inline constexpr uint8_t kProtoIcmpv6 = 58;
inline constexpr uint8_t kProtoNoNext = 59;
inline constexpr uint8_t kProtoSctp = 132;

// What a security policy selects on (RFC 4301 §4.4.1.1).
struct FlowKey {
  uint8_t version = 0;  // 4 or 6
  IpAddress src;
  IpAddress dst;
  uint8_t proto = 0;     // upper-layer protocol after IPv6 extension headers
  uint16_t srcPort = 0;  // TCP/UDP/SCTP port; ICMP/ICMPv6 type (as setkey)
  uint16_t dstPort = 0;  // TCP/UDP/SCTP port; ICMP/ICMPv6 code
  // A non-first fragment carries no transport header: ports are 0 and only
  // policies that do not select on ports may match it (RFC 4301 §7).
  bool nonInitialFragment = false;

  friend bool operator==(const FlowKey&, const FlowKey&) = default;
};

// Reads the IPv4 or IPv6 header (and IPv6 hop-by-hop, routing, destination
// options and fragment headers) at the start of `packet`. Rejects: unknown
// version, IPv4 IHL < 5 or beyond the buffer, total length shorter than the
// header or longer than the buffer, IPv6 payload length beyond the buffer or
// 0 (jumbograms), truncated extension headers, more than 8 extension headers,
// a first fragment whose TCP/UDP/SCTP/ICMP header is cut short.
// Bytes after the IP total length (link padding) are ignored.
std::optional<FlowKey> parseInnerPacket(std::span<const uint8_t> packet) noexcept;

}  // namespace ipsec::esp
