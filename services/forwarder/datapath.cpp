// ipsec-forwarder: the packet paths (see forwarder.h for the pipeline). Every
// function here is noexcept and allocation-free: a bad packet is dropped and
// counted under its named reason, never thrown and never logged above debug.
// (Two rare control events build a Cap'n Proto message: ACQUIRE and the NAT
// mapping report, each rate-limited.)
#include "forwarder.h"

#include <linux/ipsec.h>
#include <linux/pfkeyv2.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "clock/clock.h"
#include "esp/ecn.h"
#include "esp/esp.h"
#include "esp/ip.h"
#include "log/log.h"

namespace ipsec::forwarder {
proto::CryptoRequest cryptoRequest(std::uint32_t buf, const Sa& sa, proto::CryptoOp op, std::uint32_t offset,
                                   std::uint32_t length, std::uint64_t seq, std::uint16_t icvOffset) noexcept {
  proto::CryptoRequest req{};
  req.cookie = buf;
  req.session = sa.ref.index;
  req.sessionGeneration = sa.ref.generation;
  req.op = op;
  req.status = proto::CryptoStatus::kPending;
  req.segmentCount = 1;
  req.bufferIndex = buf;
  req.offset = offset;
  req.length = length;
  req.segmentStride = length;
  req.seqHigh = static_cast<std::uint32_t>(seq >> 32);
  req.icvOffset = icvOffset;
  return req;
}

std::uint8_t* Forwarder::bufferData(Worker& w, std::uint32_t buf) noexcept {
  return reinterpret_cast<std::uint8_t*>(w.pool->data(buf).data());
}

std::optional<std::uint32_t> Forwarder::allocBuffer(Worker& w) noexcept { return w.pool->alloc(); }

void Forwarder::freeBuffer(Worker& w, std::uint32_t buf) noexcept {
  w.contexts[buf].use = Use::kFree;
  w.pool->free(buf);
}

Forwarder::Worker& Forwarder::nextWorker() noexcept {
  Worker& w = *workers_[nextWorker_];
  nextWorker_ = (nextWorker_ + 1) % workers_.size();
  return w;
}

// ---- outbound ---------------------------------------------------------------

// One worker and a plain TUN: each packet read straight into a pool buffer.
// Otherwise through a private scratch (tun_reader.cpp): super-packets to cut,
// or a packet to place on its SA's worker.
void Forwarder::readTun() noexcept {
  if (!tunScratch_.empty()) return readTunScratch();
  Worker& w = nextWorker();
  std::size_t n = 0;
  for (; n < kBurst; ++n) {
    auto buf = allocBuffer(w);
    if (!buf) {
      // Leave the packets in the TUN queue; the next completion restarts us.
      ++counters_.out_stall_no_buffer;
      tunStalled_ = true;
      flushAllRequests(true);
      return;
    }
    std::uint8_t* data = bufferData(w, *buf);
    ssize_t len = ::read(fds_.tun.get(), data + kHeadroom, w.bufferSize - kHeadroom - kTailroom);
    if (len <= 0) {
      freeBuffer(w, *buf);
      break;
    }
    ++counters_.tun_in_packets;
    if (!outboundPacket(w, *buf, static_cast<std::uint32_t>(len))) freeBuffer(w, *buf);
  }
  flushAllRequests(true);
  if (n == kBurst) {
    boost::asio::post(io_, [this] { readTun(); });  // more may be queued: yield, then go on
  } else {
    armTun();
  }
}

bool Forwarder::writeTun(std::span<const std::uint8_t> packet) noexcept {
  if (tunOffload_.vnetHeader) return queueTunWrite(packet);  // tun_writer.cpp
  if (::write(fds_.tun.get(), packet.data(), packet.size()) != static_cast<ssize_t>(packet.size())) {
    ++counters_.tun_write_errors;
    return false;
  }
  return true;
}

bool Forwarder::outboundPacket(Worker& w, std::uint32_t buf, std::uint32_t len, std::uint64_t heldSinceMs) noexcept {
  std::uint8_t* data = bufferData(w, buf);
  // The packet core routes it (esp_out.cpp); this shell applies the route.
  const OutboundRoute route = routeOutbound(spd_, sas_, {data + kHeadroom, len}, espEnabled_);
  const Policy* p = route.policy;
  const esp::FlowKey* flow = &route.flow;
  switch (route.kind) {
    case OutboundRoute::Kind::kDrop:
      countDrop(counters_, route.drop);
      if (route.sa) maybeRequestSeq(*route.sa);
      return false;
    case OutboundRoute::Kind::kHold:
      requestAcquire(*p, *route.request, *flow);
      return holdForSa(w, buf, len, heldSinceMs ? heldSinceMs : clock::monotonicMs());
    case OutboundRoute::Kind::kBundle:
      if (p->plan.shape == Shape::kEspInEsp) return outboundEspInEsp(w, buf, len, *p, *flow, heldSinceMs);
      return outboundAh(w, buf, len, *p, *flow, heldSinceMs);  // ah.cpp: AH alone, or ESP then AH
    case OutboundRoute::Kind::kEsp: break;
  }
  Sa* sa = route.sa;
  if (route.transport) return outboundTransport(w, buf, len, *sa, p);
  // Path MTU, outer DF and TFC (pmtu.cpp), on the packet as it came: a packet
  // IPComp would shrink is still judged by its own size (it is the one an
  // ICMP must quote, and IPComp may send it uncompressed).
  TunnelFit fit;
  if (!fitTunnel(*sa, {data + kHeadroom, len}, fit)) return false;
  const std::uint64_t seq = sa->seqNext;
  std::uint8_t nextHeader = flow->version == 4 ? esp::kNextHeaderIpv4 : esp::kNextHeaderIpv6;
  std::uint32_t payloadOff = kHeadroom, payloadLen = len;
  // Read before IPComp may overwrite the inner header.
  const std::uint8_t outerTos = esp::outerTrafficClass(esp::trafficClass({data + kHeadroom, len}));
  if (!compressForBundle(*p, *sa, w, buf, payloadOff, payloadLen, nextHeader)) return false;
  // TFC padding (RFC 4303 §2.7): zeros after the inner packet, inside the
  // encryption; the receiver cuts at the inner IP length. Not behind IPComp,
  // whose payload has no length of its own to cut at.
  if (fit.padTo > payloadLen && nextHeader != ipcomp::kProtoIpcomp &&
      payloadOff + fit.padTo + sa->layout.maxTailroom() <= w.bufferSize) {
    std::memset(data + payloadOff + payloadLen, 0, fit.padTo - payloadLen);
    payloadLen = fit.padTo;
    ++counters_.esp_out_tfc_padded;
  }
  auto r = esp::encapsulate({data, w.bufferSize}, payloadOff, payloadLen, sa->spi,
                            static_cast<std::uint32_t>(seq), sa->layout, nextHeader);
  if (!r.ok()) {
    ++counters_.out_drop_no_room;
    return false;
  }
  ++sa->seqNext;
  maybeRequestSeq(*sa);
  if (NatT* nat = natTOf(*sa)) nat->outbound = true;
  if (sa->firstUse == 0) sa->firstUse = clock::unixSeconds();

  w.pending.push_back(cryptoRequest(buf, *sa, proto::CryptoOp::kSeal, static_cast<std::uint32_t>(r.offset),
                                    static_cast<std::uint32_t>(r.length), seq));
  w.contexts[buf] = {Use::kOutbound, sa->ref, seq, outerTos,
                     false, {}};
  w.contexts[buf].outerDf = fit.outerDf;
  if (TunnelOptions* t = tunnelOf(*sa)) {
    t->outbound = true;
    t->lastOutMs = clock::monotonicMs();
  }
  sa->counters.out_packets++;
  sa->counters.out_bytes += len;
  if (log::debugEnabled()) {
    log::debug("out {} -> {} proto {} len {}: SPI {:#x} seq {}", flow->src.toString(), flow->dst.toString(),
               flow->proto, len, sa->spi, seq);
  }
  return true;
}

bool Forwarder::holdForSa(Worker& w, std::uint32_t buf, std::uint32_t len, std::uint64_t sinceMs) noexcept {
  if (!held_.hold({&w, buf, len, sinceMs}, clock::monotonicMs())) {
    ++counters_.out_drop_no_sa;
    return false;
  }
  ++counters_.out_held_no_sa;
  armUsage();  // its expiry runs on the usage tick
  return true;
}

// As the kernel does: an ACQUIRE names the SA's endpoints, the inner
// protocol and the policy; ipsec-policy adds the proposal and tells the
// registered key managers. At most one per (policy, request, endpoints) per
// interval, and none from a held packet's re-run for what it asked before
// (AcquireTimes).
void Forwarder::requestAcquire(const Policy& p, const Request& r, const esp::FlowKey& flow) noexcept {
  if (!policy_ || !policy_->isOpen()) return;
  try {
    AcquireKey key{p.id, 0, r.tunnelSrc ? *r.tunnelSrc : flow.src,  // transport mode: the packet's own
                   r.tunnelDst ? *r.tunnelDst : flow.dst};
    for (std::size_t i = 0; i < p.requests.size(); ++i) {
      if (&p.requests[i] == &r) key.requestIndex = static_cast<std::uint8_t>(i);
    }
    switch (acquireTimes_.ask(key, clock::monotonicMs(), rerunningHeld_)) {
      case AcquireTimes::Verdict::kAsk: break;
      case AcquireTimes::Verdict::kTooSoon: return;
      case AcquireTimes::Verdict::kPending: ++counters_.out_acquire_pending; return;
      case AcquireTimes::Verdict::kFull: ++counters_.out_acquire_table_full; return;
    }
    capnp::MallocMessageBuilder b;
    auto a = b.initRoot<proto::ForwarderToPolicy>().initAcquire();
    a.setPolicyId(p.id);
    auto s = key.src.bytes();
    auto d = key.dst.bytes();
    a.setSrc(capnp::Data::Reader(s.data(), s.size()));
    a.setDst(capnp::Data::Reader(d.data(), d.size()));
    a.setProto(flow.proto);
    a.setRequestIndex(key.requestIndex);
    policy_->send(b);
    ++counters_.out_acquires;
  } catch (...) {
    // Counted as no ACQUIRE; the next packet retries after the interval.
  }
}

// An SA arrived: give every held packet another pass. One still without its
// SA goes back to the queue without a new ACQUIRE for what it asked before.
void Forwarder::releaseHeld() noexcept {
  if (held_.empty()) return;
  rerunningHeld_ = true;
  held_.rerun([this](const Held::Packet& h) {
    if (!outboundPacket(*h.pool, h.buffer, h.length, h.sinceMs)) freeBuffer(*h.pool, h.buffer);
  });
  rerunningHeld_ = false;
  for (auto& w : workers_) flushRequests(*w, true);
  flushTunWrites();  // ICMP too-big for a re-run packet (pmtu.cpp)
}

void Forwarder::expireHeld() noexcept {
  const std::uint64_t now = clock::monotonicMs();
  // A held packet may wait on a key asked for up to an interval before it was held.
  if (now > kHoldMs + AcquireTimes::kIntervalMs) acquireTimes_.forgetBefore(now - kHoldMs - AcquireTimes::kIntervalMs);
  held_.expire(now, [this](const Held::Packet& h) {
    ++counters_.out_drop_no_sa;
    freeBuffer(*h.pool, h.buffer);
  });
}

void Forwarder::maybeRequestSeq(Sa& sa) noexcept {
  if (sa.seqRequested || sa.seqLimit - sa.seqNext > kSeqLowWater || !keydb_) return;
  sa.seqRequested = true;
  try {
    capnp::MallocMessageBuilder b;
    auto r = b.initRoot<proto::ForwarderToKeydb>().initSeqRequest();
    r.initSa().setIndex(sa.ref.index);
    r.getSa().setGeneration(sa.ref.generation);
    r.setSeqNext(sa.seqNext);
    keydb_->send(b);
  } catch (...) {
    sa.seqRequested = false;  // retried on the next packet
  }
}

void Forwarder::flushRequests(Worker& w, bool outbound) noexcept {
  if (w.pending.empty()) return;
  std::size_t n = w.requests.enqueue(w.pending);
  for (std::size_t i = n; i < w.pending.size(); ++i) {
    if (outbound) {
      ++counters_.out_drop_ring_full;
    } else {
      ++counters_.esp_in_drop_ring_full;
    }
    freeBuffer(w, w.pending[i].bufferIndex);
  }
  w.pending.clear();
  if (n == 0) return;
  ring::notifyPeer(w.requests, w.requestBell);
  // Poll for their completions a while before sleeping (control.cpp).
  w.inFlight += static_cast<std::uint32_t>(n);
  w.pollUntilNs = clock::monotonicNs() + kCompletionPollNs;
  pollCompletions(w);
}

// ---- inbound ----------------------------------------------------------------

std::optional<esp::IpAddress> Forwarder::RecvBurst::source6(std::size_t i) const noexcept {
  if (msgs[i].msg_hdr.msg_namelen < sizeof(sockaddr_in6) || names[i].ss_family != AF_INET6) return std::nullopt;
  const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(&names[i]);
  return esp::IpAddress::v6(std::span<const uint8_t, 16>(sin6->sin6_addr.s6_addr, 16));
}

bool Forwarder::receiveBurst(Worker& w, int fd, std::uint32_t at, RecvBurst& r) noexcept {
  r.have = 0;
  r.got = 0;
  for (; r.have < kBurst; ++r.have) {
    auto b = allocBuffer(w);
    if (!b) break;
    const std::size_t i = r.have;
    r.bufs[i] = *b;
    r.iovs[i] = {bufferData(w, *b) + at, w.bufferSize - at};
    r.msgs[i] = {};
    r.msgs[i].msg_hdr.msg_name = &r.names[i];
    r.msgs[i].msg_hdr.msg_namelen = sizeof r.names[i];
    r.msgs[i].msg_hdr.msg_iov = &r.iovs[i];
    r.msgs[i].msg_hdr.msg_iovlen = 1;
    r.msgs[i].msg_hdr.msg_control = r.cmsgs[i].data();
    r.msgs[i].msg_hdr.msg_controllen = r.cmsgs[i].size();
  }
  if (r.have == 0) return false;
  const int got = recvmmsg(fd, r.msgs.data(), static_cast<unsigned>(r.have), MSG_DONTWAIT, nullptr);
  r.got = got > 0 ? static_cast<std::size_t>(got) : 0;
  return true;
}

bool Forwarder::finishBurst(Worker& w, RecvBurst& r) noexcept {
  for (std::size_t i = r.got; i < r.have; ++i) freeBuffer(w, r.bufs[i]);
  flushAllRequests(false);  // packets pinned to other workers (worker_pin.cpp) queued there
  return r.got == kBurst;
}

void Forwarder::readRaw(int family) noexcept {
  Worker& w = nextWorker();
  const int fd = family == AF_INET ? fds_.raw4.get() : fds_.raw6.get();
  RecvBurst& r = recv_;
  if (!receiveBurst(w, fd, 0, r)) {
    ++counters_.esp_in_stall_no_buffer;
    (family == AF_INET ? raw4Stalled_ : raw6Stalled_) = true;
    return;
  }
  auto& msgs = r.msgs;
  auto& bufs = r.bufs;
  for (std::size_t i = 0; i < r.got; ++i) {
    std::uint32_t len = msgs[i].msg_len;
    if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
      ++counters_.esp_in_drop_truncated;
      freeBuffer(w, bufs[i]);
      continue;
    }
    Outer outer;
    if (family == AF_INET) {
      // IPv4 raw sockets deliver the IP header: destination and TOS are in it.
      const std::uint8_t* data = bufferData(w, bufs[i]);
      const std::uint32_t ihl = len >= 20 ? (data[0] & 0x0fu) * 4u : 0;
      if (len < 20 || (data[0] >> 4) != 4 || ihl < 20 || ihl > len) {
        ++counters_.esp_in_drop_bad_ip;
        freeBuffer(w, bufs[i]);
        continue;
      }
      outer.espOffset = ihl;
      outer.dst = esp::IpAddress::v4(std::span<const uint8_t, 4>(data + 16, 4));
      outer.tos = data[1];
    } else {
      // IPv6 raw sockets strip the IP header; the destination comes as pktinfo.
      const esp::UdpControl ctl = esp::parseUdpControl(msgs[i].msg_hdr);
      if (!ctl.dst) {
        ++counters_.esp_in_drop_bad_ip;
        freeBuffer(w, bufs[i]);
        continue;
      }
      outer.dst = *ctl.dst;
      outer.tos = ctl.tos;
      if (auto src = r.source6(i)) outer.src = *src;
      outer.hopLimit = hopLimitOf(msgs[i].msg_hdr);
    }
    inboundPacket(w, bufs[i], len, outer, true);
  }
  if (finishBurst(w, r)) {
    boost::asio::post(io_, [this, family] { readRaw(family); });
  } else {
    armRaw(family);
  }
}

