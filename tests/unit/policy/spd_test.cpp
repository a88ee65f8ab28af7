// The SPD store on its own: ids, EEXIST/replace, reqid choice, encoding.
#include <gtest/gtest.h>
#include <linux/ipsec.h>

#include <cerrno>

#include "harness.h"
#include "spd.h"

namespace ipsec::policy {
namespace {

using test::v4;

Policy makePolicy(std::uint8_t dir, std::uint8_t lastOctet) {
  Policy p;
  p.dir = dir;
  p.type = IPSEC_POLICY_IPSEC;
  p.selector.src = v4(192, 0, 2, 1);
  p.selector.dst = v4(198, 51, 100, lastOctet);
  p.selector.srcPrefix = 32;
  p.selector.dstPrefix = 32;
  return p;
}

TEST(Spd, IdsCarryTheDirectionInTheLowThreeBitsAsLinux) {
  Spd spd;
  // The returned pointer is valid until the next change: read it at once.
  EXPECT_EQ(std::get<const Policy*>(spd.insert(makePolicy(IPSEC_DIR_OUTBOUND, 1), false))->id, 9u);
  EXPECT_EQ(std::get<const Policy*>(spd.insert(makePolicy(IPSEC_DIR_FWD, 1), false))->id, 18u);
  EXPECT_EQ(std::get<const Policy*>(spd.insert(makePolicy(IPSEC_DIR_INBOUND, 1), false))->id, 24u);
}

TEST(Spd, RefusesTheSameSelectorAndDirectionTwice) {
  Spd spd;
  ASSERT_TRUE(std::holds_alternative<const Policy*>(spd.insert(makePolicy(IPSEC_DIR_OUTBOUND, 1), false)));
  auto again = spd.insert(makePolicy(IPSEC_DIR_OUTBOUND, 1), false);
  ASSERT_TRUE(std::holds_alternative<int>(again));
  EXPECT_EQ(std::get<int>(again), EEXIST);
  // Another direction or another selector is another policy.
  EXPECT_TRUE(std::holds_alternative<const Policy*>(spd.insert(makePolicy(IPSEC_DIR_INBOUND, 1), false)));
  EXPECT_TRUE(std::holds_alternative<const Policy*>(spd.insert(makePolicy(IPSEC_DIR_OUTBOUND, 2), false)));
  EXPECT_EQ(spd.size(), 3u);
}

TEST(Spd, ReplaceKeepsTheIdAndThePosition) {
  Spd spd;
  spd.insert(makePolicy(IPSEC_DIR_OUTBOUND, 1), false);
  spd.insert(makePolicy(IPSEC_DIR_OUTBOUND, 2), false);
  Policy p = makePolicy(IPSEC_DIR_OUTBOUND, 1);
  p.priority = 7;
  auto r = spd.insert(p, true);
  ASSERT_TRUE(std::holds_alternative<const Policy*>(r));
  EXPECT_EQ(std::get<const Policy*>(r)->id, 9u);
  EXPECT_EQ(spd.all().front().priority, 7u);
  EXPECT_EQ(spd.size(), 2u);
}

TEST(Spd, RemovesBySelectorAndById) {
  Spd spd;
  spd.insert(makePolicy(IPSEC_DIR_OUTBOUND, 1), false);
  spd.insert(makePolicy(IPSEC_DIR_INBOUND, 1), false);
  EXPECT_FALSE(spd.removeBySelector(makePolicy(IPSEC_DIR_FWD, 1).selector, IPSEC_DIR_FWD));
  auto r = spd.removeBySelector(makePolicy(IPSEC_DIR_OUTBOUND, 1).selector, IPSEC_DIR_OUTBOUND);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->id, 9u);
  EXPECT_TRUE(spd.removeById(16));
  EXPECT_FALSE(spd.removeById(16));
  EXPECT_EQ(spd.size(), 0u);
}

TEST(Spd, ChoosesReqidsAboveTheManualRangeThatNoPolicyUses) {
  Spd spd;
  Policy p = makePolicy(IPSEC_DIR_OUTBOUND, 1);
  Request r;
  r.proto = IPPROTO_ESP;
  r.mode = IPSEC_MODE_TRANSPORT;
  r.reqid = IPSEC_MANUAL_REQID_MAX + 2;
  p.requests.push_back(r);
  spd.insert(p, false);
  EXPECT_EQ(spd.chooseReqid(), IPSEC_MANUAL_REQID_MAX + 1u);
  EXPECT_EQ(spd.chooseReqid(), IPSEC_MANUAL_REQID_MAX + 3u);  // +2 is taken
}

TEST(Spd, RebuildsTheLevelFromReqidAndOptional) {
  Request r;
  EXPECT_EQ(r.level(), IPSEC_LEVEL_REQUIRE);
  r.optional = true;
  EXPECT_EQ(r.level(), IPSEC_LEVEL_USE);
  r.reqid = 5;
  EXPECT_EQ(r.level(), IPSEC_LEVEL_UNIQUE);
}

TEST(Spd, ForwarderCopyCarriesRawAddressesAndPorts) {
  Policy p = makePolicy(IPSEC_DIR_OUTBOUND, 7);
  p.id = 9;
  p.selector.dst.port = 443;
  p.selector.proto = IPPROTO_TCP;
  Request r;
  r.proto = IPPROTO_ESP;
  r.mode = IPSEC_MODE_TUNNEL;
  r.tunnelSrc = v4(203, 0, 113, 1);
  r.tunnelDst = v4(203, 0, 113, 2);
  p.requests.push_back(r);
  capnp::MallocMessageBuilder b;
  toProto(p, b.initRoot<proto::Policy>());
  auto out = b.getRoot<proto::Policy>().asReader();
  EXPECT_EQ(out.getId(), 9u);
  EXPECT_EQ(out.getDir(), IPSEC_DIR_OUTBOUND);
  ASSERT_EQ(out.getSelector().getDst().size(), 4u);
  EXPECT_EQ(out.getSelector().getDst()[3], 7);
  EXPECT_EQ(out.getSelector().getDstPort(), 443);
  EXPECT_EQ(out.getSelector().getProto(), IPPROTO_TCP);
  ASSERT_EQ(out.getRequests().size(), 1u);
  EXPECT_EQ(out.getRequests()[0].getLevel(), IPSEC_LEVEL_REQUIRE);
  ASSERT_EQ(out.getRequests()[0].getTunnelDst().size(), 4u);
  EXPECT_EQ(out.getRequests()[0].getTunnelDst()[3], 2);
}

}  // namespace
}  // namespace ipsec::policy
