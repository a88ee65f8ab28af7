// The hostile forwarder (issue 10): this test attaches to a REAL ipsec-crypto
// process's ring the way the forwarder does and, for a bounded time
// (IPSEC_HOSTILE_SECONDS, default 5; IPSEC_HOSTILE_SEED replays a run),
// sends bursts of adversarial descriptors (adversary.h) mixed with valid
// ones, while a second thread rewrites the bytes of the hammered buffers
// under the broker (TOCTOU). It asserts:
//  - the broker stays up and completes every request, in order, with every
//    field but status and segmentFailMask echoed unchanged;
//  - each status is the one the descriptor deserved (one fault per request);
//  - no byte of a quiet buffer changes outside the range a successful request
//    named, and no byte at all for a refusal; canary buffers between them
//    never change (so a write past the end of a named buffer shows);
//  - the IVs of every seal under each session are unique, inside the grants
//    this test (as keydb) gave, and the broker asked for more grants;
//  - its stats counters equal the refusals and results counted here, kind by kind.
// Root is needed to start the child as ipsecd does (it drops to nobody in an
// empty root). Run in both trees: under build-asan the child is ASan too.
#include <gtest/gtest.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <unordered_set>

#include "adversary.h"
#include "broker_child.h"
#include "ring_client.h"
#include "ring/endpoints.h"

namespace ipsec::hostile {
namespace {

using proto::CryptoOp;
using proto::CryptoStatus;

constexpr std::uint32_t kBufferCount = 32;
constexpr std::uint64_t kGrantStep = (1u << 18) + 3000;

void fillRandom(std::uint8_t* p, std::size_t n, std::uint64_t& x) {
  for (std::size_t i = 0; i < n; i += 8) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    std::memcpy(p + i, &x, std::min<std::size_t>(8, n - i));
  }
}

std::uint64_t envNumber(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::strtoull(v, nullptr, 0) : fallback;
}

std::string describe(const Planned& p, const proto::CryptoCompletion& c) {
  const auto& r = p.request;
  return std::string(toString(p.fault)) + " op=" + std::to_string(static_cast<int>(r.op)) +
         " session=" + std::to_string(r.session) + "/" + std::to_string(r.sessionGeneration) +
         " buffer=" + std::to_string(r.bufferIndex) + " offset=" + std::to_string(r.offset) +
         " length=" + std::to_string(r.length) + " segments=" + std::to_string(r.segmentCount) +
         " stride=" + std::to_string(r.segmentStride) + " icvOffset=" + std::to_string(r.icvOffset) +
         " → status " + std::to_string(static_cast<int>(c.status));
}

class HostileRun {
 public:
  HostileRun(BrokerChild& child, Adversary& adversary, std::uint64_t seed)
      : child_(child), adv_(adversary), region_(child.region()), size_(region_.header().bufferSize),
        shadow_(kBufferCount), x_(seed | 1) {
    for (std::uint32_t b = kHammered; b < kBufferCount; ++b) refill(b);
  }

  void run(std::chrono::steady_clock::time_point until);
  void checkCounters(const std::map<std::string, std::uint64_t>& stats);
  std::uint64_t requests() const { return expected_.at("requests"); }
  const std::map<std::string, std::uint64_t>& byFault() const { return byFault_; }
  std::size_t ivsSeen() const {
    std::size_t n = 0;
    for (const auto& s : ivs_) n += s.size();
    return n;
  }

 private:
  std::uint8_t* buffer(std::uint32_t b) { return reinterpret_cast<std::uint8_t*>(region_.buffer(b)); }
  void refill(std::uint32_t b) {
    shadow_[b].resize(size_);
    fillRandom(shadow_[b].data(), size_, x_);
    std::memcpy(buffer(b), shadow_[b].data(), size_);
  }
  bool submit(const std::vector<Planned>& plan, std::vector<proto::CryptoCompletion>& done);
  void check(const Planned& p, const proto::CryptoCompletion& c);
  void tally(const Planned& p, const proto::CryptoCompletion& c);
  void collectIvs(const Planned& p, const proto::CryptoCompletion& c);
  void checkQuietBuffers(const std::vector<Planned>& plan, const std::vector<proto::CryptoCompletion>& done);
  void fail(const std::string& what) {
    if (++failures_ <= 25) ADD_FAILURE() << what;
  }

