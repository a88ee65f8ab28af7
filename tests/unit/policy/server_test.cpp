// The PF_KEY server over real sockets: REGISTER, the X_SPD* messages, error
// replies, broadcast and promiscuous rules, bounded queues, forwarder pushes.
#include <gtest/gtest.h>
#include <linux/ipsec.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cerrno>

#include "harness.h"

namespace ipsec::policy::test {
namespace {

const sadb_msg& hdr(const pfkey::ParsedMessage& m) { return m.msg(); }

std::uint32_t policyId(const Bytes& reply) {
  auto m = parsed(reply);
  EXPECT_TRUE(m.policy().has_value());
  return m.policy() ? m.policy()->id : 0;
}

TEST(PfkeyServer, RegisterListsTheBrokersAlgorithmsAndEchoesSeqAndPid) {
  Harness h;
  auto c = h.connect();
  c.send(header(SADB_REGISTER, SADB_SATYPE_ESP, 7, 1234));
  h.pump();
  auto replies = c.drain();
  ASSERT_EQ(replies.size(), 1u);
  auto m = parsed(replies[0]);
  EXPECT_EQ(hdr(m).sadb_msg_type, SADB_REGISTER);
  EXPECT_EQ(hdr(m).sadb_msg_errno, 0);
  EXPECT_EQ(hdr(m).sadb_msg_seq, 7u);
  EXPECT_EQ(hdr(m).sadb_msg_pid, 1234u);
  auto find = [&](std::uint16_t ext, std::uint8_t id) -> std::optional<sadb_alg> {
    for (std::size_t i = 0; i < m.supportedCount(ext); ++i) {
      auto a = m.supportedAlg(ext, i);
      if (a && a->sadb_alg_id == id) return a;
    }
    return std::nullopt;
  };
  auto sha1 = find(SADB_EXT_SUPPORTED_AUTH, SADB_AALG_SHA1HMAC);
  ASSERT_TRUE(sha1);
  EXPECT_EQ(sha1->sadb_alg_minbits, 160);
  for (std::uint8_t id : {SADB_X_AALG_SHA2_256HMAC, SADB_X_AALG_SHA2_384HMAC, SADB_X_AALG_SHA2_512HMAC}) {
    EXPECT_TRUE(find(SADB_EXT_SUPPORTED_AUTH, id)) << int(id);
  }
  EXPECT_FALSE(find(SADB_EXT_SUPPORTED_AUTH, SADB_AALG_MD5HMAC));  // the broker has no MD5
  auto cbc = find(SADB_EXT_SUPPORTED_ENCRYPT, SADB_X_EALG_AESCBC);
  ASSERT_TRUE(cbc);
  EXPECT_EQ(cbc->sadb_alg_minbits, 128);
  EXPECT_EQ(cbc->sadb_alg_maxbits, 256);
  auto gcm = find(SADB_EXT_SUPPORTED_ENCRYPT, SADB_X_EALG_AES_GCM_ICV16);
  ASSERT_TRUE(gcm);
  EXPECT_EQ(gcm->sadb_alg_minbits, 160);
  EXPECT_EQ(gcm->sadb_alg_maxbits, 288);
  EXPECT_TRUE(find(SADB_EXT_SUPPORTED_ENCRYPT, SADB_EALG_NULL));
  EXPECT_FALSE(find(SADB_EXT_SUPPORTED_ENCRYPT, SADB_EALG_3DESCBC));
}

TEST(PfkeyServer, RegisteringTheSameSatypeTwiceIsEexist) {
  Harness h;
  auto c = h.connect();
  c.send(header(SADB_REGISTER, SADB_SATYPE_ESP));
  c.send(header(SADB_REGISTER, SADB_SATYPE_ESP));
  c.send(header(SADB_REGISTER, SADB_SATYPE_AH));
  c.send(header(SADB_REGISTER, 42));
  h.pump();
  auto r = c.drain();
  ASSERT_EQ(r.size(), 4u);
  EXPECT_EQ(parsed(r[0]).msg().sadb_msg_errno, 0);
  EXPECT_EQ(parsed(r[1]).msg().sadb_msg_errno, EEXIST);
  EXPECT_EQ(parsed(r[1]).msg().sadb_msg_len, 2);
  EXPECT_EQ(parsed(r[2]).msg().sadb_msg_errno, 0);
  EXPECT_EQ(parsed(r[3]).msg().sadb_msg_errno, EINVAL);
}

TEST(PfkeyServer, RegisterRepliesReachRegisteredSocketsOnly) {
  Harness h;
  auto registered = h.connect();
  auto asker = h.connect();
  auto bystander = h.connect();
  registered.send(header(SADB_REGISTER, SADB_SATYPE_ESP));
  h.pump();
  ASSERT_EQ(registered.drain().size(), 1u);
  asker.send(header(SADB_REGISTER, SADB_SATYPE_UNSPEC));  // setkey's: lists only
  h.pump();
  EXPECT_EQ(asker.drain().size(), 1u);
  EXPECT_EQ(registered.drain().size(), 1u);
  EXPECT_EQ(bystander.drain().size(), 0u);
}

TEST(PfkeyServer, SpdAddBroadcastsThePolicyWithItsIdAndPushesItToTheForwarder) {
  Harness h;
  auto a = h.connect();
  auto b = h.connect();
  a.send(spdAdd(SADB_X_SPDADD, IPSEC_DIR_OUTBOUND, v4(192, 0, 2, 1), v4(198, 51, 100, 2), IPSEC_POLICY_IPSEC, 3, 99));
  h.pump();
  auto ra = a.drain();
  auto rb = b.drain();
  ASSERT_EQ(ra.size(), 1u);
  ASSERT_EQ(rb.size(), 1u);
  EXPECT_EQ(ra[0], rb[0]);
  auto m = parsed(ra[0]);
  EXPECT_EQ(m.msg().sadb_msg_type, SADB_X_SPDADD);
  EXPECT_EQ(m.msg().sadb_msg_seq, 3u);
  EXPECT_EQ(m.msg().sadb_msg_pid, 99u);
  EXPECT_EQ(m.msg().sadb_msg_reserved, 1);  // Linux's refcount
  EXPECT_EQ(m.policy()->id, 9u);
  EXPECT_EQ(m.policy()->dir, IPSEC_DIR_OUTBOUND);
  ASSERT_EQ(m.policy()->requestCount, 1u);
  EXPECT_EQ(m.policy()->requests()[0].level, IPSEC_LEVEL_REQUIRE);
  EXPECT_TRUE(m.has(SADB_EXT_LIFETIME_CURRENT));
  EXPECT_EQ(m.address(SADB_EXT_ADDRESS_DST)->addr, v4(198, 51, 100, 2));

  auto f = h.forwarderMessage(1000);
  ASSERT_TRUE(f.reader) << f.error;
  auto msg = f.reader->getRoot<proto::PolicyToForwarder>();
  ASSERT_EQ(msg.which(), proto::PolicyToForwarder::ADD);
  EXPECT_EQ(msg.getAdd().getId(), 9u);
  EXPECT_EQ(msg.getAdd().getSelector().getSrc().size(), 4u);
  EXPECT_EQ(msg.getAdd().getSelector().getSrc()[0], 192);
  EXPECT_EQ(h.stat("spd_policies"), 1u);
}

TEST(PfkeyServer, SpdAddOfAnExistingSelectorIsEexistAndSpdUpdateReplacesIt) {
  Harness h;
  auto c = h.connect();
  auto req = spdAdd(SADB_X_SPDADD, IPSEC_DIR_OUTBOUND, v4(192, 0, 2, 1), v4(198, 51, 100, 2));
  c.send(req);
  c.send(req);
  c.send(spdAdd(SADB_X_SPDUPDATE, IPSEC_DIR_OUTBOUND, v4(192, 0, 2, 1), v4(198, 51, 100, 2), IPSEC_POLICY_DISCARD));
  h.pump();
  auto r = c.drain();
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(parsed(r[0]).msg().sadb_msg_errno, 0);
  EXPECT_EQ(parsed(r[1]).msg().sadb_msg_errno, EEXIST);
  EXPECT_EQ(r[1].size(), 16u);
  auto upd = parsed(r[2]);
  EXPECT_EQ(upd.msg().sadb_msg_type, SADB_X_SPDUPDATE);
  EXPECT_EQ(upd.policy()->id, 9u);
  EXPECT_EQ(upd.policy()->type, IPSEC_POLICY_DISCARD);
  EXPECT_EQ(h.server().spd().size(), 1u);
}

TEST(PfkeyServer, SpdAddRefusesBypassEntrustAndBadDirections) {
  Harness h;
  auto c = h.connect();
  c.send(spdAdd(SADB_X_SPDADD, IPSEC_DIR_OUTBOUND, v4(192, 0, 2, 1), v4(198, 51, 100, 2), IPSEC_POLICY_BYPASS));
  c.send(spdAdd(SADB_X_SPDADD, IPSEC_DIR_OUTBOUND, v4(192, 0, 2, 1), v4(198, 51, 100, 2), IPSEC_POLICY_ENTRUST));
  c.send(spdAdd(SADB_X_SPDADD, IPSEC_DIR_ANY, v4(192, 0, 2, 1), v4(198, 51, 100, 2)));
  c.send(header(SADB_X_SPDADD, 0));  // no X_POLICY, no addresses
  h.pump();
  auto r = c.drain();
  ASSERT_EQ(r.size(), 4u);
  for (const auto& b : r) {
    EXPECT_EQ(parsed(b).msg().sadb_msg_errno, EINVAL);
    EXPECT_EQ(b.size(), 16u);
  }
  EXPECT_EQ(h.server().spd().size(), 0u);
}

TEST(PfkeyServer, UniqueLevelWithoutReqidGetsOneChosenByTheServer) {
  Harness h;
  auto c = h.connect();
  pfkey::Builder b(SADB_X_SPDADD, 0, 0, 1);
  pfkey::PolicyFields p{IPSEC_POLICY_IPSEC, IPSEC_DIR_OUTBOUND, 0, 0, {}};
  p.requests.push_back({IPPROTO_ESP, IPSEC_MODE_TRANSPORT, IPSEC_LEVEL_UNIQUE, 0, {}, {}});
  b.policy(p).address(SADB_EXT_ADDRESS_SRC, v4(10, 0, 0, 1), 32, 255).address(SADB_EXT_ADDRESS_DST, v4(10, 0, 0, 2), 32, 255);
  c.send(b.finish());
  h.pump();
  auto r = c.drain();
  ASSERT_EQ(r.size(), 1u);
  auto m = parsed(r[0]);
  ASSERT_EQ(m.policy()->requestCount, 1u);
  EXPECT_EQ(m.policy()->requests()[0].level, IPSEC_LEVEL_UNIQUE);
  EXPECT_GT(m.policy()->requests()[0].reqid, static_cast<std::uint32_t>(IPSEC_MANUAL_REQID_MAX));
}

TEST(PfkeyServer, SpdDumpGoesToTheRequesterInOrderWithTheLastSeqZero) {
  Harness h;
  auto c = h.connect();
  auto other = h.connect();
  c.send(header(SADB_X_SPDDUMP, 0, 0, 77));
  h.pump();
  auto empty = c.drain();
  ASSERT_EQ(empty.size(), 1u);
  EXPECT_EQ(parsed(empty[0]).msg().sadb_msg_errno, ENOENT);

  for (std::uint8_t i = 1; i <= 3; ++i) c.send(spdAdd(SADB_X_SPDADD, IPSEC_DIR_OUTBOUND, v4(10, 0, 0, i), v4(10, 0, 1, i)));
  h.pump();
  c.drain();
  other.drain();
  c.send(header(SADB_X_SPDDUMP, 0, 0, 77));
  h.pump();
  auto r = c.drain();
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(other.drain().size(), 0u);
  const std::uint32_t seqs[] = {1, 2, 0};
  for (std::size_t i = 0; i < 3; ++i) {
    auto m = parsed(r[i]);
    EXPECT_EQ(m.msg().sadb_msg_type, SADB_X_SPDDUMP);
    EXPECT_EQ(m.msg().sadb_msg_seq, seqs[i]);
    EXPECT_EQ(m.msg().sadb_msg_pid, 77u);
    EXPECT_EQ(m.policy()->id, ((i + 1) << 3) | 1);
  }
}

TEST(PfkeyServer, SpdDeleteBySelectorAndById) {
  Harness h;
  auto c = h.connect();
  c.send(spdAdd(SADB_X_SPDADD, IPSEC_DIR_OUTBOUND, v4(10, 0, 0, 1), v4(10, 0, 0, 2)));
  c.send(spdAdd(SADB_X_SPDADD, IPSEC_DIR_INBOUND, v4(10, 0, 0, 2), v4(10, 0, 0, 1)));
  h.pump();
  c.drain();
  while (h.forwarderMessage().reader) {
  }
  // SPDDELETE names the policy by selector and direction, as setkey sends it.
  c.send(spdAdd(SADB_X_SPDDELETE, IPSEC_DIR_OUTBOUND, v4(10, 0, 0, 1), v4(10, 0, 0, 2), IPSEC_POLICY_DISCARD));
  h.pump();
  auto r = c.drain();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(parsed(r[0]).msg().sadb_msg_type, SADB_X_SPDDELETE);
  EXPECT_EQ(policyId(r[0]), 9u);
  auto f = h.forwarderMessage(1000);
  ASSERT_TRUE(f.reader);
  EXPECT_EQ(f.reader->getRoot<proto::PolicyToForwarder>().getDelete(), 9u);

  c.send(spdAdd(SADB_X_SPDDELETE, IPSEC_DIR_OUTBOUND, v4(10, 0, 0, 1), v4(10, 0, 0, 2), IPSEC_POLICY_DISCARD));
  // SPDGET and SPDDELETE2 name it by id.
  pfkey::Builder get(SADB_X_SPDGET, 0, 5, 1);
  get.policy({IPSEC_POLICY_DISCARD, IPSEC_DIR_INBOUND, 16, 0, {}});
  c.send(get.finish());
  pfkey::Builder del2(SADB_X_SPDDELETE2, 0, 6, 1);
  del2.policy({IPSEC_POLICY_DISCARD, IPSEC_DIR_INBOUND, 16, 0, {}});
  c.send(del2.finish());
  pfkey::Builder gone(SADB_X_SPDGET, 0, 7, 1);
  gone.policy({IPSEC_POLICY_DISCARD, IPSEC_DIR_INBOUND, 16, 0, {}});
  c.send(gone.finish());
  h.pump();
  r = c.drain();
  ASSERT_EQ(r.size(), 4u);
  EXPECT_EQ(parsed(r[0]).msg().sadb_msg_errno, ENOENT);
  EXPECT_EQ(parsed(r[1]).msg().sadb_msg_type, SADB_X_SPDGET);
  EXPECT_EQ(policyId(r[1]), 16u);
  EXPECT_EQ(parsed(r[2]).msg().sadb_msg_type, SADB_X_SPDDELETE2);
  EXPECT_EQ(policyId(r[2]), 16u);
  EXPECT_EQ(parsed(r[3]).msg().sadb_msg_errno, ENOENT);
  EXPECT_EQ(h.server().spd().size(), 0u);
}

// The corpus recorder echoed SPDDELETE requests; af_key.c's key_notify_policy
// sends the deleted policy in full (pfkey_xfrm_policy2msg), to every socket.
TEST(PfkeyServer, SpdDeleteBroadcastsTheDeletedPolicyInFullAsLinuxDoes) {
  Harness h;
  auto a = h.connect();
  auto b = h.connect();
  a.send(spdAdd(SADB_X_SPDADD, IPSEC_DIR_INBOUND, v4(10, 0, 0, 2), v4(10, 0, 0, 1)));
  h.pump();
  a.drain();
  b.drain();
  a.send(spdAdd(SADB_X_SPDDELETE, IPSEC_DIR_INBOUND, v4(10, 0, 0, 2), v4(10, 0, 0, 1), IPSEC_POLICY_DISCARD, 7, 55));
  h.pump();
  auto ra = a.drain();
  auto rb = b.drain();
  ASSERT_EQ(ra.size(), 1u);
  ASSERT_EQ(rb.size(), 1u);
  EXPECT_EQ(ra[0], rb[0]);
  auto m = parsed(ra[0]);
  EXPECT_EQ(m.msg().sadb_msg_type, SADB_X_SPDDELETE);
  EXPECT_EQ(m.msg().sadb_msg_errno, 0);
  EXPECT_EQ(m.msg().sadb_msg_seq, 7u);
  EXPECT_EQ(m.msg().sadb_msg_pid, 55u);
  EXPECT_TRUE(m.has(SADB_EXT_LIFETIME_HARD));
  EXPECT_TRUE(m.has(SADB_EXT_LIFETIME_SOFT));
  EXPECT_TRUE(m.has(SADB_EXT_LIFETIME_CURRENT));
  ASSERT_TRUE(m.policy());
  EXPECT_EQ(m.policy()->type, IPSEC_POLICY_IPSEC);  // the stored policy, not the request's "discard"
  EXPECT_EQ(m.policy()->dir, IPSEC_DIR_INBOUND);
  EXPECT_EQ(m.policy()->id & 7u, 0u);  // XFRM_POLICY_IN
  EXPECT_NE(m.policy()->id, 0u);
  EXPECT_EQ(m.policy()->requestCount, 1u);
}

TEST(PfkeyServer, SpdFlushAnswersTheRequesterAndBroadcastsOnlyWhenSomethingWasFlushed) {
  Harness h;
  auto c = h.connect();
  auto other = h.connect();
  c.send(header(SADB_X_SPDFLUSH, 0, 0, 5));
  h.pump();
  auto r = c.drain();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].size(), 16u);
  EXPECT_EQ(parsed(r[0]).msg().sadb_msg_errno, 0);
  EXPECT_EQ(other.drain().size(), 0u);

