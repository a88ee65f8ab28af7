// ipsec-forwarder: the outbound packet core's second stage for an ESP tunnel
// (tunnel_frame.h). Pure function of the bytes and what it borrows; noexcept,
// allocation-free.
#include "tunnel_frame.h"

#include <linux/ipsec.h>

#include <algorithm>
#include <cstring>

#include "esp/ecn.h"
#include "esp/esp.h"

namespace ipsec::forwarder {
namespace {

constexpr std::size_t kIpv6MinMtu = 1280;  // RFC 8200 §5

TunnelFrame dropped(DropReason reason, const TunnelFrame& sofar = {}) noexcept {
  TunnelFrame f = sofar;
  f.kind = TunnelFrame::Kind::kDrop;
  f.drop = reason;
  return f;
}

// The policy's IPComp request, if it has one (RFC 3173): compresses in place,
// or leaves the packet as it is when IPComp would not shrink it or the
// request is optional and has no SA. False (and f.drop) when it must drop.
bool compress(const TunnelFrameTables& t, std::span<std::uint8_t> buffer, std::uint32_t& off, std::uint32_t& len,
              std::uint8_t& nextHeader, TunnelFrame& f) noexcept {
  const Plan& plan = t.policy.plan;
  if (plan.ipcomp == Plan::kNoRequest) return true;
  const Request& req = t.policy.requests[plan.ipcomp];
  if (!t.ipcompEnabled) {
    f.drop = &Counters::ipcomp_out_drop_disabled;
    return false;
  }
  const IpcompSa* sa = t.ipcomp.select(t.sa.src, t.sa.dst, req.level == IPSEC_LEVEL_UNIQUE ? req.reqid : 0);
  ipcomp::Compressor* compressor = t.ipcomp.compressor();
  if (!sa || !compressor) {
    if (req.level == IPSEC_LEVEL_USE) return true;  // optional: send it without IPComp
    f.drop = &Counters::ipcomp_out_drop_no_sa;
    return false;
  }
  auto r = compressor->compress(buffer, off, len, nextHeader, sa->cpi);
  if (r.sendUncompressed()) {
    f.ipcompEvent = &Counters::ipcomp_out_uncompressed;
    return true;
  }
  if (!r.compressed()) {
    f.drop = &Counters::ipcomp_out_drop_error;
    return false;
  }
  f.ipcompEvent = &Counters::ipcomp_out_compressed;
  off = static_cast<std::uint32_t>(r.offset);
  len = static_cast<std::uint32_t>(r.length);
  nextHeader = esp::kProtoIpcomp;
  return true;
}

}  // namespace

bool fitInnerPacket(const TunnelFacts& facts, bool outerV4, std::span<const std::uint8_t> inner,
                    std::size_t limit, TunnelFit& fit) noexcept {
  const esp::DfPolicy policy = esp::effectiveDfPolicy(facts.dfPolicy, facts.dfbit);
  fit.outerDf = outerV4 && esp::outerDontFragment(policy, inner);
  fit.padTo = 0;
  fit.mtu = static_cast<std::uint32_t>(facts.pathMtu);
  if (inner.size() > limit) {
    // The ICMP decision is the inner packet's: an IPv4 sender that set DF
    // asked for PMTU discovery, whatever our outer DF policy; an IPv6 sender
    // always does, except that every link must carry 1280 bytes (RFC 8200 §5),
    // so up to that the tunnel fragments instead (as RFC 4213 §3.2 does).
    const bool v4 = (inner[0] >> 4) == 4;
    if ((v4 && esp::ipv4DontFragment(inner)) || (!v4 && inner.size() > kIpv6MinMtu)) return false;
    fit.outerDf = false;  // fragments: DF would only make the path drop them
    return true;
  }
  // TFC padding up to the SA's tfcPad, never beyond what fits the MTU.
  if (facts.tfcPad > inner.size()) fit.padTo = static_cast<std::uint32_t>(std::min<std::size_t>(facts.tfcPad, limit));
  return true;
}

TunnelFrame frameTunnel(const TunnelFrameTables& t, std::span<std::uint8_t> buffer, std::uint32_t offset,
                        std::uint32_t length) noexcept {
  const Sa& sa = t.sa;
  const std::span<const std::uint8_t> inner = buffer.subspan(offset, length);
  // Path MTU, outer DF and TFC on the packet as it came: a packet IPComp
  // would shrink is still judged by its own size (it is the one an ICMP must
  // quote, and IPComp may send it uncompressed).
  const std::size_t limit = esp::maxInnerLength(sa.layout, t.facts.pathMtu, t.facts.outerOverhead);
  TunnelFit fit;
  if (!fitInnerPacket(t.facts, sa.dst.isV4(), inner, limit, fit)) {
    TunnelFrame f;
    f.kind = TunnelFrame::Kind::kTooBig;
    f.drop = &Counters::pmtu_out_drop_too_big;
    f.mtu = static_cast<std::uint32_t>(limit);
    return f;
  }
  TunnelFrame f;
  f.seq = sa.seqNext;
  f.outerDf = fit.outerDf;
  // Read before IPComp may overwrite the inner header.
  f.outerTos = esp::outerTrafficClass(esp::trafficClass(inner));
  std::uint8_t nextHeader = (inner[0] >> 4) == 4 ? esp::kNextHeaderIpv4 : esp::kNextHeaderIpv6;
  std::uint32_t payloadOff = offset, payloadLen = length;
  if (!compress(t, buffer, payloadOff, payloadLen, nextHeader, f)) return dropped(f.drop, f);
  // TFC padding (RFC 4303 §2.7): zeros after the inner packet, inside the
  // encryption; the receiver cuts at the inner IP length. Not behind IPComp,
  // whose payload has no length of its own to cut at.
  if (fit.padTo > payloadLen && nextHeader != ipcomp::kProtoIpcomp &&
      payloadOff + fit.padTo + sa.layout.maxTailroom() <= buffer.size()) {
    std::memset(buffer.data() + payloadOff + payloadLen, 0, fit.padTo - payloadLen);
    payloadLen = fit.padTo;
    f.tfcPadded = true;
  }
  auto r = esp::encapsulate(buffer, payloadOff, payloadLen, sa.spi, static_cast<std::uint32_t>(f.seq), sa.layout,
                            nextHeader);
  if (!r.ok()) return dropped(&Counters::out_drop_no_room, f);
  f.kind = TunnelFrame::Kind::kSeal;
  f.offset = static_cast<std::uint32_t>(r.offset);
  f.length = static_cast<std::uint32_t>(r.length);
  return f;
}

}  // namespace ipsec::forwarder