  BrokerChild& child_;
  Adversary& adv_;
  ring::Region& region_;
  // One of each for the whole run: each keeps its index privately.
  RingClient ring_{ring::requestProducer(region_), ring::completionConsumer(region_), child_.requestBell(),
                   child_.completionBell()};
  std::uint32_t size_;
  std::vector<std::vector<std::uint8_t>> shadow_;  // quiet buffers: what they must hold
  std::uint64_t x_;
  std::vector<Planned> sealedQuiet_;
  std::map<std::string, std::uint64_t> expected_{{"requests", 0}};
  std::map<std::string, std::uint64_t> byFault_;
  std::vector<std::unordered_set<std::uint64_t>> ivs_ = std::vector<std::unordered_set<std::uint64_t>>(kRoleCount);
  std::uint64_t failures_ = 0;

 public:
  std::uint64_t failures() const { return failures_; }
};

// Enqueues a burst, rings the broker if it sleeps, and waits (bounded) for
// as many completions. False if they did not all come.
bool HostileRun::submit(const std::vector<Planned>& plan, std::vector<proto::CryptoCompletion>& done) {
  std::vector<proto::CryptoRequest> requests;
  for (const auto& p : plan) requests.push_back(p.request);
  return ring_.submit(requests, done);
}

void HostileRun::run(std::chrono::steady_clock::time_point until) {
  std::vector<proto::CryptoCompletion> done;
  while (std::chrono::steady_clock::now() < until && failures_ < 100) {
    auto plan = adv_.burst(sealedQuiet_);
    for (const auto& p : plan) {
      if (p.quiet && !p.genuineOpen && p.request.bufferIndex < kBufferCount) refill(p.request.bufferIndex);
    }
    if (!submit(plan, done)) {
      fail("the broker stopped completing requests (alive: " + std::to_string(child_.alive()) +
           ", wait status " + std::to_string(child_.exitStatus()) + ")");
      return;
    }
    for (std::size_t i = 0; i < plan.size(); ++i) check(plan[i], done[i]);
    checkQuietBuffers(plan, done);
  }
}

void HostileRun::check(const Planned& p, const proto::CryptoCompletion& c) {
  proto::CryptoCompletion echo = c;
  echo.status = CryptoStatus::kPending;
  echo.segmentFailMask = 0;
  if (std::memcmp(&echo, &p.request, sizeof echo) != 0) fail("completion fields changed: " + describe(p, c));
  bool allowed = false;
  for (auto s : p.allowed) allowed |= s == c.status;
  if (!allowed) fail("undeserved status: " + describe(p, c));
  ++byFault_[std::string(toString(p.fault))];
  tally(p, c);
  if (p.quiet && c.op == CryptoOp::kSeal && p.fault == Fault::kNone) collectIvs(p, c);
}

std::uint64_t segmentMask(std::uint16_t count) {
  return count >= 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << count) - 1;
}

// What the broker's counters must add up to (services/crypto/broker.cpp
// fillStats): each refusal under its own name, each segment's result.
void HostileRun::tally(const Planned& p, const proto::CryptoCompletion& c) {
  ++expected_["requests"];
  const auto failed = static_cast<std::uint64_t>(std::popcount(c.segmentFailMask & segmentMask(c.segmentCount)));
  const std::uint64_t good = c.segmentCount - failed;
  if (p.fault != Fault::kNone) {
    // Only a deserved refusal is counted here (an undeserved one was reported).
    if (std::find(p.allowed.begin(), p.allowed.end(), c.status) != p.allowed.end()) {
      for (const char* name : p.counters) ++expected_[name];
    }
    return;
  }
  // Failed segments are counted under the status's name; an undeserved
  // status (already reported) is not guessed at.
  const bool exhausted = c.status == CryptoStatus::kSeqExhausted, badIcv = c.status == CryptoStatus::kBadIcv;
  switch (c.op) {
    case CryptoOp::kSeal:
      expected_["sealed"] += good;
      if (exhausted) expected_["seal_iv_exhausted"] += failed;
      break;
    case CryptoOp::kOpen:
    case CryptoOp::kAhVerify:
      expected_[c.op == CryptoOp::kOpen ? "opened" : "ah_verified"] += good;
      if (badIcv) expected_["open_bad_icv"] += failed;
      break;
    case CryptoOp::kAhSign: expected_["ah_signed"] += good; break;
  }
}

