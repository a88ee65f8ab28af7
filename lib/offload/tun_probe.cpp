// TUN offload probe (see tun_probe.h).
#include "offload/tun_probe.h"

#include <linux/if_tun.h>
#include <net/if.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <cstring>

#include "offload/vnet_header.h"

// The kernel's values (include/uapi/linux/if_tun.h, Linux 6.2): Debian 12's
// headers predate them; a kernel without USO refuses the bits with EINVAL.
#ifndef TUN_F_USO4
#define TUN_F_USO4 0x20
#endif
#ifndef TUN_F_USO6
#define TUN_F_USO6 0x40
#endif

namespace ipsec::offload {

namespace {

bool vnetHeaderOn(int fd, int& error) noexcept {
  ifreq ifr;
  std::memset(&ifr, 0, sizeof ifr);
  if (ioctl(fd, TUNGETIFF, &ifr) != 0) {
    error = errno;
    return false;
  }
  if ((ifr.ifr_flags & IFF_VNET_HDR) == 0) return false;
  int size = static_cast<int>(kVnetHeaderSize);
  if (ioctl(fd, TUNSETVNETHDRSZ, &size) != 0) {
    error = errno;
    return false;
  }
  return true;
}

}  // namespace

TunOffloads grantedOffloads(unsigned flags) noexcept {
  TunOffloads t;
  t.vnetHeader = true;
  t.flags = flags;
  t.checksum = (flags & TUN_F_CSUM) != 0;
  t.tso4 = (flags & TUN_F_TSO4) != 0;
  t.tso6 = (flags & TUN_F_TSO6) != 0;
  t.tsoEcn = (flags & TUN_F_TSO_ECN) != 0;
  t.uso4 = (flags & TUN_F_USO4) != 0;
  t.uso6 = (flags & TUN_F_USO6) != 0;
  return t;
}

TunOffloads probeTunOffloads(int fd) noexcept {
  TunOffloads none;
  if (!vnetHeaderOn(fd, none.error)) return none;
  const unsigned tso = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN;
  // Most first: an unknown bit makes the kernel refuse the whole request (EINVAL).
  const unsigned attempts[] = {tso | TUN_F_USO4 | TUN_F_USO6, tso, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6, TUN_F_CSUM};
  int firstError = 0;
  for (const unsigned flags : attempts) {
    if (ioctl(fd, TUNSETOFFLOAD, static_cast<unsigned long>(flags)) == 0) return grantedOffloads(flags);
    if (firstError == 0) firstError = errno;
  }
  TunOffloads plain = grantedOffloads(0);
  plain.error = firstError;
  if (ioctl(fd, TUNSETOFFLOAD, 0UL) != 0) plain.vnetHeader = false;
  return plain;
}

}  // namespace ipsec::offload
