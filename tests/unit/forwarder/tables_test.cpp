// The forwarder's tables: what keydb and policy push, and the lookups the
// data path makes with it.
#include "tables.h"

#include <gtest/gtest.h>
#include <linux/ipsec.h>
#include <linux/pfkeyv2.h>
#include <netinet/in.h>

#include <capnp/message.h>

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
  EXPECT_NE(t.findInbound(0x1001, ip("192.0.2.2")), nullptr);
  EXPECT_EQ(t.findInbound(0x1001, ip("192.0.2.9")), nullptr);
  EXPECT_EQ(t.findInbound(0x1002, ip("192.0.2.2")), nullptr);
}

TEST(SaTable, SelectsTheNewestSaForTheEndpoints) {
  SaTable t;
  Install a(0, 0x1001), b(1, 0x1003);
  ASSERT_FALSE(t.install(a.m.asReader()));
  ASSERT_FALSE(t.install(b.m.asReader()));
  Sa* sa = t.selectOutbound(ip("192.0.2.1"), ip("192.0.2.2"), 0);
  ASSERT_NE(sa, nullptr);
  EXPECT_EQ(sa->spi, 0x1003u);
  t.remove(sa->ref);
  EXPECT_EQ(t.selectOutbound(ip("192.0.2.1"), ip("192.0.2.2"), 0)->spi, 0x1001u);
}

TEST(SaTable, ReqidNarrowsTheChoice) {
  SaTable t;
  Install a(0, 0x1001, 7), b(1, 0x1003, 8);
  ASSERT_FALSE(t.install(a.m.asReader()));
  ASSERT_FALSE(t.install(b.m.asReader()));
  EXPECT_EQ(t.selectOutbound(ip("192.0.2.1"), ip("192.0.2.2"), 7)->spi, 0x1001u);
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
  Sa* sa = t.findInbound(0x1001, ip("192.0.2.2"));
  ASSERT_TRUE(sa && sa->replay);
  EXPECT_GE(sa->replay->size(), 32u);
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

}  // namespace
}  // namespace ipsec::forwarder