// The IV of each sealed segment, at ESP offset 8 (a 64-bit counter for GCM):
// never twice under one session, inside [ivNext, the highest grant).
void HostileRun::collectIvs(const Planned& p, const proto::CryptoCompletion& c) {
  if (c.status != CryptoStatus::kOk && c.status != CryptoStatus::kSeqExhausted) return;
  const SessionSpec& spec = adv_.sessions()[p.role];
  const std::uint64_t limit = child_.grantedLimit(spec.index);
  const std::uint8_t* b = buffer(c.bufferIndex);
  for (std::uint16_t i = 0; i < c.segmentCount; ++i) {
    if (c.segmentFailMask >> i & 1) continue;
    std::uint64_t iv = 0;
    for (int k = 0; k < 8; ++k) iv = iv << 8 | b[c.offset + std::size_t{i} * c.segmentStride + 8 + k];
    if (!ivs_[p.role].insert(iv).second) fail("IV " + std::to_string(iv) + " emitted twice: " + describe(p, c));
    if (iv < spec.ivNext || iv >= limit) {
      fail("IV " + std::to_string(iv) + " outside the grants [" + std::to_string(spec.ivNext) + ", " +
           std::to_string(limit) + "): " + describe(p, c));
    }
  }
  if (p.role == kOut && c.status == CryptoStatus::kOk) sealedQuiet_.push_back(p);
}

// Quiet buffers hold exactly what the test wrote, except inside the range of
// a request that was allowed to write there. A refused request writes nothing.
void HostileRun::checkQuietBuffers(const std::vector<Planned>& plan,
                                   const std::vector<proto::CryptoCompletion>& done) {
  std::vector<const proto::CryptoCompletion*> writer(kBufferCount, nullptr);
  std::vector<const Planned*> planned(kBufferCount, nullptr);
  for (std::size_t i = 0; i < plan.size(); ++i) {
    const auto& c = done[i];
    const bool wrote = c.status == CryptoStatus::kOk || c.status == CryptoStatus::kSeqExhausted ||
                       (c.status == CryptoStatus::kBadIcv && c.segmentFailMask != segmentMask(c.segmentCount));
    if (plan[i].quiet && wrote && c.op != CryptoOp::kAhVerify && c.bufferIndex < kBufferCount) {
      writer[c.bufferIndex] = &c;
      planned[c.bufferIndex] = &plan[i];
    }
  }
  for (std::uint32_t b = kHammered; b < kBufferCount; ++b) {
    const std::uint8_t* now = buffer(b);
    const std::uint8_t* want = shadow_[b].data();
    if (const auto* c = writer[b]) {
      const std::size_t end = std::size_t{c->offset} + c->length;
      if (std::memcmp(now, want, c->offset) != 0 || std::memcmp(now + end, want + end, size_ - end) != 0) {
        fail("bytes outside the named range changed in buffer " + std::to_string(b) + ": " +
             describe(*planned[b], *c));
      }
      std::memcpy(shadow_[b].data(), now, size_);
    } else if (std::memcmp(now, want, size_) != 0) {
      std::size_t at = 0;
      while (now[at] == want[at]) ++at;
      fail("quiet buffer " + std::to_string(b) + (Adversary::isCanary(b, kBufferCount) ? " (a canary)" : "") +
           " changed at byte " + std::to_string(at) + " though no request wrote it");
      std::memcpy(shadow_[b].data(), now, size_);
    }
  }
}

void HostileRun::checkCounters(const std::map<std::string, std::uint64_t>& stats) {
  for (const auto& [name, want] : expected_) {
    auto it = stats.find(name);
    if (it == stats.end()) {
      ADD_FAILURE() << "the broker has no counter " << name << " (" << want << " expected)";
    } else {
      EXPECT_EQ(it->second, want) << "counter " << name;
    }
  }
  for (const char* zero : {"ring_corrupt"}) {
    auto it = stats.find(zero);
    EXPECT_TRUE(it != stats.end() && it->second == 0) << zero;
  }
  // A refusal the run did not expect — counted under another name, or a
  // driver's own refusal after the checks — is a refusal nobody judged.
  for (const auto& [name, value] : stats) {
    const bool refusal = name.starts_with("drop_") || name.find("_refused_") != std::string::npos;
    if (refusal && !expected_.contains(name)) {
      EXPECT_EQ(value, 0u) << "unexpected refusals counted as " << name;
    }
  }
}

