// ipsec-forwarder: AH (RFC 4302), tunnel and transport mode, IPv4 and IPv6.
// Runs on the data-path thread like the shells (outbound.cpp, inbound.cpp); trusts nothing it reads
// from the network or gets back from the broker beyond our own context.
//
// AH covers the IP header, so we write every header byte ourselves and send
// on the header-included sockets (the kernel must not choose the IPv4
// Identification or lengths after the MAC); the mutable fields are saved,
// zeroed for the MAC (lib/ah canonicalise) and put back before sending.
//
//   outbound: TUN packet → SPD(out), request proto AH → SA (tunnel: the
//             request's ends; transport: the packet's own addresses) →
//             tunnel: outer IPv4/IPv6 header + AH in front of the packet;
//             transport: AH inserted after the host's header (IPv6: after
//             hop-by-hop/routing/fragment headers, lib/ah findInsertionPoint)
//             → save headers, canonicalise → kAhSign → restore → send
//             (the framing and the send decision are the packet core's:
//             ah_sign.cpp, reached through bundle_frame.cpp; bundle.cpp
//             applies its verdict)
//   inbound:  raw AH socket (IPv4: with its header; IPv6: the header and the
//             extension headers before AH rebuilt from control messages) →
//             locate AH → SPI lookup → length and replay checks → save,
//             canonicalise → kAhVerify → replay update → restore → tunnel:
//             the inner packet; transport: AH removed, lengths fixed → the
//             packet core's verdict (inbound_open.cpp judgeAhVerified: ECN,
//             SPD(in) check, or ESP inside opened next) → TUN write
// Transport mode has the same MTU rule behind the host's header
// (transport_frame.h fitTransportPacket); its fragments keep the host's Identification, which the ICV
// covers. Tunnel mode has ESP tunnels' details (pmtu.cpp): the SA's path MTU (an
// inner packet that may not be fragmented gets ICMP with the MTU AH leaves,
// otherwise the signed packet is cut into fragments as it leaves) and the
// outer DF bit by the SA's policy or net.inet.ipsec.dfbit. DF and the
// fragment fields are mutable for AH (RFC 4302 §3.3.3.1.1.1): written before
// the MAC, zeroed for it, put back; fragments keep the signed Identification.
// Every drop has its named counter (ah_in_drop_<lib/ah error or check>).
// noexcept and allocation-free on the packet paths.
#include <linux/ipsec.h>
#include <linux/pfkeyv2.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cstring>

#include "clock/clock.h"
#include "ah_frame.h"
#include "ah_sign.h"
#include "forwarder.h"
#include "log/log.h"

