// ipsec-forwarder: a TUN super-packet end to end as one multi-segment request
// (issue 13 item 1) — the shell around super_frame.h. The common case, a TCP
// or UDP super-packet whose route is one lone ESP tunnel SA (no bundle, no
// IPComp, no TFC padding, every segment within the SA's MTU), costs one
// route, one pool buffer per up to kMaxSegments segments, one request, one
// completion and one send: a UDP_SEGMENT send of the strided buffer for ESP
// in UDP (the kernel cuts it at the stride, the last datagram shorter), one
// sendmmsg for plain ESP (a message per segment pointing into the buffer,
// behind our own IPv4 header where pmtu.cpp's DF policy wants one). Anything
// else (bundles, IPComp, TFC, too big, held for an ACQUIRE, sequence numbers
// used up) is left to the per-segment path (tun_reader.cpp → outboundPacket),
// unchanged.
//
// Trust: the packet is a local application's (parsed as untrusted by the
// framing core); the completion is the broker's echo, of which only the
// status and the fail mask are read — the layout is our own (Worker::
// superFrames), so a broker cannot make us send outside the segments we framed.
// Order: the send batch the SA's other packets go through is flushed before
// a super-packet is sent, so one SA's packets leave in sequence order.
// Same thread as the rest of the data path; noexcept, no allocation after the
// first super-packet of a worker.
#include <algorithm>
#include <bit>

#include "clock/clock.h"
#include "forwarder.h"

