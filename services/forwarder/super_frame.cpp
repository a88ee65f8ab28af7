// ipsec-forwarder: a TUN super-packet framed as one strided multi-segment
// ESP request (super_frame.h). Pure function of the bytes and what it
// borrows; noexcept, allocation-free.
#include "super_frame.h"

#include "esp/ecn.h"
#include "esp/esp.h"
#include "esp/pmtu.h"

namespace ipsec::forwarder {
namespace {

// The one segment's frame: its inner packet written behind room for the ESP
// header at `start`, judged by the SA's MTU, then wrapped in ESP. False when
// it cannot go in a strided request (the caller stops before it).
struct SegmentFrame {
  std::uint32_t espLength = 0;
  std::uint32_t innerLength = 0;
  std::uint8_t outerTos = 0;
  bool dontFragment = false;
};

bool frameSegment(const Sa& sa, const TunnelFacts& facts, std::size_t limit, const offload::SegmentPlan& plan,
                  std::span<const std::uint8_t> packet, std::uint32_t index, std::span<std::uint8_t> buffer,
                  std::uint32_t start, std::uint64_t seq, SegmentFrame& out) noexcept {
  const std::size_t inner = plan.segmentLength(index);
  const std::size_t innerAt = start + sa.layout.headroom();
  if (inner == 0 || innerAt + inner + sa.layout.maxTailroom() > buffer.size()) return false;
  if (inner > limit) return false;  // ICMP or fragments: the per-segment path's (pmtu.cpp)
  if (offload::writeSegment(plan, packet, index, buffer.subspan(innerAt, inner)) != inner) return false;
  const std::span<const std::uint8_t> bytes = buffer.subspan(innerAt, inner);
  TunnelFit fit;
  if (!fitInnerPacket(facts, sa.dst.isV4(), bytes, limit, fit) || fit.padTo != 0) return false;  // TFC: per segment
  out.outerTos = esp::outerTrafficClass(esp::trafficClass(bytes));
  out.dontFragment = fit.outerDf;
  const std::uint8_t nextHeader = (bytes[0] >> 4) == 4 ? esp::kNextHeaderIpv4 : esp::kNextHeaderIpv6;
  const auto r = esp::encapsulate(buffer, innerAt, inner, sa.spi, static_cast<std::uint32_t>(seq), sa.layout,
                                  nextHeader);
  if (!r.ok() || r.offset != start) return false;
  out.espLength = static_cast<std::uint32_t>(r.length);
  out.innerLength = static_cast<std::uint32_t>(inner);
  return true;
}

}  // namespace

SuperFrame frameSuperPacket(const Sa& sa, const TunnelFacts& facts, const offload::SegmentPlan& plan,
                            std::span<const std::uint8_t> packet, std::uint32_t first, std::span<std::uint8_t> buffer,
                            std::uint32_t offset) noexcept {
  SuperFrame f;
  f.offset = offset;
  f.firstSeq = sa.seqNext;
  if (!plan.ok() || !plan.gso() || packet.size() != plan.length || offset > buffer.size()) return f;
  const std::size_t limit = esp::maxInnerLength(sa.layout, facts.pathMtu, facts.outerOverhead);
  std::uint32_t end = offset;  // the end of the last ESP packet framed
  std::uint32_t lastLength = 0;
  for (std::uint32_t index = first; index < plan.count && f.count < proto::kMaxSegments; ++index) {
    // Without ESN the counter must never wrap: keydb's grants stop at 2^32.
    const std::uint64_t seq = f.firstSeq + f.count;
    if (seq >= sa.seqLimit) break;
    // Only a full-stride segment may have another behind it.
    if (f.count > 0 && lastLength != f.stride) break;
    const std::uint32_t start = offset + std::uint32_t{f.count} * f.stride;
    SegmentFrame s;
    if (!frameSegment(sa, facts, limit, plan, packet, index, buffer, start, seq, s)) break;
    if (f.count == 0) f.stride = s.espLength;
    if (s.espLength > f.stride) break;  // longer than the first: a super-packet's last never is
    f.outerTos[f.count] = s.outerTos;
    if (s.dontFragment) f.dontFragment |= std::uint64_t{1} << f.count;
    f.innerBytes += s.innerLength;
    end = start + s.espLength;
    lastLength = s.espLength;
    ++f.count;
  }
  f.length = end - offset;
  return f;
}

std::uint64_t failedSegments(const proto::CryptoCompletion& c, std::uint16_t count) noexcept {
  const std::uint64_t all = ring::allSegments(count);
  if (c.status == proto::CryptoStatus::kOk) return 0;
  const std::uint64_t mask = c.segmentFailMask & all;
  return mask != 0 ? mask : all;
}

}  // namespace ipsec::forwarder
