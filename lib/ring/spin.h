// How long a ring side polls for its peer before it sleeps on its doorbell
// (DESIGN.md §3a: adaptive polling). Pure policy, no I/O: the crypto worker
// asks it after each burst; it runs on the data path (noexcept, no
// allocation) and trusts nothing but its own clock readings.
//
// Why adapt: a sleeping side costs its peer a doorbell write and itself a
// wake-up (tens of µs on the 2-core machine, most of a ping's time through
// the tunnel), but polling costs a core. So poll as long as the recent past
// says the next burst comes soon, and no longer:
//   - a burst that came within maxNs of the one before is "near"; the
//     window covers the largest near gap of the last kHistory bursts, with
//     half again as margin (a flow whose bursts come a hundred µs or so
//     apart keeps its worker awake; at line rate gaps are µs, so the side
//     never sleeps);
//   - with no near gap in that history (an idle tunnel, pings a second
//     apart) the window is minNs: the side sleeps right after a short look.
// Every window is bounded by maxNs, so an idle tunnel stays idle.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>

namespace ipsec::ring {

class SpinWindow {
 public:
  static constexpr std::size_t kHistory = 8;

  constexpr SpinWindow(std::uint64_t minNs, std::uint64_t maxNs) noexcept
      : minNs_(minNs), maxNs_(std::max(minNs, maxNs)) {}

  // A burst arrived at nowNs (a monotonic clock).
  void burstAt(std::uint64_t nowNs) noexcept {
    if (lastNs_ != 0 && nowNs >= lastNs_) {
      gaps_[next_] = nowNs - lastNs_;
      next_ = (next_ + 1) % kHistory;
    }
    lastNs_ = nowNs;
  }

  // How long to poll after the last burst before sleeping.
  constexpr std::uint64_t windowNs() const noexcept {
    std::uint64_t nearest = 0;
    for (std::uint64_t gap : gaps_) {
      if (gap <= maxNs_) nearest = std::max(nearest, gap);
    }
    return std::clamp(nearest + nearest / 2, minNs_, maxNs_);
  }

 private:
  std::uint64_t minNs_, maxNs_;
  std::uint64_t lastNs_ = 0;
  // Gaps between the last bursts; 0 means none yet (or back to back), which
  // asks for no more than minNs.
  std::array<std::uint64_t, kHistory> gaps_{};
  std::size_t next_ = 0;
};

}  // namespace ipsec::ring
