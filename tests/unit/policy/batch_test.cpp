// The PF_KEY server's batching of client sockets: a burst of datagrams read
// with recvmmsg is answered in order, one client's burst does not starve
// another, replies held until the burst's end still obey the per-client
// queue bounds (every broadcast is either delivered or counted as
// pfkey_enobufs), and a truncated datagram inside a burst is answered in place.
#include <gtest/gtest.h>
#include <linux/ipsec.h>

#include <algorithm>
#include <cerrno>

#include "harness.h"

namespace ipsec::policy::test {
namespace {

// A request every server refuses (X_PCHANGE is not served): its error reply
// goes to the requester alone and carries its seq.
Bytes unserved(std::uint32_t seq) { return header(SADB_X_PCHANGE, 0, seq); }

std::vector<std::uint32_t> seqsOf(const std::vector<Bytes>& replies) {
  std::vector<std::uint32_t> seqs;
  for (const auto& r : replies) seqs.push_back(parsed(r).msg().sadb_msg_seq);
  return seqs;
}

std::vector<std::uint32_t> upTo(std::uint32_t n) {
  std::vector<std::uint32_t> v;
  for (std::uint32_t i = 0; i < n; ++i) v.push_back(i);
  return v;
}

TEST(PfkeyBatching, ABurstFromOneClientIsAnsweredInOrderWithOneReplyEach) {
  Harness h;
  auto a = h.connect();
  auto b = h.connect();
  constexpr std::uint32_t kN = 100;  // more than one recvmmsg and one readiness event's budget
  for (std::uint32_t i = 0; i < kN; ++i) {
    a.send(spdAdd(SADB_X_SPDADD, IPSEC_DIR_OUTBOUND, v4(10, 1, i / 256, i % 256), v4(10, 2, 0, 1),
                  IPSEC_POLICY_IPSEC, i));
  }
  h.pump();
  auto ra = a.drain();
  auto rb = b.drain();
  EXPECT_EQ(seqsOf(ra), upTo(kN));
  EXPECT_EQ(rb, ra);  // the broadcasts reach the other socket in the same order
  EXPECT_EQ(h.server().spd().size(), kN);
  EXPECT_EQ(h.stat("pfkey_requests"), kN);
  EXPECT_EQ(h.stat("pfkey_enobufs"), 0u);
}

TEST(PfkeyBatching, TwoBusyClientsTakeTurns) {
  Harness h;
  auto a = h.connect();
  auto b = h.connect();
  constexpr std::uint32_t kN = 100;
  for (std::uint32_t i = 0; i < kN; ++i) a.send(unserved(i));
  b.send(unserved(7));
  // One handler at a time: b's request must be answered while a's burst is
  // still being read (a readiness event takes at most 32 of a's datagrams).
  std::vector<Bytes> ra;
  bool bAnswered = false;
  for (int step = 0; step < 1000 && !bAnswered; ++step) {
    h.io().restart();
    h.io().poll_one();
    for (auto& r : a.drain()) ra.push_back(std::move(r));
    if (auto r = b.tryRecv()) {
      bAnswered = true;
      EXPECT_EQ(parsed(*r).msg().sadb_msg_seq, 7u);
      EXPECT_EQ(parsed(*r).msg().sadb_msg_errno, EOPNOTSUPP);
    }
  }
  ASSERT_TRUE(bAnswered);
  EXPECT_LT(ra.size(), kN);
  h.pump();
  for (auto& r : a.drain()) ra.push_back(std::move(r));
  EXPECT_EQ(seqsOf(ra), upTo(kN));
  EXPECT_FALSE(b.tryRecv());
}

TEST(PfkeyBatching, AFullClientSocketStillCountsEveryDroppedBroadcast) {
  ServerOptions o;
  o.maxQueuedMessages = 4;
  Harness h(o);
  auto slow = h.adopt(/*serverSndbuf=*/1024);
  auto busy = h.connect();
  constexpr std::uint32_t kN = 60;
  for (std::uint32_t i = 0; i < kN; ++i) {
    busy.send(spdAdd(SADB_X_SPDADD, IPSEC_DIR_OUTBOUND, v4(10, 1, 0, static_cast<std::uint8_t>(i)),
                     v4(10, 2, 0, 1), IPSEC_POLICY_IPSEC, i));
  }
  h.pump();
  EXPECT_EQ(seqsOf(busy.drain()), upTo(kN));
  const std::uint64_t dropped = h.stat("pfkey_enobufs");
  EXPECT_GT(dropped, 0u);
  // What the slow socket holds, then what its queue still had: every
  // broadcast is either received (in order) or counted as dropped.
  std::vector<Bytes> got;
  for (int round = 0; round < 10; ++round) {
    for (auto& r : slow.drain()) got.push_back(std::move(r));
    h.pump();
  }
  EXPECT_EQ(got.size() + dropped, kN);
  auto seqs = seqsOf(got);
  EXPECT_TRUE(std::is_sorted(seqs.begin(), seqs.end()));
  EXPECT_EQ(h.stat("pfkey_send_failed"), 0u);
  EXPECT_EQ(h.server().spd().size(), kN);
}

TEST(PfkeyBatching, ATooLargeDatagramInsideABurstIsAnsweredInItsPlace) {
  Harness h;
  auto c = h.connect();
  c.send(unserved(0));
  Bytes big = unserved(1);
  big.resize(pfkey::kMaxMessageBytes + 4096);
  c.send(big);
  c.send(unserved(2));
  h.pump();
  auto r = c.drain();
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(seqsOf(r), upTo(3));
  EXPECT_EQ(parsed(r[0]).msg().sadb_msg_errno, EOPNOTSUPP);
  EXPECT_EQ(parsed(r[1]).msg().sadb_msg_errno, EMSGSIZE);
  EXPECT_EQ(parsed(r[2]).msg().sadb_msg_errno, EOPNOTSUPP);
  EXPECT_EQ(h.stat("pfkey_truncated"), 1u);
}

TEST(PfkeyBatching, AClientThatClosesMidBurstIsForgottenAndOthersAreServed) {
  Harness h;
  auto b = h.connect();
  {
    auto a = h.connect();
    for (std::uint32_t i = 0; i < 40; ++i) a.send(unserved(i));
  }  // closed with its requests unread
  b.send(unserved(9));
  h.pump();
  auto r = b.drain();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(parsed(r[0]).msg().sadb_msg_seq, 9u);
  EXPECT_EQ(h.stat("pfkey_clients"), 1u);
}

}  // namespace
}  // namespace ipsec::policy::test
