// Unit tests of lib/esp/esp_ring: the parser of one PACKET_RX_RING frame
// (frame header offsets, truncation, the IPv4 checks ip_rcv would make,
// fragments, link padding) on frames built here, and the ring's socket
// filter run by the real kernel on an AF_UNIX datagram pair (the payload
// stands where a SOCK_DGRAM packet socket's IPv4 header would).
#include "esp/esp_ring.h"

#include <gtest/gtest.h>
#include <linux/if_packet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <vector>

namespace ipsec::esp {
namespace {

using Bytes = std::vector<std::uint8_t>;
constexpr std::uint16_t kNet = 80;  // where a SOCK_DGRAM ring puts the packet (TPACKET_ALIGN(hdr) + 16 here)

// An IPv4 ESP packet 198.51.100.1 → 203.0.113.1: header (ihl words), an ESP
// header and `payload` bytes; its checksum right.
Bytes espPacket(std::size_t payload = 32, std::uint8_t ihlWords = 5, std::uint16_t fragment = 0x4000) {
  const std::size_t ihl = ihlWords * 4u, total = ihl + 8 + payload;
  Bytes p(total, 0xab);
  std::memset(p.data(), 0, ihl);
  p[0] = static_cast<std::uint8_t>(0x40 | ihlWords);
  p[1] = 0x2e;  // TOS: DSCP 11, Not-ECT... any value travels
  p[2] = static_cast<std::uint8_t>(total >> 8);
  p[3] = static_cast<std::uint8_t>(total);
  p[6] = static_cast<std::uint8_t>(fragment >> 8);
  p[7] = static_cast<std::uint8_t>(fragment);
  p[8] = 64;
  p[9] = IPPROTO_ESP;
  const std::uint8_t src[4] = {198, 51, 100, 1}, dst[4] = {203, 0, 113, 1};
  std::memcpy(&p[12], src, 4);
  std::memcpy(&p[16], dst, 4);
  for (std::size_t i = 20; i < ihl; ++i) p[i] = 1;  // NOP options
  std::memcpy(&p[ihl], "\x00\x00\x10\x01\x00\x00\x00\x07", 8);  // SPI 0x1001, seq 7
  return p;
}

void fixChecksum(Bytes& p) {
  const std::size_t ihl = (p[0] & 0x0fu) * 4u;
  p[10] = p[11] = 0;
  std::uint32_t sum = 0;
  for (std::size_t i = 0; i < ihl; i += 2) sum += static_cast<std::uint32_t>(p[i] << 8 | p[i + 1]);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  p[10] = static_cast<std::uint8_t>(~sum >> 8);
  p[11] = static_cast<std::uint8_t>(~sum);
}

// A whole ring frame: its tpacket2_hdr, then `packet` at tp_net. snaplen and
// len default to the packet's size (whole, as the kernel reports it).
Bytes frame(Bytes packet, std::optional<std::uint32_t> snaplen = {}, std::optional<std::uint32_t> len = {},
            std::uint16_t net = kNet) {
  if (packet.size() >= 12 && (packet[0] >> 4) == 4 && packet[10] == 0 && packet[11] == 0) fixChecksum(packet);
  Bytes f(kEspRingFrameSize, 0);
  tpacket2_hdr h{};
  h.tp_status = TP_STATUS_USER;
  h.tp_snaplen = snaplen.value_or(static_cast<std::uint32_t>(packet.size()));
  h.tp_len = len.value_or(h.tp_snaplen);
  h.tp_mac = h.tp_net = net;
  std::memcpy(f.data(), &h, sizeof h);
  if (net < f.size()) std::memcpy(f.data() + net, packet.data(), std::min(packet.size(), f.size() - net));
  return f;
}

TEST(EspRingFrame, AWholeEspPacketIsFoundWithItsDestinationAndTos) {
  const Bytes packet = espPacket();
  const Bytes f = frame(packet);
  const RingEsp r = parseRingFrame(f);
  ASSERT_EQ(r.error, RingFrameError::kNone);
  EXPECT_EQ(r.packet.data(), f.data() + kNet);
  EXPECT_EQ(r.packet.size(), packet.size());
  EXPECT_EQ(r.espOffset, 20u);
  EXPECT_EQ(r.dst, IpAddress::v4(0xcb007101u));
  EXPECT_EQ(r.tos, 0x2e);
  EXPECT_EQ(r.packet[r.espOffset + 3], 0x01);  // the SPI's last byte
}

TEST(EspRingFrame, OptionsMoveTheEspHeader) {
  const RingEsp r = parseRingFrame(frame(espPacket(32, 6)));
  ASSERT_EQ(r.error, RingFrameError::kNone);
  EXPECT_EQ(r.espOffset, 24u);
}

TEST(EspRingFrame, TheLinkLayersPaddingIsCut) {
  // A 46-byte packet in a minimum Ethernet frame: 14 bytes of padding after it.
  Bytes packet = espPacket(18);
  ASSERT_EQ(packet.size(), 46u);
  fixChecksum(packet);
  packet.resize(60, 0);
  const RingEsp r = parseRingFrame(frame(packet));
  ASSERT_EQ(r.error, RingFrameError::kNone);
  EXPECT_EQ(r.packet.size(), 46u);
}

TEST(EspRingFrame, APacketLongerThanTheFrameIsTruncated) {
  const Bytes packet = espPacket(1500);
  EXPECT_EQ(parseRingFrame(frame(packet, 1000, 1528)).error, RingFrameError::kTruncated);
}

TEST(EspRingFrame, OffsetsOutsideTheFrameAreRefused) {
  const Bytes packet = espPacket();
  EXPECT_EQ(parseRingFrame(frame(packet, {}, {}, 8)).error, RingFrameError::kBadFrame);  // inside the header
  EXPECT_EQ(parseRingFrame(frame(packet, kEspRingFrameSize)).error, RingFrameError::kBadFrame);
  EXPECT_EQ(parseRingFrame(frame(packet, {}, {}, 0xffff)).error, RingFrameError::kBadFrame);
  const Bytes f = frame(packet);
  EXPECT_EQ(parseRingFrame(std::span(f).first(16)).error, RingFrameError::kBadFrame);
  EXPECT_EQ(parseRingFrame(std::span(f).first(kNet + 20)).error, RingFrameError::kBadFrame);
}

TEST(EspRingFrame, AMalformedIpv4HeaderIsBadIp) {
  Bytes v6 = espPacket();
  v6[0] = 0x65;
  EXPECT_EQ(parseRingFrame(frame(v6)).error, RingFrameError::kBadIp);
  Bytes shortIhl = espPacket();
  shortIhl[0] = 0x44;
  EXPECT_EQ(parseRingFrame(frame(shortIhl)).error, RingFrameError::kBadIp);
  Bytes longer = espPacket();
  longer[3] = static_cast<std::uint8_t>(longer[3] + 1);  // one byte more than the frame holds
  EXPECT_EQ(parseRingFrame(frame(longer)).error, RingFrameError::kBadIp);
  Bytes shorterThanHeader = espPacket();
  shorterThanHeader[2] = 0;
  shorterThanHeader[3] = 19;
  EXPECT_EQ(parseRingFrame(frame(shorterThanHeader)).error, RingFrameError::kBadIp);
  EXPECT_EQ(parseRingFrame(frame(Bytes(19, 0x45))).error, RingFrameError::kBadIp);
}

TEST(EspRingFrame, AWrongHeaderChecksumIsBadIp) {
  Bytes p = espPacket();
  fixChecksum(p);
  p[11] ^= 1;
  EXPECT_EQ(parseRingFrame(frame(p)).error, RingFrameError::kBadIp);
}

TEST(EspRingFrame, AnotherProtocolIsNotEsp) {
  Bytes p = espPacket();
  p[9] = IPPROTO_UDP;
  EXPECT_EQ(parseRingFrame(frame(p)).error, RingFrameError::kNotEsp);
}

TEST(EspRingFrame, FragmentsAreRefusedButDfIsNot) {
  EXPECT_EQ(parseRingFrame(frame(espPacket(32, 5, 0x2000))).error, RingFrameError::kFragment);  // MF
  EXPECT_EQ(parseRingFrame(frame(espPacket(32, 5, 0x00b9))).error, RingFrameError::kFragment);  // offset
  EXPECT_EQ(parseRingFrame(frame(espPacket(32, 5, 0x0000))).error, RingFrameError::kNone);
  EXPECT_EQ(parseRingFrame(frame(espPacket(32, 5, 0x4000))).error, RingFrameError::kNone);
}

// The kernel runs the filter: what a datagram pair with it attached lets through.
bool passes(std::span<const sock_filter> program, const Bytes& packet) {
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, pair) != 0) return false;
  sock_fprog fprog{static_cast<unsigned short>(program.size()), const_cast<sock_filter*>(program.data())};
  EXPECT_EQ(setsockopt(pair[1], SOL_SOCKET, SO_ATTACH_FILTER, &fprog, sizeof fprog), 0);
  EXPECT_EQ(send(pair[0], packet.data(), packet.size(), 0), static_cast<ssize_t>(packet.size()));
  Bytes got(4096);
  const ssize_t n = recv(pair[1], got.data(), got.size(), MSG_DONTWAIT);
  close(pair[0]);
  close(pair[1]);
  if (n >= 0) {
    EXPECT_EQ(static_cast<std::size_t>(n), packet.size());  // whole, never cut
  }
  return n >= 0;
}

TEST(EspRingFilter, TheKernelPassesIpv4EspWholeAndNothingElse) {
  const auto filter = espRingFilter();
  EXPECT_TRUE(passes(filter, espPacket()));
  EXPECT_TRUE(passes(filter, espPacket(1400)));
  EXPECT_TRUE(passes(filter, espPacket(32, 5, 0x2000)));  // fragments reach the parser, which counts them
  Bytes udp = espPacket();
  udp[9] = IPPROTO_UDP;
  EXPECT_FALSE(passes(filter, udp));
  Bytes ah = espPacket();
  ah[9] = IPPROTO_AH;
  EXPECT_FALSE(passes(filter, ah));
  Bytes v6(60, 0);
  v6[0] = 0x60;
  v6[6] = IPPROTO_ESP;
  v6[9] = IPPROTO_ESP;
  EXPECT_FALSE(passes(filter, v6));
}

TEST(EspRingFilter, TheRawSocketsFilterTakesNothing) {
  EXPECT_FALSE(passes(dropAllFilter(), espPacket()));
}

}  // namespace
}  // namespace ipsec::esp
