// Where ESP/AH goes in transport mode (ah::findInsertionPoint), checked on
// hand-built IPv4 and IPv6 packets against RFC 8200 §4.1's header order.
#include <gtest/gtest.h>

#include <vector>

#include "ah/ah.h"

namespace ipsec::ah {
namespace {

std::vector<uint8_t> ipv6(uint8_t firstNh, const std::vector<uint8_t>& ext, size_t payload = 8) {
  std::vector<uint8_t> p(40, 0);
  p[0] = 0x60;
  p[6] = firstNh;
  p[7] = 64;
  for (uint8_t b : ext) p.push_back(b);  // (insert() trips GCC 12's -Warray-bounds)
  for (size_t i = 0; i < payload; ++i) p.push_back(0xAB);
  const size_t plen = p.size() - 40;
  p[4] = static_cast<uint8_t>(plen >> 8);
  p[5] = static_cast<uint8_t>(plen);
  return p;
}

TEST(InsertionPoint, GoesAfterTheIpv4HeaderAndItsOptions) {
  std::vector<uint8_t> p = {0x46, 0, 0, 32, 0, 0, 0, 0, 64, 17, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2, 1, 1, 1, 0};
  p.resize(32, 0);
  const InsertionPoint ip = findInsertionPoint(p);
  ASSERT_TRUE(ip.ok());
  EXPECT_EQ(ip.offset, 24u);
  EXPECT_EQ(ip.nextHeaderOffset, 9u);
  EXPECT_EQ(ip.nextHeader, 17);
}

TEST(InsertionPoint, GoesRightAfterAPlainIpv6Header) {
  const InsertionPoint ip = findInsertionPoint(ipv6(6, {}));
  ASSERT_TRUE(ip.ok());
  EXPECT_EQ(ip.offset, 40u);
  EXPECT_EQ(ip.nextHeaderOffset, 6u);
  EXPECT_EQ(ip.nextHeader, 6);
}

TEST(InsertionPoint, GoesAfterHopByHopDestOptsBeforeRoutingRoutingAndFragment) {
  // HBH → DestOpts → Routing (type 0, 1 address) → Fragment → DestOpts (final) → UDP.
  const std::vector<uint8_t> ext = {
      60, 0, 1, 4, 0, 0, 0, 0,                                   // HBH at 40
      43, 0, 1, 4, 0, 0, 0, 0,                                   // DestOpts at 48, before routing
      44, 2, 0, 1, 0, 0, 0, 0, 0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0,  // Routing at 56 (24 bytes)
      0, 0, 0, 0, 0, 0, 0, 9,
      60, 0, 0, 0, 0, 0, 0, 1,                                   // Fragment at 80
      17, 0, 1, 4, 0, 0, 0, 0,                                   // DestOpts (final) at 88
  };
  const InsertionPoint ip = findInsertionPoint(ipv6(0, ext));
  ASSERT_TRUE(ip.ok()) << toString(ip.error);
  EXPECT_EQ(ip.offset, 88u);
  EXPECT_EQ(ip.nextHeaderOffset, 80u);
  EXPECT_EQ(ip.nextHeader, 60);
}

TEST(InsertionPoint, PutsTheFinalDestinationsOptionsAfterEspOrAh) {
  const InsertionPoint ip = findInsertionPoint(ipv6(60, {17, 0, 1, 4, 0, 0, 0, 0}));
  ASSERT_TRUE(ip.ok());
  EXPECT_EQ(ip.offset, 40u);
  EXPECT_EQ(ip.nextHeaderOffset, 6u);
  EXPECT_EQ(ip.nextHeader, 60);
}

TEST(InsertionPoint, RejectsTruncatedAndTooManyHeaders) {
  auto cut = ipv6(0, {}, 0);
  cut.resize(44);
  cut[4] = 0;
  cut[5] = 4;
  EXPECT_EQ(findInsertionPoint(cut).error, AhError::kTruncated);
  EXPECT_EQ(findInsertionPoint(ipv6(0, {17, 9, 0, 0, 0, 0, 0, 0})).error, AhError::kTruncated);
  std::vector<uint8_t> chain;
  for (int i = 0; i < 9; ++i) chain.insert(chain.end(), {44, 0, 0, 0, 0, 0, 0, 0});
  EXPECT_EQ(findInsertionPoint(ipv6(44, chain)).error, AhError::kTooManyExtHeaders);
  EXPECT_EQ(findInsertionPoint(std::vector<uint8_t>{0x45, 0, 0}).error, AhError::kTruncated);
}

}  // namespace
}  // namespace ipsec::ah
