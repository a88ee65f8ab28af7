// lib/esp/pmtu: DF policy, MTU arithmetic, outer headers, fragments and the
// ICMP/ICMPv6 too-big messages, checked field by field and by reassembling
// (tests/interop/test_pmtu_scapy.py parses the same output with scapy).
#include "esp/pmtu.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <vector>

namespace ipsec::esp {
namespace {

uint16_t be16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
uint32_t be32(const uint8_t* p) { return static_cast<uint32_t>(be16(p)) << 16 | be16(p + 2); }

IpAddress v6(const char* text) { return *IpAddress::parse(text); }

// An IPv4 packet from 198.51.100.1 to 203.0.113.1 of `total` bytes.
std::vector<uint8_t> ipv4Packet(size_t total, bool df, uint8_t proto = kProtoUdp, uint8_t firstPayloadByte = 0x42) {
  std::vector<uint8_t> p(total);
  for (size_t i = 0; i < total; ++i) p[i] = static_cast<uint8_t>(i * 7);
  p[0] = 0x45;
  p[1] = 0;
  p[2] = static_cast<uint8_t>(total >> 8);
  p[3] = static_cast<uint8_t>(total);
  p[6] = df ? 0x40 : 0;
  p[7] = 0;
  p[8] = 64;
  p[9] = proto;
  const uint8_t src[] = {198, 51, 100, 1}, dst[] = {203, 0, 113, 1};
  std::memcpy(&p[12], src, 4);
  std::memcpy(&p[16], dst, 4);
  p[20] = firstPayloadByte;
  return p;
}

std::vector<uint8_t> ipv6Packet(size_t total, uint8_t next = kProtoUdp, uint8_t firstPayloadByte = 0x42) {
  std::vector<uint8_t> p(total);
  for (size_t i = 0; i < total; ++i) p[i] = static_cast<uint8_t>(i * 5);
  p[0] = 0x60;
  p[1] = p[2] = p[3] = 0;
  p[4] = static_cast<uint8_t>((total - 40) >> 8);
  p[5] = static_cast<uint8_t>(total - 40);
  p[6] = next;
  p[7] = 64;
  const IpAddress s = v6("2001:db8:a::1"), d = v6("2001:db8:b::1");
  std::memcpy(&p[8], s.bytes().data(), 16);
  std::memcpy(&p[24], d.bytes().data(), 16);
  p[40] = firstPayloadByte;
  return p;
}

bool ipv4ChecksumOk(const uint8_t* h) { return checksumFinish(checksumAdd(0, {h, 20})) == 0; }

// The ICMPv6/UDP checksum over the IPv6 pseudo-header verifies to 0.
bool ipv6UpperChecksumOk(const uint8_t* ip, const uint8_t* upper, size_t length, uint8_t next) {
  uint32_t sum = checksumAdd(0, {ip + 8, 32});
  uint8_t tail[8] = {0, 0, static_cast<uint8_t>(length >> 8), static_cast<uint8_t>(length), 0, 0, 0, next};
  sum = checksumAdd(sum, {tail, 8});
  return checksumFinish(checksumAdd(sum, {upper, length})) == 0;
}

TEST(DfPolicy, SysctlNumbersAreFreeBsds) {
  EXPECT_EQ(dfPolicyFromSysctl(0), DfPolicy::kClear);
  EXPECT_EQ(dfPolicyFromSysctl(1), DfPolicy::kSet);
  EXPECT_EQ(dfPolicyFromSysctl(2), DfPolicy::kCopy);
  EXPECT_EQ(dfPolicyFromSysctl(7), DfPolicy::kCopy);
}

TEST(DfPolicy, SaPolicyOverridesTheSysctlAndInheritUsesIt) {
  EXPECT_EQ(effectiveDfPolicy(0, DfPolicy::kClear), DfPolicy::kClear);
  EXPECT_EQ(effectiveDfPolicy(0, DfPolicy::kSet), DfPolicy::kSet);
  EXPECT_EQ(effectiveDfPolicy(1, DfPolicy::kSet), DfPolicy::kClear);
  EXPECT_EQ(effectiveDfPolicy(2, DfPolicy::kClear), DfPolicy::kSet);
  EXPECT_EQ(effectiveDfPolicy(3, DfPolicy::kClear), DfPolicy::kCopy);
}

TEST(DfPolicy, CopyTakesTheInnerIpv4BitAndSetsForIpv6) {
  auto df = ipv4Packet(100, true), nodf = ipv4Packet(100, false);
  auto six = ipv6Packet(100);
  EXPECT_TRUE(outerDontFragment(DfPolicy::kCopy, df));
  EXPECT_FALSE(outerDontFragment(DfPolicy::kCopy, nodf));
  EXPECT_TRUE(outerDontFragment(DfPolicy::kCopy, six));
  EXPECT_FALSE(outerDontFragment(DfPolicy::kClear, df));
  EXPECT_TRUE(outerDontFragment(DfPolicy::kSet, nodf));
  EXPECT_FALSE(ipv4DontFragment(std::span<const uint8_t>(df.data(), 10)));  // truncated: no
}

TEST(IpPacketLength, IgnoresTrailingTfcPadding) {
  auto p = ipv4Packet(100, false);
  p.resize(300, 0);
  EXPECT_EQ(ipPacketLength(p), 100u);
  auto q = ipv6Packet(100);
  q.resize(256, 0);
  EXPECT_EQ(ipPacketLength(q), 100u);
}

TEST(IpPacketLength, RejectsHeadersClaimingMoreThanThereIs) {
  auto p = ipv4Packet(100, false);
  EXPECT_EQ(ipPacketLength(std::span<const uint8_t>(p.data(), 99)), 0u);
  auto q = ipv6Packet(100);
  EXPECT_EQ(ipPacketLength(std::span<const uint8_t>(q.data(), 60)), 0u);
  std::vector<uint8_t> junk = {0x10, 0, 0, 0};
  EXPECT_EQ(ipPacketLength(junk), 0u);
  EXPECT_EQ(ipPacketLength({}), 0u);
}

TEST(MaxInnerLength, IsTheLargestPayloadThatFits) {
  for (EspLayout l : {EspLayout{8, 16, 4}, EspLayout{16, 16, 16}, EspLayout{0, 12, 4}}) {
    for (size_t mtu : {576u, 1280u, 1400u, 1500u, 9000u}) {
      for (size_t overhead : {20u, 28u, 40u, 48u}) {
        const size_t max = maxInnerLength(l, mtu, overhead);
        ASSERT_GT(max, 0u);
        EXPECT_LE(espPacketLength(l, max) + overhead, mtu) << mtu << " " << overhead;
        EXPECT_GT(espPacketLength(l, max + 1) + overhead, mtu) << mtu << " " << overhead;
      }
    }
  }
  EXPECT_EQ(maxInnerLength(EspLayout{16, 16, 16}, 40, 20), 0u);
}

TEST(OuterHeader, Ipv4CarriesDfTosIdAndAValidChecksum) {
  std::vector<uint8_t> buf(200, 0xee);
  OuterHeader h;
  h.src = IpAddress::v4(0xc0000201);
  h.dst = IpAddress::v4(0xc0000202);
  h.tos = 0x2e << 2;
  h.dontFragment = true;
  h.id = 0x1234;
  auto start = writeOuterHeader(buf, 100, 60, h);
  ASSERT_TRUE(start);
  EXPECT_EQ(*start, 80u);
  const uint8_t* p = &buf[80];
  EXPECT_EQ(p[0], 0x45);
  EXPECT_EQ(p[1], 0x2e << 2);
  EXPECT_EQ(be16(p + 2), 80);
  EXPECT_EQ(be16(p + 4), 0x1234);
  EXPECT_EQ(be16(p + 6), 0x4000);
  EXPECT_EQ(p[9], 50);
  EXPECT_EQ(be32(p + 12), 0xc0000201u);
  EXPECT_EQ(be32(p + 16), 0xc0000202u);
  EXPECT_TRUE(ipv4ChecksumOk(p));
  h.dontFragment = false;
  start = writeOuterHeader(buf, 100, 60, h);
  EXPECT_EQ(be16(&buf[*start + 6]), 0);
}

TEST(OuterHeader, EspInUdpOverIpv4HasAZeroChecksum) {
  std::vector<uint8_t> buf(200, 0xee);
  OuterHeader h;
  h.src = IpAddress::v4(0xc0000201);
  h.dst = IpAddress::v4(0xc0000202);
  h.udpSport = 4500;
  h.udpDport = 4501;
  auto start = writeOuterHeader(buf, 100, 60, h);
  ASSERT_TRUE(start);
  EXPECT_EQ(*start, 72u);
  const uint8_t* p = &buf[72];
  EXPECT_EQ(p[9], kProtoUdp);
  EXPECT_EQ(be16(p + 2), 88);
  EXPECT_EQ(be16(p + 20), 4500);
  EXPECT_EQ(be16(p + 22), 4501);
  EXPECT_EQ(be16(p + 24), 68);
  EXPECT_EQ(be16(p + 26), 0);
}

TEST(OuterHeader, EspInUdpOverIpv6HasAChecksumThatVerifies) {
  std::vector<uint8_t> buf(300, 0xab);
  OuterHeader h;
  h.src = v6("2001:db8:1::1");
  h.dst = v6("2001:db8:1::2");
  h.tos = 0xb8;
  h.udpSport = 4500;
  h.udpDport = 4500;
  auto start = writeOuterHeader(buf, 150, 61, h);
  ASSERT_TRUE(start);
  EXPECT_EQ(*start, 102u);
  const uint8_t* p = &buf[102];
  EXPECT_EQ(p[0], 0x6b);
  EXPECT_EQ(p[1] >> 4, 0x8);
  EXPECT_EQ(be16(p + 4), 69);
  EXPECT_EQ(p[6], kProtoUdp);
  EXPECT_TRUE(ipv6UpperChecksumOk(p, p + 40, 69, kProtoUdp));
}

TEST(OuterHeader, RefusesWithoutRoomOrWithMixedFamilies) {
  std::vector<uint8_t> buf(200);
  OuterHeader h;
  h.src = IpAddress::v4(0xc0000201);
  h.dst = IpAddress::v4(0xc0000202);
  EXPECT_FALSE(writeOuterHeader(buf, 19, 60, h));
  EXPECT_FALSE(writeOuterHeader(buf, 100, 101, h));
  h.dst = v6("2001:db8::2");
  EXPECT_FALSE(writeOuterHeader(buf, 100, 60, h));
}

TEST(OuterHeader, WrittenApartItIsTheSameIpv4HeaderAsInFrontOfThePacket) {
  for (const bool udp : {false, true}) {
    OuterHeader h;
    h.src = IpAddress::v4(0xc0000201);
    h.dst = IpAddress::v4(0xc0000202);
    h.tos = 0x02;
    h.dontFragment = true;
    h.id = 0xbeef;
    if (udp) {
      h.udpSport = 4500;
      h.udpDport = 4501;
    }
    std::vector<uint8_t> buf(200, 0xee);
    const auto start = writeOuterHeader(buf, 100, 60, h);
    ASSERT_TRUE(start);
    std::array<uint8_t, 28> apart{};
    const auto length = writeOuterHeaderApart(apart, 60, h);
    ASSERT_TRUE(length);
    EXPECT_EQ(*length, 100 - *start);
    EXPECT_TRUE(std::equal(apart.begin(), apart.begin() + *length, buf.begin() + *start)) << "udp " << udp;
    EXPECT_FALSE(writeOuterHeaderApart(std::span<uint8_t>(apart.data(), *length - 1), 60, h));  // no room
    EXPECT_FALSE(writeOuterHeaderApart(apart, 0xffff, h));  // beyond the total length field
  }
  OuterHeader six;
  six.src = v6("2001:db8:1::1");
  six.dst = v6("2001:db8:1::2");
  std::array<uint8_t, 64> out{};
  EXPECT_FALSE(writeOuterHeaderApart(out, 60, six));  // IPv6's UDP checksum needs the payload
}

// Puts fragments back together by their offsets, as a receiver would.
std::vector<uint8_t> payloadOf(const std::vector<uint8_t>& packet, std::span<const Fragment> frags, bool v4) {
  std::vector<uint8_t> out;
  size_t expect = 0;
  for (const Fragment& f : frags) {
    const uint8_t* h = f.header.data();
    const size_t offset = v4 ? (be16(h + 6) & 0x1fff) * 8u : (be16(h + 42) & 0xfff8u);
    EXPECT_EQ(offset, expect);
    out.insert(out.end(), packet.begin() + f.offset, packet.begin() + f.offset + f.length);
    expect += f.length;
  }
  return out;
}

TEST(Fragment, Ipv4FragmentsHaveOffsetsMfIdAndLengths) {
  auto packet = ipv4Packet(1433, true, 50);
  std::array<Fragment, 8> frags;
  const size_t n = fragmentPacket(packet, 576, 0xbeef, frags);
  ASSERT_EQ(n, 3u);  // 552 + 552 + 309 bytes of payload
  for (size_t i = 0; i < n; ++i) {
    const uint8_t* h = frags[i].header.data();
    EXPECT_EQ(frags[i].headerLength, 20);
    EXPECT_EQ(be16(h + 2), 20 + frags[i].length);
    EXPECT_LE(20 + frags[i].length, 576u);
    EXPECT_EQ(be16(h + 4), 0xbeef);
    EXPECT_EQ((be16(h + 6) & 0x4000), 0) << "fragments leave without DF";
    EXPECT_EQ((be16(h + 6) & 0x2000) != 0, i + 1 < n) << "MF on all but the last";
    if (i + 1 < n) {
      EXPECT_EQ(frags[i].length % 8, 0u);
    }
    EXPECT_EQ(h[9], 50);
    EXPECT_TRUE(ipv4ChecksumOk(h));
  }
  EXPECT_EQ(payloadOf(packet, {frags.data(), n}, true), std::vector<uint8_t>(packet.begin() + 20, packet.end()));
}

TEST(Fragment, Ipv6FragmentsCarryAFragmentHeaderWithTheOriginalNextHeader) {
  auto packet = ipv6Packet(1500, 50);
  std::array<Fragment, 8> frags;
  const size_t n = fragmentPacket(packet, 1280, 0x01020304, frags);
  ASSERT_EQ(n, 2u);
  for (size_t i = 0; i < n; ++i) {
    const uint8_t* h = frags[i].header.data();
    EXPECT_EQ(frags[i].headerLength, 48);
    EXPECT_EQ(h[6], 44);
    EXPECT_EQ(be16(h + 4), 8 + frags[i].length);
    EXPECT_LE(48 + frags[i].length, 1280u);
    EXPECT_EQ(h[40], 50);
    EXPECT_EQ(be16(h + 42) & 1, i + 1 < n ? 1 : 0);
    EXPECT_EQ(be32(h + 44), 0x01020304u);
    EXPECT_EQ(std::memcmp(h + 8, packet.data() + 8, 32), 0);
  }
  EXPECT_EQ(payloadOf(packet, {frags.data(), n}, false), std::vector<uint8_t>(packet.begin() + 40, packet.end()));
}

TEST(Fragment, RefusesTooManyPiecesATinyMtuOrAMalformedPacket) {
  auto packet = ipv4Packet(1500, false, 50);
  std::array<Fragment, 2> two;
  EXPECT_EQ(fragmentPacket(packet, 576, 1, two), 0u);
  std::array<Fragment, 64> many;
  EXPECT_EQ(fragmentPacket(packet, 27, 1, many), 0u);
  packet[0] = 0x46;  // options: not a header we wrote
  EXPECT_EQ(fragmentPacket(packet, 576, 1, many), 0u);
  packet[0] = 0x45;
  EXPECT_EQ(fragmentPacket(std::span<const uint8_t>(packet.data(), 100), 576, 1, many), 0u);
}

TEST(FragmentationNeeded, GoesFromTheInnerDestinationToTheSenderQuotingAtMost576Bytes) {
  auto inner = ipv4Packet(1428, true, kProtoIcmp, 8);  // an echo request
  std::array<uint8_t, 1280> out;
  const size_t n = buildFragmentationNeeded(inner, 1362, out);
  ASSERT_EQ(n, 576u);
  const uint8_t* p = out.data();
  EXPECT_EQ(p[0], 0x45);
  EXPECT_EQ(be16(p + 2), 576);
  EXPECT_EQ(p[9], kProtoIcmp);
  EXPECT_TRUE(ipv4ChecksumOk(p));
  EXPECT_EQ(std::memcmp(p + 12, &inner[16], 4), 0);
  EXPECT_EQ(std::memcmp(p + 16, &inner[12], 4), 0);
  EXPECT_EQ(p[20], 3);
  EXPECT_EQ(p[21], 4);
  EXPECT_EQ(be16(p + 26), 1362);
  EXPECT_EQ(checksumFinish(checksumAdd(0, {p + 20, n - 20})), 0);
  EXPECT_EQ(std::memcmp(p + 28, inner.data(), n - 28), 0);
}

TEST(FragmentationNeeded, QuotesAShortPacketWhole) {
  auto inner = ipv4Packet(100, true);
  std::array<uint8_t, 1280> out;
  EXPECT_EQ(buildFragmentationNeeded(inner, 60, out), 128u);
}

TEST(FragmentationNeeded, NeverAboutAnIcmpErrorAFragmentOrAnUnspecifiedSource) {
  std::array<uint8_t, 1280> out;
  auto error = ipv4Packet(600, true, kProtoIcmp, 3);
  EXPECT_EQ(buildFragmentationNeeded(error, 500, out), 0u);
  auto fragment = ipv4Packet(600, false);
  fragment[7] = 10;
  EXPECT_EQ(buildFragmentationNeeded(fragment, 500, out), 0u);
  auto anon = ipv4Packet(600, true);
  std::memset(&anon[12], 0, 4);
  EXPECT_EQ(buildFragmentationNeeded(anon, 500, out), 0u);
  EXPECT_EQ(buildFragmentationNeeded(ipv6Packet(600), 500, out), 0u);
  std::array<uint8_t, 100> small;
  EXPECT_EQ(buildFragmentationNeeded(ipv4Packet(600, true), 500, small), 0u);
}

TEST(PacketTooBig, QuotesUpTo1280BytesWithAMtuOfAtLeast1280) {
  auto inner = ipv6Packet(1448, kProtoIcmpv6, 128);
  std::array<uint8_t, 1280> out;
  const size_t n = buildPacketTooBig(inner, 1200, out);
  ASSERT_EQ(n, 1280u);
  const uint8_t* p = out.data();
  EXPECT_EQ(p[0] >> 4, 6);
  EXPECT_EQ(be16(p + 4), 1240);
  EXPECT_EQ(p[6], kProtoIcmpv6);
  EXPECT_EQ(std::memcmp(p + 8, &inner[24], 16), 0);
  EXPECT_EQ(std::memcmp(p + 24, &inner[8], 16), 0);
  EXPECT_EQ(p[40], 2);
  EXPECT_EQ(p[41], 0);
  EXPECT_EQ(be32(p + 44), 1280u);
  EXPECT_TRUE(ipv6UpperChecksumOk(p, p + 40, 1240, kProtoIcmpv6));
  EXPECT_EQ(std::memcmp(p + 48, inner.data(), 1232), 0);
  EXPECT_EQ(be32(out.data() + 44), 1280u);
  ASSERT_EQ(buildPacketTooBig(inner, 1400, out), 1280u);
  EXPECT_EQ(be32(out.data() + 44), 1400u);
}

TEST(PacketTooBig, NeverAboutAnIcmpv6ErrorOrAMulticastSource) {
  std::array<uint8_t, 1280> out;
  EXPECT_EQ(buildPacketTooBig(ipv6Packet(1400, kProtoIcmpv6, 1), 1280, out), 0u);
  auto mc = ipv6Packet(1400);
  mc[8] = 0xff;
  EXPECT_EQ(buildPacketTooBig(mc, 1280, out), 0u);
  EXPECT_EQ(buildPacketTooBig(ipv4Packet(1400, true), 1280, out), 0u);
}

}  // namespace
}  // namespace ipsec::esp
