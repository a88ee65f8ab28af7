// SPSC rings over a region: bursts, wraparound, full ring, two threads, two
// processes, and a peer that corrupts the indices (lib/ring/spsc.h).
#include "ring/spsc.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <thread>
#include <vector>

#include "ring/doorbell.h"
#include "ring/endpoints.h"
#include "ring/region.h"

namespace ipsec::ring {
namespace {

using proto::CryptoCompletion;
using proto::CryptoRequest;

RegionConfig smallConfig() { return RegionConfig{8, 8, 4, 4096}; }

CryptoRequest request(std::uint64_t cookie) {
  CryptoRequest r{};
  r.cookie = cookie;
  r.op = proto::CryptoOp::kSeal;
  r.segmentCount = 1;
  r.length = static_cast<std::uint32_t>(cookie % 1000 + 1);
  return r;
}

TEST(Spsc, BurstGoesThroughInOrder) {
  Region region = Region::create(smallConfig());
  auto producer = requestProducer(region);
  auto consumer = requestConsumer(region);
  std::array<CryptoRequest, 5> in{request(1), request(2), request(3), request(4), request(5)};
  EXPECT_EQ(producer.enqueue(in), 5u);
  EXPECT_EQ(consumer.available(), 5u);
  std::array<CryptoRequest, 8> out{};
  ASSERT_EQ(consumer.dequeue(out), 5u);
  for (std::size_t i = 0; i < 5; ++i) EXPECT_EQ(out[i].cookie, i + 1);
  EXPECT_EQ(consumer.dequeue(out), 0u);
}

TEST(Spsc, FullRingTakesOnlyWhatFits) {
  Region region = Region::create(smallConfig());
  auto producer = requestProducer(region);
  auto consumer = requestConsumer(region);
  std::vector<CryptoRequest> in;
  for (int i = 0; i < 11; ++i) in.push_back(request(i));
  EXPECT_EQ(producer.enqueue(in), 8u);
  EXPECT_EQ(producer.freeSlots(), 0u);
  EXPECT_EQ(producer.enqueue(std::span<const CryptoRequest>(in).subspan(8)), 0u);
  std::array<CryptoRequest, 3> out{};
  EXPECT_EQ(consumer.dequeue(out), 3u);
  EXPECT_EQ(producer.enqueue(std::span<const CryptoRequest>(in).subspan(8)), 3u);
  std::array<CryptoRequest, 16> rest{};
  ASSERT_EQ(consumer.dequeue(rest), 8u);
  for (std::size_t i = 0; i < 8; ++i) EXPECT_EQ(rest[i].cookie, i + 3);
}

TEST(Spsc, WrapsAroundManyTimesWithUnevenBursts) {
  Region region = Region::create(smallConfig());
  auto producer = completionProducer(region);
  auto consumer = completionConsumer(region);
  std::uint64_t next = 0, expected = 0;
  std::array<CryptoCompletion, 7> burst{};
  for (int round = 0; round < 10000; ++round) {
    const std::size_t want = 1 + round % 7;
    for (std::size_t i = 0; i < want; ++i) burst[i] = request(next + i);
    next += producer.enqueue(std::span<const CryptoCompletion>(burst.data(), want));
    std::array<CryptoCompletion, 5> out{};
    const std::size_t got = consumer.dequeue(std::span<CryptoCompletion>(out.data(), 1 + round % 5));
    for (std::size_t i = 0; i < got; ++i) ASSERT_EQ(out[i].cookie, expected++);
  }
  EXPECT_GT(next, 8u * 1000);  // the indices went round the ring many times
  EXPECT_FALSE(producer.peerCorrupt());
  EXPECT_FALSE(consumer.peerCorrupt());
}

TEST(Spsc, ProducerIndexFarAheadIsClampedToOneRing) {
  Region region = Region::create(smallConfig());
  auto consumer = requestConsumer(region);
  // A forwarder claims a million requests; the worker reads at most a ring's
  // worth of masked slots and learns that the peer is corrupt.
  region.requestControl()->producerIndex = 1'000'000;
  std::vector<CryptoRequest> out(64);
  EXPECT_EQ(consumer.dequeue(out), 8u);
  EXPECT_TRUE(consumer.peerCorrupt());
}

TEST(Spsc, ProducerIndexBehindTheConsumerIsClampedToo) {
  Region region = Region::create(smallConfig());
  auto producer = requestProducer(region);
  auto consumer = requestConsumer(region);
  std::array<CryptoRequest, 4> in{request(1), request(2), request(3), request(4)};
  producer.enqueue(in);
  std::array<CryptoRequest, 4> out{};
  ASSERT_EQ(consumer.dequeue(out), 4u);
  region.requestControl()->producerIndex = 3;  // moved backwards: 0xffffffff "available"
  std::vector<CryptoRequest> many(1000);
  EXPECT_LE(consumer.dequeue(many), 8u);
  EXPECT_TRUE(consumer.peerCorrupt());
}

TEST(Spsc, ConsumerIndexAheadOfProducerMakesTheProducerStop) {
  Region region = Region::create(smallConfig());
  auto producer = completionProducer(region);
  std::array<CryptoCompletion, 4> in{request(1), request(2), request(3), request(4)};
  ASSERT_EQ(producer.enqueue(in), 4u);
  ASSERT_EQ(producer.enqueue(in), 4u);  // full now
  region.completionControl()->consumerIndex = 500;  // "read" what was never written
  EXPECT_EQ(producer.enqueue(in), 0u);
  EXPECT_EQ(producer.freeSlots(), 0u);
  EXPECT_TRUE(producer.peerCorrupt());
}

TEST(Spsc, OwnIndexOverwrittenByPeerIsIgnored) {
  Region region = Region::create(smallConfig());
  auto producer = requestProducer(region);
  auto consumer = requestConsumer(region);
  std::array<CryptoRequest, 2> in{request(7), request(8)};
  producer.enqueue(in);
  region.requestControl()->consumerIndex = 12345;  // the consumer keeps its own
  std::array<CryptoRequest, 2> out{};
  ASSERT_EQ(consumer.dequeue(out), 2u);
  EXPECT_EQ(out[0].cookie, 7u);
  EXPECT_EQ(out[1].cookie, 8u);
}

TEST(Spsc, TwoThreadsPassAMillionDescriptorsInOrder) {
  Region region = Region::create(RegionConfig{256, 256, 4, 4096});
  auto producer = requestProducer(region);
  auto consumer = requestConsumer(region);
  constexpr std::uint64_t kCount = 1'000'000;
  std::thread producerThread([&] {
    std::array<CryptoRequest, 32> burst{};
    std::uint64_t next = 0;
    while (next < kCount) {
      const std::size_t n = std::min<std::uint64_t>(32, kCount - next);
      for (std::size_t i = 0; i < n; ++i) burst[i] = request(next + i);
      next += producer.enqueue(std::span<const CryptoRequest>(burst.data(), n));
    }
  });
  std::array<CryptoRequest, 32> out{};
  std::uint64_t expected = 0;
  bool ordered = true;
  while (expected < kCount) {
    const std::size_t n = consumer.dequeue(out);
    for (std::size_t i = 0; i < n; ++i) ordered &= out[i].cookie == expected++ && out[i].length == (out[i].cookie % 1000 + 1);
  }
  producerThread.join();
  EXPECT_TRUE(ordered);
  EXPECT_EQ(consumer.available(), 0u);
}

// The real topology: a worker process attaches to the memfd it was handed,
// echoes requests as completions, sleeps on its doorbell when idle.
TEST(Spsc, ForkedWorkerEchoesRequestsAsCompletions) {
  Region region = Region::create(RegionConfig{64, 64, 4, 4096});
  Doorbell workerBell = Doorbell::create();
  Doorbell forwarderBell = Doorbell::create();
  constexpr std::uint64_t kCount = 200'000;

  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    AttachResult attached = Region::attach(control::UniqueFd(::fcntl(region.fd(), F_DUPFD_CLOEXEC, 0)));
    if (!attached.region) ::_exit(2);
    auto requests = requestConsumer(*attached.region);
    auto completions = completionProducer(*attached.region);
    std::array<CryptoRequest, 32> burst{};
    std::uint64_t done = 0;
    while (done < kCount) {
      const std::size_t n = requests.dequeue(burst);
      if (n == 0) {
        if (!sleepUntilReady(requests, workerBell, 5000) && requests.available() == 0) ::_exit(3);
        continue;
      }
      for (std::size_t i = 0; i < n; ++i) burst[i].status = proto::CryptoStatus::kOk;
      std::size_t sent = 0;
      while (sent < n) {
        sent += completions.enqueue(std::span<const CryptoCompletion>(burst.data() + sent, n - sent));
        notifyPeer(completions, forwarderBell);
      }
      done += n;
    }
    ::_exit(requests.peerCorrupt() ? 4 : 0);
  }

  auto requests = requestProducer(region);
  auto completions = completionConsumer(region);
  std::array<CryptoRequest, 32> burst{};
  std::array<CryptoCompletion, 32> back{};
  std::uint64_t sent = 0, received = 0;
  bool ordered = true;
  while (received < kCount) {
    if (sent < kCount) {
      const std::size_t n = std::min<std::uint64_t>(32, kCount - sent);
      for (std::size_t i = 0; i < n; ++i) burst[i] = request(sent + i);
      sent += requests.enqueue(std::span<const CryptoRequest>(burst.data(), n));
      notifyPeer(requests, workerBell);
    }
    const std::size_t n = completions.dequeue(back);
    for (std::size_t i = 0; i < n; ++i) {
      ordered &= back[i].cookie == received++ && back[i].status == proto::CryptoStatus::kOk;
    }
    if (n == 0 && sent == kCount) {
      ASSERT_TRUE(sleepUntilReady(completions, forwarderBell, 5000) || completions.available() > 0);
    }
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_TRUE(ordered);
}

}  // namespace
}  // namespace ipsec::ring
