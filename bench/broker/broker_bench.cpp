// What the crypto broker's ring hop costs: ESP seal through a real
// ipsec-crypto Worker thread against the same seals done in-process.
//
// Runs as one benchmark process with two threads; nothing is trusted or
// untrusted here, but the broker path uses the production pieces unchanged:
// a memfd Region (lib/ring), the SessionTable and Worker of services/crypto
// (compiled from their sources by this folder's CMakeLists.txt), eventfd
// doorbells, and esp::encapsulate for the framing.
//
// For each algorithm (AES-GCM-128; AES-CBC-128 + HMAC-SHA256) and inner
// payload size (64, 512, 1420 bytes), one iteration is one burst of 32 packets:
//   in-process  the benchmark thread frames each packet in a pool buffer
//               (esp::encapsulate), makes the IV as the broker does (counter
//               for GCM, CSPRNG for CBC) and calls Transform::sealWithIv;
//   broker      the benchmark thread plays the forwarder: it frames the burst
//               in pool buffers, enqueues 32 CryptoRequests, rings the
//               worker's doorbell only if the worker sleeps, and reaps
//               completions, sleeping on its completion doorbell when it has
//               no free buffer and nothing has completed (as ipsec-forwarder
//               does). Up to kInFlightBursts bursts are in flight, so framing
//               and crypto overlap on two cores as in the real pipeline.
// So the two differ only by the hop: rings, doorbells, the worker's
// descriptor checks and session lookup, the cross-core cache traffic, and the
// scheduler. At the end the program prints broker/in-process packets/s per
// size. Timing is never a failure; a seal that does not succeed is (it would
// mean the figures measure an error path).
#include <benchmark/benchmark.h>
#include <linux/pfkeyv2.h>
#include <openssl/rand.h>
#include <unistd.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "control/unique_fd.h"
#include "cryptodrv/driver.h"
#include "esp/esp.h"
#include "ring/doorbell.h"
#include "ring/endpoints.h"
#include "ring/pool.h"
#include "ring/region.h"
#include "sessions.h"
#include "worker.h"

