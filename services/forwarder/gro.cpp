// ipsec-forwarder: UDP GRO and GSO on the NAT-T sockets (RFC 3948 ESP in UDP),
// each behind its sysctl (net.inet.ipsec.udp_gro, net.inet.ipsec.udp_gso).
//
// Receive: with UDP_GRO on, the kernel may coalesce several datagrams of one
// flow (same peer, ports and TOS) into one, with the segment size in a control
// message; lib/esp/udp_gro checks that size (untrusted: from the wire's
// lengths) and gives the split. A uniform datagram (every segment ESP for one
// SA, each passing the pre-check: the common case) is opened in place as ONE
// multi-segment request: no copy, one descriptor, one completion, whose
// segments are then judged one by one in order (gro_open.h decides both;
// onOpenedSegments applies). Any other is split: each segment handled exactly
// as a datagram on its own (keepalive, non-ESP marker, ESP, per-segment
// counters), a bad one counted and dropped, the others going on. A datagram
// to split that needs more buffers than are free waits, with the rest of its
// burst, for completions to free them (the socket is not read meanwhile).
// Send: each NAT-T socket takes a run of same-size ESP packets to one peer
// (same control messages) as one UDP_SEGMENT send; the kernel cuts it and
// writes the UDP checksum of each datagram (RFC 3948 §2.1 allows one), so a
// peer's UDP GRO can coalesce them again.
//
// IPv4 and the DF bit. The outer DF bit is the SA's (pmtu.cpp, dfbit clear,
// set or copy), but a UDP socket's DF is a setting of the socket
// (IP_MTU_DISCOVER), not of the datagram. The batch is therefore sent in
// runs of one DF bit on the NAT-T socket itself, switching its setting when
// the next run wants the other one (a setsockopt per switch: none while every
// SA says the same). Not a second socket per DF setting: to send from
// natt_port it would have to join the port's SO_REUSEPORT group, and the
// group would hand it a share of the peer's datagrams; the group's steering
// program also names the IKE daemon's socket by its index in the group
// (udp_encap.h, proto/natt_lock.h), which a third member would shift.
// DF set is IP_PMTUDISC_PROBE: DF without the kernel's path MTU cache (the
// SA's MTU is the one we judge by, as the header-included socket did); DF
// clear is IP_PMTUDISC_DONT: a datagram beyond the link's MTU is fragmented
// by the kernel. Beyond the SA's MTU we cut fragments ourselves on the
// header-included socket (pmtu.cpp), as before.
// Same thread as the rest of the data path; noexcept, no allocation.
#include <netinet/in.h>
#include <netinet/udp.h>

#include <cstring>

#include "forwarder.h"
#include "log/log.h"

