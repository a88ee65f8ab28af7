// Unit tests of the anti-replay window (lib/esp/replay.h): duplicates, the
// left edge, sliding, a 4096 window under heavy reordering checked against a
// simple reference model, and ESN across the 2^32 boundary (RFC 4303 A2).
#include "esp/replay.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>
#include <stdexcept>

namespace ipsec::esp {
namespace {

// check() then accept(), as the forwarder does around the crypto round trip.
bool receive(ReplayWindow& w, uint32_t seqLow) {
  const auto seq = w.check(seqLow);
  return seq && w.accept(*seq);
}

TEST(ReplayWindow, RejectsUnsupportedSizesInsteadOfClipping) {
  for (uint32_t bad : {0u, 1u, 31u, 48u, 4100u, 65568u}) {
    EXPECT_FALSE(ReplayWindow::make(bad, false)) << bad;
    EXPECT_THROW(ReplayWindow(bad, false), std::invalid_argument) << bad;
  }
  for (uint32_t good : {32u, 96u, 1024u, 4096u, 65536u}) {
    auto w = ReplayWindow::make(good, true);
    ASSERT_TRUE(w) << good;
    EXPECT_EQ(w->size(), good);
  }
}

TEST(ReplayWindow, NeverAcceptsSequenceNumberZero) {
  ReplayWindow w(64, false);
  EXPECT_FALSE(w.check(0));
  EXPECT_FALSE(w.accept(0));
  ReplayWindow e(64, true);
  EXPECT_FALSE(e.check(0)) << "full sequence number 0 is never sent with ESN either";
}

TEST(ReplayWindow, AcceptsFirstPacketAndRejectsItsDuplicate) {
  ReplayWindow w(32, false);
  EXPECT_EQ(w.check(1), 1u);
  EXPECT_TRUE(w.accept(1));
  EXPECT_FALSE(w.check(1));
  EXPECT_FALSE(w.accept(1));
  EXPECT_EQ(w.highest(), 1u);
}

TEST(ReplayWindow, RejectsDuplicateAtLeftEdge) {
  ReplayWindow w(32, false);
  ASSERT_TRUE(receive(w, 100));
  ASSERT_TRUE(receive(w, 69));  // 100 - 32 + 1: the left edge
  EXPECT_FALSE(w.check(69));
  EXPECT_FALSE(w.check(68)) << "one left of the window is too old";
  EXPECT_TRUE(w.check(70));
}

TEST(ReplayWindow, AcceptRechecksAfterTheWindowMovedMeanwhile) {
  ReplayWindow w(32, false);
  ASSERT_TRUE(receive(w, 10));
  const auto pending = w.check(5);  // in flight to the broker
  ASSERT_TRUE(pending);
  ASSERT_TRUE(receive(w, 5));       // the same number, accepted first
  EXPECT_FALSE(w.accept(*pending));
  const auto old = w.check(9);
  ASSERT_TRUE(old);
  ASSERT_TRUE(receive(w, 100));     // window slides past 9
  EXPECT_FALSE(w.accept(*old));
}

TEST(ReplayWindow, SlidingForgetsBitsOfOldPositionsThatShareASlot) {
  ReplayWindow w(64, false);
  for (uint32_t s = 1; s <= 64; ++s) ASSERT_TRUE(receive(w, s));
  // Jump far: bitmap slots of 1..64 are reused for numbers near the new top.
  ASSERT_TRUE(receive(w, 1000));
  for (uint32_t s = 937; s < 1000; ++s) EXPECT_TRUE(receive(w, s)) << s;
  EXPECT_FALSE(w.check(936));
  // A jump of exactly one ring length.
  ASSERT_TRUE(receive(w, 1000 + 128));
  EXPECT_TRUE(w.check(1000 + 127));
  EXPECT_TRUE(w.check(1000 + 64 + 1));
  EXPECT_FALSE(w.check(1000 + 64));
}

TEST(ReplayWindow, RejectsLargeNumbersWithoutEsn) {
  ReplayWindow w(32, false);
  EXPECT_FALSE(w.accept(uint64_t{1} << 32));
  EXPECT_EQ(w.check(UINT32_MAX), uint64_t{UINT32_MAX});
}

// A reference model that keeps every accepted number: obviously right, slow.
struct ModelWindow {
  uint64_t size;
  uint64_t top = 0;
  std::set<uint64_t> seen{};
  bool receive(uint64_t seq) {
    if (seq == 0 || (seq <= top && top - seq >= size) || seen.count(seq)) return false;
    seen.insert(seq);
    top = std::max(top, seq);
    return true;
  }
};

// Mostly in order with reordering up to 5000 back, duplicates and occasional
// jumps forward, from `start`; every verdict must match the model's.
void agreeWithModel(bool esn, uint64_t start) {
  ReplayWindow w(4096, esn);
  ModelWindow model{4096};
  std::mt19937 rng(7);
  uint64_t next = start;
  for (int i = 0; i < 200000; ++i) {
    uint64_t seq;
    const uint32_t r = rng() % 100;
    if (r < 70) {
      seq = next++;
    } else if (r < 98) {
      const uint64_t back = 1 + rng() % 5000;
      seq = next > back ? next - back : 1;
    } else {
      next += rng() % 9000;
      seq = next;
    }
    // With ESN a number far left of the window is inferred to lie in the
    // next 2^32 subspace (RFC 4303 A2.1); the ICV, computed over the true
    // high half, then fails, so the packet is dropped before accept().
    const auto inferred = w.check(static_cast<uint32_t>(seq));
    const bool ours = inferred && *inferred == seq && w.accept(*inferred);
    ASSERT_EQ(ours, model.receive(seq)) << "packet " << i << " seq " << seq;
    ASSERT_EQ(w.highest(), model.top);
  }
}

TEST(ReplayWindow, Size4096AgreesWithReferenceModelUnderReordering) {
  agreeWithModel(false, 1);
  agreeWithModel(true, 1);
}

TEST(ReplayWindow, Size4096WithEsnAgreesWithReferenceModelAcrossTheWrap) {
  // First packet 2^32 - 100000: the run crosses into the second subspace.
  agreeWithModel(true, (uint64_t{1} << 32) - 100000);
}

TEST(ReplayWindow, EsnInfersHighHalfAcrossTheWrap) {
  ReplayWindow w(64, true);
  // Bring the window right below 2^32.
  const uint64_t base = (uint64_t{1} << 32) - 10;
  ASSERT_TRUE(w.accept(1));
  ASSERT_TRUE(w.accept(base));
  // Low halves just above 0 belong to the next subspace.
  EXPECT_EQ(w.check(3), (uint64_t{1} << 32) + 3);
  // Low halves inside the window stay in the current one.
  EXPECT_EQ(w.check(static_cast<uint32_t>(base - 20)), base - 20);
  ASSERT_TRUE(receive(w, 5));
  EXPECT_EQ(w.highest(), (uint64_t{1} << 32) + 5);
  // Now the window straddles: its left part is in subspace 0 (case B).
  EXPECT_EQ(w.check(static_cast<uint32_t>(base - 1)), base - 1);
  EXPECT_FALSE(w.check(static_cast<uint32_t>(base))) << "already seen";
  EXPECT_EQ(w.check(4), (uint64_t{1} << 32) + 4);
  EXPECT_FALSE(w.check(5));
  // Case B: a low half between top and the window's bottom is ahead of top.
  EXPECT_EQ(w.check(1000), (uint64_t{1} << 32) + 1000);
}

TEST(ReplayWindow, EsnMovesOnOnceTheWindowLeftTheOldSubspace) {
  ReplayWindow w(32, true);
  const uint64_t two32 = uint64_t{1} << 32;
  ASSERT_TRUE(w.accept(two32 + 100));
  // Window [2^32 + 69, 2^32 + 100]: case A; a low half below 69 is the next wrap.
  EXPECT_EQ(w.check(68), 2 * two32 + 68);
  EXPECT_EQ(w.check(70), two32 + 70);
  EXPECT_EQ(w.check(UINT32_MAX), two32 + UINT32_MAX);
}

TEST(ReplayWindow, EsnRejectsNumbersBeforeTheFirstSubspace) {
  ReplayWindow w(64, true);
  ASSERT_TRUE(w.accept(10));
  // The window [-53, 10] straddles below zero: these would need high half -1.
  EXPECT_FALSE(w.check(UINT32_MAX));
  EXPECT_FALSE(w.check(UINT32_MAX - 52));
  EXPECT_EQ(w.check(11), 11u);
}

}  // namespace
}  // namespace ipsec::esp
