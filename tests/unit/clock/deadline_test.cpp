// Timers that fire only when something is due (lib/clock/deadline.h): the
// earliest deadline, and the wait until it with its floor and its cap.
#include "clock/deadline.h"

#include <gtest/gtest.h>

namespace ipsec::clock {
namespace {

TEST(NextDeadline, NothingConsideredIsNoDeadline) {
  NextDeadline next;
  EXPECT_FALSE(next.at());
}

TEST(NextDeadline, TheEarliestWinsWhateverTheOrder) {
  NextDeadline next;
  next.consider(30);
  next.consider(10);
  next.consider(20);
  ASSERT_TRUE(next.at());
  EXPECT_EQ(*next.at(), 10u);
  next.consider(0);  // already due
  EXPECT_EQ(*next.at(), 0u);
}

constexpr std::uint64_t kS = 1000000000u, kMs = 1000000u;

TEST(MsUntilUnixSecond, WaitsUntilTheWallClockReachesTheWholeSecond) {
  // 0.25 s before second 100: 250 ms; a part of a ms rounds up, never early.
  EXPECT_EQ(msUntilUnixSecond(100, 100 * kS - 250 * kMs, 10, 60000), 250u);
  EXPECT_EQ(msUntilUnixSecond(100, 100 * kS - 250 * kMs - 1, 10, 60000), 251u);
  EXPECT_EQ(msUntilUnixSecond(100, 95 * kS, 10, 60000), 5000u);
}

TEST(MsUntilUnixSecond, ADeadlineDueOrPastWaitsTheFloor) {
  EXPECT_EQ(msUntilUnixSecond(100, 100 * kS, 10, 60000), 10u);
  EXPECT_EQ(msUntilUnixSecond(100, 500 * kS, 10, 60000), 10u);
}

TEST(MsUntilUnixSecond, AFarDeadlineWaitsAtMostTheCap) {
  EXPECT_EQ(msUntilUnixSecond(100000, 100 * kS, 10, 60000), 60000u);
  // No overflow: this second in ns would wrap to 0.29 s, a deadline long past.
  EXPECT_EQ(msUntilUnixSecond(18446744074u, 100 * kS, 10, 60000), 60000u);
  EXPECT_EQ(msUntilUnixSecond(UINT64_MAX, 100 * kS, 10, 60000), 60000u);
}

TEST(MsUntil, TheSameOnOneClockInMs) {
  EXPECT_EQ(msUntil(21000, 1000, 1000, 3600000), 20000u);
  EXPECT_EQ(msUntil(1500, 1000, 1000, 3600000), 1000u);  // never more often than the floor
  EXPECT_EQ(msUntil(0, 1000, 1000, 3600000), 1000u);
  EXPECT_EQ(msUntil(UINT64_MAX, 0, 1000, 3600000), 3600000u);
  EXPECT_EQ(msUntil(5, 0, 10, 2), 10u);  // a cap below the floor is the floor
}

}  // namespace
}  // namespace ipsec::clock
