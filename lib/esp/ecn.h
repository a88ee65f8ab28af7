// Tunnel-header TOS handling, RFC 6040 (ECN) with DSCP copied on
// encapsulation (RFC 2983's uniform model outbound; the inner DSCP is never
// rewritten on decapsulation). Pure functions on packet bytes, used by the
// forwarder; no I/O.
#pragma once

#include <cstdint>
#include <span>

namespace ipsec::esp {

inline constexpr std::uint8_t kEcnMask = 0x03;
inline constexpr std::uint8_t kEcnNotEct = 0x00;
inline constexpr std::uint8_t kEcnCe = 0x03;

// The TOS byte (IPv4) or traffic class (IPv6) of an IP packet; 0 if too short.
std::uint8_t trafficClass(std::span<const std::uint8_t> packet) noexcept;

// The outer header's TOS for encapsulation: RFC 6040 normal mode copies the
// whole byte — DSCP and ECN — from the inner header.
constexpr std::uint8_t outerTrafficClass(std::uint8_t inner) noexcept { return inner; }

enum class EcnAction : std::uint8_t {
  kKeep,   // inner ECN stays as it is
  kSetCe,  // mark the inner packet Congestion Experienced
  kDrop,   // outer CE on a Not-ECT inner packet: the congestion cannot be passed on
};

// RFC 6040 §4.2, the decapsulation table.
constexpr EcnAction ecnDecapsulate(std::uint8_t outerTos, std::uint8_t innerTos) noexcept {
  const std::uint8_t outer = outerTos & kEcnMask, inner = innerTos & kEcnMask;
  if (outer != kEcnCe) return EcnAction::kKeep;  // ECT(0)/ECT(1)/Not-ECT outer: inner unchanged
  if (inner == kEcnNotEct) return EcnAction::kDrop;
  return inner == kEcnCe ? EcnAction::kKeep : EcnAction::kSetCe;
}

// Sets the ECN field of the packet to CE, fixing the IPv4 header checksum
// incrementally (RFC 1624). Returns false if the packet is too short.
bool markCe(std::span<std::uint8_t> packet) noexcept;

}  // namespace ipsec::esp
