// keydb's SAD: the grants that keep nonces unique across restarts.
#include "sad.h"

#include <gtest/gtest.h>
#include <linux/pfkeyv2.h>
#include <sodium.h>

#include <set>
#include <string>
#include <tuple>

namespace ipsec::keydb {
namespace {

const std::string kDst("\xc0\x00\x02\x02", 4);        // 192.0.2.2
const std::string kNewSrc("\xc6\x33\x64\x01", 4);     // 198.51.100.1
const std::string kNewDst("\xc6\x33\x64\x02", 4);     // 198.51.100.2

std::string raw(capnp::Data::Reader d) { return std::string(d.asChars().begin(), d.size()); }

class SadTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_GE(sodium_init(), 0); }

  Sa& add(std::uint32_t spi, bool esn = false, const std::string& dst = kDst) {
    capnp::MallocMessageBuilder b;
    auto p = b.initRoot<proto::SaParams>();
    p.setSatype(SADB_SATYPE_ESP);
    p.setSpi(spi);
    const capnp::byte src[4] = {192, 0, 2, 1};
    p.setSrc(capnp::Data::Reader(src, 4));
    p.setDst(capnp::Data::Reader(reinterpret_cast<const capnp::byte*>(dst.data()), dst.size()));
    p.setEsn(esn);
    p.setState(SADB_SASTATE_MATURE);
    return sad_.create(p.asReader());
  }

  Sad sad_;
};

TEST_F(SadTest, FindsAnSaByNameAndByRef) {
  Sa& sa = add(0x1001);
  EXPECT_EQ(sad_.find(sa.key()), &sa);
  EXPECT_EQ(sad_.find(sa.ref), &sa);
  EXPECT_EQ(sad_.size(), 1u);
}

TEST_F(SadTest, AReusedSlotGetsANewGeneration) {
  SaRef old = add(0x1001).ref;
  sad_.erase(old);
  Sa& fresh = add(0x1002);
  EXPECT_EQ(fresh.ref.index, old.index);
  EXPECT_NE(fresh.ref.generation, old.generation);
  EXPECT_EQ(sad_.find(old), nullptr);
}

TEST_F(SadTest, ADetachedSaKeepsItsSlotUntilReleased) {
  const SaRef old = add(0x1001).ref;
  auto held = sad_.detach(old);
  ASSERT_TRUE(held);
  EXPECT_EQ(sad_.find(old), nullptr);
  Sa& b = add(0x1001);
  EXPECT_NE(b.ref.index, old.index);  // the old SA's session and entry still live there
  held.reset();
  sad_.releaseSlot(old.index);
  Sa& c = add(0x1002);
  EXPECT_EQ(c.ref.index, old.index);
  EXPECT_NE(c.ref.generation, old.generation);
}

TEST_F(SadTest, ADetachedSaComesBackUnderItsRefAndNameWithEverythingItHad) {
  Sa& sa = add(0x1001);
  sa.seqGranted = 77;
  sa.usageBase = {1000, 10};
  const SaRef ref = sa.ref;
  auto held = sad_.detach(ref);
  Sa& successor = add(0x1001);  // the UPDATE's SA takes the name meanwhile
  EXPECT_FALSE(sad_.reattach(held));  // not while the name is held
  ASSERT_TRUE(held);
  sad_.erase(successor.ref);
  ASSERT_TRUE(sad_.reattach(held));
  EXPECT_FALSE(held);
  Sa* back = sad_.find(ref);
  ASSERT_NE(back, nullptr);
  EXPECT_EQ(sad_.find(back->key()), back);
  EXPECT_EQ(back->seqGranted, 77u);
  EXPECT_EQ(back->usageBase.bytes, 1000u);
  EXPECT_EQ(sad_.size(), 1u);
}

TEST_F(SadTest, SequenceGrantsNeverOverlapAcrossRestarts) {
  Sa& sa = add(0x1001);
  auto [n1, l1] = sad_.grantSeqFromScratch(sa);
  EXPECT_EQ(n1, 1u);
  std::uint64_t l2 = sad_.extendSeq(sa);
  EXPECT_GT(l2, l1);
  // A restarted forwarder starts above everything granted before.
  auto [n3, l3] = sad_.grantSeqFromScratch(sa);
  EXPECT_EQ(n3, l2);
  EXPECT_GT(l3, n3);
}

