// The forwarder's framing of a TUN super-packet into one strided
// multi-segment seal request (services/forwarder/super_frame.cpp), driven
// with bytes: a super-packet as the kernel's TCP/UDP stack leaves it for
// TSO/USO (tests/unit/offload/packets.h), framed for an ESP tunnel SA in a
// buffer the size of a pool buffer, each segment laid out where the ring ABI
// says (proto/ring_abi.h, lib/ring segmentOf), sealed by lib/cryptodrv's
// AES-GCM (the broker's own transform), opened by the peer's, and compared
// with the segment lib/offload's writeSegment cuts on its own. Boundaries:
// one segment, a last segment exactly full or short, more segments than
// kMaxSegments, than the buffer holds, than the SA has sequence numbers for;
// the segments the per-segment path must judge (too big, TFC) are left to it.
#include "super_frame.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <vector>

#include "core_packets.h"
#include "core_tables.h"
#include "esp/esp.h"
#include "packets.h"
#include "proto/ring_abi.h"
#include "ring/pool.h"

namespace ipsec::forwarder {
namespace {

using offload::testing::buildSuperPacket;
using offload::testing::gsoHeaderFor;
using offload::testing::segmentAll;
using offload::testing::SuperPacketSpec;

esp::IpAddress ip(const char* s) { return *esp::IpAddress::parse(s); }

class SuperFrameCore : public core_packets::GcmCore {
 protected:
  Sa& tunnel(int outerVersion, std::uint64_t seqNext = 1, std::uint64_t seqLimit = 100000) {
    core_tables::SaValues v;
    v.spi = 0x100;
    v.src = outerVersion == 4 ? ip("192.0.2.1") : ip("2001:db8:1::1");
    v.dst = outerVersion == 4 ? ip("192.0.2.2") : ip("2001:db8:1::2");
    v.layout = layout_;
    v.seqNext = seqNext;
    v.seqLimit = seqLimit;
    EXPECT_FALSE(core_tables::installSa(sas_, v));
    facts_.outerOverhead = outerVersion == 4 ? 20 : 40;
    return *sas_.find({0, 1});
  }

  // The super-packet planned, then framed from segment `first` into buffer_.
  SuperFrame frame(const Sa& sa, const SuperPacketSpec& spec, std::uint32_t first = 0) {
    packet_ = buildSuperPacket(spec);
    header_ = gsoHeaderFor(spec);
    plan_ = offload::planSegments(header_, packet_);
    EXPECT_TRUE(plan_.ok());
    std::fill(buffer_.begin(), buffer_.end(), 0xee);
    return frameSuperPacket(sa, facts_, plan_, packet_, first, buffer_, kOffset);
  }

  // The request the shell would queue, checked as the broker checks it, each
  // segment sealed and opened as the broker and the peer would, and compared
  // with what writeSegment alone makes of segment first + i.
  void expectSegmentsOpenToTheKernelsCut(const SuperFrame& f, const Sa& sa, std::uint32_t first = 0) {
    proto::CryptoRequest req{};
    req.op = proto::CryptoOp::kSeal;
    req.segmentCount = f.count;
    req.bufferIndex = 0;
    req.offset = f.offset;
    req.length = f.length;
    req.segmentStride = f.stride;
    ASSERT_EQ(ring::checkDescriptor(req, 1, static_cast<std::uint32_t>(buffer_.size())), ring::DescriptorError::kNone);
    const auto cuts = segmentAll(header_, packet_);
    ASSERT_GE(cuts.size(), first + f.count);
    for (std::uint16_t i = 0; i < f.count; ++i) {
      const ring::Segment s = ring::segmentOf(req, i);
      ASSERT_EQ(s.start, f.segmentStart(i));
      ASSERT_EQ(s.length, f.segmentLength(i));
      std::uint8_t* esp = buffer_.data() + s.start;
      const auto header = esp::parseHeader({esp, s.length});
      ASSERT_TRUE(header.ok());
      EXPECT_EQ(header.header.spi, sa.spi);
      EXPECT_EQ(header.header.seqLow, static_cast<std::uint32_t>(f.firstSeq + i)) << "segment " << i;
      std::array<std::uint8_t, 8> iv{0, 0, 0, 0, 0, 0, static_cast<std::uint8_t>(i >> 8), static_cast<std::uint8_t>(i)};
      ASSERT_EQ(sealer_->sealWithIv(esp, s.length, 0, iv.data()), cryptodrv::Status::kOk);
      ASSERT_EQ(opener_->open(esp, s.length, 0), cryptodrv::Status::kOk) << "segment " << i;
      const auto d = esp::decapsulate({esp, s.length}, layout_);
      ASSERT_TRUE(d.ok()) << "segment " << i;
      const std::vector<std::uint8_t> inner(esp + d.offset, esp + d.offset + d.length);
      EXPECT_EQ(inner, cuts[first + i]) << "segment " << first + i;
    }
  }

