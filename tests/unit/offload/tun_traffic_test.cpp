// Both directions of a real kernel TCP connection through a TUN with
// IFF_VNET_HDR and TSO, in a network namespace of its own (root; skips
// without it). The test plays the peer behind the TUN (192.0.2.1:40000, the
// kernel's socket listens on 198.51.100.7:5201):
//  - inbound: eight 1000-byte segments are coalesced into one super-packet
//    and written with one write(); the kernel accepts its virtio_net_hdr and
//    the socket receives the 8000 bytes in order;
//  - outbound: what the socket sends back is read from the TUN as TSO
//    super-packets, which planSegments cuts into segments whose checksums
//    verify and whose payloads are the bytes sent.
// And UDP (with USO granted): four datagrams coalesced into one UDP_L4
// super-packet and written with one write() reach a UDP socket as the four
// datagrams, in order.
#include <gtest/gtest.h>

#include <array>
#include <thread>
#include <vector>

#include "offload/coalesce.h"
#include "offload/segment.h"
#include "offload/tun_probe.h"
#include "packets.h"
#include "tun_netns.h"

namespace ipsec::offload {
namespace {

using testing::buildSuperPacket;
using testing::Fd;
using testing::SuperPacketSpec;

constexpr std::uint32_t kClientIsn = 0x10000000;
constexpr std::uint16_t kMss = 1000;

bool writeWithHeader(int tun, const VnetHeader& header, std::span<const std::uint8_t> packet) {
  std::vector<std::uint8_t> frame(kVnetHeaderSize + packet.size());
  writeVnetHeader(header, std::span<std::uint8_t, kVnetHeaderSize>(frame.data(), kVnetHeaderSize));
  std::copy(packet.begin(), packet.end(), frame.begin() + kVnetHeaderSize);
  return write(tun, frame.data(), frame.size()) == static_cast<ssize_t>(frame.size());
}

// A packet of the test's client, its checksum left partial for the kernel.
bool sendClient(int tun, SuperPacketSpec s) {
  const auto packet = buildSuperPacket(s);
  VnetHeader h;
  h.flags = kVnetFlagNeedsChecksum;
  h.checksumStart = kIpv4MinHeader;
  h.checksumOffset = kTcpChecksumOffset;
  return writeWithHeader(tun, h, packet);
}

SuperPacketSpec clientSpec() {
  SuperPacketSpec s;
  s.tcpOptions.clear();
  s.tos = 0;
  s.window = 65535;
  s.payload = 0;
  return s;
}

// A TCP packet from the kernel's socket (198.51.100.7:5201) with flags `all`.
auto fromServer(std::uint8_t all, bool withPayload) {
  return [=](const std::vector<std::uint8_t>& r) {
    const auto p = std::span(r).subspan(kVnetHeaderSize);
    const PacketLayout layout = parseLayout(p);
    return r.size() > kVnetHeaderSize && layout.ok() && layout.version == 4 && layout.protocol == kProtoTcp &&
           load16(&p[layout.l4Offset]) == 5201 && (p[layout.l4Offset + 13] & all) == all &&
           (!withPayload || layout.payloadLength() > 0);
  };
}

struct TcpRun {
  std::string skipped;
  std::string failed;
  std::vector<std::uint8_t> received;       // what the kernel's socket read
  std::vector<std::uint8_t> superPacket;    // the first data read from the TUN (header first)
  std::vector<std::uint8_t> sent;           // what the socket sent
};

// The handshake as the client; returns the server's initial sequence number + 1.
std::uint32_t handshake(int tun, TcpRun& run) {
  SuperPacketSpec syn = clientSpec();
  syn.tcpFlags = 0x02;
  syn.seq = kClientIsn;
  syn.ack = 0;
  syn.tcpOptions = {2, 4, kMss >> 8, kMss & 0xff};
  if (!sendClient(tun, syn)) return run.failed = "SYN not written", 0;
  const auto synAck = testing::readUntil(tun, fromServer(0x12, false));
  if (synAck.empty()) return run.failed = "no SYN-ACK", 0;
  const std::uint32_t serverNext = load32(&synAck[kVnetHeaderSize + kIpv4MinHeader + 4]) + 1;
  SuperPacketSpec ack = clientSpec();
  ack.tcpFlags = 0x10;
  ack.seq = kClientIsn + 1;
  ack.ack = serverNext;
  ack.ipId = static_cast<std::uint16_t>(syn.ipId + 1);
  if (!sendClient(tun, ack)) return run.failed = "ACK not written", 0;
  return serverNext;
}

// Eight segments coalesced into one write.
bool sendCoalesced(int tun, std::uint32_t serverNext) {
  SuperPacketSpec data = clientSpec();
  data.tcpFlags = 0x18;
  data.seq = kClientIsn + 1;
  data.ack = serverNext;
  data.ipId = static_cast<std::uint16_t>(data.ipId + 2);
  data.payload = 8 * kMss;
  data.mss = kMss;
  const auto segments = testing::segmentAll(testing::gsoHeaderFor(data), buildSuperPacket(data));
  std::vector<std::span<const std::uint8_t>> burst(segments.begin(), segments.end());
  std::vector<CoalesceGroup> groups(burst.size());
  if (planCoalesce(burst, groups) != 1 || groups[0].count != 8) return false;
  std::vector<std::uint8_t> merged(groups[0].length);
  if (writeCoalesced(groups[0], burst, merged) != merged.size()) return false;
  return writeWithHeader(tun, groups[0].header, merged);
}

std::vector<std::uint8_t> receive(int listener, std::size_t bytes, Fd& conn) {
  pollfd p{listener, POLLIN, 0};
  if (poll(&p, 1, 2000) <= 0) return {};
  conn.fd = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
  std::vector<std::uint8_t> got;
  std::array<std::uint8_t, 4096> buf;
  pollfd c{conn.fd, POLLIN, 0};
  while (got.size() < bytes && poll(&c, 1, 2000) > 0) {
    const ssize_t n = recv(conn.fd, buf.data(), buf.size(), 0);
    if (n <= 0) break;
    got.insert(got.end(), buf.begin(), buf.begin() + n);
  }
  return got;
}

void runInNamespace(TcpRun& run) {
  if (unshare(CLONE_NEWNET) != 0) return void(run.skipped = "unshare(CLONE_NEWNET) refused");
  std::string name;
  Fd tun(testing::openTun(true, name));
  if (tun.fd < 0) return void(run.skipped = "no TUN");
  const TunOffloads granted = probeTunOffloads(tun.fd);
  if (!granted.tso4) return void(run.skipped = "no TSO on this TUN");
  if (!testing::addressUp(name, "198.51.100.7", "192.0.2.1")) return void(run.failed = "address");
  Fd listener(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in at{};
  at.sin_family = AF_INET;
  at.sin_port = htons(5201);
  inet_pton(AF_INET, "198.51.100.7", &at.sin_addr);
  if (bind(listener.fd, reinterpret_cast<sockaddr*>(&at), sizeof at) != 0 || listen(listener.fd, 1) != 0) {
    return void(run.failed = "listen");
  }
  const std::uint32_t serverNext = handshake(tun.fd, run);
  if (serverNext == 0) return;
  if (!sendCoalesced(tun.fd, serverNext)) return void(run.failed = "coalesced write");
  Fd conn;
  run.received = receive(listener.fd, 8 * kMss, conn);
  if (conn.fd < 0) return void(run.failed = "no connection accepted");
  run.sent.resize(20000);
  for (std::size_t i = 0; i < run.sent.size(); ++i) run.sent[i] = static_cast<std::uint8_t>(i * 13 + 1);
  if (send(conn.fd, run.sent.data(), run.sent.size(), MSG_DONTWAIT) <= 0) return void(run.failed = "send");
  run.superPacket = testing::readUntil(tun.fd, fromServer(0x10, true));
}

TEST(TunTcp, CoalescedWritesReachTheSocketAndTsoReadsSegmentBack) {
  TcpRun run;
  std::thread(runInNamespace, std::ref(run)).join();
  if (!run.skipped.empty()) GTEST_SKIP() << run.skipped;
  ASSERT_TRUE(run.failed.empty()) << run.failed;
  SuperPacketSpec data;
  data.payload = 8 * kMss;
  const auto expected = buildSuperPacket(data);
  ASSERT_EQ(run.received.size(), 8u * kMss) << "the coalesced write did not arrive whole";
  EXPECT_TRUE(std::equal(run.received.begin(), run.received.end(), expected.end() - 8 * kMss));

  ASSERT_FALSE(run.superPacket.empty()) << "no data read from the TUN";
  const auto bytes = std::span<const std::uint8_t>(run.superPacket);
  const VnetHeader header = readVnetHeader(bytes.first<kVnetHeaderSize>());
  const auto packet = bytes.subspan(kVnetHeaderSize);
  EXPECT_EQ(header.gsoKind(), kGsoTcpV4) << "a TSO super-packet";
  EXPECT_EQ(header.gsoSize, kMss);
  const SegmentPlan plan = planSegments(header, packet);
  ASSERT_TRUE(plan.ok()) << toString(plan.error);
  EXPECT_GE(plan.count, 2u);
  std::vector<std::uint8_t> payload;
  for (std::uint32_t i = 0; i < plan.count; ++i) {
    std::vector<std::uint8_t> seg(plan.segmentLength(i));
    ASSERT_EQ(writeSegment(plan, packet, i, seg), seg.size());
    const PacketLayout layout = parseLayout(seg);
    ASSERT_TRUE(layout.ok());
    EXPECT_TRUE(transportChecksumValid(seg, layout)) << i;
    EXPECT_EQ(ipv4HeaderChecksum(seg), load16(&seg[10])) << i;
    payload.insert(payload.end(), seg.begin() + layout.headerLength, seg.end());
  }
  ASSERT_LE(payload.size(), run.sent.size());
  EXPECT_TRUE(std::equal(payload.begin(), payload.end(), run.sent.begin())) << "the first bytes the socket sent";
}

struct UdpRun {
  std::string skipped;
  std::string failed;
  std::vector<std::vector<std::uint8_t>> datagrams;
};

void runUdpInNamespace(UdpRun& run) {
  if (unshare(CLONE_NEWNET) != 0) return void(run.skipped = "unshare(CLONE_NEWNET) refused");
  std::string name;
  Fd tun(testing::openTun(true, name));
  if (tun.fd < 0) return void(run.skipped = "no TUN");
  if (!probeTunOffloads(tun.fd).uso4) return void(run.skipped = "no USO on this TUN (before Linux 6.2)");
  if (!testing::addressUp(name, "198.51.100.7", "192.0.2.1")) return void(run.failed = "address");
  Fd sock(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  sockaddr_in at{};
  at.sin_family = AF_INET;
  at.sin_port = htons(4789);
  inet_pton(AF_INET, "198.51.100.7", &at.sin_addr);
  if (bind(sock.fd, reinterpret_cast<sockaddr*>(&at), sizeof at) != 0) return void(run.failed = "bind");
  SuperPacketSpec data;
  data.protocol = kProtoUdp;
  data.payload = 3 * kMss + 500;
  data.mss = kMss;
  const auto segments = testing::segmentAll(testing::gsoHeaderFor(data), buildSuperPacket(data));
  std::vector<std::span<const std::uint8_t>> burst(segments.begin(), segments.end());
  std::vector<CoalesceGroup> groups(burst.size());
  if (planCoalesce(burst, groups, CoalesceOptions{.udp = true}) != 1) return void(run.failed = "not one group");
  std::vector<std::uint8_t> merged(groups[0].length);
  if (writeCoalesced(groups[0], burst, merged) != merged.size() || !writeWithHeader(tun.fd, groups[0].header, merged)) {
    return void(run.failed = "coalesced write");
  }
  std::array<std::uint8_t, 4096> buf;
  pollfd p{sock.fd, POLLIN, 0};
  while (run.datagrams.size() < segments.size() && poll(&p, 1, 2000) > 0) {
    const ssize_t n = recv(sock.fd, buf.data(), buf.size(), 0);
    if (n < 0) break;
    run.datagrams.emplace_back(buf.begin(), buf.begin() + n);
  }
}

TEST(TunUdp, ACoalescedUsoWriteReachesTheSocketAsItsDatagrams) {
  UdpRun run;
  std::thread(runUdpInNamespace, std::ref(run)).join();
  if (!run.skipped.empty()) GTEST_SKIP() << run.skipped;
  ASSERT_TRUE(run.failed.empty()) << run.failed;
  SuperPacketSpec data;
  data.protocol = kProtoUdp;
  data.payload = 3 * kMss + 500;
  const auto whole = buildSuperPacket(data);
  const std::vector<std::size_t> sizes{kMss, kMss, kMss, 500};
  ASSERT_EQ(run.datagrams.size(), sizes.size());
  std::size_t at = kIpv4MinHeader + kUdpHeader;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    ASSERT_EQ(run.datagrams[i].size(), sizes[i]) << i;
    EXPECT_TRUE(std::equal(run.datagrams[i].begin(), run.datagrams[i].end(), whole.begin() + at)) << i;
    at += sizes[i];
  }
}

}  // namespace
}  // namespace ipsec::offload
