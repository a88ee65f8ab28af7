// The direction barrier (issue 10): an outbound policy stored after its SAs
// reaches the forwarder, and its PF_KEY reply the sockets, only once keydb
// says the broker has the SAs' outbound marks (markOutbound with a request
// id, answered by outboundMarked). Until then the SPD already holds it; later
// forwarder pushes queue behind it in SPD order, and the requesting client's
// later requests wait as Linux answers a socket's requests in order. The test
// plays keydb and the forwarder, and holds keydb's answer (holdMarks).
#include <gtest/gtest.h>
#include <linux/ipsec.h>
#include <netinet/in.h>

#include <vector>

#include "harness.h"

namespace ipsec::policy::test {
namespace {

const pfkey::SockAddress kLocal = v4(192, 0, 2, 1), kPeer = v4(192, 0, 2, 2);
const pfkey::SockAddress kNet1 = v4(198, 51, 100, 0), kNet2 = v4(203, 0, 113, 0);

Bytes tunnelPolicy(std::uint8_t type, std::uint8_t dir, std::uint16_t policyType = IPSEC_POLICY_IPSEC) {
  pfkey::Builder b(type, SADB_SATYPE_UNSPEC, 3, 4242);
  std::vector<pfkey::RequestFields> requests;
  if (policyType == IPSEC_POLICY_IPSEC) {
    requests.push_back({IPPROTO_ESP, IPSEC_MODE_TUNNEL, IPSEC_LEVEL_REQUIRE, 0, kLocal, kPeer});
  }
  b.policy(pfkey::PolicyFields{policyType, dir, 0, 0x80000000u, std::move(requests)});
  const bool out = dir == IPSEC_DIR_OUTBOUND;
  b.address(SADB_EXT_ADDRESS_SRC, out ? kNet1 : kNet2, 24, IPSEC_ULPROTO_ANY);
  b.address(SADB_EXT_ADDRESS_DST, out ? kNet2 : kNet1, 24, IPSEC_ULPROTO_ANY);
  return b.finish();
}

// The request ids of the markOutbound messages keydb was sent (nonzero: policy waits for them).
std::vector<std::uint64_t> marksAsked(Harness& h) {
  std::vector<std::uint64_t> ids;
  for (;;) {
    auto m = h.keydbMessage(50);
    if (!m.reader) break;
    auto req = m.reader->getRoot<proto::PolicyToKeydb>();
    EXPECT_EQ(req.which(), proto::PolicyToKeydb::MARK_OUTBOUND);
    ids.push_back(req.getRequestId());
  }
  return ids;
}

// What the forwarder was sent, in order: "add <id>", "delete <id>", "flush".
std::vector<std::string> forwarderPushes(Harness& h) {
  std::vector<std::string> out;
  for (;;) {
    auto f = h.forwarderMessage(0);
    if (!f.reader) return out;
    auto msg = f.reader->getRoot<proto::PolicyToForwarder>();
    switch (msg.which()) {
      case proto::PolicyToForwarder::ADD: out.push_back("add " + std::to_string(msg.getAdd().getId())); break;
      case proto::PolicyToForwarder::DELETE: out.push_back("delete " + std::to_string(msg.getDelete())); break;
      case proto::PolicyToForwarder::FLUSH: out.push_back("flush"); break;
      default: out.push_back("other"); break;
    }
  }
}

std::vector<std::uint8_t> typesOf(const std::vector<Bytes>& replies) {
  std::vector<std::uint8_t> t;
  for (const auto& r : replies) t.push_back(parsed(r).msg().sadb_msg_type);
  return t;
}

TEST(OutboundMarks, AnOutboundPolicysReplyAndForwarderPushWaitForKeydbsAnswer) {
  Harness h;
  h.holdMarks();
  auto c = h.connect();
  auto other = h.connect();
  c.send(tunnelPolicy(SADB_X_SPDADD, IPSEC_DIR_OUTBOUND));
  h.pump();
  const auto ids = marksAsked(h);
  ASSERT_EQ(ids.size(), 1u);
  ASSERT_NE(ids[0], 0u);
  // Stored at once (SPDGET and SPDDUMP see it), but nobody hears of it yet.
  EXPECT_EQ(h.server().spd().size(), 1u);
  EXPECT_TRUE(c.drain().empty());
  EXPECT_TRUE(other.drain().empty());
  EXPECT_TRUE(forwarderPushes(h).empty());

  h.answerMark(ids[0]);
  EXPECT_EQ(forwarderPushes(h), std::vector<std::string>{"add 9"});
  auto r = c.drain();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(parsed(r[0]).msg().sadb_msg_type, SADB_X_SPDADD);
  EXPECT_EQ(parsed(r[0]).msg().sadb_msg_errno, 0);
  EXPECT_EQ(other.drain().size(), 1u);  // the broadcast, with the reply
  EXPECT_EQ(h.stat("spd_pushes_awaited_marks"), 1u);
}

TEST(OutboundMarks, ADeleteAfterADeferredAddReachesTheForwarderAfterIt) {
  Harness h;
  h.holdMarks();
  auto c = h.connect();
  auto other = h.connect();
  c.send(tunnelPolicy(SADB_X_SPDADD, IPSEC_DIR_OUTBOUND));
  h.pump();
  const auto ids = marksAsked(h);
  ASSERT_EQ(ids.size(), 1u);
  // Another client deletes it meanwhile: the SPD forgets it and that client
  // is answered, but the forwarder must not see the delete before the add.
  other.send(tunnelPolicy(SADB_X_SPDDELETE, IPSEC_DIR_OUTBOUND));
  other.send(tunnelPolicy(SADB_X_SPDADD, IPSEC_DIR_INBOUND));  // needs no mark, still queued behind
  h.pump();
  EXPECT_EQ(h.server().spd().size(), 1u);
  EXPECT_EQ(typesOf(other.drain()), (std::vector<std::uint8_t>{SADB_X_SPDDELETE, SADB_X_SPDADD}));
  EXPECT_TRUE(forwarderPushes(h).empty());

  h.answerMark(ids[0]);
  EXPECT_EQ(forwarderPushes(h), (std::vector<std::string>{"add 9", "delete 9", "add 16"}));
}

TEST(OutboundMarks, AClientsLaterRequestsWaitBehindItsDeferredOne) {
  Harness h;
  h.holdMarks();
  auto c = h.connect();
  c.send(tunnelPolicy(SADB_X_SPDADD, IPSEC_DIR_OUTBOUND));
  c.send(tunnelPolicy(SADB_X_SPDADD, IPSEC_DIR_OUTBOUND));  // EEXIST, but only after the first answer
  c.send(tunnelPolicy(SADB_X_SPDADD, IPSEC_DIR_INBOUND));
  h.pump();
  const auto ids = marksAsked(h);
  ASSERT_EQ(ids.size(), 1u);
  EXPECT_TRUE(c.drain().empty());
  EXPECT_EQ(h.server().spd().size(), 1u);  // the later two were not handled yet

  h.answerMark(ids[0]);
  auto r = c.drain();
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(parsed(r[0]).msg().sadb_msg_errno, 0);
  EXPECT_EQ(parsed(r[1]).msg().sadb_msg_errno, EEXIST);
  EXPECT_EQ(parsed(r[2]).msg().sadb_msg_errno, 0);
  EXPECT_EQ(parsed(r[2]).policy()->dir, IPSEC_DIR_INBOUND);
  EXPECT_EQ(forwarderPushes(h), (std::vector<std::string>{"add 9", "add 16"}));
}

TEST(OutboundMarks, PoliciesWithNothingToMarkAreAnsweredAndPushedAtOnce) {
  Harness h;
  h.holdMarks();
  auto c = h.connect();
  c.send(tunnelPolicy(SADB_X_SPDADD, IPSEC_DIR_INBOUND));
  c.send(tunnelPolicy(SADB_X_SPDADD, IPSEC_DIR_FWD));
  c.send(tunnelPolicy(SADB_X_SPDADD, IPSEC_DIR_OUTBOUND, IPSEC_POLICY_DISCARD));
  h.pump();
  EXPECT_TRUE(marksAsked(h).empty());
  EXPECT_EQ(typesOf(c.drain()), (std::vector<std::uint8_t>{SADB_X_SPDADD, SADB_X_SPDADD, SADB_X_SPDADD}));
  EXPECT_EQ(forwarderPushes(h).size(), 3u);
  EXPECT_EQ(h.stat("spd_pushes_awaited_marks"), 0u);
}

TEST(OutboundMarks, ARestartedForwarderGetsAWaitingPolicyOnlyAfterKeydbsAnswer) {
  Harness h;
  h.holdMarks();
  auto c = h.connect();
  c.send(tunnelPolicy(SADB_X_SPDADD, IPSEC_DIR_INBOUND));
  c.send(tunnelPolicy(SADB_X_SPDADD, IPSEC_DIR_OUTBOUND));
  h.pump();
  const auto ids = marksAsked(h);
  ASSERT_EQ(ids.size(), 1u);
  h.restartDataPlane();
  // The whole SPD but the policy whose marks the broker may not have yet.
  EXPECT_EQ(forwarderPushes(h), (std::vector<std::string>{"flush", "add 8"}));
  h.answerMark(ids[0]);
  EXPECT_EQ(forwarderPushes(h), std::vector<std::string>{"add 17"});
}

TEST(OutboundMarks, AMigratedPolicyReachesTheForwarderAndTheSocketsOnlyAfterKeydbsAnswer) {
  Harness h;
  h.holdMarks();
  auto km = h.connect();
  km.send(tunnelPolicy(SADB_X_SPDADD, IPSEC_DIR_OUTBOUND));
  h.pump();
  auto ids = marksAsked(h);
  ASSERT_EQ(ids.size(), 1u);
  h.answerMark(ids[0]);
  km.drain();
  forwarderPushes(h);

  // X_MIGRATE of the tunnel's source: keydb moves the SAs, then marks them.
  const pfkey::SockAddress moved = v4(192, 0, 2, 9);
  pfkey::Builder b(SADB_X_MIGRATE, SADB_SATYPE_ESP, 9, 4242);
  b.address(SADB_EXT_ADDRESS_SRC, kNet1, 24, IPSEC_ULPROTO_ANY);
  b.address(SADB_EXT_ADDRESS_DST, kNet2, 24, IPSEC_ULPROTO_ANY);
  pfkey::PolicyFields pf{IPSEC_POLICY_IPSEC, IPSEC_DIR_OUTBOUND, 0, 0, {}};
  pf.requests.push_back({IPPROTO_ESP, IPSEC_MODE_TUNNEL, IPSEC_LEVEL_REQUIRE, 0, kLocal, kPeer});
  pf.requests.push_back({IPPROTO_ESP, IPSEC_MODE_TUNNEL, IPSEC_LEVEL_REQUIRE, 0, moved, kPeer});
  b.policy(pf);
  km.send(b.finish());
  h.pump();
  auto req = h.keydbRequest();
  ASSERT_TRUE(req.reader) << req.error;
  ASSERT_EQ(req.reader->getRoot<proto::PolicyToKeydb>().which(), proto::PolicyToKeydb::MIGRATE);
  capnp::MallocMessageBuilder reply;
  auto r = reply.initRoot<proto::KeydbToPolicy>().initReply();
  r.setRequestId(req.reader->getRoot<proto::PolicyToKeydb>().getRequestId());
  h.answerKeydb(reply);
  ids = marksAsked(h);
  ASSERT_EQ(ids.size(), 1u);
  EXPECT_TRUE(km.drain().empty());
  EXPECT_TRUE(forwarderPushes(h).empty());
  EXPECT_EQ(*h.server().spd().all().at(0).requests.at(0).tunnelSrc, moved);  // the SPD moved at once

  h.answerMark(ids[0]);
  EXPECT_EQ(typesOf(km.drain()), std::vector<std::uint8_t>{SADB_X_MIGRATE});
  EXPECT_EQ(forwarderPushes(h), std::vector<std::string>{"add 9"});
}

TEST(OutboundMarks, AnAnswerToMarksNeverAskedClosesKeydbsChannel) {
  bool lost = false;
  ServerOptions options;
  options.onPeerLost = [&](std::string_view) { lost = true; };
  Harness h(options);
  h.answerMark(77);
  EXPECT_TRUE(lost);
}

}  // namespace
}  // namespace ipsec::policy::test
