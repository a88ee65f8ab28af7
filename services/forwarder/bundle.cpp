// ipsec-forwarder: SA bundles. IPComp (RFC 3173) with ESP in tunnel and in
// transport mode, ESP inside AH in transport mode, and ESP transport inside
// an ESP tunnel (at the end of this file).
//
// A policy such as `ipcomp/tunnel/A-B/use esp/transport//require` (KAME
// order: requests apply innermost first outbound) puts on the wire
//   outer IP | ESP (next header 108) | IPComp (next header 4/41) | inner packet
// with ESP between the tunnel's endpoints. Outbound the inner packet is
// compressed when it is above the threshold and shrinks (otherwise it goes
// uncompressed, RFC 3173 §2.2); inbound, after ESP, next header 108 is
// decompressed (bounded: a bomb stops at the limit) and the CPI must belong
// to an installed IPComp SA between the ESP SA's endpoints.
//
// In transport mode (`ipcomp/transport//use esp/transport//require`,
// host to host) the upper-layer payload is compressed behind the host's
// kept headers, then ESP goes around IPComp:
//   IP | ESP (next header 108) | IPComp (next header 6/17/...) | payload
// inbound the reverse, the CPI checked the same way.
//
// ESP inside AH (`esp/transport//require ah/transport//require`, KAME order:
// the first request is applied first, innermost):
//   IP | AH (next header 50) | ESP | payload
// and an ESP tunnel inside AH (`esp/tunnel/A-B/require ah/transport//require`,
// AH between the tunnel's ends, the outer header written by us):
//   outer IP | AH (next header 50) | ESP | inner IP packet
// IPComp may come first in the transport shape (ipcomp, esp, ah).
// Outbound both SAs are chosen before anything is done; ESP is sealed, and
// the seal's completion (the buffer's context says its next step is
// kAhTransport, with the AH SA's ref) frames AH around the sealed packet and asks the broker to sign:
// two broker operations on one buffer, in place, nothing allocated or
// copied. Inbound, AH is verified first (ah.cpp); with ESP inside, the same
// buffer goes to ESP's inbound path marked as having peeled kAhTransport, and only once ESP has
// opened it is the SPD asked, which then wants every SA of the bundle to
// have been used: ESP without AH, or AH without ESP, is dropped and counted.
//
// This file holds the outbound side; the inbound side (decompression, the
// inner ESP opened again, the SPD's check that every SA of the bundle was
// used) is the packet core's (inbound_open.cpp). IPComp SAs carry no key and
// have no crypto session: they live in their own table (ipcomp_sas.h).
// Data path functions are noexcept and allocation-free (the z_streams are
// allocated once, at the first IPComp SA).
#include <linux/ipsec.h>
#include <linux/pfkeyv2.h>
#include <netinet/in.h>

#include <cstring>

#include "clock/clock.h"
#include "esp/ecn.h"
#include "esp/esp.h"
#include "esp/transport.h"
#include "forwarder.h"
#include "ipcomp/ipcomp.h"
#include "log/log.h"

