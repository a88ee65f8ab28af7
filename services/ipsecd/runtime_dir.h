// ipsecd: its runtime directory (runtime_dir, default /run/ipsecd), which
// holds the PF_KEY and control sockets, the pid file and the children's empty
// root. Trusts the directory only after checking it: a directory (not a
// symlink), owned by root, writable by nobody else, so no other user can
// plant a name in it; and every directory above it root's and writable by
// nobody else either (or sticky, as /tmp), so no other user can swap it. Everything in it is then created and removed relative
// to the directory's descriptor (openat/O_NOFOLLOW/O_EXCL, renameat,
// unlinkat), never through a path that could have been swapped meanwhile.
#pragma once

#include <string>
#include <string_view>

#include "control/unique_fd.h"

namespace ipsec::supervisor {

class RuntimeDir {
 public:
  // Creates path (parents too) with mode 0755, or takes an existing
  // directory that passes the checks and sets its mode to 0755 (the PF_KEY
  // group must be able to reach its socket). Throws std::runtime_error
  // naming the path and what is wrong with it.
  static RuntimeDir open(const std::string& path);

  RuntimeDir() = default;
  int fd() const noexcept { return fd_.get(); }
  const std::string& path() const noexcept { return path_; }
  std::string pathOf(std::string_view name) const { return path_ + "/" + std::string(name); }
  // A path through this descriptor (/proc/self/fd/N/name), for calls that
  // take only a path, like bind(2) of a Unix socket.
  std::string pathViaFd(std::string_view name) const;

  // Replaces `name` with a file holding `content`: written under a temporary
  // name created with O_EXCL|O_NOFOLLOW (a symlink planted there is removed,
  // never followed), then renamed over `name`. Throws std::system_error.
  void writeFileAtomically(std::string_view name, std::string_view content) const;
  // unlinkat; a missing name is fine.
  void remove(std::string_view name) const noexcept;
  void removeDir(std::string_view name) const noexcept;

 private:
  control::UniqueFd fd_;
  std::string path_;
};

}  // namespace ipsec::supervisor