// ESP in UDP (RFC 3948) on the NAT-T sockets: the kernel hands us the UDP
// payload, the peer in msg_name, our address and the outer TOS as control
// messages. IKE packets reach us only when no IKE daemon shares the port
// (the reuseport program sends them to index 1). With net.inet.ipsec.udp_gro
// a datagram may hold several payloads of one flow: gro.cpp splits it, or
// parks it and the rest of the burst until completions free enough buffers.
void Forwarder::readUdp(int family) noexcept {
  bool& stalled = family == AF_INET ? udp4Stalled_ : udp6Stalled_;
  ParkedUdp& parked = family == AF_INET ? parked4_ : parked6_;
  if (!resumeParked(parked)) {
    stalled = true;  // still short of buffers: the next completion retries
    return;
  }
  Worker& w = nextWorker();
  const int fd = family == AF_INET ? fds_.udp4.get() : fds_.udp6.get();
  RecvBurst& r = recv_;
  if (!receiveBurst(w, fd, 0, r)) {
    ++counters_.esp_in_stall_no_buffer;
    stalled = true;
    return;
  }
  auto& msgs = r.msgs;
  auto& bufs = r.bufs;
  for (std::size_t i = 0; i < r.got; ++i) {
    const std::uint32_t len = msgs[i].msg_len;
    if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
      ++counters_.esp_in_drop_truncated;
      freeBuffer(w, bufs[i]);
      continue;
    }
    const esp::GroSplit split = esp::splitGro(len, esp::parseGroControl(msgs[i].msg_hdr));
    if (!split.ok()) {
      ++counters_.natt_in_gro_drop_bad;
      freeBuffer(w, bufs[i]);
      continue;
    }
    const UdpDatagram d{&w, bufs[i], split, esp::parseUdpControl(msgs[i].msg_hdr),
                        esp::endpointFrom(r.names[i], msgs[i].msg_hdr.msg_namelen)};
    // Once one is parked, those behind it wait too: the SA's order is kept.
    if (parked.count != 0 || !udpDatagram(d)) {
      parked.items[parked.count++] = d;
      ++counters_.natt_in_gro_parked;
    }
  }
  const bool full = finishBurst(w, r);
  if (parked.count != 0) {
    stalled = true;
  } else if (full) {
    boost::asio::post(io_, [this, family] { readUdp(family); });
  } else {
    armUdp(family);
  }
}

