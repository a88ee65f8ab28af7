// See netsetup.h.
#include "netsetup.h"

#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <system_error>
#include <thread>

#include "esp/esp_ring.h"
#include "esp/udp_encap.h"
#include "log/log.h"
#include "offload/tun_probe.h"
#include "proto/natt_lock.h"
#include "spawn.h"

namespace ipsec::supervisor {
namespace {

[[noreturn]] void fail(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

// An optional socket the kernel refused at `step`: `why` says so (from
// errno) and the caller gets an empty descriptor, then falls back.
UniqueFd refusedAt(const char* step, std::string& why) {
  why = std::string(step) + ": " + std::strerror(errno);
  return UniqueFd();
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

namespace {

UniqueFd openTun(const std::string& name, short flags) {
  UniqueFd fd(open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK));
  if (!fd) fail("open /dev/net/tun");
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
  ifr.ifr_flags = flags;
  if (ioctl(fd.get(), TUNSETIFF, &ifr) < 0) return UniqueFd();
  return fd;
}

}  // namespace

Tun createTun(const std::string& name, int mtu, bool offload, unsigned queues) {
  if (name.empty() || name.size() >= IFNAMSIZ) throw std::runtime_error("bad TUN name: " + name);
  Tun tun;
  // One queue is the plain device, exactly as before multi-queue existed.
  const short multiQueue = queues > 1 ? IFF_MULTI_QUEUE : 0;
  if (offload) {
    tun.fd = openTun(name, IFF_TUN | IFF_NO_PI | IFF_VNET_HDR | multiQueue);
    if (tun.fd) {
      const offload::TunOffloads granted = offload::probeTunOffloads(tun.fd.get());
      if (granted.vnetHeader) {
        tun.offloads = granted.flags;
        log::info("TUN {}: virtio_net_hdr on, offloads {:#x} (csum {}, tso4 {}, tso6 {}, uso4 {}, uso6 {})", name,
                  granted.flags, granted.checksum, granted.tso4, granted.tso6, granted.uso4, granted.uso6);
      } else {
        log::warn("TUN {}: the kernel refused the virtio_net_hdr size ({}): a plain TUN instead", name,
                  std::strerror(granted.error));
        tun.fd.reset();
      }
    } else {
      log::warn("TUN {}: IFF_VNET_HDR refused ({}): a plain TUN instead", name, std::strerror(errno));
    }
  }
  if (!tun.fd) {
    tun.fd = openTun(name, IFF_TUN | IFF_NO_PI | multiQueue);
    if (!tun.fd) fail("TUNSETIFF " + name);
  }
  // The other queues attach to the device queue 0 created, with its flags.
  const short flags = static_cast<short>(IFF_TUN | IFF_NO_PI | multiQueue | (tun.offloads ? IFF_VNET_HDR : 0));
  for (unsigned q = 1; q < queues; ++q) {
    UniqueFd queue = openTun(name, flags);
    if (!queue) fail("TUNSETIFF " + name + " queue " + std::to_string(q));
    tun.moreQueues.push_back(std::move(queue));
  }
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
  UniqueFd sock(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!sock) fail("socket");
  ifr.ifr_mtu = mtu;
  if (ioctl(sock.get(), SIOCSIFMTU, &ifr) < 0) fail("set MTU of " + name);
  if (ioctl(sock.get(), SIOCGIFFLAGS, &ifr) < 0) fail("get flags of " + name);
  ifr.ifr_flags |= IFF_UP;
  if (ioctl(sock.get(), SIOCSIFFLAGS, &ifr) < 0) fail("bring up " + name);
  tun.name = ifr.ifr_name;
  return tun;
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
    // ... and the hop limit, for the header that transport mode rebuilds.
    if (setsockopt(fd.get(), IPPROTO_IPV6, IPV6_RECVHOPLIMIT, &on, sizeof on) < 0) fail("IPV6_RECVHOPLIMIT");
  }
  return fd;
}

UniqueFd openEspRing4(std::string& why) {
  // Protocol 0: nothing arrives until renewEspRing4 binds it, after the filter and the ring.
  UniqueFd fd(socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return refusedAt("socket(AF_PACKET)", why);
  auto filter = esp::espRingFilter();
  sock_fprog program{static_cast<unsigned short>(filter.size()), filter.data()};
  if (setsockopt(fd.get(), SOL_SOCKET, SO_ATTACH_FILTER, &program, sizeof program) < 0) {
    return refusedAt("SO_ATTACH_FILTER", why);
  }
  int version = TPACKET_V2;
  if (setsockopt(fd.get(), SOL_PACKET, PACKET_VERSION, &version, sizeof version) < 0) {
    return refusedAt("PACKET_VERSION", why);
  }
  return fd;
}

bool renewEspRing4(int fd, int raw4, std::string& why) {
  auto refused = [&why, raw4](const char* step) {
    refusedAt(step, why);
    int unused = 0;
    setsockopt(raw4, SOL_SOCKET, SO_DETACH_FILTER, &unused, sizeof unused);  // the raw socket takes ESP again
    return false;
  };
  // The last forwarder's ring (if any) goes, unmapped with it; the new one starts at frame 0.
  tpacket_req none{};
  if (setsockopt(fd, SOL_PACKET, PACKET_RX_RING, &none, sizeof none) < 0) return refused("PACKET_RX_RING (free)");
  tpacket_req ring{esp::kEspRingBlockSize, esp::kEspRingBlocks, esp::kEspRingFrameSize, esp::kEspRingFrames};
  if (setsockopt(fd, SOL_PACKET, PACKET_RX_RING, &ring, sizeof ring) < 0) return refused("PACKET_RX_RING");
  // Bound only now that the ring is there: nothing queues on the socket itself.
  sockaddr_ll all{};
  all.sll_family = AF_PACKET;
  all.sll_protocol = htons(ETH_P_IP);
  all.sll_ifindex = 0;  // every interface, as the raw socket
  if (bind(fd, reinterpret_cast<const sockaddr*>(&all), sizeof all) < 0) return refused("bind");
  auto nothing = esp::dropAllFilter();
  sock_fprog program{static_cast<unsigned short>(nothing.size()), nothing.data()};
  if (setsockopt(raw4, SOL_SOCKET, SO_ATTACH_FILTER, &program, sizeof program) < 0) {
    return refused("SO_ATTACH_FILTER on the raw ESP/IPv4 socket");
  }
  return true;
}

UniqueFd openPacketSend4(std::string& why) {
  // Protocol 0 and never bound: the kernel hands it no packet.
  UniqueFd fd(socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return refusedAt("socket(AF_PACKET)", why);
  int on = 1;
  if (setsockopt(fd.get(), SOL_PACKET, PACKET_QDISC_BYPASS, &on, sizeof on) < 0) {
    return refusedAt("PACKET_QDISC_BYPASS", why);
  }
  int size = 4 << 20;
  setsockopt(fd.get(), SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size);
  int small = 0;
  setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  return fd;
}

UniqueFd openRouteNetlink(std::string& why) {
  UniqueFd fd(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_ROUTE));
  if (!fd) return refusedAt("socket(NETLINK_ROUTE)", why);
  // Room for a burst of neighbour changes; an overrun is seen (ENOBUFS) and
  // flushes the cache. FORCE needs CAP_NET_ADMIN, which a restart may not have.
  int size = 1 << 20;
  if (setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) < 0) {
    setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  }
  sockaddr_nl groups{};
  groups.nl_family = AF_NETLINK;
  groups.nl_groups = RTMGRP_NEIGH | RTMGRP_IPV4_ROUTE;
  if (bind(fd.get(), reinterpret_cast<const sockaddr*>(&groups), sizeof groups) < 0) {
    return refusedAt("bind (groups)", why);
  }
  return fd;
}

// The port is shared with the IKE daemon (udp_encap.h natTSteeringProgram):
// alone if it is free (index 0; SO_REUSEPORT on afterwards so that the IKE
// daemon's preload can join), else joined as index 1 with the program that
// sends ESP to us. Retried while an IKE daemon is between its own two steps.
// Whether nothing is bound to the address: a throwaway socket without
// SO_REUSEPORT binds only to a free port.
static bool portIsFree(const sockaddr* addr, socklen_t len, const std::string& what) {
  UniqueFd probe(socket(addr->sa_family, SOCK_DGRAM | SOCK_CLOEXEC, IPPROTO_UDP));
  if (!probe) fail(what + "socket");
  int on = 1;
  if (addr->sa_family == AF_INET6 && setsockopt(probe.get(), IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on) < 0) {
    fail(what + "IPV6_V6ONLY");
  }
  if (bind(probe.get(), addr, len) == 0) return true;
  if (errno != EADDRINUSE) fail(what + "bind");
  return false;
}

// One reuseport group with the IKE daemon, whichever binds first (the
// preload's bind follows the same rule, tools/preload/udp_preload.c): the
// first socket is index 0, the second index 1, and the steering program
// names the IKE daemon's index. ipsecd first: index 0, IKE at 1 — also for a
// daemon that sets SO_REUSEPORT itself without the preload. IKE first: we
// join as index 1 and steer IKE to 0.
// proto/natt_lock.h: held across the probe, the bind and the attach. An
// empty descriptor when the name stayed taken (we go on without it).
static UniqueFd takeNatTJoinLock(unsigned port) {
  UniqueFd lock(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!lock) return lock;
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  const int n = std::snprintf(sun.sun_path + 1, sizeof sun.sun_path - 1, kNatTLockNameFormat, port);
  const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + n);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kNatTLockWaitMs);
  while (bind(lock.get(), reinterpret_cast<sockaddr*>(&sun), len) != 0) {
    if (errno != EADDRINUSE || std::chrono::steady_clock::now() > deadline) {
      log::warn("NAT-T port {}: join lock not taken ({}); joining the IKE daemon's reuseport group without it", port,
                std::strerror(errno));
      return UniqueFd();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return lock;
}

static void bindNatTShared(int fd, const sockaddr* addr, socklen_t len, unsigned port, const std::string& what) {
  const UniqueFd lock = takeNatTJoinLock(port);
  int on = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) < 0) fail(what + "SO_REUSEPORT");
  for (int attempt = 0; attempt < 40; ++attempt) {
    const bool first = portIsFree(addr, len, what);
    if (bind(fd, addr, len) == 0) {
      auto prog = esp::natTSteeringProgram(/*ikeIndex=*/first ? 1 : 0);
      sock_fprog fprog{static_cast<unsigned short>(prog.size()), prog.data()};
      if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &fprog, sizeof fprog) < 0) {
        fail(what + "SO_ATTACH_REUSEPORT_CBPF");
      }
      return;
    }
    if (errno != EADDRINUSE) fail(what + "bind");
    usleep(5000);  // held by a socket outside the group, perhaps just closing
  }
  fail(what + "bind (the port is held by a socket outside the reuseport group)");
}

