// Bytes per second of the Internet checksum (lib/checksum/internet.h) beside
// BM_WordLoop, the baseline of this run: the big-endian 16-bit-word loop the
// forwarder used until session 10. Sizes: an ESP packet's inner TCP segment
// (1400) and a whole super-packet (65535). Compare the two rows of a size.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <vector>

#include "checksum/internet.h"

namespace {

std::uint32_t wordLoop(std::uint32_t sum, const std::uint8_t* p, std::size_t n) {
  std::uint64_t acc = sum;
  std::size_t i = 0;
  for (; i + 1 < n; i += 2) acc += static_cast<std::uint16_t>(p[i] << 8 | p[i + 1]);
  if (i < n) acc += std::uint32_t{p[i]} << 8;
  while (acc >> 32) acc = (acc & 0xffffffffu) + (acc >> 32);
  return static_cast<std::uint32_t>(acc);
}

std::vector<std::uint8_t> payload(std::size_t n) {
  std::vector<std::uint8_t> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::uint8_t>(i * 131 + 7);
  return v;
}

void BM_WordLoop(benchmark::State& state) {
  const auto data = payload(static_cast<std::size_t>(state.range(0)));
  for (auto _ : state) {
    benchmark::DoNotOptimize(ipsec::checksum::fold(wordLoop(0, data.data(), data.size())));
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * state.range(0));
}
BENCHMARK(BM_WordLoop)->Arg(1400)->Arg(65535);

void BM_InternetChecksum(benchmark::State& state) {
  const auto data = payload(static_cast<std::size_t>(state.range(0)));
  for (auto _ : state) {
    benchmark::DoNotOptimize(ipsec::checksum::fold(ipsec::checksum::add(0, data)));
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * state.range(0));
}
BENCHMARK(BM_InternetChecksum)->Arg(1400)->Arg(65535);

}  // namespace

BENCHMARK_MAIN();
