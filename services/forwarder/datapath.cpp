// ipsec-forwarder: the packet paths (see forwarder.h for the pipeline). Every
// function here is noexcept and allocation-free: a bad packet is dropped and
// counted under its named reason, never thrown and never logged above debug.
#include "forwarder.h"

#include <linux/ipsec.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <time.h>
#include <unistd.h>

#include <cstring>

#include "esp/ecn.h"
#include "esp/esp.h"
#include "esp/ip.h"
#include "log/log.h"

namespace ipsec::forwarder {
namespace {

std::uint64_t nowMs() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000 + static_cast<std::uint64_t>(ts.tv_nsec) / 1000000;
}

std::uint64_t nowSeconds() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec);
}

void fillSockaddr(const esp::IpAddress& a, sockaddr_storage& ss, socklen_t& len) noexcept {
  std::memset(&ss, 0, sizeof ss);
  if (a.isV4()) {
    auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
    sin->sin_family = AF_INET;
    std::memcpy(&sin->sin_addr, a.bytes().data(), 4);
    len = sizeof(sockaddr_in);
  } else {
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ss);
    sin6->sin6_family = AF_INET6;
    std::memcpy(&sin6->sin6_addr, a.bytes().data(), 16);
    len = sizeof(sockaddr_in6);
  }
}

// Does this inbound SA satisfy one of the policy's requests?
bool requestAllows(const Policy& p, const Sa& sa) noexcept {
  for (const auto& r : p.requests) {
    if (r.proto != IPPROTO_ESP) continue;
    if (r.mode == IPSEC_MODE_TUNNEL && (r.tunnelSrc != sa.src || r.tunnelDst != sa.dst)) continue;
    if (r.level == IPSEC_LEVEL_UNIQUE && r.reqid != 0 && r.reqid != sa.reqid) continue;
    return true;
  }
  return false;
}

// One ESP packet (a single segment) of buffer buf, for the SA's session. The
// cookie is the buffer index: the completion is matched against our private
// context for that buffer, never trusted on its own.
proto::CryptoRequest cryptoRequest(std::uint32_t buf, const Sa& sa, proto::CryptoOp op, std::uint32_t offset,
                                   std::uint32_t length, std::uint64_t seq) noexcept {
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
  return req;
}

}  // namespace

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

