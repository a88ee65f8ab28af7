// SPD lookup cost in ipsec-forwarder at 100 000 policies: the indexed Spd of
// services/forwarder/spd.cpp with its flow cache cold (every lookup walks
// the index) and warm (a working set that fits the cache), against the linear
// scan it replaced (tests/unit/forwarder/spd_reference.h) as the baseline of
// the same run; and the heap each policy costs (mallinfo2 before and after).
// One iteration is one lookup. At the end the ratios to the baseline are
// printed. Not a test: never fails on timing.
//
// The policy set: 60 % IPv4 (destination /32 or /24 in 198.18.0.0/15, the
// benchmarking range; source /24 or /16), 40 % IPv6 (destination /128, /64
// or /48 in 2001:db8::/32); a quarter select TCP or UDP and a port; priorities
// from a few values, so ties are common. Flows: half built to fall inside a
// random policy (a hit, though maybe of a better-ranked one), half outside
// every policy (a miss, which probes every destination length present).
#include <benchmark/benchmark.h>
#include <linux/ipsec.h>
#include <malloc.h>
#include <netinet/in.h>
#include <unistd.h>

#include <capnp/message.h>

#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "spd_reference.h"
#include "tables.h"

namespace ipsec::forwarder {
namespace {

constexpr std::size_t kPolicies = 100'000;
constexpr std::size_t kFlows = 1 << 16;      // cold runs: many more than the cache holds
constexpr std::size_t kWarmFlows = 1 << 10;  // warm runs: a quarter of the cache

esp::IpAddress v4(std::uint32_t hostOrder) { return esp::IpAddress::v4(hostOrder); }
esp::IpAddress v6(std::uint64_t hi, std::uint64_t lo) {
  std::array<std::uint8_t, 16> b{};
  for (int i = 0; i < 8; ++i) {
    b[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(hi >> (56 - 8 * i));
    b[static_cast<std::size_t>(8 + i)] = static_cast<std::uint8_t>(lo >> (56 - 8 * i));
  }
  return esp::IpAddress::v6(b);
}

struct Workload {
  std::vector<Policy> policies;
  std::vector<esp::FlowKey> flows;      // half hits, half misses, shuffled
  std::vector<esp::FlowKey> warmFlows;  // a prefix of the above
};

const Workload& workload() {
  static const Workload w = [] {
    Workload w;
    std::mt19937_64 rng(20261127);
    auto pick = [&](std::uint64_t n) { return std::uniform_int_distribution<std::uint64_t>(0, n - 1)(rng); };
    static constexpr std::uint32_t kPriorities[] = {0x40000000u, 0x80000000u, 0x80000000u, 0xc0000000u};
    for (std::size_t i = 0; i < kPolicies; ++i) {
      Policy p;
      p.id = static_cast<std::uint32_t>(i * 8 + IPSEC_DIR_OUTBOUND);
      p.dir = IPSEC_DIR_OUTBOUND;
      p.action = IPSEC_POLICY_IPSEC;
      p.priority = kPriorities[pick(4)];
      if (pick(10) < 6) {
        const bool host = pick(2);
        const auto dst = 0xc6120000u | static_cast<std::uint32_t>(pick(1u << 17));  // 198.18.0.0/15
        const auto src = 0xc6120000u | static_cast<std::uint32_t>(pick(1u << 17));
        p.selector.dst = *esp::Prefix::make(v4(dst), host ? 32 : 24);
        p.selector.src = *esp::Prefix::make(v4(src), pick(2) ? 24 : 16);
      } else {
        static constexpr unsigned kLengths[] = {128, 64, 48};
        const auto dhi = 0x20010db8'00000000ull | pick(1u << 20) << 16;
        p.selector.dst = *esp::Prefix::make(v6(dhi, pick(1u << 20)), kLengths[pick(3)]);
        p.selector.src = *esp::Prefix::make(v6(0x20010db8'00000000ull | pick(1u << 20) << 16, 0), 48);
      }
      if (pick(4) == 0) {
        p.selector.proto = pick(2) ? esp::kProtoTcp : esp::kProtoUdp;
        p.selector.dstPort = static_cast<std::uint16_t>(1 + pick(1024));
      }
      w.policies.push_back(p);
    }
    for (std::size_t i = 0; i < kFlows; ++i) {
      esp::FlowKey f;
      const Policy& p = w.policies[pick(kPolicies)];
      const bool isV4 = p.selector.dst.address.isV4();
      f.version = isV4 ? 4 : 6;
      f.proto = p.selector.proto == 255 ? esp::kProtoTcp : p.selector.proto;
      f.srcPort = static_cast<std::uint16_t>(1024 + pick(60000));
      f.dstPort = p.selector.dstPort != 0 ? p.selector.dstPort : static_cast<std::uint16_t>(1 + pick(1024));
      if (i % 2 == 0) {
        // Inside p: its prefixes with the host bits of the flow's own.
        f.src = p.selector.src.address;
        f.dst = p.selector.dst.address;
      } else if (isV4) {
        // 192.0.2.0/24 is outside 198.18.0.0/15: no policy selects it.
        f.src = v4(0xc0000200u | static_cast<std::uint32_t>(pick(256)));
        f.dst = v4(0xc0000200u | static_cast<std::uint32_t>(pick(256)));
      } else {
        f.src = v6(0x20010db9'00000000ull, pick(1u << 30));  // outside 2001:db8::/32
        f.dst = v6(0x20010db9'00000000ull, pick(1u << 30));
      }
      w.flows.push_back(f);
    }
    w.warmFlows.assign(w.flows.begin(), w.flows.begin() + kWarmFlows);
    return w;
  }();
  return w;
}

void addAll(Spd& spd) {
  for (const Policy& p : workload().policies) {
    capnp::MallocMessageBuilder b(256);
    testing::fillPolicyMessage(p, b.initRoot<proto::Policy>());
    if (spd.add(b.getRoot<proto::Policy>().asReader())) std::abort();
  }
}

Spd& indexed() {
  static Spd* spd = [] {
    auto* s = new Spd;
    addAll(*s);
    return s;
  }();
  return *spd;
}

testing::LinearSpd& linear() {
  static testing::LinearSpd* ref = [] {
    auto* r = new testing::LinearSpd;
    r->addAll(workload().policies);
    return r;
  }();
  return *ref;
}

void countHits(benchmark::State& state, std::size_t hits, std::size_t lookups) {
  state.SetItemsProcessed(static_cast<std::int64_t>(lookups));
  state.counters["matched"] = lookups ? static_cast<double>(hits) / static_cast<double>(lookups) : 0;
}

void indexedCold(benchmark::State& state) {
  Spd& spd = indexed();
  const auto& flows = workload().flows;
  std::size_t i = 0, hits = 0;
  for (auto _ : state) {
    spd.flushCache();  // a version bump: every lookup walks the index
    const Policy* p = spd.lookup(IPSEC_DIR_OUTBOUND, flows[i++ & (kFlows - 1)]);
    hits += p != nullptr;
    benchmark::DoNotOptimize(p);
  }
  countHits(state, hits, i);
}

void indexedWarm(benchmark::State& state) {
  Spd& spd = indexed();
  const auto& flows = workload().warmFlows;
  for (const auto& f : flows) spd.lookup(IPSEC_DIR_OUTBOUND, f);
  const auto hits0 = spd.cacheHits(), misses0 = spd.cacheMisses();
  std::size_t i = 0, hits = 0;
  for (auto _ : state) {
    const Policy* p = spd.lookup(IPSEC_DIR_OUTBOUND, flows[i++ & (kWarmFlows - 1)]);
    hits += p != nullptr;
    benchmark::DoNotOptimize(p);
  }
  countHits(state, hits, i);
  const auto h = spd.cacheHits() - hits0, m = spd.cacheMisses() - misses0;
  state.counters["cache_hit_rate"] = h + m ? static_cast<double>(h) / static_cast<double>(h + m) : 0;
}

void linearScan(benchmark::State& state) {
  const auto& ref = linear();
  const auto& flows = workload().flows;
  std::size_t i = 0, hits = 0;
  for (auto _ : state) {
    const Policy* p = ref.lookup(IPSEC_DIR_OUTBOUND, flows[i++ & (kFlows - 1)]);
    hits += p != nullptr;
    benchmark::DoNotOptimize(p);
  }
  countHits(state, hits, i);
}

// Bytes the allocator has handed out: small chunks plus the mmapped ones
// (large vectors and hash tables live there).
std::size_t heapInUse() {
  const auto m = mallinfo2();
  return m.uordblks + m.hblkhd;
}

// Heap growth while 100 000 policies go in, per policy. One iteration only:
// the figure is a size, not a time.
void memoryIndexed(benchmark::State& state) {
  for (auto _ : state) {
    const auto before = heapInUse();
    auto spd = std::make_unique<Spd>();
    addAll(*spd);
    const auto after = heapInUse();
    state.counters["bytes_per_policy"] = static_cast<double>(after - before) / kPolicies;
    state.counters["bytes_per_Policy_struct"] = sizeof(Policy);
  }
}

void memoryLinear(benchmark::State& state) {
  for (auto _ : state) {
    const auto before = heapInUse();
    auto ref = std::make_unique<testing::LinearSpd>();
    ref->addAll(workload().policies);
    const auto after = heapInUse();
    state.counters["bytes_per_policy"] = static_cast<double>(after - before) / kPolicies;
  }
}

// Console output plus, at the end, each lookup figure as a multiple of the
// linear scan's rate.
class RatioReporter : public benchmark::ConsoleReporter {
 public:
  RatioReporter() : ConsoleReporter(isatty(STDOUT_FILENO) ? OO_ColorTabular : OO_Tabular) {}
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& r : runs) {
      if (r.run_type == Run::RT_Iteration && !r.error_occurred) nsPerLookup_[r.benchmark_name()] = r.GetAdjustedCPUTime();
    }
  }
  void Finalize() override {
    ConsoleReporter::Finalize();
    // Names carry suffixes such as /min_time:1.000.
    auto base = nsPerLookup_.lower_bound("SpdLookup/linear/");
    if (base == nsPerLookup_.end() || base->first.rfind("SpdLookup/linear/", 0) != 0) return;
    std::printf("\nSPD lookup at %zu policies, speed-up over the linear scan (CPU time per lookup):\n", kPolicies);
    for (const auto& [name, ns] : nsPerLookup_) {
      if (name.rfind("SpdLookup/", 0) != 0 || ns <= 0) continue;
      std::printf("  %-32s %12.1f ns  %10.2f M lookups/s  x%.0f\n", name.c_str(), ns, 1e3 / ns, base->second / ns);
    }
  }

 private:
  std::map<std::string, double> nsPerLookup_;
};

}  // namespace
}  // namespace ipsec::forwarder

int main(int argc, char** argv) {
  using namespace ipsec::forwarder;
  benchmark::RegisterBenchmark("SpdLookup/indexed-cold/100000", indexedCold);
  benchmark::RegisterBenchmark("SpdLookup/indexed-warm/100000", indexedWarm);
  benchmark::RegisterBenchmark("SpdLookup/linear/100000", linearScan)->MinTime(1.0);
  benchmark::RegisterBenchmark("SpdMemory/indexed/100000", memoryIndexed)->Iterations(1);
  benchmark::RegisterBenchmark("SpdMemory/linear/100000", memoryLinear)->Iterations(1);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}
