// The crypto broker judges every descriptor before it touches a byte
// (issue 10): the session-aware half (services/crypto/request_check.h),
// boundary by boundary, and the worker's whole judgement (handleRequest:
// lib/ring's generic check, then the session's) on a real region mapped with
// guard pages, where the last-buffer overrun of issue 10 (a seal of length 1
// at offset bufferSize - 1: the IV copied 8 bytes past the pool) must be
// refused, and a request that just fits accepted.
#include <gtest/gtest.h>
#include <linux/pfkeyv2.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "request_check.h"
#include "ring/region.h"
#include "sessions.h"
#include "worker.h"

namespace ipsec::crypto {
namespace {

using proto::CryptoOp;
using proto::CryptoRequest;
using proto::CryptoStatus;

constexpr SessionLayout kGcm{false, 8, 16, 4};    // AES-GCM-16: IV 8, ICV 16
constexpr SessionLayout kCbc{false, 16, 16, 16};  // AES-CBC + HMAC-SHA-256-128
constexpr SessionLayout kAh{true, 0, 12, 0};      // HMAC-SHA1-96

CryptoRequest esp(std::uint32_t length, CryptoOp op = CryptoOp::kSeal) {
  CryptoRequest r{};
  r.op = op;
  r.segmentCount = 1;
  r.offset = 0;
  r.length = length;
  return r;
}

TEST(RequestCheck, EspMinimumIsHeaderIvOneBlockAndIcv) {
  EXPECT_EQ(minEspSegment(kGcm), 8u + 8 + 4 + 16);
  EXPECT_EQ(minEspSegment(kCbc), 8u + 16 + 16 + 16);
  EXPECT_EQ(checkLayout(esp(35), kGcm), LayoutError::kSegmentTooShort);
  EXPECT_EQ(checkLayout(esp(36), kGcm), LayoutError::kNone);
  EXPECT_EQ(checkLayout(esp(55), kCbc), LayoutError::kSegmentTooShort);
  EXPECT_EQ(checkLayout(esp(56), kCbc), LayoutError::kNone);
  // The 1-byte request of issue 10, and one too short for even the IV.
  EXPECT_EQ(checkLayout(esp(1), kGcm), LayoutError::kSegmentTooShort);
  EXPECT_EQ(checkLayout(esp(12), kCbc), LayoutError::kSegmentTooShort);
}

TEST(RequestCheck, EspEncryptedPartIsAWholeNumberOfBlocks) {
  for (std::uint32_t extra = 1; extra < 16; ++extra) {
    EXPECT_EQ(checkLayout(esp(56 + extra), kCbc), LayoutError::kSegmentMisaligned) << extra;
  }
  EXPECT_EQ(checkLayout(esp(72), kCbc), LayoutError::kNone);
  EXPECT_EQ(checkLayout(esp(37), kGcm), LayoutError::kSegmentMisaligned);
  EXPECT_EQ(checkLayout(esp(40), kGcm), LayoutError::kNone);
  // Open is judged the same way: a misaligned packet is a bad packet.
  EXPECT_EQ(checkLayout(esp(57, CryptoOp::kOpen), kCbc), LayoutError::kSegmentMisaligned);
}

TEST(RequestCheck, EspSegmentNoLongerThanAnIpPayload) {
  EXPECT_EQ(checkLayout(esp(65532), kGcm), LayoutError::kNone);
  EXPECT_EQ(checkLayout(esp(65536), kGcm), LayoutError::kSegmentTooLong);
}

TEST(RequestCheck, EverySegmentOfASuperPacketIsJudged) {
  CryptoRequest r = esp(0);
  r.segmentCount = 3;
  r.segmentStride = 72;
  r.length = 72 + 72 + 56;
  EXPECT_EQ(checkLayout(r, kCbc), LayoutError::kNone);
  r.length = 72 + 72 + 55;  // the last one too short
  EXPECT_EQ(checkLayout(r, kCbc), LayoutError::kSegmentTooShort);
  r.segmentStride = 40;  // the stride too short, the last long enough
  r.length = 40 + 40 + 72;
  EXPECT_EQ(checkLayout(r, kCbc), LayoutError::kSegmentTooShort);
  r.segmentStride = 60;  // the stride misaligned
  r.length = 60 + 60 + 72;
  EXPECT_EQ(checkLayout(r, kCbc), LayoutError::kSegmentMisaligned);
}

TEST(RequestCheck, AhIcvFieldLiesAfterTheSmallestHeaderAndInsideEverySegment) {
  CryptoRequest r = esp(100, CryptoOp::kAhSign);
  r.icvOffset = 31;
  EXPECT_EQ(checkLayout(r, kAh), LayoutError::kAhIcvOffsetLow);
  r.icvOffset = 32;
  EXPECT_EQ(checkLayout(r, kAh), LayoutError::kNone);
  r.icvOffset = 88;  // 88 + 12 = 100: ends at the segment's end
  EXPECT_EQ(checkLayout(r, kAh), LayoutError::kNone);
  r.icvOffset = 89;
  EXPECT_EQ(checkLayout(r, kAh), LayoutError::kAhIcvOutside);
  r.icvOffset = 0xffff;
  EXPECT_EQ(checkLayout(r, kAh), LayoutError::kAhIcvOutside);
  // Two segments: the stride is the shorter one.
  r.segmentCount = 2;
  r.segmentStride = 60;
  r.length = 160;
  r.icvOffset = 48;
  EXPECT_EQ(checkLayout(r, kAh), LayoutError::kNone);
  r.icvOffset = 49;
  EXPECT_EQ(checkLayout(r, kAh), LayoutError::kAhIcvOutside);
}

// The review's case: kAhSign, two segments, the second over 65535 bytes. The
// transform refused it only after signing the first (a refused request that
// wrote, counted nowhere): judged whole first now.
TEST(RequestCheck, AhSegmentNoLongerThanAnIpPacket) {
  CryptoRequest r = esp(65535, CryptoOp::kAhSign);
  r.icvOffset = 32;
  EXPECT_EQ(checkLayout(r, kAh), LayoutError::kNone);
  r.length = 65536;
  EXPECT_EQ(checkLayout(r, kAh), LayoutError::kSegmentTooLong);
  r.segmentCount = 2;
  r.segmentStride = 100;
  r.length = 66000;  // the last segment 65900 bytes
  EXPECT_EQ(checkLayout(r, kAh), LayoutError::kSegmentTooLong);
  r.segmentStride = 65536;
  r.length = 65636;
  EXPECT_EQ(checkLayout(r, kAh), LayoutError::kSegmentTooLong);
}

// A worker's view of a real region: the last buffer ends where the mapping
// ends (2 x 2048 bytes fill the pool's last page), and the page after it is
// a guard page, so a write past the pool faults instead of passing unseen.
struct Rig {
  static constexpr std::uint32_t kBufferSize = proto::kMinBufferSize;
  static constexpr std::uint32_t kBuffers = 2;
  cryptodrv::DriverRegistry drivers = cryptodrv::DriverRegistry::withDefaultDrivers();
  SessionTable table{drivers, 1};
  ring::Region owner = ring::Region::create({2, 2, kBuffers, kBufferSize});
  ring::Region region = attach();
  WorkerCounters counters;
  std::vector<std::uint8_t> key = std::vector<std::uint8_t>(20, 7);

