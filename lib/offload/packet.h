// The IPv4/IPv6 + TCP/UDP layout of one packet and the Internet checksum, as
// segmentation and coalescing need them. Pure functions on byte buffers, no
// I/O, noexcept; the bytes are untrusted (a local application's packet from
// the TUN, or a decrypted inner packet): every length is checked against the
// buffer before it is used.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace ipsec::offload {

inline constexpr std::uint8_t kProtoTcp = 6;
inline constexpr std::uint8_t kProtoUdp = 17;
inline constexpr std::size_t kIpv4MinHeader = 20;
inline constexpr std::size_t kIpv6Header = 40;
inline constexpr std::size_t kTcpMinHeader = 20;
inline constexpr std::size_t kUdpHeader = 8;
// Where the checksum field sits in each transport header.
inline constexpr std::size_t kTcpChecksumOffset = 16;
inline constexpr std::size_t kUdpChecksumOffset = 6;
// An IPv4 total length is 16 bits, and so is an IPv6 payload length (IPv6
// jumbograms, BIG TCP, are not offered by a TUN). A coalesced packet is kept
// within this in total for both, as the kernel's GRO keeps it within 64 KiB.
inline constexpr std::size_t kMaxPacket = 65535;

enum class LayoutError : std::uint8_t {
  kOk,
  kShort,               // shorter than its IP header, or than its transport header
  kBadVersion,          // neither IPv4 nor IPv6
  kBadIpv4HeaderLength, // IHL below 5 or beyond the packet
  kLengthMismatch,      // IPv4 total length / IPv6 payload length is not the packet's
  kFragment,            // IPv4 MF set or a fragment offset
  kNotTcpOrUdp,         // another protocol, or an IPv6 extension header before TCP/UDP
  kBadTcpHeaderLength,  // TCP data offset below 5 or beyond the packet
};
const char* toString(LayoutError error) noexcept;

// Offsets of one packet's headers; all within the buffer when error == kOk.
struct PacketLayout {
  LayoutError error = LayoutError::kOk;
  std::uint8_t version = 0;   // 4 or 6
  std::uint8_t protocol = 0;  // kProtoTcp or kProtoUdp
  std::uint16_t l4Offset = 0;      // = the IP header's length (options included)
  std::uint16_t headerLength = 0;  // IP + TCP/UDP headers (TCP options included)
  std::uint32_t length = 0;        // the whole packet
  bool ok() const noexcept { return error == LayoutError::kOk; }
  std::uint32_t payloadLength() const noexcept { return length - headerLength; }
};
PacketLayout parseLayout(std::span<const std::uint8_t> packet) noexcept;

// One's-complement sum (RFC 1071) of `data` added to `sum`, unfolded.
std::uint32_t checksumAdd(std::uint32_t sum, std::span<const std::uint8_t> data) noexcept;
// Folds a sum to 16 bits (not complemented).
std::uint16_t checksumFold(std::uint32_t sum) noexcept;
// The pseudo-header sum (RFC 793/768 for IPv4, RFC 8200 §8.1 for IPv6) of the
// packet's addresses, `protocol` and a transport length of `l4Length`, unfolded.
std::uint32_t pseudoHeaderSum(std::span<const std::uint8_t> packet, const PacketLayout& layout,
                              std::uint32_t l4Length) noexcept;
// The IPv4 header checksum over header[0, ihl*4), its own field counted as 0.
std::uint16_t ipv4HeaderChecksum(std::span<const std::uint8_t> header) noexcept;
// Whether the TCP/UDP checksum of a whole packet verifies (a UDP checksum of
// 0 over IPv4 means "none" and passes).
bool transportChecksumValid(std::span<const std::uint8_t> packet, const PacketLayout& layout) noexcept;

inline std::uint16_t load16(const std::uint8_t* p) noexcept {
  return static_cast<std::uint16_t>(p[0] << 8 | p[1]);
}
inline std::uint32_t load32(const std::uint8_t* p) noexcept {
  return std::uint32_t{p[0]} << 24 | std::uint32_t{p[1]} << 16 | std::uint32_t{p[2]} << 8 | p[3];
}
inline void store16(std::uint8_t* p, std::uint16_t v) noexcept {
  p[0] = static_cast<std::uint8_t>(v >> 8);
  p[1] = static_cast<std::uint8_t>(v);
}
inline void store32(std::uint8_t* p, std::uint32_t v) noexcept {
  p[0] = static_cast<std::uint8_t>(v >> 24);
  p[1] = static_cast<std::uint8_t>(v >> 16);
  p[2] = static_cast<std::uint8_t>(v >> 8);
  p[3] = static_cast<std::uint8_t>(v);
}

}  // namespace ipsec::offload
