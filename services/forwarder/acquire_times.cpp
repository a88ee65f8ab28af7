// See acquire_times.h.
#include "acquire_times.h"

#include <algorithm>

namespace ipsec::forwarder {

std::size_t AcquireTimes::Hash::operator()(const AcquireKey& k) const noexcept {
  std::uint64_t h = (std::uint64_t{k.policyId} << 8 | k.requestIndex) * 0x9e3779b97f4a7c15ull;
  for (const esp::IpAddress* a : {&k.src, &k.dst}) {
    for (std::uint8_t byte : a->bytes()) h = (h ^ byte) * 0x100000001b3ull;
  }
  return static_cast<std::size_t>(h ^ (h >> 32));
}

AcquireTimes::Verdict AcquireTimes::ask(const AcquireKey& key, std::uint64_t nowMs, bool heldRerun) {
  if (auto it = lastMs_.find(key); it != lastMs_.end()) {
    if (heldRerun) return Verdict::kPending;
    if (nowMs - it->second < kIntervalMs) return Verdict::kTooSoon;
    it->second = nowMs;
    return Verdict::kAsk;
  }
  if (lastMs_.size() >= kMaxKeys) {
    // Full: a sweep every tenth of an interval at most, not one per packet
    // that finds it full (each walks kMaxKeys entries).
    if (nowMs - lastSweepMs_ >= kIntervalMs / 10) {
      lastSweepMs_ = nowMs;
      forgetBefore(nowMs - std::min(nowMs, kIntervalMs));
    }
    if (lastMs_.size() >= kMaxKeys) return Verdict::kFull;
  }
  lastMs_.emplace(key, nowMs);
  return Verdict::kAsk;
}

void AcquireTimes::forgetBefore(std::uint64_t cutoffMs) noexcept {
  std::erase_if(lastMs_, [cutoffMs](const auto& e) { return e.second < cutoffMs; });
}

}  // namespace ipsec::forwarder
