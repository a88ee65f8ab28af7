// The TUN probe on a real TUN in a network namespace of its own (root; the
// test skips without it), and what such a TUN then hands to a read: a UDP
// send of 3000 bytes with UDP_SEGMENT 1000 to an address behind the TUN
// comes out as one USO super-packet that planSegments cuts into the three
// datagrams the kernel would have sent.
#include <netinet/udp.h>

#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include "offload/segment.h"
#include "offload/tun_probe.h"
#include "offload/vnet_header.h"
#include "tun_netns.h"

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif

namespace ipsec::offload {
namespace {

bool sendSegmentedUdp(std::size_t bytes, int segment) {
  testing::Fd s(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (setsockopt(s.fd, SOL_UDP, UDP_SEGMENT, &segment, sizeof segment) != 0) return false;
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(9);
  inet_pton(AF_INET, "198.51.100.2", &to.sin_addr);
  const std::vector<std::uint8_t> data(bytes, 0x5a);
  return sendto(s.fd, data.data(), data.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to) ==
         static_cast<ssize_t>(bytes);
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
  testing::Fd without(testing::openTun(false, name));
  testing::Fd tun(testing::openTun(true, name));
  if (without.fd < 0 || tun.fd < 0) {
    run.skipped = true;
    run.why = std::string("no TUN: ") + std::strerror(errno);
    return;
  }
  run.plain = probeTunOffloads(without.fd);
  run.offloads = probeTunOffloads(tun.fd);
  if (!run.offloads.uso4 || !testing::addressUp(name, "198.51.100.1", nullptr)) return;
  run.sent = sendSegmentedUdp(3000, 1000);
  if (run.sent) {
    run.read = testing::readUntil(tun.fd, [](const std::vector<std::uint8_t>& r) {
      return r.size() > kVnetHeaderSize + 20 && r[kVnetHeaderSize] == 0x45 && r[kVnetHeaderSize + 9] == IPPROTO_UDP;
    });
  }
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
