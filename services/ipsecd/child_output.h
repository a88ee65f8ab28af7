// ipsecd: what a child writes to its stdout/stderr. Each child gets a pipe of
// its own instead of ipsecd's stderr, so that no child can write a line that
// reads as another process's. ipsecd reads the pipe (non-blocking, in its
// Asio loop) and writes each line to its own stderr, tagged with the role and
// pid it started the child under; the child's bytes are untrusted (a
// compromised forwarder writes what it likes), so a line is cut at
// kMaxLineBytes and escaped: control bytes, backslashes and bytes that are
// not UTF-8 become \xNN, so no line break, carriage return or terminal escape
// sequence gets through.
//
// A line in lib/log's own form from this child ("HH:MM:SS.mmm ROLE[PID] L
// message", ROLE and PID its own) keeps its level L and message; anything
// else (a library writing to stderr, or a line naming another process) is
// relayed whole, as an "output:" message at level I.
#pragma once

#include <utility>  // before asio (Boost 1.74 with GCC 12)

#include <sys/types.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "control/unique_fd.h"
#include "counters.h"  // OutputCounters

namespace ipsec::supervisor {

inline constexpr std::size_t kMaxLineBytes = 2048;


// The bytes of one child to lines; no I/O. Holds at most kMaxLineBytes of an
// unfinished line.
class OutputRelay {
 public:
  // emit gets each finished line, "\n" included.
  using Emit = std::function<void(std::string_view line)>;
  OutputRelay(std::string role, pid_t pid, OutputCounters& counters, Emit emit);

  // A child may write this many lines a second, in bursts of up to
  // kBurstLines: beyond it lines are dropped and counted, and the next one
  // relayed says how many, so that a hostile child (the forwarder parses
  // the network) cannot fill the disk or the journal through ipsecd.
  static constexpr double kLinesPerSecond = 200;
  static constexpr double kBurstLines = 2000;

  void feed(std::string_view bytes);
  // The child's end closed: an unfinished last line goes out as it is.
  void finish();

 private:
  void emitLine();

  std::string role_;
  pid_t pid_;
  std::string ownPrefix_;  // "ROLE[PID] "
  OutputCounters& counters_;
  Emit emit_;
  std::string line_;
  bool discarding_ = false;  // the rest of a line that was cut
  double tokens_ = kBurstLines;
  std::uint64_t refilledNs_ = 0;
  std::uint64_t droppedSinceLast_ = 0;
};

// The read end of one child's pipe on ipsecd's loop: reads what is there
// (at most kReadBudget bytes per wake-up, so a chatty child cannot hold the
// loop), never blocks, and calls onClosed once the child's end is closed
// and everything was relayed.
class ChildOutputPipe {
 public:
  static constexpr std::size_t kReadBudget = 256 * 1024;

  ChildOutputPipe(boost::asio::io_context& io, control::UniqueFd readEnd, std::unique_ptr<OutputRelay> relay);
  void start(std::function<void()> onClosed);
  // Relays whatever is in the pipe now, without waiting (at teardown).
  void drain();

 private:
  void wait();
  // False once the pipe reached its end.
  bool readAvailable(std::size_t budget);

  boost::asio::posix::stream_descriptor pipe_;
  std::unique_ptr<OutputRelay> relay_;
  std::function<void()> onClosed_;
  bool closed_ = false;
};

// The message bytes of a line, escaped (see the top of this file).
std::string escapeOutput(std::string_view bytes);

// "HH:MM:SS.mmm ROLE[PID] L message\n" for a line of this child's (see the
// top of this file); the time is ipsecd's.
std::string tagLine(std::string_view role, pid_t pid, std::string_view ownPrefix, std::string_view line);

}  // namespace ipsec::supervisor
