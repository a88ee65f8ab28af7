// Coalescing against the kernel's GRO rules: a segmented super-packet merges
// back into itself, and each thing that must keep packets apart does; every
// packet of a burst is written exactly once, in order.
#include <gtest/gtest.h>

#include <array>
#include <vector>

#include "offload/coalesce.h"
#include "packets.h"

namespace ipsec::offload {
namespace {

using testing::buildSuperPacket;
using testing::gsoHeaderFor;
using testing::segmentAll;
using testing::SuperPacketSpec;
using Packets = std::vector<std::vector<std::uint8_t>>;

struct Written {
  std::vector<CoalesceGroup> groups;
  Packets packets;
};

// Plans and writes a whole burst; checks that the groups cover it in order.
Written coalesce(const Packets& burst, const CoalesceOptions& options = {}) {
  std::vector<std::span<const std::uint8_t>> views(burst.begin(), burst.end());
  Written w;
  w.groups.resize(burst.size());
  w.groups.resize(planCoalesce(views, w.groups, options));
  std::uint32_t next = 0;
  for (const auto& g : w.groups) {
    EXPECT_EQ(g.first, next);
    next += g.count;
    std::vector<std::uint8_t> out(g.length);
    EXPECT_EQ(writeCoalesced(g, views, out), g.length);
    w.packets.push_back(std::move(out));
  }
  EXPECT_EQ(next, burst.size()) << "every packet in some group";
  return w;
}

std::vector<std::uint32_t> counts(const Written& w) {
  std::vector<std::uint32_t> c;
  for (const auto& g : w.groups) c.push_back(g.count);
  return c;
}

// A packet's TCP checksum made whole again after a test changed its header.
void refreshChecksums(std::vector<std::uint8_t>& p) {
  const PacketLayout layout = parseLayout(p);
  if (layout.version == 4) {
    store16(&p[10], 0);
    store16(&p[10], ipv4HeaderChecksum(p));
  }
  VnetHeader h;
  h.flags = kVnetFlagNeedsChecksum;
  h.checksumStart = layout.l4Offset;
  h.checksumOffset = kTcpChecksumOffset;
  PacketLayout pseudo = layout;
  store16(&p[layout.l4Offset + kTcpChecksumOffset],
          checksumFold(pseudoHeaderSum(p, pseudo, static_cast<std::uint32_t>(p.size() - layout.l4Offset))));
  completeChecksum(h, p);
}

Packets segmentsOf(const SuperPacketSpec& s) { return segmentAll(gsoHeaderFor(s), buildSuperPacket(s)); }

class RoundTrip : public ::testing::TestWithParam<std::tuple<int, std::size_t>> {};

TEST_P(RoundTrip, SegmentsMergeBackIntoTheSuperPacket) {
  SuperPacketSpec s;
  s.version = std::get<0>(GetParam());
  s.payload = std::get<1>(GetParam());
  s.tcpFlags = 0x80 | 0x18;  // CWR on the first, PSH on the last
  const auto original = buildSuperPacket(s);
  const Written w = coalesce(segmentAll(gsoHeaderFor(s), original));
  ASSERT_EQ(w.groups.size(), 1u);
  EXPECT_EQ(w.packets[0], original);
  EXPECT_EQ(w.groups[0].header, gsoHeaderFor(s));
  EXPECT_EQ(w.groups[0].header.gsoType & kGsoEcn, kGsoEcn) << "CWR on the first: ECN, as tcp_gro_complete";
}

INSTANTIATE_TEST_SUITE_P(Sizes, RoundTrip,
                         ::testing::Combine(::testing::Values(4, 6),
                                            ::testing::Values(1001, 2000, 4001, 65535 - 72)));

TEST(Coalesce, LeavesASingleSegmentAloneWithoutGso) {
  SuperPacketSpec s;
  s.payload = 1000;
  const Written w = coalesce(segmentsOf(s));
  ASSERT_EQ(w.groups.size(), 1u);
  EXPECT_EQ(w.groups[0].header, VnetHeader{});
}

TEST(Coalesce, PshOrFinEndsAGroupAndAShortSegmentToo) {
  SuperPacketSpec s;
  s.tcpFlags = 0x10;
  s.payload = 8000;
  Packets burst = segmentsOf(s);
  burst[2][20 + 13] |= 0x08;  // PSH on the third
  refreshChecksums(burst[2]);
  burst[5].resize(burst[5].size() - 1);  // the sixth one byte short
  store16(&burst[5][2], static_cast<std::uint16_t>(burst[5].size()));
  refreshChecksums(burst[5]);
  const Written w = coalesce(burst);
  EXPECT_EQ(counts(w), (std::vector<std::uint32_t>{3, 3, 2}));
  EXPECT_EQ(w.packets[0][20 + 13] & 0x08, 0x08) << "the group takes the PSH of its last";
}

TEST(Coalesce, SegmentsLongerThanTheFirstStartANewGroup) {
  SuperPacketSpec s;
  s.tcpFlags = 0x10;
  s.payload = 500;
  s.mss = 500;
  Packets burst = segmentsOf(s);
  SuperPacketSpec t = s;
  t.seq = s.seq + 500;
  t.ipId = static_cast<std::uint16_t>(s.ipId + 1);
  t.payload = 3000;
  t.mss = 1000;
  for (auto& p : segmentsOf(t)) burst.push_back(p);
  EXPECT_EQ(counts(coalesce(burst)), (std::vector<std::uint32_t>{1, 3}));
}

// One change to the second of four segments, and what it must do.
struct Breaker {
  const char* name;
  int version;
  void (*change)(std::vector<std::uint8_t>&);
  std::vector<std::uint32_t> expected;
};

class KeptApart : public ::testing::TestWithParam<Breaker> {};

TEST_P(KeptApart, ByTheKernelsRules) {
  SuperPacketSpec s;
  s.version = GetParam().version;
  s.tcpFlags = 0x10;
  Packets burst = segmentsOf(s);
  ASSERT_EQ(burst.size(), 4u);
  GetParam().change(burst[1]);
  const Written w = coalesce(burst);
  EXPECT_EQ(counts(w), GetParam().expected);
  std::size_t i = 0;
  for (const auto& g : w.groups) {
    if (g.count == 1) {
      EXPECT_EQ(w.packets[i], burst[g.first]) << "alone means unchanged";
    }
    ++i;
  }
}

constexpr std::size_t kTcp4 = 20;
constexpr std::size_t kTcp6 = 40;

INSTANTIATE_TEST_SUITE_P(
    Each, KeptApart,
    ::testing::Values(
        Breaker{"Syn", 4, [](auto& p) { p[kTcp4 + 13] |= 0x02; refreshChecksums(p); }, {1, 1, 2}},
        Breaker{"Rst", 4, [](auto& p) { p[kTcp4 + 13] |= 0x04; refreshChecksums(p); }, {1, 1, 2}},
        Breaker{"Urg", 4, [](auto& p) { p[kTcp4 + 13] |= 0x20; refreshChecksums(p); }, {1, 1, 2}},
        Breaker{"Fin", 4, [](auto& p) { p[kTcp4 + 13] |= 0x01; refreshChecksums(p); }, {2, 2}},
        Breaker{"CwrMidStream", 4, [](auto& p) { p[kTcp4 + 13] |= 0x80; refreshChecksums(p); }, {1, 3}},
        Breaker{"Ece", 4, [](auto& p) { p[kTcp4 + 13] |= 0x40; refreshChecksums(p); }, {1, 1, 2}},
        Breaker{"Ttl", 4, [](auto& p) { p[8] = 63; refreshChecksums(p); }, {1, 1, 2}},
        Breaker{"EcnCe", 4, [](auto& p) { p[1] |= 0x03; refreshChecksums(p); }, {1, 1, 2}},
        Breaker{"DontFragment", 4, [](auto& p) { p[6] &= 0xbf; refreshChecksums(p); }, {1, 1, 2}},
        Breaker{"IpId", 4, [](auto& p) { p[5] ^= 0x40; refreshChecksums(p); }, {1, 1, 2}},
        Breaker{"Ack", 4, [](auto& p) { p[kTcp4 + 11] ^= 1; refreshChecksums(p); }, {1, 1, 2}},
        Breaker{"Window", 4, [](auto& p) { p[kTcp4 + 15] ^= 1; refreshChecksums(p); }, {1, 1, 2}},
        Breaker{"Timestamp", 4, [](auto& p) { p[kTcp4 + 27] ^= 1; refreshChecksums(p); }, {1, 1, 2}},
        Breaker{"SeqGap", 4, [](auto& p) { p[kTcp4 + 7] ^= 1; refreshChecksums(p); }, {1, 1, 2}},
        Breaker{"Port", 4, [](auto& p) { p[kTcp4 + 1] ^= 1; refreshChecksums(p); }, {1, 1, 2}},
        Breaker{"Address", 4, [](auto& p) { p[15] ^= 1; refreshChecksums(p); }, {1, 1, 2}},
        Breaker{"BadTcpChecksum", 4, [](auto& p) { p[kTcp4 + 16] ^= 1; }, {1, 1, 2}},
        Breaker{"BadIpChecksum", 4, [](auto& p) { p[10] ^= 1; }, {1, 1, 2}},
        Breaker{"NotTcp", 4, [](auto& p) { p[9] = kProtoUdp; store16(&p[10], 0); store16(&p[10], ipv4HeaderChecksum(p)); }, {1, 1, 2}},
        Breaker{"Ipv6HopLimit", 6, [](auto& p) { p[7] = 1; refreshChecksums(p); }, {1, 1, 2}},
        Breaker{"Ipv6TrafficClass", 6, [](auto& p) { p[1] |= 0x30; refreshChecksums(p); }, {1, 1, 2}},
        Breaker{"Ipv6FlowLabel", 6, [](auto& p) { p[3] ^= 1; refreshChecksums(p); }, {1, 1, 2}},
        Breaker{"Ipv6Window", 6, [](auto& p) { p[kTcp6 + 14] ^= 1; refreshChecksums(p); }, {1, 1, 2}},
        Breaker{"Ipv6BadChecksum", 6, [](auto& p) { p[kTcp6 + 17] ^= 1; }, {1, 1, 2}}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(Coalesce, Ipv4OptionsAndFragmentsStayAlone) {
  SuperPacketSpec s;
  s.tcpFlags = 0x10;
  Packets burst = segmentsOf(s);
  // A fragment: MF set on the second.
  burst[1][6] |= 0x20;
  refreshChecksums(burst[1]);
  // Options: the third gets a 4-byte NOP option (IHL 6).
  auto& p = burst[2];
  p.insert(p.begin() + 20, {1, 1, 1, 0});
  p[0] = 0x46;
  store16(&p[2], static_cast<std::uint16_t>(p.size()));
  store16(&p[10], 0);
  store16(&p[10], ipv4HeaderChecksum(p));
  EXPECT_EQ(counts(coalesce(burst)), (std::vector<std::uint32_t>{1, 1, 1, 1}));
}

TEST(Coalesce, SegmentsThatAllCarryIpv4OptionsStayAlone) {
  SuperPacketSpec s;
  s.tcpFlags = 0x10;
  Packets burst = segmentsOf(s);
  for (auto& p : burst) {  // the same 4-byte NOP option on each (IHL 6): inet_gro_receive flushes
    p.insert(p.begin() + 20, {1, 1, 1, 0});
    p[0] = 0x46;
    store16(&p[2], static_cast<std::uint16_t>(p.size()));
    store16(&p[10], 0);
    store16(&p[10], ipv4HeaderChecksum(p));
  }
  EXPECT_EQ(counts(coalesce(burst)), (std::vector<std::uint32_t>{1, 1, 1, 1}));
}

TEST(Coalesce, StaysWithin64KiB) {
  SuperPacketSpec s;
  s.tcpFlags = 0x10;
  s.payload = 64000;
  s.mss = 1000;
  Packets burst = segmentsOf(s);
  SuperPacketSpec t = s;
  t.payload = 2000;
  t.seq = s.seq + 64000;
  t.ipId = static_cast<std::uint16_t>(s.ipId + 64);
  for (auto& p : segmentsOf(t)) burst.push_back(p);
  const Written w = coalesce(burst);
  ASSERT_EQ(counts(w), (std::vector<std::uint32_t>{65, 1}));
  EXPECT_LE(w.packets[0].size(), kMaxPacket);
}

TEST(Coalesce, InterleavedFlowsAndUdpPassThroughInOrder) {
  SuperPacketSpec a;
  a.tcpFlags = 0x10;
  SuperPacketSpec b = a;
  b.seq = 77;
  b.payloadSeed = 9;
  b.ipId = 5;
  SuperPacketSpec u;
  u.protocol = kProtoUdp;
  const Packets pa = segmentsOf(a), pb = segmentsOf(b), pu = segmentsOf(u);
  const Packets burst{pa[0], pa[1], pb[0], pu[0], pu[1], pa[2], pa[3]};
  const Written w = coalesce(burst);
  EXPECT_EQ(counts(w), (std::vector<std::uint32_t>{2, 1, 1, 1, 2}));
  EXPECT_EQ(w.packets[1], pb[0]);
  EXPECT_EQ(w.packets[2], pu[0]);
}

TEST(Coalesce, InPlaceIntoTheFirstPacketsBuffer) {
  SuperPacketSpec s;
  s.tcpFlags = 0x18;
  const auto original = buildSuperPacket(s);
  Packets burst = segmentAll(gsoHeaderFor(s), original);
  const std::size_t firstLength = burst[0].size();
  burst[0].resize(original.size());  // a pool buffer: room behind the packet
  std::vector<std::span<const std::uint8_t>> views(burst.begin(), burst.end());
  views[0] = std::span<const std::uint8_t>(burst[0]).first(firstLength);
  std::vector<CoalesceGroup> groups(burst.size());
  ASSERT_EQ(planCoalesce(views, groups), 1u);
  ASSERT_EQ(writeCoalesced(groups[0], views, burst[0]), original.size());
  EXPECT_EQ(burst[0], original);
}

// The forwarder's writev: the merged headers, then each payload where it lies
// in the burst (no copy), together the super-packet the kernel's GSO cut.
TEST(Coalesce, SlicesPointIntoTheBurstAndGatherIntoTheSuperPacket) {
  SuperPacketSpec s;
  s.tcpFlags = 0x18;
  const auto original = buildSuperPacket(s);
  const Packets burst = segmentAll(gsoHeaderFor(s), original);
  ASSERT_GT(burst.size(), 2u);
  std::vector<std::span<const std::uint8_t>> views(burst.begin(), burst.end());
  std::vector<CoalesceGroup> groups(burst.size());
  ASSERT_EQ(planCoalesce(views, groups), 1u);
  std::array<std::uint8_t, kMaxMergedHeaders> headers{};
  std::vector<std::span<const std::uint8_t>> slices(burst.size() + 1);
  ASSERT_EQ(sliceCoalesced(groups[0], views, headers, slices), burst.size() + 1);
  EXPECT_EQ(slices[0].data(), headers.data());
  EXPECT_EQ(slices[0].size(), groups[0].header.headerLength);
  std::vector<std::uint8_t> gathered;
  for (std::size_t k = 0; k < slices.size(); ++k) {
    if (k > 0) {
      EXPECT_EQ(slices[k].data(), burst[k - 1].data() + groups[0].header.headerLength) << k;
    }
    gathered.insert(gathered.end(), slices[k].begin(), slices[k].end());
  }
  EXPECT_EQ(gathered, original);
  // Too few slices for the group: refused, not cut short.
  EXPECT_EQ(sliceCoalesced(groups[0], views, headers, std::span(slices).first(burst.size())), 0u);
}

TEST(Coalesce, ALonePacketIsOneSliceItself) {
  SuperPacketSpec s;
  s.tcpFlags = 0x12;  // SYN: alone
  const Packets burst = segmentsOf(s);
  std::vector<std::span<const std::uint8_t>> views(burst.begin(), burst.end());
  std::vector<CoalesceGroup> groups(burst.size());
  ASSERT_GE(planCoalesce(views, groups), 1u);
  std::array<std::uint8_t, kMaxMergedHeaders> headers{};
  std::array<std::span<const std::uint8_t>, 1> slices;
  ASSERT_EQ(sliceCoalesced(groups[0], views, headers, slices), 1u);
  EXPECT_EQ(slices[0].data(), burst[0].data());
  EXPECT_EQ(slices[0].size(), burst[0].size());
}

TEST(Coalesce, WriteRefusesAShortBufferAndABurstThatChanged) {
  SuperPacketSpec s;
  Packets burst = segmentsOf(s);
  std::vector<std::span<const std::uint8_t>> views(burst.begin(), burst.end());
  std::vector<CoalesceGroup> groups(burst.size());
  ASSERT_EQ(planCoalesce(views, groups), 1u);
  std::vector<std::uint8_t> out(groups[0].length - 1);
  EXPECT_EQ(writeCoalesced(groups[0], views, out), 0u);
  out.resize(groups[0].length);
  views.pop_back();
  EXPECT_EQ(writeCoalesced(groups[0], views, out), 0u);
}

TEST(Coalesce, PlansAsMuchAsTheGroupsHold) {
  SuperPacketSpec s;
  s.tcpFlags = 0x12;  // SYN: each alone
  Packets burst = segmentsOf(s);
  std::vector<std::span<const std::uint8_t>> views(burst.begin(), burst.end());
  std::vector<CoalesceGroup> groups(2);
  ASSERT_EQ(planCoalesce(views, groups), 2u);
  EXPECT_EQ(groups[1].first, 1u);
}

class UdpRoundTrip : public ::testing::TestWithParam<std::tuple<int, std::size_t>> {};

TEST_P(UdpRoundTrip, DatagramsMergeBackIntoTheUsoSuperPacket) {
  SuperPacketSpec s;
  s.protocol = kProtoUdp;
  s.version = std::get<0>(GetParam());
  s.payload = std::get<1>(GetParam());
  const auto original = buildSuperPacket(s);
  const Packets datagrams = segmentAll(gsoHeaderFor(s), original);
  EXPECT_EQ(coalesce(datagrams).groups.size(), datagrams.size()) << "UDP stays alone unless asked for";
  const Written w = coalesce(datagrams, CoalesceOptions{.udp = true});
  ASSERT_EQ(w.groups.size(), 1u);
  EXPECT_EQ(w.packets[0], original);
  EXPECT_EQ(w.groups[0].header, gsoHeaderFor(s));
}

INSTANTIATE_TEST_SUITE_P(Sizes, UdpRoundTrip,
                         ::testing::Combine(::testing::Values(4, 6), ::testing::Values(1001, 3000, 4999)));

TEST(CoalesceUdp, AShortDatagramEndsAGroupAndAnotherPortOrALongerOneStartsOne) {
  SuperPacketSpec s;
  s.protocol = kProtoUdp;
  s.payload = 6000;
  Packets burst = segmentAll(gsoHeaderFor(s), buildSuperPacket(s));
  auto shorten = [](std::vector<std::uint8_t>& p) {  // one byte less, lengths and checksum fixed
    p.pop_back();
    store16(&p[2], static_cast<std::uint16_t>(p.size()));
    store16(&p[10], 0);
    store16(&p[10], ipv4HeaderChecksum(p));
    store16(&p[20 + 4], static_cast<std::uint16_t>(p.size() - 20));
    store16(&p[20 + 6], 0);  // no checksum (IPv4): still merges
  };
  shorten(burst[1]);
  burst[3][20 + 1] ^= 1;  // another source port
  store16(&burst[3][20 + 6], 0);
  const Written w = coalesce(burst, CoalesceOptions{.udp = true});
  EXPECT_EQ(counts(w), (std::vector<std::uint32_t>{2, 1, 1, 2}));
  EXPECT_EQ(w.groups[0].header.gsoSize, 1000);
}

}  // namespace
}  // namespace ipsec::offload
