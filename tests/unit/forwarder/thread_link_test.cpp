// One forwarder thread's link to the others (services/forwarder/
// thread_link.cpp), two or three links wired as ThreadGroup wires them, each
// on an io_context of its own, run here by hand (poll) so that every wake-up
// and restart is seen: who owns an SA and which local worker takes it, a
// hand-off copied and its owner woken once per burst, the drain in order
// with a slot that must wait left first in line, a full queue refusing room
// (counted) and the producer told to read again once the owner has taken
// some, a drop when full all the same, and the stats shares gathered from a
// thread that answers on its own OS thread.
#include "thread_link.h"

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace ipsec::forwarder {
namespace {

namespace asio = boost::asio;

// Threads 0..n-1 with their links joined, counting what each link asks of its Forwarder.
struct Group {
  explicit Group(unsigned n, unsigned totalWorkers) {
    for (unsigned t = 0; t < n; ++t) {
      ios.push_back(std::make_unique<asio::io_context>(1));
      links.push_back(std::make_unique<ThreadLink>(*ios.back()));
    }
    drains.assign(n, 0);
    restarts.assign(n, 0);
    std::vector<ThreadLink*> peers;
    for (auto& l : links) peers.push_back(l.get());
    for (unsigned t = 0; t < n; ++t) {
      ThreadLink::Hooks hooks{[this, t] { ++drains[t]; }, [this, t] { ++restarts[t]; },
                              [this, t] {
                                StatsShare s;
                                s.counters.tun_in_packets = 100 + t;
                                s.handoff = links[t]->counts();
                                return s;
                              }};
      links[t]->join({t, n, totalWorkers, peers, {}, stopping}, std::move(hooks));
    }
  }
  void poll(unsigned t) {
    ios[t]->restart();
    ios[t]->poll();
  }
  bool handOff(unsigned from, unsigned to, std::uint8_t mark, std::size_t length = 100) {
    std::vector<std::uint8_t> bytes(length, mark);
    Outer outer;
    outer.espOffset = mark;
    return links[from]->handOff(to, true, mark, outer, bytes);
  }

  std::vector<std::unique_ptr<asio::io_context>> ios;
  std::vector<std::unique_ptr<ThreadLink>> links;
  std::vector<int> drains, restarts;
  std::shared_ptr<std::atomic<bool>> stopping = std::make_shared<std::atomic<bool>>(false);
};

TEST(ThreadLink, OwnerAndLocalWorkerFollowTheSaWorker) {
  Group g(2, 4);  // workers 0, 2 on thread 0 (local 0, 1); 1, 3 on thread 1
  for (std::uint32_t sa = 0; sa < 16; ++sa) {
    const unsigned worker = sa % 4;
    EXPECT_EQ(g.links[0]->ownerOf(sa), worker % 2) << sa;
    EXPECT_EQ(g.links[0]->owns(sa), worker % 2 == 0) << sa;
    EXPECT_EQ(g.links[1]->owns(sa), worker % 2 == 1) << sa;
    EXPECT_EQ(g.links[worker % 2]->localWorkerOf(sa), worker / 2) << sa;
    EXPECT_EQ(g.links[1 - worker % 2]->localWorkerOf(sa), 0u) << sa;  // not ours: our first
  }
}

TEST(ThreadLink, AloneHasRoomAndNothingToDrain) {
  asio::io_context io;
  ThreadLink link(io);
  link.setTotalWorkers(3);
  EXPECT_FALSE(link.several());
  EXPECT_TRUE(link.room(1000));
  EXPECT_EQ(link.ownerOf(5), 0u);
  EXPECT_EQ(link.localWorkerOf(5), 2u);
  EXPECT_FALSE(link.drain(32, [](HandoffSlot&) { return true; }).more);
}

TEST(ThreadLink, HandOffWakesTheOwnerOncePerBurstAndDrainsInOrder) {
  Group g(2, 2);
  ASSERT_TRUE(g.handOff(0, 1, 1));
  ASSERT_TRUE(g.handOff(0, 1, 2, 300));
  g.poll(1);
  EXPECT_EQ(g.drains[1], 1);  // two packets, one wake-up
  EXPECT_EQ(g.links[0]->counts().handedOff, 2u);
  std::vector<std::uint8_t> marks;
  const auto d = g.links[1]->drain(32, [&](HandoffSlot& s) {
    EXPECT_TRUE(g.links[1]->taking());
    EXPECT_TRUE(s.inbound);
    EXPECT_EQ(s.outer.espOffset, s.saIndex);
    EXPECT_EQ(s.length, s.saIndex == 1 ? 100u : 300u);
    marks.push_back(s.bytes[s.length - 1]);
    return true;
  });
  EXPECT_FALSE(g.links[1]->taking());
  EXPECT_EQ(marks, (std::vector<std::uint8_t>{1, 2}));
  EXPECT_FALSE(d.more);
  EXPECT_FALSE(d.outbound);
  // After a drain the next push wakes again.
  ASSERT_TRUE(g.handOff(0, 1, 3));
  g.poll(1);
  EXPECT_EQ(g.drains[1], 2);
}

TEST(ThreadLink, ASlotThatMustWaitStaysFirstInLine) {
  Group g(2, 2);
  for (std::uint8_t m = 1; m <= 3; ++m) ASSERT_TRUE(g.handOff(1, 0, m));
  int calls = 0;
  auto d = g.links[0]->drain(32, [&](HandoffSlot& s) { return ++calls < 2 || s.saIndex != 2; });
  EXPECT_TRUE(d.more);  // slot 2 waited: 2 and 3 left
  std::vector<std::uint32_t> rest;
  d = g.links[0]->drain(32, [&](HandoffSlot& s) {
    rest.push_back(s.saIndex);
    return true;
  });
  EXPECT_EQ(rest, (std::vector<std::uint32_t>{2, 3}));
  EXPECT_FALSE(d.more);
}

TEST(ThreadLink, DrainTakesABurstPerQueueAtATime) {
  Group g(2, 2);
  for (int i = 0; i < 40; ++i) ASSERT_TRUE(g.handOff(0, 1, 1));
  std::size_t taken = 0;
  const auto d = g.links[1]->drain(32, [&](HandoffSlot&) { return ++taken > 0; });
  EXPECT_EQ(taken, 32u);
  EXPECT_TRUE(d.more);
}

TEST(ThreadLink, AFullQueueRefusesRoomAndTheOwnerRestartsTheProducer) {
  Group g(3, 3);
  for (std::size_t i = 0; i + 1 < ThreadLink::kHandoffSlots; ++i) ASSERT_TRUE(g.handOff(0, 2, 1));
  EXPECT_TRUE(g.links[0]->room(1));
  EXPECT_FALSE(g.links[0]->room(2));  // one slot free in the queue to thread 2
  EXPECT_EQ(g.links[0]->counts().stalls, 1u);
  ASSERT_TRUE(g.handOff(0, 2, 1));
  EXPECT_FALSE(g.handOff(0, 2, 1));  // full all the same: dropped, counted
  EXPECT_EQ(g.links[0]->counts().dropFull, 1u);
  EXPECT_TRUE(g.links[1]->room(32));  // thread 1's queues are empty
  // Thread 2 takes some: thread 0 (which asked for room) is told, once; thread 1 is not.
  g.links[2]->drain(4, [](HandoffSlot&) { return true; });
  g.poll(0);
  g.poll(1);
  EXPECT_EQ(g.restarts[0], 1);
  EXPECT_EQ(g.restarts[1], 0);
  g.links[2]->drain(4, [](HandoffSlot&) { return true; });
  g.poll(0);
  EXPECT_EQ(g.restarts[0], 1);  // nobody asked since
  EXPECT_TRUE(g.links[0]->room(8));
}

TEST(ThreadLink, TooLongForASlotIsDropped) {
  Group g(2, 2);
  EXPECT_FALSE(g.handOff(0, 1, 1, ThreadLink::kMaxHandoffBytes + 1));
  EXPECT_EQ(g.links[0]->counts().dropFull, 1u);
  EXPECT_TRUE(g.handOff(0, 1, 1, ThreadLink::kMaxHandoffBytes));
}

TEST(ThreadLink, StatsSharesComeFromEachThread) {
  Group g(2, 2);
  ASSERT_TRUE(g.handOff(1, 0, 1));
  auto guard = asio::make_work_guard(*g.ios[1]);
  std::thread other([&] { g.ios[1]->run(); });
  Counters now;
  now.tun_in_packets = 100;
  StatsShare own;
  own.counters = now;
  own.handoff.tunReads = 7;
  const ThreadShares shares = g.links[0]->gatherShares(own, now);
  guard.reset();
  g.ios[1]->stop();
  other.join();
  ASSERT_EQ(shares.shares.size(), 2u);
  EXPECT_EQ(now.tun_in_packets, 100u + 101u);  // thread 1's added
  EXPECT_EQ(shares.shares[0].handoff.tunReads, 7u);
  EXPECT_EQ(shares.shares[1].handoff.handedOff, 1u);
  EXPECT_EQ(shares.extraRows(), 2u + 4u);  // a row per TUN queue, four hand-off rows
}

TEST(ThreadLink, OneThreadGathersNothing) {
  asio::io_context io;
  ThreadLink link(io);
  Counters now;
  EXPECT_TRUE(link.gatherShares({}, now).shares.empty());
  EXPECT_EQ(ThreadShares{}.extraRows(), 0u);
}

}  // namespace
}  // namespace ipsec::forwarder
