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
#include <netinet/in.h>
#include <netinet/udp.h>

#include <bit>
#include <cstring>

#include "clock/clock.h"
#include "esp/pmtu.h"
#include "forwarder.h"

namespace ipsec::forwarder {
namespace {

constexpr std::uint64_t bit(std::size_t i) noexcept { return std::uint64_t{1} << i; }


}  // namespace

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
      sendSuperWithHeaders4(w, buf, *sa, nat, failed);
    }
  }
  freeBuffer(w, buf);
}

// ESP in UDP on the NAT-T socket: runs of good segments with one traffic
// class (and over IPv4 one DF bit) as one UDP_SEGMENT send each, as
// flushGso would cut them (gro.cpp), with udp_gso on; else one datagram each.
void Forwarder::sendSuperUdp(Worker& w, std::uint32_t buf, const Sa& sa, const NatT& nat,
                             std::uint64_t failed) noexcept {
  const std::size_t messages = superUdpMessages(w, buf, sa, nat, failed);
  if (sa.dst.isV6()) return sendSuperMessages(fds_.udp6.get(), 0, messages, true);
  // IPv4: the socket's DF setting is switched between runs of the other bit (gro.cpp).
  SuperSend& s = superSend_;
  for (std::size_t first = 0; first < messages;) {
    std::size_t end = first + 1;
    while (end < messages && s.dontFragment[end] == s.dontFragment[first]) ++end;
    if (setUdp4DontFragment(s.dontFragment[first])) {
      sendSuperMessages(fds_.udp4.get(), first, end - first, true);
    } else {
      for (std::size_t k = first; k < end; ++k) counters_.natt_out_drop_df_refused += s.segments[k];
    }
    first = end;
  }
}

// The good segments from i on that one UDP_SEGMENT send carries: same
// traffic class and DF bit, at most kMaxGsoSegments and maxBytes together
// (only the frame's last segment is shorter than the stride, so the kernel
// cuts them where the frame put them).
std::size_t Forwarder::superUdpRun(const SuperFrame& f, std::uint64_t failed, std::uint16_t i,
                                   std::size_t maxBytes) const noexcept {
  const bool df = f.dontFragment & bit(i);
  std::size_t run = 1, bytes = f.segmentLength(i);
  while (udpGso_ && i + run < f.count && run < esp::kMaxGsoSegments) {
    const auto next = static_cast<std::uint16_t>(i + run);
    if ((failed & bit(next)) || f.outerTos[next] != f.outerTos[i] || bool(f.dontFragment & bit(next)) != df ||
        bytes + f.segmentLength(next) > maxBytes) {
      break;
    }
    bytes += f.segmentLength(next);
    ++run;
  }
  return run;
}

std::size_t Forwarder::superUdpMessages(Worker& w, std::uint32_t buf, const Sa& sa, const NatT& nat,
                                        std::uint64_t failed) noexcept {
  const SuperFrame& f = w.superFrames[buf];
  const bool v4 = sa.dst.isV4();
  std::uint8_t* data = bufferData(w, buf);
  SuperSend& s = superSend_;
  s.toLength = esp::toSockaddr({sa.dst, nat.dport}, s.to);
  std::size_t messages = 0;
  for (std::uint16_t i = 0; i < f.count;) {
    if (failed & bit(i)) {
      ++i;
      continue;
    }
    const std::size_t run = superUdpRun(f, failed, i, v4 ? esp::kMaxGsoBytes4 : esp::kMaxGsoBytes);
    const auto last = static_cast<std::uint16_t>(i + run - 1);
    mmsghdr& m = s.msgs[messages];
    m = {};
    s.iovs[messages][0] = {data + f.segmentStart(i), f.segmentStart(last) + f.segmentLength(last) - f.segmentStart(i)};
    m.msg_hdr.msg_iov = s.iovs[messages].data();
    m.msg_hdr.msg_iovlen = 1;
    m.msg_hdr.msg_name = &s.to;
    m.msg_hdr.msg_namelen = s.toLength;
    char* space = s.cmsgs[messages].data();
    const int tos = f.outerTos[i];
    appendControl(m.msg_hdr, {space, SuperSend::kControlSpace}, v4 ? IPPROTO_IP : IPPROTO_IPV6,
               v4 ? IP_TOS : IPV6_TCLASS, &tos, sizeof tos);
    if (v4) {
      // From the SA's source address: the peer (and its NAT) know the SA by it.
      in_pktinfo source{};
      std::memcpy(&source.ipi_spec_dst, sa.src.bytes().data(), sizeof source.ipi_spec_dst);
      appendControl(m.msg_hdr, {space, SuperSend::kControlSpace}, IPPROTO_IP, IP_PKTINFO, &source, sizeof source);
    }
    s.segmentSize[messages] = 0;
    if (run > 1) {
      const auto size = static_cast<std::uint16_t>(f.stride);
      appendControl(m.msg_hdr, {space, SuperSend::kControlSpace}, SOL_UDP, UDP_SEGMENT, &size, sizeof size);
      s.segmentSize[messages] = size;
    }
    s.segments[messages] = static_cast<std::uint8_t>(run);
    s.dontFragment[messages] = f.dontFragment & bit(i);
    ++messages;
    i = static_cast<std::uint16_t>(i + run);
  }
  return messages;
}

