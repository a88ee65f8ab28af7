// Enforcement of a SandboxProfile (see apply.h for the order and why), and
// the supervisor's empty-directory helper. Runs in each child at start,
// while it is still root, trusting only the profile compiled into it (and
// IPSEC_SECCOMP_LOG, which can only change what a refused call does).
#include "sandbox/apply.h"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <seccomp.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <system_error>
#include <vector>

namespace ipsec::sandbox {

namespace {

[[noreturn]] void throwErrno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

struct FilterDeleter {
  void operator()(void* ctx) const noexcept { seccomp_release(ctx); }
};
using Filter = std::unique_ptr<void, FilterDeleter>;

struct CapDeleter {
  void operator()(void* caps) const noexcept { cap_free(caps); }
};
using Caps = std::unique_ptr<std::remove_pointer_t<cap_t>, CapDeleter>;

std::uint32_t toAction(SeccompDefault d) {
  switch (d) {
    case SeccompDefault::kKillProcess: return SCMP_ACT_KILL_PROCESS;
    case SeccompDefault::kTrap: return SCMP_ACT_TRAP;
    case SeccompDefault::kLog: return SCMP_ACT_LOG;
  }
  return SCMP_ACT_KILL_PROCESS;
}

Filter buildFilter(const SandboxProfile& p, const std::string& who) {
  const auto defaultAction =
      toAction(p.seccompDefault ? *p.seccompDefault : seccompDefaultFromEnvironment());
  Filter filter(seccomp_init(defaultAction));
  if (!filter) throw std::runtime_error(who + "seccomp_init failed");
  // A syscall made through another ABI (int 0x80, x32) would dodge the list.
  int rc = seccomp_attr_set(filter.get(), SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
  if (rc < 0) throw std::system_error(-rc, std::generic_category(), who + "seccomp badarch");
  for (const auto& r : p.syscalls) {
    const int nr = seccomp_syscall_resolve_name(r.name.c_str());
    if (nr == __NR_SCMP_ERROR) {
      throw std::runtime_error(who + "unknown syscall name \"" + r.name + "\" in allow-list");
    }
    const std::uint32_t action = r.errnoValue ? SCMP_ACT_ERRNO(static_cast<std::uint16_t>(
                                                    *r.errnoValue))
                                              : SCMP_ACT_ALLOW;
    // One rule with every condition: libseccomp ANDs the comparisons of a rule
    // (and ORs the rules of a syscall).
    std::vector<scmp_arg_cmp> cmps;
    for (const auto& c : r.conditions) cmps.push_back({c.index, SCMP_CMP_MASKED_EQ, c.mask, c.value});
    rc = seccomp_rule_add_array(filter.get(), action, nr, static_cast<unsigned>(cmps.size()), cmps.data());
    if (rc < 0) {
      throw std::system_error(-rc, std::generic_category(),
                              who + "seccomp rule for " + r.name);
    }
  }
  return filter;
}

bool isKept(const SandboxProfile& p, cap_value_t cap) {
  for (const auto& k : p.capabilities) {
    if (k.capability == cap) return true;
  }
  return false;
}

void dropBoundingAndAmbient(const SandboxProfile& p, const std::string& who) {
  for (cap_value_t cap = 0; cap < static_cast<cap_value_t>(cap_max_bits()); ++cap) {
    if (isKept(p, cap)) continue;
    // Already out of the bounding set: nothing to do (and dropping would
    // need CAP_SETPCAP, which an unprivileged caller lacks).
    if (cap_get_bound(cap) != 1) continue;
    if (cap_drop_bound(cap) != 0) {
      throwErrno(who + "dropping capability " + std::to_string(cap) + " from the bounding set");
    }
  }
  if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0) {
    throwErrno(who + "clearing the ambient capability set");
  }
}

void changeIds(const Credentials& c, bool keepCaps, const std::string& who) {
  // With KEEPCAPS the permitted set survives the uid change, so the kept
  // capabilities can be re-raised afterwards; it is turned off again below.
  if (keepCaps && prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0) throwErrno(who + "PR_SET_KEEPCAPS");
  if (setgroups(0, nullptr) != 0) throwErrno(who + "setgroups(0)");
  if (setresgid(c.gid, c.gid, c.gid) != 0) throwErrno(who + "setresgid(" + std::to_string(c.gid) + ")");
  if (setresuid(c.uid, c.uid, c.uid) != 0) throwErrno(who + "setresuid(" + std::to_string(c.uid) + ")");
  if (keepCaps && prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) != 0) throwErrno(who + "PR_SET_KEEPCAPS");

