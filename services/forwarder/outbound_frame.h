// ipsec-forwarder: what the outbound packet cores after the route return and
// what they borrow — ESP transport (transport_frame.h), AH (ah_sign.h) and
// the bundles with their after-seal stages (bundle_frame.h). A core reads the
// bytes and the tables, frames in place, and says what the shell
// (transport.cpp, ah.cpp, bundle.cpp) must do: drop under a named counter,
// answer a too-big packet with ICMP quoting an MTU, hold the packet while an
// ACQUIRE goes out, or queue one crypto request and remember in the buffer's
// context what follows it. No I/O, no clock; the cores never move an SA's
// sequence number (the shell does, when it queues the request).
#pragma once

#include <array>
#include <cstdint>

#include "esp_in.h"
#include "ipcomp_sas.h"
#include "natt_peers.h"
#include "plan.h"
#include "proto/ring_abi.h"
#include "tables.h"
#include "tunnel_options.h"

namespace ipsec::forwarder {

// The tables every outbound core borrows (the shell holds them).
struct OutboundTables {
  SaTable &sas;
  const TunnelOptionsTable &tunnels;
  const NattPeers &natt;
  IpcompSas &ipcomp;
  bool espEnabled = true;     // net.inet.esp.enable
  bool ahEnabled = true;      // net.inet.ah.enable
  bool ipcompEnabled = true;  // net.inet.ipcomp.enable

  bool natT(const Sa &sa) const noexcept { return natt.of(sa) != nullptr; }
  TunnelFacts facts(const Sa &sa) const noexcept { return tunnels.facts(sa, natT(sa)); }
};

struct FrameVerdict {
  enum class Kind : std::uint8_t {
    kDrop,    // counted under `drop`; `spent`: an SA out of numbers (keydb is
              // asked for more)
    kTooBig,  // counted under `drop`; ICMP to the TUN quoting `mtu`
    kHold,    // no SA yet: the packet waits while the ACQUIRE for `acquire` goes
              // out
    kCrypto,  // `op` under `sa` on [offset, offset+length), taking `sa`'s next
              // number `seq`
  };
  Kind kind = Kind::kDrop;
  DropReason drop = nullptr;
  Sa *spent = nullptr;
  std::uint32_t mtu = 0;
  // An ACQUIRE to send whatever the kind (a `use` leg's, or the held packet's).
  const Request *acquire = nullptr;

  Sa *sa = nullptr;
  proto::CryptoOp op = proto::CryptoOp::kSeal;
  std::uint32_t offset = 0, length = 0;
  std::uint16_t icvOffset = 0;  // AH: where the ICV goes, from offset
  std::uint64_t seq = 0;
  std::uint32_t saBytes = 0;  // what the SA's out_bytes counts (the packet as it came to this stage)
  // The buffer's context for the completion.
  std::uint16_t transportHeader = 0;  // ESP transport: the host's header kept in front of ESP
  std::uint8_t outerTos = 0;
  bool outerDf = false;
  StepKind next = StepKind::kNone;  // a bundle's step after this one, under nextSa
  SaRef nextSa{};
  bool tunnelOwn = false;   // an ESP tunnel's own packet: NAT keepalives and
                            // dummies see it go out
  bool tookIpv4Id = false;  // AH tunnel: the outer IPv4 Identification offered
                            // was used (ah_sign.h)
  // Counted whatever the kind (they happened before a later drop):
  DropReason ipcompEvent = nullptr;  // ipcomp_out_compressed or _uncompressed
  bool tfcPadded = false;            // esp_out_tfc_padded
  // Counted once the request is queued (transport_out_packets,
  // bundle_out_packets, ...).
  std::array<DropReason, 2> queued{};
};

inline FrameVerdict dropFrame(DropReason reason, Sa *spent = nullptr) noexcept {
  FrameVerdict v;
  v.drop = reason;
  v.spent = spent;
  return v;
}

inline FrameVerdict tooBigFrame(std::size_t mtu) noexcept {
  FrameVerdict v;
  v.kind = FrameVerdict::Kind::kTooBig;
  v.drop = &Counters::pmtu_out_drop_too_big;
  v.mtu = static_cast<std::uint32_t>(mtu);
  return v;
}

// One more event counted when the request is queued.
inline void addQueued(FrameVerdict &v, DropReason event) noexcept {
  for (auto &q : v.queued) {
    if (!q) {
      q = event;
      return;
    }
  }
}

}  // namespace ipsec::forwarder
