// The syscall sets every sandboxed child draws its allow-list from, and the
// checks of a profile. Run by each child at start, while still root.
// The sets were tested for real (tests/unit/sandbox): an Asio event loop with
// timers and a socket, std::thread, stdio and sodium_malloc run under them.
#include "sandbox/profile.h"

#include <fcntl.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

namespace ipsec::sandbox {

namespace {

SyscallRule rule(std::string name, std::string reason) {
  return SyscallRule{std::move(name), std::move(reason), {}, std::nullopt};
}

SyscallRule ruleWithArgs(std::string name, std::vector<ArgCondition> conditions, std::string reason) {
  return SyscallRule{std::move(name), std::move(reason), std::move(conditions), std::nullopt};
}

// ioctl, fcntl and setsockopt take 32-bit int arguments; compare only the low
// 32 bits so that garbage in the upper half of the register cannot matter
// either way.
constexpr std::uint64_t kLow32 = 0xffffffffu;

// mmap(addr, len, prot, ...) and mprotect(addr, len, prot): prot is argument 2.
// No new executable memory once sandboxed: code injected into a data buffer
// cannot be made to run, whatever else an attacker controls.
ArgCondition notExecutable() { return ArgCondition{2, PROT_EXEC, 0, "prot without PROT_EXEC"}; }

SyscallRule ruleWithArg(std::string name, unsigned index, std::uint64_t value, std::string what,
                        std::string reason) {
  return ruleWithArgs(std::move(name), {argEquals(index, value, std::move(what))}, std::move(reason));
}

std::string hex(std::uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%#llx", static_cast<unsigned long long>(v));
  return v == 0 ? "0x0" : buf;
}

}  // namespace

ArgCondition argEquals(unsigned index, std::uint64_t value, std::string what) {
  return ArgCondition{index, kLow32, value & kLow32, std::move(what)};
}

SandboxProfile& SandboxProfile::allow(const std::vector<SyscallRule>& rules) {
  syscalls.insert(syscalls.end(), rules.begin(), rules.end());
  return *this;
}

SandboxProfile& SandboxProfile::allow(std::string name, std::string reason) {
  syscalls.push_back(rule(std::move(name), std::move(reason)));
  return *this;
}

std::vector<SyscallRule> baselineSyscalls() {
  return {
      rule("read", "channel, eventfd and timerfd reads"),
      rule("write", "channel and eventfd writes, log lines to stderr"),
      rule("readv", "scatter reads by stdio and Asio"),
      rule("writev", "gather writes by stdio and Asio"),
      rule("recvmsg", "control channel datagrams with SCM_RIGHTS descriptors"),
      rule("sendmsg", "control channel datagrams with SCM_RIGHTS descriptors"),
      rule("close", "closing descriptors it was given or created"),
      rule("epoll_create1", "Asio io_context reactor"),
      rule("epoll_ctl", "Asio registers descriptors"),
      rule("epoll_wait", "Asio event loop"),
      rule("epoll_pwait", "event loops that mask signals while waiting"),
      rule("poll", "Asio synchronous operations wait for readiness"),
      rule("ppoll", "glibc and libraries waiting on a few descriptors"),
      rule("eventfd2", "Asio interrupter and ring doorbells"),
      rule("timerfd_create", "Asio timer queue"),
      rule("timerfd_settime", "Asio timer queue"),
      rule("timerfd_gettime", "Asio timer queue"),
      ruleWithArg("ioctl", 1, FIONBIO, "FIONBIO", "Asio sets descriptors non-blocking"),
      ruleWithArg("ioctl", 1, FIONREAD, "FIONREAD", "Asio asks how many bytes are readable"),
      ruleWithArg("fcntl", 1, F_GETFL, "F_GETFL", "reading descriptor status flags"),
      ruleWithArg("fcntl", 1, F_SETFL, "F_SETFL", "setting O_NONBLOCK on received descriptors"),
      ruleWithArg("fcntl", 1, F_GETFD, "F_GETFD", "reading FD_CLOEXEC"),
      ruleWithArg("fcntl", 1, F_SETFD, "F_SETFD", "setting FD_CLOEXEC on received descriptors"),
      rule("futex", "mutexes and condition variables"),
      rule("clock_gettime", "time when the vDSO cannot answer"),
      rule("clock_getres", "timer resolution"),
      rule("gettimeofday", "time when the vDSO cannot answer"),
      rule("nanosleep", "sleeping (backoff)"),
      rule("clock_nanosleep", "sleeping (std::this_thread::sleep_for)"),
      rule("sched_yield", "spin-then-yield polling of the rings"),
      ruleWithArgs("mmap", {notExecutable()}, "allocator, mapping received memfds"),
      rule("munmap", "allocator"),
      rule("mremap", "allocator growing large blocks"),
      ruleWithArgs("mprotect", {notExecutable()}, "allocator, sodium guard pages"),
      rule("madvise", "allocator returning memory, MADV_DONTDUMP on key memory"),
      rule("brk", "allocator"),
      rule("rt_sigreturn", "returning from a signal handler"),
      rule("rt_sigprocmask", "blocking signals around waits and in abort()"),
      rule("rt_sigaction", "installing SIGTERM/SIGINT handlers (asio::signal_set)"),
      rule("restart_syscall", "resuming a sleep interrupted by a signal"),
      rule("getpid", "log prefixes, abort()"),
      rule("gettid", "log prefixes, abort()"),
      rule("tgkill", "abort() raising SIGABRT on a broken invariant"),
      rule("getrandom", "entropy for libsodium, OpenSSL and std::random_device"),
      rule("newfstatat", "stdio probes a stream's descriptor (glibc's fstat); no path is "
                         "reachable from the empty chroot"),
      rule("fstat", "stdio probes a stream's descriptor"),
      rule("exit", "a thread ends"),
      rule("exit_group", "the process ends"),
  };
}

std::vector<SyscallRule> threadSyscalls() {
  return {
      ruleWithArgs("clone", {ArgCondition{0, CLONE_THREAD, CLONE_THREAD, "flags with CLONE_THREAD"}},
                   "std::thread creates threads; without CLONE_THREAD (a fork) it is refused"),
      SyscallRule{"clone3",
                  "answered ENOSYS: its flags sit in memory seccomp cannot read, so glibc "
                  "falls back to clone",
                  {}, ENOSYS},
      rule("set_robust_list", "glibc registers a new thread's robust futex list"),
      rule("rseq", "glibc registers a new thread's restartable sequences"),
      rule("sched_getaffinity", "std::thread::hardware_concurrency"),
  };
}

std::vector<SyscallRule> socketIoSyscalls() {
  return {
      rule("recvfrom", "datagrams on received sockets"),
      rule("sendto", "datagrams on received sockets"),
      rule("recvmmsg", "batched receive (one syscall per burst)"),
      rule("sendmmsg", "batched send (one syscall per burst)"),
      rule("accept4", "clients of a listening socket the supervisor created"),
      rule("getsockopt", "SO_PEERCRED of a client, socket state"),
      rule("getsockname", "the address of a received socket"),
      rule("getpeername", "the peer of an accepted socket"),
      rule("shutdown", "closing a client connection cleanly"),
  };
}

std::vector<SyscallRule> channelBufferSyscalls() {
  const char* why = "sizing the buffers of a data-plane channel received after a restart";
  std::vector<SyscallRule> rules;
  for (const auto& [option, name] : {std::pair{SO_SNDBUFFORCE, "SO_SNDBUFFORCE"}, {SO_SNDBUF, "SO_SNDBUF"},
                                     {SO_RCVBUFFORCE, "SO_RCVBUFFORCE"}, {SO_RCVBUF, "SO_RCVBUF"}}) {
    rules.push_back(ruleWithArgs("setsockopt", {argEquals(1, SOL_SOCKET, "SOL_SOCKET"), argEquals(2, option, name)}, why));
  }
  return rules;
}

std::vector<SyscallRule> lockedMemorySyscalls() {
  return {
      rule("mlock", "sodium_malloc locks key memory out of swap"),
      rule("munlock", "sodium_free unlocks before wiping and unmapping"),
  };
}

SeccompDefault seccompDefaultFromEnvironment() {
  const char* value = std::getenv("IPSEC_SECCOMP_LOG");
  if (value == nullptr || std::string_view(value).empty() || std::string_view(value) == "0") {
    return SeccompDefault::kKillProcess;
  }
  const std::string_view v(value);
  if (v == "1" || v == "log") return SeccompDefault::kLog;
  if (v == "trap") return SeccompDefault::kTrap;
  throw std::runtime_error("IPSEC_SECCOMP_LOG=" + std::string(v) +
                           ": expected 0, 1, log or trap");
}

std::string describeConditions(const SyscallRule& rule) {
  std::string text;
  for (const auto& c : rule.conditions) {
    if (!text.empty()) text += " and ";
    text += "arg" + std::to_string(c.index);
    if (c.mask != ~std::uint64_t{0} && c.mask != kLow32) text += " & " + hex(c.mask);
    text += " == " + hex(c.value);
    if (!c.what.empty()) text += " (" + c.what + ")";
  }
  return text;
}

void checkProfile(const SandboxProfile& profile) {
  const std::string who = "sandbox profile " + profile.name + ": ";
  for (const auto& r : profile.syscalls) {
    if (seccomp_syscall_resolve_name(r.name.c_str()) == __NR_SCMP_ERROR) {
      throw std::runtime_error(who + "unknown syscall name \"" + r.name + "\" in allow-list");
    }
    if (r.reason.empty()) throw std::runtime_error(who + "syscall " + r.name + " has no reason");
    for (const auto& c : r.conditions) {
      if (c.index > 5) throw std::runtime_error(who + "syscall " + r.name + ": argument index out of range");
      if ((c.value & ~c.mask) != 0) {
        throw std::runtime_error(who + "syscall " + r.name + ": a condition's value has bits outside its mask");
      }
    }
  }
  if (profile.credentials) {
    // uid 0 keeps root; (uid_t)-1 means "unchanged" to setresuid.
    const auto& c = *profile.credentials;
    if (c.uid == 0 || c.gid == 0 || c.uid == static_cast<uid_t>(-1) ||
        c.gid == static_cast<gid_t>(-1)) {
      throw std::runtime_error(who + "refuses uid/gid " + std::to_string(c.uid) + "/" +
                               std::to_string(c.gid) + ": a sandboxed process never keeps root");
    }
  }
  if (profile.filesystem && (profile.filesystem->chrootDir.empty() ||
                             profile.filesystem->chrootDir.front() != '/')) {
    throw std::runtime_error(who + "chroot directory must be an absolute path");
  }
  for (const auto& k : profile.capabilities) {
    if (!cap_valid(k.capability)) {
      throw std::runtime_error(who + "invalid capability " + std::to_string(k.capability));
    }
  }
}

}  // namespace ipsec::sandbox
