// ipsec-forwarder: the outbound packet core for AH (ah_sign.h). Pure
// functions of the bytes and what they borrow; noexcept, allocation-free.
#include "ah_sign.h"

#include "ah_frame.h"
#include "esp/ecn.h"
#include "esp/pmtu.h"
#include "transport_frame.h"

namespace ipsec::forwarder {
namespace {

constexpr std::uint8_t kOuterHopLimit = 64;

DropReason framingDrop(ah::AhError error) noexcept {
  switch (error) {
    // AH protects whole datagrams (RFC 4302 §3.3.3): a local fragment means the
    // TUN MTU is too large.
    case ah::AhError::kFragment: return &Counters::transport_out_drop_fragment;
    case ah::AhError::kBadLength: return &Counters::ah_out_drop_too_big;
    case ah::AhError::kNoHeadroom: return &Counters::out_drop_no_room;
    default: return &Counters::out_drop_bad_inner;
  }
}

}  // namespace

FrameVerdict frameAhSign(Sa &sa, const AhFraming &how, std::span<std::uint8_t> buffer, std::uint32_t offset,
                         std::uint32_t length, AhOut out) noexcept {
  if (std::size_t{offset} + length > buffer.size() || length == 0) return dropFrame(&Counters::out_drop_bad_inner);
  const std::size_t icv = sa.layout.icvLength;
  const auto seqLow = static_cast<std::uint32_t>(sa.seqNext);
  FrameVerdict v;
  ahframe::Framed f;
  if (how.tunnel) {
    v.tookIpv4Id = true;
    const std::uint8_t tos = how.aroundEspTos
                                 ? *how.aroundEspTos
                                 : esp::outerTrafficClass(esp::trafficClass(buffer.subspan(offset, length)));
    const ahframe::Outer outer{sa.src, sa.dst, tos, out.ipv4Id, kOuterHopLimit, how.outerDf};
    f = ahframe::frameTunnel(buffer, offset, length, outer, sa.spi, seqLow, icv, how.aroundEspTos ? ah::kProtoEsp : 0);
  } else {
    f = ahframe::frameTransport(buffer, offset, length, sa.spi, seqLow, icv);
  }
  if (!f.ok()) {
    v.drop = framingDrop(f.error);
    return v;
  }
  const std::span<std::uint8_t> ip = buffer.subspan(f.start, f.length);
  AhBuffer &st = out.state;
  const auto where = ah::locate(ip);
  if (!where.ok() || !st.saved.save(ip, where.ahOffset)) {
    v.drop = &Counters::ah_out_drop_bad_header;
    return v;
  }
  const auto canon = ah::canonicalise(ip, icv, true);
  if (!canon.ok()) {
    v.drop = &Counters::ah_out_drop_bad_header;
    return v;
  }
  st.start = static_cast<std::uint32_t>(f.start);
  st.length = static_cast<std::uint32_t>(f.length);
  st.ahOffset = static_cast<std::uint16_t>(canon.ahOffset);
  st.nextHeaderOffset = static_cast<std::uint16_t>(canon.nextHeaderOffset);
  st.mtu = how.fragmentMtu;
  v.kind = FrameVerdict::Kind::kCrypto;
  v.sa = &sa;
  v.op = proto::CryptoOp::kAhSign;
  v.offset = st.start;
  v.length = st.length;
  v.icvOffset = static_cast<std::uint16_t>(canon.icvOffset);
  v.seq = sa.seqNext;
  v.saBytes = length;
  return v;
}

FrameVerdict frameAhAlone(const OutboundTables &t, Sa &sa, bool tunnel, std::span<std::uint8_t> buffer,
                          std::uint32_t offset, std::uint32_t length, AhOut out) noexcept {
  if (length == 0 || std::size_t{offset} + length > buffer.size()) return dropFrame(&Counters::out_drop_bad_inner);
  const std::span<const std::uint8_t> packet = buffer.subspan(offset, length);
  const TunnelFacts facts = t.facts(sa);
  TunnelFit fit;
  std::size_t limit = 0;
  if (tunnel) {
    // RFC 4302 §3.1: outer IP, AH, then the inner packet as it is; no
    // padding, no TFC (AH would only make the padding visible).
    const std::size_t fixed = facts.outerOverhead + ah::headerLength(sa.layout.icvLength, sa.dst.isV6());
    limit = facts.pathMtu > fixed ? facts.pathMtu - fixed : 0;
    if (!fitInnerPacket(facts, sa.dst.isV4(), packet, limit, fit)) return tooBigFrame(limit);
  } else if (!fitTransportPacket(facts, packet, nullptr, 0,
                                 ah::headerLength(sa.layout.icvLength, (packet[0] >> 4) == 6), fit, limit)) {
    return tooBigFrame(limit);
  }
  return frameAhSign(sa, {tunnel, std::nullopt, fit.outerDf, fit.mtu}, buffer, offset, length, out);
}

AhSigned finishAhSigned(std::span<std::uint8_t> buffer, const proto::CryptoCompletion &c, const AhBuffer &st,
                        bool saPresent) noexcept {
  AhSigned r;
  if (c.status != proto::CryptoStatus::kOk || !saPresent) {
    r.drop = c.status == proto::CryptoStatus::kWrongDirection ? &Counters::out_drop_wrong_direction
                                                              : &Counters::out_drop_crypto;
    return r;
  }
  // The broker only echoes our descriptor: it must be the packet we framed.
  if (c.offset != st.start || c.length != st.length || std::size_t{c.offset} + c.length > buffer.size() ||
      c.length < 40) {
    r.drop = &Counters::out_drop_crypto;
    return r;
  }
  const std::span<std::uint8_t> ip = buffer.subspan(c.offset, c.length);
  st.saved.restore(ip);
  const bool v4 = (ip[0] >> 4) == 4;
  r.dst = v4 ? esp::IpAddress::v4(std::span<const std::uint8_t, 4>(ip.data() + 16, 4))
             : esp::IpAddress::v6(std::span<const std::uint8_t, 16>(ip.data() + 24, 16));
  r.start = c.offset;
  r.length = c.length;
  // Fragments are cut from the signed packet (RFC 4302 §3.3.3): the receiver
  // reassembles before it verifies, and the fields fragmenting changes are
  // the mutable ones the ICV was computed without.
  r.mtu = st.mtu;
  r.kind = st.mtu != 0 && c.length > st.mtu ? AhSigned::Kind::kFragments : AhSigned::Kind::kSend;
  return r;
}

}  // namespace ipsec::forwarder
