// ipsec-forwarder: the outbound packet core for a TUN super-packet whose route
// is one lone ESP tunnel SA (issue 13 item 1) — its segments, as lib/offload's
// writeSegment cuts them (the kernel's GSO rules), each framed as an ESP
// packet, back to back in one pool buffer at a fixed stride, so that the whole
// super-packet is one multi-segment seal request (proto/ring_abi.h: segment i
// at offset + i * stride, all but the last stride long) with consecutive
// sequence numbers. All segments but a super-packet's last have the same
// inner length (gso_size + headers), hence the same ESP length and padding.
//
// No I/O, no clock, no counters touched, nothing of the SA changed: it returns
// the layout and the shell (super_packet.cpp) takes the sequence numbers and
// queues the request. It frames as many segments as can go this way and stops
// before the first that cannot — the buffer or kMaxSegments full, the SA's
// granted sequence numbers used up, a segment beyond the SA's MTU (ICMP or
// fragments) or one TFC would pad — and the shell hands the rest to the
// per-segment path (outboundPacket), which judges them as today. The bytes
// come from local hosts but are parsed as untrusted all the same
// (tests/fuzz/forwarder/esp_out_fuzz).
#pragma once

#include <array>
#include <cstdint>
#include <span>

#include "offload/segment.h"
#include "proto/ring_abi.h"
#include "ring/pool.h"
#include "tables.h"
#include "tunnel_frame.h"

namespace ipsec::forwarder {

struct SuperFrame {
  std::uint16_t count = 0;     // segments framed; 0: none (the per-segment path takes them)
  std::uint32_t offset = 0;    // the first ESP packet's start in the buffer
  std::uint32_t stride = 0;    // one ESP packet's start to the next
  std::uint32_t length = 0;    // offset to the end of the last ESP packet
  std::uint64_t firstSeq = 0;  // segment i is sealed under firstSeq + i
  std::uint64_t innerBytes = 0;  // the segments' inner packets together (the SA's out_bytes)
  // Per segment, from its inner header (RFC 6040; writeSegment copies the IP
  // header, so a super-packet's are all alike, but each is read): the outer
  // TOS / traffic class, and (IPv4 outer) the DF bit as bit i of the mask.
  std::array<std::uint8_t, proto::kMaxSegments> outerTos{};
  std::uint64_t dontFragment = 0;

  // Segment i's ESP packet: [start, start + length) of the buffer.
  std::uint32_t segmentStart(std::uint16_t i) const noexcept { return offset + std::uint32_t{i} * stride; }
  std::uint32_t segmentLength(std::uint16_t i) const noexcept {
    return i + 1u == count ? offset + length - segmentStart(i) : stride;
  }
};

// Frames segments first, first + 1, ... of `packet` (planned by `plan`, a GSO
// plan that succeeded) for `sa` in tunnel mode, the first ESP packet at
// buffer[offset]; sa.seqNext is the first sequence number.
SuperFrame frameSuperPacket(const Sa& sa, const TunnelFacts& facts, const offload::SegmentPlan& plan,
                            std::span<const std::uint8_t> packet, std::uint32_t first, std::span<std::uint8_t> buffer,
                            std::uint32_t offset) noexcept;

// The segments of a request of `count` segments that its seal completion
// says failed (bit i: segment i). The fail mask is the broker's word for it
// when the status is not kOk, bits beyond `count` ignored; a failure without
// a mask failed whole; kOk is all good whatever the mask says.
std::uint64_t failedSegments(const proto::CryptoCompletion& c, std::uint16_t count) noexcept;

}  // namespace ipsec::forwarder