namespace ipsec::bench {
namespace {

constexpr std::size_t kBurst = 32;
constexpr std::uint32_t kInFlightBursts = 4;
// Room before the inner packet for the ESP header and the largest IV.
constexpr std::size_t kHeadroom = 64;
constexpr std::uint32_t kSpi = 0x1001;
constexpr int kPayloadSizes[] = {64, 512, 1420};

// 2 KiB buffers hold a 1420-byte inner packet with ESP around it; the rings
// are larger than the pool so that an enqueue never finds them full.
const ring::RegionConfig kRegionConfig{256, 256, 128, 2048};

// Fixed test keys: the figures do not depend on them.
constexpr std::array<std::uint8_t, 20> kGcmKey = {0x4c, 0x80, 0xcd, 0xef, 0xbb, 0x5d, 0x10, 0xda, 0x90, 0x6a,
                                                  0xc7, 0x3c, 0x36, 0x13, 0xa6, 0x34, 0x2e, 0x44, 0x3b, 0x68};
constexpr std::array<std::uint8_t, 16> kCbcKey = {0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,
                                                  0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef};
constexpr std::array<std::uint8_t, 32> kHmacKey = {
    0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11,
    0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11};

struct Algorithm {
  const char* name;
  cryptodrv::TransformSpec spec;
};

const Algorithm kAlgorithms[] = {
    {"aes-gcm-128", {SADB_X_EALG_AES_GCM_ICV16, SADB_AALG_NONE, kGcmKey, {}, false}},
    {"aes-cbc-128+hmac-sha256", {SADB_X_EALG_AESCBC, SADB_X_AALG_SHA2_256HMAC, kCbcKey, kHmacKey, false}},
};

const cryptodrv::DriverRegistry& registry() {
  static const cryptodrv::DriverRegistry drivers = cryptodrv::DriverRegistry::withDefaultDrivers();
  return drivers;
}

std::span<std::uint8_t> bytes(std::span<std::byte> b) noexcept {
  return {reinterpret_cast<std::uint8_t*>(b.data()), b.size()};
}

control::UniqueFd dupFd(int fd) {
  control::UniqueFd copy(::dup(fd));
  if (!copy) throw std::runtime_error("dup failed");
  return copy;
}

// Fills a fresh inner packet: an IPv4 version nibble, so that encapsulate()
// picks next header 4 as for a packet read from the TUN.
void writeInnerPacket(std::span<std::uint8_t> buffer, std::size_t length) noexcept {
  std::memset(buffer.data() + kHeadroom, 0x5a, length);
  buffer[kHeadroom] = 0x45;
}

// Frames the inner packet at kHeadroom (the payload is rewritten first, as a
// TUN read would, because the previous seal left ciphertext there).
esp::EncapResult frame(std::span<std::uint8_t> buffer, std::size_t payload, std::uint32_t seq,
                       const esp::EspLayout& layout) noexcept {
  writeInnerPacket(buffer, payload);
  return esp::encapsulate(buffer, kHeadroom, payload, kSpi, seq, layout);
}

// ---- in-process baseline ------------------------------------------------------

void inProcessSeal(benchmark::State& state, const Algorithm& alg, int payload) {
  std::string error;
  auto t = registry().makeTransform(alg.spec, &error);
  if (!t) {
    state.SkipWithError(error.c_str());
    return;
  }
  const esp::EspLayout layout{t->ivLength(), t->icvLength(), t->padAlign()};
  // The same pool buffers the broker path uses, from a region of its own.
  ring::Region region = ring::Region::create(kRegionConfig);
  ring::BufferPool pool(region);
  std::array<std::uint32_t, kBurst> buffers{};
  for (auto& b : buffers) b = *pool.alloc();

  std::uint64_t ivCounter = 1;
  std::uint32_t seq = 0;
  std::uint64_t sealed = 0;
  const char* failure = nullptr;
  for (auto _ : state) {
    for (std::uint32_t index : buffers) {
      auto buffer = bytes(pool.data(index));
      const auto framed = frame(buffer, static_cast<std::size_t>(payload), ++seq, layout);
      std::uint8_t iv[cryptodrv::Transform::kMaxIvLength] = {};
      // The IV as SessionTable::makeIv makes it, so that the ratio is the hop only.
      if (t->ivIsCounter()) {
        const std::uint64_t n = ivCounter++;
        for (int i = 0; i < 8 && i < t->ivLength(); ++i) iv[t->ivLength() - 1 - i] = static_cast<std::uint8_t>(n >> (8 * i));
      } else if (RAND_bytes(iv, t->ivLength()) != 1) {
        failure = "RAND_bytes failed";
        break;
      }
      if (!framed.ok() || t->sealWithIv(buffer.data() + framed.offset, framed.length, 0, iv) != cryptodrv::Status::kOk) {
        failure = "in-process seal failed";
        break;
      }
      benchmark::DoNotOptimize(buffer.data());
    }
    if (failure) {
      state.SkipWithError(failure);
      break;
    }
    sealed += kBurst;
  }
  // The broker path's counters, zero here, so the console prints one table.
  state.counters["fwd_sleeps/burst"] = 0;
  state.counters["worker_wakeups/burst"] = 0;
  state.counters["worker_burst"] = 0;
  state.SetItemsProcessed(static_cast<std::int64_t>(sealed));
  state.SetBytesProcessed(static_cast<std::int64_t>(sealed) * payload);
}

// ---- broker path --------------------------------------------------------------

// The forwarder's half of one ring pair plus a running crypto Worker. Members
// are declared so that the worker stops before the sessions it uses go away.
class BrokerRig {
 public:
  explicit BrokerRig(const Algorithm& alg)
      : region_(ring::Region::create(kRegionConfig)),
        pool_(region_),
        requests_(ring::requestProducer(region_)),
        completions_(ring::completionConsumer(region_)),
        requestBell_(ring::Doorbell::create()),
        completionBell_(ring::Doorbell::create()),
        sessions_(registry(), 1) {
    std::uint8_t layout[3] = {};
    // Generation 1 at index 0; an IV grant no benchmark can exhaust.
    const std::string error = sessions_.create(0, 1, alg.spec, 1, std::uint64_t{1} << 62, layout);
    if (!error.empty()) throw std::runtime_error(error);
    layout_ = {layout[0], layout[1], layout[2]};
    // The worker attaches its own mapping of the same memfd, as ipsec-crypto does.
    auto attached = ring::Region::attach(dupFd(region_.fd()), &kRegionConfig);
    if (!attached.region) throw std::runtime_error(ring::toString(attached.error));
    worker_ = std::make_unique<crypto::Worker>(0, std::move(*attached.region), ring::Doorbell(dupFd(requestBell_.fd())),
                                               ring::Doorbell(dupFd(completionBell_.fd())), sessions_);
    worker_->start();
  }
  ~BrokerRig() { worker_.reset(); }

