// The clocks every process reads, in one place (they were eight private
// copies). Two kinds, not to be mixed:
//  - monotonic (CLOCK_MONOTONIC): intervals, rate limits, spin and hold
//    deadlines; it never jumps when the wall clock is set;
//  - wall (CLOCK_REALTIME): what leaves the process as a time of day or a
//    date: PF_KEY's sadb_lifetime_addtime (seconds since the epoch), log lines.
// Both are vDSO reads, no system call, so the data path may call them; all
// are noexcept and allocate nothing. Header-only: a clock read is a call
// worth inlining.
#pragma once

#include <time.h>

#include <cstdint>

namespace ipsec::clock {

inline std::uint64_t monotonicNs() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000u + static_cast<std::uint64_t>(ts.tv_nsec);
}

inline std::uint64_t monotonicMs() noexcept { return monotonicNs() / 1000000u; }

inline std::uint64_t unixSeconds() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec);
}

// The wall clock in ns: for arming a timer at a whole second of unixSeconds().
inline std::uint64_t unixNs() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000u + static_cast<std::uint64_t>(ts.tv_nsec);
}

struct TimeOfDay {
  unsigned hour = 0, minute = 0, second = 0, millisecond = 0;
};

// UTC, by arithmetic: gmtime_r would open /etc/localtime on first use, which
// a sandboxed process may not.
inline TimeOfDay utcTimeOfDay() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  const auto day = static_cast<unsigned>(ts.tv_sec % 86400);
  return {day / 3600, day / 60 % 60, day % 60, static_cast<unsigned>(ts.tv_nsec / 1000000)};
}

}  // namespace ipsec::clock
