// virtio_net_hdr: read/write round trip and every refusal of checkVnetHeader.
#include <gtest/gtest.h>

#include <array>

#include "offload/vnet_header.h"
#include "packets.h"

namespace ipsec::offload {
namespace {

using testing::buildSuperPacket;
using testing::gsoHeaderFor;
using testing::SuperPacketSpec;

TEST(VnetHeader, ReadsWhatItWrites) {
  VnetHeader h{kVnetFlagNeedsChecksum, kGsoTcpV6 | kGsoEcn, 86, 1428, 40, 16};
  std::array<std::uint8_t, kVnetHeaderSize> bytes{};
  writeVnetHeader(h, bytes);
  EXPECT_EQ(readVnetHeader(bytes), h);
  EXPECT_EQ(bytes[0], kVnetFlagNeedsChecksum);
  EXPECT_EQ(bytes[1], kGsoTcpV6 | kGsoEcn);
}

TEST(VnetHeader, AcceptsAKernelTsoHeaderWhoseHdrLenIsTheLinearPart) {
  SuperPacketSpec s;
  const auto p = buildSuperPacket(s);
  VnetHeader h = gsoHeaderFor(s);
  h.headerLength = 1500;  // skb_headlen, not the headers' length
  EXPECT_EQ(checkVnetHeader(h, p), VnetError::kOk);
  h.flags |= kVnetFlagDataValid;
  EXPECT_EQ(checkVnetHeader(h, p), VnetError::kOk);
}

TEST(VnetHeader, AcceptsAnyPacketWithoutGso) {
  const std::array<std::uint8_t, 3> notIp{1, 2, 3};
  EXPECT_EQ(checkVnetHeader(VnetHeader{}, notIp), VnetError::kOk);
}

struct Refusal {
  const char* name;
  void (*mutate)(VnetHeader&, std::vector<std::uint8_t>&, SuperPacketSpec&);
  VnetError expected;
};

class VnetRefusal : public ::testing::TestWithParam<Refusal> {};

TEST_P(VnetRefusal, IsRefusedWithItsReason) {
  SuperPacketSpec s;
  auto p = buildSuperPacket(s);
  VnetHeader h = gsoHeaderFor(s);
  GetParam().mutate(h, p, s);
  EXPECT_EQ(checkVnetHeader(h, p), GetParam().expected) << toString(checkVnetHeader(h, p));
}

INSTANTIATE_TEST_SUITE_P(
    Each, VnetRefusal,
    ::testing::Values(
        Refusal{"UnknownFlag", [](VnetHeader& h, auto&, auto&) { h.flags |= 4; }, VnetError::kUnknownFlags},
        Refusal{"Ufo", [](VnetHeader& h, auto&, auto&) { h.gsoType = kGsoUdpUfo; }, VnetError::kUnknownGsoType},
        Refusal{"TypeSix", [](VnetHeader& h, auto&, auto&) { h.gsoType = 6; }, VnetError::kUnknownGsoType},
        Refusal{"EcnOnUdp", [](VnetHeader& h, auto&, auto&) { h.gsoType = kGsoUdpL4 | kGsoEcn; },
                VnetError::kEcnWithoutTcp},
        Refusal{"EcnWithoutGso", [](VnetHeader& h, auto&, auto&) { h.gsoType = kGsoEcn; },
                VnetError::kEcnWithoutTcp},
        Refusal{"GsoWithoutNeedsChecksum", [](VnetHeader& h, auto&, auto&) { h.flags = 0; },
                VnetError::kGsoWithoutNeedsChecksum},
        Refusal{"ZeroGsoSize", [](VnetHeader& h, auto&, auto&) { h.gsoSize = 0; }, VnetError::kZeroGsoSize},
        Refusal{"ChecksumPastTheEnd",
                [](VnetHeader& h, std::vector<std::uint8_t>& p, auto&) {
                  h.checksumOffset = static_cast<std::uint16_t>(p.size() - h.checksumStart - 1);
                },
                VnetError::kChecksumOutsidePacket},
        Refusal{"TruncatedPacket", [](VnetHeader&, std::vector<std::uint8_t>& p, auto&) { p.resize(p.size() - 1); },
                VnetError::kBadPacket},
        Refusal{"Fragment", [](VnetHeader&, std::vector<std::uint8_t>& p, auto&) { p[6] |= 0x20; },
                VnetError::kBadPacket},
        Refusal{"TcpV6OnIpv4", [](VnetHeader& h, auto&, auto&) { h.gsoType = kGsoTcpV6; },
                VnetError::kGsoProtocolMismatch},
        Refusal{"UdpL4OnTcp", [](VnetHeader& h, auto&, auto&) { h.gsoType = kGsoUdpL4; },
                VnetError::kGsoProtocolMismatch},
        Refusal{"ChecksumStartNotTcp", [](VnetHeader& h, auto&, auto&) { h.checksumStart = 0; },
                VnetError::kChecksumNotAtTransport},
        Refusal{"ChecksumOffsetNotTcp", [](VnetHeader& h, auto&, auto&) { h.checksumOffset = 6; },
                VnetError::kChecksumNotAtTransport},
        Refusal{"TooManySegments", [](VnetHeader& h, auto&, auto&) { h.gsoSize = 3; },
                VnetError::kTooManySegments}),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace ipsec::offload
