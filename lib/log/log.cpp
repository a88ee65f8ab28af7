// See log.h. Lines are written with a single write(2), so a line reaches the
// pipe ipsecd reads (or a terminal, for a child run by hand) whole.
#include "log/log.h"

#include <time.h>
#include <unistd.h>

#include <cstdio>

namespace ipsec::log {
namespace {
std::string gRole = "ipsec";
std::atomic<bool> gDebug{false};
std::atomic<bool> gSyslogPrefix{false};
}  // namespace

void setSyslogPrefix(bool on) { gSyslogPrefix.store(on, std::memory_order_relaxed); }
bool syslogPrefixEnabled() { return gSyslogPrefix.load(std::memory_order_relaxed); }

std::string_view syslogPrefix(char level) {
  if (!syslogPrefixEnabled()) return {};
  switch (level) {
    case 'E': return "<3>";
    case 'W': return "<4>";
    case 'D': return "<7>";
    default: return "<6>";
  }
}

void setRole(std::string_view role) { gRole = role; }
void setDebug(bool on) { gDebug.store(on, std::memory_order_relaxed); }
bool debugEnabled() { return gDebug.load(std::memory_order_relaxed); }

void write(char level, std::string_view message) {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  // UTC time of day by arithmetic: gmtime_r would open /etc/localtime on
  // first use, which a sandboxed process may not.
  const long day = static_cast<long>(ts.tv_sec % 86400);
  std::string line = fmt::format("{}{:02}:{:02}:{:02}.{:03} {}[{}] {} {}\n", syslogPrefix(level), day / 3600,
                                 day / 60 % 60, day % 60, ts.tv_nsec / 1000000, gRole, getpid(), level, message);
  ssize_t ignored = ::write(STDERR_FILENO, line.data(), line.size());
  (void)ignored;
}

}  // namespace ipsec::log
