// SADB_X_MIGRATE as Linux's pfkey_migrate: a policy's tunnel endpoints move,
// the forwarder gets the moved policy, every socket hears the migration; bad
// requests get Linux's errno.
#include <gtest/gtest.h>
#include <linux/ipsec.h>
#include <netinet/in.h>

#include <cerrno>

#include "harness.h"

namespace ipsec::policy::test {
namespace {

const pfkey::SockAddress kOldSrc = v4(192, 0, 2, 1), kOldDst = v4(192, 0, 2, 2);
const pfkey::SockAddress kNewSrc = v4(198, 51, 100, 1);

Bytes tunnelPolicy() {
  pfkey::Builder b(SADB_X_SPDADD, SADB_SATYPE_UNSPEC, 1, 4242);
  pfkey::PolicyFields p{IPSEC_POLICY_IPSEC, IPSEC_DIR_OUTBOUND, 0, 0x80000000u, {}};
  p.requests.push_back({IPPROTO_ESP, IPSEC_MODE_TUNNEL, IPSEC_LEVEL_UNIQUE, 7, kOldSrc, kOldDst});
  b.policy(p);
  b.address(SADB_EXT_ADDRESS_SRC, v4(10, 1, 0, 0), 16, 255);
  b.address(SADB_EXT_ADDRESS_DST, v4(10, 2, 0, 0), 16, 255);
  return b.finish();
}

struct Pair {
  std::uint16_t proto = IPPROTO_ESP;
  std::uint8_t mode = IPSEC_MODE_TUNNEL;
  pfkey::SockAddress fromSrc = kOldSrc, fromDst = kOldDst, toSrc = kNewSrc, toDst = kOldDst;
  std::uint16_t toProto = IPPROTO_ESP;
  std::uint32_t reqid = 7;
};

Bytes migrate(const std::vector<Pair>& pairs, bool oddOne = false, std::uint8_t selectorOctet = 1) {
  pfkey::Builder b(SADB_X_MIGRATE, SADB_SATYPE_ESP, 9, 4242);
  b.address(SADB_EXT_ADDRESS_SRC, v4(10, selectorOctet, 0, 0), 16, 255);
  b.address(SADB_EXT_ADDRESS_DST, v4(10, 2, 0, 0), 16, 255);
  pfkey::PolicyFields p{IPSEC_POLICY_IPSEC, IPSEC_DIR_OUTBOUND, 0, 0, {}};
  for (const auto& x : pairs) {
    p.requests.push_back({x.proto, x.mode, IPSEC_LEVEL_UNIQUE, x.reqid, x.fromSrc, x.fromDst});
    p.requests.push_back({x.toProto, x.mode, IPSEC_LEVEL_UNIQUE, x.reqid, x.toSrc, x.toDst});
  }
  if (oddOne) p.requests.pop_back();
  b.policy(p);
  return b.finish();
}

// Plays keydb: checks the migrate request it got and answers it with `err`.
void answerMigrate(Harness& h, int err) {
  auto req = h.keydbRequest();
  ASSERT_TRUE(req.reader) << req.error;
  auto msg = req.reader->getRoot<proto::PolicyToKeydb>();
  ASSERT_EQ(msg.which(), proto::PolicyToKeydb::MIGRATE);
  auto list = msg.getMigrate();
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].getSatype(), SADB_SATYPE_ESP);
  EXPECT_EQ(list[0].getMode(), IPSEC_MODE_TUNNEL);
  EXPECT_EQ(list[0].getReqid(), 7u);
  auto bytes = [](capnp::Data::Reader d) { return std::vector<std::uint8_t>(d.begin(), d.end()); };
  EXPECT_EQ(bytes(list[0].getOldSrc()), (std::vector<std::uint8_t>{192, 0, 2, 1}));
  EXPECT_EQ(bytes(list[0].getOldDst()), (std::vector<std::uint8_t>{192, 0, 2, 2}));
  EXPECT_EQ(bytes(list[0].getNewSrc()), (std::vector<std::uint8_t>{198, 51, 100, 1}));
  EXPECT_EQ(bytes(list[0].getNewDst()), (std::vector<std::uint8_t>{192, 0, 2, 2}));
  capnp::MallocMessageBuilder b;
  auto r = b.initRoot<proto::KeydbToPolicy>().initReply();
  r.setRequestId(msg.getRequestId());
  r.setErrno(static_cast<std::uint16_t>(err));
  h.answerKeydb(b);
}