void Forwarder::readTun() noexcept {
  Worker& w = nextWorker();
  std::size_t n = 0;
  for (; n < kBurst; ++n) {
    auto buf = allocBuffer(w);
    if (!buf) {
      // Leave the packets in the TUN queue; the next completion restarts us.
      ++counters_.out_stall_no_buffer;
      tunStalled_ = true;
      flushRequests(w, true);
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
  flushRequests(w, true);
  if (n == kBurst) {
    boost::asio::post(io_, [this] { readTun(); });  // more may be queued: yield, then go on
  } else {
    armTun();
  }
}

bool Forwarder::outboundPacket(Worker& w, std::uint32_t buf, std::uint32_t len, std::uint64_t heldSinceMs) noexcept {
  std::uint8_t* data = bufferData(w, buf);
  auto flow = esp::parseInnerPacket({data + kHeadroom, len});
  if (!flow) {
    ++counters_.out_drop_bad_inner;
    return false;
  }
  const Policy* p = spd_.lookup(IPSEC_DIR_OUTBOUND, *flow);
  if (!p) {
    ++counters_.out_drop_no_policy;
    return false;
  }
  if (p->action == IPSEC_POLICY_DISCARD) {
    ++counters_.out_drop_policy_discard;
    return false;
  }
  if (p->action != IPSEC_POLICY_IPSEC) {
    ++counters_.out_drop_policy_bypass;
    return false;
  }
  if (!espEnabled_) {
    ++counters_.esp_out_drop_disabled;
    return false;
  }
  Sa* sa = nullptr;
  const Request* wanted = nullptr;
  for (const auto& r : p->requests) {
    if (r.proto != IPPROTO_ESP || !r.tunnelSrc || !r.tunnelDst) continue;
    wanted = &r;
    sa = sas_.selectOutbound(*r.tunnelSrc, *r.tunnelDst, r.level == IPSEC_LEVEL_UNIQUE ? r.reqid : 0);
    if (sa) break;
  }
  if (!sa) {
    if (!wanted) {
      ++counters_.out_drop_no_sa;
      return false;
    }
    requestAcquire(*p, *wanted, *flow);
    return holdForSa(w, buf, len, heldSinceMs ? heldSinceMs : nowMs());
  }
  // Without ESN the counter must never wrap (RFC 4303 §3.3.3); keydb's grants
  // stop at 2^32, so exhausting the grant covers both cases.
  if (sa->seqNext >= sa->seqLimit) {
    ++counters_.out_drop_seq_wait;
    maybeRequestSeq(*sa);
    return false;
  }
  const std::uint64_t seq = sa->seqNext;
  const std::uint8_t nextHeader = flow->version == 4 ? esp::kNextHeaderIpv4 : esp::kNextHeaderIpv6;
  auto r = esp::encapsulate({data, w.bufferSize}, kHeadroom, len, sa->spi,
                            static_cast<std::uint32_t>(seq), sa->layout, nextHeader);
  if (!r.ok()) {
    ++counters_.out_drop_no_room;
    return false;
  }
  ++sa->seqNext;
  maybeRequestSeq(*sa);
  if (sa->firstUse == 0) sa->firstUse = nowSeconds();

  w.pending.push_back(cryptoRequest(buf, *sa, proto::CryptoOp::kSeal, static_cast<std::uint32_t>(r.offset),
                                    static_cast<std::uint32_t>(r.length), seq));
  w.contexts[buf] = {Use::kOutbound, sa->ref, seq, esp::outerTrafficClass(esp::trafficClass({data + kHeadroom, len}))};
  sa->counters.out_packets++;
  sa->counters.out_bytes += len;
  if (log::debugEnabled()) {
    log::debug("out {} -> {} proto {} len {}: SPI {:#x} seq {}", flow->src.toString(), flow->dst.toString(),
               flow->proto, len, sa->spi, seq);
  }
  return true;
}

bool Forwarder::holdForSa(Worker& w, std::uint32_t buf, std::uint32_t len, std::uint64_t sinceMs) noexcept {
  if (held_.size() >= kMaxHeld || nowMs() - sinceMs > kHoldMs) {
    ++counters_.out_drop_no_sa;
    return false;
  }
  held_.push_back({&w, buf, len, sinceMs});  // capacity reserved: no allocation
  ++counters_.out_held_no_sa;
  return true;
}

// As the kernel does: an ACQUIRE names the SA's endpoints, the inner
// protocol and the policy; ipsec-policy adds the proposal and tells the
// registered key managers. One per policy per interval.
void Forwarder::requestAcquire(const Policy& p, const Request& r, const esp::FlowKey& flow) noexcept {
  const std::uint64_t now = nowMs();
  auto [it, fresh] = lastAcquireMs_.try_emplace(p.id, now);
  if (!fresh && now - it->second < kAcquireIntervalMs) return;
  it->second = now;
  if (!policy_ || !policy_->isOpen()) return;
  try {
    capnp::MallocMessageBuilder b;
    auto a = b.initRoot<proto::ForwarderToPolicy>().initAcquire();
    a.setPolicyId(p.id);
    auto s = r.tunnelSrc->bytes();
    auto d = r.tunnelDst->bytes();
    a.setSrc(capnp::Data::Reader(s.data(), s.size()));
    a.setDst(capnp::Data::Reader(d.data(), d.size()));
    a.setProto(flow.proto);
    policy_->send(b);
    ++counters_.out_acquires;
  } catch (...) {
    // Counted as no ACQUIRE; the next packet retries after the interval.
  }
}

// An SA arrived: give every held packet another pass.
void Forwarder::releaseHeld() noexcept {
  if (held_.empty()) return;
  std::vector<HeldPacket> again;
  again.swap(held_);
  held_.reserve(kMaxHeld);
  for (const auto& h : again) {
    if (!outboundPacket(*h.worker, h.buffer, h.length, h.sinceMs)) freeBuffer(*h.worker, h.buffer);
  }
  for (auto& w : workers_) flushRequests(*w, true);
}

void Forwarder::expireHeld() noexcept {
  const std::uint64_t now = nowMs();
  std::erase_if(held_, [&](const HeldPacket& h) {
    if (now - h.sinceMs <= kHoldMs) return false;
    ++counters_.out_drop_no_sa;
    freeBuffer(*h.worker, h.buffer);
    return true;
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
  if (n != 0) ring::notifyPeer(w.requests, w.requestBell);
}

// ---- inbound ----------------------------------------------------------------

void Forwarder::readRaw(int family) noexcept {
  Worker& w = nextWorker();
  const int fd = family == AF_INET ? fds_.raw4.get() : fds_.raw6.get();
  std::array<mmsghdr, kBurst> msgs{};
  std::array<iovec, kBurst> iovs{};
  std::array<std::uint32_t, kBurst> bufs{};
  std::array<std::array<char, CMSG_SPACE(sizeof(in6_pktinfo)) + CMSG_SPACE(sizeof(int))>, kBurst> cmsgs{};
  std::size_t have = 0;
  for (; have < kBurst; ++have) {
    auto b = allocBuffer(w);
    if (!b) break;
    bufs[have] = *b;
    iovs[have] = {bufferData(w, *b), w.bufferSize};
    msgs[have].msg_hdr.msg_iov = &iovs[have];
    msgs[have].msg_hdr.msg_iovlen = 1;
    msgs[have].msg_hdr.msg_control = cmsgs[have].data();
    msgs[have].msg_hdr.msg_controllen = cmsgs[have].size();
  }
  if (have == 0) {
    ++counters_.esp_in_stall_no_buffer;
    (family == AF_INET ? raw4Stalled_ : raw6Stalled_) = true;
    return;
  }
  int got = recvmmsg(fd, msgs.data(), static_cast<unsigned>(have), MSG_DONTWAIT, nullptr);
  if (got < 0) got = 0;
  for (int i = 0; i < got; ++i) {
    std::uint32_t len = msgs[i].msg_len;
    if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
      ++counters_.esp_in_drop_truncated;
      freeBuffer(w, bufs[i]);
      continue;
    }
    // IPv6 raw sockets strip the IP header; the destination comes as pktinfo.
    esp::IpAddress dst6;
    std::uint8_t tclass6 = 0;
    if (family == AF_INET6) {
      bool found = false;
      for (cmsghdr* c = CMSG_FIRSTHDR(&msgs[i].msg_hdr); c; c = CMSG_NXTHDR(&msgs[i].msg_hdr, c)) {
        if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
          in6_pktinfo pi;
          std::memcpy(&pi, CMSG_DATA(c), sizeof pi);
          dst6 = esp::IpAddress::v6(std::span<const uint8_t, 16>(pi.ipi6_addr.s6_addr, 16));
          found = true;
        } else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_TCLASS) {
          int tc = 0;
          std::memcpy(&tc, CMSG_DATA(c), sizeof tc);
          tclass6 = static_cast<std::uint8_t>(tc);
        }
      }
      if (!found) {
        ++counters_.esp_in_drop_bad_ip;
        freeBuffer(w, bufs[i]);
        continue;
      }
    }
    inboundPacket(w, bufs[i], len, family, dst6, tclass6);
  }
  for (std::size_t i = static_cast<std::size_t>(got); i < have; ++i) freeBuffer(w, bufs[i]);
  flushRequests(w, false);
  if (static_cast<std::size_t>(got) == kBurst) {
    boost::asio::post(io_, [this, family] { readRaw(family); });
  } else {
    armRaw(family);
  }
}

void Forwarder::inboundPacket(Worker& w, std::uint32_t buf, std::uint32_t len, int family,
                              const esp::IpAddress& dst6, std::uint8_t tclass6) noexcept {
  std::uint8_t* data = bufferData(w, buf);
  std::uint32_t off = 0;
  esp::IpAddress dst;
  std::uint8_t outerTos = tclass6;
  if (family == AF_INET) {
    if (len < 20 || (data[0] >> 4) != 4) {
      ++counters_.esp_in_drop_bad_ip;
      freeBuffer(w, buf);
      return;
    }
    off = (data[0] & 0x0fu) * 4u;
    if (off < 20 || off > len) {
      ++counters_.esp_in_drop_bad_ip;
      freeBuffer(w, buf);
      return;
    }
    dst = esp::IpAddress::v4(std::span<const uint8_t, 4>(data + 16, 4));
    outerTos = data[1];
  } else {
    dst = dst6;
  }
  if (!espEnabled_) {
    ++counters_.esp_in_drop_disabled;
    freeBuffer(w, buf);
    return;
  }
  std::span<const std::uint8_t> esp{data + off, len - off};
  auto h = esp::parseHeader(esp);
  if (!h.ok()) {
    ++counters_.esp_in_drop_truncated;
    freeBuffer(w, buf);
    return;
  }
  Sa* sa = sas_.findInbound(h.header.spi, dst);
  if (!sa) {
    ++counters_.esp_in_drop_no_sa;
    log::debug("in: no SA for SPI {:#x} dst {}", h.header.spi, dst.toString());
    freeBuffer(w, buf);
    return;
  }
  const auto& l = sa->layout;
  if (esp.size() < esp::kEspHeaderLength + l.ivLength + esp::kEspTrailerLength + l.icvLength) {
    ++counters_.esp_in_drop_truncated;
    sa->counters.in_drop_other++;
    freeBuffer(w, buf);
    return;
  }
  std::uint64_t seq = h.header.seqLow;
  if (sa->replay) {
    auto full = sa->replay->check(h.header.seqLow);
    if (!full) {
      ++counters_.esp_in_drop_replay;
      sa->counters.in_drop_replay++;
      freeBuffer(w, buf);
      return;
    }
    seq = *full;
  }
  w.pending.push_back(cryptoRequest(buf, *sa, proto::CryptoOp::kOpen, off, len - off, seq));
  w.contexts[buf] = {Use::kInbound, sa->ref, seq, outerTos};
}

// ---- completions ------------------------------------------------------------

void Forwarder::drainCompletions(Worker& w) noexcept {
  std::array<proto::CryptoCompletion, kBurst> done;
  for (;;) {
    std::size_t n = w.completions.dequeue(done);
    for (std::size_t i = 0; i < n; ++i) {
      const auto& c = done[i];
      // The broker only echoes our descriptor; trust nothing it did not
      // get from us: the buffer must be one we have in flight.
      if (c.bufferIndex >= w.contexts.size() || c.cookie != c.bufferIndex ||
          w.contexts[c.bufferIndex].use == Use::kFree) {
        ++counters_.crypto_bad_completion;
        continue;
      }
      if (w.contexts[c.bufferIndex].use == Use::kOutbound) {
        onSealed(w, c);
      } else {
        onOpened(w, c);
      }
    }
    if (n < done.size()) break;
  }
  flushSends();
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
  }
}

