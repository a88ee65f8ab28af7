// Eventfd doorbell; see doorbell.h for the sleeping protocol.
#include "ring/doorbell.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

namespace ipsec::ring {

Doorbell Doorbell::create() {
  control::UniqueFd fd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!fd) throw std::system_error(errno, std::generic_category(), "eventfd");
  return Doorbell(std::move(fd));
}

void Doorbell::ring() noexcept {
  const std::uint64_t one = 1;
  ssize_t n;
  do {
    n = ::write(fd_.get(), &one, sizeof one);
  } while (n < 0 && errno == EINTR);
  // EAGAIN: the counter is at its maximum, so the owner will wake anyway.
}

bool Doorbell::drain() noexcept {
  std::uint64_t count = 0;
  ssize_t n;
  do {
    n = ::read(fd_.get(), &count, sizeof count);
  } while (n < 0 && errno == EINTR);
  return n == sizeof count && count != 0;
}

bool Doorbell::wait(int timeoutMs) noexcept {
  pollfd pfd{fd_.get(), POLLIN, 0};
  int n;
  do {
    n = ::poll(&pfd, 1, timeoutMs);
  } while (n < 0 && errno == EINTR);
  if (n <= 0) return false;
  return drain();
}

}  // namespace ipsec::ring
