// The forwarder's outbound packet core, first stage (services/forwarder/
// esp_out.cpp): a TUN packet and the tables in, a route out — dropped under
// its reason, held for an ACQUIRE, handed to a bundle's stages, or one ESP SA.
#include "esp_out.h"

#include <gtest/gtest.h>
#include <netinet/in.h>

#include <vector>

#include "core_tables.h"

namespace ipsec::forwarder {
namespace {

using namespace core_tables;
using Kind = OutboundRoute::Kind;

esp::IpAddress ip(const char* s) { return *esp::IpAddress::parse(s); }
esp::Prefix prefix(const char* s) { return *esp::Prefix::parse(s); }

// ICMP echo 198.51.100.1 -> dst (IPv4), the TUN's view of a host's packet.
std::vector<std::uint8_t> ping4(std::uint8_t lastOctet = 1) {
  return {0x45, 0, 0, 28, 0, 1, 0, 0, 64, 1, 0, 0, 198, 51, 100, 1, 203, 0, 113, lastOctet,
          8,    0, 0, 0,  0, 7, 0, 1};
}

class OutboundCore : public testing::Test {
 protected:
  const esp::IpAddress a_ = ip("192.0.2.1"), b_ = ip("192.0.2.2");
  Request espTunnel(std::uint8_t level = IPSEC_LEVEL_REQUIRE) {
    return {IPPROTO_ESP, IPSEC_MODE_TUNNEL, level, 0, a_, b_};
  }
  void policy(std::uint32_t id, const char* dst, std::initializer_list<Request> requests,
              std::uint8_t action = IPSEC_POLICY_IPSEC) {
    ASSERT_FALSE(addPolicy(spd_, {id, IPSEC_DIR_OUTBOUND, action, prefix("198.51.100.0/24"), prefix(dst), requests}));
  }
  OutboundRoute route(const std::vector<std::uint8_t>& packet, bool espEnabled = true) {
    return routeOutbound(spd_, sas_, packet, espEnabled);
  }
  Spd spd_;
  SaTable sas_;
};

TEST_F(OutboundCore, AnEspTunnelPacketGoesToTheNewestSaBetweenTheTunnelsEnds) {
  policy(1, "203.0.113.0/24", {espTunnel()});
  ASSERT_FALSE(installSa(sas_, {0, SADB_SATYPE_ESP, 0x100, IPSEC_MODE_TUNNEL, a_, b_}));
  ASSERT_FALSE(installSa(sas_, {1, SADB_SATYPE_ESP, 0x101, IPSEC_MODE_TUNNEL, a_, b_}));
  const auto r = route(ping4());
  ASSERT_EQ(r.kind, Kind::kEsp);
  EXPECT_EQ(r.sa->spi, 0x101u);
  EXPECT_FALSE(r.transport);
  EXPECT_EQ(r.flow.dst, ip("203.0.113.1"));
}

TEST_F(OutboundCore, TransportModeTakesTheSaBetweenThePacketsOwnAddresses) {
  policy(1, "203.0.113.0/24", {{IPPROTO_ESP, IPSEC_MODE_TRANSPORT, IPSEC_LEVEL_REQUIRE, 0, {}, {}}});
  ASSERT_FALSE(installSa(sas_, {0, SADB_SATYPE_ESP, 0x100, IPSEC_MODE_TRANSPORT, ip("198.51.100.1"),
                                ip("203.0.113.1")}));
  const auto r = route(ping4());
  ASSERT_EQ(r.kind, Kind::kEsp);
  EXPECT_TRUE(r.transport);
  EXPECT_EQ(route(ping4(2)).kind, Kind::kHold);  // another host: its own SA, asked for
}

TEST_F(OutboundCore, WithoutAnSaThePacketIsHeldForAnAcquireOfItsRequest) {
  policy(1, "203.0.113.0/24", {espTunnel()});
  const auto r = route(ping4());
  ASSERT_EQ(r.kind, Kind::kHold);
  ASSERT_NE(r.policy, nullptr);
  EXPECT_EQ(r.request, &r.policy->requests[0]);
}

TEST_F(OutboundCore, EachRefusalIsCountedUnderItsReason) {
  // Same priority: the first added matches first, as in the kernel.
  policy(2, "203.0.113.8/29", {}, IPSEC_POLICY_DISCARD);
  policy(3, "203.0.113.16/29", {}, IPSEC_POLICY_NONE);
  policy(1, "203.0.113.0/24", {espTunnel()});
  EXPECT_EQ(route({0x45, 0, 0}).drop, &Counters::out_drop_bad_inner);
  auto other = ping4();
  other[18] = 114;  // 203.0.114.1: no policy
  EXPECT_EQ(route(other).drop, &Counters::out_drop_no_policy);
  EXPECT_EQ(route(ping4(9)).drop, &Counters::out_drop_policy_discard);
  EXPECT_EQ(route(ping4(17)).drop, &Counters::out_drop_policy_bypass);
  EXPECT_EQ(route(ping4(), false).drop, &Counters::esp_out_drop_disabled);
}

TEST_F(OutboundCore, AnSaOutOfSequenceNumbersDropsAndNamesTheSaToAskFor) {
  policy(1, "203.0.113.0/24", {espTunnel()});
  ASSERT_FALSE(installSa(sas_, {0, SADB_SATYPE_ESP, 0x100, IPSEC_MODE_TUNNEL, a_, b_, {8, 16, 4}, 50, 50}));
  const auto r = route(ping4());
  EXPECT_EQ(r.drop, &Counters::out_drop_seq_wait);
  ASSERT_NE(r.sa, nullptr);
  EXPECT_EQ(r.sa->spi, 0x100u);
}

TEST_F(OutboundCore, AnSaOfTheOtherModeIsRefused) {
  policy(1, "203.0.113.0/24", {espTunnel()});
  ASSERT_FALSE(installSa(sas_, {0, SADB_SATYPE_ESP, 0x100, IPSEC_MODE_TRANSPORT, a_, b_}));
  EXPECT_EQ(route(ping4()).drop, &Counters::out_drop_sa_mode);
}

TEST_F(OutboundCore, BundlesGoToTheirShapesStagesAndIpcompTunnelsToTheirEsp) {
  policy(1, "203.0.113.0/29", {{IPPROTO_ESP, IPSEC_MODE_TRANSPORT, IPSEC_LEVEL_REQUIRE, 0, {}, {}}, espTunnel()});
  policy(2, "203.0.113.8/29", {{IPPROTO_AH, IPSEC_MODE_TUNNEL, IPSEC_LEVEL_REQUIRE, 0, a_, b_}});
  // ipcomp/tunnel/A-B/use esp/transport//require: ESP runs between the tunnel's ends.
  policy(3, "203.0.113.16/29",
         {{IPPROTO_COMP, IPSEC_MODE_TUNNEL, IPSEC_LEVEL_USE, 0, a_, b_},
          {IPPROTO_ESP, IPSEC_MODE_TRANSPORT, IPSEC_LEVEL_REQUIRE, 0, {}, {}}});
  ASSERT_FALSE(installSa(sas_, {0, SADB_SATYPE_ESP, 0x100, IPSEC_MODE_TRANSPORT, a_, b_}));
  EXPECT_EQ(route(ping4(1)).kind, Kind::kBundle);
  EXPECT_EQ(route(ping4(9)).kind, Kind::kBundle);
  EXPECT_EQ(route(ping4(9), false).kind, Kind::kBundle);  // AH: net.inet.esp.enable is not its switch
  const auto r = route(ping4(17));
  ASSERT_EQ(r.kind, Kind::kEsp);
  EXPECT_EQ(r.sa->spi, 0x100u);
  EXPECT_FALSE(r.transport);  // framed as a tunnel, IPComp inside
}

}  // namespace
}  // namespace ipsec::forwarder