UniqueFd openNatTSocket(int family, unsigned port) {
  const std::string what = std::string(family == AF_INET ? "NAT-T UDP/IPv4" : "NAT-T UDP/IPv6") + " port " +
                           std::to_string(port) + ": ";
  UniqueFd fd(socket(family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, IPPROTO_UDP));
  if (!fd) fail(what + "socket");
  int on = 1;
  int size = 4 << 20;
  setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size);
  setsockopt(fd.get(), SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size);
  sockaddr_storage ss{};
  socklen_t len = 0;
  if (family == AF_INET) {
    if (setsockopt(fd.get(), IPPROTO_IP, IP_PKTINFO, &on, sizeof on) < 0) fail(what + "IP_PKTINFO");
    if (setsockopt(fd.get(), IPPROTO_IP, IP_RECVTOS, &on, sizeof on) < 0) fail(what + "IP_RECVTOS");
    auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
    sin->sin_family = AF_INET;
    sin->sin_port = htons(static_cast<uint16_t>(port));
    len = sizeof *sin;
  } else {
    // V6ONLY: IPv4 has its own socket (and its own reuseport group).
    if (setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on) < 0) fail(what + "IPV6_V6ONLY");
    if (setsockopt(fd.get(), IPPROTO_IPV6, IPV6_RECVPKTINFO, &on, sizeof on) < 0) fail(what + "IPV6_RECVPKTINFO");
    if (setsockopt(fd.get(), IPPROTO_IPV6, IPV6_RECVTCLASS, &on, sizeof on) < 0) fail(what + "IPV6_RECVTCLASS");
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ss);
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(static_cast<uint16_t>(port));
    len = sizeof *sin6;
  }
  bindNatTShared(fd.get(), reinterpret_cast<sockaddr*>(&ss), len, port, what);
  return fd;
}