namespace ipsec::forwarder {

bool Forwarder::udpDatagram(const UdpDatagram& d) noexcept {
  Worker& w = *d.w;
  const esp::GroSplit& split = d.split;
  if (split.count == 1) {
    udpSegment(w, d.buf, split.length, d.ctl, d.peer);
    return true;
  }
  if (openGroAsOne(d)) return true;
  // Wait for buffers rather than lose segments; but never for more than
  // half the pool (all the rest may be parked or held: it might never come).
  if (w.pool->available() < split.count - 1 && split.count - 1 <= w.pool->count() / 2) return false;
  ++counters_.natt_in_gro_datagrams;
  counters_.natt_in_gro_segments += split.count;
  // Segment 0 stays at the start of buf. The others are copied out before
  // any segment is handled: handling may free buf (a drop), and the order of
  // the segments is the order of their requests on the ring.
  const std::uint8_t* data = bufferData(w, d.buf);
  std::size_t have = 1;
  groBufs_[0] = d.buf;
  for (; have < split.count; ++have) {
    const auto b = allocBuffer(w);
    if (!b) break;
    std::memcpy(bufferData(w, *b), data + split.offset(have), split.segmentLength(have));
    groBufs_[have] = *b;
  }
  counters_.natt_in_gro_drop_no_buffer += split.count - have;
  for (std::size_t k = 0; k < have; ++k) udpSegment(w, groBufs_[k], split.segmentLength(k), d.ctl, d.peer);
  return true;
}

bool Forwarder::openGroAsOne(const UdpDatagram& d) noexcept {
  // Disabled ESP or a datagram without its addresses: split, each counted as before.
  if (!espEnabled_ || !d.ctl.dst || !d.peer) return false;
  Worker* w = d.w;
  std::uint32_t buf = d.buf;
  const GroOpenPlan plan =
      planGroOpen(sas_, natt_, {bufferData(*w, buf), d.split.length}, d.split, *d.ctl.dst, groPlan_);
  if (!plan.sa) {
    if (plan.splitWhy) countDrop(counters_, plan.splitWhy);
    return false;
  }
  const std::uint32_t n = d.split.count;
  ++counters_.natt_in_gro_datagrams;
  counters_.natt_in_gro_segments += n;
  counters_.natt_in_esp_packets += n;
  ++counters_.esp_in_multi_segment_requests;
  counters_.esp_in_multi_segment_segments += n;
  Sa& sa = *plan.sa;
  if (workers_.size() > 1 && &workerFor(sa) != w) {
    // Its SA's worker (worker_pin.cpp): the whole datagram, one copy.
    Worker& to = workerFor(sa);
    if (auto moved = moveToWorker(*w, buf, 0, d.split.length, to, false)) {
      w = &to;
      buf = *moved;
    }
  }
  if (w->groSegments.size() != w->contexts.size()) w->groSegments.resize(w->contexts.size());  // once per worker
  if (w->pending.size() >= kBurst) flushRequests(*w, false);
  proto::CryptoRequest req = cryptoRequest(buf, sa, proto::CryptoOp::kOpen, 0, d.split.length, groPlan_.seq[0]);
  req.segmentCount = static_cast<std::uint16_t>(n);
  req.segmentStride = d.split.segmentSize;
  w->pending.push_back(req);
  w->contexts[buf] = {Use::kInboundGro, sa.ref, 0, d.ctl.tos, true, *d.peer};
  w->groSegments[buf] = groPlan_;
  return true;
}

void Forwarder::onOpenedSegments(Worker& w, const proto::CryptoCompletion& c) noexcept {
  const BufferContext ctx = w.contexts[c.bufferIndex];
  const GroSegments& sent = w.groSegments[c.bufferIndex];  // untouched until the buffer is freed below
  const bool sane = echoesLayout(c, sent);
  const OpenedFrom from{ctx.tos, ctx.udp, ctx.peer, ctx.hopLimit, ctx.peeled, ctx.peeledSa};
  const std::span<std::uint8_t> buffer{bufferData(w, c.bufferIndex), w.bufferSize};
  bool mappingChecked = false;
  for (std::uint16_t i = 0; i < sent.count; ++i) {
    const GroSegmentVerdict s = judgeGroSegment(inboundTables(), buffer, c, sent, ctx.sa, sane, i, from);
    if (s.kind == GroSegmentVerdict::Kind::kRefused) {
      countDrop(counters_, s.drop);
      continue;
    }
    // The first authenticated segment tells whether the peer's NAT rebound (as onOpened).
    if (!mappingChecked) {
      mappingChecked = true;
      NatT* nat = natTOf(*s.sa);
      if (nat && (ctx.peer.address != s.sa->src || ctx.peer.port != nat->sport)) {
        reportNatMapping(*s.sa, *nat, ctx.peer);
      }
    }
    if (s.kind == GroSegmentVerdict::Kind::kJudged) {
      applyOpenedKeep(w, c.bufferIndex, *s.sa, s.verdict);  // never kOpenAgain: the buffer stays ours
    } else {
      judgeOnACopy(w, buffer.subspan(s.start, s.length), *s.sa, from);
    }
  }
  freeBuffer(w, c.bufferIndex);
}

void Forwarder::judgeOnACopy(Worker& w, std::span<const std::uint8_t> segment, Sa& sa,
                             const OpenedFrom& from) noexcept {
  ++counters_.esp_in_multi_segment_copied;
  const auto b = allocBuffer(w);
  if (!b) {
    ++counters_.esp_in_multi_drop_no_buffer;
    sa.counters.in_drop_other++;
    return;
  }
  // Laid out as a datagram received alone: ESP at the buffer's start.
  std::memcpy(bufferData(w, *b), segment.data(), segment.size());
  w.contexts[*b] = {Use::kInbound, sa.ref, 0, from.tos, from.udp, from.peer};
  const auto length = static_cast<std::uint32_t>(segment.size());
  applyOpened(w, *b, sa, judgeOpened(inboundTables(), {bufferData(w, *b), w.bufferSize}, 0, length, sa, from));
}

bool Forwarder::resumeParked(ParkedUdp& parked) noexcept {
  while (parked.head < parked.count) {
    const UdpDatagram& d = parked.items[parked.head];
    const bool done = udpDatagram(d);
    flushRequests(*d.w, false);
    if (!done) return false;
    ++parked.head;
  }
  parked.head = parked.count = 0;
  return true;
}

void Forwarder::setUdpGro(bool on) noexcept {
  const int value = on ? 1 : 0;
  bool ok = true;
  for (const int fd : {fds_.udp4.get(), fds_.udp6.get()}) {
    if (fd >= 0 && setsockopt(fd, SOL_UDP, UDP_GRO, &value, sizeof value) != 0) ok = false;
  }
  if (!ok) log::warn("net.inet.ipsec.udp_gro={}: UDP_GRO refused by the kernel", value);
  udpGro_ = on;
}

void Forwarder::queueUdp4(Worker& w, std::uint32_t buf, std::span<std::uint8_t> esp, const Sa& sa,
                          const Udp4Send& s) noexcept {
  SendBatch& b = queueSend(sendUdp4_);
  const std::size_t i = b.add(w, buf, esp, [&](sockaddr_storage& to) { return esp::toSockaddr({sa.dst, s.dport}, to); });
  b.setTrafficClass(i, true, s.tos);
  b.setSource4(i, sa.src.bytes().data());  // the peer (and its NAT) know the SA by it
  if (s.ttl != 0) {
    const int ttl = s.ttl;
    b.addControl(i, IPPROTO_IP, IP_TTL, &ttl, sizeof ttl);
  }
  b.dontFragment[i] = s.dontFragment;
}

bool Forwarder::setUdp4DontFragment(bool on) noexcept {
  if (udp4DontFragment_ == on) return true;
  const int mode = on ? IP_PMTUDISC_PROBE : IP_PMTUDISC_DONT;
  if (setsockopt(fds_.udp4.get(), IPPROTO_IP, IP_MTU_DISCOVER, &mode, sizeof mode) != 0) {
    udp4DontFragment_.reset();
    return false;
  }
  udp4DontFragment_ = on;
  ++counters_.natt_out_df_switches;
  return true;
}

void Forwarder::flushUdp4(SendBatch& b) noexcept {
  for (std::size_t first = 0; first < b.count;) {
    std::size_t end = first + 1;
    while (end < b.count && b.dontFragment[end] == b.dontFragment[first]) ++end;
    if (!setUdp4DontFragment(b.dontFragment[first])) {
      // Sent with the other DF bit they would break the SA's policy.
      counters_.natt_out_drop_df_refused += end - first;
    } else if (udpGso_) {
      flushGso(b, first, end - first);
    } else {
      sendEach(b, first, end - first);
    }
    first = end;
  }
}

void Forwarder::flushGso(SendBatch& b, std::size_t first, std::size_t count) noexcept {
  // Runs of datagrams with the same destination and control messages
  // (traffic class; IPv4: also source address and TTL).
  auto sameAs = [&b](std::size_t first) {
    return [&b, first](std::size_t i) {
      return b.msgs[i].msg_hdr.msg_namelen == b.msgs[first].msg_hdr.msg_namelen &&
             std::memcmp(&b.addrs[i], &b.addrs[first], b.msgs[first].msg_hdr.msg_namelen) == 0 &&
             b.msgs[i].msg_hdr.msg_controllen == b.msgs[first].msg_hdr.msg_controllen &&
             std::memcmp(b.cmsgs[i].data(), b.cmsgs[first].data(), b.msgs[first].msg_hdr.msg_controllen) == 0;
    };
  };
  const std::span<const iovec> iovs(b.iovs.data(), first + count);
  std::size_t messages = 0;
  for (std::size_t i = first; i < first + count;) {
    const std::size_t run = esp::gsoRun(iovs, i, sameAs(i), &b == &sendUdp4_ ? esp::kMaxGsoBytes4 : esp::kMaxGsoBytes);
    mmsghdr& m = gso_.msgs[messages];
    m = b.msgs[i];
    if (run > 1) {
      // Its own control space: the datagram's control messages, then the segment size.
      auto& space = gso_.cmsgs[messages];
      std::memcpy(space.data(), b.cmsgs[i].data(), b.msgs[i].msg_hdr.msg_controllen);
      m.msg_hdr.msg_iovlen = run;  // the batch's iovecs are contiguous
      m.msg_hdr.msg_control = space.data();
      const auto size = static_cast<std::uint16_t>(b.iovs[i].iov_len);
      appendSegmentSize(m.msg_hdr, space, size);  // room: sized for it
    }
    gso_.first[messages] = static_cast<std::uint8_t>(i);
    gso_.count[messages] = static_cast<std::uint8_t>(run);
    ++messages;
    i += run;
  }
  // A refused GSO send (a route or device that cannot take it, a segment
  // above the path MTU) is retried one datagram at a time.
  const std::span<mmsghdr> msgs(gso_.msgs.data(), messages);
  for (std::size_t k = 0; (k = sendSegmented(b.fd, msgs, gso_.count.data(), k, true)) < messages; ++k) {
    sendEach(b, gso_.first[k], gso_.count[k]);
  }
}

}  // namespace ipsec::forwarder
