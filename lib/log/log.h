// Logging for every process: one line per event on stderr, prefixed with the
// role name (the same name as the binary) and pid. A child's stderr is a pipe
// that ipsecd reads and re-tags with the role and pid it started the child
// under (services/ipsecd/child_output.h), so ipsecd's stderr reads like syslog
// and no child can write a line that passes for another process's. Per-packet tracing goes through debug(), which is off
// unless ipsecd --debug or net.inet.ipsec.debug turned it on.
#pragma once

#include <atomic>
#include <fmt/format.h>
#include <string>
#include <string_view>

namespace ipsec::log {

void setRole(std::string_view role);
void setDebug(bool on);
// Start every line with its syslog priority, "<3>" for errors, "<4>"
// warnings, "<6>" information, "<7>" debug (sd-daemon(3)'s prefixes), so
// that journald keeps the levels of what ipsecd writes to stderr. ipsecd
// turns it on; its children write plain lines into the pipe it reads.
void setSyslogPrefix(bool on);
bool syslogPrefixEnabled();
// The prefix for a level letter (D, I, W, E), "" when it is off.
std::string_view syslogPrefix(char level);
bool debugEnabled();

void write(char level, std::string_view message);

template <class... Args>
void info(fmt::format_string<Args...> fmt, Args&&... args) {
  write('I', fmt::format(fmt, std::forward<Args>(args)...));
}
template <class... Args>
void warn(fmt::format_string<Args...> fmt, Args&&... args) {
  write('W', fmt::format(fmt, std::forward<Args>(args)...));
}
template <class... Args>
void error(fmt::format_string<Args...> fmt, Args&&... args) {
  write('E', fmt::format(fmt, std::forward<Args>(args)...));
}
template <class... Args>
void debug(fmt::format_string<Args...> fmt, Args&&... args) {
  if (debugEnabled()) write('D', fmt::format(fmt, std::forward<Args>(args)...));
}

}  // namespace ipsec::log
