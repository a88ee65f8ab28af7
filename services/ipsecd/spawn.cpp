// See spawn.h.
#include "spawn.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <system_error>

namespace ipsec::supervisor {
namespace {

[[noreturn]] void execInChild(const std::string& binary, const std::vector<std::string>& args,
                              const std::vector<int>& fds) {
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
  for (size_t i = 0; i < high.size(); ++i) {
    if (dup2(high[i], 3 + static_cast<int>(i)) < 0) _exit(126);  // dup2 clears CLOEXEC
  }
  close_range(3 + static_cast<unsigned>(fds.size()), ~0U, 0);

  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(binary.c_str()));
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  execv(binary.c_str(), argv.data());
  _exit(127);
}

}  // namespace

pid_t spawnChild(const ChildSpec& spec) {
  pid_t pid = fork();
  if (pid < 0) throw std::system_error(errno, std::generic_category(), "fork " + spec.role);
  if (pid == 0) execInChild(spec.binary, spec.args, spec.fds);
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

}  // namespace ipsec::supervisor
