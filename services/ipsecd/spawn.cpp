// See spawn.h.
#include "spawn.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/personality.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <string_view>
#include <system_error>

extern char** environ;

namespace ipsec::supervisor {
namespace {

// The services' heaps grow by a few hundred bytes per SA and policy (100 000
// SAs: ~100 MiB in keydb), and on this kind of virtual machine each 4 KiB
// page's first touch was the largest cost of an SA ADD burst. glibc's
// glibc.malloc.hugetlb=1 asks for transparent huge pages on the heap
// (madvise; honoured when /sys/kernel/mm/transparent_hugepage/enabled is
// "madvise" or "always"): one fault per 2 MiB. A GLIBC_TUNABLES that already
// names it (e.g. glibc.malloc.hugetlb=0) wins.
std::vector<std::string> childEnvironment() {
  constexpr std::string_view kName = "GLIBC_TUNABLES=";
  constexpr std::string_view kHugeTlb = "glibc.malloc.hugetlb=1";
  std::vector<std::string> env;
  bool tunables = false;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string entry(*e);
    // systemd's notification socket is ipsecd's alone (sd_notify(3)).
    if (entry.starts_with("NOTIFY_SOCKET=")) continue;
    if (entry.starts_with(kName)) {
      tunables = true;
      if (entry.find("glibc.malloc.hugetlb=") == std::string::npos) {
        entry += entry.size() > kName.size() ? ":" : "";
        entry += kHugeTlb;
      }
    }
    env.push_back(std::move(entry));
  }
  if (!tunables) env.push_back(std::string(kName) + std::string(kHugeTlb));
  return env;
}

[[noreturn]] void execInChild(const std::string& binary, const std::vector<std::string>& args,
                              const std::vector<int>& fds, int output, const std::vector<char*>& envp) {
  // Only async-signal-safe calls from here on: we are a forked copy.
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  for (int sig = 1; sig < NSIG; ++sig) signal(sig, SIG_DFL);

  // Move every descriptor above the target range first, so that dup2 into
  // 3..3+n never clobbers a source that is still needed.
  const int base = 3 + static_cast<int>(fds.size()) + 64;
  std::vector<int> high;
  high.reserve(fds.size());
  for (int fd : fds) {
    int moved = fcntl(fd, F_DUPFD_CLOEXEC, base);
    if (moved < 0) _exit(126);
    high.push_back(moved);
  }
  const int highOutput = output >= 0 ? fcntl(output, F_DUPFD_CLOEXEC, base) : -1;
  if (output >= 0 && highOutput < 0) _exit(126);
  for (size_t i = 0; i < high.size(); ++i) {
    if (dup2(high[i], 3 + static_cast<int>(i)) < 0) _exit(126);  // dup2 clears CLOEXEC
  }
  if (highOutput >= 0 && (dup2(highOutput, STDOUT_FILENO) < 0 || dup2(highOutput, STDERR_FILENO) < 0)) _exit(126);
  close_range(3 + static_cast<unsigned>(fds.size()), ~0U, 0);

  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(binary.c_str()));
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  // An inherited READ_IMPLIES_EXEC would make the kernel add PROT_EXEC to
  // mappings after seccomp's argument check saw none: plain Linux personality.
  if (personality(PER_LINUX) < 0) _exit(126);
  execve(binary.c_str(), argv.data(), envp.data());
  _exit(127);
}

}  // namespace

pid_t spawnChild(const ChildSpec& spec) {
  // Built before the fork: the child may only make async-signal-safe calls.
  static const std::vector<std::string> env = childEnvironment();
  std::vector<char*> envp;
  envp.reserve(env.size() + 1);
  for (const auto& e : env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  pid_t pid = fork();
  if (pid < 0) throw std::system_error(errno, std::generic_category(), "fork " + spec.role);
  if (pid == 0) execInChild(spec.binary, spec.args, spec.fds, spec.output, envp);
  return pid;
}

int runCommand(const std::vector<std::string>& argv) {
  pid_t pid = fork();
  if (pid < 0) throw std::system_error(errno, std::generic_category(), "fork " + argv.at(0));
  if (pid == 0) {
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    close_range(3, ~0U, 0);
    execvp(args[0], args.data());
    _exit(127);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throw std::system_error(errno, std::generic_category(), "waitpid");
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

Captured captureCommand(const std::vector<std::string>& argv, std::size_t maxBytes,
                        std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) throw std::system_error(errno, std::generic_category(), "pipe2");
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = fork();
  if (pid < 0) {
    close(out[0]);
    close(out[1]);
    throw std::system_error(errno, std::generic_category(), "fork " + argv.at(0));
  }
  if (pid == 0) {
    if (dup2(out[1], STDOUT_FILENO) < 0) _exit(126);
    close_range(3, ~0U, 0);
    execv(args[0], args.data());
    _exit(127);
  }
  close(out[1]);
  Captured result;
  // Until end-of-file (the command, and anything it left holding its
  // stdout, is done) or the deadline.
  bool finished = false;
  char buf[4096];
  for (;;) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd p{out[0], POLLIN, 0};
    const int r = poll(&p, 1, static_cast<int>(left.count()));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    const ssize_t n = read(out[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      finished = n == 0;
      break;
    }
    result.text.append(buf, std::min(static_cast<std::size_t>(n), maxBytes - std::min(maxBytes, result.text.size())));
  }
  close(out[0]);
  // Its stdout is closed; it may still not exit (or exit slowly): the same
  // deadline holds for that.
  int status = 0;
  bool reaped = false;
  while (finished && !reaped) {
    const pid_t w = waitpid(pid, &status, WNOHANG);
    if (w == pid) {
      reaped = true;
    } else if (w < 0 && errno != EINTR) {
      throw std::system_error(errno, std::generic_category(), "waitpid");
    } else if (std::chrono::steady_clock::now() >= deadline) {
      break;
    } else if (w == 0) {
      usleep(1000);
    }
  }
  if (!reaped) {
    kill(pid, SIGKILL);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    result.text.clear();
    result.error = "did not finish within " + std::to_string(timeout.count()) + " ms (killed)";
    return result;
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
    result.ok = true;
    return result;
  }
  result.text.clear();
  result.error = WIFEXITED(status) ? "exited with status " + std::to_string(WEXITSTATUS(status))
                                   : "killed by signal " + std::to_string(WTERMSIG(status));
  return result;
}

}  // namespace ipsec::supervisor