void Forwarder::udpSegment(Worker& w, std::uint32_t buf, std::uint32_t len, const esp::UdpControl& ctl,
                           const std::optional<esp::UdpEndpoint>& peer) noexcept {
  auto drop = [&](std::uint64_t& counter) {
    ++counter;
    freeBuffer(w, buf);
  };
  switch (esp::classifyUdpPayload({bufferData(w, buf), len})) {
    case esp::UdpPayloadKind::kKeepalive: return drop(counters_.natt_in_keepalives);
    case esp::UdpPayloadKind::kIke: return drop(counters_.natt_in_ike_no_listener);
    case esp::UdpPayloadKind::kBad: return drop(counters_.natt_in_drop_bad);
    case esp::UdpPayloadKind::kEsp: break;
  }
  ++counters_.natt_in_esp_packets;
  if (!ctl.dst || !peer) return drop(counters_.esp_in_drop_bad_ip);
  // A split datagram queues more requests than a burst: hand them over
  // rather than grow the pending list.
  if (w.pending.size() >= kBurst) flushRequests(w, false);
  inboundPacket(w, buf, len, Outer{0, *ctl.dst, ctl.tos, true, *peer, {}, 64}, true);
}

NatT* Forwarder::natTOf(const Sa& sa) noexcept {
  return natt_.of(sa);
}

