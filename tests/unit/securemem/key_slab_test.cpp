// lib/securemem's KeySlab: slots come from locked chunks by size class, are
// reused after free, are wiped when freed (read back through the test hook),
// and a slab that reaches its budget answers nullptr instead of crashing.
#include "securemem/key_slab.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <set>
#include <vector>

namespace ipsec::securemem {
namespace {

TEST(KeySlab, HandsOutDistinctZeroedAlignedSlots) {
  KeySlab slab;
  std::set<std::uint8_t*> seen;
  for (int i = 0; i < 100; ++i) {
    std::uint8_t* p = slab.allocate(20);
    ASSERT_NE(p, nullptr);
    EXPECT_TRUE(slab.isZeroForTest(p, 32));
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(p) % 32, 0u);  // 20 bytes: the 32-byte class
    EXPECT_TRUE(seen.insert(p).second);
    std::memset(p, 0xa5, 20);
  }
  EXPECT_EQ(slab.slotsInUse(), 100u);
  EXPECT_EQ(slab.lockedBytes(), KeySlab::kDefaultChunkBytes);  // 100 x 32 B fit one chunk
  for (auto* p : seen) slab.deallocate(p, 20);
  EXPECT_EQ(slab.slotsInUse(), 0u);
}

TEST(KeySlab, WipesASlotWhenItIsFreed) {
  KeySlab slab;
  std::uint8_t* p = slab.allocate(36);
  ASSERT_NE(p, nullptr);
  std::memset(p, 0x5c, 36);
  ASSERT_FALSE(slab.isZeroForTest(p, 36));
  slab.deallocate(p, 36);
  EXPECT_TRUE(slab.isZeroForTest(p, 64));  // the whole 64-byte slot
}

TEST(KeySlab, ReusesAFreedSlotOfTheSameClass) {
  KeySlab slab;
  std::uint8_t* a = slab.allocate(16);
  std::uint8_t* b = slab.allocate(16);
  slab.deallocate(a, 16);
  EXPECT_EQ(slab.allocate(10), a);  // 10 and 16 bytes share the 16-byte class
  std::uint8_t* big = slab.allocate(512);
  EXPECT_NE(big, nullptr);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(big) % 512, 0u);
  EXPECT_EQ(slab.lockedBytes(), 2 * KeySlab::kDefaultChunkBytes);  // one chunk per class in use
  slab.deallocate(b, 16);
  slab.deallocate(a, 10);
  slab.deallocate(big, 512);
}

TEST(KeySlab, AnswersNullptrWhenItsBudgetIsSpentAndRecoversAfterFrees) {
  KeySlab slab({.chunkBytes = 4096, .maxBytes = 8192});
  std::vector<std::uint8_t*> slots;
  for (;;) {
    std::uint8_t* p = slab.allocate(64);
    if (p == nullptr) break;
    slots.push_back(p);
    ASSERT_LT(slots.size(), 1000u) << "budget not enforced";
  }
  EXPECT_EQ(slots.size(), 2u * 4096 / 64);
  EXPECT_EQ(slab.lockedBytes(), 8192u);
  EXPECT_EQ(slab.allocate(16), nullptr);  // another class needs a chunk too
  slab.deallocate(slots.back(), 64);
  slots.pop_back();
  EXPECT_NE(slab.allocate(64), nullptr);
}

TEST(KeySlab, ServesLargeRequestsFromSodiumMalloc) {
  KeySlab slab;
  std::uint8_t* p = slab.allocate(KeySlab::kMaxSlot + 1);
  ASSERT_NE(p, nullptr);
  EXPECT_TRUE(slab.isZeroForTest(p, KeySlab::kMaxSlot + 1));
  EXPECT_EQ(slab.lockedBytes(), 0u);
  EXPECT_EQ(slab.slotsInUse(), 1u);
  slab.deallocate(p, KeySlab::kMaxSlot + 1);
  EXPECT_EQ(slab.slotsInUse(), 0u);
}

TEST(KeySlab, WipeAllClearsSlotsStillInUse) {
  KeySlab slab;
  std::uint8_t* p = slab.allocate(32);
  std::memset(p, 0xff, 32);
  slab.wipeAll();
  EXPECT_TRUE(slab.isZeroForTest(p, 32));
  slab.deallocate(p, 32);
}

TEST(KeySlab, ProcessSlabIsOneInstance) {
  EXPECT_EQ(&KeySlab::process(), &KeySlab::process());
  std::uint8_t* p = KeySlab::process().allocate(8);
  ASSERT_NE(p, nullptr);
  KeySlab::process().deallocate(p, 8);
}

}  // namespace
}  // namespace ipsec::securemem