void Forwarder::onSealed(Worker& w, const proto::CryptoCompletion& c) noexcept {
  const BufferContext& ctx = w.contexts[c.bufferIndex];
  Sa* sa = sas_.find(ctx.sa);
  if (c.status != proto::CryptoStatus::kOk || !sa) {
    ++counters_.out_drop_crypto;
    freeBuffer(w, c.bufferIndex);
    return;
  }
  SendBatch& b = sa->dst.isV4() ? send4_ : send6_;
  if (b.count == kBurst) flushSendBatch(b, &b == &send4_ ? fds_.raw4.get() : fds_.raw6.get());
  const std::size_t i = b.count++;
  socklen_t alen = 0;
  fillSockaddr(sa->dst, b.addrs[i], alen);
  b.iovs[i] = {bufferData(w, c.bufferIndex) + c.offset, c.length};
  b.msgs[i] = {};
  b.msgs[i].msg_hdr.msg_name = &b.addrs[i];
  b.msgs[i].msg_hdr.msg_namelen = alen;
  b.msgs[i].msg_hdr.msg_iov = &b.iovs[i];
  b.msgs[i].msg_hdr.msg_iovlen = 1;
  b.msgs[i].msg_hdr.msg_control = b.cmsgs[i].data();
  b.msgs[i].msg_hdr.msg_controllen = b.cmsgs[i].size();
  cmsghdr* cm = CMSG_FIRSTHDR(&b.msgs[i].msg_hdr);
  cm->cmsg_level = sa->dst.isV4() ? IPPROTO_IP : IPPROTO_IPV6;
  cm->cmsg_type = sa->dst.isV4() ? IP_TOS : IPV6_TCLASS;
  cm->cmsg_len = CMSG_LEN(sizeof(int));
  const int tos = w.contexts[c.bufferIndex].tos;
  std::memcpy(CMSG_DATA(cm), &tos, sizeof tos);
  b.buffers[i] = {&w, c.bufferIndex};
}