void Forwarder::inboundPacket(Worker& w, std::uint32_t buf, std::uint32_t len, const Outer& outer, bool pin) noexcept {
  std::uint8_t* data = bufferData(w, buf);
  const std::uint32_t off = outer.espOffset;
  const esp::IpAddress& dst = outer.dst;
  if (!espEnabled_) {
    ++counters_.esp_in_drop_disabled;
    freeBuffer(w, buf);
    return;
  }
  // The packet core decides (esp_in.cpp); this shell applies its verdict.
  const InboundEsp v = checkInboundEsp(sas_, natt_, {data + off, len - off}, dst, outer.udp);
  if (v.drop) {
    countDrop(counters_, v.drop);
    if (v.drop == &Counters::esp_in_drop_no_sa) log::debug("in: no SA for an ESP packet to {}", dst.toString());
    freeBuffer(w, buf);
    return;
  }
  Sa* sa = v.sa;
  const std::uint64_t seq = v.seq;
  if (pin && workers_.size() > 1 && &workerFor(*sa) != &w) {
    // Its SA's worker (worker_pin.cpp): the whole buffer as received (transport mode rebuilds from its start).
    Worker& to = workerFor(*sa);
    if (auto moved = moveToWorker(w, buf, 0, len, to, false)) return inboundPacket(to, *moved, len, outer, false);
  }
  w.pending.push_back(cryptoRequest(buf, *sa, proto::CryptoOp::kOpen, off, len - off, seq));
  w.contexts[buf] = {Use::kInbound, sa->ref, seq, outer.tos, outer.udp, outer.peer};
  if (!outer.udp) w.contexts[buf].peer.address = outer.src;  // transport mode rebuilds IPv6 headers
  w.contexts[buf].hopLimit = outer.hopLimit;
}