  // A saved uid of 0 would let the process setuid(0) back: check all three.
  uid_t ru = 0, eu = 0, su = 0;
  gid_t rg = 0, eg = 0, sg = 0;
  if (getresuid(&ru, &eu, &su) != 0 || getresgid(&rg, &eg, &sg) != 0) throwErrno(who + "getresuid");
  if (ru != c.uid || eu != c.uid || su != c.uid || rg != c.gid || eg != c.gid || sg != c.gid) {
    throw std::runtime_error(who + "uid/gid change did not take effect on real, effective and "
                                   "saved ids");
  }
  if (getgroups(0, nullptr) != 0) throw std::runtime_error(who + "supplementary groups remain");
}

void setCapabilities(const SandboxProfile& p, const std::string& who) {
  Caps caps(cap_init());  // every set empty
  if (!caps) throwErrno(who + "cap_init");
  for (const auto& k : p.capabilities) {
    const cap_value_t one[] = {k.capability};
    if (cap_set_flag(caps.get(), CAP_PERMITTED, 1, one, CAP_SET) != 0 ||
        cap_set_flag(caps.get(), CAP_EFFECTIVE, 1, one, CAP_SET) != 0) {
      throwErrno(who + "cap_set_flag");
    }
  }
  if (cap_set_proc(caps.get()) != 0) throwErrno(who + "cap_set_proc");
  Caps now(cap_get_proc());
  if (!now || cap_compare(now.get(), caps.get()) != 0) {
    throw std::runtime_error(who + "capability sets differ from the profile after cap_set_proc");
  }
}

}  // namespace

void applySandbox(const SandboxProfile& p) {
  const std::string who = "sandbox " + p.name + ": ";
  checkProfile(p);
  // Built first: a bad entry fails while nothing has changed yet.
  Filter filter = buildFilter(p, who);

  if (p.lockMemory.enabled) {
    rlimit limit{p.memlockBytes, p.memlockBytes};
    if (setrlimit(RLIMIT_MEMLOCK, &limit) != 0) {
      // Without CAP_SYS_RESOURCE (a container may withhold it) the hard limit
      // cannot rise: lock as much as it allows rather than refuse to start.
      if (errno != EPERM || getrlimit(RLIMIT_MEMLOCK, &limit) != 0) throwErrno(who + "raising RLIMIT_MEMLOCK");
      limit.rlim_cur = limit.rlim_max;
      if (setrlimit(RLIMIT_MEMLOCK, &limit) != 0) throwErrno(who + "raising RLIMIT_MEMLOCK to its hard limit");
    }
  }
  if (p.nonDumpable.enabled && prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
    throwErrno(who + "PR_SET_DUMPABLE");
  }
  if (p.filesystem) {
    if (chroot(p.filesystem->chrootDir.c_str()) != 0) {
      throwErrno(who + "chroot(" + p.filesystem->chrootDir + ")");
    }
    if (chdir("/") != 0) throwErrno(who + "chdir(/)");
  }
  dropBoundingAndAmbient(p, who);
  if (p.credentials) changeIds(*p.credentials, !p.capabilities.empty(), who);
  setCapabilities(p, who);
  // Changing the euid resets "dumpable" to fs.suid_dumpable: set it again.
  if (p.nonDumpable.enabled) {
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) throwErrno(who + "PR_SET_DUMPABLE");
    if (prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0) throw std::runtime_error(who + "still dumpable");
  }
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) throwErrno(who + "PR_SET_NO_NEW_PRIVS");
  const int rc = seccomp_load(filter.get());
  if (rc < 0) throw std::system_error(-rc, std::generic_category(), who + "seccomp_load");
}

void keepOnlyCapabilities(const SandboxProfile& p) {
  const std::string who = "capabilities of " + p.name + ": ";
  dropBoundingAndAmbient(p, who);
  setCapabilities(p, who);
}

void ensureEmptyDir(const std::string& path) { ensureEmptyDirAt(AT_FDCWD, path, path); }

void ensureEmptyDirAt(int dirFd, const std::string& name, const std::string& shown) {
  const std::string who = "empty directory " + shown + ": ";
  if (mkdirat(dirFd, name.c_str(), 0555) != 0 && errno != EEXIST) throwErrno(who + "mkdir");
  // O_NOFOLLOW|O_DIRECTORY: a symlink or a file in its place is refused.
  const int fd = openat(dirFd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOTDIR || errno == ELOOP) throw std::runtime_error(who + "not a directory");
    throwErrno(who + "open");
  }
  DIR* dir = fdopendir(fd);
  if (dir == nullptr) {
    const int saved = errno;
    close(fd);
    throw std::system_error(saved, std::generic_category(), who + "fdopendir");
  }
  std::unique_ptr<DIR, int (*)(DIR*)> closer(dir, closedir);
  struct stat st {};
  if (fstat(fd, &st) != 0) throwErrno(who + "fstat");
  if (st.st_uid != 0) {
    throw std::runtime_error(who + "owned by uid " + std::to_string(st.st_uid) + ", not root");
  }
  errno = 0;
  while (const dirent* entry = readdir(dir)) {
    const std::string_view name(entry->d_name);
    if (name != "." && name != "..") {
      throw std::runtime_error(who + "not empty (holds \"" + std::string(name) + "\")");
    }
  }
  if (errno != 0) throwErrno(who + "readdir");
  // mkdir's mode went through the umask, and an existing one may differ.
  if ((st.st_mode & 07777) != 0555 && fchmod(fd, 0555) != 0) throwErrno(who + "fchmod 0555");
}

}  // namespace ipsec::sandbox
