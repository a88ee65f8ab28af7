// Segmentation of a TUN super-packet (GSO in software), as the kernel's
// tcp_gso_segment / __udp_gso_segment would cut it for a device without TSO
// or USO. Runs in ipsec-forwarder on the outbound path: the packet and its
// virtio_net_hdr come from a TUN read (a local application's data, checked by
// checkVnetHeader first). Pure functions, no I/O, no allocation, noexcept.
//
// The plan is computed once; each segment is then written on its own into
// whatever buffer the caller has for it (a pool buffer at an offset that
// leaves headroom for the outer headers), in any order, as many times as the
// caller likes. The plan holds no pointer: the packet is passed again to each
// writeSegment call, and must stay alive and unchanged in between.
//
// Per segment: the IP and TCP/UDP headers are copied; IPv4 total length, id
// (+1 per segment) and header checksum, IPv6 payload length, TCP sequence
// number (+ gso_size per segment), UDP length are rewritten; FIN and PSH stay
// only on the last segment and CWR only on the first; the TCP/UDP checksum is
// computed whole (not completed from the partial sum the kernel left).
// Without GSO the packet is one segment, its NEEDS_CSUM checksum completed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "offload/packet.h"
#include "offload/vnet_header.h"

namespace ipsec::offload {

struct SegmentPlan {
  VnetError error = VnetError::kOk;
  LayoutError layoutError = LayoutError::kOk;  // why, when error == kBadPacket
  VnetHeader header;
  PacketLayout layout;          // GSO only: the super-packet's headers
  std::uint32_t length = 0;     // the super-packet's length
  std::uint32_t count = 0;      // segments; 0 when error != kOk
  std::uint16_t segmentSize = 0;  // GSO: payload bytes in each segment but the last

  bool ok() const noexcept { return error == VnetError::kOk; }
  bool gso() const noexcept { return header.gsoKind() != kGsoNone; }
  // Bytes of segment i (headers included).
  std::uint32_t segmentLength(std::uint32_t i) const noexcept;
  // The longest segment: what every output buffer must hold.
  std::uint32_t maxSegmentLength() const noexcept { return count == 0 ? 0 : segmentLength(0); }
};

// Checks `header` against `packet` and plans the cut.
SegmentPlan planSegments(const VnetHeader& header, std::span<const std::uint8_t> packet) noexcept;

// Writes segment `index` of `packet` into the start of `out`; returns its
// length, or 0 (nothing written) if the plan failed, `index` is past the
// last segment, `packet` is not the planned length or `out` is too short.
std::size_t writeSegment(const SegmentPlan& plan, std::span<const std::uint8_t> packet, std::uint32_t index,
                         std::span<std::uint8_t> out) noexcept;

// Without GSO: completes a NEEDS_CSUM checksum in place (skb_checksum_help:
// the one's-complement sum from checksumStart to the end, over the partial
// pseudo-header sum already in the field; a result of 0 is sent as 0xffff).
// Returns false, packet unchanged, if the checksum fields lie outside it.
// Nothing to do (true) without NEEDS_CSUM.
bool completeChecksum(const VnetHeader& header, std::span<std::uint8_t> packet) noexcept;

}  // namespace ipsec::offload
