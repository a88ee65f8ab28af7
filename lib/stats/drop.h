// Drop and count: the one way a service refuses something it will not act
// on (a bad message, a report over its rate, a packet) under a counter
// named for the reason, with the reason at debug level only, since a drop
// can come once per packet or per hostile message and must not flood the
// log (STYLE.md §6: never log per packet above debug).
//
//   if (reply.getErrno() != 0) {
//     stats::drop(counters_.pfkey_nat_mapping_refused_no_sa, "NAT mapping for SPI {:#x}: no such SA", spi);
//     return true;
//   }
//
// In a function returning void, `return stats::drop(...);` does both. The
// atomic overload is for counters written by worker threads (relaxed: a
// counter orders nothing).
#pragma once

#include <atomic>
#include <cstdint>
#include <utility>

#include "log/log.h"

namespace ipsec::stats {

template <class... Args>
void drop(std::uint64_t& counter, fmt::format_string<Args...> why, Args&&... args) {
  ++counter;
  log::debug(why, std::forward<Args>(args)...);
}

template <class... Args>
void drop(std::atomic<std::uint64_t>& counter, fmt::format_string<Args...> why, Args&&... args) {
  counter.fetch_add(1, std::memory_order_relaxed);
  log::debug(why, std::forward<Args>(args)...);
}

}  // namespace ipsec::stats
