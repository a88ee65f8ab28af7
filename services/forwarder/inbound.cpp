// ipsec-forwarder: the inbound shell — ESP read from the raw sockets and the
// NAT-T UDP sockets, each packet checked by the inbound core (esp_in.cpp) and
// queued to the broker to open; on its completion the core after the broker
// (inbound_open.cpp) judges it and this shell applies the verdict: deliver to
// the TUN, open an inner ESP again, or drop and count. Packets are hostile:
// noexcept, allocation-free, every drop counted by reason. (A NAT mapping
// report builds a Cap'n Proto message, rate-limited.)
#include "forwarder.h"

#include <netinet/in.h>
#include <netinet/ip.h>

#include "clock/clock.h"
#include "esp/esp.h"
#include "esp/ip.h"
#include "log/log.h"

namespace ipsec::forwarder {
std::optional<esp::IpAddress> RecvBurst::source6(std::size_t i) const noexcept {
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
  if (!handoffRoom(kBurst)) {  // each packet may be another thread's (threads.cpp): its owner restarts us
    (family == AF_INET ? raw4Stalled_ : raw6Stalled_) = true;
    return;
  }
  if (!pinRoom()) {  // each packet may be another worker's (worker_pin.cpp): a completion restarts us
    ++counters_.esp_in_stall_no_buffer;
    (family == AF_INET ? raw4Stalled_ : raw6Stalled_) = true;
    return;
  }
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
  if (!handoffRoom(kBurst)) {  // as readRaw
    stalled = true;
    return;
  }
  if (!pinRoom()) {  // as readRaw
    ++counters_.esp_in_stall_no_buffer;
    stalled = true;
    return;
  }
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
  if (pin && handOffInbound(w, buf, len, outer, *sa)) return;  // another forwarder thread's SA (threads.cpp)
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
  if (!applyOpenedKeep(w, buf, sa, v)) freeBuffer(w, buf);
}

bool Forwarder::applyOpenedKeep(Worker& w, std::uint32_t buf, Sa& sa, const OpenedVerdict& v) noexcept {
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
      return true;
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
  return false;
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
}  // namespace ipsec::forwarder
