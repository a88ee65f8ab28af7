// Helpers for the tests that run a real TUN: descriptors closed on every
// path, a TUN with or without IFF_VNET_HDR, an IPv4 address on it, and a
// thread moved into a network namespace of its own (unshare(CLONE_NEWNET)
// moves only the calling thread; the namespace goes with its last user).
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace ipsec::offload::testing {

struct Fd {
  int fd = -1;
  Fd() = default;
  explicit Fd(int f) : fd(f) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd >= 0) close(fd);
  }
};

inline int openTun(bool vnetHeader, std::string& name) {
  const int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (fd < 0) return -1;
  ifreq ifr{};
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI | (vnetHeader ? IFF_VNET_HDR : 0);
  std::strncpy(ifr.ifr_name, "offload%d", IFNAMSIZ - 1);
  if (ioctl(fd, TUNSETIFF, &ifr) != 0) {
    close(fd);
    return -1;
  }
  name = ifr.ifr_name;
  return fd;
}

// `local` on `name` and the interface up; with `peer`, a point-to-point
// address (a route to the peer into the TUN), else a /24.
inline bool addressUp(const std::string& name, const char* local, const char* peer) {
  Fd s(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
  auto* addr = reinterpret_cast<sockaddr_in*>(&ifr.ifr_addr);
  addr->sin_family = AF_INET;
  inet_pton(AF_INET, local, &addr->sin_addr);
  if (ioctl(s.fd, SIOCSIFADDR, &ifr) != 0) return false;
  inet_pton(AF_INET, peer != nullptr ? peer : "255.255.255.0", &addr->sin_addr);
  if (ioctl(s.fd, peer != nullptr ? SIOCSIFDSTADDR : SIOCSIFNETMASK, &ifr) != 0) return false;
  if (ioctl(s.fd, SIOCGIFFLAGS, &ifr) != 0) return false;
  ifr.ifr_flags |= IFF_UP;
  return ioctl(s.fd, SIOCSIFFLAGS, &ifr) == 0;
}

// Reads the TUN for up to 2 s and returns the first read (header and packet)
// that `wanted` accepts; IPv6 router solicitations and the like are read past.
template <class Wanted>
std::vector<std::uint8_t> readUntil(int fd, Wanted&& wanted) {
  std::vector<std::uint8_t> buffer(65536 + 64);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 200) <= 0) continue;
    const ssize_t n = read(fd, buffer.data(), buffer.size());
    if (n <= 0) continue;
    std::vector<std::uint8_t> got(buffer.begin(), buffer.begin() + n);
    if (wanted(got)) return got;
  }
  return {};
}

}  // namespace ipsec::offload::testing
