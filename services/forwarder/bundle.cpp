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
// The decisions are the packet core's (bundle_frame.cpp for the bundles and
// AH alone, transport_frame.cpp, ah_sign.cpp, tunnel_frame.cpp for their
// stages); this file is their shell: it applies an outbound core's verdict —
// a drop or ICMP counted, a packet held, or a crypto request queued with the
// buffer's context for its completion — and runs a bundle's next step when a
// seal completes. The inbound side (decompression, the inner ESP opened
// again, the SPD's check that every SA of the bundle was used) is the packet
// core's (inbound_open.cpp). IPComp SAs carry no key and have no crypto
// session: they live in their own table (ipcomp_sas.h). Data path functions
// are noexcept and allocation-free (the z_streams are allocated once, at the
// first IPComp SA).
#include <linux/ipsec.h>

#include "bundle_frame.h"
#include "clock/clock.h"
#include "forwarder.h"
#include "log/log.h"

namespace ipsec::forwarder {

std::uint16_t Forwarder::offerAhIpId() const noexcept {
  const auto next = static_cast<std::uint16_t>(ahIpId_ + 1);
  return next == 0 ? 1 : next;  // 0 would let the kernel choose it
}

bool Forwarder::applyFrame(Worker& w, std::uint32_t buf, const FrameVerdict& v, std::span<const std::uint8_t> packet,
                           const OutboundOrigin& from) noexcept {
  if (v.acquire && from.policy && from.flow) requestAcquire(*from.policy, *v.acquire, *from.flow);
  // Events counted whatever follows (a later drop does not undo them).
  if (v.ipcompEvent) countDrop(counters_, v.ipcompEvent);
  if (v.tfcPadded) ++counters_.esp_out_tfc_padded;
  switch (v.kind) {
    case FrameVerdict::Kind::kDrop:
      countDrop(counters_, v.drop);
      if (v.spent) maybeRequestSeq(*v.spent);
      return false;
    case FrameVerdict::Kind::kTooBig:
      countDrop(counters_, v.drop);
      sendTooBig(packet, v.mtu);
      return false;
    case FrameVerdict::Kind::kHold:
      return holdForSa(w, buf, static_cast<std::uint32_t>(packet.size()),
                       from.heldSinceMs ? from.heldSinceMs : clock::monotonicMs());
    case FrameVerdict::Kind::kCrypto: break;
  }
  Sa& sa = *v.sa;
  ++sa.seqNext;
  maybeRequestSeq(sa);
  if (sa.firstUse == 0) sa.firstUse = clock::unixSeconds();
  if (v.tunnelOwn) {  // NAT-T keepalives and dummy packets see the tunnel's own packets go out
    if (NatT* nat = natTOf(sa)) nat->outbound = true;
    if (TunnelOptions* t = tunnelOf(sa)) {
      t->outbound = true;
      t->lastOutMs = clock::monotonicMs();
    }
  }
  w.pending.push_back(cryptoRequest(buf, sa, v.op, v.offset, v.length, v.seq, v.icvOffset));
  BufferContext ctx;
  ctx.use = v.op == proto::CryptoOp::kAhSign ? Use::kAhOutbound : Use::kOutbound;
  ctx.sa = sa.ref;
  ctx.seq = v.seq;
  ctx.tos = v.outerTos;
  ctx.outerDf = v.outerDf;
  ctx.transportHeader = v.transportHeader;
  ctx.next = v.next;
  ctx.nextSa = v.nextSa;
  w.contexts[buf] = ctx;
  sa.counters.out_packets++;
  sa.counters.out_bytes += v.saBytes;
  for (DropReason event : v.queued) {
    if (event) countDrop(counters_, event);
  }
  if (log::debugEnabled()) {
    log::debug("out {} len {}: SPI {:#x} seq {}{}", v.op == proto::CryptoOp::kAhSign ? "AH" : "ESP", v.saBytes,
               sa.spi, v.seq, v.next != StepKind::kNone ? " (a bundle's first stage)" : "");
  }
  return true;
}

bool Forwarder::outboundBundle(Worker& w, std::uint32_t buf, std::uint32_t len, const Policy& p,
                               const esp::FlowKey& flow, std::uint64_t heldSinceMs) noexcept {
  std::uint8_t* data = bufferData(w, buf);
  const std::uint16_t ipId = offerAhIpId();
  const FrameVerdict v =
      frameBundle(outboundTables(), p, flow, {data, w.bufferSize}, kHeadroom, len, {w.ah[buf], ipId});
  if (v.tookIpv4Id) ahIpId_ = ipId;
  return applyFrame(w, buf, v, {data + kHeadroom, len}, {&p, &flow, heldSinceMs});
}

// The walk over an outbound bundle's steps: the first stage has sealed c's
// buffer and the step its context carries (copied from the plan when the
// packet was framed) runs on the same buffer; its own completion then sends.
void Forwarder::runNextStep(Worker& w, const proto::CryptoCompletion& c) noexcept {
  const BufferContext& ctx = w.contexts[c.bufferIndex];
  const SealedStage stage{ctx.sa, ctx.next, ctx.nextSa, ctx.transportHeader, ctx.tos, ctx.outerDf};
  const std::uint16_t ipId = offerAhIpId();
  const FrameVerdict v = frameAfterSeal(outboundTables(), stage, {bufferData(w, c.bufferIndex), w.bufferSize}, c,
                                        {w.ah[c.bufferIndex], ipId});
  if (v.tookIpv4Id) ahIpId_ = ipId;
  // Sent when the completion burst ends (drainCompletions flushes the requests).
  if (!applyFrame(w, c.bufferIndex, v, {}, OutboundOrigin{})) freeBuffer(w, c.bufferIndex);
}

}  // namespace ipsec::forwarder