  c.send(spdAdd(SADB_X_SPDADD, IPSEC_DIR_OUTBOUND, v4(10, 0, 0, 1), v4(10, 0, 0, 2)));
  h.pump();
  c.drain();
  other.drain();
  while (h.forwarderMessage().reader) {
  }
  c.send(header(SADB_X_SPDFLUSH, 0, 0, 5));
  h.pump();
  EXPECT_EQ(c.drain().size(), 2u);  // its reply and the broadcast, as on Linux
  EXPECT_EQ(other.drain().size(), 1u);
  auto f = h.forwarderMessage(1000);
  ASSERT_TRUE(f.reader);
  EXPECT_EQ(f.reader->getRoot<proto::PolicyToForwarder>().which(), proto::PolicyToForwarder::FLUSH);
  EXPECT_EQ(h.server().spd().size(), 0u);
}

TEST(PfkeyServer, MalformedMessagesGetErrorRepliesAndTheServerKeepsServing) {
  Harness h;
  auto c = h.connect();
  Bytes garbage(24, 0xab);
  c.send(garbage);
  c.send(Bytes{2, 7, 0});  // shorter than a header
  auto badLen = header(SADB_X_SPDDUMP, 0, 9, 1);
  badLen[4] = 3;  // sadb_msg_len says 24 bytes, the datagram has 16
  c.send(badLen);
  c.send(header(SADB_X_PCHANGE, 0, 10, 1));  // well-formed, not served
  Bytes huge(pfkey::kMaxMessageBytes + 4096, 0);
  auto hh = header(SADB_DUMP, SADB_SATYPE_ESP, 11, 1);
  std::copy(hh.begin(), hh.end(), huge.begin());
  c.send(huge);
  c.send(header(SADB_X_SPDFLUSH, 0, 12, 1));
  h.pump();
  auto r = c.drain();
  ASSERT_EQ(r.size(), 6u);
  for (std::size_t i = 0; i < 5; ++i) {
    ASSERT_EQ(r[i].size(), 16u) << i;
    sadb_msg m{};
    std::memcpy(&m, r[i].data(), sizeof m);
    EXPECT_NE(m.sadb_msg_errno, 0) << i;
    EXPECT_EQ(m.sadb_msg_len, 2) << i;
  }
  EXPECT_EQ(r[0][1], 0xab);  // the request's own header comes back
  sadb_msg m{};
  std::memcpy(&m, r[2].data(), sizeof m);
  EXPECT_EQ(m.sadb_msg_seq, 9u);
  std::memcpy(&m, r[3].data(), sizeof m);
  EXPECT_EQ(m.sadb_msg_errno, EOPNOTSUPP);
  std::memcpy(&m, r[4].data(), sizeof m);
  EXPECT_EQ(m.sadb_msg_errno, EMSGSIZE);
  EXPECT_EQ(m.sadb_msg_seq, 11u);
  EXPECT_EQ(parsed(r[5]).msg().sadb_msg_errno, 0);
  EXPECT_EQ(h.stat("pfkey_malformed"), 3u);
  EXPECT_EQ(h.stat("pfkey_truncated"), 1u);
  EXPECT_EQ(h.stat("pfkey_errors"), 5u);
}

