// ipsec-forwarder: tunnel details of ESP (issue 3 §7) — the outer DF bit per
// SA, the SA's path MTU with ICMP back to the inner sender or fragmentation
// of the outer packet, TFC padding and dummy packets (RFC 4303 §2.7). The
// byte work is lib/esp/pmtu; the decisions before sealing are the packet
// cores' (tunnel_frame.cpp, transport_frame.cpp, ah_sign.cpp), the state they
// borrow is tunnel_options.h's, the send after a tunnel seal is the core's
// too (tunnel_send.cpp, applied by completions.cpp); this file sends: ICMP
// too-big to the TUN, fragments, dummy packets. AH tunnel mode and
// the ESP tunnel inside AH use the same DF policy, MTU rule, ICMP and
// fragments (ah.cpp, bundle.cpp): AH signs first, the fragments are cut from
// the signed packet. Transport mode (ESP, AH, ESP+AH, ESP in UDP) has the
// same MTU rule behind the host's own header (transport_frame.h
// fitTransportPacket; transport.cpp and ah.cpp cut the protected packet into
// fragments).
//
// Why our own outer header for IPv4: the raw ESP socket decides DF per
// socket (IP_MTU_DISCOVER), not per packet, and refuses nothing below the
// device MTU, so neither a DF policy per SA nor an SA MTU below the link's
// can be had from it. The header-included socket (the one transport mode and
// AH use) sends exactly what we write, so IPv4 tunnel ESP always leaves
// through it: DF as the policy says, and fragments cut by us when the packet
// exceeds the SA MTU. ESP in UDP over IPv4 that fits leaves on the NAT-T
// socket instead, for UDP GSO and the peer's GRO (which want the kernel's
// UDP checksum): the socket's DF setting is switched between runs of
// packets with the other DF bit (gro.cpp). IPv6 has no DF bit: a packet that fits
// keeps the kernel's raw ESP/UDP socket (traffic class by cmsg, as before);
// one that does not is given our IPv6 header and a fragment header by the
// source (RFC 8200 §4.5), on the header-included IPv6 socket.
//
// The SA MTU is SaParams.mtu or net.inet.ipsec.default_mtu (1500): the
// forwarder's sandbox cannot ask the kernel for the route's MTU. A link whose
// MTU is below it refuses our header-included packets (out_drop_send); set
// the SA's MTU (setkey -mtu) or the default to the link's.
//
// Data path: noexcept, no allocation (ICMP is built in a fixed scratch
// array, fragments in fixed arrays).
#include <linux/ipsec.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "clock/clock.h"
#include "esp/esp.h"
#include "forwarder.h"
#include "log/log.h"

