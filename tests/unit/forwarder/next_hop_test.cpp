// Unit tests of the next-hop cache of esp_send = packet (services/forwarder/
// next_hop.cpp) on its own: the kernel's answers and notifications handed to
// it as lib/netlink's parser reports them, its requests caught by a sink. What
// it says a packet does (packet socket to which MAC, or the raw socket), and
// its counters, through every step: miss, route, neighbour, refresh, change,
// removal, flush.
#include "next_hop.h"

#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/neighbour.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>

#include <cstring>
#include <vector>

namespace ipsec::forwarder {
namespace {

constexpr std::uint32_t kPort = 4242;  // our socket's port id
const netlink::Ipv4 kPeer{198, 51, 100, 7};
const netlink::Ipv4 kGateway{192, 0, 2, 254};
const netlink::Mac kMac{0x02, 0x00, 0x5e, 0x00, 0x53, 0xfe};

struct Sink {
  std::vector<std::uint16_t> types;  // RTM_GETROUTE / RTM_GETNEIGH, in order
  std::vector<std::uint32_t> seqs;
  static bool send(void* self, std::span<const std::uint8_t> request) noexcept {
    nlmsghdr h{};
    std::memcpy(&h, request.data(), sizeof h);
    static_cast<Sink*>(self)->types.push_back(h.nlmsg_type);
    static_cast<Sink*>(self)->seqs.push_back(h.nlmsg_seq);
    return true;
  }
};

struct NextHopsTest : ::testing::Test {
  Counters counters{};
  Sink sink;
  NextHops hops{counters, kPort, 0x4950, &Sink::send, &sink};

