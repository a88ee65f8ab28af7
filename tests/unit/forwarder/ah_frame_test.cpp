// The forwarder's AH framing (services/forwarder/ah_frame.h) on its own:
// what it builds must be what lib/ah's locate() finds, the transport
// insertion must come out again byte for byte, and an IPv6 header rebuilt
// from a raw socket's pieces must be the packet the sender built.
#include "ah_frame.h"

#include <gtest/gtest.h>

#include <vector>

#include "esp/transport.h"

namespace ipsec::forwarder::ahframe {
namespace {

constexpr std::size_t kHeadroom = 128;
constexpr std::size_t kIcv = 16;  // HMAC-SHA-256-128

esp::IpAddress addr(const char* text) { return *esp::IpAddress::parse(text); }

std::vector<std::uint8_t> ipv4Packet(std::uint8_t proto, std::size_t payload, std::uint16_t fragment = 0) {
  std::vector<std::uint8_t> p(20 + payload, 0xab);
  p[0] = 0x45;
  p[1] = 0x12;
  p[2] = static_cast<std::uint8_t>(p.size() >> 8);
  p[3] = static_cast<std::uint8_t>(p.size());
  p[4] = 0x12;
  p[5] = 0x34;
  p[6] = static_cast<std::uint8_t>(fragment >> 8);
  p[7] = static_cast<std::uint8_t>(fragment);
  p[8] = 61;
  p[9] = proto;
  const std::uint8_t src[] = {198, 51, 100, 1}, dst[] = {203, 0, 113, 1};
  std::memcpy(&p[12], src, 4);
  std::memcpy(&p[16], dst, 4);
  fixIpv4Checksum(p.data());
  return p;
}

// IPv6 with a hop-by-hop header, then `tail` (a destination options header
// for the final destination when dstopts) and ICMPv6.
std::vector<std::uint8_t> ipv6Packet(bool dstopts, std::size_t payload) {
  std::vector<std::uint8_t> p(40);
  p[0] = 0x60;
  p[6] = 0;  // hop-by-hop
  p[7] = 64;
  const auto s = addr("2001:db8:a::1"), d = addr("2001:db8:b::1");
  std::memcpy(&p[8], s.bytes().data(), 16);
  std::memcpy(&p[24], d.bytes().data(), 16);
  const std::uint8_t hbh[8] = {static_cast<std::uint8_t>(dstopts ? 60 : 58), 0, 5, 2, 0, 0, 1, 0};  // router alert, PadN
  p.insert(p.end(), hbh, hbh + 8);
  if (dstopts) {
    const std::uint8_t dst[8] = {58, 0, 0x1e, 4, 1, 2, 3, 4};
    p.insert(p.end(), dst, dst + 8);
  }
  p.resize(p.size() + payload, 0xcd);
  p[40 + 8 + (dstopts ? 8 : 0)] = 128;  // echo request
  const std::size_t plen = p.size() - 40;
  p[4] = static_cast<std::uint8_t>(plen >> 8);
  p[5] = static_cast<std::uint8_t>(plen);
  return p;
}

std::vector<std::uint8_t> inBuffer(const std::vector<std::uint8_t>& packet) {
  std::vector<std::uint8_t> b(kHeadroom + packet.size() + 64, 0);
  std::memcpy(b.data() + kHeadroom, packet.data(), packet.size());
  return b;
}

TEST(AhFrame, TunnelOverIpv4PutsOuterHeaderAndAhBeforeTheInnerPacket) {
  const auto inner = ipv4Packet(1, 40);
  auto b = inBuffer(inner);
  const Outer outer{addr("192.0.2.1"), addr("192.0.2.2"), 0x12, 0x4242, 64};
  const auto f = frameTunnel(b, kHeadroom, inner.size(), outer, 0x5101, 7, kIcv);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f.start + 20 + ah::headerLength(kIcv, false), kHeadroom);
  EXPECT_EQ(f.length, 20 + 28 + inner.size());
  const std::span<const std::uint8_t> packet{b.data() + f.start, f.length};
  const auto at = ah::locate(packet);
  ASSERT_TRUE(at.ok()) << ah::toString(at.error);
  EXPECT_FALSE(at.ipv6);
  EXPECT_EQ(at.ahOffset, 20u);
  EXPECT_EQ(at.header.spi, 0x5101u);
  EXPECT_EQ(at.header.seqLow, 7u);
  EXPECT_EQ(at.header.nextHeader, 4);
  EXPECT_EQ(at.packetLength, f.length);
  EXPECT_EQ(packet[1], 0x12);                    // TOS copied
  EXPECT_EQ(packet[4] << 8 | packet[5], 0x4242);  // our Identification
  EXPECT_EQ(esp::ipv4HeaderChecksum(packet.first(20)), packet[10] << 8 | packet[11]);
  EXPECT_EQ(0, std::memcmp(packet.data() + 48, inner.data(), inner.size()));
}

TEST(AhFrame, TunnelOverIpv6PadsAhToEightBytes) {
  const auto inner = ipv6Packet(false, 24);
  auto b = inBuffer(inner);
  const Outer outer{addr("2001:db8:1::1"), addr("2001:db8:1::2"), 0xb8, 0, 64};
  const auto f = frameTunnel(b, kHeadroom, inner.size(), outer, 0x5202, 9, kIcv);
  ASSERT_TRUE(f.ok());
  const auto at = ah::locate({b.data() + f.start, f.length});
  ASSERT_TRUE(at.ok()) << ah::toString(at.error);
  EXPECT_TRUE(at.ipv6);
  EXPECT_EQ(at.ahOffset, 40u);
  EXPECT_EQ(at.header.length(), 32u);  // 12 + 16, padded from 28
  EXPECT_EQ(at.header.nextHeader, 41);
  EXPECT_EQ(b[f.start] >> 4, 6);
  EXPECT_EQ((b[f.start] & 0x0f) << 4 | b[f.start + 1] >> 4, 0xb8);  // traffic class copied
}

TEST(AhFrame, TunnelRefusesAPacketWithoutHeadroom) {
  const auto inner = ipv4Packet(1, 40);
  auto b = inBuffer(inner);
  const Outer outer{addr("192.0.2.1"), addr("192.0.2.2"), 0, 1, 64};
  EXPECT_EQ(frameTunnel(b, 30, inner.size(), outer, 1, 1, kIcv).error, ah::AhError::kNoHeadroom);
}

TEST(AhFrame, TransportIpv4InsertionComesOutByteForByte) {
  const auto host = ipv4Packet(6, 100);
  auto b = inBuffer(host);
  const auto f = frameTransport(b, kHeadroom, host.size(), 0x5105, 3, kIcv);
  ASSERT_TRUE(f.ok());
  const auto at = ah::locate({b.data() + f.start, f.length});
  ASSERT_TRUE(at.ok()) << ah::toString(at.error);
  EXPECT_EQ(at.ahOffset, 20u);
  EXPECT_EQ(at.header.nextHeader, 6);
  EXPECT_EQ(b[f.start + 9], 51);
  const auto back = stripTransport(b, f.start, f.length, at.ahOffset, at.nextHeaderOffset);
  ASSERT_TRUE(back.ok());
  ASSERT_EQ(back.length, host.size());
  EXPECT_EQ(std::vector<std::uint8_t>(b.begin() + back.start, b.begin() + back.start + back.length), host);
}

TEST(AhFrame, TransportIpv6GoesAfterHopByHopAndBeforeFinalDestinationOptions) {
  const auto host = ipv6Packet(true, 32);
  auto b = inBuffer(host);
  const auto f = frameTransport(b, kHeadroom, host.size(), 0x5106, 4, kIcv);
  ASSERT_TRUE(f.ok());
  const auto at = ah::locate({b.data() + f.start, f.length});
  ASSERT_TRUE(at.ok()) << ah::toString(at.error);
  EXPECT_EQ(at.ahOffset, 48u);        // IPv6 + hop-by-hop
  EXPECT_EQ(at.header.nextHeader, 60);  // the destination options follow AH
  EXPECT_EQ((b[f.start + 4] << 8 | b[f.start + 5]) + 40u, f.length);
  const auto back = stripTransport(b, f.start, f.length, at.ahOffset, at.nextHeaderOffset);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(std::vector<std::uint8_t>(b.begin() + back.start, b.begin() + back.start + back.length), host);
}

TEST(AhFrame, TransportRefusesIpv4Fragments) {
  const auto host = ipv4Packet(17, 64, 0x2000);  // more fragments
  auto b = inBuffer(host);
  EXPECT_EQ(frameTransport(b, kHeadroom, host.size(), 1, 1, kIcv).error, ah::AhError::kFragment);
  const auto later = ipv4Packet(17, 64, 0x0010);  // offset 128
  auto c = inBuffer(later);
  EXPECT_EQ(frameTransport(c, kHeadroom, later.size(), 1, 1, kIcv).error, ah::AhError::kFragment);
}

TEST(AhFrame, StripRefusesAnAhLengthBeyondThePacket) {
  const auto host = ipv4Packet(6, 8);
  auto b = inBuffer(host);
  const auto f = frameTransport(b, kHeadroom, host.size(), 1, 1, kIcv);
  ASSERT_TRUE(f.ok());
  b[f.start + 20 + 1] = 200;  // AH payload length far past the end
  EXPECT_EQ(stripTransport(b, f.start, f.length, 20, 9).error, ah::AhError::kTruncated);
}

TEST(AhFrame, Ipv6RebuiltFromRawSocketPiecesIsTheSentPacket) {
  // What a sender put on the wire: IPv6, hop-by-hop, AH (tunnel over IPv6).
  const auto inner = ipv4Packet(1, 20);
  auto sent = inBuffer(inner);
  const Outer outer{addr("2001:db8:1::2"), addr("2001:db8:1::1"), 0x20, 0, 64};
  const auto f = frameTunnel(sent, kHeadroom, inner.size(), outer, 0x5202, 5, kIcv);
  ASSERT_TRUE(f.ok());
  std::vector<std::uint8_t> wire(sent.begin() + f.start, sent.begin() + f.start + f.length);
  const std::uint8_t hbh[8] = {51, 0, 5, 2, 0, 0, 1, 0};
  wire.insert(wire.begin() + 40, hbh, hbh + 8);
  wire[6] = 0;
  const std::size_t plen = wire.size() - 40;
  wire[4] = static_cast<std::uint8_t>(plen >> 8);
  wire[5] = static_cast<std::uint8_t>(plen);

  // What the raw socket hands over: from AH on, the rest as control messages.
  constexpr std::size_t kAt = 512;
  std::vector<std::uint8_t> got(kAt + wire.size(), 0);
  std::memcpy(got.data() + kAt, wire.data() + 48, wire.size() - 48);
  const auto r = rebuildIpv6(got, kAt, wire.size() - 48, addr("2001:db8:1::2"), addr("2001:db8:1::1"), 0x20, 64,
                             {hbh, 8}, 0);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(std::vector<std::uint8_t>(got.begin() + r.start, got.begin() + r.start + r.length), wire);
  const auto at = ah::locate({got.data() + r.start, r.length});
  ASSERT_TRUE(at.ok()) << ah::toString(at.error);
  EXPECT_EQ(at.ahOffset, 48u);
}

TEST(AhFrame, Ipv6RebuildRefusesHeadersThatDoNotFitBeforeThePayload) {
  std::vector<std::uint8_t> b(100, 0);
  const std::uint8_t ext[64] = {};
  EXPECT_EQ(rebuildIpv6(b, 60, 20, addr("2001:db8:1::2"), addr("2001:db8:1::1"), 0, 64, {ext, 64}, 0).error,
            ah::AhError::kHeadersTooLong);
  EXPECT_EQ(rebuildIpv6(b, 60, 20, addr("192.0.2.1"), addr("2001:db8:1::1"), 0, 64, {}, 51).error,
            ah::AhError::kHeadersTooLong);
}

}  // namespace
}  // namespace ipsec::forwarder::ahframe