// ---- completions ------------------------------------------------------------

void Forwarder::drainCompletions(Worker& w) noexcept {
  std::array<proto::CryptoCompletion, kBurst> done;
  std::size_t completed = 0;
  for (;;) {
    std::size_t n = w.completions.dequeue(done);
    completed += n;
    // A broker that answers more than it was asked is caught per completion below.
    w.inFlight -= static_cast<std::uint32_t>(std::min<std::size_t>(n, w.inFlight));
    for (std::size_t i = 0; i < n; ++i) {
      const auto& c = done[i];
      // The broker only echoes our descriptor; trust nothing it did not
      // get from us: the buffer must be one we have in flight.
      if (c.bufferIndex >= w.contexts.size() || c.cookie != c.bufferIndex ||
          w.contexts[c.bufferIndex].use == Use::kFree) {
        ++counters_.crypto_bad_completion;
        continue;
      }
      const Use use = w.contexts[c.bufferIndex].use;
      if (use == Use::kAhOutbound || use == Use::kAhInbound) {
        onAhDone(w, c);  // ah.cpp
      } else if (use == Use::kOutbound) {
        onSealed(w, c);
      } else {
        onOpened(w, c);
      }
    }
    if (n < done.size()) break;
  }
  if (completed != 0) armUsage();  // an SA was used: keydb hears of it within a second
  // Slots freed: a worker that found the completion ring full sleeps on its
  // request bell until we say so (services/crypto/worker.cpp).
  ring::notifyPeer(w.completions, w.requestBell);
  flushRequests(w, true);  // a bundle's second stage (bundle.cpp) queued from a completion
  flushSends();
  restartStalledAh();
  if (tunStalled_) {
    tunStalled_ = false;
    boost::asio::post(io_, [this] { readTun(); });
  }
  for (int family : {AF_INET, AF_INET6}) {
    bool& stalled = family == AF_INET ? raw4Stalled_ : raw6Stalled_;
    if (stalled) {
      stalled = false;
      boost::asio::post(io_, [this, family] { readRaw(family); });
    }
    bool& udpStalled = family == AF_INET ? udp4Stalled_ : udp6Stalled_;
    if (udpStalled) {
      udpStalled = false;
      boost::asio::post(io_, [this, family] { readUdp(family); });
    }
  }
}

