// ipsec-forwarder: the tunnel details of each SA and the path-MTU settings
// they fall back on (issue 12 item 3: state split by owner) — the per-SA DF
// policy, path MTU, TFC padding and dummy interval keydb installs (SaParams
// dfPolicy, mtu, tfcPad, dummyInterval), kept by SA slot beside the SA table
// as NatT is (natt_peers.h); the sysctls net.inet.ipsec.dfbit and
// default_mtu; and the rate limit of the ICMP too-big messages the
// forwarder writes to the TUN. Written by control messages and the shell,
// lent read-only to the outbound packet cores as TunnelFacts
// (tunnel_frame.h); one thread, no I/O.
#pragma once

#include <cstdint>
#include <vector>

#include "esp/pmtu.h"
#include "proto/common.capnp.h"
#include "tables.h"
#include "tunnel_frame.h"

namespace ipsec::forwarder {

struct TunnelOptions {
  bool present = false;
  std::uint32_t generation = 0;
  std::uint8_t dfPolicy = 0;  // SaParams.dfPolicy (0 = net.inet.ipsec.dfbit)
  std::uint16_t mtu = 0;      // 0 = net.inet.ipsec.default_mtu
  std::uint16_t tfcPad = 0;
  std::uint32_t dummyIntervalMs = 0;
  bool outbound = false;        // has carried outbound tunnel traffic: dummies go on it
  std::uint64_t lastOutMs = 0;  // when it last sent a packet, real or dummy
};

class TunnelOptionsTable {
 public:
  static constexpr std::size_t kIpv4MinMtu = 576;   // what every IPv4 host accepts (RFC 791)
  static constexpr std::size_t kIpv6MinMtu = 1280;  // RFC 8200 §5
  static constexpr std::uint32_t kIcmpPerSecond = 100;

  // The SA's options when keydb gave it some (same slot and generation), else
  // nullptr.
  TunnelOptions *of(const Sa &sa) noexcept;
  const TunnelOptions *of(const Sa &sa) const noexcept { return const_cast<TunnelOptionsTable *>(this)->of(sa); }
  void install(SaRef ref, proto::SaParams::Reader params);
  void remove(SaRef ref) noexcept;

  // net.inet.ipsec.dfbit (FreeBSD's 0 clear, 1 set, 2 copy) and default_mtu (<=
  // 0: 1500).
  void setDfbit(std::int64_t value) noexcept { dfbit_ = esp::dfPolicyFromSysctl(value); }
  void setDefaultMtu(std::int64_t value) noexcept;
  esp::DfPolicy dfbit() const noexcept { return dfbit_; }

  // The SA's path MTU: its own or the default, never below its family's
  // minimum.
  std::size_t pathMtu(const Sa &sa) const noexcept;
  // Outer IP header, and UDP when the SA runs ESP in UDP.
  static std::size_t outerOverhead(const Sa &sa, bool natT) noexcept {
    return (sa.dst.isV4() ? 20u : 40u) + (natT ? 8u : 0u);
  }
  // What the outbound cores borrow of an SA's tunnel.
  TunnelFacts facts(const Sa &sa, bool natT) const noexcept;

  // ICMP too-big to the TUN, as a router's icmp_ratelimit: true when one may
  // go now (the caller then calls icmpSent).
  bool icmpAvailable(std::uint64_t nowMs) noexcept { return icmpLimit_.available(nowMs); }
  void icmpSent() noexcept { icmpLimit_.take(); }

 private:
  std::size_t pathMtu(const Sa& sa, const TunnelOptions* t) const noexcept;

  std::vector<TunnelOptions> bySlot_;
  esp::DfPolicy dfbit_ = esp::DfPolicy::kCopy;
  std::size_t defaultMtu_ = 1500;
  esp::IcmpRateLimit icmpLimit_{kIcmpPerSecond};
};

}  // namespace ipsec::forwarder