// Plain ESP over IPv6 that fits: the kernel's raw socket writes the header;
// one message per segment, its traffic class by cmsg.
void Forwarder::sendSuperRaw6(Worker& w, std::uint32_t buf, const Sa& sa, std::uint64_t failed) noexcept {
  const SuperFrame& f = w.superFrames[buf];
  std::uint8_t* data = bufferData(w, buf);
  SuperSend& s = superSend_;
  s.toLength = esp::toSockaddr({sa.dst, 0}, s.to);
  std::size_t messages = 0;
  for (std::uint16_t i = 0; i < f.count; ++i) {
    if (failed & bit(i)) continue;
    mmsghdr& m = s.msgs[messages];
    m = {};
    s.iovs[messages][0] = {data + f.segmentStart(i), f.segmentLength(i)};
    m.msg_hdr.msg_iov = s.iovs[messages].data();
    m.msg_hdr.msg_iovlen = 1;
    m.msg_hdr.msg_name = &s.to;
    m.msg_hdr.msg_namelen = s.toLength;
    const int tclass = f.outerTos[i];
    appendControl(m.msg_hdr, {s.cmsgs[messages].data(), SuperSend::kControlSpace}, IPPROTO_IPV6, IPV6_TCLASS, &tclass,
               sizeof tclass);
    s.segments[messages] = 1;
    s.segmentSize[messages] = 0;
    ++messages;
  }
  sendSuperMessages(fds_.raw6.get(), 0, messages, false);
}

// IPv4 with our own outer header (pmtu.cpp: the SA's DF policy; ESP in UDP
// from a port other than the NAT-T socket's): per segment a header of its own
// beside the buffer, sent as two iovecs on the header-included socket.
void Forwarder::sendSuperWithHeaders4(Worker& w, std::uint32_t buf, const Sa& sa, const NatT* nat,
                                      std::uint64_t failed) noexcept {
  const SuperFrame& f = w.superFrames[buf];
  std::uint8_t* data = bufferData(w, buf);
  SuperSend& s = superSend_;
  s.toLength = esp::toSockaddr({sa.dst, 0}, s.to);
  std::size_t messages = 0;
  for (std::uint16_t i = 0; i < f.count; ++i) {
    if (failed & bit(i)) continue;
    esp::OuterHeader h;
    h.src = sa.src;
    h.dst = sa.dst;
    h.tos = f.outerTos[i];
    h.dontFragment = f.dontFragment & bit(i);
    h.id = outerIpId_++;
    if (nat) {
      h.udpSport = nat->sport;
      h.udpDport = nat->dport;
    }
    std::optional<std::size_t> head;
    if (!nat || h.udp()) head = esp::writeOuterHeaderApart(s.headers[messages], f.segmentLength(i), h);
    if (!head) {  // a NAT-T SA without ports: nowhere to send it
      ++counters_.pmtu_out_drop_header;
      continue;
    }
    mmsghdr& m = s.msgs[messages];
    m = {};
    s.iovs[messages][0] = {s.headers[messages].data(), *head};
    s.iovs[messages][1] = {data + f.segmentStart(i), f.segmentLength(i)};
    m.msg_hdr.msg_iov = s.iovs[messages].data();
    m.msg_hdr.msg_iovlen = 2;
    m.msg_hdr.msg_name = &s.to;
    m.msg_hdr.msg_namelen = s.toLength;
    s.segments[messages] = 1;
    s.segmentSize[messages] = 0;
    ++messages;
  }
  sendSuperMessages(fds_.hdr4.get(), 0, messages, nat != nullptr);
}

void Forwarder::sendSuperMessages(int fd, std::size_t first, std::size_t count, bool udp) noexcept {
  SuperSend& s = superSend_;
  const std::size_t end = first + count;
  for (std::size_t sent = first; sent < end;) {
    const int n = sendmmsg(fd, s.msgs.data() + sent, static_cast<unsigned>(end - sent), MSG_DONTWAIT);
    if (n <= 0) {
      if (s.segments[sent] > 1) {
        // A refused UDP_SEGMENT send (a route or device that cannot take
        // it): its datagrams one at a time, without the segment size (the
        // last control message).
        ++counters_.natt_out_gso_fallback;
        mmsghdr one = s.msgs[sent];
        one.msg_hdr.msg_controllen -= CMSG_SPACE(sizeof(std::uint16_t));
        auto* at = static_cast<std::uint8_t*>(s.iovs[sent][0].iov_base);
        std::size_t left = s.iovs[sent][0].iov_len;
        iovec iov{};
        one.msg_hdr.msg_iov = &iov;
        while (left > 0) {
          iov = {at, std::min<std::size_t>(left, s.segmentSize[sent])};
          if (sendmmsg(fd, &one, 1, MSG_DONTWAIT) == 1) {
            ++counters_.esp_out_packets;
            counters_.esp_out_bytes += iov.iov_len;
            ++counters_.natt_out_esp_packets;
          } else {
            ++counters_.out_drop_send;
          }
          at += iov.iov_len;
          left -= iov.iov_len;
        }
      } else {
        ++counters_.out_drop_send;
      }
      ++sent;
      continue;
    }
    for (std::size_t k = sent; k < sent + static_cast<std::size_t>(n); ++k) {
      const std::size_t segments = s.segments[k];
      counters_.esp_out_packets += segments;
      counters_.esp_out_bytes += s.msgs[k].msg_len;
      if (udp) counters_.natt_out_esp_packets += segments;
      if (segments > 1) {
        ++counters_.natt_out_gso_datagrams;
        counters_.natt_out_gso_segments += segments;
      }
    }
    sent += static_cast<std::size_t>(n);
  }
}

}  // namespace ipsec::forwarder