// Rewrites random stretches of the hammered buffers until told to stop.
class Rewriter {
 public:
  Rewriter(ring::Region& region, std::uint64_t seed) : thread_([this, &region, seed] { loop(region, seed); }) {}
  ~Rewriter() { stop(); }
  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  std::uint64_t writes() const { return writes_.load(); }

 private:
  void loop(ring::Region& region, std::uint64_t x) {
    const std::uint32_t size = region.header().bufferSize;
    x |= 1;
    while (!stop_.load(std::memory_order_relaxed)) {
      for (std::uint32_t b = 0; b < kHammered; ++b) {
        auto* p = reinterpret_cast<std::uint8_t*>(region.buffer(b));
        fillRandom(p + x % (size - 512), 512, x);
      }
      if (writes_.fetch_add(1, std::memory_order_relaxed) % 32 == 0) sched_yield();
    }
  }
  std::atomic<bool> stop_{false};
  std::atomic<std::uint64_t> writes_{0};
  std::thread thread_;
};

// The sanitizer runtimes do not start inside the broker's sandbox (locked
// memory, the seccomp list): a sanitized ipsec-crypto never says ready. The
// same request handling runs under ASan+UBSan in broker_request_fuzz, on a
// region between guard pages; this test runs the unsanitized broker.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif
#else
constexpr bool kSanitized = false;
#endif

TEST(HostileForwarder, BrokerRefusesWhatEachDescriptorDeservesAndNeverRepeatsAnIv) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to start ipsec-crypto as ipsecd does";
  if (kSanitized) GTEST_SKIP() << "a sanitized ipsec-crypto does not start in its sandbox (see above)";
  const std::uint64_t seed = envNumber("IPSEC_HOSTILE_SEED", std::random_device{}() * 0x9e3779b97f4a7c15ull);
  const auto seconds = envNumber("IPSEC_HOSTILE_SECONDS", 5);
  std::cout << "seed " << seed << " (IPSEC_HOSTILE_SEED replays it), " << seconds << " s\n";

  ring::RegionConfig config;
  config.requestCapacity = 256;
  config.completionCapacity = 256;
  config.bufferCount = kBufferCount;
  BrokerChild child(IPSEC_CRYPTO_BIN, config);

  Adversary adversary(seed, kBufferCount, child.region().header().bufferSize);
  auto specs = Adversary::sessionSpecs(adversary.rng());
  // kReborn's slot first holds generation 1, destroyed: descriptors that
  // still name it are stale.
  SessionSpec old = specs[kReborn];
  old.generation = 1;
  ASSERT_EQ(child.createSession(old), "");
  child.destroySession(old.index, old.generation);
  adversary.setStaleGeneration(1);
  for (const auto& s : specs) ASSERT_EQ(child.createSession(s), "") << "session " << s.index;
  adversary.setSessions(specs);
  child.startGranting(kGrantStep);

  HostileRun run(child, adversary, seed);
  {
    Rewriter rewriter(child.region(), seed ^ 0x5555);
    run.run(std::chrono::steady_clock::now() + std::chrono::seconds(seconds));
    rewriter.stop();
    EXPECT_GT(rewriter.writes(), 0u);
  }
  EXPECT_EQ(run.failures(), 0u) << "failures beyond the first 25 were not printed";
  ASSERT_TRUE(child.alive()) << "ipsec-crypto exited, wait status " << child.exitStatus();
  auto stats = child.stats();
  ASSERT_TRUE(stats) << "no stats from ipsec-crypto";
  run.checkCounters(*stats);
  EXPECT_GT(child.ivRequests(), 0u) << "the broker never asked keydb for more IVs";
  EXPECT_GT(run.ivsSeen(), 1000u);
  std::cout << run.requests() << " requests, " << run.ivsSeen() << " IVs checked, " << child.ivRequests()
            << " IV grants; by kind:";
  for (const auto& [fault, n] : run.byFault()) std::cout << " " << fault << "=" << n;
  std::cout << "\n";
  EXPECT_TRUE(child.stop(10000)) << "ipsec-crypto did not stop cleanly";
}

}  // namespace
}  // namespace ipsec::hostile
