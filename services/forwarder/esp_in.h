// ipsec-forwarder: the inbound packet core — what the forwarder decides about
// an ESP packet from the network before and after the broker opens it, as
// pure functions of the bytes and the tables they borrow (the SA table, the
// NAT-T facts). No I/O, no buffers, no rings: the I/O shell (inbound.cpp)
// applies the verdict — a drop counted under the named reason
// (countDrop), or a crypto request — so these run in unit tests and fuzz
// targets as they run in the forwarder (tests/unit/forwarder,
// tests/fuzz/forwarder). The bytes are hostile; every reject has a counter.
#pragma once

#include <cstdint>
#include <span>

#include "counters.h"
#include "esp/ip.h"
#include "esp/udp_encap.h"
#include "natt_peers.h"
#include "proto/ring_abi.h"
#include "tables.h"

namespace ipsec::forwarder {

// What an inbound packet's outer headers said, however it arrived (the
// shell's reading of a socket or the packet ring; handed between forwarder
// threads with the packet, thread_link.h).
struct Outer {
  std::uint32_t espOffset = 0;  // where the ESP header starts in the buffer
  esp::IpAddress dst;
  std::uint8_t tos = 0;
  bool udp = false;
  esp::UdpEndpoint peer;  // udp only
  esp::IpAddress src;          // IPv6 raw: from msg_name (transport mode)
  std::uint8_t hopLimit = 64;  // IPv6 raw: IPV6_HOPLIMIT (transport mode)
};

// A drop: which of the forwarder's counters says why (nullptr: not dropped).
using DropReason = std::uint64_t Counters::*;

inline void countDrop(Counters& counters, DropReason reason) noexcept { ++(counters.*reason); }

// Before the broker: an ESP packet (from its ESP header on) that arrived for
// dst, in UDP or not. Either dropped (the SA's own drop counters already
// moved when there is one) or to be opened under sa with the full sequence
// number seq (ESN: the replay window's guess of the high half).
struct InboundEsp {
  DropReason drop = nullptr;
  Sa* sa = nullptr;
  std::uint64_t seq = 0;
};
InboundEsp checkInboundEsp(SaTable& sas, const NattPeers& natt, std::span<const std::uint8_t> esp,
                           const esp::IpAddress& dst, bool udp) noexcept;
// The same judgement with no side effect (the SA's own drop counters do not
// move): a UDP GRO datagram's segments are all asked before the shell decides
// to open them as one request or split them (gro_open.h), and a split
// segment is then asked again by checkInboundEsp, which counts.
InboundEsp peekInboundEsp(SaTable& sas, const NattPeers& natt, std::span<const std::uint8_t> esp,
                          const esp::IpAddress& dst, bool udp) noexcept;

// After the broker (ESP open or AH verify): the counters each outcome goes
// to, per protocol.
struct VerifyDrops {
  DropReason noSa, badIcv, crypto, replay, badLength, wrongDirection;
};
extern const VerifyDrops kEspVerifyDrops;
extern const VerifyDrops kAhVerifyDrops;

// The checks every inbound completion passes first: the SA still exists, the
// ICV verified, the broker succeeded and the descriptor is `sane`; then (only
// for an authenticated packet) the replay window moves. The SA, or a drop.
struct Verified {
  DropReason drop = nullptr;
  Sa* sa = nullptr;
};
Verified acceptVerified(SaTable& sas, SaRef ref, proto::CryptoStatus status, bool sane, std::uint64_t seq,
                        const VerifyDrops& d) noexcept;

}  // namespace ipsec::forwarder