  netlink::Route viaGateway() {
    netlink::Route r;
    r.type = RTN_UNICAST;
    r.oif = 3;
    r.hasGateway = true;
    r.gateway = kGateway;
    return r;
  }
  netlink::Neighbour gatewayIs(std::uint16_t state, bool removed = false) {
    netlink::Neighbour n;
    n.ifindex = 3;
    n.address = kGateway;
    n.state = state;
    n.removed = removed;
    n.hasMac = true;
    n.mac = kMac;
    return n;
  }
  // Miss, route answered, neighbour reachable at time t.
  void learn(std::uint64_t t) {
    EXPECT_EQ(hops.packetAddress(kPeer, t), nullptr);
    hops.setNow(t);
    ASSERT_EQ(sink.types.back(), RTM_GETROUTE);
    hops.route({sink.seqs.back(), kPort}, viaGateway());
    ASSERT_EQ(sink.types.back(), RTM_GETNEIGH);
    hops.neighbour({sink.seqs.back(), kPort}, gatewayIs(NUD_REACHABLE));
  }
};

TEST_F(NextHopsTest, AMissGoesRawAndAsksTheRouteThenTheNextHopsMacIsUsed) {
  EXPECT_EQ(hops.packetAddress(kPeer, 1000), nullptr);
  EXPECT_EQ(counters.next_hop_misses, 1u);
  EXPECT_EQ(counters.next_hop_lookups, 1u);
  ASSERT_EQ(sink.types, (std::vector<std::uint16_t>{RTM_GETROUTE}));
  EXPECT_EQ(hops.packetAddress(kPeer, 1001), nullptr);  // still asking: raw, not asked twice
  EXPECT_EQ(sink.types.size(), 1u);
  hops.route({sink.seqs[0], kPort}, viaGateway());
  ASSERT_EQ(sink.types, (std::vector<std::uint16_t>{RTM_GETROUTE, RTM_GETNEIGH}));
  EXPECT_EQ(hops.packetAddress(kPeer, 1002), nullptr);  // the neighbour not known yet
  hops.neighbour({sink.seqs[1], kPort}, gatewayIs(NUD_REACHABLE));
  const sockaddr_ll* to = hops.packetAddress(kPeer, 1003);
  ASSERT_NE(to, nullptr);
  EXPECT_EQ(to->sll_family, AF_PACKET);
  EXPECT_EQ(to->sll_protocol, htons(ETH_P_IP));
  EXPECT_EQ(to->sll_ifindex, 3);
  EXPECT_EQ(to->sll_halen, 6);
  EXPECT_EQ(std::memcmp(to->sll_addr, kMac.data(), 6), 0);
  EXPECT_EQ(counters.next_hop_misses, 3u);
}

TEST_F(NextHopsTest, OnePacketPerNextHopGoesRawEveryRefreshPeriod) {
  learn(1000);
  EXPECT_NE(hops.packetAddress(kPeer, 1000 + NextHops::kRefreshMs - 1), nullptr);
  EXPECT_EQ(hops.packetAddress(kPeer, 1000 + NextHops::kRefreshMs), nullptr);  // the refresh
  EXPECT_NE(hops.packetAddress(kPeer, 1000 + NextHops::kRefreshMs + 1), nullptr);
  EXPECT_EQ(counters.next_hop_misses, 1u);  // a refresh is not a miss
}

TEST_F(NextHopsTest, ARunTakesTheRefreshWithOnePacketOnly) {
  learn(1000);
  bool firstRaw = true;
  EXPECT_NE(hops.packetAddressOfRun(kPeer, 1001, firstRaw), nullptr);
  EXPECT_FALSE(firstRaw);
  EXPECT_NE(hops.packetAddressOfRun(kPeer, 1000 + NextHops::kRefreshMs, firstRaw), nullptr);
  EXPECT_TRUE(firstRaw);  // the run's first packet raw, the rest to the MAC
  EXPECT_NE(hops.packetAddressOfRun(kPeer, 1001 + NextHops::kRefreshMs, firstRaw), nullptr);
  EXPECT_FALSE(firstRaw);
  // Unknown: the whole run raw.
  EXPECT_EQ(hops.packetAddressOfRun({203, 0, 113, 9}, 1001 + NextHops::kRefreshMs, firstRaw), nullptr);
  EXPECT_FALSE(firstRaw);
}

TEST_F(NextHopsTest, NeighbourNotificationsUpdateAndDropTheEntry) {
  learn(1000);
  ASSERT_NE(hops.packetAddress(kPeer, 1001), nullptr);
  netlink::Neighbour moved = gatewayIs(NUD_REACHABLE);
  moved.mac[5] = 0x99;
  hops.neighbour({0, 0}, moved);  // a notification: the kernel's, port id 0
  const sockaddr_ll* to = hops.packetAddress(kPeer, 1002);
  ASSERT_NE(to, nullptr);
  EXPECT_EQ(to->sll_addr[5], 0x99);
  hops.neighbour({0, 0}, gatewayIs(NUD_FAILED));
  EXPECT_EQ(hops.packetAddress(kPeer, 1003), nullptr);
  hops.neighbour({0, 0}, gatewayIs(NUD_STALE));
  EXPECT_NE(hops.packetAddress(kPeer, 1004), nullptr);
  hops.neighbour({0, 0}, gatewayIs(NUD_STALE, true));
  EXPECT_EQ(hops.packetAddress(kPeer, 1005), nullptr);
  netlink::Neighbour noMac = gatewayIs(NUD_REACHABLE);
  noMac.hasMac = false;
  hops.neighbour({0, 0}, noMac);
  EXPECT_EQ(hops.packetAddress(kPeer, 1006), nullptr);
}

TEST_F(NextHopsTest, AnyRouteChangeEmptiesTheCache) {
  learn(1000);
  ASSERT_NE(hops.packetAddress(kPeer, 1001), nullptr);
  hops.route({77, 999}, viaGateway());  // another process's change
  EXPECT_EQ(counters.next_hop_flushes, 1u);
  EXPECT_EQ(hops.packetAddress(kPeer, 1002), nullptr);
  EXPECT_EQ(counters.next_hop_lookups, 2u);
}

TEST_F(NextHopsTest, AReplyNotForUsIsNoAnswer) {
  EXPECT_EQ(hops.packetAddress(kPeer, 1000), nullptr);
  hops.route({sink.seqs[0] + 1, kPort}, viaGateway());  // a seq we never asked: stale, ignored
  EXPECT_EQ(sink.types.size(), 1u);
  EXPECT_EQ(counters.next_hop_flushes, 0u);
  EXPECT_EQ(hops.packetAddress(kPeer, 1001), nullptr);
}

TEST_F(NextHopsTest, ALocalPeerOrNoRouteStaysRawAndIsAskedAgainLater) {
  EXPECT_EQ(hops.packetAddress(kPeer, 1000), nullptr);
  hops.setNow(1000);
  netlink::Route local = viaGateway();
  local.type = RTN_LOCAL;
  hops.route({sink.seqs[0], kPort}, local);
  EXPECT_EQ(sink.types.size(), 1u);  // no neighbour asked
  EXPECT_EQ(hops.packetAddress(kPeer, 1001), nullptr);
  EXPECT_EQ(sink.types.size(), 1u);
  EXPECT_EQ(hops.packetAddress(kPeer, 1000 + NextHops::kAskAgainMs + 1), nullptr);
  ASSERT_EQ(sink.types.size(), 2u);
  hops.setNow(1000 + NextHops::kAskAgainMs + 1);
  hops.error({sink.seqs[1], kPort}, ENETUNREACH);
  EXPECT_EQ(hops.packetAddress(kPeer, 1000 + NextHops::kAskAgainMs + 2), nullptr);
  EXPECT_EQ(sink.types.size(), 2u);
}

TEST_F(NextHopsTest, MoreDestinationsThanItHoldsEmptyIt) {
  for (std::size_t i = 0; i < NextHops::kMaxDestinations; ++i) {
    hops.packetAddress({203, 0, 113, static_cast<std::uint8_t>(i)}, 1000);
  }
  EXPECT_EQ(counters.next_hop_flushes, 0u);
  hops.packetAddress(kPeer, 1000);
  EXPECT_EQ(counters.next_hop_flushes, 1u);
  EXPECT_EQ(counters.next_hop_lookups, NextHops::kMaxDestinations + 1);
}

}  // namespace
}  // namespace ipsec::forwarder
