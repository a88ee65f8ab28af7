// parseLayout on untrusted bytes: every refusal has its reason; checksums.
#include <gtest/gtest.h>

#include <vector>

#include "offload/packet.h"
#include "packets.h"

namespace ipsec::offload {
namespace {

using testing::buildSuperPacket;
using testing::SuperPacketSpec;

struct Bad {
  const char* name;
  int version;
  std::uint8_t protocol;
  void (*change)(std::vector<std::uint8_t>&);
  LayoutError expected;
};

class LayoutRefusal : public ::testing::TestWithParam<Bad> {};

TEST_P(LayoutRefusal, NamesItsReason) {
  SuperPacketSpec s;
  s.version = GetParam().version;
  s.protocol = GetParam().protocol;
  s.payload = 100;
  auto p = buildSuperPacket(s);
  ASSERT_TRUE(parseLayout(p).ok());
  GetParam().change(p);
  EXPECT_EQ(parseLayout(p).error, GetParam().expected) << toString(parseLayout(p).error);
}

INSTANTIATE_TEST_SUITE_P(
    Each, LayoutRefusal,
    ::testing::Values(
        Bad{"Empty", 4, kProtoTcp, [](auto& p) { p.clear(); }, LayoutError::kShort},
        Bad{"ShortIpv4", 4, kProtoTcp, [](auto& p) { p.resize(19); }, LayoutError::kShort},
        Bad{"ShortIpv6", 6, kProtoTcp, [](auto& p) { p.resize(39); }, LayoutError::kShort},
        Bad{"Version5", 4, kProtoTcp, [](auto& p) { p[0] = 0x55; }, LayoutError::kBadVersion},
        Bad{"Ihl4", 4, kProtoTcp, [](auto& p) { p[0] = 0x44; }, LayoutError::kBadIpv4HeaderLength},
        Bad{"IhlPastTheEnd", 4, kProtoTcp, [](auto& p) { p.resize(40); store16(&p[2], 40); p[0] = 0x4f; },
            LayoutError::kBadIpv4HeaderLength},
        Bad{"TotalLength", 4, kProtoTcp, [](auto& p) { p.push_back(0); }, LayoutError::kLengthMismatch},
        Bad{"PayloadLength", 6, kProtoTcp, [](auto& p) { p.pop_back(); }, LayoutError::kLengthMismatch},
        Bad{"MoreFragments", 4, kProtoTcp, [](auto& p) { p[6] |= 0x20; }, LayoutError::kFragment},
        Bad{"FragmentOffset", 4, kProtoTcp, [](auto& p) { p[7] = 1; }, LayoutError::kFragment},
        Bad{"Icmp", 4, kProtoTcp, [](auto& p) { p[9] = 1; }, LayoutError::kNotTcpOrUdp},
        Bad{"Ipv6HopByHop", 6, kProtoTcp, [](auto& p) { p[6] = 0; }, LayoutError::kNotTcpOrUdp},
        Bad{"TcpOffset4", 4, kProtoTcp, [](auto& p) { p[20 + 12] = 0x40; }, LayoutError::kBadTcpHeaderLength},
        Bad{"TcpOffsetPastTheEnd", 4, kProtoTcp,
            [](auto& p) { p.resize(60); store16(&p[2], 60); p[20 + 12] = 0xf0; }, LayoutError::kBadTcpHeaderLength},
        Bad{"ShortTcp", 4, kProtoTcp, [](auto& p) { p.resize(30); store16(&p[2], 30); }, LayoutError::kShort},
        Bad{"UdpLength", 4, kProtoUdp, [](auto& p) { p[20 + 5] ^= 1; }, LayoutError::kLengthMismatch},
        Bad{"ShortUdp", 6, kProtoUdp, [](auto& p) { p.resize(44); store16(&p[4], 4); }, LayoutError::kShort}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(PacketLayout, MeasuresOptionsOfBothLayers) {
  SuperPacketSpec s;
  s.payload = 10;
  const auto p = buildSuperPacket(s);
  const PacketLayout layout = parseLayout(p);
  ASSERT_TRUE(layout.ok());
  EXPECT_EQ(layout.l4Offset, 20);
  EXPECT_EQ(layout.headerLength, 20 + 20 + 12);
  EXPECT_EQ(layout.payloadLength(), 10u);
}

TEST(PacketChecksum, Rfc1071ExampleAndAnOddLength) {
  // RFC 1071 §3: 0001 f203 f4f5 f6f7 sums to ddf2 (folded).
  const std::uint8_t words[] = {0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7};
  EXPECT_EQ(checksumFold(checksumAdd(0, words)), 0xddf2);
  const std::uint8_t odd[] = {0x01, 0x02, 0x03};
  EXPECT_EQ(checksumFold(checksumAdd(0, odd)), 0x0102 + 0x0300);
}

}  // namespace
}  // namespace ipsec::offload
