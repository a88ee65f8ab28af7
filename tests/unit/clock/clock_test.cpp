// lib/clock: the monotonic readings agree with each other in their units,
// and the wall-clock ones with the epoch seconds of CLOCK_REALTIME and with
// gmtime_r (which the sandboxed processes may not call: it opens
// /etc/localtime). Not time(2): it reads the coarse clock, a tick behind, so
// a second boundary could fall between it and a precise reading.
#include "clock/clock.h"

#include <gtest/gtest.h>
#include <time.h>

namespace ipsec::clock {
namespace {

time_t realtimeSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return ts.tv_sec;
}

TEST(Clock, MonotonicMillisecondsAreTheNanosecondsScaled) {
  const std::uint64_t beforeNs = monotonicNs();
  const std::uint64_t ms = monotonicMs();
  const std::uint64_t afterNs = monotonicNs();
  EXPECT_LE(beforeNs / 1000000, ms);
  EXPECT_LE(ms, afterNs / 1000000);
  EXPECT_LE(beforeNs, afterNs);
}

TEST(Clock, UnixSecondsAreEpochSeconds) {
  const auto before = static_cast<std::uint64_t>(realtimeSeconds());
  const std::uint64_t s = unixSeconds();
  const auto after = static_cast<std::uint64_t>(realtimeSeconds());
  EXPECT_GT(s, 1600000000u);  // 2020: the wall clock, not the monotonic one
  EXPECT_LE(before, s);
  EXPECT_LE(s, after);
}

TEST(Clock, UtcTimeOfDayIsGmtimesHourMinuteAndSecond) {
  // Read the second on both sides; retry (a bounded number of times) if a
  // second boundary fell between them.
  for (int attempt = 0; attempt < 5; ++attempt) {
    const time_t before = realtimeSeconds();
    const TimeOfDay t = utcTimeOfDay();
    if (realtimeSeconds() != before) continue;
    tm g{};
    ASSERT_NE(gmtime_r(&before, &g), nullptr);
    EXPECT_EQ(t.hour, static_cast<unsigned>(g.tm_hour));
    EXPECT_EQ(t.minute, static_cast<unsigned>(g.tm_min));
    EXPECT_EQ(t.second, static_cast<unsigned>(g.tm_sec));
    EXPECT_LT(t.millisecond, 1000u);
    return;
  }
  FAIL() << "every attempt straddled a second boundary";
}

}  // namespace
}  // namespace ipsec::clock
