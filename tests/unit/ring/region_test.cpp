// Region creation and the header checks a peer applies before trusting a
// memfd it was handed (lib/ring/region.h).
#include "ring/region.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <functional>

namespace ipsec::ring {
namespace {

using control::UniqueFd;
using proto::RegionHeader;

RegionConfig smallConfig() { return RegionConfig{8, 16, 4, 4096}; }

UniqueFd dupFd(int fd) { return UniqueFd(::fcntl(fd, F_DUPFD_CLOEXEC, 0)); }

TEST(Region, CreateFillsTheHeaderAndLaysOutPartsInOrder) {
  Region region = Region::create(smallConfig());
  const RegionHeader& h = region.header();
  EXPECT_EQ(h.magic, proto::kRegionMagic);
  EXPECT_EQ(h.version, proto::kRegionVersion);
  EXPECT_EQ(h.requestCapacity, 8u);
  EXPECT_EQ(h.completionCapacity, 16u);
  EXPECT_EQ(h.bufferCount, 4u);
  EXPECT_EQ(h.bufferSize, 4096u);
  EXPECT_GE(h.completionRingOffset, h.requestRingOffset + proto::kRingControlSize + 8 * 64);
  EXPECT_GE(h.bufferPoolOffset, h.completionRingOffset + proto::kRingControlSize + 16 * 64);
  EXPECT_EQ(h.bufferPoolOffset % proto::kPageSize, 0u);
  EXPECT_EQ(h.regionSize, region.size());
  // What ipsecd wrote into shared memory is what it keeps privately.
  EXPECT_EQ(std::memcmp(region.base(), &h, sizeof h), 0);
}

TEST(Region, DefaultRegionHoldsFiveHundredTwelveSuperPacketBuffers) {
  Region region = Region::create();
  EXPECT_EQ(region.header().bufferCount, 512u);
  EXPECT_EQ(region.header().bufferSize, 65536u + 8192u);  // a 64 KiB super-packet framed as ESP
  EXPECT_GE(region.size(), 512u * (65536u + 8192u));
}

TEST(Region, CreateRefusesAConfigOutOfBounds) {
  EXPECT_THROW(Region::create(RegionConfig{12, 16, 4, 4096}), std::invalid_argument);  // not a power of two
  EXPECT_THROW(Region::create(RegionConfig{8, 16, 0, 4096}), std::invalid_argument);
  EXPECT_THROW(Region::create(RegionConfig{8, 16, 4, 100}), std::invalid_argument);
}

TEST(Region, AttachSharesMemoryWithTheCreator) {
  Region created = Region::create(smallConfig());
  AttachResult attached = Region::attach(dupFd(created.fd()));
  ASSERT_EQ(attached.error, RegionError::kNone) << toString(attached.error);
  ASSERT_TRUE(attached.region);
  EXPECT_EQ(attached.region->config(), smallConfig());
  std::memcpy(created.buffer(3), "hello", 5);
  EXPECT_EQ(std::memcmp(attached.region->buffer(3), "hello", 5), 0);
}

TEST(Region, AttachChecksTheAnnouncedConfig) {
  Region created = Region::create(smallConfig());
  RegionConfig expected = smallConfig();
  EXPECT_EQ(Region::attach(dupFd(created.fd()), &expected).error, RegionError::kNone);
  expected.bufferCount = 3;
  EXPECT_EQ(Region::attach(dupFd(created.fd()), &expected).error, RegionError::kConfigMismatch);
}

TEST(Region, AttachRejectsAnUnsealedMemfd) {
  Region created = Region::create(smallConfig());
  UniqueFd plain(::memfd_create("plain", MFD_CLOEXEC));
  ASSERT_TRUE(plain);
  ASSERT_EQ(::ftruncate(plain.get(), static_cast<off_t>(created.size())), 0);
  ASSERT_EQ(::pwrite(plain.get(), created.base(), sizeof(RegionHeader), 0), static_cast<ssize_t>(sizeof(RegionHeader)));
  EXPECT_EQ(Region::attach(std::move(plain)).error, RegionError::kNotSealed);
}

TEST(Region, AttachRejectsSomethingThatIsNotAMemfd) {
  int pipeFds[2];
  ASSERT_EQ(::pipe2(pipeFds, O_CLOEXEC), 0);
  UniqueFd writeEnd(pipeFds[1]);
  EXPECT_EQ(Region::attach(UniqueFd(pipeFds[0])).error, RegionError::kNotSealed);
  EXPECT_EQ(Region::attach(UniqueFd()).error, RegionError::kNotSealed);
}

TEST(Region, AttachRejectsAFileSmallerThanAHeader) {
  UniqueFd tiny(::memfd_create("tiny", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  ASSERT_EQ(::ftruncate(tiny.get(), 64), 0);
  ASSERT_EQ(::fcntl(tiny.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW), 0);
  EXPECT_EQ(Region::attach(std::move(tiny)).error, RegionError::kTooSmall);
}

struct Corruption {
  const char* name;
  std::function<void(RegionHeader&)> apply;
  RegionError expected;
};

class RegionCorruption : public ::testing::TestWithParam<Corruption> {};

TEST_P(RegionCorruption, AttachRejectsTheCorruptedField) {
  Region created = Region::create(smallConfig());
  RegionHeader h;
  std::memcpy(&h, created.base(), sizeof h);
  GetParam().apply(h);
  std::memcpy(created.base(), &h, sizeof h);  // as a peer with write access could
  AttachResult attached = Region::attach(dupFd(created.fd()));
  EXPECT_EQ(attached.error, GetParam().expected) << toString(attached.error);
  EXPECT_FALSE(attached.region);
}

INSTANTIATE_TEST_SUITE_P(
    EachField, RegionCorruption,
    ::testing::Values(
        Corruption{"magic", [](RegionHeader& h) { h.magic ^= 1; }, RegionError::kBadMagic},
        Corruption{"version", [](RegionHeader& h) { h.version = proto::kRegionVersion + 1; }, RegionError::kBadVersion},
        Corruption{"headerSize", [](RegionHeader& h) { h.headerSize = 64; }, RegionError::kBadHeaderSize},
        Corruption{"requestSlotSize", [](RegionHeader& h) { h.requestSlotSize = 32; }, RegionError::kBadSlotSize},
        Corruption{"completionSlotSize", [](RegionHeader& h) { h.completionSlotSize = 128; },
                   RegionError::kBadSlotSize},
        Corruption{"requestCapacityNotPow2", [](RegionHeader& h) { h.requestCapacity = 9; },
                   RegionError::kBadCapacity},
        Corruption{"requestCapacityZero", [](RegionHeader& h) { h.requestCapacity = 0; }, RegionError::kBadCapacity},
        Corruption{"completionCapacityHuge", [](RegionHeader& h) { h.completionCapacity = 1u << 31; },
                   RegionError::kBadCapacity},
        // Bigger ring than the space before the next part: offsets now overlap.
        Corruption{"requestCapacityTooLargeForLayout", [](RegionHeader& h) { h.requestCapacity = 1024; },
                   RegionError::kBadOffset},
        Corruption{"bufferCountZero", [](RegionHeader& h) { h.bufferCount = 0; }, RegionError::kBadBufferCount},
        Corruption{"bufferCountBeyondFile", [](RegionHeader& h) { h.bufferCount = 5000; }, RegionError::kBadOffset},
        Corruption{"bufferSizeUnaligned", [](RegionHeader& h) { h.bufferSize = 4097; }, RegionError::kBadBufferSize},
        Corruption{"bufferSizeHuge", [](RegionHeader& h) { h.bufferSize = 1u << 30; }, RegionError::kBadBufferSize},
        Corruption{"requestRingOffsetInHeader", [](RegionHeader& h) { h.requestRingOffset = 0; },
                   RegionError::kBadOffset},
        Corruption{"requestRingOffsetMisaligned", [](RegionHeader& h) { h.requestRingOffset += 8; },
                   RegionError::kBadOffset},
        Corruption{"completionRingOverlapsRequestRing",
                   [](RegionHeader& h) { h.completionRingOffset = h.requestRingOffset + 128; },
                   RegionError::kBadOffset},
        Corruption{"completionRingOffsetHuge", [](RegionHeader& h) { h.completionRingOffset = ~0ull - 127; },
                   RegionError::kBadOffset},
        Corruption{"bufferPoolOffsetMisaligned", [](RegionHeader& h) { h.bufferPoolOffset += 128; },
                   RegionError::kBadOffset},
        Corruption{"bufferPoolPastEnd", [](RegionHeader& h) { h.bufferPoolOffset += proto::kPageSize * 4; },
                   RegionError::kBadOffset},
        Corruption{"regionSizeLarger", [](RegionHeader& h) { h.regionSize += proto::kPageSize; },
                   RegionError::kBadRegionSize},
        Corruption{"regionSizeSmaller", [](RegionHeader& h) { h.regionSize -= proto::kPageSize; },
                   RegionError::kBadRegionSize}),
    [](const ::testing::TestParamInfo<Corruption>& info) { return std::string(info.param.name); });

TEST(Region, LaterWritesToTheSharedHeaderDoNotChangeTheValidatedCopy) {
  Region created = Region::create(smallConfig());
  AttachResult attached = Region::attach(dupFd(created.fd()));
  ASSERT_TRUE(attached.region);
  reinterpret_cast<RegionHeader*>(created.base())->bufferCount = 100000;
  EXPECT_EQ(attached.region->header().bufferCount, 4u);
}

TEST(Region, MoveTransfersOwnership) {
  Region a = Region::create(smallConfig());
  std::byte* base = a.base();
  Region b = std::move(a);
  EXPECT_EQ(b.base(), base);
  EXPECT_EQ(a.base(), nullptr);  // NOLINT(bugprone-use-after-move): moved-from is empty by contract
  EXPECT_EQ(a.fd(), -1);
}

// Touches one byte at `at` in a forked child; returns the signal that ended
// it (0 when the child exited normally). The child restores the default
// SIGSEGV action first, as a sanitizer runtime may have installed its own.
int touchInChild(volatile std::byte* at) {
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    std::signal(SIGSEGV, SIG_DFL);
    std::signal(SIGBUS, SIG_DFL);
    *at = std::byte{1};
    _exit(0);
  }
  int status = 0;
  if (pid < 0 || waitpid(pid, &status, 0) != pid) return -1;
  return WIFSIGNALED(status) ? WTERMSIG(status) : 0;
}

TEST(RegionGuardPages, AnAccessJustPastEitherEndFaults) {
  Region owner = Region::create(RegionConfig{8, 8, 2, proto::kMinBufferSize});
  auto a = Region::attach(UniqueFd(::dup(owner.fd())), nullptr, GuardPages::kSurround);
  ASSERT_TRUE(a.region) << toString(a.error);
  Region& r = *a.region;
  EXPECT_EQ(r.guardSize(), proto::kPageSize);
  // The first and last bytes are the region's and writable; one byte
  // outside, either way, is a guard page.
  EXPECT_EQ(touchInChild(r.base()), 0);
  EXPECT_EQ(touchInChild(r.base() + r.size() - 1), 0);
  EXPECT_EQ(touchInChild(r.base() + r.size()), SIGSEGV);
  EXPECT_EQ(touchInChild(r.base() - 1), SIGSEGV);
  // The mapping is the shared memfd: the owner sees what the guarded side writes.
  r.buffer(1)[5] = std::byte{0x5a};
  EXPECT_EQ(owner.buffer(1)[5], std::byte{0x5a});
}

TEST(RegionGuardPages, MovedAndDestroyedReleaseTheWholeReservation) {
  Region owner = Region::create(RegionConfig{8, 8, 2, proto::kMinBufferSize});
  auto a = Region::attach(UniqueFd(::dup(owner.fd())), nullptr, GuardPages::kSurround);
  ASSERT_TRUE(a.region);
  std::byte* start = a.region->base() - proto::kPageSize;
  const std::size_t total = a.region->size() + 2 * proto::kPageSize;
  {
    Region moved = std::move(*a.region);
    EXPECT_EQ(moved.guardSize(), proto::kPageSize);
    EXPECT_EQ(a.region->guardSize(), 0u);
  }
  // Every page of the reservation is unmapped now: msync answers ENOMEM.
  for (std::size_t off = 0; off < total; off += proto::kPageSize) {
    EXPECT_NE(::msync(start + off, proto::kPageSize, MS_ASYNC), 0) << off;
    EXPECT_EQ(errno, ENOMEM);
  }
}

TEST(RegionGuardPages, WithoutTheOptionThereAreNone) {
  Region owner = Region::create(RegionConfig{8, 8, 2, proto::kMinBufferSize});
  auto a = Region::attach(UniqueFd(::dup(owner.fd())));
  ASSERT_TRUE(a.region);
  EXPECT_EQ(a.region->guardSize(), 0u);
}

}  // namespace
}  // namespace ipsec::ring
