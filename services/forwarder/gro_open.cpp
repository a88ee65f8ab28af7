// ipsec-forwarder: the inbound packet core for a UDP GRO datagram opened as
// one request (gro_open.h). Pure functions of hostile bytes and borrowed
// tables; noexcept, allocation-free.
#include "gro_open.h"

#include <linux/ipsec.h>
#include <netinet/in.h>

#include "esp/esp.h"
#include "esp/udp_encap.h"

namespace ipsec::forwarder {
namespace {

constexpr GroOpenPlan splitFor(DropReason why) noexcept { return {nullptr, why}; }

std::uint32_t spiOf(std::span<const std::uint8_t> esp) noexcept {
  return (std::uint32_t{esp[0]} << 24) | (std::uint32_t{esp[1]} << 16) | (std::uint32_t{esp[2]} << 8) | esp[3];
}

// Can the opened segment be judged where it lies? Only the tunnel path with
// an IP packet inside stays within its own bytes (ECN marks it, TFC cuts
// it). An upper-layer payload (transport, for an SA of mode "any"), IPComp
// (inflates past the segment's end), a dummy, or inner ESP that may be ours
// (opened again: a buffer of its own) goes on a copy.
bool judgedInPlace(const Sa& sa, std::span<const std::uint8_t> segment) noexcept {
  const esp::EspLayout& l = sa.layout;
  const std::size_t innerAt = esp::kEspHeaderLength + l.ivLength;
  // Too short for a trailer: judged in place, where decapsulation drops it.
  if (segment.size() < innerAt + esp::kEspTrailerLength + l.icvLength) return true;
  const std::uint8_t next = segment[segment.size() - l.icvLength - 1];
  if (next != esp::kNextHeaderIpv4 && next != esp::kNextHeaderIpv6) return false;
  const std::uint8_t* inner = segment.data() + innerAt;
  const std::size_t room = segment.size() - innerAt - esp::kEspTrailerLength - l.icvLength;
  if (room >= 20 && (inner[0] >> 4) == 4 && inner[9] == IPPROTO_ESP) return false;
  if (room >= 40 && (inner[0] >> 4) == 6 && inner[6] == IPPROTO_ESP) return false;
  return true;
}

}  // namespace

GroOpenPlan planGroOpen(SaTable& sas, const NattPeers& natt, std::span<const std::uint8_t> datagram,
                        const esp::GroSplit& split, const esp::IpAddress& dst, GroSegments& out) noexcept {
  if (!split.ok() || split.count <= 1 || datagram.size() < split.length) return {};
  if (split.count > proto::kMaxSegments) return splitFor(&Counters::esp_in_multi_split_too_many);
  Sa* sa = nullptr;
  std::uint32_t spi = 0;
  for (std::uint32_t i = 0; i < split.count; ++i) {
    const auto segment = datagram.subspan(split.offset(i), split.segmentLength(i));
    if (esp::classifyUdpPayload(segment) != esp::UdpPayloadKind::kEsp || segment.size() < esp::kEspHeaderLength) {
      return splitFor(&Counters::esp_in_multi_split_mixed);  // a keepalive or IKE among them
    }
    if (i == 0) spi = spiOf(segment);
    if (spiOf(segment) != spi) return splitFor(&Counters::esp_in_multi_split_mixed);
    const InboundEsp v = peekInboundEsp(sas, natt, segment, dst, true);
    if (v.drop) return splitFor(&Counters::esp_in_multi_split_precheck);
    if (i == 0) {
      sa = v.sa;
      // Transport mode rebuilds an IP header in front of the payload: in
      // the segment before, in a shared buffer.
      if (sa->mode == IPSEC_MODE_TRANSPORT) return splitFor(&Counters::esp_in_multi_split_sa);
    } else if (v.sa != sa) {
      return splitFor(&Counters::esp_in_multi_split_mixed);
    } else if ((v.seq >> 32) != (out.seq[0] >> 32)) {
      return splitFor(&Counters::esp_in_multi_split_sa);  // ESN: one high half per request
    }
    out.seq[i] = v.seq;
  }
  out.count = static_cast<std::uint16_t>(split.count);
  out.stride = split.segmentSize;
  out.length = split.length;
  return {sa, nullptr};
}

proto::CryptoStatus segmentStatus(const proto::CryptoCompletion& c, std::uint16_t i) noexcept {
  const bool failed = i < 64 && ((c.segmentFailMask >> i) & 1u) != 0;
  switch (c.status) {
    case proto::CryptoStatus::kOk: return failed ? proto::CryptoStatus::kInternalError : proto::CryptoStatus::kOk;
    case proto::CryptoStatus::kBadIcv:
    case proto::CryptoStatus::kBadLength:
    case proto::CryptoStatus::kInternalError: return failed ? c.status : proto::CryptoStatus::kOk;
    default: return c.status;  // refused whole: no segment was opened
  }
}

bool echoesLayout(const proto::CryptoCompletion& c, const GroSegments& sent) noexcept {
  return c.op == proto::CryptoOp::kOpen && c.offset == 0 && c.length == sent.length &&
         c.segmentCount == sent.count && c.segmentStride == sent.stride;
}

GroSegmentVerdict judgeGroSegment(const InboundTables& t, std::span<std::uint8_t> buffer,
                                  const proto::CryptoCompletion& c, const GroSegments& sent, SaRef ref, bool sane,
                                  std::uint16_t i, const OpenedFrom& from) noexcept {
  GroSegmentVerdict out;
  out.start = std::uint32_t{i} * sent.stride;
  out.length = i + 1u == sent.count ? sent.length - out.start : sent.stride;
  const bool inside = i < sent.count && out.start <= sent.length && sent.length <= buffer.size();
  const Verified v = acceptVerified(t.sas, ref, segmentStatus(c, i), sane && inside, sent.seq[i % proto::kMaxSegments],
                                    kEspVerifyDrops);
  out.sa = v.sa;
  if (v.drop) {
    out.drop = v.drop;
    return out;
  }
  const std::span<std::uint8_t> segment = buffer.subspan(out.start, out.length);
  if (!judgedInPlace(*v.sa, segment)) {
    out.kind = GroSegmentVerdict::Kind::kOnACopy;
    return out;
  }
  out.kind = GroSegmentVerdict::Kind::kJudged;
  out.verdict = judgeOpened(t, buffer.first(out.start + out.length), out.start, out.length, *v.sa, from);
  if (out.verdict.kind == OpenedVerdict::Kind::kOpenAgain) {
    // judgedInPlace sent inner ESP to a copy; should the core still find
    // some, the segment has no buffer of its own to open it in.
    out.verdict = OpenedVerdict{};
    out.verdict.drop = &Counters::esp_in_drop_bad_inner;
  }
  return out;
}

}  // namespace ipsec::forwarder