void Forwarder::onSealed(Worker& w, const proto::CryptoCompletion& c) noexcept {
  const BufferContext& ctx = w.contexts[c.bufferIndex];
  Sa* sa = sas_.find(ctx.sa);
  if (c.status != proto::CryptoStatus::kOk || !sa) {
    ++(c.status == proto::CryptoStatus::kWrongDirection ? counters_.out_drop_wrong_direction
                                                          : counters_.out_drop_crypto);
    freeBuffer(w, c.bufferIndex);
    return;
  }
  if (ctx.next != StepKind::kNone) return runNextStep(w, c);  // a bundle: its next step (bundle.cpp)
  if (ctx.transportHeader != 0) return queueTransportSend(w, c, *sa);
  // A NAT-T SA sends ESP as the payload of UDP to (dst, natTDport).
  const NatT* nat = natTOf(*sa);
  // IPv4 outer, and IPv6 beyond the SA's MTU: our header (pmtu.cpp).
  if (queueTunnelSend(w, c, *sa, nat)) return;
  SendBatch& b = queueSend(nat ? (sa->dst.isV4() ? sendUdp4_ : sendUdp6_) : (sa->dst.isV4() ? send4_ : send6_));
  const std::size_t i = b.add(w, c.bufferIndex, {bufferData(w, c.bufferIndex) + c.offset, c.length},
                              [&](sockaddr_storage& to) {
                                return esp::toSockaddr({sa->dst, nat ? nat->dport : std::uint16_t{0}}, to);
                              });
  b.setTrafficClass(i, sa->dst.isV4(), w.contexts[c.bufferIndex].tos);
}

void Forwarder::SendBatch::setTrafficClass(std::size_t i, bool v4, int tos) noexcept {
  addControl(i, v4 ? IPPROTO_IP : IPPROTO_IPV6, v4 ? IP_TOS : IPV6_TCLASS, &tos, sizeof tos);
}

void Forwarder::SendBatch::addControl(std::size_t i, int level, int type, const void* data,
                                      std::size_t length) noexcept {
  msghdr& m = msgs[i].msg_hdr;
  const std::size_t at = m.msg_control ? m.msg_controllen : 0;
  if (at + CMSG_SPACE(length) > cmsgs[i].size()) std::abort();  // kControlSpace is sized for every caller
  char* space = cmsgs[i].data() + at;
  std::memset(space, 0, CMSG_SPACE(length));
  auto* cm = reinterpret_cast<cmsghdr*>(space);
  cm->cmsg_level = level;
  cm->cmsg_type = type;
  cm->cmsg_len = CMSG_LEN(length);
  std::memcpy(CMSG_DATA(cm), data, length);
  m.msg_control = cmsgs[i].data();
  m.msg_controllen = at + CMSG_SPACE(length);
}

void Forwarder::flushSends() noexcept {
  flushSendBatch(send4_);
  flushSendBatch(send6_);
  flushSendBatch(sendUdp4_);
  flushSendBatch(sendUdp6_);
  flushSendBatch(sendUdpOwnHeader4_);
  flushSendBatch(sendHdr4_);
  flushSendBatch(sendHdr6_);
  flushSendBatch(sendAh4_);
  flushSendBatch(sendAh6_);
  flushTunWrites();  // the burst's packets for the TUN, coalesced (tun_writer.cpp)
}

void Forwarder::flushSendBatch(SendBatch& b) noexcept {
  if (&b == &sendUdp4_) {
    flushUdp4(b);  // gro.cpp
  } else if (&b == &sendUdp6_ && udpGso_) {
    flushGso(b, 0, b.count);
  } else {
    sendEach(b, 0, b.count);
  }
  for (std::size_t i = 0; i < b.count; ++i) freeBuffer(*b.buffers[i].first, b.buffers[i].second);
  b.count = 0;
}

