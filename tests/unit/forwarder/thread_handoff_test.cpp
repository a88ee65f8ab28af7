// The forwarder threads' hand-off queue (services/forwarder/thread_handoff.h)
// and the SA owner function: order, bounds, the full queue refused (the
// forwarder counts it as thread_handoff_drop_full), one wake-up per burst,
// and a real producer and consumer thread (run under ThreadSanitizer by
// scripts/test). The owner function must agree with each thread's share of
// the crypto workers, or a thread would index a worker it does not have.
#include "thread_handoff.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

namespace ipsec::forwarder {
namespace {

struct Slot {
  std::uint64_t seq = 0;
  std::vector<std::uint8_t> bytes;
};

TEST(HandoffQueue, KeepsOrderAndRefusesAPushWhenFull) {
  HandoffQueue<Slot> q(4);
  EXPECT_EQ(q.front(), nullptr);
  for (std::uint64_t i = 0; i < 4; ++i) {
    Slot* s = q.beginPush();
    ASSERT_NE(s, nullptr) << i;
    s->seq = i;
    q.commitPush();
  }
  EXPECT_EQ(q.beginPush(), nullptr) << "a fifth packet in four slots";
  ASSERT_NE(q.front(), nullptr);
  EXPECT_EQ(q.front()->seq, 0u);
  q.pop();
  Slot* again = q.beginPush();
  ASSERT_NE(again, nullptr) << "a popped slot is free again";
  again->seq = 4;
  q.commitPush();
  for (std::uint64_t i = 1; i <= 4; ++i) {
    ASSERT_NE(q.front(), nullptr);
    EXPECT_EQ(q.front()->seq, i);
    q.pop();
  }
  EXPECT_EQ(q.front(), nullptr);
}

TEST(HandoffQueue, WakesTheConsumerOncePerDrain) {
  HandoffQueue<Slot> q(8);
  EXPECT_TRUE(q.wakeConsumer());
  EXPECT_FALSE(q.wakeConsumer()) << "a wake-up is already on its way";
  q.beginDrain();
  EXPECT_TRUE(q.wakeConsumer()) << "a push after the drain began must wake it again";
}

TEST(HandoffQueue, AProducerAndAConsumerThreadPassEveryPacketInOrderIntact) {
  constexpr std::uint64_t kPackets = 200000;
  HandoffQueue<Slot> q(64);
  std::uint64_t refused = 0;
  std::thread producer([&] {
    for (std::uint64_t i = 0; i < kPackets;) {
      Slot* s = q.beginPush();
      if (!s) {
        ++refused;
        std::this_thread::yield();
        continue;
      }
      s->seq = i;
      s->bytes.assign(1 + i % 61, static_cast<std::uint8_t>(i));
      q.commitPush();
      ++i;
    }
  });
  std::uint64_t next = 0;
  bool intact = true;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (next < kPackets && std::chrono::steady_clock::now() < deadline) {
    Slot* s = q.front();
    if (!s) {
      std::this_thread::yield();
      continue;
    }
    intact = intact && s->seq == next && s->bytes.size() == 1 + next % 61 &&
             s->bytes.back() == static_cast<std::uint8_t>(next);
    q.pop();
    ++next;
  }
  producer.join();
  EXPECT_EQ(next, kPackets);
  EXPECT_TRUE(intact);
  (void)refused;  // how often the consumer fell behind: timing, not a result
}

TEST(HandoffQueue, AProducerShortOfRoomIsToldOnceAfterAPop) {
  HandoffQueue<Slot> q(4);
  EXPECT_TRUE(q.hasRoom(4));
  for (int i = 0; i < 3; ++i) {
    q.beginPush();
    q.commitPush();
  }
  EXPECT_TRUE(q.hasRoom(1));
  q.pop();
  EXPECT_FALSE(q.producerWantsRoom()) << "nobody waited";
  EXPECT_FALSE(q.hasRoom(3)) << "two slots free";
  q.pop();
  EXPECT_TRUE(q.producerWantsRoom()) << "the waiting producer must be restarted";
  EXPECT_FALSE(q.producerWantsRoom()) << "once";
  EXPECT_TRUE(q.hasRoom(3));
}

// A producer that stops when short of room and goes on only when told (as a
// forwarder's stalled TUN reads do) must never wait forever: the consumer's
// last drain and the producer's last look cannot both miss each other.
TEST(HandoffQueue, AStalledProducerIsAlwaysRestarted) {
  constexpr std::uint64_t kPackets = 100000;
  HandoffQueue<Slot> q(4);
  std::atomic<bool> restart{false};
  std::atomic<bool> lost{false};
  std::thread producer([&] {
    for (std::uint64_t i = 0; i < kPackets && !lost;) {
      if (!q.hasRoom(1)) {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
        while (!restart.exchange(false)) {
          if (std::chrono::steady_clock::now() > deadline) {
            lost = true;
            return;
          }
          std::this_thread::yield();
        }
        continue;
      }
      Slot* s = q.beginPush();
      ASSERT_NE(s, nullptr) << "room was promised";
      s->seq = i++;
      q.commitPush();
    }
  });
  std::uint64_t next = 0;
  bool ordered = true;
  while (next < kPackets && !lost) {
    Slot* s = q.front();
    if (!s) {
      std::this_thread::yield();
      continue;
    }
    ordered = ordered && s->seq == next;
    q.pop();
    ++next;
    if (q.producerWantsRoom()) restart = true;
  }
  producer.join();
  EXPECT_FALSE(lost) << "the producer waited for a restart that never came, at packet " << next;
  EXPECT_EQ(next, kPackets);
  EXPECT_TRUE(ordered);
}

TEST(SaOwnerThread, TheOwnerDrivesTheSasWorkerForEveryShape) {
  for (unsigned workers = 1; workers <= 16; ++workers) {
    for (unsigned threads = 1; threads <= workers; ++threads) {
      for (std::uint32_t index = 0; index < 1000; ++index) {
        const unsigned owner = saOwnerThread(index, workers, threads);
        ASSERT_LT(owner, threads);
        const unsigned worker = index % workers;  // worker_pin.cpp
        // Thread t drives workers t, t + threads, ...: the SA's worker is one of its owner's ...
        ASSERT_EQ(worker % threads, owner) << workers << " workers, " << threads << " threads, SA " << index;
        // ... at local index worker / threads, within the owner's share.
        const unsigned share = (workers - owner + threads - 1) / threads;
        ASSERT_LT(worker / threads, share);
      }
    }
  }
}

TEST(SaOwnerThread, OneThreadOwnsEverySa) {
  for (std::uint32_t index = 0; index < 100; ++index) EXPECT_EQ(saOwnerThread(index, 4, 1), 0u);
}

}  // namespace
}  // namespace ipsec::forwarder