TEST(PfkeyServer, PromiscuousSocketsGetACopyOfEveryRequestAndMessage) {
  Harness h;
  auto normal = h.connect();
  auto promisc = h.connect();
  promisc.send(header(SADB_X_PROMISC, 1, 1, 2));
  h.pump();
  // As Linux: it was not promiscuous when it asked, then it is: the reply
  // (to all) arrives twice at it, once at the other socket.
  EXPECT_EQ(promisc.drain().size(), 2u);
  EXPECT_EQ(normal.drain().size(), 1u);

  normal.send(header(SADB_X_SPDDUMP, 0, 3, 4));  // unicast ENOENT to `normal`
  h.pump();
  auto copies = promisc.drain();
  ASSERT_EQ(copies.size(), 2u);  // the request, and the error reply
  EXPECT_EQ(parsed(copies[0]).msg().sadb_msg_errno, 0);
  EXPECT_EQ(parsed(copies[1]).msg().sadb_msg_errno, ENOENT);
  EXPECT_EQ(normal.drain().size(), 1u);

  promisc.send(header(SADB_X_PROMISC, 0, 5, 2));
  h.pump();
  EXPECT_EQ(promisc.drain().size(), 2u);  // its own request copy, then the reply once
  normal.drain();
  normal.send(header(SADB_X_SPDDUMP, 0, 6, 4));
  h.pump();
  EXPECT_EQ(promisc.drain().size(), 0u);
}

