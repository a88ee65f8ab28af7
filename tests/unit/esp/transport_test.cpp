// Unit tests of ESP transport-mode framing (lib/esp/transport.h) on byte
// arrays: where ESP goes among IPv6 extension headers, outbound framing with
// the lengths and checksum right, and inbound rebuilding back to the packet
// that was sent.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "esp/transport.h"

namespace ipsec::esp {
namespace {

constexpr EspLayout kLayout{8, 16, 16};
constexpr size_t kOff = 64;

IpAddress v6(const char* text) { return *IpAddress::parse(text); }

// Sum of every 16-bit word of a header, checksum included: 0xffff when valid.
uint16_t foldedSum(const uint8_t* h, size_t n) {
  uint32_t sum = 0;
  for (size_t i = 0; i < n; i += 2) sum += static_cast<uint32_t>(h[i] << 8 | h[i + 1]);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(sum);
}

std::vector<uint8_t> udp4(size_t payload) {
  std::vector<uint8_t> p(28 + payload);
  p[0] = 0x45;
  p[1] = 0x10;
  p[2] = static_cast<uint8_t>(p.size() >> 8);
  p[3] = static_cast<uint8_t>(p.size());
  p[6] = 0x40;  // DF
  p[8] = 64;
  p[9] = 17;
  const uint8_t src[] = {192, 0, 2, 1}, dst[] = {192, 0, 2, 2};
  std::memcpy(&p[12], src, 4);
  std::memcpy(&p[16], dst, 4);
  const uint16_t c = ipv4HeaderChecksum({p.data(), 20});
  p[10] = static_cast<uint8_t>(c >> 8);
  p[11] = static_cast<uint8_t>(c);
  p[20] = 0x30;  // ports 12345 -> 80
  p[21] = 0x39;
  p[23] = 80;
  p[24] = static_cast<uint8_t>((8 + payload) >> 8);
  p[25] = static_cast<uint8_t>(8 + payload);
  for (size_t i = 0; i < payload; ++i) p[28 + i] = static_cast<uint8_t>(i * 7);
  return p;
}

// IPv6 with the given extension headers (each 8 bytes; fragment too), then
// an 8-byte UDP header and payload.
std::vector<uint8_t> udp6(const std::vector<uint8_t>& chain, size_t payload) {
  std::vector<uint8_t> p(40 + 8 * chain.size() + 8 + payload);
  p[0] = 0x6a;  // traffic class 0xa0
  p[4] = static_cast<uint8_t>((p.size() - 40) >> 8);
  p[5] = static_cast<uint8_t>(p.size() - 40);
  p[7] = 64;
  const IpAddress src = v6("2001:db8:1::1"), dst = v6("2001:db8:1::2");
  std::memcpy(&p[8], src.bytes().data(), 16);
  std::memcpy(&p[24], dst.bytes().data(), 16);
  size_t nhAt = 6;
  for (size_t i = 0; i < chain.size(); ++i) {
    p[nhAt] = chain[i];
    nhAt = 40 + 8 * i;  // each header's own next header byte; length byte 0 = 8 bytes
  }
  p[nhAt] = 17;
  for (size_t i = 0; i < payload; ++i) p[40 + 8 * chain.size() + 8 + i] = static_cast<uint8_t>(i);
  return p;
}

std::vector<uint8_t> inBuffer(const std::vector<uint8_t>& packet) {
  std::vector<uint8_t> b(2048, 0xee);
  std::memcpy(b.data() + kOff, packet.data(), packet.size());
  return b;
}

TEST(TransportSplit, KeepsTheIpv4HeaderWithItsOptions) {
  auto p = udp4(10);
  auto s = transportSplit(p);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->version, 4);
  EXPECT_EQ(s->headerLength, 20u);
  EXPECT_EQ(s->nextHeaderOffset, 9u);
  EXPECT_EQ(s->protocol, 17);
  EXPECT_EQ(s->totalLength, p.size());
  EXPECT_FALSE(s->fragment);
}

TEST(TransportSplit, KeepsHopByHopDestinationOptionsBeforeRoutingAndRoutingBeforeEsp) {
  // hop-by-hop, destination options (for the routing hops), routing, then
  // destination options for the final destination, which go inside ESP.
  auto p = udp6({0, 60, 43, 60}, 4);
  auto s = transportSplit(p);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->headerLength, 40u + 24u);
  EXPECT_EQ(s->nextHeaderOffset, 40u + 16u);  // the routing header's next header byte
  EXPECT_EQ(s->protocol, 60);
  EXPECT_FALSE(s->fragment);
}