TEST(Migrate, MovesTheTunnelEndpointsPushesThePolicyAndTellsEverySocket) {
  Harness h;
  auto km = h.connect();
  auto other = h.connect();
  km.send(tunnelPolicy());
  h.pump();
  km.drain();
  other.drain();
  while (h.forwarderMessage(0).reader) {
  }
  km.send(migrate({Pair{}}));
  h.pump();
  // keydb moves the SAs first; until it answers, nobody hears anything.
  EXPECT_TRUE(km.drain().empty());
  EXPECT_EQ(*h.server().spd().all().at(0).requests.at(0).tunnelSrc, kOldSrc);
  answerMigrate(h, 0);
  auto r = km.drain();
  auto o = other.drain();
  ASSERT_EQ(r.size(), 1u);
  ASSERT_EQ(o.size(), 1u);
  auto m = parsed(r[0]);
  EXPECT_EQ(m.msg().sadb_msg_type, SADB_X_MIGRATE);
  EXPECT_EQ(m.msg().sadb_msg_errno, 0);
  EXPECT_EQ(m.msg().sadb_msg_pid, 0u);
  ASSERT_TRUE(m.policy());
  ASSERT_EQ(m.policy()->requests().size(), 2u);
  EXPECT_EQ(*m.policy()->requests()[1].tunnelSrc, kNewSrc);
  EXPECT_EQ(h.stat("pfkey_migrations"), 1u);

  const auto& stored = h.server().spd().all().at(0);
  EXPECT_EQ(*stored.requests.at(0).tunnelSrc, kNewSrc);
  EXPECT_EQ(*stored.requests.at(0).tunnelDst, kOldDst);
  auto f = h.forwarderMessage(200);
  ASSERT_TRUE(f.reader) << f.error;
  auto fm = f.reader->getRoot<proto::PolicyToForwarder>();
  ASSERT_EQ(fm.which(), proto::PolicyToForwarder::ADD);
  auto src = fm.getAdd().getRequests()[0].getTunnelSrc();
  ASSERT_EQ(src.size(), 4u);
  EXPECT_EQ(src[0], 198);
}

TEST(Migrate, WhenKeydbCannotMoveTheSasThePolicyStaysAndOnlyTheRequesterHears) {
  Harness h;
  auto km = h.connect();
  auto other = h.connect();
  km.send(tunnelPolicy());
  h.pump();
  km.drain();
  other.drain();
  km.send(migrate({Pair{}}));
  h.pump();
  answerMigrate(h, EEXIST);  // a new SA name is taken: keydb moved nothing
  auto r = km.drain();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(parsed(r[0]).msg().sadb_msg_errno, EEXIST);
  EXPECT_TRUE(other.drain().empty());
  EXPECT_EQ(*h.server().spd().all().at(0).requests.at(0).tunnelSrc, kOldSrc);
  EXPECT_EQ(h.stat("pfkey_migrations"), 0u);
}

TEST(Migrate, BadRequestsGetLinuxsErrnoAndChangeNothing) {
  Harness h;
  auto km = h.connect();
  km.send(tunnelPolicy());
  h.pump();
  km.drain();
  Pair mixed;
  mixed.toProto = IPPROTO_AH;
  Pair same;
  same.toSrc = kOldSrc;
  Pair elsewhere;
  elsewhere.fromSrc = v4(203, 0, 113, 5);
  km.send(migrate({Pair{}}, true));           // an old request without its new one
  km.send(migrate({mixed}));                  // the pair changes protocol
  km.send(migrate({same}));                   // nothing moves
  km.send(migrate({Pair{}}, false, 3));       // no such policy
  km.send(migrate({elsewhere}));              // no template has these endpoints
  h.pump();
  auto r = km.drain();
  ASSERT_EQ(r.size(), 5u);
  EXPECT_EQ(parsed(r[0]).msg().sadb_msg_errno, EINVAL);
  EXPECT_EQ(parsed(r[1]).msg().sadb_msg_errno, EINVAL);
  EXPECT_EQ(parsed(r[2]).msg().sadb_msg_errno, EINVAL);
  EXPECT_EQ(parsed(r[3]).msg().sadb_msg_errno, ENOENT);
  EXPECT_EQ(parsed(r[4]).msg().sadb_msg_errno, ENODATA);
  EXPECT_EQ(*h.server().spd().all().at(0).requests.at(0).tunnelSrc, kOldSrc);
  EXPECT_FALSE(h.keydbRequest(50).reader) << "keydb is not asked to move SAs for a refused request";
}

}  // namespace
}  // namespace ipsec::policy::test
