// Coalescing of a burst of inner packets into TCP (and UDP) super-packets
// (GRO in software) for one write() each to a TUN with TSO/USO, following the
// rules of the kernel's inet_gro_receive / ipv6_gro_receive / tcp_gro_receive
// (udp_gro_receive_segment for UDP). Runs in
// ipsec-forwarder on the inbound path: the packets are decrypted inner
// packets (authenticated, but sent by the peer: any bytes); each is checked
// before it is merged. Pure functions, no I/O, no allocation, noexcept.
//
// Consecutive packets of one TCP flow merge when the kernel's GRO would merge
// them: same addresses, ports, ACK, TCP header but for CWR/FIN/PSH (data
// offset, flags, window and options bytewise), same TOS/TTL/DF (IPv4) or
// first word and hop limit (IPv6); IPv4 without options and not a fragment,
// IPv6 without extension headers; ids +1 per packet (IPv4); each sequence
// number following the last byte; every payload as long as the first's (the
// gso_size) except a shorter last one; a packet with CWR starts a group, one
// with PSH or FIN ends it, one with SYN/RST/URG, no payload, or a bad IPv4 or
// TCP checksum stays alone; at most kMaxPacket bytes and kMaxSegments
// packets. Only neighbours merge: nothing is reordered, nothing is dropped —
// a packet that does not merge is its own group, written as it came.
//
// A merged group is written as the first packet's headers (IPv4 total length
// and header checksum, IPv6 payload length fixed; PSH/FIN of the last packet)
// then every payload in order, with the virtio_net_hdr a TUN write expects:
// NEEDS_CSUM at the TCP checksum, which holds the pseudo-header sum over the
// whole TCP length (as tcp_v4_send_check leaves it for TSO), gso_type TCPV4/
// TCPV6 (| ECN when the first packet has CWR, as tcp_gro_complete), gso_size
// the first payload's length, hdr_len the headers' length.
//
// UDP datagrams merge only when asked for (CoalesceOptions::udp: the TUN
// granted USO, so the kernel takes UDP_L4 super-packets), by the rules of
// udp_gro_receive_segment: the same addresses, ports and IP fields as for
// TCP, every payload as long as the first's but a shorter last one (which
// ends the group); the merged datagram gets the whole UDP length, the
// pseudo-header sum in its checksum and gso_type UDP_L4. An IPv4 UDP
// checksum of 0 (none) passes the check, and the merged packet gets a real
// one from the kernel.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "offload/packet.h"
#include "offload/vnet_header.h"

namespace ipsec::offload {

// Packets burst[first, first + count) written as one packet of `length`
// bytes behind `header` (gso none, flags 0, when count == 1).
struct CoalesceGroup {
  std::uint32_t first = 0;
  std::uint32_t count = 0;
  std::uint32_t length = 0;
  VnetHeader header;
};

// Groups `burst` in order into `groups`; returns how many were filled. The
// groups cover the burst from its start: with groups.size() >= burst.size()
// all of it, else as much as fits (the caller plans the rest again).
struct CoalesceOptions {
  bool udp = false;  // merge UDP too (TUN_F_USO4 and TUN_F_USO6 granted)
};

std::size_t planCoalesce(std::span<const std::span<const std::uint8_t>> burst, std::span<CoalesceGroup> groups,
                         const CoalesceOptions& options = {}) noexcept;

// The longest headers a merged packet has: IPv6 (merges are never IPv4 with
// options) and a TCP header with 40 bytes of options.
inline constexpr std::size_t kMaxMergedHeaders = kIpv6Header + 60;

// `group` of the same, unchanged `burst` as the pieces of one TUN write, so
// that no payload byte is copied: slices[0] is the merged packet's headers,
// written into `headers` (the first packet's, with the merged lengths,
// PSH/FIN and partial checksum), and slices[1 + k] is packet k's payload
// where it lies in the burst. A group of one packet is one slice, the packet
// itself. Returns how many slices were filled (count + 1, or 1 for a lone
// packet), 0 if `slices` is too short or the burst does not match the group.
// The slices borrow the burst's bytes and `headers`: write them before
// either is reused.
std::size_t sliceCoalesced(const CoalesceGroup& group, std::span<const std::span<const std::uint8_t>> burst,
                           std::span<std::uint8_t, kMaxMergedHeaders> headers,
                           std::span<std::span<const std::uint8_t>> slices) noexcept;

// The slices of sliceCoalesced gathered into `out`: returns the merged
// packet's length, or 0 if `out` is shorter than group.length or the burst
// does not match the group. `out` may be the first packet's own buffer
// (coalescing in place: its headers stay, the later payloads are appended
// behind it), or any buffer that does not overlap a later packet of the
// group. For tests, the fuzz target and tools; the forwarder writes the
// slices (one writev) instead.
std::size_t writeCoalesced(const CoalesceGroup& group, std::span<const std::span<const std::uint8_t>> burst,
                           std::span<std::uint8_t> out) noexcept;

}  // namespace ipsec::offload
