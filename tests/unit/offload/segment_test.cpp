// Segmentation against the kernel's GSO rules: sizes at the boundaries, the
// last short segment, IPv4/IPv6, TCP/UDP, per-segment fields and flags, and
// checksums (checked here by our own sum; offload_scapy checks them again
// with scapy's).
#include <gtest/gtest.h>

#include <vector>

#include "offload/segment.h"
#include "packets.h"

namespace ipsec::offload {
namespace {

using testing::buildSuperPacket;
using testing::gsoHeaderFor;
using testing::segmentAll;
using testing::SuperPacketSpec;

struct Shape {
  int version;
  std::uint8_t protocol;
  std::size_t payload;
};

std::string shapeName(const ::testing::TestParamInfo<Shape>& info) {
  return std::string(info.param.version == 4 ? "Ipv4" : "Ipv6") +
         (info.param.protocol == kProtoTcp ? "Tcp" : "Udp") + "Payload" + std::to_string(info.param.payload);
}

class SegmentShape : public ::testing::TestWithParam<Shape> {};

TEST_P(SegmentShape, CutsLikeTheKernel) {
  SuperPacketSpec s;
  s.version = GetParam().version;
  s.protocol = GetParam().protocol;
  s.payload = GetParam().payload;
  s.tcpFlags = 0x80 | 0x18 | 0x01;  // CWR PSH ACK FIN
  const auto packet = buildSuperPacket(s);
  const VnetHeader header = gsoHeaderFor(s);
  const SegmentPlan plan = planSegments(header, packet);
  ASSERT_TRUE(plan.ok()) << toString(plan.error);
  const std::uint32_t expected = static_cast<std::uint32_t>(s.payload == 0 ? 1 : (s.payload + s.mss - 1) / s.mss);
  ASSERT_EQ(plan.count, expected);
  const auto segments = segmentAll(header, packet);
  ASSERT_EQ(segments.size(), expected);
  const std::size_t headers = header.headerLength;
  std::vector<std::uint8_t> payload;
  for (std::uint32_t i = 0; i < plan.count; ++i) {
    const auto& seg = segments[i];
    const bool last = i + 1 == plan.count;
    const PacketLayout layout = parseLayout(seg);
    ASSERT_TRUE(layout.ok()) << "segment " << i << ": " << toString(layout.error);
    const std::size_t segPayload = seg.size() - headers;
    EXPECT_EQ(segPayload, last ? s.payload - std::size_t{i} * s.mss : s.mss) << i;
    payload.insert(payload.end(), seg.begin() + headers, seg.end());
    EXPECT_TRUE(transportChecksumValid(seg, layout)) << "segment " << i;
    if (s.version == 4) {
      EXPECT_EQ(load16(&seg[4]), static_cast<std::uint16_t>(s.ipId + i));
      EXPECT_EQ(ipv4HeaderChecksum(seg), load16(&seg[10])) << i;
      EXPECT_EQ(load16(&seg[6]), 0x4000);
    }
    const std::uint8_t* l4 = &seg[layout.l4Offset];
    if (s.protocol == kProtoTcp) {
      EXPECT_EQ(load32(l4 + 4), s.seq + i * std::uint32_t{s.mss});
      EXPECT_EQ(l4[13] & 0x01, last ? 0x01 : 0) << "FIN only on the last, " << i;
      EXPECT_EQ(l4[13] & 0x08, last ? 0x08 : 0) << "PSH only on the last, " << i;
      EXPECT_EQ(l4[13] & 0x80, i == 0 ? 0x80 : 0) << "CWR only on the first, " << i;
      EXPECT_EQ(l4[13] & 0x10, 0x10) << "ACK on every one, " << i;
      EXPECT_EQ(load32(l4 + 8), s.ack);
    } else {
      EXPECT_EQ(load16(l4 + 4), seg.size() - layout.l4Offset);
    }
  }
  EXPECT_EQ(payload, std::vector<std::uint8_t>(packet.begin() + headers, packet.end()));
}

INSTANTIATE_TEST_SUITE_P(
    Boundaries, SegmentShape,
    ::testing::Values(Shape{4, kProtoTcp, 999}, Shape{4, kProtoTcp, 1000}, Shape{4, kProtoTcp, 1001},
                      Shape{4, kProtoTcp, 4000}, Shape{4, kProtoTcp, 4001}, Shape{4, kProtoTcp, 65535 - 52},
                      Shape{6, kProtoTcp, 999}, Shape{6, kProtoTcp, 3000}, Shape{6, kProtoTcp, 3001},
                      Shape{6, kProtoTcp, 65535 - 32}, Shape{4, kProtoUdp, 999}, Shape{4, kProtoUdp, 2000},
                      Shape{4, kProtoUdp, 2001}, Shape{6, kProtoUdp, 5000}, Shape{6, kProtoUdp, 5001}),
    shapeName);

TEST(Segment, WritesIntoAPoolBufferBehindHeadroomAndNoFurther) {
  SuperPacketSpec s;
  const auto packet = buildSuperPacket(s);
  const SegmentPlan plan = planSegments(gsoHeaderFor(s), packet);
  ASSERT_TRUE(plan.ok());
  std::vector<std::uint8_t> buffer(2048, 0xee);
  const std::size_t headroom = 64;
  const std::size_t length = plan.segmentLength(1);
  const auto out = std::span(buffer).subspan(headroom, length);
  ASSERT_EQ(writeSegment(plan, packet, 1, out), length);
  for (std::size_t i = 0; i < headroom; ++i) ASSERT_EQ(buffer[i], 0xee) << i;
  for (std::size_t i = headroom + length; i < buffer.size(); ++i) ASSERT_EQ(buffer[i], 0xee) << i;
}

TEST(Segment, RefusesAShortBufferAnIndexPastTheEndAndAnotherPacket) {
  SuperPacketSpec s;
  const auto packet = buildSuperPacket(s);
  const SegmentPlan plan = planSegments(gsoHeaderFor(s), packet);
  std::vector<std::uint8_t> out(plan.maxSegmentLength());
  EXPECT_EQ(writeSegment(plan, packet, 0, std::span(out).first(out.size() - 1)), 0u);
  EXPECT_EQ(writeSegment(plan, packet, plan.count, out), 0u);
  EXPECT_EQ(writeSegment(plan, std::span(packet).first(packet.size() - 1), 0, out), 0u);
  const SegmentPlan refused = planSegments(VnetHeader{kVnetFlagNeedsChecksum, kGsoTcpV4, 0, 0, 20, 16}, packet);
  EXPECT_FALSE(refused.ok());
  EXPECT_EQ(writeSegment(refused, packet, 0, out), 0u);
  auto fragment = packet;
  fragment[7] = 1;  // a fragment offset
  const SegmentPlan bad = planSegments(gsoHeaderFor(s), fragment);
  EXPECT_EQ(bad.error, VnetError::kBadPacket);
  EXPECT_EQ(bad.layoutError, LayoutError::kFragment) << "the finer reason, for its own counter";
}

TEST(Segment, CompletesAPartialChecksumWithoutGso) {
  for (const std::uint8_t protocol : {kProtoTcp, kProtoUdp}) {
    SuperPacketSpec s;
    s.protocol = protocol;
    s.payload = 777;
    auto packet = buildSuperPacket(s);
    VnetHeader header = gsoHeaderFor(s);
    header.gsoType = kGsoNone;
    header.gsoSize = 0;
    ASSERT_FALSE(transportChecksumValid(packet, parseLayout(packet)));
    const auto segments = segmentAll(header, packet);
    ASSERT_EQ(segments.size(), 1u);
    EXPECT_TRUE(transportChecksumValid(segments[0], parseLayout(segments[0])));
    ASSERT_TRUE(completeChecksum(header, packet));
    EXPECT_EQ(packet, segments[0]) << "in place and copied alike";
  }
}

TEST(Segment, PassesAPacketWithoutOffloadThroughUnchanged) {
  const std::vector<std::uint8_t> packet{0x45, 0, 0, 3};
  const auto segments = segmentAll(VnetHeader{}, packet);
  ASSERT_EQ(segments.size(), 1u);
  EXPECT_EQ(segments[0], packet);
}

}  // namespace
}  // namespace ipsec::offload
