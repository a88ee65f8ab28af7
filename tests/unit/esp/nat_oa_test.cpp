// Unit tests of the NAT-OA checksum fix-up (lib/esp/nat_oa.h): a TCP/UDP
// checksum computed by the peer over its original addresses must verify over
// the NATed ones after the fix-up, a wrong original address must not, and
// the no-OA policies (zero UDP/IPv4, recompute otherwise) give valid packets.
// The reference checksum here is a plain word-by-word sum, independent of
// nat_oa.cpp's incremental arithmetic.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "esp/nat_oa.h"

namespace ipsec::esp {
namespace {

IpAddress addr(const char* text) { return *IpAddress::parse(text); }

uint32_t addWords(const uint8_t* p, size_t n, uint32_t sum = 0) {
  for (size_t i = 0; i < n; ++i) sum += (i % 2 == 0) ? static_cast<uint32_t>(p[i]) << 8 : p[i];
  return sum;
}

// The TCP/UDP checksum of `segment` as a sender with addresses src/dst computes it.
uint16_t referenceChecksum(const IpAddress& src, const IpAddress& dst, uint8_t proto,
                           std::vector<uint8_t> segment, size_t checksumOffset) {
  segment[checksumOffset] = segment[checksumOffset + 1] = 0;
  uint32_t sum = addWords(src.bytes().data(), src.bytes().size());
  sum = addWords(dst.bytes().data(), dst.bytes().size(), sum);
  sum += proto;
  sum += static_cast<uint32_t>(segment.size());
  sum = addWords(segment.data(), segment.size(), sum);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  uint16_t c = static_cast<uint16_t>(~sum);
  return proto == 17 && c == 0 ? 0xffff : c;
}

// Does the checksum verify over the packet's own addresses (what the kernel checks)?
bool verifies(const std::vector<uint8_t>& packet) {
  const bool v4 = (packet[0] >> 4) == 4;
  const size_t hl = v4 ? (packet[0] & 0x0f) * 4u : 40u;
  const size_t alen = v4 ? 4 : 16;
  const uint8_t* src = packet.data() + (v4 ? 12 : 8);
  const uint8_t proto = v4 ? packet[9] : packet[6];
  uint32_t sum = addWords(src, 2 * alen);  // src and dst are adjacent in both headers
  sum += proto;
  sum += static_cast<uint32_t>(packet.size() - hl);
  sum = addWords(packet.data() + hl, packet.size() - hl, sum);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return sum == 0xffff;
}

// An IPv4 or IPv6 packet from `src` to `dst` carrying TCP (6) or UDP (17) with
// `payload` bytes, its checksum computed over ckSrc/ckDst.
std::vector<uint8_t> packet(const IpAddress& src, const IpAddress& dst, uint8_t proto, size_t payload,
                            const IpAddress& ckSrc, const IpAddress& ckDst) {
  const bool v4 = src.isV4();
  const size_t hl = v4 ? 20 : 40, th = proto == 6 ? 20 : 8;
  std::vector<uint8_t> segment(th + payload);
  segment[0] = 0x30, segment[1] = 0x39, segment[2] = 0x00, segment[3] = 0x50;  // ports 12345 -> 80
  if (proto == 6) {
    segment[4] = 0x12, segment[7] = 0x34;  // sequence number
    segment[12] = 0x50;                    // data offset 5
    segment[13] = 0x02;                    // SYN
    segment[14] = 0xff, segment[15] = 0xff;
  } else {
    segment[4] = static_cast<uint8_t>(segment.size() >> 8), segment[5] = static_cast<uint8_t>(segment.size());
  }
  for (size_t i = th; i < segment.size(); ++i) segment[i] = static_cast<uint8_t>(i * 7 + 3);
  const size_t co = proto == 6 ? 16 : 6;
  const uint16_t c = referenceChecksum(ckSrc, ckDst, proto, segment, co);
  segment[co] = static_cast<uint8_t>(c >> 8), segment[co + 1] = static_cast<uint8_t>(c);
  std::vector<uint8_t> p(hl);
  if (v4) {
    p[0] = 0x45;
    p[2] = static_cast<uint8_t>((hl + segment.size()) >> 8), p[3] = static_cast<uint8_t>(hl + segment.size());
    p[8] = 64, p[9] = proto;
    std::memcpy(&p[12], src.bytes().data(), 4);
    std::memcpy(&p[16], dst.bytes().data(), 4);
  } else {
    p[0] = 0x60;
    p[4] = static_cast<uint8_t>(segment.size() >> 8), p[5] = static_cast<uint8_t>(segment.size());
    p[6] = proto, p[7] = 64;
    std::memcpy(&p[8], src.bytes().data(), 16);
    std::memcpy(&p[24], dst.bytes().data(), 16);
  }
  p.insert(p.end(), segment.begin(), segment.end());
  return p;
}

const IpAddress kOaSrc4 = addr("10.1.2.3"), kOaDst4 = addr("10.9.8.7");
const IpAddress kOuterSrc4 = addr("203.0.113.77"), kOuterDst4 = addr("192.0.2.2");
const IpAddress kOaSrc6 = addr("fd00::1:2"), kOuterSrc6 = addr("2001:db8:1::77"), kOuterDst6 = addr("2001:db8:1::2");

TEST(NatOa, UdpOverIpv4ComputedWithTheOriginalSourceVerifiesAfterTheFixup) {
  auto p = packet(kOuterSrc4, kOuterDst4, 17, 33, kOaSrc4, kOuterDst4);
  ASSERT_FALSE(verifies(p));
  EXPECT_EQ(fixNatOaChecksum(p, {kOaSrc4, {}}), NatOaFixup::kAdjusted);
  EXPECT_TRUE(verifies(p));
}

TEST(NatOa, TcpOverIpv4WithBothOriginalAddressesVerifiesAfterTheFixup) {
  auto p = packet(kOuterSrc4, kOuterDst4, 6, 0, kOaSrc4, kOaDst4);
  ASSERT_FALSE(verifies(p));
  EXPECT_EQ(fixNatOaChecksum(p, {kOaSrc4, kOaDst4}), NatOaFixup::kAdjusted);
  EXPECT_TRUE(verifies(p));
}

TEST(NatOa, TcpAndUdpOverIpv6VerifyAfterTheFixup) {
  for (uint8_t proto : {6, 17}) {
    auto p = packet(kOuterSrc6, kOuterDst6, proto, 101, kOaSrc6, kOuterDst6);
    ASSERT_FALSE(verifies(p));
    EXPECT_EQ(fixNatOaChecksum(p, {kOaSrc6, {}}), NatOaFixup::kAdjusted);
    EXPECT_TRUE(verifies(p)) << int(proto);
  }
}

TEST(NatOa, AWrongOriginalAddressLeavesABadChecksum) {
  auto p = packet(kOuterSrc4, kOuterDst4, 17, 20, kOaSrc4, kOuterDst4);
  EXPECT_EQ(fixNatOaChecksum(p, {addr("10.1.2.4"), {}}), NatOaFixup::kAdjusted);
  EXPECT_FALSE(verifies(p));
}

TEST(NatOa, TheSameAddressesChangeNothing) {
  auto p = packet(kOuterSrc4, kOuterDst4, 6, 10, kOuterSrc4, kOuterDst4);
  const auto before = p;
  EXPECT_EQ(fixNatOaChecksum(p, {kOuterSrc4, kOuterDst4}), NatOaFixup::kAdjusted);
  EXPECT_TRUE(verifies(p));
  EXPECT_EQ(p, before);
}

TEST(NatOa, UdpWithoutAChecksumIsLeftWithout) {
  auto p = packet(kOuterSrc4, kOuterDst4, 17, 5, kOaSrc4, kOuterDst4);
  p[26] = p[27] = 0;
  EXPECT_EQ(fixNatOaChecksum(p, {kOaSrc4, {}}), NatOaFixup::kNotNeeded);
  EXPECT_EQ(p[26] | p[27], 0);
}

TEST(NatOa, WithoutAnOriginalAddressUdpOverIpv4GetsNoChecksum) {
  auto p = packet(kOuterSrc4, kOuterDst4, 17, 5, kOaSrc4, kOuterDst4);
  EXPECT_EQ(fixNatOaChecksum(p, {}), NatOaFixup::kZeroed);
  EXPECT_EQ(p[26] | p[27], 0);
}

TEST(NatOa, WithoutAnOriginalAddressTcpAndUdpOverIpv6AreRecomputed) {
  auto t = packet(kOuterSrc4, kOuterDst4, 6, 7, kOaSrc4, kOaDst4);
  EXPECT_EQ(fixNatOaChecksum(t, {}), NatOaFixup::kRecomputed);
  EXPECT_TRUE(verifies(t));
  auto u = packet(kOuterSrc6, kOuterDst6, 17, 7, kOaSrc6, kOuterDst6);
  EXPECT_EQ(fixNatOaChecksum(u, {}), NatOaFixup::kRecomputed);
  EXPECT_TRUE(verifies(u));
}

TEST(NatOa, OtherProtocolsAndFragmentsAreLeftAlone) {
  auto p = packet(kOuterSrc4, kOuterDst4, 17, 5, kOaSrc4, kOuterDst4);
  p[9] = 1;  // ICMP
  const auto icmp = p;
  EXPECT_EQ(fixNatOaChecksum(p, {kOaSrc4, {}}), NatOaFixup::kNotNeeded);
  EXPECT_EQ(p, icmp);
  auto f = packet(kOuterSrc4, kOuterDst4, 17, 5, kOaSrc4, kOuterDst4);
  f[6] = 0x20;  // more fragments
  const auto frag = f;
  EXPECT_EQ(fixNatOaChecksum(f, {kOaSrc4, {}}), NatOaFixup::kNotNeeded);
  EXPECT_EQ(f, frag);
}

TEST(NatOa, LengthsThatDoNotFitAreMalformed) {
  auto p = packet(kOuterSrc4, kOuterDst4, 6, 0, kOaSrc4, kOuterDst4);
  std::vector<uint8_t> shortTcp(p.begin(), p.begin() + 30);
  shortTcp[3] = 30;
  EXPECT_EQ(fixNatOaChecksum(shortTcp, {kOaSrc4, {}}), NatOaFixup::kMalformed);
  p[3] = static_cast<uint8_t>(p.size() + 1);  // total length past the buffer
  EXPECT_EQ(fixNatOaChecksum(p, {kOaSrc4, {}}), NatOaFixup::kMalformed);
  auto v6 = packet(kOuterSrc6, kOuterDst6, 17, 3, kOaSrc6, kOuterDst6);
  v6[5] = static_cast<uint8_t>(v6[5] + 1);
  EXPECT_EQ(fixNatOaChecksum(v6, {kOaSrc6, {}}), NatOaFixup::kMalformed);
  EXPECT_EQ(fixNatOaChecksum({}, {}), NatOaFixup::kMalformed);
  std::vector<uint8_t> junk{0x10, 0, 0};
  EXPECT_EQ(fixNatOaChecksum(junk, {}), NatOaFixup::kMalformed);
}

TEST(NatOa, AnOriginalAddressOfTheOtherFamilyIsIgnored) {
  auto p = packet(kOuterSrc4, kOuterDst4, 6, 3, kOaSrc4, kOaDst4);
  EXPECT_EQ(fixNatOaChecksum(p, {kOaSrc6, {}}), NatOaFixup::kRecomputed);
  EXPECT_TRUE(verifies(p));
}

TEST(NatOaRestore, WritesAFreshIpv4HeaderInFrontOfTheTransportPayload) {
  // What the UDP socket gave: ESP header (8) + IV (8) + payload; say the
  // payload (a UDP datagram of 12 bytes) starts at 16.
  std::vector<uint8_t> buf(128, 0xee);
  for (size_t i = 0; i < 12; ++i) buf[16 + i] = static_cast<uint8_t>(i);
  DecapResult d;
  d.offset = 16, d.length = 12, d.nextHeader = 17;
  auto r = restoreIpv4FromUdp(buf, 0, d, {kOuterSrc4, kOuterDst4, 0x28, 61});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.length, 32u);
  const uint8_t* h = buf.data() + r.offset;
  EXPECT_EQ(h[0], 0x45);
  EXPECT_EQ(h[1], 0x28);
  EXPECT_EQ(h[2] << 8 | h[3], 32);
  EXPECT_EQ(h[8], 61);
  EXPECT_EQ(h[9], 17);
  EXPECT_EQ(std::memcmp(h + 12, kOuterSrc4.bytes().data(), 4), 0);
  EXPECT_EQ(std::memcmp(h + 16, kOuterDst4.bytes().data(), 4), 0);
  EXPECT_EQ(ipv4HeaderChecksum({h, 20}), (h[10] << 8 | h[11]));
  for (size_t i = 0; i < 12; ++i) EXPECT_EQ(h[20 + i], i);
}

TEST(NatOaRestore, RefusesAPayloadPastTheBufferOrNonIpv4Addresses) {
  std::vector<uint8_t> buf(40);
  DecapResult d;
  d.offset = 16, d.length = 30, d.nextHeader = 17;
  EXPECT_FALSE(restoreIpv4FromUdp(buf, 0, d, {kOuterSrc4, kOuterDst4, 0, 64}).ok());
  d.length = 8;
  EXPECT_FALSE(restoreIpv4FromUdp(buf, 0, d, {kOuterSrc6, kOuterDst4, 0, 64}).ok());
}

}  // namespace
}  // namespace ipsec::esp