  static constexpr std::uint32_t kOffset = 0;
  SaTable sas_;
  TunnelFacts facts_;  // 1500 bytes, DF copied, no TFC
  std::vector<std::uint8_t> packet_;
  offload::VnetHeader header_;
  offload::SegmentPlan plan_;
  std::vector<std::uint8_t> buffer_ = std::vector<std::uint8_t>(proto::kDefaultBufferSize);
};

TEST_F(SuperFrameCore, ATcpSuperPacketOverIpv4IsFramedBackToBackAndEachSegmentOpensToItsCut) {
  const Sa& sa = tunnel(4, 7);
  SuperPacketSpec spec;
  spec.payload = 9 * 1380 + 500;
  spec.mss = 1380;  // 9 full segments and a short one, each within the 1500-byte MTU in ESP
  const SuperFrame f = frame(sa, spec);
  ASSERT_EQ(f.count, 10);
  EXPECT_EQ(f.firstSeq, 7u);
  EXPECT_EQ(f.stride, esp::espPacketLength(layout_, plan_.segmentLength(0)));
  EXPECT_LT(f.segmentLength(9), f.stride);
  EXPECT_EQ(f.length, 9 * f.stride + esp::espPacketLength(layout_, plan_.segmentLength(9)));
  EXPECT_EQ(sa.seqNext, 7u);  // the shell takes the numbers, not the core
  std::uint64_t inner = 0;
  for (std::uint32_t i = 0; i < 10; ++i) inner += plan_.segmentLength(i);
  EXPECT_EQ(f.innerBytes, inner);
  for (std::uint16_t i = 0; i < f.count; ++i) EXPECT_EQ(f.outerTos[i], spec.tos);  // ECT(0) copied (RFC 6040)
  EXPECT_EQ(f.dontFragment, ring::allSegments(10));  // DF copied from each inner header
  expectSegmentsOpenToTheKernelsCut(f, sa);
}

TEST_F(SuperFrameCore, ATcpSuperPacketOverIpv6WithAnExactlyFullLastSegment) {
  const Sa& sa = tunnel(6);
  SuperPacketSpec spec;
  spec.version = 6;
  spec.payload = 8 * 1200;
  spec.mss = 1200;
  spec.tos = 0x28;
  const SuperFrame f = frame(sa, spec);
  ASSERT_EQ(f.count, 8);
  EXPECT_EQ(f.length, 8 * f.stride);
  EXPECT_EQ(f.dontFragment, 0u);  // no DF bit in an IPv6 outer header
  EXPECT_EQ(f.outerTos[7], 0x28);
  expectSegmentsOpenToTheKernelsCut(f, sa);
}

TEST_F(SuperFrameCore, AUdpSuperPacketIsFramedAsWell) {
  const Sa& sa = tunnel(4);
  SuperPacketSpec spec;
  spec.protocol = offload::kProtoUdp;
  spec.payload = 5 * 1000 + 17;
  spec.mss = 1000;
  const SuperFrame f = frame(sa, spec);
  ASSERT_EQ(f.count, 6);
  expectSegmentsOpenToTheKernelsCut(f, sa);
}

TEST_F(SuperFrameCore, ASuperPacketOfOneSegmentIsOneSegment) {
  const Sa& sa = tunnel(4);
  SuperPacketSpec spec;
  spec.payload = 900;
  spec.mss = 1000;
  const SuperFrame f = frame(sa, spec);
  ASSERT_EQ(f.count, 1);
  EXPECT_EQ(f.length, f.stride);
  expectSegmentsOpenToTheKernelsCut(f, sa);
}

TEST_F(SuperFrameCore, StopsAtKMaxSegmentsAndGoesOnFromThereWithTheNextNumbers) {
  Sa& sa = tunnel(4);
  SuperPacketSpec spec;
  spec.payload = 80 * 100;
  spec.mss = 100;  // 80 segments
  const SuperFrame f = frame(sa, spec);
  ASSERT_EQ(f.count, proto::kMaxSegments);
  expectSegmentsOpenToTheKernelsCut(f, sa);
  sa.seqNext += f.count;  // as the shell does
  const SuperFrame rest = frame(sa, spec, f.count);
  ASSERT_EQ(rest.count, 16);
  EXPECT_EQ(rest.firstSeq, 1u + proto::kMaxSegments);
  expectSegmentsOpenToTheKernelsCut(rest, sa, f.count);
}

// The whole of the largest TSO read at the default tun_mtu (1400) is one
// request: one buffer, one seal, one completion (proto::kDefaultBufferSize).
TEST_F(SuperFrameCore, ALargestSuperPacketOverIpv4AtTheDefaultMtuIsFramedWholeInOneBuffer) {
  const Sa& sa = tunnel(4);
  SuperPacketSpec spec;
  spec.mss = 1348;                // 1400 - 20 - 32 (timestamps)
  spec.payload = 65535 - 20 - 32;  // the largest IPv4 packet
  const SuperFrame f = frame(sa, spec);
  ASSERT_EQ(plan_.count, 49u);
  EXPECT_EQ(f.count, plan_.count);
  expectSegmentsOpenToTheKernelsCut(f, sa);
}

TEST_F(SuperFrameCore, ALargestSuperPacketOverIpv6AtTheDefaultMtuIsFramedWholeInOneBuffer) {
  const Sa& sa = tunnel(6);
  SuperPacketSpec spec;
  spec.version = 6;
  spec.mss = 1328;            // 1400 - 40 - 32
  spec.payload = 65535 - 32;  // the largest IPv6 payload
  const SuperFrame f = frame(sa, spec);
  ASSERT_EQ(plan_.count, proto::kSuperPacketSegmentsAtDefaultMtu);
  EXPECT_EQ(f.count, plan_.count);
  expectSegmentsOpenToTheKernelsCut(f, sa);
}

TEST_F(SuperFrameCore, StopsWhereThePoolBufferIsFull) {
  Sa& sa = tunnel(4);
  buffer_.resize(proto::kDefaultBufferSize / 2);  // a region configured with smaller buffers
  SuperPacketSpec spec;
  spec.payload = 48000;
  spec.mss = 1360;  // 36 segments of about 1436 bytes of ESP: more than 36.5 KiB
  const SuperFrame f = frame(sa, spec);
  ASSERT_GT(f.count, 20);
  ASSERT_LT(f.count, plan_.count);
  EXPECT_LE(f.offset + f.length, buffer_.size());
  EXPECT_GT(f.offset + f.length + f.stride, buffer_.size());  // the next would not have fitted
  expectSegmentsOpenToTheKernelsCut(f, sa);
  sa.seqNext += f.count;
  const SuperFrame rest = frame(sa, spec, f.count);
  EXPECT_EQ(f.count + rest.count, plan_.count);
  expectSegmentsOpenToTheKernelsCut(rest, sa, f.count);
}

TEST_F(SuperFrameCore, StopsWhereTheSasGrantedSequenceNumbersEnd) {
  const Sa& sa = tunnel(4, 10, 13);
  SuperPacketSpec spec;
  spec.payload = 6000;
  spec.mss = 1000;
  const SuperFrame f = frame(sa, spec);
  EXPECT_EQ(f.count, 3);  // 10, 11, 12: the rest waits for keydb on the per-segment path
  expectSegmentsOpenToTheKernelsCut(f, sa);
  const Sa& spent = tunnel(4, 13, 13);
  EXPECT_EQ(frame(spent, spec).count, 0);
}

TEST_F(SuperFrameCore, SegmentsBeyondTheSasMtuAreLeftToThePerSegmentPath) {
  const Sa& sa = tunnel(4);
  facts_.pathMtu = 1000;  // ICMP (DF) or fragments: pmtu.cpp's, segment by segment
  SuperPacketSpec spec;
  spec.payload = 6000;
  spec.mss = 1400;
  EXPECT_EQ(frame(sa, spec).count, 0);
}

TEST_F(SuperFrameCore, SegmentsTfcWouldPadAreLeftToThePerSegmentPath) {
  const Sa& sa = tunnel(4);
  facts_.tfcPad = 1300;
  SuperPacketSpec spec;
  spec.payload = 6000;
  spec.mss = 1000;
  EXPECT_EQ(frame(sa, spec).count, 0);
}

TEST_F(SuperFrameCore, APacketThatIsNotThePlannedOneIsNotFramed) {
  const Sa& sa = tunnel(4);
  SuperPacketSpec spec;
  spec.payload = 3000;
  frame(sa, spec);
  packet_.pop_back();  // the plan no longer describes these bytes
  EXPECT_EQ(frameSuperPacket(sa, facts_, plan_, packet_, 0, buffer_, 0).count, 0);
}

TEST(SuperFrameFailures, EachSegmentIsJudgedByTheCompletionsMask) {
  proto::CryptoCompletion c{};
  c.status = proto::CryptoStatus::kOk;
  c.segmentFailMask = 0b100;
  EXPECT_EQ(failedSegments(c, 10), 0u);  // kOk: every segment sealed
  c.status = proto::CryptoStatus::kSeqExhausted;
  EXPECT_EQ(failedSegments(c, 10), 0b100u);  // only the third: the others are sent
  c.segmentFailMask = 0b100 | std::uint64_t{1} << 40;
  EXPECT_EQ(failedSegments(c, 10), 0b100u);  // bits beyond the request are the broker's noise
  c.segmentFailMask = 0;
  c.status = proto::CryptoStatus::kBadSession;
  EXPECT_EQ(failedSegments(c, 10), 0x3ffu);  // refused whole
  EXPECT_EQ(failedSegments(c, proto::kMaxSegments), ~std::uint64_t{0});
}

}  // namespace
}  // namespace ipsec::forwarder
