// The TUN probe on a real TUN in a network namespace of its own (root; the
// test skips without it), and what such a TUN then hands to a read: a UDP
// send of 3000 bytes with UDP_SEGMENT 1000 to an address behind the TUN
// comes out as one USO super-packet that planSegments cuts into the three
// datagrams the kernel would have sent.
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <netinet/udp.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "offload/segment.h"
#include "offload/tun_probe.h"
#include "offload/vnet_header.h"

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif

namespace ipsec::offload {
namespace {

// Closes the descriptors the test opened, whatever fails.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) close(fd);
  }
};

int openTun(bool vnetHeader, std::string& name) {
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

// 198.51.100.1/24 on `name`, up: 198.51.100.2 is routed into the TUN.
bool addressUp(const std::string& name) {
  Fd s{socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)};
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
  auto* addr = reinterpret_cast<sockaddr_in*>(&ifr.ifr_addr);
  addr->sin_family = AF_INET;
  inet_pton(AF_INET, "198.51.100.1", &addr->sin_addr);
  if (ioctl(s.fd, SIOCSIFADDR, &ifr) != 0) return false;
  inet_pton(AF_INET, "255.255.255.0", &addr->sin_addr);
  if (ioctl(s.fd, SIOCSIFNETMASK, &ifr) != 0) return false;
  if (ioctl(s.fd, SIOCGIFFLAGS, &ifr) != 0) return false;
  ifr.ifr_flags |= IFF_UP;
  return ioctl(s.fd, SIOCSIFFLAGS, &ifr) == 0;
}

bool sendSegmentedUdp(std::size_t bytes, int segment) {
  Fd s{socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)};
  if (setsockopt(s.fd, SOL_UDP, UDP_SEGMENT, &segment, sizeof segment) != 0) return false;
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(9);
  inet_pton(AF_INET, "198.51.100.2", &to.sin_addr);
  const std::vector<std::uint8_t> data(bytes, 0x5a);
  return sendto(s.fd, data.data(), data.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to) ==
         static_cast<ssize_t>(bytes);
}

// The first IPv4 UDP packet read within 2 s (IPv6 router solicitations and
// the like are read past), behind its virtio_net_hdr.
std::vector<std::uint8_t> readUdp4(int fd) {
  std::vector<std::uint8_t> buffer(kVnetHeaderSize + 65536);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 200) <= 0) continue;
    const ssize_t n = read(fd, buffer.data(), buffer.size());
    if (n > static_cast<ssize_t>(kVnetHeaderSize + 20) && buffer[kVnetHeaderSize] == 0x45 &&
        buffer[kVnetHeaderSize + 9] == IPPROTO_UDP) {
      buffer.resize(static_cast<std::size_t>(n));
      return buffer;
    }
  }
  return {};
}

struct NamespaceRun {
  bool skipped = false;
  std::string why;
  TunOffloads plain;
  TunOffloads offloads;
  bool sent = false;
  std::vector<std::uint8_t> read;
};

// Runs in a thread of its own: unshare(CLONE_NEWNET) moves only this thread,
// and the namespace goes with its last descriptor.
void runInNamespace(NamespaceRun& run) {
  if (unshare(CLONE_NEWNET) != 0) {
    run.skipped = true;
    run.why = std::string("unshare(CLONE_NEWNET): ") + std::strerror(errno);
    return;
  }
  std::string name;
  Fd without{openTun(false, name)};
  Fd tun{openTun(true, name)};
  if (without.fd < 0 || tun.fd < 0) {
    run.skipped = true;
    run.why = std::string("no TUN: ") + std::strerror(errno);
    return;
  }
  run.plain = probeTunOffloads(without.fd);
  run.offloads = probeTunOffloads(tun.fd);
  if (!run.offloads.uso4 || !addressUp(name)) return;
  run.sent = sendSegmentedUdp(3000, 1000);
  if (run.sent) run.read = readUdp4(tun.fd);
}

TEST(TunProbe, GrantsTsoOnAVnetHeaderTunAndUsoSuperPacketsComeOut) {
  NamespaceRun run;
  std::thread(runInNamespace, std::ref(run)).join();
  if (run.skipped) GTEST_SKIP() << run.why;
  EXPECT_FALSE(run.plain.vnetHeader) << "a TUN without IFF_VNET_HDR gets nothing";
  EXPECT_EQ(run.plain.flags, 0u);
  ASSERT_TRUE(run.offloads.vnetHeader);
  EXPECT_TRUE(run.offloads.checksum && run.offloads.tso4 && run.offloads.tso6) << run.offloads.flags;
  if (!run.offloads.uso4) GTEST_SKIP() << "this kernel has no USO on TUN (before Linux 6.2)";
  ASSERT_TRUE(run.sent);
  ASSERT_FALSE(run.read.empty()) << "nothing read from the TUN within 2 s";
  const auto bytes = std::span<const std::uint8_t>(run.read);
  const VnetHeader header = readVnetHeader(bytes.first<kVnetHeaderSize>());
  const auto packet = bytes.subspan(kVnetHeaderSize);
  EXPECT_EQ(header.gsoKind(), kGsoUdpL4);
  EXPECT_EQ(header.gsoSize, 1000);
  EXPECT_EQ(packet.size(), 20u + 8u + 3000u) << "one super-packet for the three datagrams";
  const SegmentPlan plan = planSegments(header, packet);
  ASSERT_TRUE(plan.ok()) << toString(plan.error);
  ASSERT_EQ(plan.count, 3u);
  for (std::uint32_t i = 0; i < plan.count; ++i) {
    std::vector<std::uint8_t> seg(plan.segmentLength(i));
    ASSERT_EQ(writeSegment(plan, packet, i, seg), 1028u);
    EXPECT_TRUE(transportChecksumValid(seg, parseLayout(seg))) << i;
  }
}

}  // namespace
}  // namespace ipsec::offload
