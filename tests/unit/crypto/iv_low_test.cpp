// A worker that finds a session's IV grant running low tells the control
// thread without allocating or locking (services/crypto/sessions.h): it sets
// the session's bit and rings an eventfd; the control thread's takeIvLow
// returns each such session once, until keydb's grant re-arms it. Real
// sessions (OpenSSL AES-GCM), real seals, a real eventfd; allocations are
// counted by replacing operator new in this test binary (its own, so that no
// other test runs with the replacement), or under a sanitizer by its
// allocation hook (which sees malloc too).
#include <gtest/gtest.h>
#include <linux/pfkeyv2.h>
#include <poll.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <set>
#include <thread>
#include <vector>

#include "cryptodrv/driver.h"
#include "sessions.h"

namespace {
thread_local bool countAllocations = false;
thread_local std::size_t allocations = 0;
}  // namespace

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define IPSEC_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define IPSEC_SANITIZED 1
#endif
#endif

#ifdef IPSEC_SANITIZED
// The sanitizers own operator new and malloc (a replacement new meets their
// delete); their allocation hook sees both. Declared here as
// <sanitizer/allocator_interface.h> has it (GCC does not install that header).
extern "C" int __sanitizer_install_malloc_and_free_hooks(void (*onMalloc)(const volatile void*, std::size_t),
                                                         void (*onFree)(const volatile void*));
namespace {
void countAllocation(const volatile void*, std::size_t) {
  if (countAllocations) ++allocations;
}
void ignoreFree(const volatile void*) {}  // the runtime installs no hook without both
const int kHookInstalled = __sanitizer_install_malloc_and_free_hooks(countAllocation, ignoreFree);
}  // namespace
#else
// GCC pairs the library's new with our free at inlined call sites; these are
// the matching replacements, so its warning does not apply.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void* operator new(std::size_t n) {
  if (countAllocations) ++allocations;
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
#endif

namespace ipsec::crypto {
namespace {

constexpr std::uint64_t kLow = SessionTable::kIvLowWater;
// One ESP packet: header, 8-byte IV, 64 bytes of payload with its trailer,
// 16-byte ICV (AES-GCM-16).
constexpr std::uint32_t kPacket = 8 + 8 + 64 + 16;

struct Table {
  explicit Table(unsigned workers = 1) : table(drivers, workers) {}
  cryptodrv::DriverRegistry drivers = cryptodrv::DriverRegistry::withDefaultDrivers();
  SessionTable table;