void Forwarder::sendEach(SendBatch& b, std::size_t first, std::size_t count) noexcept {
  std::size_t sent = first;
  const std::size_t end = first + count;
  while (sent < end) {
    int n = sendmmsg(b.fd, b.msgs.data() + sent, static_cast<unsigned>(end - sent), MSG_DONTWAIT);
    if (n <= 0) {
      // Refused (EAGAIN, unreachable, ...): drop this one and go on with the rest.
      ++counters_.out_drop_send;
      ++sent;
      continue;
    }
    for (std::size_t i = sent; i < sent + static_cast<std::size_t>(n); ++i) {
      ++(b.ah ? counters_.ah_out_packets : counters_.esp_out_packets);
      (b.ah ? counters_.ah_out_bytes : counters_.esp_out_bytes) += b.msgs[i].msg_len;
    }
    if (b.udp) counters_.natt_out_esp_packets += static_cast<std::uint64_t>(n);
    sent += static_cast<std::size_t>(n);
  }
}

Sa* Forwarder::acceptVerified(Worker& w, const proto::CryptoCompletion& c, const BufferContext& ctx, bool sane,
                              const VerifyDrops& d) noexcept {
  const Verified v = forwarder::acceptVerified(sas_, ctx.sa, c.status, sane, ctx.seq, d);  // esp_in.cpp
  if (v.drop) {
    countDrop(counters_, v.drop);
    freeBuffer(w, c.bufferIndex);
    return nullptr;
  }
  return v.sa;
}

void Forwarder::onOpened(Worker& w, const proto::CryptoCompletion& c) noexcept {
  const BufferContext ctx = w.contexts[c.bufferIndex];
  Sa* sa = acceptVerified(w, c, ctx, true, kEspVerifyDrops);
  if (!sa) return;
  // Authenticated and fresh: a peer that now comes from elsewhere is behind
  // a NAT that rebound (RFC 3948 §5). Only reported (a replayed copy sent from
  // another address cannot get this far); the key manager decides.
  if (ctx.udp) {
    NatT* nat = natTOf(*sa);
    if (nat && (ctx.peer.address != sa->src || ctx.peer.port != nat->sport)) reportNatMapping(*sa, *nat, ctx.peer);
  }
  // The packet core decides (inbound_open.cpp); this shell applies its verdict.
  const OpenedFrom from{ctx.tos, ctx.udp, ctx.peer, ctx.hopLimit, ctx.peeled, ctx.peeledSa};
  const OpenedVerdict v = judgeOpened(inboundTables(), {bufferData(w, c.bufferIndex), w.bufferSize}, c.offset,
                                      c.length, *sa, from);
  applyOpened(w, c.bufferIndex, *sa, v);
}

void Forwarder::applyOpened(Worker& w, std::uint32_t buf, Sa& sa, const OpenedVerdict& v) noexcept {
  switch (v.kind) {
    case OpenedVerdict::Kind::kDrop:
      countDrop(counters_, v.drop);
      if (v.saDropOther) sa.counters.in_drop_other++;
      if (v.drop == &Counters::esp_in_drop_policy) {
        log::debug("in: {} -> {} via SPI {:#x} not allowed by the SPD", v.flow.src.toString(), v.flow.dst.toString(),
                   sa.spi);
      }
      break;
    case OpenedVerdict::Kind::kDummy: countDrop(counters_, v.drop); break;
    case OpenedVerdict::Kind::kOpenAgain:
      // The tunnel's part is done: counted as the tunnel SA's, whatever the
      // transport SA inside decides.
      if (sa.firstUse == 0) sa.firstUse = clock::unixSeconds();
      sa.counters.in_packets++;
      sa.counters.in_bytes += v.length;
      openInner(w, buf, v.again, StepKind::kEspTunnel, sa.ref);
      return;
    case OpenedVerdict::Kind::kDeliver:
      if (sa.firstUse == 0) sa.firstUse = clock::unixSeconds();
      if (writeTun({bufferData(w, buf) + v.offset, v.length})) {
        ++counters_.esp_in_packets;
        if (v.transport) ++counters_.transport_in_packets;
        counters_.esp_in_bytes += v.length;
        sa.counters.in_packets++;
        sa.counters.in_bytes += v.length;
      }
      break;
  }
  freeBuffer(w, buf);
}

bool Forwarder::openInner(Worker& w, std::uint32_t buf, const InnerEsp& inner, StepKind peeled, SaRef outer) noexcept {
  Outer o;
  o.espOffset = inner.espOffset;
  o.dst = inner.dst;
  o.src = inner.src;
  o.tos = inner.tos;
  o.hopLimit = inner.hopLimit;
  inboundPacket(w, buf, inner.end, o);  // frees and counts on failure
  BufferContext& ctx = w.contexts[buf];
  if (ctx.use != Use::kInbound) return false;
  ctx.peeled = peeled;
  ctx.peeledSa = outer;
  return true;
}

}  // namespace ipsec::forwarder

