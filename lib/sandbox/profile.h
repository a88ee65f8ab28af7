// What a child process may do once it has dropped root: a value each
// service's main.cpp writes out in full, every permission with a one-line
// reason, so that reading it is like reading a row of OpenBSD's privsep table
// (STYLE.md §1). applySandbox() (apply.h) enforces it; `ipsecctl audit`
// (lib/audit) shows what the kernel says was enforced.
//
// Seccomp: a syscall not on the allow-list kills the whole process
// (SCMP_ACT_KILL_PROCESS), so a compromised process cannot keep trying, and
// the supervisor sees SIGSYS and can restart it. For debugging, the
// environment variable IPSEC_SECCOMP_LOG=1 makes such calls only logged by
// the kernel (SCMP_ACT_LOG, see `dmesg`/audit log), and IPSEC_SECCOMP_LOG=trap
// raises SIGSYS in the offending thread instead (SCMP_ACT_TRAP), which a
// debugger can catch. Never set it in production.
#pragma once

#include <sys/capability.h>
#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ipsec::sandbox {

// A condition on one argument of a system call: the call matches only when
// (argument & mask) == value. `what` says in words what it allows
// ("prot without PROT_EXEC"); --print-profile and `ipsecctl audit` show it.
struct ArgCondition {
  unsigned index = 0;  // 0..5
  std::uint64_t mask = ~std::uint64_t{0};
  std::uint64_t value = 0;
  std::string what;
};

// An int argument (ioctl/fcntl command, setsockopt level or option) equal to
// value; only the low 32 bits are compared, as the kernel reads an int.
ArgCondition argEquals(unsigned index, std::uint64_t value, std::string what);

// One entry of the seccomp allow-list. The name is resolved with
// seccomp_syscall_resolve_name; an unknown name is a startup error.
// Several entries with one name are alternatives (any may match); the
// conditions of one entry must all hold (e.g. setsockopt only with level
// SOL_UDP and option UDP_GRO).
struct SyscallRule {
  std::string name;
  std::string reason;
  std::vector<ArgCondition> conditions;  // empty: any arguments
  // If set, the call is not allowed but answered with this errno (e.g. clone3
  // → ENOSYS so glibc falls back to clone, whose flags can be checked).
  std::optional<int> errnoValue;
};

// The conditions of a rule in words, e.g. "arg2 & 0x4 == 0x0 (prot without
// PROT_EXEC)"; several joined by " and "; empty without conditions.
std::string describeConditions(const SyscallRule& rule);

struct Credentials {
  uid_t uid;
  gid_t gid;
  std::string reason;
};

struct FilesystemView {
  std::string chrootDir;  // an empty root-owned 0555 directory (ensureEmptyDir)
  std::string reason;
};

struct KeptCapability {
  cap_value_t capability;
  std::string reason;
};

struct Flag {
  bool enabled = false;
  std::string reason;
};

enum class SeccompDefault { kKillProcess, kTrap, kLog };

struct SandboxProfile {
  std::string name;  // the role ("ipsec-forwarder"), for messages

  std::optional<Credentials> credentials;     // nullopt: keep the current ids
  std::optional<FilesystemView> filesystem;   // nullopt: no chroot
  std::vector<KeptCapability> capabilities;   // normally empty: drop everything
  Flag lockMemory;                            // raise RLIMIT_MEMLOCK (key slab, sodium_malloc)
  // The limit set when lockMemory. keydb and the broker set their own, sized
  // for net.key.max_sas's ceiling (services/keydb/main.cpp, crypto/main.cpp).
  std::uint64_t memlockBytes = 64u << 20;
  // Disabled means "not forced": a uid change still resets the flag to
  // fs.suid_dumpable (0 on Debian), so the process may end up non-dumpable.
  Flag nonDumpable{true, "no core dumps or ptrace of a process that may hold keys"};
  std::vector<SyscallRule> syscalls;          // the seccomp allow-list
  // nullopt: kKillProcess unless IPSEC_SECCOMP_LOG says otherwise.
  std::optional<SeccompDefault> seccompDefault;

  // Appends entries to the allow-list; returns *this to chain.
  SandboxProfile& allow(const std::vector<SyscallRule>& rules);
  SandboxProfile& allow(std::string name, std::string reason);
};

// The syscall sets. Each reason says who needs the call.
//
// Every child: I/O on the descriptors it was given (channels, eventfds,
// timerfds), an Asio/epoll event loop, the allocator, time, signals, exit.
// Opens nothing by name and creates no socket; mmap and mprotect only
// without PROT_EXEC (no new executable memory once sandboxed).
std::vector<SyscallRule> baselineSyscalls();
// Extra threads (crypto workers): clone restricted to CLONE_THREAD, so the
// process cannot fork; clone3 answered ENOSYS.
std::vector<SyscallRule> threadSyscalls();
// Socket data I/O on sockets received from the supervisor (forwarder: ESP,
// NAT-T, raw sockets; policy: the PF_KEY listener). Creates no socket, and
// sets no socket option: a process that needs one adds it by name below.
std::vector<SyscallRule> socketIoSyscalls();
// setsockopt for the socket buffer sizes of a control channel made after the
// sandbox (keydb and policy get new data-plane channels on a restart:
// lib/control/wire.cpp sizeSocketBuffers), and nothing else.
std::vector<SyscallRule> channelBufferSyscalls();
// Locked key memory (sodium_malloc/sodium_free: mlock, munlock, madvise).
std::vector<SyscallRule> lockedMemorySyscalls();

// IPSEC_SECCOMP_LOG: unset/"0" → kKillProcess, "1"/"log" → kLog,
// "trap" → kTrap; anything else is an error (a typo must not weaken it
// silently — and must not be silently ignored either).
SeccompDefault seccompDefaultFromEnvironment();

// Resolves every syscall name and checks the ids; throws std::runtime_error
// naming the profile and the first bad entry. applySandbox() does this first.
void checkProfile(const SandboxProfile& profile);

}  // namespace ipsec::sandbox
