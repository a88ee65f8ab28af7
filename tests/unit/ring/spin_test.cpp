// The adaptive polling window (lib/ring/spin.h): how long a ring side polls
// after a burst before it sleeps, as a pure function of the recent bursts.
#include "ring/spin.h"

#include <gtest/gtest.h>

namespace ipsec::ring {
namespace {

constexpr std::uint64_t kUs = 1000;
constexpr std::uint64_t kMin = 100 * kUs, kMax = 300 * kUs;

TEST(SpinWindow, NoHistoryPollsTheMinimum) {
  SpinWindow w(kMin, kMax);
  EXPECT_EQ(w.windowNs(), kMin);
  w.burstAt(1'000'000);
  EXPECT_EQ(w.windowNs(), kMin);  // one burst: no gap yet
}

TEST(SpinWindow, NearGapsStretchTheWindowByHalf) {
  SpinWindow w(kMin, kMax);
  std::uint64_t t = 1'000'000;
  w.burstAt(t);
  w.burstAt(t += 150 * kUs);
  EXPECT_EQ(w.windowNs(), 225 * kUs);
  w.burstAt(t += 10 * kUs);  // the largest near gap of the history counts
  EXPECT_EQ(w.windowNs(), 225 * kUs);
}

TEST(SpinWindow, NeverLongerThanTheMaximum) {
  SpinWindow w(kMin, kMax);
  std::uint64_t t = 1'000'000;
  w.burstAt(t);
  w.burstAt(t += 290 * kUs);  // near, but 1.5x is beyond the bound
  EXPECT_EQ(w.windowNs(), kMax);
}

TEST(SpinWindow, LineRateKeepsTheMinimumAboveItsGaps) {
  SpinWindow w(kMin, kMax);
  std::uint64_t t = 1'000'000;
  for (int i = 0; i < 100; ++i) w.burstAt(t += 5 * kUs);
  EXPECT_EQ(w.windowNs(), kMin);  // > every gap: a busy flow never waits on a doorbell
}

TEST(SpinWindow, AnIdleSpellForgetsTheNearGaps) {
  SpinWindow w(kMin, kMax);
  std::uint64_t t = 1'000'000;
  w.burstAt(t);
  w.burstAt(t += 200 * kUs);
  EXPECT_EQ(w.windowNs(), kMax);
  // Pings a second apart: once the history holds only far gaps, sleep at once.
  for (std::size_t i = 0; i + 1 < SpinWindow::kHistory; ++i) {
    w.burstAt(t += 1'000'000 * kUs);
    EXPECT_EQ(w.windowNs(), kMax) << i;
  }
  w.burstAt(t += 1'000'000 * kUs);
  EXPECT_EQ(w.windowNs(), kMin);
}

TEST(SpinWindow, AClockThatStepsBackIsNoGap) {
  SpinWindow w(kMin, kMax);
  w.burstAt(5'000'000);
  w.burstAt(4'000'000);
  EXPECT_EQ(w.windowNs(), kMin);
  w.burstAt(4'000'000 + 120 * kUs);  // measured from the later reading
  EXPECT_EQ(w.windowNs(), 180 * kUs);
}

TEST(SpinWindow, AMaximumBelowTheMinimumIsTheMinimum) {
  SpinWindow w(kMin, kMin / 2);
  std::uint64_t t = 1'000'000;
  w.burstAt(t);
  w.burstAt(t += 30 * kUs);
  EXPECT_EQ(w.windowNs(), kMin);
}

}  // namespace
}  // namespace ipsec::ring