  BrokerRig(const BrokerRig&) = delete;
  BrokerRig& operator=(const BrokerRig&) = delete;

  // Frames and submits one burst; false if framing failed (a setup bug).
  bool submitBurst(std::size_t payload) noexcept {
    std::array<proto::CryptoRequest, kBurst> burst{};
    for (auto& req : burst) {
      const auto index = pool_.alloc();
      if (!index) return false;  // the caller waited for kBurst free buffers
      const auto framed = frame(bytes(pool_.data(*index)), payload, ++seq_, layout_);
      if (!framed.ok()) return false;
      req.cookie = *index;
      req.session = 0;
      req.sessionGeneration = 1;
      req.op = proto::CryptoOp::kSeal;
      req.status = proto::CryptoStatus::kPending;
      req.segmentCount = 1;
      req.bufferIndex = *index;
      req.offset = static_cast<std::uint32_t>(framed.offset);
      req.length = static_cast<std::uint32_t>(framed.length);
      req.segmentStride = req.length;
    }
    // The rings hold more slots than the pool has buffers: this never falls short.
    const std::size_t n = requests_.enqueue(burst);
    inFlight_ += n;
    if (ring::notifyPeer(requests_, requestBell_)) ++wakeups_;
    return n == kBurst;
  }

  // Reaps every completion available now and frees their buffers.
  void reap() noexcept {
    std::array<proto::CryptoCompletion, kBurst> done{};
    for (;;) {
      const std::size_t n = completions_.dequeue(done);
      for (std::size_t i = 0; i < n; ++i) {
        if (done[i].status == proto::CryptoStatus::kOk) {
          ++completed_;
        } else {
          ++failed_;
        }
        pool_.free(done[i].bufferIndex);
      }
      inFlight_ -= n;
      if (n < done.size()) return;
    }
  }

  // Waits until a burst's worth of buffers is free, sleeping on the
  // completion doorbell while nothing comes back.
  void waitForBuffers() noexcept {
    reap();
    while (pool_.available() < kBurst || inFlight_ > (kInFlightBursts - 1) * kBurst) {
      ++sleeps_;
      ring::sleepUntilReady(completions_, completionBell_, 100);
      reap();
    }
  }

  void drain() noexcept {
    while (inFlight_ != 0) {
      if (completions_.available() == 0) ring::sleepUntilReady(completions_, completionBell_, 100);
      reap();
    }
  }

  std::uint64_t completed() const noexcept { return completed_; }
  std::uint64_t failed() const noexcept { return failed_; }
  std::uint64_t sleeps() const noexcept { return sleeps_; }
  std::uint64_t wakeups() const noexcept { return wakeups_; }
  const crypto::WorkerCounters& workerCounters() const noexcept { return worker_->counters(); }

