// Test helper (sandbox and audit tests): forks a child that applies a
// SandboxProfile, reports "ok" or the error text on a pipe, then waits until
// the parent has looked at it from outside (/proc) before it runs a body and
// exits with the body's result. The parent kills and reaps a child it did
// not finish, so a failing test leaves no process behind.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>

#include "sandbox/apply.h"

namespace ipsec::sandbox::testing {

class SandboxedChild {
 public:
  SandboxedChild(const SandboxProfile& profile, const std::function<int()>& body) {
    int report[2];
    int go[2];
    if (pipe2(report, O_CLOEXEC) != 0 || pipe2(go, O_CLOEXEC) != 0) {
      throw std::runtime_error("pipe2 failed");
    }
    pid_ = fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      close(report[0]);
      close(go[1]);
      std::string result = "ok";
      try {
        applySandbox(profile);
      } catch (const std::exception& e) {
        result = std::string("error: ") + e.what();
      }
      (void)!write(report[1], result.data(), result.size());
      close(report[1]);
      char c = 0;
      const bool released = read(go[0], &c, 1) == 1;
      if (result != "ok" || !released) _exit(100);
      _exit(body());
    }
    close(report[1]);
    close(go[0]);
    reportFd_ = report[0];
    goFd_ = go[1];
  }

  SandboxedChild(const SandboxedChild&) = delete;
  SandboxedChild& operator=(const SandboxedChild&) = delete;

  ~SandboxedChild() {
    if (reportFd_ >= 0) close(reportFd_);
    if (goFd_ >= 0) close(goFd_);
    if (!reaped_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }

  pid_t pid() const { return pid_; }

  // "ok", or "error: <what()>" if applySandbox threw. Blocks until reported.
  std::string applyResult() {
    std::string text;
    char buf[512];
    ssize_t n;
    while ((n = read(reportFd_, buf, sizeof buf)) > 0) text.append(buf, static_cast<size_t>(n));
    return text;
  }

  // Lets the child run its body; returns the raw wait status.
  int finish() {
    const char c = 'g';
    (void)!write(goFd_, &c, 1);
    close(goFd_);
    goFd_ = -1;
    int status = 0;
    waitpid(pid_, &status, 0);
    reaped_ = true;
    return status;
  }

 private:
  pid_t pid_ = -1;
  int reportFd_ = -1;
  int goFd_ = -1;
  bool reaped_ = false;
};

inline std::string describeStatus(int status) {
  if (WIFEXITED(status)) return "exit " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("signal ") + strsignal(WTERMSIG(status));
  return "status " + std::to_string(status);
}

}  // namespace ipsec::sandbox::testing
