// lib/securemem's SecureBytes, the one key owner of keydb and the crypto
// drivers: it copies the key into a slab slot, and the slot is wiped (read
// back through KeySlab's test hook: the slab never unmaps a chunk) when the
// value is destroyed, reset or assigned over; a move hands the slot on.
#include "securemem/secure_bytes.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <utility>
#include <vector>

#include "securemem/key_slab.h"

namespace ipsec::securemem {
namespace {

std::vector<std::uint8_t> key(std::size_t n, std::uint8_t seed) {
  std::vector<std::uint8_t> k(n);
  std::iota(k.begin(), k.end(), seed);
  return k;
}

KeySlab& slab() { return KeySlab::process(); }

TEST(SecureBytes, CopiesTheKeyIntoASlabSlotOfItsOwn) {
  const auto bytes = key(36, 9);
  const std::size_t before = slab().slotsInUse();
  SecureBytes secure(bytes);
  ASSERT_EQ(secure.size(), 36u);
  EXPECT_NE(secure.data(), bytes.data());
  EXPECT_TRUE(std::equal(bytes.begin(), bytes.end(), secure.data()));
  EXPECT_EQ(secure.bytes().size(), 36u);
  EXPECT_EQ(slab().slotsInUse(), before + 1);
}

TEST(SecureBytes, WipesItsSlotWhenDestroyed) {
  const std::uint8_t* p = nullptr;
  {
    SecureBytes secure(key(32, 1));
    p = secure.data();
    ASSERT_FALSE(slab().isZeroForTest(p, 32));
  }
  EXPECT_TRUE(slab().isZeroForTest(p, 32));
}

TEST(SecureBytes, WipesTheOldKeyWhenAssignedOver) {
  SecureBytes a(key(32, 1));
  const std::uint8_t* old = a.data();
  SecureBytes b(key(32, 100));
  const std::uint8_t* kept = b.data();
  const std::size_t before = slab().slotsInUse();
  a = std::move(b);
  EXPECT_TRUE(slab().isZeroForTest(old, 32));
  EXPECT_EQ(a.data(), kept);
  EXPECT_EQ(a.data()[0], 100);
  EXPECT_EQ(slab().slotsInUse(), before - 1);
}

TEST(SecureBytes, AMoveHandsTheSlotOnAndLeavesNoKeyBehind) {
  SecureBytes secure(key(20, 5));
  const std::uint8_t* p = secure.data();
  const std::size_t before = slab().slotsInUse();
  SecureBytes moved(std::move(secure));
  EXPECT_EQ(secure.data(), nullptr);  // NOLINT(bugprone-use-after-move): the moved-from state is the point
  EXPECT_EQ(secure.size(), 0u);
  EXPECT_EQ(moved.data(), p);
  EXPECT_EQ(moved.size(), 20u);
  EXPECT_EQ(slab().slotsInUse(), before);
  EXPECT_FALSE(slab().isZeroForTest(p, 20));
}

TEST(SecureBytes, ResetWipesAndEmpties) {
  SecureBytes secure(key(48, 7));
  const std::uint8_t* p = secure.data();
  secure.reset();
  EXPECT_TRUE(slab().isZeroForTest(p, 48));
  EXPECT_EQ(secure.data(), nullptr);
  EXPECT_EQ(secure.size(), 0u);
  secure.reset();  // twice is harmless
}

TEST(SecureBytes, AnEmptyKeyTakesNoSlotButIsNotNull) {
  const std::size_t before = slab().slotsInUse();
  SecureBytes empty(std::span<const std::uint8_t>{});
  EXPECT_EQ(empty.size(), 0u);
  EXPECT_NE(empty.data(), nullptr);  // OpenSSL would read nullptr as "keep the old key"
  EXPECT_EQ(slab().slotsInUse(), before);
  SecureBytes none;
  EXPECT_EQ(none.data(), nullptr);
  empty = std::move(none);
  EXPECT_EQ(slab().slotsInUse(), before);
}

TEST(SecureBytes, AKeyBeyondTheLargestSlotStillWipes) {
  const std::size_t n = KeySlab::kMaxSlot + 1;  // from sodium_malloc, not a chunk
  SecureBytes big(key(n, 3));
  EXPECT_EQ(big.size(), n);
  EXPECT_EQ(big.data()[n - 1], static_cast<std::uint8_t>(3 + n - 1));
  big.reset();
  EXPECT_EQ(big.data(), nullptr);
}

}  // namespace
}  // namespace ipsec::securemem
