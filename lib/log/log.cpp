// See log.h. Lines are written with a single write(2), so a line reaches the
// pipe ipsecd reads (or a terminal, for a child run by hand) whole.
#include "log/log.h"

#include <unistd.h>

#include <cstdio>

#include "clock/clock.h"

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
  const clock::TimeOfDay t = clock::utcTimeOfDay();
  std::string line = fmt::format("{}{:02}:{:02}:{:02}.{:03} {}[{}] {} {}\n", syslogPrefix(level), t.hour, t.minute,
                                 t.second, t.millisecond, gRole, getpid(), level, message);
  ssize_t ignored = ::write(STDERR_FILENO, line.data(), line.size());
  (void)ignored;
}

}  // namespace ipsec::log
