// NAT-OA (RFC 3948 §3.1.2): the TCP/UDP checksum of a transport-mode packet
// that came ESP-in-UDP through a NAT.
//
// Runs in ipsec-forwarder, after the broker verified the ICV and decrypted, on
// the packet whose IP header transport mode rebuilt from the outer one. The
// sender computed its TCP/UDP checksum over its own view of the addresses (its
// private source, the destination it dialled); the NAT rewrote the outer
// header, so the pseudo-header the kernel checks now names other addresses.
//
// What we do, as FreeBSD's udp_ipsec_adjust_cksum (net.inet.ipsec.natt_cksum_policy
// 0, "auto"); Linux instead marks every such packet CHECKSUM_UNNECESSARY, which
// a TUN cannot say:
//   - the SA has an original address (SADB_X_EXT_NAT_T_OA/OAI/OAR): update the
//     checksum incrementally (RFC 1624, eqn. 3) from the original address(es)
//     to the packet's ones. The sender's checksum keeps covering the payload
//     end to end, and a wrong OA gives a wrong checksum the kernel drops; a UDP
//     checksum of zero (IPv4: none sent) is left alone.
//   - no original address: UDP over IPv4 gets checksum 0 (none, RFC 768), as
//     FreeBSD; TCP, and UDP over IPv6 (where 0 is not allowed, RFC 8200 §8.1),
//     get their checksum recomputed. Both amount to Linux's "unnecessary": the
//     ICV already authenticated every byte, and the address the checksum
//     would protect was rewritten by the NAT anyway.
// Other protocols (ICMP's checksum has no pseudo-header; ICMPv6's has, but
// RFC 3948 names TCP and UDP only) and IPv6 packets with extension headers
// after ESP are left as they are. Inbound bytes are untrusted: a length that
// does not fit is kMalformed, never a read past the packet. noexcept, no
// allocation.
#pragma once

#include <cstdint>
#include <optional>
#include <span>

#include "esp/ip.h"
#include "esp/transport.h"

namespace ipsec::esp {

// The SA's original addresses; either may be absent.
struct NatOriginalAddresses {
  std::optional<IpAddress> src;  // the peer's own (pre-NAT) source address
  std::optional<IpAddress> dst;  // the destination the peer addressed
  bool any() const noexcept { return src.has_value() || dst.has_value(); }
};

enum class NatOaFixup : std::uint8_t {
  kNotNeeded,   // not TCP/UDP, a UDP checksum of 0 kept, or an IPv6 extension header
  kAdjusted,    // incremental update from the original addresses
  kZeroed,      // UDP over IPv4 without an original address: checksum cleared
  kRecomputed,  // TCP, or UDP over IPv6, without an original address
  kMalformed,   // the IP or TCP/UDP header does not fit in the packet
};

// packet: a whole IPv4 or IPv6 packet (header first) whose addresses are the
// ones the kernel will check. Fixes its TCP/UDP checksum in place.
NatOaFixup fixNatOaChecksum(std::span<std::uint8_t> packet, const NatOriginalAddresses& oa) noexcept;

// Inbound IPv4 transport mode in UDP: the socket gave the UDP payload without
// any IP header, so write a fresh one in front of the payload at
// espOffset + d.offset (moving the payload up first if fewer than 20 bytes
// are before it): protocol = next header, total length, checksum.
struct Ipv4HeaderFields {
  IpAddress src, dst;
  std::uint8_t tos = 0;
  std::uint8_t ttl = 64;
};
RestoreResult restoreIpv4FromUdp(std::span<std::uint8_t> buf, std::size_t espOffset, const DecapResult& d,
                                 const Ipv4HeaderFields& fields) noexcept;

// The Internet checksum's one's-complement sum helpers, exposed for tests:
// the folded 16-bit one's-complement sum of `bytes` (odd length padded with 0)
// added to `initial`.
std::uint16_t onesComplementSum(std::span<const std::uint8_t> bytes, std::uint32_t initial = 0) noexcept;

}  // namespace ipsec::esp
