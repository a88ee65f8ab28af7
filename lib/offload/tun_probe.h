// Which offloads a TUN grants (issue 13): the virtio_net_hdr size and
// TUNSETOFFLOAD with checksum offload, TSO for IPv4/IPv6 (with ECN) and USO
// where the kernel has it, asked for from most to least and falling back
// cleanly. Runs where the TUN descriptor is (ipsecd creates it with
// IFF_VNET_HDR; the forwarder may probe the descriptor it was handed: the
// ioctls need no privilege on an open TUN).
#pragma once

#include <cstdint>

namespace ipsec::offload {

struct TunOffloads {
  bool vnetHeader = false;  // IFF_VNET_HDR is on and the header size is kVnetHeaderSize
  bool checksum = false;    // TUN_F_CSUM: reads may carry NEEDS_CSUM, writes may
  bool tso4 = false;        // TUN_F_TSO4
  bool tso6 = false;        // TUN_F_TSO6
  bool tsoEcn = false;      // TUN_F_TSO_ECN
  bool uso4 = false;        // TUN_F_USO4 (Linux 6.2+)
  bool uso6 = false;        // TUN_F_USO6
  unsigned flags = 0;       // the TUN_F_* bits granted
  int error = 0;            // errno of the first ioctl that failed outright (0: none)
};

// Probes `tunFd`. A TUN without IFF_VNET_HDR gets nothing and is left as it
// was; otherwise the header size is set to kVnetHeaderSize and the largest
// set of offloads the kernel accepts is enabled (none: TUNSETOFFLOAD 0, so
// reads and writes stay plain packets behind a zero header).
TunOffloads probeTunOffloads(int tunFd) noexcept;

// What the TUN_F_* bits `flags` grant a TUN that carries the header: the
// forwarder decodes the flags ipsecd's probe was granted (--tun-offloads).
TunOffloads grantedOffloads(unsigned flags) noexcept;

}  // namespace ipsec::offload