TEST(PfkeyServer, ASlowClientLosesMessagesButDoesNotStallOthers) {
  ServerOptions o;
  o.maxQueuedMessages = 4;
  Harness h(o);
  auto slow = h.adopt(/*serverSndbuf=*/1024);
  auto busy = h.connect();
  for (std::uint8_t i = 0; i < 200; ++i) {
    busy.send(spdAdd(SADB_X_SPDADD, IPSEC_DIR_OUTBOUND, v4(10, 1, 0, i), v4(10, 2, 0, i)));
    h.pump();
    ASSERT_EQ(busy.drain().size(), 1u) << int(i);
  }
  EXPECT_GT(h.stat("pfkey_enobufs"), 0u);
  auto got = slow.drain();
  EXPECT_LT(got.size(), 200u);
  EXPECT_GT(got.size(), 0u);
  EXPECT_EQ(h.server().spd().size(), 200u);
}

TEST(PfkeyServer, ManyClientsAreServedConcurrently) {
  Harness h;
  std::vector<TestClient> clients;
  for (int i = 0; i < 40; ++i) clients.push_back(h.connect());
  for (std::size_t i = 0; i < clients.size(); ++i) clients[i].send(header(SADB_REGISTER, 0, static_cast<std::uint32_t>(i)));
  h.pump();
  for (std::size_t i = 0; i < clients.size(); ++i) {
    auto r = clients[i].drain();
    ASSERT_EQ(r.size(), 1u);
    EXPECT_EQ(parsed(r[0]).msg().sadb_msg_seq, i);
  }
  EXPECT_EQ(h.stat("pfkey_clients"), 40u);
  clients.erase(clients.begin(), clients.begin() + 10);
  h.pump();
  EXPECT_EQ(h.stat("pfkey_clients"), 30u);
}

