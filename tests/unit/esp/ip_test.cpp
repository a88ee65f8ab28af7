// Unit tests of IpAddress, Prefix and parseInnerPacket (lib/esp/ip.h): the
// selector fields of well-formed IPv4/IPv6 packets, and rejection of every
// kind of truncated or inconsistent header.
#include "esp/ip.h"

#include <gtest/gtest.h>

#include <vector>

namespace ipsec::esp {
namespace {

IpAddress addr(const char* text) {
  auto a = IpAddress::parse(text);
  EXPECT_TRUE(a) << text;
  return a.value_or(IpAddress{});
}

TEST(IpAddress, ParsesAndPrintsBothFamilies) {
  EXPECT_EQ(addr("192.0.2.1").toString(), "192.0.2.1");
  EXPECT_TRUE(addr("192.0.2.1").isV4());
  EXPECT_EQ(addr("2001:db8::1").toString(), "2001:db8::1");
  EXPECT_TRUE(addr("2001:db8::1").isV6());
  EXPECT_EQ(addr("192.0.2.1"), IpAddress::v4(0xc0000201));
}

TEST(IpAddress, RejectsMalformedText) {
  for (const char* bad : {"", "192.0.2", "192.0.2.256", "2001:db8:::1", "example", "192.0.2.1/24",
                          "1111:2222:3333:4444:5555:6666:7777:8888:9999:aaaa:bbbb"}) {
    EXPECT_FALSE(IpAddress::parse(bad)) << bad;
  }
}

TEST(IpAddress, OrdersV4BeforeV6AndByBytes) {
  EXPECT_LT(addr("198.51.100.1"), addr("198.51.100.2"));
  EXPECT_LT(addr("203.0.113.9"), addr("2001:db8::"));
  EXPECT_NE(addr("0.0.0.0"), addr("::"));
}

TEST(Prefix, ContainsAddressesWithMatchingLeadingBits) {
  const auto p = Prefix::parse("198.51.100.0/22");
  ASSERT_TRUE(p);
  EXPECT_TRUE(p->contains(addr("198.51.100.1")));
  EXPECT_TRUE(p->contains(addr("198.51.103.255")));
  EXPECT_FALSE(p->contains(addr("198.51.104.0")));
  EXPECT_FALSE(p->contains(addr("2001:db8::1")));
  const auto v6 = Prefix::parse("2001:db8::/33");
  ASSERT_TRUE(v6);
  EXPECT_TRUE(v6->contains(addr("2001:db8:7fff::1")));
  EXPECT_FALSE(v6->contains(addr("2001:db8:8000::1")));
  EXPECT_TRUE(Prefix::parse("0.0.0.0/0")->contains(addr("192.0.2.1")));
  EXPECT_EQ(Prefix::parse("192.0.2.7")->length, 32);
  EXPECT_EQ(v6->toString(), "2001:db8::/33");
}

TEST(Prefix, RejectsLengthBeyondTheAddress) {
  EXPECT_FALSE(Prefix::parse("192.0.2.0/33"));
  EXPECT_FALSE(Prefix::parse("2001:db8::/129"));
  EXPECT_FALSE(Prefix::parse("192.0.2.0/"));
  EXPECT_FALSE(Prefix::parse("192.0.2.0/2x"));
  EXPECT_TRUE(Prefix::parse("2001:db8::/128"));
}

std::vector<uint8_t> ipv4(uint8_t proto, std::vector<uint8_t> l4, uint16_t fragField = 0) {
  std::vector<uint8_t> p{0x45, 0, 0, 0, 0, 1, static_cast<uint8_t>(fragField >> 8), static_cast<uint8_t>(fragField),
                         64,   proto, 0, 0, 192, 0, 2, 1, 198, 51, 100, 7};
  p.insert(p.end(), l4.begin(), l4.end());
  p[2] = static_cast<uint8_t>(p.size() >> 8);
  p[3] = static_cast<uint8_t>(p.size());
  return p;
}

std::vector<uint8_t> ipv6(uint8_t next, std::vector<uint8_t> rest) {
  std::vector<uint8_t> p{0x60, 0, 0, 0, 0, 0, next, 64};
  const IpAddress srcAddr = addr("2001:db8::1");  // spans into these must not outlive them
  const IpAddress dstAddr = addr("2001:db8:1::2");
  const auto src = srcAddr.bytes();
  const auto dst = dstAddr.bytes();
  p.insert(p.end(), src.begin(), src.end());
  p.insert(p.end(), dst.begin(), dst.end());
  p.insert(p.end(), rest.begin(), rest.end());
  p[4] = static_cast<uint8_t>(rest.size() >> 8);
  p[5] = static_cast<uint8_t>(rest.size());
  return p;
}

TEST(InnerPacket, ReadsIpv4UdpSelectors) {
  const auto key = parseInnerPacket(ipv4(kProtoUdp, {0x12, 0x34, 0x00, 0x35, 0, 8, 0, 0}));
  ASSERT_TRUE(key);
  EXPECT_EQ(key->version, 4);
  EXPECT_EQ(key->src, addr("192.0.2.1"));
  EXPECT_EQ(key->dst, addr("198.51.100.7"));
  EXPECT_EQ(key->proto, kProtoUdp);
  EXPECT_EQ(key->srcPort, 0x1234);
  EXPECT_EQ(key->dstPort, 53);
  EXPECT_FALSE(key->nonInitialFragment);
}

TEST(InnerPacket, PutsIcmpTypeAndCodeInPortsAsSetkeyDoes) {
  const auto key = parseInnerPacket(ipv4(kProtoIcmp, {8, 0, 0xf7, 0xff, 0, 1, 0, 1}));
  ASSERT_TRUE(key);
  EXPECT_EQ(key->srcPort, 8);
  EXPECT_EQ(key->dstPort, 0);
  const auto v6 = parseInnerPacket(ipv6(kProtoIcmpv6, {1, 4, 0, 0, 0, 0, 0, 0}));
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->srcPort, 1);
  EXPECT_EQ(v6->dstPort, 4);
}

TEST(InnerPacket, HonoursIpv4OptionsAndIgnoresTrailingLinkPadding) {
  auto p = ipv4(kProtoTcp, {1, 1, 0, 1, 0, 0, 0, 0, 0x01, 0x01, 0x01, 0x00});  // 12 bytes: options
  p[0] = 0x46;  // IHL 6: the first 4 "transport" bytes are an option
  p.push_back(0xff);
  p.push_back(0xff);
  const auto key = parseInnerPacket(p);
  ASSERT_TRUE(key);
  EXPECT_EQ(key->srcPort, 0);
  EXPECT_EQ(key->dstPort, 0);
}

TEST(InnerPacket, LeavesPortsZeroForNonInitialIpv4Fragment) {
  const auto key = parseInnerPacket(ipv4(kProtoTcp, {0x12, 0x34}, 0x0010));
  ASSERT_TRUE(key);
  EXPECT_TRUE(key->nonInitialFragment);
  EXPECT_EQ(key->srcPort, 0);
}

TEST(InnerPacket, RejectsMalformedIpv4) {
  const auto good = ipv4(kProtoTcp, {0, 80, 0, 81, 0, 0, 0, 0});
  ASSERT_TRUE(parseInnerPacket(good));
  auto shortIhl = good;
  shortIhl[0] = 0x44;
  EXPECT_FALSE(parseInnerPacket(shortIhl));
  auto longIhl = good;
  longIhl[0] = 0x4f;  // 60 bytes > 28
  EXPECT_FALSE(parseInnerPacket(longIhl));
  auto longTotal = good;
  longTotal[3] = static_cast<uint8_t>(good.size() + 1);
  EXPECT_FALSE(parseInnerPacket(longTotal));
  auto totalBelowHeader = good;
  totalBelowHeader[3] = 19;
  EXPECT_FALSE(parseInnerPacket(totalBelowHeader));
  EXPECT_FALSE(parseInnerPacket(std::span(good).first(19)));
  // TCP header cut short by the total length, though the buffer is longer.
  auto cut = good;
  cut[3] = 22;
  EXPECT_FALSE(parseInnerPacket(cut));
  EXPECT_FALSE(parseInnerPacket({}));
  auto version5 = good;
  version5[0] = 0x55;
  EXPECT_FALSE(parseInnerPacket(version5));
}

TEST(InnerPacket, ReadsIpv6TcpSelectors) {
  const auto key = parseInnerPacket(ipv6(kProtoTcp, {0x01, 0xbb, 0xc0, 0x01, 0, 0, 0, 0}));
  ASSERT_TRUE(key);
  EXPECT_EQ(key->version, 6);
  EXPECT_EQ(key->src, addr("2001:db8::1"));
  EXPECT_EQ(key->dst, addr("2001:db8:1::2"));
  EXPECT_EQ(key->srcPort, 443);
  EXPECT_EQ(key->dstPort, 0xc001);
}

TEST(InnerPacket, WalksIpv6ExtensionHeadersToTheUpperProtocol) {
  std::vector<uint8_t> rest{
      43, 0, 1, 4, 0, 0, 0, 0,                          // hop-by-hop (8) -> routing
      60, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,  // routing (16) -> dest opts
      44, 0, 1, 4, 0, 0, 0, 0,                          // dest opts (8) -> fragment
      kProtoSctp, 0, 0, 1, 0, 0, 0, 9,                  // fragment offset 0, M=1 -> SCTP
      0x0b, 0x59, 0x0b, 0x5a, 0, 0, 0, 0};
  const auto key = parseInnerPacket(ipv6(0, rest));
  ASSERT_TRUE(key);
  EXPECT_EQ(key->proto, kProtoSctp);
  EXPECT_EQ(key->srcPort, 2905);
  EXPECT_EQ(key->dstPort, 2906);
  EXPECT_FALSE(key->nonInitialFragment);
}

TEST(InnerPacket, StopsAtNonInitialIpv6Fragment) {
  const auto key = parseInnerPacket(ipv6(44, {kProtoUdp, 0, 0x05, 0x00, 0, 0, 0, 1, 0xde, 0xad}));
  ASSERT_TRUE(key);
  EXPECT_EQ(key->proto, kProtoUdp);
  EXPECT_TRUE(key->nonInitialFragment);
  EXPECT_EQ(key->srcPort, 0);
}

TEST(InnerPacket, ReportsNoNextHeaderWithoutPorts) {
  const auto key = parseInnerPacket(ipv6(kProtoNoNext, {1, 2, 3}));
  ASSERT_TRUE(key);
  EXPECT_EQ(key->proto, kProtoNoNext);
  EXPECT_EQ(key->srcPort, 0);
}

TEST(InnerPacket, RejectsMalformedIpv6) {
  auto good = ipv6(kProtoUdp, {0, 1, 0, 2, 0, 8, 0, 0});
  ASSERT_TRUE(parseInnerPacket(good));
  auto longPayload = good;
  longPayload[5] = 9;
  EXPECT_FALSE(parseInnerPacket(longPayload));
  auto jumbo = good;
  jumbo[5] = 0;
  EXPECT_FALSE(parseInnerPacket(jumbo));
  EXPECT_FALSE(parseInnerPacket(std::span(good).first(39)));
  // Extension header whose length runs past the payload.
  EXPECT_FALSE(parseInnerPacket(ipv6(60, {kProtoUdp, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2})));
  // Extension header cut short of its first 8 bytes.
  EXPECT_FALSE(parseInnerPacket(ipv6(43, {kProtoUdp, 0, 0, 0})));
  // Hop-by-hop anywhere but first.
  EXPECT_FALSE(parseInnerPacket(ipv6(60, {0, 0, 0, 0, 0, 0, 0, 0, kProtoUdp, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2})));
  // UDP header shorter than its ports.
  EXPECT_FALSE(parseInnerPacket(ipv6(kProtoUdp, {0, 1, 0})));
}

std::vector<uint8_t> destOptsChain(int headers) {
  std::vector<uint8_t> rest;
  for (int i = 0; i < headers; ++i) rest.insert(rest.end(), {i + 1 < headers ? uint8_t{60} : kProtoUdp, 0, 1, 4, 0, 0, 0, 0});
  rest.insert(rest.end(), {0, 1, 0, 2});
  return rest;
}

TEST(InnerPacket, RejectsEndlessExtensionHeaderChains) {
  EXPECT_FALSE(parseInnerPacket(ipv6(60, destOptsChain(9))));
  const auto eight = parseInnerPacket(ipv6(60, destOptsChain(8)));
  ASSERT_TRUE(eight);
  EXPECT_EQ(eight->dstPort, 2);
}

}  // namespace
}  // namespace ipsec::esp