TEST_F(SadTest, WithoutEsnNoGrantReachesTwoToTheThirtyTwo) {
  Sa& sa = add(0x1001);
  sa.seqGranted = (std::uint64_t{1} << 32) - 10;
  auto [next, limit] = sad_.grantSeqFromScratch(sa);
  EXPECT_EQ(next, (std::uint64_t{1} << 32) - 10);
  EXPECT_EQ(limit, std::uint64_t{1} << 32);
  EXPECT_EQ(sad_.extendSeq(sa), std::uint64_t{1} << 32);
  // Exhausted: the next grant is empty.
  auto [n2, l2] = sad_.grantSeqFromScratch(sa);
  EXPECT_EQ(n2, l2);
}

TEST_F(SadTest, WithEsnGrantsGoPastTwoToTheThirtyTwo) {
  Sa& sa = add(0x1001, true);
  sa.seqGranted = (std::uint64_t{1} << 32) - 10;
  auto [next, limit] = sad_.grantSeqFromScratch(sa);
  EXPECT_GT(limit, std::uint64_t{1} << 32);
  EXPECT_LT(next, limit);
}

TEST_F(SadTest, IvGrantsNeverOverlap) {
  Sa& sa = add(0x1001);
  auto [a, la] = sad_.grantIvFromScratch(sa);
  std::uint64_t lb = sad_.extendIv(sa);
  auto [c, lc] = sad_.grantIvFromScratch(sa);  // a restarted broker
  EXPECT_GT(la, a);
  EXPECT_GT(lb, la);
  EXPECT_EQ(c, lb);
  EXPECT_GT(lc, c);
}

// DESIGN §3: both hosts of an SA must not count IVs from the same point, so
// each SA's counter IVs start at a random offset, below 2^63 so that grants
// never wrap a u64.
TEST_F(SadTest, CounterIvsOfEachSaStartAtTheirOwnRandomOffsetBelow2To63) {
  std::set<std::uint64_t> starts;
  Sad other;  // another host's keydb with the same SAs
  for (std::uint32_t spi = 0x1001; spi < 0x1011; ++spi) {
    for (Sad* sad : {&sad_, &other}) {
      capnp::MallocMessageBuilder b;
      auto p = b.initRoot<proto::SaParams>();
      p.setSatype(SADB_SATYPE_ESP);
      p.setSpi(spi);
      p.setDst(capnp::Data::Reader(reinterpret_cast<const capnp::byte*>(kDst.data()), kDst.size()));
      Sa& sa = sad->create(p.asReader());
      auto [next, limit] = sad->grantIvFromScratch(sa);
      EXPECT_LT(next, std::uint64_t{1} << 63);
      EXPECT_GT(limit, next);
      starts.insert(next);
    }
  }
  // 32 draws of 63 bits: a repeat (or a zero) is a broken draw, not bad luck.
  EXPECT_EQ(starts.size(), 32u);
  EXPECT_FALSE(starts.contains(0));
}

TEST_F(SadTest, AllocatedSpisAreUniqueAndInRange) {
  std::set<std::uint32_t> seen;
  const std::string dst("\xc0\x00\x02\x02", 4);
  for (int i = 0; i < 200; ++i) {
    auto spi = sad_.allocateSpi(SADB_SATYPE_ESP, dst, 0xc0000000u, 0xc00000ffu);
    ASSERT_TRUE(spi);
    EXPECT_GE(*spi, 0xc0000000u);
    EXPECT_LE(*spi, 0xc00000ffu);
    EXPECT_TRUE(seen.insert(*spi).second);
    add(*spi);
  }
}

TEST_F(SadTest, SpiAllocationFailsWhenTheRangeIsFull) {
  const std::string dst("\xc0\x00\x02\x02", 4);
  add(0x1000);
  EXPECT_FALSE(sad_.allocateSpi(SADB_SATYPE_ESP, dst, 0x1000, 0x1000));
  EXPECT_FALSE(sad_.allocateSpi(SADB_SATYPE_ESP, dst, 1, 255)) << "0-255 are reserved";
}

