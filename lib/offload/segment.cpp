// GSO in software (see segment.h).
#include "offload/segment.h"

#include <cstring>

namespace ipsec::offload {

namespace {

constexpr std::uint8_t kTcpFin = 0x01;
constexpr std::uint8_t kTcpPsh = 0x08;
constexpr std::uint8_t kTcpCwr = 0x80;
constexpr std::size_t kTcpFlagsOffset = 13;

void fixIpHeader(std::uint8_t* seg, const PacketLayout& layout, std::uint32_t length, std::uint32_t index) noexcept {
  if (layout.version == 4) {
    store16(seg + 2, static_cast<std::uint16_t>(length));
    store16(seg + 4, static_cast<std::uint16_t>(load16(seg + 4) + index));
    store16(seg + 10, 0);
    store16(seg + 10, ipv4HeaderChecksum({seg, layout.l4Offset}));
  } else {
    store16(seg + 4, static_cast<std::uint16_t>(length - kIpv6Header));
  }
}

void fixTcpHeader(std::uint8_t* tcp, const SegmentPlan& plan, std::uint32_t index) noexcept {
  store32(tcp + 4, load32(tcp + 4) + index * std::uint32_t{plan.segmentSize});
  if (index + 1 < plan.count) tcp[kTcpFlagsOffset] &= static_cast<std::uint8_t>(~(kTcpFin | kTcpPsh));
  if (index != 0) tcp[kTcpFlagsOffset] &= static_cast<std::uint8_t>(~kTcpCwr);
}

// The whole TCP/UDP checksum of a finished segment.
void fillTransportChecksum(std::span<std::uint8_t> seg, const PacketLayout& layout) noexcept {
  const std::size_t field = layout.l4Offset + (layout.protocol == kProtoTcp ? kTcpChecksumOffset : kUdpChecksumOffset);
  store16(&seg[field], 0);
  const auto l4 = seg.subspan(layout.l4Offset);
  const std::uint32_t sum = checksumAdd(pseudoHeaderSum(seg, layout, static_cast<std::uint32_t>(l4.size())), l4);
  std::uint16_t checksum = static_cast<std::uint16_t>(~checksumFold(sum));
  if (checksum == 0 && layout.protocol == kProtoUdp) checksum = 0xffff;  // 0 would mean "no checksum"
  store16(&seg[field], checksum);
}

std::size_t writeGsoSegment(const SegmentPlan& plan, std::span<const std::uint8_t> packet, std::uint32_t index,
                            std::span<std::uint8_t> out) noexcept {
  const PacketLayout& layout = plan.layout;
  const std::uint32_t length = plan.segmentLength(index);
  const std::size_t payloadOffset = layout.headerLength + std::size_t{index} * plan.segmentSize;
  std::uint8_t* seg = out.data();
  std::memcpy(seg, packet.data(), layout.headerLength);
  std::memcpy(seg + layout.headerLength, packet.data() + payloadOffset, length - layout.headerLength);
  fixIpHeader(seg, layout, length, index);
  if (layout.protocol == kProtoTcp) {
    fixTcpHeader(seg + layout.l4Offset, plan, index);
  } else {
    store16(seg + layout.l4Offset + 4, static_cast<std::uint16_t>(length - layout.l4Offset));
  }
  fillTransportChecksum(out.first(length), layout);
  return length;
}

}  // namespace

std::uint32_t SegmentPlan::segmentLength(std::uint32_t i) const noexcept {
  if (i >= count) return 0;
  if (!gso()) return length;
  const std::uint32_t payload = layout.payloadLength();
  const std::uint32_t before = i * std::uint32_t{segmentSize};
  const std::uint32_t left = payload - before;
  return layout.headerLength + (left < segmentSize ? left : segmentSize);
}

SegmentPlan planSegments(const VnetHeader& header, std::span<const std::uint8_t> packet) noexcept {
  SegmentPlan plan;
  plan.header = header;
  plan.error = checkVnetHeader(header, packet);
  if (plan.error == VnetError::kBadPacket) plan.layoutError = parseLayout(packet).error;
  if (!plan.ok()) return plan;
  plan.length = static_cast<std::uint32_t>(packet.size());
  if (!plan.gso()) {
    plan.count = 1;
    return plan;
  }
  plan.layout = parseLayout(packet);  // checked by checkVnetHeader
  plan.segmentSize = header.gsoSize;
  const std::uint32_t payload = plan.layout.payloadLength();
  plan.count = payload == 0 ? 1 : (payload + plan.segmentSize - 1) / plan.segmentSize;
  return plan;
}

std::size_t writeSegment(const SegmentPlan& plan, std::span<const std::uint8_t> packet, std::uint32_t index,
                         std::span<std::uint8_t> out) noexcept {
  if (!plan.ok() || index >= plan.count || packet.size() != plan.length) return 0;
  const std::uint32_t length = plan.segmentLength(index);
  if (out.size() < length) return 0;
  if (plan.gso()) return writeGsoSegment(plan, packet, index, out);
  std::memcpy(out.data(), packet.data(), length);
  if (!completeChecksum(plan.header, out.first(length))) return 0;
  return length;
}

bool completeChecksum(const VnetHeader& header, std::span<std::uint8_t> packet) noexcept {
  if (!header.needsChecksum()) return true;
  const std::size_t start = header.checksumStart;
  const std::size_t field = start + header.checksumOffset;
  if (field + 2 > packet.size()) return false;
  const std::uint16_t checksum = static_cast<std::uint16_t>(~checksumFold(checksumAdd(0, packet.subspan(start))));
  store16(&packet[field], checksum == 0 ? 0xffff : checksum);
  return true;
}

}  // namespace ipsec::offload