namespace ipsec::forwarder {
namespace {

// Inbound IPv6: the socket's payload (from AH on) lands this far into the
// buffer, room for the rebuilt IPv6 header and extension headers in front.
constexpr std::uint32_t kAhInHeadroom = ah::kMaxSavedHeaders;

}  // namespace

// ---- control ----------------------------------------------------------------

bool Forwarder::isAhInstall(proto::SaInstall::Reader msg) noexcept {
  return msg.getParams().getSatype() == SADB_SATYPE_AH;
}

// An AH SA has no ESP layout: the broker reports IV 0, the ICV length, pad
// alignment 0. The SA table checks an ESP layout, so AH's is given the
// alignment AH implies (4); only icvLength is ever read for AH.
std::optional<std::string> Forwarder::installAh(proto::SaInstall::Reader msg) {
  const auto icv = msg.getParams().getIcvLength();
  if (icv == 0 || icv > ah::kMaxIcvLength) return "AH SA with a bad ICV length";
  capnp::MallocMessageBuilder b;
  b.setRoot(msg);
  auto copy = b.getRoot<proto::SaInstall>();
  copy.getParams().setIvLength(0);
  copy.getParams().setPadAlign(4);
  return sas_.install(copy.asReader());
}

void Forwarder::startAh() {
  for (auto& w : workers_) w->ah.resize(w->contexts.size());
  if (fds_.ah4) ah4Watch_ = std::make_unique<boost::asio::posix::stream_descriptor>(io_, fds_.ah4.get());
  if (fds_.ah6) ah6Watch_ = std::make_unique<boost::asio::posix::stream_descriptor>(io_, fds_.ah6.get());
  sendAh4_.fd = fds_.hdr4.get();
  sendAh6_.fd = fds_.hdr6.get();
  sendAh4_.ah = sendAh6_.ah = true;
  // Start the IPv4 Identification somewhere unpredictable-enough per run.
  ahIpId_ = static_cast<std::uint16_t>(clock::monotonicNs() | 1);
  armAh(AF_INET);
  armAh(AF_INET6);
}

void Forwarder::armAh(int family) {
  auto* watch = family == AF_INET ? ah4Watch_.get() : ah6Watch_.get();
  if (!watch) return;
  watch->async_wait(boost::asio::posix::stream_descriptor::wait_read, [this, family](boost::system::error_code ec) {
    if (!ec && !stopped_) readAh(family);
  });
}

void Forwarder::restartStalledAh() noexcept {
  for (int family : {AF_INET, AF_INET6}) {
    bool& stalled = family == AF_INET ? ah4Stalled_ : ah6Stalled_;
    if (!stalled) continue;
    stalled = false;
    boost::asio::post(io_, [this, family] { readAh(family); });
  }
}

std::uint64_t& Forwarder::ahInDrop(ah::AhError error) noexcept {
  switch (error) {
    case ah::AhError::kOk:
    case ah::AhError::kTruncated: break;
    case ah::AhError::kBadLength: return counters_.ah_in_drop_bad_length;
    case ah::AhError::kReservedSpi: return counters_.ah_in_drop_reserved_spi;
    case ah::AhError::kBadIpHeader: return counters_.ah_in_drop_bad_ip_header;
    case ah::AhError::kBadIpv4Options: return counters_.ah_in_drop_bad_ipv4_options;
    case ah::AhError::kBadExtensionHeader: return counters_.ah_in_drop_bad_extension_header;
    case ah::AhError::kTooManyExtHeaders: return counters_.ah_in_drop_too_many_ext_headers;
    case ah::AhError::kBadRoutingHeader: return counters_.ah_in_drop_bad_routing_header;
    case ah::AhError::kUnsupportedRouting: return counters_.ah_in_drop_unsupported_routing;
    case ah::AhError::kFragment: return counters_.ah_in_drop_fragment;
    case ah::AhError::kNoAh: return counters_.ah_in_drop_no_ah;
    case ah::AhError::kHeadersTooLong: return counters_.ah_in_drop_headers_too_long;
    case ah::AhError::kNoHeadroom: return counters_.ah_in_drop_no_headroom;
    case ah::AhError::kBadIcvLength: return counters_.ah_in_drop_bad_icv_length;
  }
  return counters_.ah_in_drop_truncated;
}

// ---- outbound ---------------------------------------------------------------

void Forwarder::onAhDone(Worker& w, const proto::CryptoCompletion& c) noexcept {
  if (w.contexts[c.bufferIndex].use == Use::kAhOutbound) {
    onAhSigned(w, c);
  } else {
    onAhVerified(w, c);
  }
}

// The core decides (ah_sign.cpp): the headers put back, sent whole or in
// fragments cut from the signed packet.
void Forwarder::onAhSigned(Worker& w, const proto::CryptoCompletion& c) noexcept {
  std::uint8_t* data = bufferData(w, c.bufferIndex);
  const AhSigned r = finishAhSigned({data, w.bufferSize}, c, w.ah[c.bufferIndex],
                                    sas_.find(w.contexts[c.bufferIndex].sa) != nullptr);
  switch (r.kind) {
    case AhSigned::Kind::kDrop: countDrop(counters_, r.drop); break;
    case AhSigned::Kind::kFragments: sendFragments({data + r.start, r.length}, r.mtu, r.dst, true); break;
    case AhSigned::Kind::kSend:
      queueSend(r.dst.isV4() ? sendAh4_ : sendAh6_).add(w, c.bufferIndex, {data + r.start, r.length},
                                                        [&](sockaddr_storage& to) {
                                                          return esp::toSockaddr({r.dst, 0}, to);
                                                        });
      return;
  }
  freeBuffer(w, c.bufferIndex);
}

// ---- inbound ----------------------------------------------------------------

void Forwarder::readAh(int family) noexcept {
  Worker& w = nextWorker();
  const int fd = family == AF_INET ? fds_.ah4.get() : fds_.ah6.get();
  // IPv6: room in front to put back the header and extension headers the
  // raw socket strips.
  const std::uint32_t at = family == AF_INET ? 0 : kAhInHeadroom;
  RecvBurst& r = recv_;
  if (!receiveBurst(w, fd, at, r)) {
    ++counters_.esp_in_stall_no_buffer;
    (family == AF_INET ? ah4Stalled_ : ah6Stalled_) = true;
    return;
  }
  auto& msgs = r.msgs;
  auto& bufs = r.bufs;
  for (std::size_t i = 0; i < r.got; ++i) {
    const std::uint32_t len = msgs[i].msg_len;
    auto drop = [&](std::uint64_t& counter) {
      ++counter;
      freeBuffer(w, bufs[i]);
    };
    if (msgs[i].msg_hdr.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
      drop(counters_.ah_in_drop_truncated);
      continue;
    }
    std::uint8_t* data = bufferData(w, bufs[i]);
    if (family == AF_INET) {
      // IPv4 raw sockets deliver the whole packet, header and options included.
      if (len < 20 || (data[0] >> 4) != 4) {
        drop(counters_.ah_in_drop_bad_ip_header);
        continue;
      }
      inboundAh(w, bufs[i], 0, len, data[1]);
      continue;
    }
    // IPv6 raw sockets strip the header and the extension headers before
    // AH: put back what the ICV covers. Addresses from msg_name and pktinfo,
    // traffic class and hop limit (mutable: zeroed anyway) from control
    // messages, the extension headers from theirs, in the order received.
    const msghdr& m = msgs[i].msg_hdr;
    const esp::UdpControl ctl = esp::parseUdpControl(m);
    const auto src = r.source6(i);
    if (!ctl.dst || !src) {
      drop(counters_.ah_in_drop_bad_ip_header);
      continue;
    }
    std::array<std::uint8_t, ah::kMaxSavedHeaders> ext;
    std::size_t extLen = 0;
    std::uint8_t first = ah::kProtoAh;
    bool bad = false;
    for (const cmsghdr* c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(const_cast<msghdr*>(&m), const_cast<cmsghdr*>(c))) {
      if (c->cmsg_level != IPPROTO_IPV6) continue;
      std::uint8_t type = 0;
      if (c->cmsg_type == IPV6_HOPOPTS) {
        type = IPPROTO_HOPOPTS;
      } else if (c->cmsg_type == IPV6_DSTOPTS) {
        type = IPPROTO_DSTOPTS;
      } else if (c->cmsg_type == IPV6_RTHDR) {
        type = IPPROTO_ROUTING;
      } else {
        continue;
      }
      const std::size_t n = c->cmsg_len - CMSG_LEN(0);
      if (n < 8 || extLen + n + 40 > ext.size()) {
        bad = true;
        break;
      }
      if (extLen == 0) first = type;
      std::memcpy(ext.data() + extLen, CMSG_DATA(c), n);
      extLen += n;
    }
    if (bad) {
      drop(counters_.ah_in_drop_headers_too_long);
      continue;
    }
    const auto f = ahframe::rebuildIpv6({data, w.bufferSize}, at, len, *src, *ctl.dst, ctl.tos, hopLimitOf(m),
                                        {ext.data(), extLen}, first);
    if (!f.ok()) {
      drop(ahInDrop(f.error));
      continue;
    }
    inboundAh(w, bufs[i], static_cast<std::uint32_t>(f.start), static_cast<std::uint32_t>(f.length), ctl.tos);
  }
  if (finishBurst(w, r)) {
    boost::asio::post(io_, [this, family] { readAh(family); });
  } else {
    armAh(family);
  }
}

void Forwarder::inboundAh(Worker& w, std::uint32_t buf, std::uint32_t start, std::uint32_t length,
                          std::uint8_t tos) noexcept {
  std::uint8_t* ip = bufferData(w, buf) + start;
  auto drop = [&](std::uint64_t& counter, Sa* sa) {
    ++counter;
    if (sa) sa->counters.in_drop_other++;
    freeBuffer(w, buf);
  };
  if (!ahEnabled_) return drop(counters_.ah_in_drop_disabled, nullptr);
  const auto where = ah::locate({ip, length});
  if (!where.ok()) return drop(ahInDrop(where.error), nullptr);
  const esp::IpAddress dst = where.ipv6 ? esp::IpAddress::v6(std::span<const std::uint8_t, 16>(ip + 24, 16))
                                        : esp::IpAddress::v4(std::span<const std::uint8_t, 4>(ip + 16, 4));
  Sa* sa = sas_.findInbound(SADB_SATYPE_AH, where.header.spi, dst);
  if (!sa) {
    log::debug("in AH: no SA for SPI {:#x} dst {}", where.header.spi, dst.toString());
    return drop(counters_.ah_in_drop_no_sa, nullptr);
  }
  if (auto e = ah::checkLength(where.header, sa->layout.icvLength, where.ipv6); e != ah::AhError::kOk) {
    return drop(ahInDrop(e), sa);
  }
  std::uint64_t seq = where.header.seqLow;
  if (sa->replay) {
    auto full = sa->replay->check(where.header.seqLow);
    if (!full) {
      ++counters_.ah_in_drop_replay;
      sa->counters.in_drop_replay++;
      freeBuffer(w, buf);
      return;
    }
    seq = *full;
  }
  AhBuffer& st = w.ah[buf];
  if (!st.saved.save({ip, where.packetLength}, where.ahOffset)) return drop(counters_.ah_in_drop_headers_too_long, sa);
  // Bytes after the IP packet's own length (link padding) are not ours to MAC.
  const auto canon = ah::canonicalise({ip, where.packetLength}, sa->layout.icvLength, false);
  if (!canon.ok()) return drop(ahInDrop(canon.error), sa);
  st.start = start;
  st.ahOffset = static_cast<std::uint16_t>(canon.ahOffset);
  st.nextHeaderOffset = static_cast<std::uint16_t>(canon.nextHeaderOffset);
  w.pending.push_back(cryptoRequest(buf, *sa, proto::CryptoOp::kAhVerify, start,
                                    static_cast<std::uint32_t>(where.packetLength), seq,
                                    static_cast<std::uint16_t>(canon.icvOffset)));
  BufferContext ctx;
  ctx.use = Use::kAhInbound;
  ctx.sa = sa->ref;
  ctx.seq = seq;
  ctx.tos = tos;
  w.contexts[buf] = ctx;
}

void Forwarder::onAhVerified(Worker& w, const proto::CryptoCompletion& c) noexcept {
  const BufferContext ctx = w.contexts[c.bufferIndex];
  const AhBuffer& st = w.ah[c.bufferIndex];
  Sa* sa = acceptVerified(w, c, ctx, c.offset == st.start, kAhVerifyDrops);
  if (!sa) return;
  auto drop = [&](DropReason reason, bool saDropOther = true) {
    countDrop(counters_, reason);
    if (saDropOther) sa->counters.in_drop_other++;
    freeBuffer(w, c.bufferIndex);
  };
  const std::span<std::uint8_t> buffer{bufferData(w, c.bufferIndex), w.bufferSize};
  std::uint8_t* ip = buffer.data() + st.start;
  const std::uint32_t length = c.length;
  st.saved.restore({ip, length});
  const std::uint8_t* ahHeader = ip + st.ahOffset;
  const std::uint8_t next = ahHeader[0];
  const std::size_t ahLen = (std::size_t{ahHeader[1]} + 2) * 4;
  const bool innerIp = next == IPPROTO_IPIP || next == IPPROTO_IPV6;
  const bool tunnel = innerIp && sa->mode != IPSEC_MODE_TRANSPORT;
  if (!tunnel && sa->mode == IPSEC_MODE_TUNNEL) return drop(&Counters::ah_in_drop_bad_next_header);
  std::uint32_t innerStart = 0, innerLen = 0;
  if (tunnel) {
    innerStart = static_cast<std::uint32_t>(st.start + st.ahOffset + ahLen);
    innerLen = static_cast<std::uint32_t>(length - st.ahOffset - ahLen);
    if (innerLen == 0 || (buffer[innerStart] >> 4) != (next == IPPROTO_IPIP ? 4 : 6)) {
      return drop(&Counters::ah_in_drop_bad_inner);
    }
  } else {
    // Transport: AH out, the headers before it moved up to close the gap.
    const auto f = ahframe::stripTransport(buffer, st.start, length, st.ahOffset, st.nextHeaderOffset);
    if (!f.ok()) return drop(&Counters::ah_in_drop_bad_inner);
    innerStart = static_cast<std::uint32_t>(f.start);
    innerLen = static_cast<std::uint32_t>(f.length);
  }
  // The packet core decides (inbound_open.cpp): ECN, the SPD, or ESP inside
  // (`esp/transport// ah/transport//`) to open next in this buffer.
  const OpenedVerdict v = judgeAhVerified(inboundTables(), buffer, innerStart, innerLen, *sa, tunnel, ctx.tos);
  switch (v.kind) {
    case OpenedVerdict::Kind::kDrop:
    case OpenedVerdict::Kind::kDummy:  // not from AH's core: a drop all the same
      if (v.drop == &Counters::ah_in_drop_policy) {
        log::debug("in AH: {} -> {} via SPI {:#x} not allowed by the SPD", v.flow.src.toString(),
                   v.flow.dst.toString(), sa->spi);
      }
      return drop(v.drop, v.saDropOther);
    case OpenedVerdict::Kind::kOpenAgain: {
      const SaRef ref = sa->ref;
      if (!openInner(w, c.bufferIndex, v.again, StepKind::kAhTransport, ref)) return;
      // AH's part is done: counted as AH's, whatever ESP decides.
      if (sa->firstUse == 0) sa->firstUse = clock::unixSeconds();
      ++counters_.ah_in_packets;
      counters_.ah_in_bytes += v.length;
      sa->counters.in_packets++;
      sa->counters.in_bytes += v.length;
      return;
    }
    case OpenedVerdict::Kind::kDeliver: break;
  }
  if (sa->firstUse == 0) sa->firstUse = clock::unixSeconds();
  if (writeTun({buffer.data() + v.offset, v.length})) {
    ++counters_.ah_in_packets;
    counters_.ah_in_bytes += v.length;
    sa->counters.in_packets++;
    sa->counters.in_bytes += v.length;
  }
  freeBuffer(w, c.bufferIndex);
}

}  // namespace ipsec::forwarder