namespace ipsec::forwarder {

void Forwarder::reportNatMapping(Sa& sa, NatT& nat, const esp::UdpEndpoint& from) noexcept {
  const std::uint64_t now = clock::monotonicMs();
  if (nat.lastMappingMs != 0 && now - nat.lastMappingMs < 1000) return;
  nat.lastMappingMs = now;
  if (!policy_ || !policy_->isOpen()) return;
  try {
    capnp::MallocMessageBuilder b;
    auto m = b.initRoot<proto::ForwarderToPolicy>().initNatMapping();
    m.setSatype(sa.satype);
    m.setSpi(sa.spi);
    auto src = sa.src.bytes();
    auto dst = sa.dst.bytes();
    auto fresh = from.address.bytes();
    m.setSrc(capnp::Data::Reader(src.data(), src.size()));
    m.setDst(capnp::Data::Reader(dst.data(), dst.size()));
    m.setSport(nat.sport);
    m.setDport(nat.dport);
    m.setNewSrc(capnp::Data::Reader(fresh.data(), fresh.size()));
    m.setNewSport(from.port);
    policy_->send(b);
    ++counters_.natt_in_new_mapping;
    log::debug("in: SPI {:#x} now from {} port {} (SA says {} port {})", sa.spi, from.address.toString(), from.port,
               sa.src.toString(), nat.sport);
  } catch (...) {
    // Not reported this time; the next packet after the interval retries.
  }
}

// NAT keepalives (RFC 3948 §2.3): one byte 0xFF to the peer of every NAT-T SA
// that has carried outbound traffic, so the NAT keeps its mapping while the
// tunnel is idle. Batched per family; over IPv4 from the SA's source address,
// as its ESP (queueUdp4), so that they keep the same mapping alive.
void Forwarder::sendKeepalives() noexcept {
  static const std::uint8_t kByte = esp::kNatKeepalive;
  struct Batch {
    std::array<mmsghdr, kBurst> msgs{};
    std::array<iovec, kBurst> iovs{};
    std::array<sockaddr_storage, kBurst> addrs{};
    std::array<std::array<char, CMSG_SPACE(sizeof(in_pktinfo))>, kBurst> cmsgs{};
    std::size_t count = 0;
  };
  Batch b4, b6;
  auto flush = [this](Batch& b, int fd) {
    std::size_t sent = 0;
    while (sent < b.count) {
      int n = sendmmsg(fd, b.msgs.data() + sent, static_cast<unsigned>(b.count - sent), MSG_DONTWAIT);
      if (n <= 0) {
        ++counters_.natt_out_keepalive_errors;
        ++sent;
        continue;
      }
      counters_.natt_out_keepalives += static_cast<std::uint64_t>(n);
      sent += static_cast<std::size_t>(n);
    }
    b.count = 0;
  };
  sas_.forEach([&](Sa& sa) {
    const NatT* nat = natTOf(sa);
    if (!nat || !nat->outbound) return;
    Batch& b = sa.dst.isV4() ? b4 : b6;
    const int fd = sa.dst.isV4() ? fds_.udp4.get() : fds_.udp6.get();
    if (b.count == kBurst) flush(b, fd);
    const std::size_t i = b.count++;
    b.iovs[i] = {const_cast<std::uint8_t*>(&kByte), 1};
    b.msgs[i] = {};
    b.msgs[i].msg_hdr.msg_name = &b.addrs[i];
    b.msgs[i].msg_hdr.msg_namelen = esp::toSockaddr({sa.dst, nat->dport}, b.addrs[i]);
    b.msgs[i].msg_hdr.msg_iov = &b.iovs[i];
    b.msgs[i].msg_hdr.msg_iovlen = 1;
    if (sa.dst.isV4()) {
      msghdr& m = b.msgs[i].msg_hdr;
      m.msg_control = b.cmsgs[i].data();
      m.msg_controllen = b.cmsgs[i].size();
      cmsghdr* c = CMSG_FIRSTHDR(&m);
      c->cmsg_level = IPPROTO_IP;
      c->cmsg_type = IP_PKTINFO;
      c->cmsg_len = CMSG_LEN(sizeof(in_pktinfo));
      in_pktinfo source{};
      std::memcpy(&source.ipi_spec_dst, sa.src.bytes().data(), sizeof source.ipi_spec_dst);
      std::memcpy(CMSG_DATA(c), &source, sizeof source);
    }
  });
  flush(b4, fds_.udp4.get());
  flush(b6, fds_.udp6.get());
}

}  // namespace ipsec::forwarder
