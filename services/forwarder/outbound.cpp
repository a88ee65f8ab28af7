// ipsec-forwarder: the outbound shell — a burst read from the TUN, each
// packet routed by the outbound core (esp_out.cpp) and the route applied here:
// a drop counted, a packet held for its SA while an ACQUIRE goes out, a bundle
// handed to its stages, or one ESP seal request queued for the broker. Also the
// pool-buffer helpers every path shares and the request flush. Every function
// is noexcept and allocation-free: a bad packet is dropped and counted under its
// named reason, never thrown and never logged above debug. (The ACQUIRE and the
// sequence-number request build a Cap'n Proto message, each rate-limited.)
#include "forwarder.h"

#include <linux/ipsec.h>
#include <linux/pfkeyv2.h>
#include <netinet/in.h>
#include <unistd.h>

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

Worker& Forwarder::nextWorker() noexcept {
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

bool Forwarder::outboundPacket(Worker& w, std::uint32_t buf, std::uint32_t len, std::uint64_t heldSinceMs) noexcept {
  // The packet core routes it (esp_out.cpp); this shell applies the route.
  const OutboundRoute route = routeOutbound(spd_, sas_, {bufferData(w, buf) + kHeadroom, len}, espEnabled_);
  return outboundRouted(w, buf, len, route, heldSinceMs);
}

bool Forwarder::outboundRouted(Worker& w, std::uint32_t buf, std::uint32_t len, const OutboundRoute& route,
                               std::uint64_t heldSinceMs) noexcept {
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
    case OutboundRoute::Kind::kBundle:  // AH alone, ESP then AH, ESP in ESP (bundle_frame.cpp)
      return outboundBundle(w, buf, len, *p, *flow, heldSinceMs);
    case OutboundRoute::Kind::kEsp: break;
  }
  Sa* sa = route.sa;
  if (route.transport) return outboundTransport(w, buf, len, *sa, p);
  return sealTunnel(w, buf, len, *sa, *p, *flow);
}

bool Forwarder::sealTunnel(Worker& w, std::uint32_t buf, std::uint32_t len, Sa& sa, const Policy& p,
                           const esp::FlowKey& flow) noexcept {
  std::uint8_t* data = bufferData(w, buf);
  // The framing core decides (tunnel_frame.cpp); this shell applies its verdict.
  TunnelOptions* t = tunnelOf(sa);
  const TunnelFacts facts = tunnelFacts(sa, t);
  const TunnelFrame f = frameTunnel({sa, p, facts, ipcompSas_, ipcompEnabled_}, {data, w.bufferSize}, kHeadroom, len);
  // Events counted whatever follows (a later drop does not undo them).
  if (f.ipcompEvent) countDrop(counters_, f.ipcompEvent);
  if (f.tfcPadded) ++counters_.esp_out_tfc_padded;
  switch (f.kind) {
    case TunnelFrame::Kind::kDrop: countDrop(counters_, f.drop); return false;
    case TunnelFrame::Kind::kTooBig:
      countDrop(counters_, f.drop);
      sendTooBig({data + kHeadroom, len}, f.mtu);
      return false;
    case TunnelFrame::Kind::kSeal: break;
  }
  const std::uint64_t seq = f.seq;
  ++sa.seqNext;
  maybeRequestSeq(sa);
  if (NatT* nat = natTOf(sa)) nat->outbound = true;
  if (sa.firstUse == 0) sa.firstUse = clock::unixSeconds();

  w.pending.push_back(cryptoRequest(buf, sa, proto::CryptoOp::kSeal, f.offset, f.length, seq));
  w.contexts[buf] = {Use::kOutbound, sa.ref, seq, f.outerTos, false, {}};
  w.contexts[buf].outerDf = f.outerDf;
  if (t) {
    t->outbound = true;
    t->lastOutMs = clock::monotonicMs();
  }
  sa.counters.out_packets++;
  sa.counters.out_bytes += len;
  if (log::debugEnabled()) {
    log::debug("out {} -> {} proto {} len {}: SPI {:#x} seq {}", flow.src.toString(), flow.dst.toString(),
               flow.proto, len, sa.spi, seq);
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
      counters_.out_drop_ring_full += w.pending[i].segmentCount;  // a super-packet's request: each of its packets
    } else {
      counters_.esp_in_drop_ring_full += w.pending[i].segmentCount;  // a GRO datagram's: several (gro.cpp)
    }
    freeBuffer(w, w.pending[i].bufferIndex);
  }
  w.pending.clear();
  if (n == 0) return;
  // We poll for these completions next (control.cpp serviceCompletions), so
  // say we are awake before the worker can answer. After a sleep the flag
  // stayed up until our first poll step, an asio turn away; a worker woken
  // onto our CPU preempts us before that step, then rings a bell nobody
  // waits on and we pay a wake-up turn for it (bench/latency/ping_stages.py:
  // the first pass of each end after a pause). Safe: the poll's last step
  // raises the flag again and re-checks the ring (ring/doorbell.h).
  w.completions.finishSleep();
  ring::notifyPeer(w.requests, w.requestBell);
  // Poll for their completions a while before sleeping (control.cpp).
  w.inFlight += static_cast<std::uint32_t>(n);
  w.pollUntilNs = clock::monotonicNs() + kCompletionPollNs;
  pollCompletions(w);
}
}  // namespace ipsec::forwarder
