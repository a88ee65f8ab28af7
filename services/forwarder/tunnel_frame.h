// ipsec-forwarder: the outbound packet core's second stage for one ESP tunnel
// SA — what happens to a TUN packet once routeOutbound (esp_out.h) chose its
// SA: the path-MTU, outer DF and TFC decision, IPComp, TFC padding and ESP
// framing, as a function of the bytes, the SA and the tunnel facts the shell
// lends it. No I/O, no clock, no counters touched: it returns a verdict —
// drop (its reason), too big (the MTU the shell's ICMP to the TUN quotes), or
// the seal request to queue — and the shell (outbound.cpp) applies it. The
// bytes come from local hosts but are parsed as untrusted all the same
// (tests/fuzz/forwarder/esp_out_fuzz).
#pragma once

#include <cstdint>
#include <span>

#include "esp/pmtu.h"
#include "esp_in.h"
#include "ipcomp_sas.h"
#include "tables.h"

namespace ipsec::forwarder {

// The facts of an SA's tunnel the shell keeps (pmtu.cpp): copied in, no state.
struct TunnelFacts {
  std::size_t pathMtu = 1500;       // the SA's MTU, never below the family's minimum
  std::size_t outerOverhead = 20;   // outer IP header, and UDP for NAT-T
  std::uint8_t dfPolicy = 0;        // SaParams.dfPolicy (0 = the sysctl's)
  esp::DfPolicy dfbit = esp::DfPolicy::kCopy;  // net.inet.ipsec.dfbit
  std::uint32_t tfcPad = 0;         // SaParams.tfcPad (0 = none)
};

// The MTU decision for an inner packet (or a transport one) and what follows it.
struct TunnelFit {
  std::uint32_t padTo = 0;  // TFC: pad the inner packet with zeros to this length (0 = none)
  bool outerDf = false;
  std::uint32_t mtu = 0;  // the SA path MTU the packet was judged by
};

// limit: the largest inner packet the SA carries whole. False when the packet
// is larger and may not be fragmented (IPv4 DF, IPv6 above 1280): the sender
// is owed an ICMP quoting `limit`. Otherwise `fit` says DF and TFC.
bool fitInnerPacket(const TunnelFacts& facts, bool outerV4, std::span<const std::uint8_t> inner,
                    std::size_t limit, TunnelFit& fit) noexcept;

// What the framing borrows: the SA, its policy (for its IPComp request) and
// the IPComp SAs with the compressor.
struct TunnelFrameTables {
  const Sa& sa;
  const Policy& policy;
  const TunnelFacts& facts;
  IpcompSas& ipcomp;
  bool ipcompEnabled = true;  // net.inet.ipcomp.enable
};

struct TunnelFrame {
  enum class Kind : std::uint8_t {
    kDrop,    // counted under `drop`
    kTooBig,  // counted as pmtu_out_drop_too_big; ICMP to the TUN quoting `mtu`
    kSeal,    // the ESP packet at [offset, offset+length) to seal under `seq`
  };
  Kind kind = Kind::kDrop;
  DropReason drop = nullptr;
  std::uint32_t mtu = 0;
  std::uint32_t offset = 0, length = 0;
  std::uint64_t seq = 0;
  std::uint8_t outerTos = 0;  // from the inner packet, as it was before IPComp (RFC 6040)
  bool outerDf = false;
  // Counted whatever the kind (they happened before a later drop):
  DropReason ipcompEvent = nullptr;  // ipcomp_out_compressed or _uncompressed
  bool tfcPadded = false;            // esp_out_tfc_padded
};

// The inner packet lies at buffer[offset, offset+length); the frame is built
// in place around it (headroom in front, the SA's tailroom behind).
TunnelFrame frameTunnel(const TunnelFrameTables& t, std::span<std::uint8_t> buffer, std::uint32_t offset,
                        std::uint32_t length) noexcept;

}  // namespace ipsec::forwarder
