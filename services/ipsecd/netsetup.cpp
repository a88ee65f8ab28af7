// See netsetup.h.
#include "netsetup.h"

#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <stdexcept>
#include <system_error>

#include "spawn.h"

namespace ipsec::supervisor {
namespace {

[[noreturn]] void fail(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

void ip(const std::vector<std::string>& args) {
  std::vector<std::string> argv{"ip"};
  argv.insert(argv.end(), args.begin(), args.end());
  if (runCommand(argv) != 0) {
    std::string cmd;
    for (const auto& a : argv) cmd += (cmd.empty() ? "" : " ") + a;
    throw std::runtime_error("command failed: " + cmd);
  }
}

}  // namespace

Tun createTun(const std::string& name, int mtu) {
  if (name.empty() || name.size() >= IFNAMSIZ) throw std::runtime_error("bad TUN name: " + name);
  UniqueFd fd(open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK));
  if (!fd) fail("open /dev/net/tun");
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  if (ioctl(fd.get(), TUNSETIFF, &ifr) < 0) fail("TUNSETIFF " + name);

  UniqueFd sock(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!sock) fail("socket");
  ifr.ifr_mtu = mtu;
  if (ioctl(sock.get(), SIOCSIFMTU, &ifr) < 0) fail("set MTU of " + name);
  if (ioctl(sock.get(), SIOCGIFFLAGS, &ifr) < 0) fail("get flags of " + name);
  ifr.ifr_flags |= IFF_UP;
  if (ioctl(sock.get(), SIOCSIFFLAGS, &ifr) < 0) fail("bring up " + name);
  return Tun{std::move(fd), ifr.ifr_name};
}

void configureTun(const Tun& tun, const config::Config& cfg) {
  for (const auto& a : cfg.tunAddresses) {
    ip({a.family == AF_INET6 ? "-6" : "-4", "addr", "add", a.toString(), "dev", tun.name});
  }
  for (const auto& r : cfg.tunRoutes) {
    ip({r.family == AF_INET6 ? "-6" : "-4", "route", "replace", r.toString(), "dev", tun.name});
  }
}

UniqueFd openRawSocket(int family, int protocol) {
  UniqueFd fd(socket(family, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, protocol));
  if (!fd) fail("raw socket");
  int size = 4 << 20;
  setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size);
  setsockopt(fd.get(), SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size);
  if (family == AF_INET6) {
    // IPv6 raw sockets deliver the payload without the header: the forwarder
    // needs the destination address (the SA is looked up by SPI and dst).
    int on = 1;
    if (setsockopt(fd.get(), IPPROTO_IPV6, IPV6_RECVPKTINFO, &on, sizeof on) < 0) fail("IPV6_RECVPKTINFO");
    // ... and the outer traffic class, for ECN decapsulation (RFC 6040).
    if (setsockopt(fd.get(), IPPROTO_IPV6, IPV6_RECVTCLASS, &on, sizeof on) < 0) fail("IPV6_RECVTCLASS");
  }
  return fd;
}

UniqueFd listenUnix(const std::string& path, unsigned mode, int gid) {
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  if (path.size() >= sizeof sun.sun_path) throw std::runtime_error("socket path too long: " + path);
  std::memcpy(sun.sun_path, path.c_str(), path.size() + 1);
  UniqueFd fd(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) fail("socket");
  unlink(path.c_str());
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&sun), sizeof sun) < 0) fail("bind " + path);
  if (chmod(path.c_str(), mode) < 0) fail("chmod " + path);
  if (gid >= 0 && chown(path.c_str(), 0, static_cast<gid_t>(gid)) < 0) fail("chown " + path);
  if (listen(fd.get(), 64) < 0) fail("listen " + path);
  return fd;
}

}  // namespace ipsec::supervisor
