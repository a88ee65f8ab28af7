// The forwarder's IPComp SA table (services/forwarder/ipcomp_sas.cpp): keydb's
// installs checked for shape, the newest SA chosen outbound, a CPI known
// inbound only between the ends it was installed for.
#include "ipcomp_sas.h"

#include <gtest/gtest.h>
#include <linux/ipsec.h>
#include <linux/pfkeyv2.h>

#include <capnp/message.h>

#include "core_tables.h"

namespace ipsec::forwarder {
namespace {

esp::IpAddress ip(const char* s) { return *esp::IpAddress::parse(s); }

bool install(IpcompSas& sas, std::uint32_t index, std::uint32_t cpi, const esp::IpAddress& src,
             const esp::IpAddress& dst, std::uint32_t reqid = 0) {
  return core_tables::installIpcompSa(sas, index, cpi, src, dst, reqid);
}

const esp::IpAddress kA = ip("192.0.2.1"), kB = ip("192.0.2.2"), kA6 = ip("2001:db8::1");

TEST(IpcompSas, TheNewestSaBetweenTheEndsIsSelectedAndAReqidNarrowsTheChoice) {
  IpcompSas sas;
  EXPECT_EQ(sas.compressor(), nullptr);  // no z_stream until the first SA
  ASSERT_TRUE(install(sas, 0, 0x100, kA, kB, 7));
  ASSERT_TRUE(install(sas, 1, 0x200, kA, kB, 8));
  ASSERT_NE(sas.select(kA, kB, 0), nullptr);
  EXPECT_EQ(sas.select(kA, kB, 0)->cpi, 0x200);
  EXPECT_EQ(sas.select(kA, kB, 7)->cpi, 0x100);
  EXPECT_EQ(sas.select(kB, kA, 0), nullptr);
  EXPECT_NE(sas.compressor(), nullptr);
  EXPECT_NE(sas.decompressor(), nullptr);
}

TEST(IpcompSas, ACpiIsKnownOnlyBetweenItsOwnEndsAndUntilRemoved) {
  IpcompSas sas;
  ASSERT_TRUE(install(sas, 0, 0x100, kA, kB));
  EXPECT_TRUE(sas.knows(0x100, kA, kB));
  EXPECT_FALSE(sas.knows(0x100, kB, kA));
  EXPECT_FALSE(sas.knows(0x100, ip("192.0.2.9"), kB));  // another sender to the same end
  EXPECT_FALSE(sas.knows(0x101, kA, kB));
  EXPECT_TRUE(sas.remove({0, 1}));
  EXPECT_FALSE(sas.knows(0x100, kA, kB));
  EXPECT_FALSE(sas.remove({0, 1}));
}

TEST(IpcompSas, AReinstallReplacesTheSlotsOldSa) {
  IpcompSas sas;
  ASSERT_TRUE(install(sas, 0, 0x100, kA, kB));
  ASSERT_TRUE(install(sas, 0, 0x300, kA, kB));
  EXPECT_FALSE(sas.knows(0x100, kA, kB));
  EXPECT_TRUE(sas.knows(0x300, kA, kB));
}

TEST(IpcompSas, MalformedInstallsAreRefused) {
  IpcompSas sas;
  EXPECT_FALSE(install(sas, 0, 0x10000, kA, kB));  // a CPI is 16 bits
  EXPECT_FALSE(install(sas, 1, 0x100, kA, kA6));   // mixed families
  EXPECT_EQ(sas.select(kA, kB, 0), nullptr);
}

}  // namespace
}  // namespace ipsec::forwarder
