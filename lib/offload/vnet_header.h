// The virtio_net_hdr (<linux/virtio_net.h>) in front of every packet read from
// or written to a TUN opened with IFF_VNET_HDR. Runs in ipsec-forwarder.
//
// On a read the kernel wrote the header, but from a local application's
// packet (any process may send through the tunnel): it is checked against the
// packet behind it before segmentation trusts any of its fields, and an
// inconsistent one is refused with a reason (one counter per reason).
//
// Byte order: a TUN's header is in the host's order unless TUNSETVNETLE/BE
// is set, which the forwarder never does (tun_is_little_endian: legacy
// virtio is native-endian).
//
// hdr_len is not trusted as the length of the headers: for a TUN read it is
// the length of the skb's linear part (virtio_net_hdr_from_skb), which may
// be more or less than the headers; the headers are measured from the packet.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace ipsec::offload {

// The legacy header without num_buffers: TUNSETVNETHDRSZ is set to this.
inline constexpr std::size_t kVnetHeaderSize = 10;

inline constexpr std::uint8_t kVnetFlagNeedsChecksum = 1;  // VIRTIO_NET_HDR_F_NEEDS_CSUM
inline constexpr std::uint8_t kVnetFlagDataValid = 2;      // VIRTIO_NET_HDR_F_DATA_VALID
inline constexpr std::uint8_t kGsoNone = 0;                // VIRTIO_NET_HDR_GSO_NONE
inline constexpr std::uint8_t kGsoTcpV4 = 1;               // VIRTIO_NET_HDR_GSO_TCPV4
inline constexpr std::uint8_t kGsoUdpUfo = 3;              // VIRTIO_NET_HDR_GSO_UDP (IPv4 fragmentation): refused
inline constexpr std::uint8_t kGsoTcpV6 = 4;               // VIRTIO_NET_HDR_GSO_TCPV6
inline constexpr std::uint8_t kGsoUdpL4 = 5;               // VIRTIO_NET_HDR_GSO_UDP_L4 (USO, Linux 4.18+)
inline constexpr std::uint8_t kGsoEcn = 0x80;              // VIRTIO_NET_HDR_GSO_ECN

// The header's fields, in host order.
struct VnetHeader {
  std::uint8_t flags = 0;
  std::uint8_t gsoType = kGsoNone;  // kGso* possibly | kGsoEcn
  std::uint16_t headerLength = 0;   // hdr_len
  std::uint16_t gsoSize = 0;        // payload bytes per segment
  std::uint16_t checksumStart = 0;  // csum_start: where the summed bytes begin
  std::uint16_t checksumOffset = 0; // csum_offset: the checksum field, from checksumStart

  std::uint8_t gsoKind() const noexcept { return gsoType & static_cast<std::uint8_t>(~kGsoEcn); }
  bool needsChecksum() const noexcept { return (flags & kVnetFlagNeedsChecksum) != 0; }
  bool operator==(const VnetHeader&) const = default;
};

VnetHeader readVnetHeader(std::span<const std::uint8_t, kVnetHeaderSize> bytes) noexcept;
void writeVnetHeader(const VnetHeader& header, std::span<std::uint8_t, kVnetHeaderSize> bytes) noexcept;

enum class VnetError : std::uint8_t {
  kOk,
  kUnknownFlags,             // a flag other than NEEDS_CSUM and DATA_VALID
  kUnknownGsoType,           // UFO (kGsoUdpUfo) or a type Linux does not define
  kEcnWithoutTcp,            // the ECN bit on no GSO or on UDP
  kGsoWithoutNeedsChecksum,  // GSO with a complete checksum: the kernel never sends it
  kZeroGsoSize,              // GSO with gso_size 0
  kChecksumOutsidePacket,    // csum_start + csum_offset + 2 beyond the packet
  kBadPacket,                // GSO on a packet that is not IPv4/IPv6 + TCP/UDP (see layoutError)
  kGsoProtocolMismatch,      // TCPV4 on IPv6 or on UDP, UDP_L4 on TCP, ...
  kChecksumNotAtTransport,   // GSO with csum_start/offset other than the TCP/UDP checksum
  kTooManySegments,          // more than kMaxSegments segments
};
const char* toString(VnetError error) noexcept;

// A super-packet is cut into at most this many segments (a 64 KiB packet at
// an MSS of 64); a gso_size that small is refused rather than served.
inline constexpr std::size_t kMaxSegments = 1024;

// Whether `header` is consistent with `packet` (the bytes after the header).
// For GSO: the packet parses as IPv4/IPv6 + TCP/UDP of the GSO type and the
// checksum fields name its TCP/UDP checksum. Without GSO, any packet may come
// (ARP-less TUN: IP of any protocol); NEEDS_CSUM only has to lie inside it.
VnetError checkVnetHeader(const VnetHeader& header, std::span<const std::uint8_t> packet) noexcept;

}  // namespace ipsec::offload
