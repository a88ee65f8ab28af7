// ipsecd: starting a child with fork+exec. The child gets a fresh address
// space and exactly the descriptors listed, renumbered from 3 upward in the
// order given (child_fds.h, from proto/fd_layout.h); stdout and
// stderr are the write end of its output pipe (child_output.h); every other
// descriptor is closed before exec.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <string>
#include <vector>

namespace ipsec::supervisor {

struct ChildSpec {
  std::string role;                 // ipsec-keydb, ... (also the binary's name)
  std::string binary;               // absolute path
  std::vector<std::string> args;    // argv[1..]
  std::vector<int> fds;             // fds[i] becomes descriptor 3 + i in the child
  int output = -1;                  // becomes its stdout and stderr (-1: ipsecd's own)
};

// Returns the child's pid; throws std::system_error if fork fails. A failed exec
// shows up as the child exiting with status 127.
pid_t spawnChild(const ChildSpec& spec);

// Runs a helper command (ip, setkey) to completion; returns its exit status,
// or -1 if it died by a signal.
int runCommand(const std::vector<std::string>& argv);

// What a captured command wrote, or why there is nothing to show.
struct Captured {
  bool ok = false;    // it exited 0 within the time allowed
  std::string text;   // its stdout (at most maxBytes), when ok
  std::string error;  // when not ok: "did not finish within 2000 ms", "exited with status 1", ...
};

// Runs a command of ours and returns what it wrote to stdout (at most
// maxBytes; the rest is discarded). Bounded by `timeout`: a command that has
// not exited and closed its stdout by then is killed (SIGKILL, by its pid)
// and reaped, and the answer says so; the caller (ipsecd's event loop) never
// waits longer than that.
Captured captureCommand(const std::vector<std::string>& argv, std::size_t maxBytes, std::chrono::milliseconds timeout);

}  // namespace ipsec::supervisor
