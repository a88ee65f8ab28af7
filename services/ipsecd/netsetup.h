// ipsecd: the privileged resources the supervisor opens for its children —
// the TUN device with its addresses and routes, raw ESP sockets, and Unix
// listening sockets. Children never open these themselves (STYLE §2).
#pragma once

#include <string>
#include <vector>

#include "config/config.h"
#include "control/unique_fd.h"

namespace ipsec::supervisor {

using control::UniqueFd;

struct Tun {
  UniqueFd fd;
  std::string name;
};

// Creates (or attaches to) a non-persistent TUN, so the device disappears when
// the last descriptor to it closes — also when ipsecd is killed.
Tun createTun(const std::string& name, int mtu);
void configureTun(const Tun& tun, const config::Config& cfg);

// Raw IPPROTO_ESP sockets; the kernel builds outer IP headers on send and
// hands us whole datagrams (IPv4 with its header, IPv6 without) on receive.
UniqueFd openRawSocket(int family, int protocol);

// A SOCK_SEQPACKET Unix listening socket at path, mode and group as given.
UniqueFd listenUnix(const std::string& path, unsigned mode, int gid);

}  // namespace ipsec::supervisor