 private:
  ring::Region region_;
  ring::BufferPool pool_;
  ring::RequestProducer requests_;
  ring::CompletionConsumer completions_;
  ring::Doorbell requestBell_;     // we ring it: the worker sleeps on it
  ring::Doorbell completionBell_;  // the worker rings it: we sleep on it
  crypto::SessionTable sessions_;
  std::unique_ptr<crypto::Worker> worker_;
  esp::EspLayout layout_{};
  std::uint32_t seq_ = 0;
  std::uint64_t inFlight_ = 0, completed_ = 0, failed_ = 0, sleeps_ = 0, wakeups_ = 0;
};

void brokerSeal(benchmark::State& state, const Algorithm& alg, int payload) {
  std::optional<BrokerRig> rig;
  try {
    rig.emplace(alg);
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    return;
  }
  std::uint64_t timedCompletions = 0;
  for (auto _ : state) {
    rig->waitForBuffers();
    if (!rig->submitBurst(static_cast<std::size_t>(payload))) {
      state.SkipWithError("could not frame or enqueue a burst");
      break;
    }
  }
  // Packets completed while the clock ran; the rest are drained untimed.
  timedCompletions = rig->completed();
  rig->drain();
  if (rig->failed() != 0) {
    state.SkipWithError("the worker failed a seal");
    return;
  }
  const double bursts = static_cast<double>(state.iterations());
  state.counters["fwd_sleeps/burst"] = bursts > 0 ? static_cast<double>(rig->sleeps()) / bursts : 0;
  state.counters["worker_wakeups/burst"] = bursts > 0 ? static_cast<double>(rig->wakeups()) / bursts : 0;
  state.counters["worker_burst"] =
      static_cast<double>(rig->workerCounters().requests.load()) /
      static_cast<double>(std::max<std::uint64_t>(1, rig->workerCounters().bursts.load()));
  state.SetItemsProcessed(static_cast<std::int64_t>(timedCompletions));
  state.SetBytesProcessed(static_cast<std::int64_t>(timedCompletions) * payload);
}

// ---- registration and the ratio table ----------------------------------------

std::string benchName(const Algorithm& alg, const char* path, int payload) {
  return std::string("seal/") + alg.name + "/" + path + "/" + std::to_string(payload);
}

void registerAll() {
  for (const Algorithm& alg : kAlgorithms) {
    for (int payload : kPayloadSizes) {
      benchmark::RegisterBenchmark(benchName(alg, "in-process", payload).c_str(),
                                   [&alg, payload](benchmark::State& s) { inProcessSeal(s, alg, payload); })
          ->UseRealTime();
      benchmark::RegisterBenchmark(benchName(alg, "broker", payload).c_str(),
                                   [&alg, payload](benchmark::State& s) { brokerSeal(s, alg, payload); })
          ->UseRealTime();
    }
  }
}

// The console output, plus packets/s of each run kept for the summary.
class RatioReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& run : runs) {
      if (run.run_type != Run::RT_Iteration || run.error_occurred) continue;
      const auto it = run.counters.find("items_per_second");
      if (it != run.counters.end()) rates_[run.run_name.function_name] = it->second.value;
    }
  }

  void printRatios() const {
    std::printf("\nbroker / in-process, packets per second (1.00: the hop costs nothing)\n");
    std::printf("%-26s %6s %14s %14s %7s %11s\n", "algorithm", "bytes", "in-process", "broker", "ratio",
                "broker Gb/s");
    for (const Algorithm& alg : kAlgorithms) {
      for (int payload : kPayloadSizes) {
        const auto base = rates_.find(benchName(alg, "in-process", payload));
        const auto broker = rates_.find(benchName(alg, "broker", payload));
        if (base == rates_.end() || broker == rates_.end() || base->second <= 0) continue;
        std::printf("%-26s %6d %12.0f/s %12.0f/s %7.2f %11.2f\n", alg.name, payload, base->second, broker->second,
                    broker->second / base->second, broker->second * payload * 8 / 1e9);
      }
    }
  }

 private:
  std::map<std::string, double> rates_;
};

}  // namespace
}  // namespace ipsec::bench

int main(int argc, char** argv) {
  ipsec::bench::registerAll();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  ipsec::bench::RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  reporter.printRatios();
  benchmark::Shutdown();
  return 0;
}
