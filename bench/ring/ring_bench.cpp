// Descriptor throughput of the request/completion rings (lib/ring).
//
// BM_RingSameThread is the baseline of this run: one thread enqueues a burst
// and dequeues it again, so it measures the copy and index cost with no
// cache-line transfer. BM_RingEchoTwoThreads is the data path's shape: the
// "forwarder" thread enqueues bursts of 32 requests and consumes completions,
// a "worker" thread echoes every request as a completion. items/s counts
// descriptors that went both ways ("sent" is the request count). Compare the
// two in the same run. Both threads spin, so on a shared 2-core machine the
// result swings with the neighbours' load: 7-22 M/s with a busy neighbour,
// far less when a third runnable thread keeps the worker off the CPU.
#include <benchmark/benchmark.h>

#include <array>
#include <atomic>
#include <thread>

#include "ring/endpoints.h"
#include "ring/region.h"

namespace ipsec::ring {
namespace {

constexpr std::size_t kBurst = 32;
const RegionConfig kConfig{1024, 1024, 16, 4096};

proto::CryptoRequest makeRequest(std::uint64_t cookie) {
  proto::CryptoRequest r{};
  r.cookie = cookie;
  r.op = proto::CryptoOp::kSeal;
  r.segmentCount = 1;
  r.length = 1400;
  return r;
}

inline void cpuRelax() { __builtin_ia32_pause(); }

void BM_RingSameThread(benchmark::State& state) {
  Region region = Region::create(kConfig);
  auto producer = requestProducer(region);
  auto consumer = requestConsumer(region);
  std::array<proto::CryptoRequest, kBurst> in{}, out{};
  for (std::size_t i = 0; i < kBurst; ++i) in[i] = makeRequest(i);
  std::uint64_t moved = 0;
  for (auto _ : state) {
    producer.enqueue(in);
    moved += consumer.dequeue(out);
    benchmark::DoNotOptimize(out);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(moved));
}
BENCHMARK(BM_RingSameThread);

void BM_RingEchoTwoThreads(benchmark::State& state) {
  Region region = Region::create(kConfig);
  std::atomic<bool> stop{false};
  std::thread worker([&] {
    auto requests = requestConsumer(region);
    auto completions = completionProducer(region);
    std::array<proto::CryptoRequest, kBurst> burst{};
    while (!stop.load(std::memory_order_relaxed)) {
      const std::size_t n = requests.dequeue(burst);
      if (n == 0) {
        cpuRelax();
        continue;
      }
      for (std::size_t i = 0; i < n; ++i) burst[i].status = proto::CryptoStatus::kOk;
      std::size_t done = 0;
      while (done < n && !stop.load(std::memory_order_relaxed)) {
        done += completions.enqueue(std::span<const proto::CryptoCompletion>(burst.data() + done, n - done));
      }
    }
  });

  auto requests = requestProducer(region);
  auto completions = completionConsumer(region);
  std::array<proto::CryptoRequest, kBurst> burst{};
  std::array<proto::CryptoCompletion, kBurst> back{};
  std::uint64_t sent = 0, received = 0;
  for (auto _ : state) {
    for (std::size_t i = 0; i < kBurst; ++i) burst[i] = makeRequest(sent + i);
    sent += requests.enqueue(burst);
    received += completions.dequeue(back);
    benchmark::DoNotOptimize(back);
  }
  while (received < sent) {
    const std::size_t n = completions.dequeue(back);
    if (n == 0) cpuRelax();
    received += n;
  }
  stop.store(true);
  worker.join();
  state.counters["sent"] = static_cast<double>(sent);
  state.SetItemsProcessed(static_cast<std::int64_t>(received));
}
BENCHMARK(BM_RingEchoTwoThreads)->UseRealTime();

}  // namespace
}  // namespace ipsec::ring

BENCHMARK_MAIN();