// X_MIGRATE's SAD part: the moved SAs take their new addresses under their
// refs (sessions, grants and forwarder entries are named by ref), and are
// found by their new names only.
TEST_F(SadTest, AMoveRenamesEverySaUnderItsRef) {
  Sa& a = add(0x1001);
  Sa& b = add(0x1002);
  const SaRef refA = a.ref, refB = b.ref;
  a.seqGranted = 5000;
  ASSERT_TRUE(sad_.move({{&a, kNewSrc, kNewDst}, {&b, kNewSrc, kNewDst}}));
  for (auto [sa, ref, spi] : {std::tuple{&a, refA, 0x1001u}, std::tuple{&b, refB, 0x1002u}}) {
    EXPECT_EQ(sad_.find(ref), sa);
    EXPECT_EQ(sad_.find(SaKey{SADB_SATYPE_ESP, spi, kNewDst}), sa);
    EXPECT_EQ(sad_.find(SaKey{SADB_SATYPE_ESP, spi, kDst}), nullptr);
    EXPECT_EQ(raw(sa->p().getSrc()), kNewSrc);
    EXPECT_EQ(raw(sa->p().getDst()), kNewDst);
  }
  EXPECT_EQ(a.seqGranted, 5000u);  // grants stay with the SA
  EXPECT_EQ(sad_.size(), 2u);
}

TEST_F(SadTest, AMoveOntoANameHeldByAnSaThatStaysChangesNothing) {
  Sa& moving = add(0x1001);
  Sa& other = add(0x1002);
  Sa& holder = add(0x1001, false, kNewDst);  // already (esp, 0x1001, new dst)
  EXPECT_FALSE(sad_.move({{&other, kNewSrc, kNewDst}, {&moving, kNewSrc, kNewDst}}));
  // All or nothing: the SA that could move did not either.
  EXPECT_EQ(sad_.find(SaKey{SADB_SATYPE_ESP, 0x1002, kDst}), &other);
  EXPECT_EQ(sad_.find(SaKey{SADB_SATYPE_ESP, 0x1002, kNewDst}), nullptr);
  EXPECT_EQ(raw(other.p().getDst()), kDst);
  EXPECT_EQ(sad_.find(SaKey{SADB_SATYPE_ESP, 0x1001, kDst}), &moving);
  EXPECT_EQ(sad_.find(SaKey{SADB_SATYPE_ESP, 0x1001, kNewDst}), &holder);
}

TEST_F(SadTest, TwoSasMovedOntoOneNameIsRefused) {
  Sa& a = add(0x1001);
  Sa& b = add(0x1001, false, std::string("\xc0\x00\x02\x09", 4));
  EXPECT_FALSE(sad_.move({{&a, kNewSrc, kNewDst}, {&b, kNewSrc, kNewDst}}));
  EXPECT_EQ(sad_.find(SaKey{SADB_SATYPE_ESP, 0x1001, kDst}), &a);
  EXPECT_EQ(sad_.find(SaKey{SADB_SATYPE_ESP, 0x1001, kNewDst}), nullptr);
}

TEST_F(SadTest, ANameFreedByAnSaMovingAwayMayBeTakenInTheSameMove) {
  // a moves onto b's name while b moves elsewhere: a swap of names is fine.
  Sa& a = add(0x1001);
  Sa& b = add(0x1001, false, kNewDst);
  const std::string third("\xcb\x00\x71\x01", 4);  // 203.0.113.1
  ASSERT_TRUE(sad_.move({{&a, kNewSrc, kNewDst}, {&b, kNewSrc, third}}));
  EXPECT_EQ(sad_.find(SaKey{SADB_SATYPE_ESP, 0x1001, kNewDst}), &a);
  EXPECT_EQ(sad_.find(SaKey{SADB_SATYPE_ESP, 0x1001, third}), &b);
  EXPECT_EQ(sad_.find(SaKey{SADB_SATYPE_ESP, 0x1001, kDst}), nullptr);
}

}  // namespace
}  // namespace ipsec::keydb
