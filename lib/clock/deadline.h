// Timers that fire only when something is due (issue 13: an idle tunnel stays
// idle). A process that used to look at its tables on a fixed one-second
// tick instead collects the deadlines of what it keeps (lifetimes, larval
// states, keepalives) and sleeps until the earliest. Pure arithmetic on
// clock readings the caller passes in; header-only, noexcept.
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>

namespace ipsec::clock {

// The earliest of the deadlines offered to it (any one unit and clock).
class NextDeadline {
 public:
  constexpr void consider(std::uint64_t at) noexcept {
    if (!at_ || at < *at_) at_ = at;
  }
  constexpr std::optional<std::uint64_t> at() const noexcept { return at_; }

 private:
  std::optional<std::uint64_t> at_;
};

// How long a timer armed at nowNs (CLOCK_REALTIME, ns) must wait for the wall
// clock to reach the whole second atS (what clock::unixSeconds() compares
// with), in ms: at least floorMs (a deadline already past, or one a handler
// cannot clear at once, must not make the timer fire in a loop), at most
// capMs (the timer runs on the monotonic clock: if the wall clock is set,
// the handler looks again within capMs and re-arms from the new time).
constexpr std::uint64_t msUntilUnixSecond(std::uint64_t atS, std::uint64_t nowNs, std::uint64_t floorMs,
                                          std::uint64_t capMs) noexcept {
  constexpr std::uint64_t kNsPerS = 1000000000u, kNsPerMs = 1000000u;
  const std::uint64_t atNs = atS > UINT64_MAX / kNsPerS ? UINT64_MAX : atS * kNsPerS;
  const std::uint64_t leftMs = atNs > nowNs ? (atNs - nowNs + kNsPerMs - 1) / kNsPerMs : 0;
  return std::clamp(leftMs, floorMs, std::max(floorMs, capMs));
}

// The same on one monotonic clock in ms: how long from nowMs until atMs.
constexpr std::uint64_t msUntil(std::uint64_t atMs, std::uint64_t nowMs, std::uint64_t floorMs,
                                std::uint64_t capMs) noexcept {
  return std::clamp(atMs > nowMs ? atMs - nowMs : 0, floorMs, std::max(floorMs, capMs));
}

}  // namespace ipsec::clock
