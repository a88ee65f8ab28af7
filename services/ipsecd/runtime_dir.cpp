// See runtime_dir.h.
#include "runtime_dir.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <stdexcept>
#include <system_error>

namespace ipsec::supervisor {
namespace {

constexpr mode_t kMode = 0755;

[[noreturn]] void fail(const std::string& what) { throw std::system_error(errno, std::generic_category(), what); }

// The checks that make names in the directory ours alone.
void checkOwnerAndMode(const struct stat& st, const std::string& path) {
  if (!S_ISDIR(st.st_mode)) throw std::runtime_error("runtime directory " + path + ": not a directory");
  if (st.st_uid != 0) {
    throw std::runtime_error("runtime directory " + path + ": owned by uid " + std::to_string(st.st_uid) +
                             ", not root; refusing to use it");
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    throw std::runtime_error("runtime directory " + path + ": mode " + mode +
                             " is writable by group or others; refusing to use it");
  }
}

// An ancestor of the runtime directory: whoever may rename entries in it may
// swap the directory below for one of their own, so it must be root's and
// writable by nobody else; a world-writable one is fine only when sticky
// (/tmp: others may add names but not replace ours).
void checkAncestor(const struct stat& st, const std::string& path, const std::string& runtime) {
  const std::string what = "runtime directory " + runtime + ": its parent " + path;
  if (!S_ISDIR(st.st_mode)) throw std::runtime_error(what + " is not a directory");
  if (st.st_uid != 0) {
    throw std::runtime_error(what + " is owned by uid " + std::to_string(st.st_uid) +
                             ", not root; refusing to use it");
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0 && (st.st_mode & S_ISVTX) == 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    throw std::runtime_error(what + " has mode " + mode +
                             " (writable by group or others, not sticky); refusing to use it");
  }
}

// Walks the parent's real path from / one component at a time without
// following a symlink (O_NOFOLLOW), checking each directory on the way, and
// returns the parent's descriptor: the runtime directory is then created and
// opened relative to it, so no name on the path can be swapped in between.
control::UniqueFd openCheckedParent(const std::filesystem::path& parent, const std::string& runtime) {
  std::error_code ec;
  const std::filesystem::path real = std::filesystem::canonical(parent, ec);
  if (ec) throw std::runtime_error("runtime directory " + runtime + ": its parent " + parent.string() + ": " + ec.message());
  control::UniqueFd dir(::open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir) fail("open /");
  std::filesystem::path walked("/");
  for (const auto& part : real.relative_path()) {
    struct stat st {};
    if (fstat(dir.get(), &st) != 0) fail("runtime directory " + runtime + ": fstat " + walked.string());
    checkAncestor(st, walked.string(), runtime);
    walked /= part;
    control::UniqueFd next(::openat(dir.get(), part.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!next) fail("runtime directory " + runtime + ": open " + walked.string());
    dir = std::move(next);
  }
  struct stat st {};
  if (fstat(dir.get(), &st) != 0) fail("runtime directory " + runtime + ": fstat " + walked.string());
  checkAncestor(st, walked.string(), runtime);
  return dir;
}

}  // namespace

RuntimeDir RuntimeDir::open(const std::string& path) {
  if (path.empty() || path.front() != '/') throw std::runtime_error("runtime directory must be an absolute path: " + path);
  std::filesystem::path p(path);
  if (!p.has_filename()) p = p.parent_path();  // "/run/ipsecd/"
  std::error_code ec;
  std::filesystem::create_directories(p.parent_path(), ec);  // a failure shows in the walk below
  const control::UniqueFd parent = openCheckedParent(p.parent_path(), path);
  const std::string name = p.filename().string();
  if (name.empty() || name == "." || name == "..") throw std::runtime_error("runtime directory " + path + ": names no directory");
  if (mkdirat(parent.get(), name.c_str(), kMode) != 0 && errno != EEXIST) fail("runtime directory " + path + ": mkdir");
  RuntimeDir dir;
  dir.path_ = path;
  // O_NOFOLLOW: a symlink in its place (to a directory someone else chose) is refused.
  dir.fd_.reset(::openat(parent.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!dir.fd_) {
    if (errno == ELOOP || errno == ENOTDIR) {
      throw std::runtime_error("runtime directory " + path + ": not a directory (a symlink or a file)");
    }
    fail("runtime directory " + path + ": open");
  }
  struct stat st {};
  if (fstat(dir.fd(), &st) != 0) fail("runtime directory " + path + ": fstat");
  checkOwnerAndMode(st, path);
  // mkdir's mode went through the umask; an existing one may lack r-x for others.
  if ((st.st_mode & 07777) != kMode && fchmod(dir.fd(), kMode) != 0) fail("runtime directory " + path + ": fchmod");
  return dir;
}

std::string RuntimeDir::pathViaFd(std::string_view name) const {
  return "/proc/self/fd/" + std::to_string(fd()) + "/" + std::string(name);
}

void RuntimeDir::writeFileAtomically(std::string_view name, std::string_view content) const {
  const std::string target(name);
  const std::string tmp = target + ".tmp";
  // unlinkat removes a symlink itself, never what it points to; O_EXCL and
  // O_NOFOLLOW refuse whatever could have appeared since.
  if (unlinkat(fd(), tmp.c_str(), 0) != 0 && errno != ENOENT) fail(pathOf(tmp) + ": unlink");
  control::UniqueFd file(openat(fd(), tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644));
  if (!file) fail(pathOf(tmp) + ": create");
  if (write(file.get(), content.data(), content.size()) != static_cast<ssize_t>(content.size())) {
    const int saved = errno;
    unlinkat(fd(), tmp.c_str(), 0);
    throw std::system_error(saved, std::generic_category(), pathOf(tmp) + ": write");
  }
  file.reset();
  if (renameat(fd(), tmp.c_str(), fd(), target.c_str()) != 0) {
    const int saved = errno;
    unlinkat(fd(), tmp.c_str(), 0);
    throw std::system_error(saved, std::generic_category(), pathOf(target) + ": rename");
  }
}

void RuntimeDir::remove(std::string_view name) const noexcept {
  if (fd_) unlinkat(fd(), std::string(name).c_str(), 0);
}

void RuntimeDir::removeDir(std::string_view name) const noexcept {
  if (fd_) unlinkat(fd(), std::string(name).c_str(), AT_REMOVEDIR);
}

}  // namespace ipsec::supervisor