TEST(TransportSplit, PutsALoneDestinationOptionsHeaderInsideEsp) {
  auto s = transportSplit(udp6({60}, 4));
  ASSERT_TRUE(s);
  EXPECT_EQ(s->headerLength, 40u);
  EXPECT_EQ(s->nextHeaderOffset, 6u);
  EXPECT_EQ(s->protocol, 60);
}

TEST(TransportSplit, MarksFragments) {
  auto p4 = udp4(10);
  p4[6] = 0x20;  // MF
  ASSERT_TRUE(transportSplit(p4));
  EXPECT_TRUE(transportSplit(p4)->fragment);
  auto s6 = transportSplit(udp6({44}, 4));
  ASSERT_TRUE(s6);
  EXPECT_TRUE(s6->fragment);
  EXPECT_EQ(s6->headerLength, 48u);
}

TEST(TransportSplit, RejectsTruncatedAndTooLongChains) {
  auto p = udp6({0, 43}, 0);
  p.resize(40 + 12);
  p[4] = 0;
  p[5] = 12;
  EXPECT_FALSE(transportSplit(p));
  EXPECT_FALSE(transportSplit(udp6({43, 43, 43, 43, 43, 43, 43, 43, 43}, 4)));
  auto q = udp4(4);
  q[0] = 0x44;  // IHL 16 bytes
  EXPECT_FALSE(transportSplit(q));
  EXPECT_FALSE(transportSplit(std::vector<uint8_t>{0x50, 0, 0}));
}

TEST(TransportEncap, Ipv4SetsProtocolTotalLengthAndAValidChecksum) {
  auto p = udp4(33);
  auto b = inBuffer(p);
  auto s = transportSplit(p);
  auto r = encapsulateTransport(b, kOff, p.size(), 0x1234, 7, kLayout, *s);
  ASSERT_TRUE(r.ok()) << toString(r.error);
  EXPECT_EQ(r.headerOffset, kOff - 16);
  EXPECT_EQ(r.espOffset, r.headerOffset + 20);
  const uint8_t* h = b.data() + r.headerOffset;
  EXPECT_EQ(h[9], 50);
  EXPECT_EQ(size_t(h[2] << 8 | h[3]), 20 + r.espLength);
  EXPECT_EQ(foldedSum(h, 20), 0xffff);
  EXPECT_EQ(0, std::memcmp(h + 12, p.data() + 12, 8));  // addresses kept
  // ESP: SPI, sequence, and the trailer's next header is UDP.
  const uint8_t* e = b.data() + r.espOffset;
  EXPECT_EQ(e[3], 0x34);
  EXPECT_EQ(e[7], 7);
  EXPECT_EQ(e[r.espLength - 16 - 1], 17);
  EXPECT_EQ((r.espLength - 16 - 16) % 16, 0u);
}

TEST(TransportEncap, RoundTripsIpv4ThroughRestore) {
  auto p = udp4(101);
  auto b = inBuffer(p);
  auto r = encapsulateTransport(b, kOff, p.size(), 0x1234, 7, kLayout, *transportSplit(p));
  ASSERT_TRUE(r.ok());
  // As the raw socket delivers it: the outer IPv4 header at 0.
  std::vector<uint8_t> rx(b.begin() + static_cast<long>(r.headerOffset),
                          b.begin() + static_cast<long>(r.espOffset + r.espLength));
  auto d = decapsulateTransport({rx.data() + 20, r.espLength}, kLayout);
  ASSERT_TRUE(d.ok()) << toString(d.error);
  EXPECT_EQ(d.nextHeader, 17);
  auto back = restoreIpv4(rx, 20, d);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(std::vector<uint8_t>(rx.begin() + static_cast<long>(back.offset),
                                 rx.begin() + static_cast<long>(back.offset + back.length)),
            p);
}