UniqueFd listenUnix(const RuntimeDir& dir, const std::string& name, unsigned mode, int gid) {
  const std::string path = dir.pathOf(name);
  const std::string bindPath = dir.pathViaFd(name);
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  if (bindPath.size() >= sizeof sun.sun_path) throw std::runtime_error("socket path too long: " + bindPath);
  std::memcpy(sun.sun_path, bindPath.c_str(), bindPath.size() + 1);
  UniqueFd fd(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) fail("socket");
  if (unlinkat(dir.fd(), name.c_str(), 0) != 0 && errno != ENOENT) fail("unlink " + path);
  // bind creates the socket file with 0777 & ~umask: born with its mode.
  const mode_t old = umask(~mode & 0777);
  const int rc = bind(fd.get(), reinterpret_cast<sockaddr*>(&sun), sizeof sun);
  const int saved = errno;
  umask(old);
  errno = saved;
  if (rc < 0) fail("bind " + path);
  if (gid >= 0 && fchownat(dir.fd(), name.c_str(), 0, static_cast<gid_t>(gid), AT_SYMLINK_NOFOLLOW) < 0) {
    fail("chown " + path);
  }
  if (listen(fd.get(), 64) < 0) fail("listen " + path);
  return fd;
}

void markSocket(int fd, std::uint32_t mark) {
  if (setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof mark) < 0) fail("SO_MARK");
}

