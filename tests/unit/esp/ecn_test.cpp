// RFC 6040 on tunnel headers: the decapsulation table, and CE marking that
// keeps the IPv4 header checksum right.
#include "esp/ecn.h"

#include <gtest/gtest.h>

#include <array>
#include <cstdint>

namespace ipsec::esp {
namespace {

std::uint16_t headerChecksum(const std::uint8_t* h, std::size_t len) {
  std::uint32_t sum = 0;
  for (std::size_t i = 0; i < len; i += 2) sum += static_cast<std::uint32_t>((h[i] << 8) | h[i + 1]);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<std::uint16_t>(~sum);
}

TEST(Ecn, DecapsulationFollowsTheRfc6040Table) {
  constexpr std::uint8_t notEct = 0, ect1 = 1, ect0 = 2, ce = 3;
  for (std::uint8_t inner : {notEct, ect1, ect0, ce}) {
    for (std::uint8_t outer : {notEct, ect1, ect0}) EXPECT_EQ(ecnDecapsulate(outer, inner), EcnAction::kKeep);
  }
  EXPECT_EQ(ecnDecapsulate(ce, notEct), EcnAction::kDrop);
  EXPECT_EQ(ecnDecapsulate(ce, ect0), EcnAction::kSetCe);
  EXPECT_EQ(ecnDecapsulate(ce, ect1), EcnAction::kSetCe);
  EXPECT_EQ(ecnDecapsulate(ce, ce), EcnAction::kKeep);
  EXPECT_EQ(ecnDecapsulate(0xb8 | ce, 0x28 | ect0), EcnAction::kSetCe) << "DSCP bits are not ECN";
}

TEST(Ecn, MarkingAnIpv4PacketKeepsItsChecksumValid) {
  std::array<std::uint8_t, 20> h = {0x45, 0xb8 | 0x02, 0, 84, 0x12, 0x34, 0x40, 0, 64, 1, 0, 0,
                                    198,  51,          100, 1, 203,  0,    113, 1};
  const std::uint16_t c = headerChecksum(h.data(), h.size());
  h[10] = static_cast<std::uint8_t>(c >> 8);
  h[11] = static_cast<std::uint8_t>(c);
  ASSERT_EQ(headerChecksum(h.data(), h.size()), 0);
  ASSERT_TRUE(markCe(h));
  EXPECT_EQ(h[1], 0xb8 | 0x03);
  EXPECT_EQ(headerChecksum(h.data(), h.size()), 0);
}

TEST(Ecn, MarkingAnIpv6PacketSetsTheTrafficClassLowBits) {
  std::array<std::uint8_t, 40> h{};
  h[0] = 0x6b;  // version 6, traffic class high nibble 0xb
  h[1] = 0x80;  // traffic class low nibble 0x8: class 0xb8, Not-ECT
  EXPECT_EQ(trafficClass(h), 0xb8);
  ASSERT_TRUE(markCe(h));
  EXPECT_EQ(trafficClass(h), 0xbb);
}

TEST(Ecn, ReadsTheTosOfEitherFamilyAndRefusesRunts) {
  const std::uint8_t v4[20] = {0x45, 0x2a};
  EXPECT_EQ(trafficClass(v4), 0x2a);
  const std::uint8_t one[1] = {0x45};
  EXPECT_EQ(trafficClass(one), 0);
  std::uint8_t shortV4[10] = {0x45, 0};
  EXPECT_FALSE(markCe(shortV4));
}

}  // namespace
}  // namespace ipsec::esp
