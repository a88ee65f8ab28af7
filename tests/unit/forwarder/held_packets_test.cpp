// The forwarder's queue of packets waiting for an SA (services/forwarder/
// held_packets.h): bounded in size and in time, re-run in order when an SA
// arrives, without allocating.
#include "held_packets.h"

#include <gtest/gtest.h>

#include <vector>

namespace ipsec::forwarder {
namespace {

struct Pool {};
using Held = HeldPackets<Pool>;

TEST(HeldPackets, HoldsUpToItsBoundThenRefuses) {
  Pool pool;
  Held held;
  for (std::uint32_t i = 0; i < Held::kMax; ++i) EXPECT_TRUE(held.hold({&pool, i, 100, 1000}, 1000));
  EXPECT_FALSE(held.hold({&pool, 99, 100, 1000}, 1000));
  EXPECT_EQ(held.size(), Held::kMax);
}

TEST(HeldPackets, APacketThatWaitedTooLongIsNotHeldAgain) {
  Pool pool;
  Held held;
  EXPECT_TRUE(held.hold({&pool, 1, 100, 1000}, 1000 + Held::kHoldMs));
  EXPECT_FALSE(held.hold({&pool, 2, 100, 1000}, 1001 + Held::kHoldMs));
}

TEST(HeldPackets, ExpiryTakesOutOnlyThePacketsPastTheirWaitInOrder) {
  Pool pool;
  Held held;
  ASSERT_TRUE(held.hold({&pool, 1, 100, 1000}, 1000));
  ASSERT_TRUE(held.hold({&pool, 2, 100, 3000}, 3000));
  ASSERT_TRUE(held.hold({&pool, 3, 100, 1500}, 3000));
  std::vector<std::uint32_t> dropped;
  held.expire(1600 + Held::kHoldMs, [&](const Held::Packet& p) { dropped.push_back(p.buffer); });
  EXPECT_EQ(dropped, (std::vector<std::uint32_t>{1, 3}));
  ASSERT_EQ(held.size(), 1u);
  std::vector<std::uint32_t> left;
  held.rerun([&](const Held::Packet& p) { left.push_back(p.buffer); });
  EXPECT_EQ(left, std::vector<std::uint32_t>{2});
}

TEST(HeldPackets, ARerunHandsEachPacketOnceAndMayHoldItAgain) {
  Pool pool;
  Held held;
  for (std::uint32_t i = 0; i < 5; ++i) ASSERT_TRUE(held.hold({&pool, i, 100 + i, 1000}, 1000));
  std::vector<std::uint32_t> seen;
  held.rerun([&](const Held::Packet& p) {
    seen.push_back(p.buffer);
    if (p.buffer % 2 == 0) {
      EXPECT_TRUE(held.hold(p, 2000));  // still no SA: back in the queue
    }
  });
  EXPECT_EQ(seen, (std::vector<std::uint32_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(held.size(), 3u);
  // The re-held packets kept their first hold time: they expire with it.
  std::size_t expired = 0;
  held.expire(1001 + Held::kHoldMs, [&](const Held::Packet&) { ++expired; });
  EXPECT_EQ(expired, 3u);
  EXPECT_TRUE(held.empty());
}

}  // namespace
}  // namespace ipsec::forwarder