TEST(TransportEncap, Ipv6KeepsTheRoutingChainInFrontAndSetsPayloadLength) {
  auto p = udp6({0, 43, 60}, 20);
  auto b = inBuffer(p);
  auto s = transportSplit(p);
  ASSERT_TRUE(s);
  auto r = encapsulateTransport(b, kOff, p.size(), 0xabcd, 1, kLayout, *s);
  ASSERT_TRUE(r.ok());
  const uint8_t* h = b.data() + r.headerOffset;
  EXPECT_EQ(r.headerLength, 56u);
  EXPECT_EQ(h[6], 0);       // hop-by-hop still first
  EXPECT_EQ(h[40], 43);     // then routing
  EXPECT_EQ(h[48], 50);     // routing now names ESP
  EXPECT_EQ(size_t(h[4] << 8 | h[5]), 16 + r.espLength);
  const uint8_t* e = b.data() + r.espOffset;
  EXPECT_EQ(e[r.espLength - 16 - 1], 60);  // the final destination options travel inside

  // Inbound: the raw socket strips everything up to ESP.
  std::vector<uint8_t> rx(2048);
  std::memcpy(rx.data(), e, r.espLength);
  auto d = decapsulateTransport({rx.data(), r.espLength}, kLayout);
  ASSERT_TRUE(d.ok());
  auto back = restoreIpv6(rx, 0, d, {v6("2001:db8:1::1"), v6("2001:db8:1::2"), 0xa0, 63});
  ASSERT_TRUE(back.ok());
  const uint8_t* q = rx.data() + back.offset;
  EXPECT_EQ(back.length, 40 + (p.size() - 56));
  EXPECT_EQ(q[0], 0x6a);
  EXPECT_EQ(q[1], 0x00);
  EXPECT_EQ(q[6], 60);
  EXPECT_EQ(q[7], 63);
  EXPECT_EQ(size_t(q[4] << 8 | q[5]), p.size() - 56);
  EXPECT_EQ(0, std::memcmp(q + 8, p.data() + 8, 32));
  EXPECT_EQ(0, std::memcmp(q + 40, p.data() + 56, p.size() - 56));
}

TEST(TransportEncap, RefusesWithoutHeadroomOrTailroom) {
  auto p = udp4(10);
  auto b = inBuffer(p);
  EXPECT_EQ(encapsulateTransport(b, 8, p.size(), 1, 1, kLayout, *transportSplit(p)).error, EspError::kNoHeadroom);
  std::vector<uint8_t> tight(kOff + p.size() + 4);
  std::memcpy(tight.data() + kOff, p.data(), p.size());
  EXPECT_EQ(encapsulateTransport(tight, kOff, p.size(), 1, 1, kLayout, *transportSplit(p)).error,
            EspError::kNoTailroom);
  EXPECT_EQ(0, std::memcmp(tight.data() + kOff, p.data(), p.size()));
}

TEST(TransportDecap, AcceptsAnyPayloadProtocolButStillSpotsDummies) {
  std::vector<uint8_t> esp(8 + 8 + 16 + 16, 0);
  // payload: 14 bytes, then pad length 0 and next header.
  esp[8 + 8 + 14] = 0;
  esp[8 + 8 + 15] = 6;
  auto d = decapsulateTransport(esp, kLayout);
  EXPECT_TRUE(d.ok());
  EXPECT_EQ(d.nextHeader, 6);
  EXPECT_EQ(d.length, 14u);
  esp[8 + 8 + 15] = 59;
  EXPECT_EQ(decapsulateTransport(esp, kLayout).error, EspError::kDummyPacket);
  esp[8 + 8 + 14] = 9;  // pad bytes are not 1,2,3,...
  esp[8 + 8 + 15] = 6;
  EXPECT_EQ(decapsulateTransport(esp, kLayout).error, EspError::kBadPadding);
}

TEST(TransportRestore, RefusesAMismatchedAddressFamilyAndBadHeaders) {
  std::vector<uint8_t> rx(256);
  DecapResult d{EspError::kOk, 16, 20, 17};
  EXPECT_EQ(restoreIpv6(rx, 0, d, {IpAddress::v4(0xc0000201), v6("2001:db8::1"), 0, 64}).error,
            EspError::kBadInnerPacket);
  rx[0] = 0x46;  // IHL 24 but ESP starts at 20
  EXPECT_EQ(restoreIpv4(rx, 20, d).error, EspError::kBadInnerPacket);
}

}  // namespace
}  // namespace ipsec::esp