namespace ipsec::forwarder {

std::uint32_t Forwarder::placeSuperPacket(Worker& w, const offload::SegmentPlan& plan,
                                          std::span<const std::uint8_t> packet, const OutboundRoute& route) noexcept {
  // Routed once, by the caller: every segment carries the super-packet's
  // addresses, protocol and ports.
  if (route.kind != OutboundRoute::Kind::kEsp || route.transport || route.policy->plan.ipcomp != Plan::kNoRequest) {
    return 0;
  }
  Sa& sa = *route.sa;
  TunnelOptions* t = tunnelOf(sa);
  const TunnelFacts facts = tunnelFacts(sa, t);
  if (w.superFrames.size() != w.contexts.size()) w.superFrames.resize(w.contexts.size());  // once per worker
  std::uint32_t next = 0;
  while (next < plan.count) {
    // Keep the worker's pending list within what it reserved (kBurst).
    if (w.pending.size() >= kBurst) flushRequests(w, true);
    const auto buf = allocBuffer(w);
    if (!buf) break;
    SuperFrame& f = w.superFrames[*buf];
    f = frameSuperPacket(sa, facts, plan, packet, next, {bufferData(w, *buf), w.bufferSize}, 0);
    if (f.count == 0) {
      freeBuffer(w, *buf);
      break;
    }
    queueSuperFrame(w, *buf, sa, t);
    next += f.count;
  }
  return next;
}

// sealTunnel's bookkeeping, for f.count packets at once.
void Forwarder::queueSuperFrame(Worker& w, std::uint32_t buf, Sa& sa, TunnelOptions* t) noexcept {
  const SuperFrame& f = w.superFrames[buf];
  proto::CryptoRequest req = cryptoRequest(buf, sa, proto::CryptoOp::kSeal, f.offset, f.length, f.firstSeq);
  req.segmentCount = f.count;
  req.segmentStride = f.stride;
  w.pending.push_back(req);
  w.contexts[buf] = {Use::kOutbound, sa.ref, f.firstSeq, f.outerTos[0], false, {}};
  w.contexts[buf].segments = f.count;
  sa.seqNext += f.count;
  maybeRequestSeq(sa);
  if (NatT* nat = natTOf(sa)) nat->outbound = true;
  if (sa.firstUse == 0) sa.firstUse = clock::unixSeconds();
  if (t) {
    t->outbound = true;
    t->lastOutMs = clock::monotonicMs();
  }
  sa.counters.out_packets += f.count;
  sa.counters.out_bytes += f.innerBytes;
  counters_.tun_in_packets += f.count;
  counters_.tun_in_segments += f.count;
  ++counters_.out_multi_segment_requests;
  counters_.out_multi_segment_segments += f.count;
}

void Forwarder::onSealedSuper(Worker& w, const proto::CryptoCompletion& c) noexcept {
  const std::uint32_t buf = c.bufferIndex;
  const BufferContext& ctx = w.contexts[buf];
  const SuperFrame& f = w.superFrames[buf];
  const Sa* sa = sas_.find(ctx.sa);
  const std::uint64_t all = ring::allSegments(f.count);
  const std::uint64_t failed = sa ? failedSegments(c, f.count) : all;
  if (failed != 0) {
    (c.status == proto::CryptoStatus::kWrongDirection ? counters_.out_drop_wrong_direction
                                                       : counters_.out_drop_crypto) += std::popcount(failed);
  }
  if (failed != all) {
    // Whatever of this SA's is queued leaves first: order per SA.
    const NatT* nat = natTOf(*sa);
    if (nat && (sa->dst.isV6() || udp4Sends(*nat))) {
      flushSendBatch(sa->dst.isV6() ? sendUdp6_ : sendUdp4_);
      sendSuperUdp(w, buf, *sa, *nat, failed);
    } else if (sa->dst.isV6()) {
      flushSendBatch(send6_);
      sendSuperRaw6(w, buf, *sa, failed);
    } else {
      flushSendBatch(nat ? sendUdpOwnHeader4_ : send4_);
      if (!nat) flushSendBatch(sendPacket4_);
      sendSuperWithHeaders4(w, buf, *sa, nat, failed);
    }
  }
  freeBuffer(w, buf);
}

// ESP in UDP on the NAT-T socket (super_send.h fillUdp), over IPv4 in runs of
// one DF bit, the socket's setting switched between them (gro.cpp).
void Forwarder::sendSuperUdp(Worker& w, std::uint32_t buf, const Sa& sa, const NatT& nat,
                             std::uint64_t failed) noexcept {
  SuperSend& s = superSend_;
  s.fillUdp(w.superFrames[buf], bufferData(w, buf), failed, sa, nat.dport, udpGso_);
  if (sa.dst.isV6()) return sendSuperMessages(fds_.udp6.get(), 0, s.count, true);
  for (std::size_t first = 0; first < s.count;) {
    std::size_t end = first + 1;
    while (end < s.count && s.dontFragment[end] == s.dontFragment[first]) ++end;
    if (setUdp4DontFragment(s.dontFragment[first])) {
      sendSuperMessages(fds_.udp4.get(), first, end - first, true);
    } else {
      for (std::size_t k = first; k < end; ++k) counters_.natt_out_drop_df_refused += s.segments[k];
    }
    first = end;
  }
}

void Forwarder::sendSuperRaw6(Worker& w, std::uint32_t buf, const Sa& sa, std::uint64_t failed) noexcept {
  superSend_.fillRaw6(w.superFrames[buf], bufferData(w, buf), failed, sa);
  sendSuperMessages(fds_.raw6.get(), 0, superSend_.count, false);
}

void Forwarder::sendSuperWithHeaders4(Worker& w, std::uint32_t buf, const Sa& sa, const NatT* nat,
                                      std::uint64_t failed) noexcept {
  counters_.pmtu_out_drop_header +=
      superSend_.fillWithHeaders4(w.superFrames[buf], bufferData(w, buf), failed, sa, nat, outerIpId_);
  // esp_send = packet: plain ESP to a next hop the cache knows, on the packet socket (packet_send.cpp).
  bool firstRaw = false;
  if (const sockaddr_ll* hop = nat || superSend_.count == 0 ? nullptr : packetAddressOfRun(sa.dst, firstRaw)) {
    const std::size_t first = firstRaw ? 1 : 0;  // the refresh: one segment raw, before the rest
    if (firstRaw) sendSuperMessages(fds_.hdr4.get(), 0, 1, false);
    superSend_.sendToNextHop(*hop);
    return sendOnPacketSocket({superSend_.msgs.data() + first, superSend_.count - first});
  }
  sendSuperMessages(fds_.hdr4.get(), 0, superSend_.count, nat != nullptr);
}

// A refused UDP_SEGMENT message (a route or device that cannot take it) is
// sent again one datagram at a time, without the segment size (its last
// control message).
void Forwarder::sendSuperMessages(int fd, std::size_t first, std::size_t count, bool udp) noexcept {
  SuperSend& s = superSend_;
  const std::span<mmsghdr> msgs(s.msgs.data(), first + count);
  for (std::size_t k = first; (k = sendSegmented(fd, msgs, s.segments.data(), k, udp)) < msgs.size(); ++k) {
    mmsghdr one = s.msgs[k];
    one.msg_hdr.msg_controllen -= kSegmentControlSpace;
    const iovec whole = s.iovs[k * 2];
    auto* at = static_cast<std::uint8_t*>(whole.iov_base);
    iovec iov{};
    one.msg_hdr.msg_iov = &iov;
    one.msg_hdr.msg_iovlen = 1;
    for (std::size_t left = whole.iov_len; left > 0; left -= iov.iov_len, at += iov.iov_len) {
      iov = {at, std::min<std::size_t>(left, s.segmentSize[k])};
      if (sendmmsg(fd, &one, 1, MSG_DONTWAIT) == 1) {
        ++counters_.esp_out_packets;
        counters_.esp_out_bytes += iov.iov_len;
        ++counters_.natt_out_esp_packets;
      } else {
        ++counters_.out_drop_send;
      }
    }
  }
}

}  // namespace ipsec::forwarder
