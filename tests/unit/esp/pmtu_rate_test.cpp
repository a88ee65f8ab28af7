// lib/esp/pmtu's IcmpRateLimit: the forwarder's 100 ICMP errors a second
// (pmtu.cpp sendTooBig), driven by a clock the test sets, so each boundary
// of the second is checked exactly rather than by sleeping.
#include <gtest/gtest.h>

#include "esp/pmtu.h"

namespace ipsec::esp {
namespace {

constexpr uint32_t kPerSecond = 100;

// Sends as a caller would (available, then take) and returns how many went.
uint32_t sendBurst(IcmpRateLimit& limit, uint64_t nowMs, uint32_t tries) {
  uint32_t sent = 0;
  for (uint32_t i = 0; i < tries; ++i) {
    if (!limit.available(nowMs)) continue;
    limit.take();
    ++sent;
  }
  return sent;
}

TEST(IcmpRateLimit, LetsAHundredThroughInOneSecondAndRefusesTheHundredAndFirst) {
  IcmpRateLimit limit(kPerSecond);
  EXPECT_EQ(sendBurst(limit, 5'000, kPerSecond), kPerSecond);
  EXPECT_FALSE(limit.available(5'000));
  EXPECT_FALSE(limit.available(5'999));
}

TEST(IcmpRateLimit, AFloodGetsAHundredASecondWhateverItsSize) {
  IcmpRateLimit limit(kPerSecond);
  EXPECT_EQ(sendBurst(limit, 7'000, 100'000), kPerSecond);
  EXPECT_EQ(sendBurst(limit, 7'500, 100'000), 0u);
}

TEST(IcmpRateLimit, ANewSecondStartsAfresh) {
  IcmpRateLimit limit(kPerSecond);
  EXPECT_EQ(sendBurst(limit, 9'999, 150), kPerSecond);
  // The budget is per second of the clock, not per sliding 1000 ms.
  EXPECT_EQ(sendBurst(limit, 10'000, 150), kPerSecond);
  EXPECT_EQ(sendBurst(limit, 12'345, 150), kPerSecond);
}

TEST(IcmpRateLimit, AMessageNotSentTakesNothing) {
  IcmpRateLimit limit(kPerSecond);
  // Asked a thousand times, but none was due (built as 0 bytes, not taken).
  for (int i = 0; i < 1000; ++i) EXPECT_TRUE(limit.available(3'000));
  EXPECT_EQ(sendBurst(limit, 3'001, 150), kPerSecond);
}

TEST(IcmpRateLimit, ALimitOfZeroSendsNothing) {
  IcmpRateLimit limit(0);
  EXPECT_EQ(sendBurst(limit, 1'000, 10), 0u);
}

}  // namespace
}  // namespace ipsec::esp