TEST(PfkeyServer, AfterADataPlaneRestartTheWholeSpdIsPushedAgain) {
  Harness h;
  auto c = h.connect();
  c.send(spdAdd(SADB_X_SPDADD, IPSEC_DIR_OUTBOUND, v4(10, 0, 0, 1), v4(10, 0, 0, 2)));
  c.send(spdAdd(SADB_X_SPDADD, IPSEC_DIR_INBOUND, v4(10, 0, 0, 2), v4(10, 0, 0, 1)));
  h.pump();
  h.restartDataPlane();
  auto first = h.forwarderMessage(1000);
  ASSERT_TRUE(first.reader);
  EXPECT_EQ(first.reader->getRoot<proto::PolicyToForwarder>().which(), proto::PolicyToForwarder::FLUSH);
  std::vector<std::uint32_t> ids;
  for (;;) {
    auto f = h.forwarderMessage(100);
    if (!f.reader) break;
    ids.push_back(f.reader->getRoot<proto::PolicyToForwarder>().getAdd().getId());
  }
  EXPECT_EQ(ids, (std::vector<std::uint32_t>{9, 16}));
}

TEST(PfkeyServer, AnAcquireFromTheForwarderReachesRegisteredSockets) {
  Harness h;
  auto km = h.connect();
  auto other = h.connect();
  km.send(header(SADB_REGISTER, SADB_SATYPE_ESP));
  km.send(spdAdd(SADB_X_SPDADD, IPSEC_DIR_OUTBOUND, v4(10, 0, 0, 1), v4(10, 0, 0, 2)));
  h.pump();
  km.drain();
  other.drain();
  // Played by the test: the forwarder's end of the channel asks for an SA.
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
  std::vector<control::UniqueFd> fds;
  fds.emplace_back(sv[0]);
  control::UniqueFd fwd(sv[1]);
  ASSERT_TRUE(h.server().onDataPlaneRestarted(fds));
  capnp::MallocMessageBuilder b;
  auto a = b.initRoot<proto::ForwarderToPolicy>().initAcquire();
  a.setPolicyId(9);
  const std::uint8_t src[] = {10, 0, 0, 1}, dst[] = {10, 0, 0, 2};
  a.setSrc(capnp::Data::Reader(src, 4));
  a.setDst(capnp::Data::Reader(dst, 4));
  a.setProto(IPPROTO_TCP);
  ASSERT_EQ(control::sendMessage(fwd.get(), b), 0);
  h.pump();
  auto r = km.drain();
  ASSERT_EQ(r.size(), 1u);
  auto m = parsed(r[0]);
  EXPECT_EQ(m.msg().sadb_msg_type, SADB_ACQUIRE);
  EXPECT_EQ(m.msg().sadb_msg_satype, SADB_SATYPE_ESP);
  EXPECT_EQ(m.msg().sadb_msg_pid, 0u);
  EXPECT_EQ(m.policy()->id, 9u);
  EXPECT_EQ(m.policy()->dir, IPSEC_DIR_OUTBOUND);
  EXPECT_TRUE(m.has(SADB_EXT_PROPOSAL));
  EXPECT_EQ(m.address(SADB_EXT_ADDRESS_DST)->addr, v4(10, 0, 0, 2));
  EXPECT_EQ(other.drain().size(), 0u);
}

