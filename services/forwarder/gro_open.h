// ipsec-forwarder: the inbound packet core for a UDP GRO datagram (RFC 3948
// ESP in UDP, coalesced by the kernel: n payloads of one flow back to back,
// every one but the last gso_size long) — opened in place as ONE crypto
// request (segmentCount n, segmentStride gso_size) when it is uniform, and
// each segment judged on its own from that request's completion. Pure
// functions of hostile bytes and borrowed tables: no I/O, no rings, no clock;
// the shell (gro.cpp udpDatagram, inbound.cpp onOpenedSegments) applies the
// verdicts, so unit tests and the fuzz target run them as the forwarder does.
//
// Before the broker (planGroOpen): one request only when every segment is
// ESP under the same SPI, passes the pre-check of a datagram on its own
// (peekInboundEsp: SA, encapsulation, length, alignment, replay window), and
// the SA opens them in place without touching a neighbour: not transport
// mode (it rebuilds an IP header in front of the payload, i.e. in the
// segment before), one ESN high half for all (the broker takes one per
// request), at most proto::kMaxSegments. Anything else is split as before
// (gro.cpp: each segment copied into its own buffer, checked and counted on
// its own), so a segment that fails the pre-check — a replay above all — is
// never handed to the broker, and is counted exactly as it was.
//
// After the broker (judgeGroSegment), per segment, in order: its status from
// the fail mask, the replay window moved (acceptVerified), then the tunnel
// judged in place within the segment's own bytes (judgeOpened on the buffer
// cut at the segment's end: nothing it writes can reach the next segment).
// A segment whose opened bytes want more room or a buffer of their own —
// IPComp inflating, an upper-layer payload (an SA of mode "any" used for
// transport), inner ESP to open again — is judged on a copy by the shell.
#pragma once

#include <array>
#include <cstdint>
#include <span>

#include "esp/ip.h"
#include "esp/udp_gro.h"
#include "esp_in.h"
#include "inbound_open.h"
#include "proto/ring_abi.h"

namespace ipsec::forwarder {

// What the forwarder keeps of a request it sent for a GRO datagram: the
// layout it asked for (the completion must echo it) and each segment's full
// sequence number (the replay window's guess at the pre-check).
struct GroSegments {
  std::uint16_t count = 0;
  std::uint32_t stride = 0;
  std::uint32_t length = 0;  // the whole datagram, from offset 0 of the buffer
  std::array<std::uint64_t, proto::kMaxSegments> seq{};
};

// The decision: one request under `sa` (out filled), or split. splitWhy
// names the counter of why (nullptr for a datagram of one segment: nothing
// to decide).
struct GroOpenPlan {
  Sa* sa = nullptr;  // set: one request
  DropReason splitWhy = nullptr;
};
GroOpenPlan planGroOpen(SaTable& sas, const NattPeers& natt, std::span<const std::uint8_t> datagram,
                        const esp::GroSplit& split, const esp::IpAddress& dst, GroSegments& out) noexcept;

// Segment i's own outcome in a completion: the broker's status for a
// request is its worst segment's; the fail mask says which failed. A
// refusal of the whole request fails every segment, whatever the mask.
proto::CryptoStatus segmentStatus(const proto::CryptoCompletion& c, std::uint16_t i) noexcept;

// Does the completion echo the layout we sent? (The broker only echoes; a
// changed layout would have us judge bytes it never opened.)
bool echoesLayout(const proto::CryptoCompletion& c, const GroSegments& sent) noexcept;

struct GroSegmentVerdict {
  enum class Kind : std::uint8_t {
    kRefused,  // not accepted (ICV, replay, SA gone, a broker failure): counted under `drop`
    kJudged,   // judged in place: `verdict` (never kOpenAgain) to apply
    kOnACopy,  // accepted (window moved): judge buffer[start, start + length) in a buffer of its own
  };
  Kind kind = Kind::kRefused;
  DropReason drop = nullptr;
  Sa* sa = nullptr;  // kJudged, kOnACopy (and kRefused when the SA still exists)
  std::uint32_t start = 0, length = 0;  // the segment in the buffer
  OpenedVerdict verdict{};
};
// Segment i (< sent.count) of a completion for a GRO datagram opened under
// the SA `ref` in `buffer` (the pool buffer, writable). sane: the shell's
// echoesLayout. Call in order i = 0, 1, ...: the replay window moves per
// segment as it would for separate packets.
GroSegmentVerdict judgeGroSegment(const InboundTables& t, std::span<std::uint8_t> buffer,
                                  const proto::CryptoCompletion& c, const GroSegments& sent, SaRef ref, bool sane,
                                  std::uint16_t i, const OpenedFrom& from) noexcept;

}  // namespace ipsec::forwarder
