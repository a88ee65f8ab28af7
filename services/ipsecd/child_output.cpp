// See child_output.h.
#include "child_output.h"

#include "clock/clock.h"
#include "log/log.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>

namespace ipsec::supervisor {
namespace {

constexpr std::string_view kLevels = "DIWE";  // lib/log's levels

void appendHex(std::string& out, unsigned char c) {
  static constexpr char kDigits[] = "0123456789abcdef";
  out += "\\x";
  out += kDigits[c >> 4];
  out += kDigits[c & 0xf];
}

// Length of the well-formed UTF-8 sequence at s[i] (RFC 3629: no overlong
// forms, no surrogates, nothing above U+10FFFF), or 0.
std::size_t utf8Length(std::string_view s, std::size_t i) {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = byte(i);
  std::size_t n = 0;
  unsigned char lo = 0x80, hi = 0xbf;  // the allowed range of the second byte
  if (c >= 0xc2 && c <= 0xdf) {
    n = 2;
  } else if (c >= 0xe0 && c <= 0xef) {
    n = 3;
    if (c == 0xe0) lo = 0xa0;
    if (c == 0xed) hi = 0x9f;
  } else if (c >= 0xf0 && c <= 0xf4) {
    n = 4;
    if (c == 0xf0) lo = 0x90;
    if (c == 0xf4) hi = 0x8f;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  if (byte(i + 1) < lo || byte(i + 1) > hi) return 0;
  for (std::size_t k = 2; k < n; ++k) {
    if (byte(i + k) < 0x80 || byte(i + k) > 0xbf) return 0;
  }
  return n;
}

std::string timeOfDay() {
  const clock::TimeOfDay t = clock::utcTimeOfDay();
  char buf[48];
  std::snprintf(buf, sizeof buf, "%02u:%02u:%02u.%03u", t.hour, t.minute, t.second, t.millisecond);
  return buf;
}

// "HH:MM:SS.mmm " as lib/log writes it.
bool startsWithTime(std::string_view s) {
  constexpr std::string_view kShape = "00:00:00.000 ";
  if (s.size() < kShape.size()) return false;
  for (std::size_t i = 0; i < kShape.size(); ++i) {
    const bool digit = s[i] >= '0' && s[i] <= '9';
    if (kShape[i] == '0' ? !digit : s[i] != kShape[i]) return false;
  }
  return true;
}

}  // namespace

std::string escapeOutput(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (std::size_t i = 0; i < bytes.size();) {
    const auto c = static_cast<unsigned char>(bytes[i]);
    if (c < 0x80) {
      if (c < 0x20 || c == 0x7f) {
        appendHex(out, c);
      } else if (c == '\\') {
        out += "\\\\";
      } else {
        out += static_cast<char>(c);
      }
      ++i;
      continue;
    }
    const std::size_t n = utf8Length(bytes, i);
    // U+0080..U+009F (C2 80..C2 9F) are the C1 controls: CSI among them.
    const bool c1 = n == 2 && c == 0xc2 && static_cast<unsigned char>(bytes[i + 1]) < 0xa0;
    if (n == 0 || c1) {
      appendHex(out, c);
      ++i;
    } else {
      out.append(bytes.substr(i, n));
      i += n;
    }
  }
  return out;
}

std::string tagLine(std::string_view role, pid_t pid, std::string_view ownPrefix, std::string_view line) {
  char level = 'I';
  std::string message = "output: ";
  std::string_view rest = line;
  if (startsWithTime(rest) && rest.substr(13).starts_with(ownPrefix)) {
    std::string_view after = rest.substr(13 + ownPrefix.size());
    if (after.size() >= 2 && kLevels.find(after[0]) != std::string_view::npos && after[1] == ' ') {
      level = after[0];
      message.clear();
      rest = after.substr(2);
    }
  }
  message += escapeOutput(rest);
  std::string out(log::syslogPrefix(level));
  out += timeOfDay();
  out += ' ';
  out += role;
  out += '[' + std::to_string(pid) + "] ";
  out += level;
  out += ' ';
  out += message;
  out += '\n';
  return out;
}

OutputRelay::OutputRelay(std::string role, pid_t pid, OutputCounters& counters, Emit emit)
    : role_(std::move(role)),
      pid_(pid),
      ownPrefix_(role_ + "[" + std::to_string(pid) + "] "),
      counters_(counters),
      emit_(std::move(emit)) {}

void OutputRelay::feed(std::string_view bytes) {
  while (!bytes.empty()) {
    const std::size_t nl = bytes.find('\n');
    const std::string_view part = bytes.substr(0, nl);
    if (discarding_) {
      counters_.child_output_bytes_dropped += part.size();
    } else {
      const std::size_t room = kMaxLineBytes - line_.size();
      line_.append(part.substr(0, room));
      if (part.size() > room) {
        counters_.child_output_bytes_dropped += part.size() - room;
        ++counters_.child_output_lines_truncated;
        line_ += " [truncated]";
        emitLine();
        discarding_ = true;
      }
    }
    if (nl == std::string_view::npos) return;
    if (discarding_) {
      discarding_ = false;
    } else {
      emitLine();
    }
    bytes.remove_prefix(nl + 1);
  }
}

void OutputRelay::finish() {
  if (!line_.empty()) emitLine();
  discarding_ = false;
}

void OutputRelay::emitLine() {
  const std::uint64_t now = clock::monotonicNs();
  if (refilledNs_ != 0) {
    tokens_ = std::min(kBurstLines, tokens_ + static_cast<double>(now - refilledNs_) * 1e-9 * kLinesPerSecond);
  }
  refilledNs_ = now;
  if (tokens_ < 1) {
    ++counters_.child_output_lines_dropped;
    ++droppedSinceLast_;
    line_.clear();
    return;
  }
  tokens_ -= 1;
  if (droppedSinceLast_ != 0) {
    const std::string note = "ipsecd: " + std::to_string(droppedSinceLast_) + " lines of this child dropped (over " +
                             std::to_string(static_cast<int>(kLinesPerSecond)) + " a second)";
    droppedSinceLast_ = 0;
    emit_(tagLine(role_, pid_, ownPrefix_, note));
  }
  ++counters_.child_output_lines;
  emit_(tagLine(role_, pid_, ownPrefix_, line_));
  line_.clear();
}

ChildOutputPipe::ChildOutputPipe(boost::asio::io_context& io, control::UniqueFd readEnd,
                                 std::unique_ptr<OutputRelay> relay)
    : pipe_(io, readEnd.release()), relay_(std::move(relay)) {}

void ChildOutputPipe::start(std::function<void()> onClosed) {
  onClosed_ = std::move(onClosed);
  wait();
}

void ChildOutputPipe::wait() {
  pipe_.async_wait(boost::asio::posix::stream_descriptor::wait_read, [this](boost::system::error_code ec) {
    if (ec || closed_) return;
    if (readAvailable(kReadBudget)) {
      wait();
    } else if (onClosed_) {
      onClosed_();
    }
  });
}

void ChildOutputPipe::drain() {
  if (!closed_) readAvailable(~std::size_t{0});
}

bool ChildOutputPipe::readAvailable(std::size_t budget) {
  char buf[16384];
  std::size_t taken = 0;
  while (taken < budget) {
    const ssize_t n = ::read(pipe_.native_handle(), buf, sizeof buf);
    if (n > 0) {
      relay_->feed(std::string_view(buf, static_cast<std::size_t>(n)));
      taken += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
    // End of file (every copy of the write end closed), or an error: done.
    relay_->finish();
    closed_ = true;
    return false;
  }
  return true;
}

}  // namespace ipsec::supervisor
