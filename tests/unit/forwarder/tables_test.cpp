// The forwarder's tables: what keydb and policy push, and the lookups the
// data path makes with it.
#include "tables.h"

#include <gtest/gtest.h>
#include <linux/ipsec.h>
#include <linux/pfkeyv2.h>
#include <netinet/in.h>

#include <capnp/message.h>

#include <random>

#include "spd_reference.h"

namespace ipsec::forwarder {
namespace {

capnp::Data::Reader bytes(const esp::IpAddress& a) { return {a.bytes().data(), a.bytes().size()}; }
esp::IpAddress ip(const char* s) { return *esp::IpAddress::parse(s); }

struct Install {
  capnp::MallocMessageBuilder b;
  proto::SaInstall::Builder m = b.initRoot<proto::SaInstall>();
  esp::IpAddress src = ip("192.0.2.1"), dst = ip("192.0.2.2");
  Install(std::uint32_t index, std::uint32_t spi, std::uint32_t reqid = 0) {
    m.initSa().setIndex(index);
    m.getSa().setGeneration(1);
    auto p = m.initParams();
    p.setSatype(SADB_SATYPE_ESP);
    p.setSpi(spi);
    p.setSrc(bytes(src));
    p.setDst(bytes(dst));
    p.setReqid(reqid);
    p.setIvLength(8);
    p.setIcvLength(16);
    p.setPadAlign(4);
    p.setReplayWindow(64);
    m.setSeqNext(1);
    m.setSeqLimit(100);
  }
};

TEST(SaTable, FindsInboundSaBySpiAndDestination) {
  SaTable t;
  Install i(0, 0x1001);
  ASSERT_FALSE(t.install(i.m.asReader()));
  EXPECT_NE(t.findInbound(SADB_SATYPE_ESP, 0x1001, ip("192.0.2.2")), nullptr);
  EXPECT_EQ(t.findInbound(SADB_SATYPE_ESP, 0x1001, ip("192.0.2.9")), nullptr);
  EXPECT_EQ(t.findInbound(SADB_SATYPE_ESP, 0x1002, ip("192.0.2.2")), nullptr);
}

TEST(SaTable, SelectsTheNewestSaForTheEndpoints) {
  SaTable t;
  Install a(0, 0x1001), b(1, 0x1003);
  ASSERT_FALSE(t.install(a.m.asReader()));
  ASSERT_FALSE(t.install(b.m.asReader()));
  Sa* sa = t.selectOutbound(SADB_SATYPE_ESP, ip("192.0.2.1"), ip("192.0.2.2"), 0);
  ASSERT_NE(sa, nullptr);
  EXPECT_EQ(sa->spi, 0x1003u);
  t.remove(sa->ref);
  EXPECT_EQ(t.selectOutbound(SADB_SATYPE_ESP, ip("192.0.2.1"), ip("192.0.2.2"), 0)->spi, 0x1001u);
}

TEST(SaTable, LookupsNeverConfuseEspWithAhOnTheSameSpiAndEndpoints) {
  SaTable t;
  Install esp(0, 0x1001), ah(1, 0x1001);
  ah.m.getParams().setSatype(SADB_SATYPE_AH);
  ASSERT_FALSE(t.install(esp.m.asReader()));
  ASSERT_FALSE(t.install(ah.m.asReader()));
  EXPECT_EQ(t.findInbound(SADB_SATYPE_ESP, 0x1001, ip("192.0.2.2"))->ref.index, 0u);
  EXPECT_EQ(t.findInbound(SADB_SATYPE_AH, 0x1001, ip("192.0.2.2"))->ref.index, 1u);
  EXPECT_EQ(t.selectOutbound(SADB_SATYPE_ESP, ip("192.0.2.1"), ip("192.0.2.2"), 0)->ref.index, 0u);
  EXPECT_EQ(t.selectOutbound(SADB_SATYPE_AH, ip("192.0.2.1"), ip("192.0.2.2"), 0)->ref.index, 1u);
}

TEST(SaTable, ReqidNarrowsTheChoice) {
  SaTable t;
  Install a(0, 0x1001, 7), b(1, 0x1003, 8);
  ASSERT_FALSE(t.install(a.m.asReader()));
  ASSERT_FALSE(t.install(b.m.asReader()));
  EXPECT_EQ(t.selectOutbound(SADB_SATYPE_ESP, ip("192.0.2.1"), ip("192.0.2.2"), 7)->spi, 0x1001u);
}

TEST(SaTable, RefusesMixedFamiliesAndBadGrants) {
  SaTable t;
  Install a(0, 0x1001);
  auto v6 = ip("2001:db8::1");
  a.m.getParams().setDst(bytes(v6));
  EXPECT_TRUE(t.install(a.m.asReader()));
  Install b(0, 0x1001);
  b.m.setSeqNext(0);
  EXPECT_TRUE(t.install(b.m.asReader()));
}

TEST(SaTable, SmallReplayWindowsRoundUpNeverDown) {
  SaTable t;
  Install a(0, 0x1001);
  a.m.getParams().setReplayWindow(4);
  ASSERT_FALSE(t.install(a.m.asReader()));
  Sa* sa = t.findInbound(SADB_SATYPE_ESP, 0x1001, ip("192.0.2.2"));
  ASSERT_TRUE(sa && sa->replay);
  EXPECT_GE(sa->replay->size(), 32u);
}

TEST(SaTable, ReinstallingTheSameSaWithNewAddressesKeepsWhatItAccepted) {
  SaTable t;
  Install a(0, 0x1001);
  ASSERT_FALSE(t.install(a.m.asReader()));
  Sa* sa = t.findInbound(SADB_SATYPE_ESP, 0x1001, ip("192.0.2.2"));
  ASSERT_TRUE(sa && sa->replay);
  for (std::uint64_t seq : {1, 2, 3, 70}) ASSERT_TRUE(sa->replay->accept(seq));
  Install moved(0, 0x1001);
  auto newDst = ip("192.0.2.12");
  moved.m.getParams().setDst(bytes(newDst));
  ASSERT_FALSE(t.install(moved.m.asReader()));
  EXPECT_EQ(t.findInbound(SADB_SATYPE_ESP, 0x1001, ip("192.0.2.2")), nullptr);
  sa = t.findInbound(SADB_SATYPE_ESP, 0x1001, newDst);
  ASSERT_TRUE(sa && sa->replay);
  EXPECT_EQ(sa->replay->highest(), 70u);
  EXPECT_FALSE(sa->replay->check(70));  // a replay of a packet from before the move
  EXPECT_TRUE(sa->replay->check(69));   // in the window, never received
  EXPECT_TRUE(sa->replay->check(71));
}

TEST(SaTable, ReinstallWithAnotherWindowSizeMarksTheOldWindowSeen) {
  SaTable t;
  Install a(0, 0x1001);
  ASSERT_FALSE(t.install(a.m.asReader()));
  Sa* sa = t.findInbound(SADB_SATYPE_ESP, 0x1001, ip("192.0.2.2"));
  ASSERT_TRUE(sa->replay->accept(100));
  Install wider(0, 0x1001);
  wider.m.getParams().setReplayWindow(256);
  ASSERT_FALSE(t.install(wider.m.asReader()));
  sa = t.findInbound(SADB_SATYPE_ESP, 0x1001, ip("192.0.2.2"));
  EXPECT_EQ(sa->replay->size(), 256u);
  EXPECT_FALSE(sa->replay->check(100));
  EXPECT_FALSE(sa->replay->check(1));  // unknown before the move: refused, never accepted twice
  EXPECT_TRUE(sa->replay->check(101));
}

TEST(SaTable, ANewSaInAReusedSlotStartsWithAnEmptyWindow) {
  SaTable t;
  Install a(0, 0x1001);
  ASSERT_FALSE(t.install(a.m.asReader()));
  ASSERT_TRUE(t.findInbound(SADB_SATYPE_ESP, 0x1001, ip("192.0.2.2"))->replay->accept(50));
  Install b(0, 0x1001);
  b.m.getSa().setGeneration(2);
  ASSERT_FALSE(t.install(b.m.asReader()));
  EXPECT_TRUE(t.findInbound(SADB_SATYPE_ESP, 0x1001, ip("192.0.2.2"))->replay->check(50));
}


// net.inet.ipsec.replay_window: an SA added without a window (setkey without -r).
Sa* installWithoutWindow(SaTable& t, std::uint32_t index, std::uint32_t spi) {
  Install a(index, spi);
  a.m.getParams().setReplayWindow(0);
  if (t.install(a.m.asReader())) return nullptr;
  return t.findInbound(SADB_SATYPE_ESP, spi, ip("192.0.2.2"));
}

TEST(SaTable, AnSaWithoutAWindowGetsTheDefaultWindowAndRefusesAReplay) {
  SaTable t;
  Sa* sa = installWithoutWindow(t, 0, 0x1001);
  ASSERT_NE(sa, nullptr);
  ASSERT_TRUE(sa->replay);
  EXPECT_EQ(sa->replay->size(), SaTable::kDefaultReplayWindow);
  ASSERT_TRUE(sa->replay->accept(5));
  EXPECT_FALSE(sa->replay->check(5));  // the same packet again
  EXPECT_TRUE(sa->replay->check(4));
}

TEST(SaTable, ReplayWindowSysctlZeroLeavesAnSaWithoutAWindowUnprotected) {
  SaTable t;
  t.setDefaultReplayWindow(0);
  Sa* sa = installWithoutWindow(t, 0, 0x1001);
  ASSERT_NE(sa, nullptr);
  EXPECT_FALSE(sa->replay);
}

TEST(SaTable, AReplayWindowSysctlChangeAppliesToSasInstalledAfterwards) {
  SaTable t;
  ASSERT_NE(installWithoutWindow(t, 0, 0x1001), nullptr);
  t.setDefaultReplayWindow(200);
  Sa* later = installWithoutWindow(t, 1, 0x1002);
  ASSERT_TRUE(later && later->replay);
  EXPECT_EQ(later->replay->size(), 224u);  // rounded up to whole words of 32
  Sa* earlier = t.findInbound(SADB_SATYPE_ESP, 0x1001, ip("192.0.2.2"));
  ASSERT_TRUE(earlier && earlier->replay);
  EXPECT_EQ(earlier->replay->size(), SaTable::kDefaultReplayWindow);
  Install own(2, 0x1003);  // a window of its own (64) is never the default's
  t.setDefaultReplayWindow(0);
  ASSERT_FALSE(t.install(own.m.asReader()));
  Sa* sa = t.findInbound(SADB_SATYPE_ESP, 0x1003, ip("192.0.2.2"));
  ASSERT_TRUE(sa && sa->replay);
  EXPECT_EQ(sa->replay->size(), 64u);
}

TEST(SaTable, AReplayWindowSysctlOutOfRangeIsClampedNotRefused) {
  SaTable t;
  t.setDefaultReplayWindow(-5);
  EXPECT_EQ(t.defaultReplayWindow(), 0u);
  t.setDefaultReplayWindow(std::int64_t{1} << 40);
  EXPECT_EQ(t.defaultReplayWindow(), esp::ReplayWindow::kMaxSize);
  Sa* sa = installWithoutWindow(t, 0, 0x1001);  // an install that fails would close keydb's channel
  ASSERT_TRUE(sa && sa->replay);
  EXPECT_EQ(sa->replay->size(), esp::ReplayWindow::kMaxSize);
}
using Verdict = AcquireTimes::Verdict;
AcquireKey acquireKey(std::uint8_t requestIndex = 0, const char* dst = "192.0.2.2") {
  return {7, requestIndex, ip("192.0.2.1"), ip(dst)};
}

TEST(AcquireTimes, ANewPacketAsksAgainOnlyAfterTheInterval) {
  AcquireTimes t;
  EXPECT_EQ(t.ask(acquireKey(), 10'000, false), Verdict::kAsk);
  EXPECT_EQ(t.ask(acquireKey(), 10'999, false), Verdict::kTooSoon);
  EXPECT_EQ(t.ask(acquireKey(), 11'000, false), Verdict::kAsk);
  EXPECT_EQ(t.ask(acquireKey(), 11'500, false), Verdict::kTooSoon);
}

// racoon adds the inbound SA first: it releases the held packet, which
// still has no outbound SA, seconds after its ACQUIRE. Asking again then
// crossed racoon's ADD and started a second negotiation.
TEST(AcquireTimes, AHeldPacketReleasedByAnotherSaDoesNotAskAgain) {
  AcquireTimes t;
  ASSERT_EQ(t.ask(acquireKey(), 10'000, false), Verdict::kAsk);
  EXPECT_EQ(t.ask(acquireKey(), 11'200, true), Verdict::kPending);
  EXPECT_EQ(t.ask(acquireKey(), 14'000, true), Verdict::kPending);
  EXPECT_EQ(t.ask(acquireKey(), 14'000, false), Verdict::kAsk);  // a new packet: policy judges
}

TEST(AcquireTimes, AReleasedPacketAsksForARequestNotAskedBefore) {
  AcquireTimes t;
  ASSERT_EQ(t.ask(acquireKey(0), 10'000, false), Verdict::kAsk);  // a bundle's inner leg
  EXPECT_EQ(t.ask(acquireKey(1), 10'300, true), Verdict::kAsk);   // its SA came: now the outer
  EXPECT_EQ(t.ask(acquireKey(0, "192.0.2.3"), 10'300, false), Verdict::kAsk);  // other endpoints
}

TEST(AcquireTimes, ForgottenKeysAreAskedForAgainAndTheTableIsBounded) {
  AcquireTimes t;
  ASSERT_EQ(t.ask(acquireKey(), 10'000, false), Verdict::kAsk);
  t.forgetBefore(10'001);
  EXPECT_EQ(t.size(), 0u);
  EXPECT_EQ(t.ask(acquireKey(), 10'002, true), Verdict::kAsk);
  t.forgetBefore(20'000);
  for (std::size_t i = 0; i < AcquireTimes::kMaxKeys; ++i) {
    AcquireKey k{static_cast<std::uint32_t>(1000 + i), 0, ip("192.0.2.1"), ip("192.0.2.2")};
    ASSERT_EQ(t.ask(k, 20'000, false), Verdict::kAsk);
  }
  EXPECT_EQ(t.ask(acquireKey(0, "192.0.2.9"), 20'500, false), Verdict::kFull);
  // Once the others are an interval old, the oldest make room.
  EXPECT_EQ(t.ask(acquireKey(0, "192.0.2.9"), 21'001, false), Verdict::kAsk);
  EXPECT_LE(t.size(), AcquireTimes::kMaxKeys);
}

struct PolicyMsg {
  capnp::MallocMessageBuilder b;
  proto::Policy::Builder m = b.initRoot<proto::Policy>();
  PolicyMsg(std::uint32_t id, const char* src, std::uint8_t sp, const char* dst, std::uint8_t dp,
            std::uint32_t priority, std::uint8_t action = IPSEC_POLICY_IPSEC) {
    m.setId(id);
    m.setDir(IPSEC_DIR_OUTBOUND);
    m.setAction(action);
    m.setPriority(priority);
    auto s = m.initSelector();
    auto a = ip(src), d = ip(dst);
    s.setSrc(bytes(a));
    s.setSrcPrefix(sp);
    s.setDst(bytes(d));
    s.setDstPrefix(dp);
    s.setProto(255);
  }
};

esp::FlowKey flow(const char* src, const char* dst, std::uint8_t proto = 6, std::uint16_t dport = 80) {
  esp::FlowKey f;
  f.version = 4;
  f.src = ip(src);
  f.dst = ip(dst);
  f.proto = proto;
  f.dstPort = dport;
  return f;
}

TEST(Spd, LowerPriorityValueWinsThenInsertionOrder) {
  Spd spd;
  PolicyMsg broad(8 | IPSEC_DIR_OUTBOUND, "198.51.100.0", 24, "203.0.113.0", 24, 0x80000000u);
  PolicyMsg narrow(16 | IPSEC_DIR_OUTBOUND, "198.51.100.7", 32, "203.0.113.0", 24, 0x40000000u,
                   IPSEC_POLICY_DISCARD);
  ASSERT_FALSE(spd.add(broad.m.asReader()));
  ASSERT_FALSE(spd.add(narrow.m.asReader()));
  EXPECT_EQ(spd.lookup(IPSEC_DIR_OUTBOUND, flow("198.51.100.7", "203.0.113.1"))->action, IPSEC_POLICY_DISCARD);
  EXPECT_EQ(spd.lookup(IPSEC_DIR_OUTBOUND, flow("198.51.100.8", "203.0.113.1"))->action, IPSEC_POLICY_IPSEC);
  EXPECT_EQ(spd.lookup(IPSEC_DIR_OUTBOUND, flow("198.51.100.8", "192.0.2.1")), nullptr);
  EXPECT_EQ(spd.lookup(IPSEC_DIR_INBOUND, flow("198.51.100.8", "203.0.113.1")), nullptr);
}

TEST(Spd, PortsAndProtocolNarrowASelector) {
  Spd spd;
  PolicyMsg web(8 | IPSEC_DIR_OUTBOUND, "198.51.100.0", 24, "203.0.113.0", 24, 0x80000000u);
  web.m.getSelector().setProto(IPPROTO_TCP);
  web.m.getSelector().setDstPort(443);
  ASSERT_FALSE(spd.add(web.m.asReader()));
  EXPECT_NE(spd.lookup(IPSEC_DIR_OUTBOUND, flow("198.51.100.1", "203.0.113.1", IPPROTO_TCP, 443)), nullptr);
  EXPECT_EQ(spd.lookup(IPSEC_DIR_OUTBOUND, flow("198.51.100.1", "203.0.113.1", IPPROTO_TCP, 80)), nullptr);
  EXPECT_EQ(spd.lookup(IPSEC_DIR_OUTBOUND, flow("198.51.100.1", "203.0.113.1", IPPROTO_UDP, 443)), nullptr);
  auto frag = flow("198.51.100.1", "203.0.113.1", IPPROTO_TCP, 0);
  frag.nonInitialFragment = true;
  EXPECT_EQ(spd.lookup(IPSEC_DIR_OUTBOUND, frag), nullptr) << "a later fragment has no ports to match";
}

TEST(Spd, AddWithTheSameIdReplacesAndDeleteRemoves) {
  Spd spd;
  PolicyMsg p(8 | IPSEC_DIR_OUTBOUND, "198.51.100.0", 24, "203.0.113.0", 24, 0x80000000u);
  ASSERT_FALSE(spd.add(p.m.asReader()));
  p.m.setAction(IPSEC_POLICY_DISCARD);
  ASSERT_FALSE(spd.add(p.m.asReader()));
  EXPECT_EQ(spd.size(), 1u);
  EXPECT_EQ(spd.lookup(IPSEC_DIR_OUTBOUND, flow("198.51.100.1", "203.0.113.1"))->action, IPSEC_POLICY_DISCARD);
  spd.remove(8 | IPSEC_DIR_OUTBOUND);
  EXPECT_EQ(spd.size(), 0u);
}


TEST(Spd, AChangeInvalidatesACachedResult) {
  Spd spd;
  auto f = flow("198.51.100.1", "203.0.113.1");
  EXPECT_EQ(spd.lookup(IPSEC_DIR_OUTBOUND, f), nullptr);
  EXPECT_EQ(spd.lookup(IPSEC_DIR_OUTBOUND, f), nullptr);
  EXPECT_EQ(spd.cacheHits(), 1u) << "the second lookup of a flow is served by the cache";
  PolicyMsg p(8 | IPSEC_DIR_OUTBOUND, "198.51.100.0", 24, "203.0.113.0", 24, 0x80000000u);
  ASSERT_FALSE(spd.add(p.m.asReader()));
  ASSERT_NE(spd.lookup(IPSEC_DIR_OUTBOUND, f), nullptr) << "a cached miss must not hide a new policy";
  spd.remove(8 | IPSEC_DIR_OUTBOUND);
  EXPECT_EQ(spd.lookup(IPSEC_DIR_OUTBOUND, f), nullptr) << "a cached hit must not outlive its policy";
}

TEST(Spd, AHostBitsSetInASelectorPrefixAreIgnored) {
  Spd spd;
  PolicyMsg p(8 | IPSEC_DIR_OUTBOUND, "198.51.100.77", 24, "203.0.113.99", 24, 1);
  ASSERT_FALSE(spd.add(p.m.asReader()));
  EXPECT_NE(spd.lookup(IPSEC_DIR_OUTBOUND, flow("198.51.100.1", "203.0.113.1")), nullptr);
}

TEST(Spd, ABetterRankedPolicyTakesTheFrontOfASharedDestination) {
  // Same destination key: the bucket's inline first entry is replaced, and
  // removing it promotes the next one from out of line.
  Spd spd;
  PolicyMsg late(8 | IPSEC_DIR_OUTBOUND, "198.51.100.0", 24, "203.0.113.0", 24, 0x80000000u);
  PolicyMsg early(16 | IPSEC_DIR_OUTBOUND, "198.51.100.0", 24, "203.0.113.0", 24, 0x40000000u,
                  IPSEC_POLICY_DISCARD);
  PolicyMsg other(24 | IPSEC_DIR_OUTBOUND, "192.0.2.0", 24, "203.0.113.0", 24, 0x10000000u);
  ASSERT_FALSE(spd.add(late.m.asReader()));
  ASSERT_FALSE(spd.add(other.m.asReader()));
  ASSERT_FALSE(spd.add(early.m.asReader()));
  const auto f = flow("198.51.100.7", "203.0.113.1");
  EXPECT_EQ(spd.lookup(IPSEC_DIR_OUTBOUND, f)->id, 16u | IPSEC_DIR_OUTBOUND);
  spd.remove(16 | IPSEC_DIR_OUTBOUND);
  EXPECT_EQ(spd.lookup(IPSEC_DIR_OUTBOUND, f)->id, 8u | IPSEC_DIR_OUTBOUND);
  spd.remove(24 | IPSEC_DIR_OUTBOUND);
  EXPECT_EQ(spd.lookup(IPSEC_DIR_OUTBOUND, f)->id, 8u | IPSEC_DIR_OUTBOUND);
  spd.remove(8 | IPSEC_DIR_OUTBOUND);
  EXPECT_EQ(spd.lookup(IPSEC_DIR_OUTBOUND, f), nullptr);
  EXPECT_EQ(spd.size(), 0u);
}

TEST(Spd, ManyDistinctDestinationsSurviveGrowthAndDeletion) {
  // Thousands of /32 and /128 keys: the table grows several times, probe
  // runs form, and deleting from the middle of runs (backward shift) must
  // leave every remaining key findable and every removed one gone.
  Spd spd;
  constexpr std::uint32_t kCount = 12000;
  auto dstOf = [](std::uint32_t i) {
    if (i % 2 == 0) return esp::IpAddress::v4(0xcb000000u | i);  // 203.x.y.z
    std::array<std::uint8_t, 16> b{0x20, 0x01, 0x0d, 0xb8};
    b[12] = static_cast<std::uint8_t>(i >> 24);
    b[13] = static_cast<std::uint8_t>(i >> 16);
    b[14] = static_cast<std::uint8_t>(i >> 8);
    b[15] = static_cast<std::uint8_t>(i);
    return esp::IpAddress::v6(b);
  };
  auto add = [&](std::uint32_t i) {
    const auto d = dstOf(i);
    const auto any = d.isV4() ? ip("0.0.0.0") : ip("::");
    capnp::MallocMessageBuilder b;
    auto m = b.initRoot<proto::Policy>();
    m.setId(i * 8 + IPSEC_DIR_OUTBOUND);
    m.setDir(IPSEC_DIR_OUTBOUND);
    m.setAction(IPSEC_POLICY_IPSEC);
    m.setPriority(0x80000000u);
    auto s = m.initSelector();
    s.setSrc(bytes(any));
    s.setSrcPrefix(0);
    s.setDst(bytes(d));
    s.setDstPrefix(d.isV4() ? 32 : 128);
    s.setProto(255);
    ASSERT_FALSE(spd.add(m.asReader()));
  };
  auto find = [&](std::uint32_t i) {
    esp::FlowKey f;
    f.dst = dstOf(i);
    f.version = f.dst.isV4() ? 4 : 6;
    f.src = f.dst.isV4() ? ip("192.0.2.1") : ip("2001:db8:ffff::1");
    f.proto = IPPROTO_UDP;
    return spd.lookup(IPSEC_DIR_OUTBOUND, f);
  };
  for (std::uint32_t i = 0; i < kCount; ++i) add(i);
  ASSERT_EQ(spd.size(), kCount);
  std::mt19937 rng(7);
  std::vector<bool> present(kCount, true);
  for (std::uint32_t n = 0; n < kCount / 2; ++n) {
    const auto i = static_cast<std::uint32_t>(rng() % kCount);
    spd.remove(i * 8 + IPSEC_DIR_OUTBOUND);
    present[i] = false;
  }
  for (std::uint32_t i = 0; i < kCount; ++i) {
    const Policy* p = find(i);
    if (present[i]) {
      ASSERT_NE(p, nullptr) << i;
      EXPECT_EQ(p->id, i * 8 + IPSEC_DIR_OUTBOUND);
    } else {
      EXPECT_EQ(p, nullptr) << i;
    }
  }
  // Re-adding fills the holes again.
  for (std::uint32_t i = 0; i < kCount; ++i) {
    if (!present[i]) add(i);
  }
  for (std::uint32_t i = 0; i < kCount; ++i) ASSERT_NE(find(i), nullptr) << i;
}

// Random policy sets with many overlaps and ties, against the linear scan.
class SpdDifferential {
 public:
  explicit SpdDifferential(std::uint32_t seed) : rng_(seed) {}

  esp::IpAddress address(bool v4) {
    if (v4) {
      // Two /24s, few host values: prefixes of every length overlap.
      std::uint32_t base = pick(2) ? 0xc6336400u : 0xcb007100u;
      return esp::IpAddress::v4(base | static_cast<std::uint32_t>(pick(4) * 64 + pick(3)));
    }
    std::array<std::uint8_t, 16> b{0x20, 0x01, 0x0d, 0xb8};
    b[5] = static_cast<std::uint8_t>(pick(2));
    b[7] = static_cast<std::uint8_t>(pick(2) * 0x80);
    b[15] = static_cast<std::uint8_t>(pick(4) * 64 + pick(3));
    return esp::IpAddress::v6(b);
  }
  std::uint8_t length(bool v4) {
    static constexpr std::uint8_t kV4[] = {0, 8, 16, 23, 24, 25, 26, 30, 31, 32};
    static constexpr std::uint8_t kV6[] = {0, 32, 40, 48, 63, 64, 65, 120, 126, 127, 128};
    return v4 ? kV4[pick(std::size(kV4))] : kV6[pick(std::size(kV6))];
  }
  std::uint8_t proto() {
    static constexpr std::uint8_t kProtos[] = {255, 255, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP};
    return kProtos[pick(std::size(kProtos))];
  }
  std::uint16_t port() {
    static constexpr std::uint16_t kPorts[] = {0, 0, 0, 80, 443};
    return kPorts[pick(std::size(kPorts))];
  }
  std::uint8_t dir() { return static_cast<std::uint8_t>(IPSEC_DIR_INBOUND + pick(3)); }

  Policy policy(std::uint32_t id) {
    const bool v4 = pick(2);
    Policy p;
    p.id = id;
    p.dir = dir();
    p.action = static_cast<std::uint8_t>(pick(3));
    p.priority = static_cast<std::uint32_t>(pick(4));  // many ties
    p.selector = {*esp::Prefix::make(address(v4), length(v4)), *esp::Prefix::make(address(v4), length(v4)), proto(),
                  port(), port()};
    return p;
  }
  esp::FlowKey flowKey() {
    const bool v4 = pick(2);
    esp::FlowKey f;
    f.version = v4 ? 4 : 6;
    f.src = address(v4);
    f.dst = address(v4);
    f.proto = proto();
    if (f.proto == 255) f.proto = IPPROTO_TCP;
    f.nonInitialFragment = pick(6) == 0;
    if (!f.nonInitialFragment) {
      f.srcPort = port();
      f.dstPort = port();
    }
    return f;
  }
  std::size_t pick(std::size_t n) { return std::uniform_int_distribution<std::size_t>(0, n - 1)(rng_); }

 private:
  std::mt19937 rng_;
};

TEST(Spd, AgreesWithALinearScanOnRandomPoliciesAndFlows) {
  for (std::uint32_t seed = 1; seed <= 4; ++seed) {
    SpdDifferential gen(seed);
    Spd spd;
    testing::LinearSpd ref;
    std::size_t lookups = 0, hits = 0;
    for (int step = 0; step < 6000; ++step) {
      if (step == 3000) {
        spd.clear();
        ref.clear();
      }
      const std::size_t op = gen.pick(100);
      if (op < 55) {
        Policy p = gen.policy(static_cast<std::uint32_t>(gen.pick(2500)));
        capnp::MallocMessageBuilder b;
        testing::fillPolicyMessage(p, b.initRoot<proto::Policy>());
        ASSERT_FALSE(spd.add(b.getRoot<proto::Policy>().asReader()));
        ref.add(p);
      } else if (op < 70) {
        const auto id = static_cast<std::uint32_t>(gen.pick(2500));
        spd.remove(id);
        ref.remove(id);
      } else {
        for (int i = 0; i < 10; ++i) {
          const auto f = gen.flowKey();
          const auto d = gen.dir();
          const Policy* want = ref.lookup(d, f);
          // Twice: the second answer may come from the flow cache.
          for (int again = 0; again < 2; ++again) {
            const Policy* got = spd.lookup(d, f);
            ASSERT_EQ(got == nullptr, want == nullptr) << "seed " << seed << " step " << step;
            if (want) {
              ASSERT_EQ(got->id, want->id) << "seed " << seed << " step " << step;
              ASSERT_EQ(got->action, want->action);
            }
          }
          ++lookups;
          hits += want != nullptr;
        }
      }
      ASSERT_EQ(spd.size(), ref.size());
    }
    // The generator must exercise both outcomes for the comparison to mean anything.
    EXPECT_GT(hits, lookups / 20) << "seed " << seed;
    EXPECT_LT(hits, lookups - lookups / 20) << "seed " << seed;
  }
}

}  // namespace
}  // namespace ipsec::forwarder