// SO_PEERCRED: a client that is neither root nor in the PF_KEY group is
// refused at accept; one in the group is served. Needs root to change ids.
TEST(PfkeyServer, OnlyRootAndThePfkeyGroupMayConnect) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run a client under other ids";
  ServerOptions o;
  o.pfkeyGroup = 4711;
  Harness h(o);
  // Let the unprivileged child reach the socket; ipsecd sets these modes in production.
  ASSERT_EQ(::chmod(std::filesystem::path(h.socketPath()).parent_path().c_str(), 0711), 0);
  ASSERT_EQ(::chmod(h.socketPath().c_str(), 0666), 0);
  auto tryAs = [&](gid_t gid) {
    pid_t pid = ::fork();
    if (pid == 0) {
      if (::setgroups(0, nullptr) != 0 || ::setresgid(gid, gid, gid) != 0 || ::setresuid(65534, 65534, 65534) != 0) _exit(3);
      int fd = ::socket(AF_UNIX, SOCK_SEQPACKET, 0);
      sockaddr_un sun{};
      sun.sun_family = AF_UNIX;
      std::snprintf(sun.sun_path, sizeof sun.sun_path, "%s", h.socketPath().c_str());
      if (::connect(fd, reinterpret_cast<sockaddr*>(&sun), sizeof sun) != 0) _exit(4);
      timeval tv{5, 0};
      ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      auto req = header(SADB_REGISTER, 0);
      ::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
      std::uint8_t buf[512];
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      _exit(n > 0 ? 0 : 1);  // 0: served, 1: refused (closed)
    }
    int status = 0;
    for (int i = 0; i < 1000 && ::waitpid(pid, &status, WNOHANG) == 0; ++i) {
      h.pump();
      ::usleep(5000);
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  };
  EXPECT_EQ(tryAs(4711), 0);
  EXPECT_EQ(tryAs(4712), 1);
  EXPECT_EQ(h.stat("pfkey_clients_refused"), 1u);
}

}  // namespace
}  // namespace ipsec::policy::test