namespace ipsec::forwarder {

// Outbound, before ESP: the inner packet at buf[off, off+len) may become an
// IPComp packet at buf[off-4, ...). False: drop (counted).
bool Forwarder::compressForBundle(const Policy& p, const Sa& esp, Worker& w, std::uint32_t buf, std::uint32_t& off,
                                  std::uint32_t& len, std::uint8_t& nextHeader) noexcept {
  if (p.plan.ipcomp == Plan::kNoRequest) return true;
  const Request* req = &p.requests[p.plan.ipcomp];
  if (!ipcompEnabled_) {
    ++counters_.ipcomp_out_drop_disabled;
    return false;
  }
  const IpcompSa* sa = ipcompSas_.select(esp.src, esp.dst, req->level == IPSEC_LEVEL_UNIQUE ? req->reqid : 0);
  ipcomp::Compressor* compressor = ipcompSas_.compressor();
  if (!sa || !compressor) {
    if (req->level == IPSEC_LEVEL_USE) return true;  // optional: send it without IPComp
    ++counters_.ipcomp_out_drop_no_sa;
    return false;
  }
  auto r = compressor->compress({bufferData(w, buf), w.bufferSize}, off, len, nextHeader, sa->cpi);
  if (r.sendUncompressed()) {
    ++counters_.ipcomp_out_uncompressed;
    return true;
  }
  if (!r.compressed()) {
    ++counters_.ipcomp_out_drop_error;
    return false;
  }
  ++counters_.ipcomp_out_compressed;
  off = static_cast<std::uint32_t>(r.offset);
  len = static_cast<std::uint32_t>(r.length);
  nextHeader = esp::kProtoIpcomp;
  return true;
}

// ---- IPComp in transport mode -----------------------------------------------

bool Forwarder::compressTransport(const Policy& p, const Sa& esp, Worker& w, std::uint32_t buf, std::uint32_t& off,
                                  std::uint32_t& len, esp::TransportSplit& split) noexcept {
  if (p.plan.ipcompTransport == Plan::kNoRequest) return true;
  const Request* req = &p.requests[p.plan.ipcompTransport];
  if (!ipcompEnabled_) {
    ++counters_.ipcomp_out_drop_disabled;
    return false;
  }
  const IpcompSa* sa = ipcompSas_.select(esp.src, esp.dst, req->level == IPSEC_LEVEL_UNIQUE ? req->reqid : 0);
  ipcomp::Compressor* compressor = ipcompSas_.compressor();
  if (!sa || !compressor) {
    if (req->level == IPSEC_LEVEL_USE) return true;
    ++counters_.ipcomp_out_drop_no_sa;
    return false;
  }
  std::uint8_t* data = bufferData(w, buf);
  const auto h = static_cast<std::uint32_t>(split.headerLength);
  if (off < ipcomp::kHeaderLength || split.totalLength > len || h > split.totalLength) {
    ++counters_.ipcomp_out_drop_error;
    return false;
  }
  // The IPComp header goes where the kept headers end: they move 4 bytes
  // forward first (at most a few dozen bytes; the payload stays put).
  std::memmove(data + off - ipcomp::kHeaderLength, data + off, h);
  auto r = compressor->compress({data, w.bufferSize}, off + h, split.totalLength - h, split.protocol, sa->cpi);
  if (!r.compressed()) {
    std::memmove(data + off, data + off - ipcomp::kHeaderLength, h);  // back where they were
    if (r.sendUncompressed()) {
      ++counters_.ipcomp_out_uncompressed;
      return true;
    }
    ++counters_.ipcomp_out_drop_error;
    return false;
  }
  ++counters_.ipcomp_out_compressed;
  off -= static_cast<std::uint32_t>(ipcomp::kHeaderLength);
  len = h + static_cast<std::uint32_t>(r.length);
  split.protocol = ipcomp::kProtoIpcomp;
  split.totalLength = len;  // encapsulateTransport sets the length fields from it
  return true;
}

// ---- ESP inside AH ----------------------------------------------------------

// Both SAs of a two-SA bundle chosen before anything is done: better wait
// for a missing one than seal with the first and find no second afterwards.
// The missing one (the inner if both are) gets the ACQUIRE, the packet is
// held for it. A missing leg whose request is `use` (KAME's level use,
// Linux's optional template) is not waited for: its ACQUIRE goes out and the
// packet goes on with the other leg alone (pair.inner or pair.outer null);
// both missing, the packet is held as a single `use` request's is. Each SA
// then must have a sequence number to give (or the packet is dropped while
// keydb grants more) and the mode its request names.
Forwarder::BundlePair Forwarder::selectBundlePair(Worker& w, std::uint32_t buf, std::uint32_t len, const Policy& p,
                                                  const esp::FlowKey& flow, std::uint64_t heldSinceMs,
                                                  const BundleLeg& inner, const BundleLeg& outer) noexcept {
  auto select = [&](const BundleLeg& leg) {
    const Request& r = leg.request;
    return sas_.selectOutbound(leg.satype, leg.src, leg.dst, r.level == IPSEC_LEVEL_UNIQUE ? r.reqid : 0);
  };
  auto optional = [](const BundleLeg& leg) { return leg.request.level == IPSEC_LEVEL_USE; };
  BundlePair pair;
  Sa* first = select(inner);
  Sa* second = select(outer);
  if (!first && second && optional(inner)) {
    requestAcquire(p, inner.request, flow);
  } else if (first && !second && optional(outer)) {
    requestAcquire(p, outer.request, flow);
  } else if (!first || !second) {
    requestAcquire(p, first ? outer.request : inner.request, flow);
    pair.took = holdForSa(w, buf, len, heldSinceMs ? heldSinceMs : clock::monotonicMs());
    return pair;
  }
  for (Sa* sa : {first, second}) {
    if (!sa) continue;
    if (sa->seqNext >= sa->seqLimit) {
      ++counters_.out_drop_seq_wait;
      maybeRequestSeq(*sa);
      return pair;
    }
  }
  for (const auto& [sa, leg] : {std::pair{first, &inner}, std::pair{second, &outer}}) {
    if (sa && sa->mode != IPSEC_MODE_ANY && sa->mode != leg->request.mode) {
      ++counters_.out_drop_sa_mode;
      return pair;
    }
  }
  pair.inner = first;
  pair.outer = second;
  return pair;
}

bool Forwarder::outboundEspAh(Worker& w, std::uint32_t buf, std::uint32_t len, const Policy& p,
                              const esp::FlowKey& flow, std::uint64_t heldSinceMs) noexcept {
  if (!espEnabled_) {
    ++counters_.esp_out_drop_disabled;
    return false;
  }
  const Request& espReq = p.requests[p.plan.esp];
  const Request& ahReq = p.requests[p.plan.ah];
  const bool tunnel = espReq.mode == IPSEC_MODE_TUNNEL;
  // Both SAs between the same ends (the tunnel's, or the hosts'), both
  // chosen first: better wait for a missing one than seal with ESP and find
  // no AH afterwards.
  const esp::IpAddress& src = tunnel ? *espReq.tunnelSrc : flow.src;
  const esp::IpAddress& dst = tunnel ? *espReq.tunnelDst : flow.dst;
  const BundlePair pair = selectBundlePair(w, buf, len, p, flow, heldSinceMs, {SADB_SATYPE_ESP, espReq, src, dst},
                                           {SADB_SATYPE_AH, ahReq, src, dst});
  Sa* esp = pair.inner;
  Sa* ah = pair.outer;
  if (!esp && !ah) return pair.took;
  if (!esp && tunnel) {
    // ESP is `use` and has no SA: an ESP tunnel's AH runs between the
    // tunnel's ends, which the inner packet does not name; it waits for the
    // tunnel's SA (ACQUIRE sent).
    return holdForSa(w, buf, len, heldSinceMs ? heldSinceMs : clock::monotonicMs());
  }
  if (!esp || !ah) {
    // A `use` leg without an SA: the other alone, as the single-SA paths send
    // it (ESP transport or tunnel; AH on the host's packet as a single AH
    // transport SA signs it).
    const bool sent = !ah ? (tunnel ? sealTunnelForAh(w, buf, len, *esp, nullptr, flow)
                                    : outboundTransport(w, buf, len, *esp, &p))
                          : signAhTransport(w, buf, len, *ah);
    if (sent) ++counters_.bundle_out_without_optional;
    return sent;
  }
  if (!tunnel) {
    if (!outboundTransport(w, buf, len, *esp, &p, ah)) return false;
  } else if (!sealTunnelForAh(w, buf, len, *esp, ah, flow)) {
    return false;
  }
  BufferContext& ctx = w.contexts[buf];
  ctx.next = p.plan.afterEspSeal();
  ctx.nextSa = ah->ref;
  return true;
}

// The ESP tunnel of `esp/tunnel/A-B/require ah/transport//require`: the
// inner packet in ESP, sealed; the outer header is written with AH's
// (signAfterSeal). The tunnel SA's path MTU, DF policy and TFC padding apply
// (pmtu.cpp) with AH counted in the outer overhead: an inner packet that does
// not fit gets ICMP, or the signed packet is fragmented (onAhSigned).
//
// Without ah (the bundle's other leg is `use` and has no SA) this is the
// plain ESP tunnel: the completion sends it as outboundPacket's tunnel seal's.
bool Forwarder::sealTunnelForAh(Worker& w, std::uint32_t buf, std::uint32_t len, Sa& esp, const Sa* ah,
                                const esp::FlowKey& flow) noexcept {
  if (ah && natTOf(esp)) {  // AH does not pass a NAT (RFC 3948 is ESP's)
    ++counters_.out_drop_sa_mode;
    return false;
  }
  std::uint8_t* data = bufferData(w, buf);
  TunnelFit fit;
  if (!fitTunnel(esp, {data + kHeadroom, len}, fit, 0, ah ? ah::headerLength(ah->layout.icvLength, esp.dst.isV6()) : 0)) {
    return false;
  }
  const std::uint8_t outerTos = esp::outerTrafficClass(esp::trafficClass({data + kHeadroom, len}));
  std::uint32_t payloadLen = len;
  if (fit.padTo > len && kHeadroom + fit.padTo + esp.layout.maxTailroom() <= w.bufferSize) {
    std::memset(data + kHeadroom + len, 0, fit.padTo - len);  // TFC, as a plain ESP tunnel pads
    payloadLen = fit.padTo;
    ++counters_.esp_out_tfc_padded;
  }
  const std::uint64_t seq = esp.seqNext;
  auto r = esp::encapsulate({data, w.bufferSize}, kHeadroom, payloadLen, esp.spi, static_cast<std::uint32_t>(seq),
                            esp.layout, flow.version == 4 ? esp::kNextHeaderIpv4 : esp::kNextHeaderIpv6);
  if (!r.ok()) {
    ++counters_.out_drop_no_room;
    return false;
  }
  ++esp.seqNext;
  maybeRequestSeq(esp);
  if (esp.firstUse == 0) esp.firstUse = clock::unixSeconds();
  if (!ah) {  // the tunnel's own packet: NAT-T and dummy packets see it go out
    if (NatT* nat = natTOf(esp)) nat->outbound = true;
    if (TunnelOptions* t = tunnelOf(esp)) {
      t->outbound = true;
      t->lastOutMs = clock::monotonicMs();
    }
  }
  w.pending.push_back(cryptoRequest(buf, esp, proto::CryptoOp::kSeal, static_cast<std::uint32_t>(r.offset),
                                    static_cast<std::uint32_t>(r.length), seq));
  BufferContext ctx;
  ctx.use = Use::kOutbound;
  ctx.sa = esp.ref;
  ctx.seq = seq;
  ctx.tos = outerTos;
  ctx.outerDf = fit.outerDf;
  w.contexts[buf] = ctx;
  esp.counters.out_packets++;
  esp.counters.out_bytes += len;
  return true;
}

// The walk over an outbound bundle's steps: ESP has sealed c's buffer and the
// plan's next step (copied into the buffer's context when the packet was
// framed) runs on the same buffer; its own completion then sends. A new
// two-stage shape is a Plan and a case here, not a new completion chain.
void Forwarder::runNextStep(Worker& w, const proto::CryptoCompletion& c) noexcept {
  switch (w.contexts[c.bufferIndex].next) {
    case StepKind::kAhTransport: return signAfterSeal(w, c);
    case StepKind::kEspTunnel: return sealTunnelAfterSeal(w, c);
    default: break;
  }
  // No plan sets any other step after a seal.
  ++counters_.out_drop_crypto;
  freeBuffer(w, c.bufferIndex);
}

// The first stage of an outbound bundle has sealed c's buffer: the second
// stage's SA must still be there with a sequence number to give, and the
// descriptor the broker echoed must lie inside the buffer behind the kept
// header (which a transport-in-tunnel bundle always has). Otherwise the
// buffer is freed, the drop counted, and nullptr returned.
Sa* Forwarder::secondStage(Worker& w, const proto::CryptoCompletion& c, SaRef ref,
                           bool needsKeptHeader) noexcept {
  const BufferContext& ctx = w.contexts[c.bufferIndex];
  Sa* sa = sas_.find(ref);
  if (!sa) {
    ++counters_.bundle_out_drop_sa_gone;
  } else if (sa->seqNext >= sa->seqLimit) {
    ++counters_.bundle_out_drop_seq_wait;
    maybeRequestSeq(*sa);
  } else if ((needsKeptHeader && ctx.transportHeader == 0) || c.offset < ctx.transportHeader ||
             c.offset > w.bufferSize || c.length > w.bufferSize - c.offset) {
    ++counters_.out_drop_crypto;
  } else {
    return sa;
  }
  freeBuffer(w, c.bufferIndex);
  return nullptr;
}

// ESP has sealed buf: frame AH around the sealed packet and queue the sign
// request (sent when the completion burst ends, drainCompletions).
void Forwarder::signAfterSeal(Worker& w, const proto::CryptoCompletion& c) noexcept {
  const BufferContext ctx = w.contexts[c.bufferIndex];
  Sa* ah = secondStage(w, c, ctx.nextSa, false);
  if (!ah) return;
  const std::uint32_t start = c.offset - ctx.transportHeader;
  // Transport: AH into the host's packet in front of ESP. Tunnel (no kept
  // header): AH and our outer header in front of the ESP packet.
  const bool tunnel = ctx.transportHeader == 0;
  // The tunnel's DF bit (decided before sealing) and its SA's path MTU;
  // transport: the AH SA's, which judged the host's packet (outboundTransport).
  TunnelFit fit;
  fit.outerDf = ctx.outerDf;
  if (const Sa* esp = tunnel ? sas_.find(ctx.sa) : nullptr) {
    fit.mtu = static_cast<std::uint32_t>(pathMtu(*esp, tunnelOf(*esp)));
  } else if (!tunnel) {
    fit.mtu = static_cast<std::uint32_t>(pathMtu(*ah, tunnelOf(*ah)));
  }
  if (!frameAh(w, c.bufferIndex, start, c.length + ctx.transportHeader, *ah, tunnel,
               tunnel ? std::optional<std::uint8_t>(ctx.tos) : std::nullopt, &fit)) {
    freeBuffer(w, c.bufferIndex);  // counted by frameAh
    return;
  }
  ++counters_.bundle_out_packets;
}

}  // namespace ipsec::forwarder

