// The forwarder's buffer allocator and the worker's descriptor bounds check
// (lib/ring/pool.h).
#include "ring/pool.h"

#include <gtest/gtest.h>

#include <set>
#include <string>

namespace ipsec::ring {
namespace {

using proto::CryptoOp;
using proto::CryptoRequest;

constexpr std::uint32_t kCount = 4;
constexpr std::uint32_t kSize = 4096;

CryptoRequest valid() {
  CryptoRequest r{};
  r.op = CryptoOp::kOpen;
  r.bufferIndex = 3;
  r.segmentCount = 1;
  r.offset = 100;
  r.length = 1400;
  return r;
}

TEST(BufferPool, HandsOutEveryBufferOnceThenRunsDry) {
  Region region = Region::create(RegionConfig{8, 8, kCount, kSize});
  BufferPool pool(region);
  std::set<std::uint32_t> seen;
  for (std::uint32_t i = 0; i < kCount; ++i) {
    auto index = pool.alloc();
    ASSERT_TRUE(index);
    EXPECT_LT(*index, kCount);
    EXPECT_TRUE(seen.insert(*index).second);
  }
  EXPECT_FALSE(pool.alloc());
  EXPECT_EQ(pool.available(), 0u);
  EXPECT_TRUE(pool.free(2));
  EXPECT_EQ(pool.alloc(), std::optional<std::uint32_t>(2));
}

TEST(BufferPool, RefusesDoubleFreeAndForeignIndex) {
  Region region = Region::create(RegionConfig{8, 8, kCount, kSize});
  BufferPool pool(region);
  auto index = pool.alloc();
  ASSERT_TRUE(index);
  EXPECT_TRUE(pool.free(*index));
  EXPECT_FALSE(pool.free(*index));
  EXPECT_FALSE(pool.free(kCount));
  EXPECT_FALSE(pool.free(0xffffffffu));
  EXPECT_EQ(pool.available(), kCount);
}

TEST(BufferPool, DataIsTheBufferInTheSharedRegion) {
  Region region = Region::create(RegionConfig{8, 8, kCount, kSize});
  BufferPool pool(region);
  auto index = pool.alloc();
  ASSERT_TRUE(index);
  auto bytes = pool.data(*index);
  ASSERT_EQ(bytes.size(), kSize);
  EXPECT_EQ(bytes.data(), region.buffer(*index));
  bytes[kSize - 1] = std::byte{0x5a};
  EXPECT_EQ(region.buffer(*index)[kSize - 1], std::byte{0x5a});
  EXPECT_TRUE(pool.data(kCount).empty());
}

TEST(DescriptorCheck, AcceptsASegmentInsideItsBuffer) {
  EXPECT_EQ(checkDescriptor(valid(), kCount, kSize), DescriptorError::kNone);
  CryptoRequest wholeBuffer = valid();
  wholeBuffer.offset = 0;
  wholeBuffer.length = kSize;
  EXPECT_EQ(checkDescriptor(wholeBuffer, kCount, kSize), DescriptorError::kNone);
}

TEST(DescriptorCheck, RejectsBufferIndexPastTheCount) {
  CryptoRequest r = valid();
  r.bufferIndex = kCount;
  EXPECT_EQ(checkDescriptor(r, kCount, kSize), DescriptorError::kBadBufferIndex);
  r.bufferIndex = 0xffffffffu;
  EXPECT_EQ(checkDescriptor(r, kCount, kSize), DescriptorError::kBadBufferIndex);
}

TEST(DescriptorCheck, RejectsASegmentEndingPastTheBuffer) {
  CryptoRequest r = valid();
  r.offset = kSize - 10;
  r.length = 11;
  EXPECT_EQ(checkDescriptor(r, kCount, kSize), DescriptorError::kOutOfBuffer);
  r.offset = 0xffffffffu;  // offset + length would wrap in 32 bits
  r.length = 2;
  EXPECT_EQ(checkDescriptor(r, kCount, kSize), DescriptorError::kOutOfBuffer);
}

TEST(DescriptorCheck, RejectsEmptyAndMissingSegments) {
  CryptoRequest r = valid();
  r.length = 0;
  EXPECT_EQ(checkDescriptor(r, kCount, kSize), DescriptorError::kBadSegmentLayout);
  r = valid();
  r.segmentCount = 0;
  EXPECT_EQ(checkDescriptor(r, kCount, kSize), DescriptorError::kBadSegmentCount);
  r.segmentCount = proto::kMaxSegments + 1;
  EXPECT_EQ(checkDescriptor(r, kCount, kSize), DescriptorError::kBadSegmentCount);
}

TEST(DescriptorCheck, SuperPacketSegmentsMustEachLieInside) {
  CryptoRequest r = valid();
  r.offset = 0;
  r.segmentCount = 3;
  r.segmentStride = 1000;
  r.length = 2500;  // 1000 + 1000 + 500
  EXPECT_EQ(checkDescriptor(r, kCount, kSize), DescriptorError::kNone);
  r.length = 2000;  // the third segment would start at the end: empty
  EXPECT_EQ(checkDescriptor(r, kCount, kSize), DescriptorError::kBadSegmentLayout);
  r.segmentStride = 0;
  r.length = 2500;
  EXPECT_EQ(checkDescriptor(r, kCount, kSize), DescriptorError::kBadSegmentLayout);
  r.segmentStride = 0x80000000u;  // (count - 1) * stride must not wrap
  EXPECT_EQ(checkDescriptor(r, kCount, kSize), DescriptorError::kBadSegmentLayout);
}

TEST(DescriptorCheck, RejectsUnknownOp) {
  CryptoRequest r = valid();
  r.op = static_cast<CryptoOp>(9);
  EXPECT_EQ(checkDescriptor(r, kCount, kSize), DescriptorError::kBadOp);
}

TEST(DescriptorCheck, AcceptsTheAhOpsWithTheSameBounds) {
  for (CryptoOp op : {CryptoOp::kAhSign, CryptoOp::kAhVerify}) {
    CryptoRequest r = valid();
    r.op = op;
    r.icvOffset = 32;
    EXPECT_EQ(checkDescriptor(r, kCount, kSize), DescriptorError::kNone);
    r.offset = kSize - 10;
    r.length = 11;
    EXPECT_EQ(checkDescriptor(r, kCount, kSize), DescriptorError::kOutOfBuffer);
  }
}

TEST(DescriptorSegments, SegmentOfAndShortestSegmentFollowTheStride) {
  CryptoRequest r = valid();
  r.offset = 100;
  r.segmentCount = 3;
  r.segmentStride = 1000;
  r.length = 2500;
  ASSERT_EQ(checkDescriptor(r, kCount, kSize), DescriptorError::kNone);
  EXPECT_EQ(segmentOf(r, 0).start, 100u);
  EXPECT_EQ(segmentOf(r, 0).length, 1000u);
  EXPECT_EQ(segmentOf(r, 2).start, 2100u);
  EXPECT_EQ(segmentOf(r, 2).length, 500u);
  EXPECT_EQ(shortestSegment(r), 500u);
  r.length = 2000 + 1500;  // the last one longer than the stride
  EXPECT_EQ(shortestSegment(r), 1000u);
  r.segmentCount = 1;  // the stride of a single segment is ignored
  r.segmentStride = 1;
  EXPECT_EQ(shortestSegment(r), 3500u);
}

TEST(DescriptorSegments, AllSegmentsMasksExactlyTheCount) {
  EXPECT_EQ(allSegments(0), 0u);
  EXPECT_EQ(allSegments(1), 1u);
  EXPECT_EQ(allSegments(3), 7u);
  EXPECT_EQ(allSegments(64), ~std::uint64_t{0});
  EXPECT_EQ(allSegments(65535), ~std::uint64_t{0});
}

TEST(DescriptorCheck, EachReasonHasItsOwnCounterName) {
  std::set<std::string> names;
  for (std::size_t i = 0; i < kDescriptorErrorCount; ++i) names.insert(counterName(static_cast<DescriptorError>(i)));
  EXPECT_EQ(names.size(), kDescriptorErrorCount);
}

}  // namespace
}  // namespace ipsec::ring
