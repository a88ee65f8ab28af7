// ipsec-forwarder: the outbound packet core for SA bundles and AH
// (bundle_frame.h). Pure functions of the bytes and what they borrow;
// noexcept, allocation-free.
#include "bundle_frame.h"

#include <linux/ipsec.h>
#include <linux/pfkeyv2.h>

#include <cstring>

#include "esp/ecn.h"
#include "esp/esp.h"
#include "esp/pmtu.h"
#include "transport_frame.h"
#include "tunnel_frame.h"

namespace ipsec::forwarder {
namespace {

bool spent(const Sa &sa) noexcept {
  return sa.seqNext >= sa.seqLimit;
}

FrameVerdict held(const Request *acquire) noexcept {
  FrameVerdict v;
  v.kind = FrameVerdict::Kind::kHold;
  v.acquire = acquire;
  return v;
}

// The ESP tunnel leg of a bundle (tunnel_frame.h's core): with AH around it,
// AH's header counts in the outer overhead; without (AH is `use` and has no
// SA, or ESP in ESP without its transport SA) it is the tunnel's own packet.
FrameVerdict frameTunnelLeg(const OutboundTables &t, Sa &esp, const Sa *ah, const Policy &p,
                            std::span<std::uint8_t> buffer, std::uint32_t offset, std::uint32_t length) noexcept {
  if (ah && t.natT(esp))
    return dropFrame(&Counters::out_drop_sa_mode);  // AH does not pass a NAT
                                                    // (RFC 3948 is ESP's)
  TunnelFacts facts = t.facts(esp);
  if (ah) facts.outerOverhead += ah::headerLength(ah->layout.icvLength, esp.dst.isV6());
  const TunnelFrame f = frameTunnel({esp, p, facts, t.ipcomp, t.ipcompEnabled}, buffer, offset, length);
  FrameVerdict v;
  v.drop = f.drop;
  v.mtu = f.mtu;
  v.ipcompEvent = f.ipcompEvent;
  v.tfcPadded = f.tfcPadded;
  switch (f.kind) {
    case TunnelFrame::Kind::kDrop: return v;
    case TunnelFrame::Kind::kTooBig: v.kind = FrameVerdict::Kind::kTooBig; return v;
    case TunnelFrame::Kind::kSeal: break;
  }
  v.drop = nullptr;
  v.kind = FrameVerdict::Kind::kCrypto;
  v.sa = &esp;
  v.op = proto::CryptoOp::kSeal;
  v.offset = f.offset;
  v.length = f.length;
  v.seq = f.seq;
  v.saBytes = length;
  v.outerTos = f.outerTos;
  v.outerDf = f.outerDf;
  v.tunnelOwn = ah == nullptr;
  return v;
}

// ESP transport alone, as transport mode frames it: judged by its own SA's MTU.
FrameVerdict frameTransportAlone(const OutboundTables &t, Sa &sa, const Policy *p, std::span<std::uint8_t> buffer,
                                 std::uint32_t offset, std::uint32_t length) noexcept {
  const TunnelFacts facts = t.facts(sa);
  return frameEspTransport(t, sa, p, {&facts, t.natT(sa) ? std::size_t{8} : 0}, buffer, offset, length);
}

// A `use` leg had no SA: the other leg alone; its ACQUIRE goes out all the
// same.
FrameVerdict withoutOptional(FrameVerdict v, const Request *acquire) noexcept {
  v.acquire = acquire;
  addQueued(v, &Counters::bundle_out_without_optional);
  return v;
}

// `[ipcomp/transport//...] esp/transport//... ah/transport//...` and
// `esp/tunnel/A-B/... ah/transport//...` (AH between the tunnel's ends).
FrameVerdict frameEspAh(const OutboundTables &t, const Policy &p, const esp::FlowKey &flow,
                        std::span<std::uint8_t> buffer, std::uint32_t offset, std::uint32_t length, AhOut ah) noexcept {
  if (!t.espEnabled) return dropFrame(&Counters::esp_out_drop_disabled);
  const Request &espReq = p.requests[p.plan.esp];
  const Request &ahReq = p.requests[p.plan.ah];
  const bool tunnel = espReq.mode == IPSEC_MODE_TUNNEL;
  const esp::IpAddress &src = tunnel ? *espReq.tunnelSrc : flow.src;
  const esp::IpAddress &dst = tunnel ? *espReq.tunnelDst : flow.dst;
  const BundlePair pair =
      chooseBundlePair(t.sas, {SADB_SATYPE_ESP, espReq, src, dst}, {SADB_SATYPE_AH, ahReq, src, dst});
  if (!pair.go) return pair.stop;
  Sa *esp = pair.inner;
  Sa *signer = pair.outer;
  // ESP is `use` with no SA: an ESP tunnel's AH runs between the tunnel's
  // ends, which the inner packet does not name: it waits for the tunnel's SA.
  if (!esp && tunnel) return held(pair.stop.acquire);
  if (!esp) return withoutOptional(frameAhAlone(t, *signer, false, buffer, offset, length, ah), pair.stop.acquire);
  if (!signer) {
    return withoutOptional(tunnel ? frameTunnelLeg(t, *esp, nullptr, p, buffer, offset, length)
                                  : frameTransportAlone(t, *esp, &p, buffer, offset, length),
                           pair.stop.acquire);
  }
  FrameVerdict v;
  if (tunnel) {
    v = frameTunnelLeg(t, *esp, signer, p, buffer, offset, length);
  } else {
    // The AH SA's MTU judges the host's packet, with AH's header behind ESP.
    const TunnelFacts facts = t.facts(*signer);
    const bool v6 = length > 0 && offset < buffer.size() && (buffer[offset] >> 4) == 6;
    v = frameEspTransport(t, *esp, &p, {&facts, ah::headerLength(signer->layout.icvLength, v6)}, buffer, offset,
                          length);
  }
  v.next = p.plan.afterEspSeal();
  v.nextSa = signer->ref;
  return v;
}

// `esp/transport//... esp/tunnel/A-B/...`: the transport SA seals the host's
// packet; its completion goes into the tunnel (frameAfterSeal).
FrameVerdict frameEspInEsp(const OutboundTables &t, const Policy &p, const esp::FlowKey &flow,
                           std::span<std::uint8_t> buffer, std::uint32_t offset, std::uint32_t length) noexcept {
  const Request &inner = p.requests[p.plan.esp];
  const Request &outer = p.requests[p.plan.outer];
  const BundlePair pair = chooseBundlePair(t.sas, {SADB_SATYPE_ESP, inner, flow.src, flow.dst},
                                           {SADB_SATYPE_ESP, outer, *outer.tunnelSrc, *outer.tunnelDst});
  if (!pair.go) return pair.stop;
  Sa *transport = pair.inner;
  Sa *tunnel = pair.outer;
  if (!transport || !tunnel) {
    return withoutOptional(tunnel ? frameTunnelLeg(t, *tunnel, nullptr, p, buffer, offset, length)
                                  : frameTransportAlone(t, *transport, nullptr, buffer, offset, length),
                           pair.stop.acquire);
  }
  if (length == 0 || std::size_t{offset} + length > buffer.size()) return dropFrame(&Counters::out_drop_bad_inner);
  const std::span<const std::uint8_t> packet = buffer.subspan(offset, length);
  // The tunnel's MTU judged on the packet as it came (an ICMP must quote it,
  // not the ESP it becomes), with room kept for the transport SA's ESP.
  const TunnelFacts facts = t.facts(*tunnel);
  const std::size_t most = esp::maxInnerLength(tunnel->layout, facts.pathMtu, facts.outerOverhead);
  const std::size_t growth = esp::kEspHeaderLength + transport->layout.ivLength + transport->layout.maxTailroom();
  const std::size_t limit = most > growth ? most - growth : 0;
  TunnelFit fit;
  if (!fitInnerPacket(facts, tunnel->dst.isV4(), packet, limit, fit)) return tooBigFrame(limit);
  const std::uint8_t outerTos = esp::outerTrafficClass(esp::trafficClass(packet));
  FrameVerdict v = frameEspTransport(t, *transport, &p, {}, buffer, offset, length);
  v.next = p.plan.afterEspSeal();
  v.nextSa = tunnel->ref;
  v.outerTos = outerTos;
  v.outerDf = fit.outerDf;
  return v;
}

// `ah/tunnel/A-B/...` or `ah/transport//...` alone.
FrameVerdict frameAhPolicy(const OutboundTables &t, const Policy &p, const esp::FlowKey &flow,
                           std::span<std::uint8_t> buffer, std::uint32_t offset, std::uint32_t length,
                           AhOut ah) noexcept {
  const Request &wanted = p.requests[p.plan.ah];
  const bool tunnel = wanted.mode == IPSEC_MODE_TUNNEL;
  if (tunnel && (!wanted.tunnelSrc || !wanted.tunnelDst)) return dropFrame(&Counters::out_drop_no_sa);
  Sa *sa =
      t.sas.selectOutbound(SADB_SATYPE_AH, tunnel ? *wanted.tunnelSrc : flow.src, tunnel ? *wanted.tunnelDst : flow.dst,
                           wanted.level == IPSEC_LEVEL_UNIQUE ? wanted.reqid : 0);
  if (!sa) return held(&wanted);
  if (spent(*sa)) return dropFrame(&Counters::out_drop_seq_wait, sa);
  if (sa->mode != IPSEC_MODE_ANY && sa->mode != wanted.mode) return dropFrame(&Counters::out_drop_sa_mode);
  return frameAhAlone(t, *sa, tunnel, buffer, offset, length, ah);
}

// The first stage's seal completed: the next step's SA must still be there
// with a number to give, and the descriptor the broker echoed must lie
// inside the buffer behind the kept header (which a transport-in-tunnel
// bundle always has). nullptr and v.drop otherwise.
Sa *secondStage(const OutboundTables &t, const SealedStage &s, std::span<const std::uint8_t> buffer,
                const proto::CryptoCompletion &c, bool needsKeptHeader, FrameVerdict &v) noexcept {
  Sa *sa = t.sas.find(s.next);
  if (!sa) {
    v.drop = &Counters::bundle_out_drop_sa_gone;
  } else if (spent(*sa)) {
    v.drop = &Counters::bundle_out_drop_seq_wait;
    v.spent = sa;
  } else if ((needsKeptHeader && s.transportHeader == 0) || c.offset < s.transportHeader || c.offset > buffer.size() ||
             c.length > buffer.size() - c.offset || std::size_t{c.length} + s.transportHeader == 0) {
    v.drop = &Counters::out_drop_crypto;
  } else {
    return sa;
  }
  return nullptr;
}

// ESP has sealed: AH around the sealed packet. Transport: AH into the host's
// packet in front of ESP, judged already by the AH SA's MTU. Tunnel (no kept
// header): our outer header and AH in front of the ESP packet, the DF bit
// decided before sealing, the tunnel SA's path MTU.
FrameVerdict signSealed(const OutboundTables &t, const SealedStage &s, std::span<std::uint8_t> buffer,
                        const proto::CryptoCompletion &c, AhOut ah) noexcept {
  FrameVerdict v;
  Sa *signer = secondStage(t, s, buffer, c, false, v);
  if (!signer) return v;
  const bool tunnel = s.transportHeader == 0;
  std::uint32_t mtu = 0;
  if (const Sa *esp = tunnel ? t.sas.find(s.sealedBy) : nullptr) {
    mtu = static_cast<std::uint32_t>(t.tunnels.pathMtu(*esp));
  } else if (!tunnel) {
    mtu = static_cast<std::uint32_t>(t.tunnels.pathMtu(*signer));
  }
  const AhFraming how{tunnel, tunnel ? std::optional<std::uint8_t>(s.tos) : std::nullopt, s.outerDf, mtu};
  v = frameAhSign(*signer, how, buffer, c.offset - s.transportHeader, c.length + s.transportHeader, ah);
  addQueued(v, &Counters::bundle_out_packets);
  return v;
}

// TFC (RFC 4303 §2.7) for a packet whose size is only known now: up to the
// SA's tfcPad, never beyond what fits the MTU, never a packet that is to be
// fragmented anyway.
std::uint32_t tfcPadTo(const OutboundTables &t, const Sa &sa, std::size_t innerLength) noexcept {
  const TunnelOptions *o = t.tunnels.of(sa);
  if (!o || o->tfcPad <= innerLength) return 0;
  const TunnelFacts facts = t.facts(sa);
  const std::size_t most = esp::maxInnerLength(sa.layout, facts.pathMtu, facts.outerOverhead);
  return innerLength < most ? static_cast<std::uint32_t>(std::min<std::size_t>(o->tfcPad, most)) : 0;
}

// The transport SA has sealed: the host's packet, now ESP, goes into the
// tunnel SA's ESP (an ordinary tunnel packet from then on: path MTU, DF,
// NAT-T as usual). The tunnel's TFC pads the inner packet as the tunnel
// carries it: the receiver cuts at its IP length before it opens the
// transport ESP.
FrameVerdict tunnelSealed(const OutboundTables &t, const SealedStage &s, std::span<std::uint8_t> buffer,
                          const proto::CryptoCompletion &c) noexcept {
  FrameVerdict v;
  Sa *tunnel = secondStage(t, s, buffer, c, true, v);
  if (!tunnel) return v;
  const std::uint32_t start = c.offset - s.transportHeader;
  const std::uint32_t len = c.length + s.transportHeader;
  const std::uint8_t nextHeader = (buffer[start] >> 4) == 4 ? esp::kNextHeaderIpv4 : esp::kNextHeaderIpv6;
  std::uint32_t payloadLen = len;
  if (const std::uint32_t padTo = tfcPadTo(t, *tunnel, len);
      padTo > len && std::size_t{start} + padTo + tunnel->layout.maxTailroom() <= buffer.size()) {
    std::memset(buffer.data() + start + len, 0, padTo - len);
    payloadLen = padTo;
    v.tfcPadded = true;
  }
  auto r = esp::encapsulate(buffer, start, payloadLen, tunnel->spi, static_cast<std::uint32_t>(tunnel->seqNext),
                            tunnel->layout, nextHeader);
  if (!r.ok()) {
    v.drop = &Counters::out_drop_no_room;
    return v;
  }
  v.kind = FrameVerdict::Kind::kCrypto;
  v.sa = tunnel;
  v.op = proto::CryptoOp::kSeal;
  v.offset = static_cast<std::uint32_t>(r.offset);
  v.length = static_cast<std::uint32_t>(r.length);
  v.seq = tunnel->seqNext;
  v.saBytes = len;
  v.outerTos = s.tos;
  v.outerDf = s.outerDf;
  v.tunnelOwn = true;
  addQueued(v, &Counters::bundle_out_packets);
  return v;
}

}  // namespace

BundlePair chooseBundlePair(SaTable &sas, const BundleLeg &inner, const BundleLeg &outer) noexcept {
  auto select = [&](const BundleLeg &leg) {
    const Request &r = leg.request;
    return sas.selectOutbound(leg.satype, leg.src, leg.dst, r.level == IPSEC_LEVEL_UNIQUE ? r.reqid : 0);
  };
  auto optional = [](const BundleLeg &leg) { return leg.request.level == IPSEC_LEVEL_USE; };
  BundlePair pair;
  Sa *first = select(inner);
  Sa *second = select(outer);
  if (!first && second && optional(inner)) {
    pair.stop.acquire = &inner.request;
  } else if (first && !second && optional(outer)) {
    pair.stop.acquire = &outer.request;
  } else if (!first || !second) {
    pair.stop = held(first ? &outer.request : &inner.request);
    return pair;
  }
  for (Sa *sa : {first, second}) {
    if (sa && spent(*sa)) {
      pair.stop.drop = &Counters::out_drop_seq_wait;
      pair.stop.spent = sa;
      return pair;
    }
  }
  for (const auto &[sa, leg] : {std::pair{first, &inner}, std::pair{second, &outer}}) {
    if (sa && sa->mode != IPSEC_MODE_ANY && sa->mode != leg->request.mode) {
      pair.stop.drop = &Counters::out_drop_sa_mode;
      return pair;
    }
  }
  pair.inner = first;
  pair.outer = second;
  pair.go = true;
  return pair;
}

FrameVerdict frameBundle(const OutboundTables &t, const Policy &p, const esp::FlowKey &flow,
                         std::span<std::uint8_t> buffer, std::uint32_t offset, std::uint32_t length,
                         AhOut ah) noexcept {
  if (p.plan.shape == Shape::kEspInEsp) {
    if (!t.espEnabled) return dropFrame(&Counters::esp_out_drop_disabled);
    return frameEspInEsp(t, p, flow, buffer, offset, length);
  }
  if (!t.ahEnabled) return dropFrame(&Counters::ah_out_drop_disabled);
  if (p.plan.shape == Shape::kEspAh) return frameEspAh(t, p, flow, buffer, offset, length, ah);
  // Any other bundle with AH is not run: better no packet than one with
  // less protection than the policy asks for.
  if (p.plan.shape != Shape::kAh) return dropFrame(&Counters::ah_out_drop_bundle);
  return frameAhPolicy(t, p, flow, buffer, offset, length, ah);
}

FrameVerdict frameAfterSeal(const OutboundTables &t, const SealedStage &s, std::span<std::uint8_t> buffer,
                            const proto::CryptoCompletion &c, AhOut ah) noexcept {
  switch (s.step) {
    case StepKind::kAhTransport: return signSealed(t, s, buffer, c, ah);
    case StepKind::kEspTunnel: return tunnelSealed(t, s, buffer, c);
    default: return dropFrame(&Counters::out_drop_crypto);  // no plan sets any other step after a seal
  }
}

}  // namespace ipsec::forwarder