namespace ipsec::forwarder {
// Rate-limited (TunnelOptionsTable::kIcmpPerSecond) for the whole forwarder, as a router's
// icmp_ratelimit: a flood of big DF packets costs us a counter each, not an
// ICMP each.
void Forwarder::sendTooBig(std::span<const std::uint8_t> inner, std::size_t mtu) noexcept {
  if (!tunnels_.icmpAvailable(clock::monotonicMs())) {
    ++counters_.pmtu_icmp_rate_limited;
    return;
  }
  const std::size_t n = (inner[0] >> 4) == 4
                            ? esp::buildFragmentationNeeded(inner, static_cast<std::uint16_t>(std::min<std::size_t>(mtu, 0xffff)), icmpScratch_)
                            : esp::buildPacketTooBig(inner, static_cast<std::uint32_t>(mtu), icmpScratch_);
  if (n == 0) {
    ++counters_.pmtu_icmp_not_due;
    return;
  }
  tunnels_.icmpSent();
  if (!writeTun({icmpScratch_.data(), n})) return;
  ++counters_.pmtu_icmp_sent;
}

// IPv4 fragments keep the packet's own Identification: AH's ICV covers it
// (only flags, offset, TTL and checksum are mutable, RFC 4302 §3.3.3.1.1.1),
// and the receiver reassembles before it verifies.
bool Forwarder::sendFragments(std::span<const std::uint8_t> packet, std::size_t mtu, const esp::IpAddress& dst,
                              bool ah) noexcept {
  const std::uint32_t id =
      dst.isV4() ? (packet.size() >= 20 ? static_cast<std::uint32_t>(packet[4] << 8 | packet[5]) : 0) : fragmentId_++;
  const std::size_t n = esp::fragmentPacket(packet, mtu, id, fragments_);
  if (n == 0) {
    ++counters_.pmtu_out_drop_fragment;
    return false;
  }
  // Whatever is batched for the same socket leaves first, to keep the SA's order.
  if (ah) {
    flushSendBatch(dst.isV4() ? sendAh4_ : sendAh6_);
  } else {
    flushSendBatch(dst.isV4() ? send4_ : send6_);
    if (dst.isV4()) flushSendBatch(sendPacket4_);
    flushSendBatch(dst.isV4() ? sendUdp4_ : sendUdp6_);
    if (dst.isV4()) flushSendBatch(sendUdpOwnHeader4_);
    flushSendBatch(dst.isV4() ? sendHdr4_ : sendHdr6_);  // transport mode
  }
  sockaddr_storage addr{};
  const socklen_t alen = esp::toSockaddr({dst, 0}, addr);
  fragmentSend_.count = 0;
  for (std::size_t i = 0; i < n; ++i) {
    esp::Fragment& f = fragments_[i];
    const std::array<iovec, 2> parts{iovec{f.header.data(), f.headerLength},
                                     iovec{const_cast<std::uint8_t*>(packet.data() + f.offset), f.length}};
    fragmentSend_.addMessage(parts, &addr, alen);
  }
  const int fd = dst.isV4() ? fds_.hdr4.get() : fds_.hdr6.get();
  const int sent = sendmmsg(fd, fragmentSend_.msgs.data(), static_cast<unsigned>(n), MSG_DONTWAIT);
  if (sent != static_cast<int>(n)) {
    ++counters_.out_drop_send;  // a lost fragment loses the packet
    return false;
  }
  ++counters_.pmtu_out_fragmented;
  counters_.pmtu_out_fragments += n;
  ++(ah ? counters_.ah_out_packets : counters_.esp_out_packets);
  (ah ? counters_.ah_out_bytes : counters_.esp_out_bytes) += packet.size();
  return true;
}

// Dummy packets (RFC 4303 §2.7): on an SA with a dummy interval that has
// sent nothing for that long, an ESP packet with next header 59 and, when the
// SA pads for TFC, tfcPad zero bytes (so dummies look like padded traffic).
// Only SAs that have carried outbound tunnel traffic send them: the forwarder
// is not told which of the SAs it holds are its own outbound ones. Each takes
// a real sequence number and goes through the broker like any packet. Called
// from the one-second tick: intervals below a second are rounded up to it.
void Forwarder::sendDummies() noexcept {
  if (!espEnabled_) return;
  const std::uint64_t now = clock::monotonicMs();
  bool queued = false;
  sas_.forEach([&](Sa& sa) {
    TunnelOptions* t = tunnelOf(sa);
    if (!t || t->dummyIntervalMs == 0 || !t->outbound || now - t->lastOutMs < t->dummyIntervalMs) return;
    if (sa.seqNext >= sa.seqLimit) {
      ++counters_.esp_out_dummy_drop;
      maybeRequestSeq(sa);
      return;
    }
    Worker& w = nextWorker();
    auto buf = allocBuffer(w);
    if (!buf) {
      ++counters_.esp_out_dummy_drop;
      return;
    }
    std::uint8_t* data = bufferData(w, *buf);
    const std::size_t room = w.bufferSize - kHeadroom - kTailroom;
    const std::size_t overhead = TunnelOptionsTable::outerOverhead(sa, natTOf(sa) != nullptr);
    const std::size_t limit = esp::maxInnerLength(sa.layout, tunnels_.pathMtu(sa), overhead);
    const std::size_t len = std::min<std::size_t>({t->tfcPad, limit, room});
    std::memset(data + kHeadroom, 0, len);
    const std::uint64_t seq = sa.seqNext;
    auto r = esp::encapsulate({data, w.bufferSize}, kHeadroom, len, sa.spi, static_cast<std::uint32_t>(seq),
                              sa.layout, esp::kNextHeaderDummy);
    if (!r.ok()) {
      ++counters_.esp_out_dummy_drop;
      freeBuffer(w, *buf);
      return;
    }
    ++sa.seqNext;
    maybeRequestSeq(sa);
    w.pending.push_back(cryptoRequest(*buf, sa, proto::CryptoOp::kSeal, static_cast<std::uint32_t>(r.offset),
                                      static_cast<std::uint32_t>(r.length), seq));
    BufferContext ctx;
    ctx.use = Use::kOutbound;
    ctx.sa = sa.ref;
    ctx.seq = seq;
    ctx.outerDf = sa.dst.isV4() && esp::effectiveDfPolicy(t->dfPolicy, tunnels_.dfbit()) == esp::DfPolicy::kSet;
    w.contexts[*buf] = ctx;
    t->lastOutMs = now;
    ++counters_.esp_out_dummy;
    queued = true;
    if (w.pending.size() >= kBurst) flushRequests(w, true);
  });
  if (queued) {
    for (auto& w : workers_) flushRequests(*w, true);
  }
}

}  // namespace ipsec::forwarder