  ring::Region attach() {
    auto a = ring::Region::attach(control::UniqueFd(::dup(owner.fd())), nullptr, ring::GuardPages::kSurround);
    if (!a.region) throw std::runtime_error(ring::toString(a.error));
    return std::move(*a.region);
  }
  void addGcm(std::uint32_t index, SessionDirection direction) {
    cryptodrv::TransformSpec s;
    s.encAlg = SADB_X_EALG_AES_GCM_ICV16;
    s.encKey = key;
    std::uint8_t layout[3];
    ASSERT_EQ(table.create(index, 1, s, direction, 0, 1000, layout), "");
  }
  CryptoStatus handle(CryptoRequest& r) {
    std::shared_lock lock(table.mutex());
    handleRequest(r, region, table, 0, counters);
    return r.status;
  }
  CryptoRequest lastBuffer(std::uint32_t offset, std::uint32_t length) const {
    CryptoRequest r{};
    r.session = 1;
    r.sessionGeneration = 1;
    r.op = CryptoOp::kSeal;
    r.segmentCount = 1;
    r.bufferIndex = kBuffers - 1;
    r.offset = offset;
    r.length = length;
    return r;
  }
};

TEST(BrokerRequest, TheLastBufferOverrunOfIssue10IsRefusedAsBadLength) {
  Rig rig;
  ASSERT_EQ(rig.region.buffer(Rig::kBuffers - 1) + Rig::kBufferSize, rig.region.base() + rig.region.size());
  rig.addGcm(1, SessionDirection::kOutbound);
  std::byte* last = rig.region.buffer(Rig::kBuffers - 1);
  std::vector<std::byte> before(last, last + Rig::kBufferSize);
  CryptoRequest r = rig.lastBuffer(Rig::kBufferSize - 1, 1);
  EXPECT_EQ(rig.handle(r), CryptoStatus::kBadLength);
  EXPECT_EQ(r.segmentFailMask, 1u);
  EXPECT_EQ(rig.table.refusals().layout[static_cast<int>(LayoutError::kSegmentTooShort)], 1u);
  EXPECT_EQ(0, std::memcmp(before.data(), last, Rig::kBufferSize));  // not a byte written
  // One byte short of the minimum at the very end: refused too.
  r = rig.lastBuffer(Rig::kBufferSize - 35, 35);
  EXPECT_EQ(rig.handle(r), CryptoStatus::kBadLength);
  EXPECT_EQ(0, std::memcmp(before.data(), last, Rig::kBufferSize));
}

TEST(BrokerRequest, ARequestThatJustFitsTheLastBufferIsSealed) {
  Rig rig;
  rig.addGcm(1, SessionDirection::kOutbound);
  CryptoRequest r = rig.lastBuffer(Rig::kBufferSize - 36, 36);
  EXPECT_EQ(rig.handle(r), CryptoStatus::kOk);
  EXPECT_EQ(r.segmentFailMask, 0u);
  // One byte further runs out of the buffer: lib/ring's half refuses it.
  r = rig.lastBuffer(Rig::kBufferSize - 35, 36);
  EXPECT_EQ(rig.handle(r), CryptoStatus::kBadDescriptor);
  EXPECT_EQ(rig.counters.descriptorRefused[static_cast<int>(ring::DescriptorError::kOutOfBuffer)], 1u);
}

TEST(BrokerRequest, EachGenericRefusalIsCountedUnderItsOwnReason) {
  Rig rig;
  rig.addGcm(1, SessionDirection::kOutbound);
  CryptoRequest r = rig.lastBuffer(0, 36);
  r.bufferIndex = Rig::kBuffers;
  EXPECT_EQ(rig.handle(r), CryptoStatus::kBadDescriptor);
  r = rig.lastBuffer(0, 36);
  r.segmentCount = 0;
  EXPECT_EQ(rig.handle(r), CryptoStatus::kBadDescriptor);
  r = rig.lastBuffer(0, 36);
  r.op = static_cast<CryptoOp>(0);
  EXPECT_EQ(rig.handle(r), CryptoStatus::kBadOp);
  using E = ring::DescriptorError;
  EXPECT_EQ(rig.counters.descriptorRefused[static_cast<int>(E::kBadBufferIndex)], 1u);
  EXPECT_EQ(rig.counters.descriptorRefused[static_cast<int>(E::kBadSegmentCount)], 1u);
  EXPECT_EQ(rig.counters.descriptorRefused[static_cast<int>(E::kBadOp)], 1u);
  EXPECT_EQ(rig.counters.badDescriptor, 2u);
}

TEST(BrokerRequest, AMisalignedPacketToOpenIsABadLengthNotAnInternalError) {
  Rig rig;
  rig.addGcm(1, SessionDirection::kInbound);
  CryptoRequest r = rig.lastBuffer(0, 38);
  r.op = CryptoOp::kOpen;
  EXPECT_EQ(rig.handle(r), CryptoStatus::kBadLength);
  EXPECT_EQ(rig.table.refusals().layout[static_cast<int>(LayoutError::kSegmentMisaligned)], 1u);
}

}  // namespace
}  // namespace ipsec::crypto
