// Enforcing a SandboxProfile. Called once by each child right after exec,
// while it is still root and after it has taken its descriptors: from then on
// it can only use what it holds. Also the supervisor's helper that prepares
// the empty directory the children are chrooted into.
#pragma once

#include <string>

#include "sandbox/profile.h"

namespace ipsec::sandbox {

// In this order (each step needs the privilege the next one gives up):
//  1. build the seccomp filter (an unknown syscall name fails here, before
//     anything has changed);
//  2. raise RLIMIT_MEMLOCK if lockMemory (needs CAP_SYS_RESOURCE);
//  3. PR_SET_DUMPABLE 0 if nonDumpable;
//  4. chroot(dir) + chdir("/") (needs CAP_SYS_CHROOT);
//  5. drop the bounding set and clear the ambient set (needs CAP_SETPCAP,
//     so before the uid change);
//  6. setgroups(0) + setresgid + setresuid, then check with getresuid/
//     getresgid/getgroups that real, effective and saved ids all changed, so
//     root cannot be regained;
//  7. clear every capability set (keeping only profile.capabilities, in
//     permitted and effective), and PR_SET_DUMPABLE 0 again (changing the
//     euid resets it to fs.suid_dumpable);
//  8. PR_SET_NO_NEW_PRIVS 1;
//  9. load the seccomp filter.
// Throws std::system_error (a failing syscall) or std::runtime_error (a bad
// profile, a check that failed) whose what() names the profile. A process
// for which this throws must exit: it may be half-sandboxed.
void applySandbox(const SandboxProfile& profile);

// For the supervisor: makes `path` a root-owned, mode 0555, empty directory
// (creating it, or fixing the mode of an existing one). Throws if the path
// exists and is not a directory (symlinks are not followed), is not empty,
// or is not owned by root; the parent must exist.
void ensureEmptyDir(const std::string& path);
// The same for `name` inside the directory open as dirFd (mkdirat/openat:
// nothing on the way to it is looked up by path again); `shown` names it in
// errors.
void ensureEmptyDirAt(int dirFd, const std::string& name, const std::string& shown);

// For a process that stays root (the supervisor): drops every capability not
// in p.capabilities from the bounding, ambient, permitted and effective sets.
// Programs it execs as root get at most the kept set. Nothing else of p is used.
void keepOnlyCapabilities(const SandboxProfile& p);

}  // namespace ipsec::sandbox
