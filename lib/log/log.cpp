// See log.h. Lines are written with a single write(2) so that lines from the
// five processes sharing the supervisor's stderr do not interleave mid-line.
#include "log/log.h"

#include <time.h>
#include <unistd.h>

#include <cstdio>

namespace ipsec::log {
namespace {
std::string gRole = "ipsec";
std::atomic<bool> gDebug{false};
}  // namespace

void setRole(std::string_view role) { gRole = role; }
void setDebug(bool on) { gDebug.store(on, std::memory_order_relaxed); }
bool debugEnabled() { return gDebug.load(std::memory_order_relaxed); }

void write(char level, std::string_view message) {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  tm t{};
  gmtime_r(&ts.tv_sec, &t);
  std::string line = fmt::format("{:02}:{:02}:{:02}.{:03} {}[{}] {} {}\n", t.tm_hour, t.tm_min,
                                 t.tm_sec, ts.tv_nsec / 1000000, gRole, getpid(), level, message);
  ssize_t ignored = ::write(STDERR_FILENO, line.data(), line.size());
  (void)ignored;
}

}  // namespace ipsec::log
