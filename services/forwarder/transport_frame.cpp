// ipsec-forwarder: the outbound packet core for ESP in transport mode
// (transport_frame.h), before the seal and after it. Pure functions of the
// bytes, the completion and what they borrow; noexcept, allocation-free.
#include "transport_frame.h"

#include <linux/ipsec.h>

#include <cstring>

#include "esp/pmtu.h"
#include "ipcomp/ipcomp.h"

namespace ipsec::forwarder {
namespace {

// IPComp in transport mode: the upper-layer payload compressed behind the
// host's kept headers, which move 4 bytes forward first (at most a few dozen
// bytes; the payload stays put). False (v.drop) when the packet must drop.
bool compressTransport(const OutboundTables &t, const Sa &esp, const Policy &p, std::span<std::uint8_t> buffer,
                       std::uint32_t &off, std::uint32_t &len, esp::TransportSplit &split, FrameVerdict &v) noexcept {
  if (p.plan.ipcompTransport == Plan::kNoRequest) return true;
  const Request &req = p.requests[p.plan.ipcompTransport];
  if (!t.ipcompEnabled) {
    v.drop = &Counters::ipcomp_out_drop_disabled;
    return false;
  }
  const IpcompSa *sa = t.ipcomp.select(esp.src, esp.dst, req.level == IPSEC_LEVEL_UNIQUE ? req.reqid : 0);
  ipcomp::Compressor *compressor = t.ipcomp.compressor();
  if (!sa || !compressor) {
    if (req.level == IPSEC_LEVEL_USE) return true;  // optional: without IPComp
    v.drop = &Counters::ipcomp_out_drop_no_sa;
    return false;
  }
  const auto h = static_cast<std::uint32_t>(split.headerLength);
  if (off < ipcomp::kHeaderLength || split.totalLength > len || h > split.totalLength) {
    v.drop = &Counters::ipcomp_out_drop_error;
    return false;
  }
  std::uint8_t *data = buffer.data();
  std::memmove(data + off - ipcomp::kHeaderLength, data + off, h);
  auto r = compressor->compress(buffer, off + h, split.totalLength - h, split.protocol, sa->cpi);
  if (!r.compressed()) {
    std::memmove(data + off, data + off - ipcomp::kHeaderLength,
                 h);  // back where they were
    if (r.sendUncompressed()) {
      v.ipcompEvent = &Counters::ipcomp_out_uncompressed;
      return true;
    }
    v.drop = &Counters::ipcomp_out_drop_error;
    return false;
  }
  v.ipcompEvent = &Counters::ipcomp_out_compressed;
  off -= static_cast<std::uint32_t>(ipcomp::kHeaderLength);
  len = h + static_cast<std::uint32_t>(r.length);
  split.protocol = ipcomp::kProtoIpcomp;
  split.totalLength = len;  // encapsulateTransport sets the length fields from it
  return true;
}

}  // namespace

bool fitTransportPacket(const TunnelFacts &facts, std::span<const std::uint8_t> packet, const esp::EspLayout *esp,
                        std::size_t headerLength, std::size_t extra, TunnelFit &fit, std::size_t &limit) noexcept {
  limit = esp::maxTransportLength(esp, facts.pathMtu, headerLength, extra);
  const bool fits = fitInnerPacket(facts, false, packet, limit, fit);
  fit.padTo = 0;        // TFC is a tunnel's (RFC 4303 §2.7)
  fit.outerDf = false;  // the host's own DF bit stays as it is
  return fits;
}

FrameVerdict frameEspTransport(const OutboundTables &t, Sa &sa, const Policy *policy, const TransportJudge &judge,
                               std::span<std::uint8_t> buffer, std::uint32_t offset, std::uint32_t length) noexcept {
  if (std::size_t{offset} + length > buffer.size()) return dropFrame(&Counters::out_drop_bad_inner);
  const std::span<const std::uint8_t> packet = buffer.subspan(offset, length);
  auto split = esp::transportSplit(packet);
  if (!split) return dropFrame(&Counters::out_drop_bad_inner);
  // ESP in transport mode protects whole datagrams only (RFC 4303 §3.1.1):
  // a local fragment means the TUN MTU is too small for the packet.
  if (split->fragment) return dropFrame(&Counters::transport_out_drop_fragment);
  // Judged on the packet as it came, before IPComp: an ICMP must quote the
  // sender's packet, and one IPComp would shrink is not known to yet.
  if (judge.facts) {
    TunnelFit fit;
    std::size_t limit = 0;
    if (!fitTransportPacket(*judge.facts, packet, &sa.layout, split->headerLength, judge.extra, fit, limit)) {
      return tooBigFrame(limit);
    }
  }
  FrameVerdict v;
  std::uint32_t off = offset, len = length;
  esp::TransportSplit parts = *split;
  if (policy && !compressTransport(t, sa, *policy, buffer, off, len, parts, v)) {
    v.kind = FrameVerdict::Kind::kDrop;
    return v;
  }
  auto r =
      esp::encapsulateTransport(buffer, off, len, sa.spi, static_cast<std::uint32_t>(sa.seqNext), sa.layout, parts);
  if (!r.ok()) {
    v.drop = &Counters::out_drop_no_room;
    return v;
  }
  v.kind = FrameVerdict::Kind::kCrypto;
  v.sa = &sa;
  v.op = proto::CryptoOp::kSeal;
  v.offset = static_cast<std::uint32_t>(r.espOffset);
  v.length = static_cast<std::uint32_t>(r.espLength);
  v.seq = sa.seqNext;
  v.saBytes = length;
  v.transportHeader = static_cast<std::uint16_t>(r.headerLength);
  addQueued(v, &Counters::transport_out_packets);
  return v;
}

namespace {

TransportSend dropSend(DropReason reason) noexcept {
  TransportSend s;
  s.drop = reason;
  return s;
}

std::uint16_t be16(const std::uint8_t *p) noexcept { return static_cast<std::uint16_t>(p[0] << 8 | p[1]); }

// The broker only echoes our descriptor: the sealed ESP packet must lie in
// the buffer behind the kept header, and that header (what encapsulateTransport
// wrote; the broker does not touch it) must be of the SA's family and say
// the packet is the header and this ESP packet.
bool sealedAsFramed(const Sa &sa, std::uint16_t kept, std::span<const std::uint8_t> buffer,
                    const proto::CryptoCompletion &c) noexcept {
  if (c.offset < kept || c.offset > buffer.size() || c.length > buffer.size() - c.offset || c.length == 0) {
    return false;
  }
  const std::uint8_t *header = buffer.data() + c.offset - kept;
  const std::size_t total = std::size_t{kept} + c.length;
  if (sa.dst.isV4()) return kept >= 20 && (header[0] >> 4) == 4 && be16(header + 2) == total;
  return kept >= 40 && (header[0] >> 4) == 6 && std::size_t{be16(header + 4)} + 40 == total;
}

// Our IP and UDP header `h` written in front of c's ESP packet, over the
// host's header: the send then covers it. False when there is no room.
bool writeOurHeader(std::span<std::uint8_t> buffer, const proto::CryptoCompletion &c, const esp::OuterHeader &h,
                    TransportSend &s) noexcept {
  const auto at = h.udp() ? esp::writeOuterHeader(buffer, c.offset, c.length, h) : std::nullopt;
  if (!at) return false;
  s.start = static_cast<std::uint32_t>(*at);
  s.length = c.length + static_cast<std::uint32_t>(esp::outerHeaderLength(h));
  return true;
}

// ESP in UDP over IPv4: the NAT-T socket when it fits and the socket has the
// SA's source port (the host's TOS, TTL and DF bit by control message, the
// kernel's Identification); else our header with UDP on the header-included
// socket, whole or beyond the MTU in fragments (the host's Identification kept).
TransportSend udpOverIpv4(const Sa &sa, const NatT &nat, std::uint16_t udp4Port, std::size_t mtu,
                          std::span<std::uint8_t> buffer, const proto::CryptoCompletion &c,
                          const std::uint8_t *host) noexcept {
  esp::OuterHeader h;
  h.src = sa.src;
  h.dst = sa.dst;
  h.udpSport = nat.sport;
  h.udpDport = nat.dport;
  h.tos = host[1];
  h.id = be16(host + 4);
  h.dontFragment = (host[6] & 0x40) != 0;
  h.ttl = host[8];
  TransportSend s;
  s.natT = true;
  if (c.length + esp::outerHeaderLength(h) <= mtu && sendsOnUdp4Socket(nat, udp4Port)) {
    s.kind = TransportSend::Kind::kNatT;
    s.start = c.offset;
    s.length = c.length;
    s.to = {sa.dst, nat.dport};
    s.tos = h.tos;
    s.ttl = h.ttl;
    s.dontFragment = h.dontFragment;
    return s;
  }
  if (!writeOurHeader(buffer, c, h, s)) return dropSend(&Counters::transport_out_drop_natt);
  s.to = {sa.dst, 0};
  s.kind = s.length > mtu ? TransportSend::Kind::kFragments : TransportSend::Kind::kHeaderIncluded;
  if (s.kind == TransportSend::Kind::kFragments) s.mtu = static_cast<std::uint32_t>(mtu);
  return s;
}

// ESP in UDP over IPv6: the NAT-T socket when IPv6 and UDP in front still
// fit (the host's traffic class by control message); else our IPv6 and UDP
// header (the host's traffic class and hop limit) and fragments, as the
// tunnel path does.
TransportSend udpOverIpv6(const Sa &sa, const NatT &nat, std::size_t mtu, std::span<std::uint8_t> buffer,
                          const proto::CryptoCompletion &c, const std::uint8_t *host) noexcept {
  if (nat.dport == 0) return dropSend(&Counters::transport_out_drop_natt);
  const auto trafficClass = static_cast<std::uint8_t>(((host[0] & 0x0fu) << 4) | (host[1] >> 4));
  TransportSend s;
  s.natT = true;
  if (std::size_t{c.length} + 48 <= mtu) {
    s.kind = TransportSend::Kind::kNatT;
    s.start = c.offset;
    s.length = c.length;
    s.to = {sa.dst, nat.dport};
    s.tos = trafficClass;
    return s;
  }
  esp::OuterHeader h;
  h.src = sa.src;
  h.dst = sa.dst;
  h.udpSport = nat.sport;
  h.udpDport = nat.dport;
  h.tos = trafficClass;
  h.ttl = host[7];
  if (!writeOurHeader(buffer, c, h, s)) return dropSend(&Counters::transport_out_drop_natt);
  s.kind = TransportSend::Kind::kFragments;
  s.to = {sa.dst, 0};
  s.mtu = static_cast<std::uint32_t>(mtu);
  return s;
}

}  // namespace

TransportSend finishTransportSeal(const OutboundTables &t, const Sa &sa, const TransportSendFacts &facts,
                                  std::span<std::uint8_t> buffer, const proto::CryptoCompletion &c) noexcept {
  if (c.status != proto::CryptoStatus::kOk) {
    return dropSend(c.status == proto::CryptoStatus::kWrongDirection ? &Counters::out_drop_wrong_direction
                                                                     : &Counters::out_drop_crypto);
  }
  if (!sealedAsFramed(sa, facts.transportHeader, buffer, c)) return dropSend(&Counters::out_drop_crypto);
  const std::uint32_t start = c.offset - facts.transportHeader;
  const std::uint8_t *host = buffer.data() + start;
  const std::size_t mtu = t.tunnels.pathMtu(sa);
  if (const NatT *nat = t.natt.of(sa)) {
    return sa.dst.isV4() ? udpOverIpv4(sa, *nat, facts.udp4Port, mtu, buffer, c, host)
                         : udpOverIpv6(sa, *nat, mtu, buffer, c, host);
  }
  // The destination as the header names it (with a routing header, the next
  // hop). Beyond the SA's MTU (the sender was allowed to fragment,
  // fitTransportPacket): the sealed packet leaves in fragments with its own
  // Identification (IPv4) or a fragment header (IPv6).
  TransportSend s;
  s.start = start;
  s.length = c.length + facts.transportHeader;
  s.to = {sa.dst.isV4() ? esp::IpAddress::v4(std::span<const std::uint8_t, 4>(host + 16, 4))
                        : esp::IpAddress::v6(std::span<const std::uint8_t, 16>(host + 24, 16)),
          0};
  s.kind = s.length > mtu ? TransportSend::Kind::kFragments : TransportSend::Kind::kHeaderIncluded;
  if (s.kind == TransportSend::Kind::kFragments) s.mtu = static_cast<std::uint32_t>(mtu);
  return s;
}

}  // namespace ipsec::forwarder