void Forwarder::flushSends() noexcept {
  flushSendBatch(send4_, fds_.raw4.get());
  flushSendBatch(send6_, fds_.raw6.get());
}

void Forwarder::flushSendBatch(SendBatch& b, int fd) noexcept {
  std::size_t sent = 0;
  while (sent < b.count) {
    int n = sendmmsg(fd, b.msgs.data() + sent, static_cast<unsigned>(b.count - sent), MSG_DONTWAIT);
    if (n <= 0) {
      // Refused (EAGAIN, unreachable, ...): drop this one and go on with the rest.
      ++counters_.out_drop_send;
      ++sent;
      continue;
    }
    for (std::size_t i = sent; i < sent + static_cast<std::size_t>(n); ++i) {
      ++counters_.esp_out_packets;
      counters_.esp_out_bytes += b.msgs[i].msg_len;
    }
    sent += static_cast<std::size_t>(n);
  }
  for (std::size_t i = 0; i < b.count; ++i) freeBuffer(*b.buffers[i].first, b.buffers[i].second);
  b.count = 0;
}

void Forwarder::onOpened(Worker& w, const proto::CryptoCompletion& c) noexcept {
  const BufferContext ctx = w.contexts[c.bufferIndex];
  Sa* sa = sas_.find(ctx.sa);
  auto drop = [&](std::uint64_t& counter) {
    ++counter;
    if (sa) sa->counters.in_drop_other++;
    freeBuffer(w, c.bufferIndex);
  };
  if (!sa) return drop(counters_.esp_in_drop_no_sa);
  if (c.status == proto::CryptoStatus::kBadIcv) {
    ++counters_.esp_in_drop_bad_icv;
    sa->counters.in_drop_bad_icv++;
    freeBuffer(w, c.bufferIndex);
    return;
  }
  if (c.status != proto::CryptoStatus::kOk) return drop(counters_.esp_in_drop_crypto);
  // Only an authenticated packet may move the window (RFC 4303 §3.4.3).
  if (sa->replay && !sa->replay->accept(ctx.seq)) {
    ++counters_.esp_in_drop_replay;
    sa->counters.in_drop_replay++;
    freeBuffer(w, c.bufferIndex);
    return;
  }
  std::uint8_t* esp = bufferData(w, c.bufferIndex) + c.offset;
  auto d = esp::decapsulate({esp, c.length}, sa->layout);
  switch (d.error) {
    case esp::EspError::kOk: break;
    case esp::EspError::kDummyPacket:
      ++counters_.esp_in_dummy;
      freeBuffer(w, c.bufferIndex);
      return;
    case esp::EspError::kBadLength: return drop(counters_.esp_in_drop_bad_length);
    case esp::EspError::kBadPadding: return drop(counters_.esp_in_drop_bad_padding);
    case esp::EspError::kBadNextHeader: return drop(counters_.esp_in_drop_bad_next_header);
    case esp::EspError::kInnerMismatch: return drop(counters_.esp_in_drop_inner_mismatch);
    default: return drop(counters_.esp_in_drop_truncated);
  }
  std::uint8_t* inner = esp + d.offset;
  auto flow = esp::parseInnerPacket({inner, d.length});
  if (!flow) return drop(counters_.esp_in_drop_bad_inner);
  switch (esp::ecnDecapsulate(ctx.tos, esp::trafficClass({inner, d.length}))) {
    case esp::EcnAction::kKeep: break;
    case esp::EcnAction::kSetCe: esp::markCe({inner, d.length}); break;
    case esp::EcnAction::kDrop: return drop(counters_.esp_in_drop_ecn);
  }
  const Policy* p = spd_.lookup(IPSEC_DIR_INBOUND, *flow);
  if (!p) p = spd_.lookup(IPSEC_DIR_FWD, *flow);
  if (!p || p->action != IPSEC_POLICY_IPSEC || !requestAllows(*p, *sa)) {
    log::debug("in: {} -> {} via SPI {:#x} not allowed by the SPD", flow->src.toString(), flow->dst.toString(),
               sa->spi);
    return drop(counters_.esp_in_drop_policy);
  }
  if (sa->firstUse == 0) sa->firstUse = nowSeconds();
  ssize_t n = ::write(fds_.tun.get(), inner, d.length);
  if (n != static_cast<ssize_t>(d.length)) {
    ++counters_.tun_write_errors;
  } else {
    ++counters_.esp_in_packets;
    counters_.esp_in_bytes += d.length;
    sa->counters.in_packets++;
    sa->counters.in_bytes += d.length;
  }
  freeBuffer(w, c.bufferIndex);
}

}  // namespace ipsec::forwarder
