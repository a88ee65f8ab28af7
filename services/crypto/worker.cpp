// See worker.h.
#include "worker.h"

#include <sched.h>

#include <algorithm>
#include <array>
#include <mutex>

#include "clock/clock.h"

namespace ipsec::crypto {
namespace {

// How long an idle worker polls (yielding the core each round) before it
// sleeps on its doorbell (ring/spin.h adapts it to the recent bursts): at
// least long enough to catch the next burst of a busy flow without a
// wake-up (measured on the 2-core machine: 20 µs → 0.85 Gbit/s of TCP
// through the tunnel, 100 µs → 1.1 Gbit/s, bench/tunnel_bench.py), longer
// for a flow whose bursts come up to 200 µs apart. Not longer: a ping's echo
// reply comes back 300 µs or more after its request, and polling that long
// doubled the brokers' CPU per ping without saving a wake-up (2 a round trip
// either way; compare.py at load 5).
constexpr std::uint64_t kMinSpinNs = 100000;
constexpr std::uint64_t kMaxSpinNs = 200000;

// How long an idle worker sleeps on its doorbell before it looks again by
// itself. The forwarder rings it for every burst that finds it asleep and
// stop() always does (an eventfd keeps a ring that comes before the wait), so
// this is only a safety net; at the former 100 ms an idle tunnel's brokers
// made 20 of its 28 wake-ups a second (bench/compare.py, idle).
constexpr int kIdleSleepMs = 5000;

// How long a worker sleeps on a full completion ring before it looks again
// by itself (the forwarder's ring normally wakes it first; stop() always does).
constexpr int kCompletionWaitMs = 100;

// How much of the next request's packet a worker pulls into its cache while
// it runs the current one: a full-size ESP packet. A longer one (a
// super-packet's segments) is streamed by the core's own prefetcher once the
// cipher walks into it; asking for more would only evict the packet at hand.
constexpr std::uint32_t kPrefetchBytes = 2048;

// The forwarder framed the next packet on its own core, so each of its cache
// lines would miss when the cipher reaches it: start fetching them now, for
// writing (the seal or open is in place), while the current packet runs.
// Only a descriptor that passes checkDescriptor is followed, so no address
// outside this ring's pool is ever touched, even by a prefetch.
#if defined(__x86_64__) || defined(__i386__)
#define IPSEC_PREFETCHW __attribute__((target("prfchw")))  // prefetchw: fetch the line for writing
#else
#define IPSEC_PREFETCHW
#endif
IPSEC_PREFETCHW void prefetchPacket(const proto::CryptoRequest& r, const ring::Region& region) noexcept {
  const auto& h = region.header();
  if (ring::checkDescriptor(r, h.bufferCount, h.bufferSize) != ring::DescriptorError::kNone) return;
  const std::byte* packet = region.buffer(r.bufferIndex) + r.offset;
  const std::uint32_t bytes = std::min(r.length, kPrefetchBytes);
  for (std::uint32_t at = 0; at < bytes; at += 64) __builtin_prefetch(packet + at, 1, 3);
}

}  // namespace

void handleRequest(proto::CryptoRequest& r, const ring::Region& region, SessionTable& sessions, unsigned workerId,
                   WorkerCounters& counters) noexcept {
  const auto& h = region.header();  // our validated private copy
  const ring::DescriptorError error = ring::checkDescriptor(r, h.bufferCount, h.bufferSize);
  if (error != ring::DescriptorError::kNone) {
    r.segmentFailMask = ring::allSegments(r.segmentCount);
    counters.descriptorRefused[static_cast<std::size_t>(error)].fetch_add(1, std::memory_order_relaxed);
    if (error == ring::DescriptorError::kBadOp) {
      r.status = proto::CryptoStatus::kBadOp;
      return;
    }
    counters.badDescriptor.fetch_add(1, std::memory_order_relaxed);
    r.status = proto::CryptoStatus::kBadDescriptor;
    return;
  }
  auto* buffer = reinterpret_cast<std::uint8_t*>(region.buffer(r.bufferIndex));
  r.status = sessions.process(workerId, buffer, r);
  if (r.status == proto::CryptoStatus::kBadSession) counters.badSession.fetch_add(1, std::memory_order_relaxed);
}

Worker::Worker(unsigned id, ring::Region region, ring::Doorbell requestBell, ring::Doorbell completionBell,
               SessionTable& sessions)
    : id_(id),
      region_(std::move(region)),
      requests_(ring::requestConsumer(region_)),
      completions_(ring::completionProducer(region_)),
      requestBell_(std::move(requestBell)),
      completionBell_(std::move(completionBell)),
      sessions_(sessions),
      spin_(kMinSpinNs, kMaxSpinNs) {}

Worker::~Worker() { stop(); }

void Worker::start() { thread_ = std::thread([this] { run(); }); }

void Worker::stop() {
  stop_.store(true);
  requestBell_.ring();
  if (thread_.joinable()) thread_.join();
}

void Worker::run() noexcept {
  while (!stop_.load(std::memory_order_relaxed)) {
    if (serviceBurst() != 0) {
      spin_.burstAt(clock::monotonicNs());
      continue;
    }
    const std::uint64_t until = clock::monotonicNs() + spin_.windowNs();
    bool work = false;
    while (clock::monotonicNs() < until) {
      if (requests_.available() != 0) {
        work = true;
        break;
      }
      // Yield, not pause: the forwarder (ours or the peer end's) may be
      // waiting for this core. Pausing instead while the forwarder had no
      // completion to read cost the tunnel: compare.py --quick --only
      // 'ipsecd esp gcm', 5 alternating pairs on a quiet machine (session 8):
      // TCP 1.10 vs 1.26 Gbit/s, 11.4 vs 9.8 CPU s/GB, ping after 1 s 0.87 vs 0.57 ms.
      sched_yield();
    }
    if (work) continue;
    counters_.sleeps.fetch_add(1, std::memory_order_relaxed);
    ring::sleepUntilReady(requests_, requestBell_, kIdleSleepMs);
    requestBell_.drain();
  }
}

std::size_t Worker::serviceBurst() noexcept {
  std::array<proto::CryptoRequest, kBurst> burst;
  const std::size_t n = requests_.dequeue(burst);
  if (requests_.peerCorrupt()) counters_.ringCorrupt.fetch_add(1, std::memory_order_relaxed);
  if (n == 0) return 0;
  {
    std::shared_lock lock(sessions_.mutex());
    for (std::size_t i = 0; i < n; ++i) {
      if (i + 1 < n) prefetchPacket(burst[i + 1], region_);
      handleRequest(burst[i], region_, sessions_, id_, counters_);
    }
  }
  counters_.requests.fetch_add(n, std::memory_order_relaxed);
  counters_.bursts.fetch_add(1, std::memory_order_relaxed);
  complete(std::span<const proto::CryptoCompletion>(burst.data(), n));
  return n;
}

// Every request gets its completion, in order: the forwarder's buffers come
// back only this way. While the completion ring is full (the forwarder is
// busy, or stopped reading) the worker sleeps on its doorbell instead of
// spinning; the forwarder rings it after it dequeues, and stop() rings it.
void Worker::complete(std::span<const proto::CryptoCompletion> done) noexcept {
  std::size_t sent = 0;
  while (sent < done.size() && !stop_.load(std::memory_order_relaxed)) {
    sent += completions_.enqueue(done.subspan(sent));
    ring::notifyPeer(completions_, completionBell_);
    if (sent == done.size()) break;
    counters_.completionFullSleeps.fetch_add(1, std::memory_order_relaxed);
    ring::sleepUntilReady(completions_, requestBell_, kCompletionWaitMs);
  }
}

}  // namespace ipsec::crypto