UniqueFd openHeaderIncludedSocket(int family) {
  UniqueFd fd(socket(family, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, IPPROTO_RAW));
  if (!fd) fail("raw header-included socket");
  int size = 4 << 20;
  setsockopt(fd.get(), SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size);
  // Nothing is read from it: keep its receive queue minimal.
  int small = 0;
  setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  if (family == AF_INET6) {
    int on = 1;
    if (setsockopt(fd.get(), IPPROTO_IPV6, IPV6_HDRINCL, &on, sizeof on) < 0) fail("IPV6_HDRINCL");
  }
  return fd;
}

void TransportRouting::install(const config::Config& cfg, const std::string& tunName) {
  const std::string mark = std::to_string(cfg.fwmark);
  const std::string table = std::to_string(cfg.routeTable);
  for (int family : {AF_INET, AF_INET6}) {
    const std::string f = family == AF_INET6 ? "-6" : "-4";
    const config::IpPrefix* source = nullptr;
    for (const auto& a : cfg.localAddresses) {
      if (a.family == family) {
        source = &a;
        break;
      }
    }
    bool any = false;
    for (const auto& peer : cfg.transportPeers) {
      if (peer.family != family) continue;
      std::vector<std::string> route{f, "route", "replace", peer.toString(), "dev", tunName, "table", table};
      if (source) route.insert(route.end(), {"src", source->addressString()});
      ip(route);
      undo_.push_back({f, "route", "del", peer.toString(), "dev", tunName, "table", table});
      any = true;
    }
    if (!any) continue;
    std::vector<std::string> rule{f, "rule", "add", "not", "fwmark", mark, "lookup", table};
    std::vector<std::string> del{f, "rule", "del", "not", "fwmark", mark, "lookup", table};
    // One left by an ipsecd that was killed would be a duplicate: harmless,
    // but it would outlive us; take it away first.
    std::vector<std::string> argv{"ip"};
    argv.insert(argv.end(), del.begin(), del.end());
    while (runCommand(argv) == 0) {
    }
    ip(rule);
    undo_.push_back(del);
  }
}

void TransportRouting::remove() noexcept {
  while (!undo_.empty()) {
    try {
      std::vector<std::string> argv{"ip"};
      argv.insert(argv.end(), undo_.back().begin(), undo_.back().end());
      runCommand(argv);
    } catch (...) {
      // Best effort at teardown: a route already gone with its TUN is fine.
    }
    undo_.pop_back();
  }
}

}  // namespace ipsec::supervisor