  // An outbound AES-GCM session whose counter starts at 0 below `limit`.
  void outbound(std::uint32_t index, std::uint64_t limit) {
    const std::vector<std::uint8_t> key(20, static_cast<std::uint8_t>(index));  // AES-128 || salt
    cryptodrv::TransformSpec spec;
    spec.encAlg = SADB_X_EALG_AES_GCM_ICV16;
    spec.encKey = key;
    std::uint8_t layout[3];
    ASSERT_EQ(table.create(index, 1, spec, SessionDirection::kOutbound, 0, limit, layout), "");
  }
  proto::CryptoStatus seal(std::uint32_t index, unsigned worker = 0) {
    std::vector<std::uint8_t> packet(kPacket, 0);
    proto::CryptoRequest r{};
    r.session = index;
    r.sessionGeneration = 1;
    r.op = proto::CryptoOp::kSeal;
    r.segmentCount = 1;
    r.length = kPacket;
    std::shared_lock lock(table.mutex());
    return table.process(worker, packet.data(), r);
  }
  bool bellRung() {
    pollfd p{table.ivLowFd(), POLLIN, 0};
    return ::poll(&p, 1, 0) == 1;
  }
};

TEST(IvLow, ASealThatFindsTheGrantLowRingsTheBellAndAllocatesNothing) {
#ifdef IPSEC_SANITIZED
  ASSERT_NE(kHookInstalled, 0) << "the sanitizer's allocation hook is not installed: nothing would be counted";
#endif
  Table t;
  t.outbound(1, kLow + 4);  // seals 0..4 leave kLow+4 .. kLow; the sixth leaves less
  for (int i = 0; i < 5; ++i) ASSERT_EQ(t.seal(1), proto::CryptoStatus::kOk);
  EXPECT_FALSE(t.bellRung()) << "rung before the grant ran low";
  EXPECT_TRUE(t.table.takeIvLow().empty());

  // Build the request and buffer first: only the seal itself is counted.
  std::vector<std::uint8_t> packet(kPacket, 0);
  proto::CryptoRequest r{};
  r.session = 1;
  r.sessionGeneration = 1;
  r.op = proto::CryptoOp::kSeal;
  r.segmentCount = 1;
  r.length = kPacket;
  {
    std::shared_lock lock(t.table.mutex());
    allocations = 0;
    countAllocations = true;
    const auto status = t.table.process(0, packet.data(), r);
    countAllocations = false;
    ASSERT_EQ(status, proto::CryptoStatus::kOk);
  }
  EXPECT_EQ(allocations, 0u) << "the worker allocated while telling the control thread";
  EXPECT_TRUE(t.bellRung());
  const auto low = t.table.takeIvLow();
  ASSERT_EQ(low.size(), 1u);
  EXPECT_EQ(low[0].index, 1u);
  EXPECT_EQ(low[0].generation, 1u);
  EXPECT_EQ(low[0].ivNext, 6u);  // where the counter is now: keydb grants above it
  EXPECT_FALSE(t.bellRung()) << "takeIvLow leaves the bell rung";
}

TEST(IvLow, EachSessionIsAskedForOnceUntilAGrantRearmsIt) {
  Table t;
  t.outbound(3, kLow - 100);  // low from the first seal
  ASSERT_EQ(t.seal(3), proto::CryptoStatus::kOk);
  ASSERT_EQ(t.table.takeIvLow().size(), 1u);
  for (int i = 0; i < 10; ++i) ASSERT_EQ(t.seal(3), proto::CryptoStatus::kOk);
  EXPECT_FALSE(t.bellRung());
  EXPECT_TRUE(t.table.takeIvLow().empty()) << "asked again before keydb answered";

  t.table.grantIv(3, 1, 11 + kLow + 1);  // two seals above the low-water mark
  for (int i = 0; i < 2; ++i) ASSERT_EQ(t.seal(3), proto::CryptoStatus::kOk);
  EXPECT_TRUE(t.table.takeIvLow().empty());
  ASSERT_EQ(t.seal(3), proto::CryptoStatus::kOk);
  const auto low = t.table.takeIvLow();
  ASSERT_EQ(low.size(), 1u) << "the grant did not re-arm the session";
  EXPECT_EQ(low[0].ivNext, 14u);
}

TEST(IvLow, ASessionDestroyedBeforeTheControlThreadLooksAsksNothing) {
  Table t;
  t.outbound(5, 10);
  ASSERT_EQ(t.seal(5), proto::CryptoStatus::kOk);
  t.table.destroy(5, 1);
  t.outbound(5, kLow * 4);  // a new session in the slot that has not run low
  EXPECT_TRUE(t.table.takeIvLow().empty());
}

// Workers set bits in the same words at once: no session is lost.
TEST(IvLow, TwoWorkersMarkingAtOnceLoseNoSession) {
  Table t(2);
  constexpr std::uint32_t kSessions = 200;  // over three 64-bit words
  for (std::uint32_t i = 0; i < kSessions; ++i) t.outbound(i, 1000);
  std::atomic<bool> go{false};
  auto sealAll = [&](unsigned worker) {
    while (!go.load()) std::this_thread::yield();
    for (std::uint32_t i = worker; i < kSessions * 2; i += 2) {
      if (t.seal(i % kSessions, worker) != proto::CryptoStatus::kOk) ADD_FAILURE() << "seal " << i;
    }
  };
  std::thread a(sealAll, 0u), b(sealAll, 1u);
  go = true;
  std::set<std::uint32_t> seen;
  std::size_t asked = 0;
  // The control thread takes while the workers mark, then once after.
  for (int round = 0; round < 50; ++round) {
    for (const auto& low : t.table.takeIvLow()) seen.insert(low.index), ++asked;
  }
  a.join();
  b.join();
  for (const auto& low : t.table.takeIvLow()) seen.insert(low.index), ++asked;
  EXPECT_EQ(seen.size(), kSessions);
  EXPECT_EQ(asked, kSessions) << "a session was asked for twice";
}

}  // namespace
}  // namespace ipsec::crypto