namespace ipsec::forwarder {

// ---- ESP transport inside an ESP tunnel ---------------------------------------
//
// `esp/transport//require esp/tunnel/A-B/require` (KAME order: the transport
// request is the innermost) puts on the wire
//   outer IP (A → B) | ESP (tunnel SA) | inner IP | ESP (transport SA) | payload
// the inner hosts' ESP kept intact inside the tunnel. Outbound the transport
// SA seals the host's packet as transport mode does (transport.cpp); the
// seal's completion (the context's next step: kEspTunnel) frames the result in the
// tunnel SA's ESP and asks the broker to seal again, on the same buffer; that
// completion is an ordinary tunnel packet (path MTU, DF, NAT-T as usual).
// Inbound the tunnel SA opens the packet; when the inner packet is ESP for
// one of our transport SAs it goes, in the same buffer, to ESP's inbound path
// as if it had come so, marked as having peeled kEspTunnel; once it has opened, the SPD
// wants both SAs: the transport SA alone, or the tunnel without ESP inside,
// is dropped and counted.

bool Forwarder::outboundEspInEsp(Worker& w, std::uint32_t buf, std::uint32_t len, const Policy& p,
                                 const esp::FlowKey& flow, std::uint64_t heldSinceMs) noexcept {
  const Request& inner = p.requests[p.plan.esp];
  const Request& outer = p.requests[p.plan.outer];
  // Both chosen first: better wait for the tunnel's SA than seal with the
  // transport SA and find no tunnel afterwards.
  const BundlePair pair =
      selectBundlePair(w, buf, len, p, flow, heldSinceMs, {SADB_SATYPE_ESP, inner, flow.src, flow.dst},
                       {SADB_SATYPE_ESP, outer, *outer.tunnelSrc, *outer.tunnelDst});
  Sa* transport = pair.inner;
  Sa* tunnel = pair.outer;
  if (!transport && !tunnel) return pair.took;
  if (!transport || !tunnel) {
    // A `use` leg without an SA: the other alone, as its single-SA path sends it.
    const bool sent = tunnel ? sealTunnelForAh(w, buf, len, *tunnel, nullptr, flow)
                             : outboundTransport(w, buf, len, *transport);
    if (sent) ++counters_.bundle_out_without_optional;
    return sent;
  }
  std::uint8_t* data = bufferData(w, buf);
  // The tunnel's MTU judged on the packet as it came (an ICMP must quote it,
  // not the ESP it becomes), with room kept for the transport SA's ESP.
  TunnelFit fit;
  const std::size_t transportGrowth =
      esp::kEspHeaderLength + transport->layout.ivLength + transport->layout.maxTailroom();
  if (!fitTunnel(*tunnel, {data + kHeadroom, len}, fit, transportGrowth)) return false;
  const std::uint8_t outerTos = esp::outerTrafficClass(esp::trafficClass({data + kHeadroom, len}));
  if (!outboundTransport(w, buf, len, *transport, &p)) return false;
  BufferContext& ctx = w.contexts[buf];
  ctx.next = p.plan.afterEspSeal();
  ctx.nextSa = tunnel->ref;
  ctx.tos = outerTos;
  ctx.outerDf = fit.outerDf;
  return true;
}

// The transport SA has sealed buf: the host's packet, now ESP, goes into the
// tunnel SA's ESP; the seal request is sent when the completion burst ends
// (drainCompletions).
void Forwarder::sealTunnelAfterSeal(Worker& w, const proto::CryptoCompletion& c) noexcept {
  const BufferContext ctx = w.contexts[c.bufferIndex];
  Sa* tunnel = secondStage(w, c, ctx.nextSa, true);
  if (!tunnel) return;
  std::uint8_t* data = bufferData(w, c.bufferIndex);
  const std::uint32_t start = c.offset - ctx.transportHeader;
  const std::uint32_t len = c.length + ctx.transportHeader;
  const std::uint8_t nextHeader = (data[start] >> 4) == 4 ? esp::kNextHeaderIpv4 : esp::kNextHeaderIpv6;
  // TFC padding of the tunnel SA (RFC 4303 §2.7), on the inner packet as the
  // tunnel carries it (the host's packet in its transport ESP): the receiver
  // cuts at that packet's IP length before it opens the transport ESP.
  std::uint32_t payloadLen = len;
  if (const std::uint32_t padTo = tfcPadTo(*tunnel, len);
      padTo > len && start + padTo + tunnel->layout.maxTailroom() <= w.bufferSize) {
    std::memset(data + start + len, 0, padTo - len);
    payloadLen = padTo;
    ++counters_.esp_out_tfc_padded;
  }
  const std::uint64_t seq = tunnel->seqNext;
  auto r = esp::encapsulate({data, w.bufferSize}, start, payloadLen, tunnel->spi, static_cast<std::uint32_t>(seq),
                            tunnel->layout, nextHeader);
  if (!r.ok()) {
    ++counters_.out_drop_no_room;
    freeBuffer(w, c.bufferIndex);
    return;
  }
  ++tunnel->seqNext;
  maybeRequestSeq(*tunnel);
  if (tunnel->firstUse == 0) tunnel->firstUse = clock::unixSeconds();
  if (NatT* nat = natTOf(*tunnel)) nat->outbound = true;
  if (TunnelOptions* t = tunnelOf(*tunnel)) {
    t->outbound = true;
    t->lastOutMs = clock::monotonicMs();
  }
  w.pending.push_back(cryptoRequest(c.bufferIndex, *tunnel, proto::CryptoOp::kSeal,
                                    static_cast<std::uint32_t>(r.offset), static_cast<std::uint32_t>(r.length), seq));
  BufferContext next;
  next.use = Use::kOutbound;
  next.sa = tunnel->ref;
  next.seq = seq;
  next.tos = ctx.tos;
  next.outerDf = ctx.outerDf;
  w.contexts[c.bufferIndex] = next;
  tunnel->counters.out_packets++;
  tunnel->counters.out_bytes += len;
  ++counters_.bundle_out_packets;
}

}  // namespace ipsec::forwarder
