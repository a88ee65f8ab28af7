// ipsec-forwarder: when it last asked ipsec-policy for a key (an ACQUIRE),
// per policy request and addresses, and so whether to ask again. Only the
// data-path thread touches it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <unordered_map>

#include "esp/ip.h"

namespace ipsec::forwarder {

// What an ACQUIRE asks ipsec-policy for: one request of one policy between
// two addresses (the tunnel's ends, or in transport mode the packet's own),
// the identity policy gives its pending acquire state.
struct AcquireKey {
  std::uint32_t policyId = 0;
  std::uint8_t requestIndex = 0;
  esp::IpAddress src, dst;
  bool operator==(const AcquireKey&) const = default;
};

// When the forwarder last asked for each AcquireKey, and so whether to ask
// again. A new packet asks once kIntervalMs has passed since the last time:
// policy's pending state and net.key.blockacq_* decide whether a key manager
// hears of it. A held packet given another pass because an SA arrived does
// not ask again for a key it was asked for: that SA was not the one it
// waits for (it would have gone), so the acquire is still pending — Linux
// keeps its acquire state until an SA satisfying it is added. Asking there
// raced the key manager's next message (its outbound ADD) and, arriving
// after it, started a second negotiation.
class AcquireTimes {
 public:
  enum class Verdict : std::uint8_t {
    kAsk,      // send it (recorded as asked now)
    kTooSoon,  // asked less than kIntervalMs ago
    kPending,  // a held packet's re-run: asked before, still pending
    kFull,     // kMaxKeys distinct keys asked within kIntervalMs: not sent
  };
  static constexpr std::uint64_t kIntervalMs = 1000;
  static constexpr std::size_t kMaxKeys = 4096;

  Verdict ask(const AcquireKey& key, std::uint64_t nowMs, bool heldRerun);
  // Forgets keys last asked before cutoffMs: no held packet still waits on them.
  void forgetBefore(std::uint64_t cutoffMs) noexcept;
  std::size_t size() const noexcept { return lastMs_.size(); }

 private:
  struct Hash {
    std::size_t operator()(const AcquireKey& k) const noexcept;
  };
  std::unordered_map<AcquireKey, std::uint64_t, Hash> lastMs_;
  std::uint64_t lastSweepMs_ = 0;  // when ask() last swept a full table
};

}  // namespace ipsec::forwarder
