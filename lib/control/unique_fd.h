// UniqueFd: sole owner of one file descriptor, closed on destruction.
//
// Used by every process for the descriptors ipsecd hands out (socketpairs,
// memfds, eventfds, the TUN fd) and for those that arrive with SCM_RIGHTS, so
// that an early return or a rejected message can never leak one.
#pragma once

#include <unistd.h>

#include <utility>

namespace ipsec::control {

class UniqueFd {
 public:
  UniqueFd() noexcept = default;
  explicit UniqueFd(int fd) noexcept : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const noexcept { return fd_; }
  bool valid() const noexcept { return fd_ >= 0; }
  explicit operator bool() const noexcept { return valid(); }

  // Gives up ownership without closing.
  int release() noexcept { return std::exchange(fd_, -1); }

  // Closes the current descriptor (if any) and takes `fd`. close() errors are
  // ignored on purpose: on Linux the descriptor is gone either way, and
  // retrying could close a descriptor another thread just received.
  void reset(int fd = -1) noexcept {
    int old = std::exchange(fd_, fd);
    if (old >= 0) ::close(old);
  }

 private:
  int fd_ = -1;
};

}  // namespace ipsec::control
