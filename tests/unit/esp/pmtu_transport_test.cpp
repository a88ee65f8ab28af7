// lib/esp/pmtu for transport mode (the forwarder's transport.cpp, ah.cpp and
// the ESP+AH bundle): the largest host packet that fits an SA's MTU once ESP
// (and AH, UDP) are added behind its kept header, and fragments of a real
// transport-mode ESP packet built by encapsulateTransport that put the
// packet back together; IPv6 headers that must stay in front are refused.
#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <vector>

#include "esp/pmtu.h"
#include "esp/transport.h"

namespace ipsec::esp {
namespace {

uint16_t be16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }

// A host's IPv4 UDP packet of `total` bytes from 192.0.2.1 to 192.0.2.2, DF clear, ID 0x1234.
std::vector<uint8_t> hostIpv4(size_t total) {
  std::vector<uint8_t> p(total);
  for (size_t i = 0; i < total; ++i) p[i] = static_cast<uint8_t>(i * 3 + 1);
  const uint8_t head[20] = {0x45, 0, static_cast<uint8_t>(total >> 8), static_cast<uint8_t>(total), 0x12, 0x34, 0, 0,
                            64,   17, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2};
  std::memcpy(p.data(), head, sizeof head);
  return p;
}

std::vector<uint8_t> hostIpv6(size_t total, uint8_t next) {
  std::vector<uint8_t> p(total);
  for (size_t i = 0; i < total; ++i) p[i] = static_cast<uint8_t>(i * 5 + 2);
  p[0] = 0x60;
  p[1] = p[2] = p[3] = 0;
  p[4] = static_cast<uint8_t>((total - 40) >> 8);
  p[5] = static_cast<uint8_t>(total - 40);
  p[6] = next;
  p[7] = 64;
  return p;
}

TEST(MaxTransportLength, IsTheLargestHostPacketWhoseEspFormFits) {
  for (EspLayout l : {EspLayout{8, 16, 4}, EspLayout{16, 16, 16}, EspLayout{0, 12, 4}}) {
    for (size_t mtu : {576u, 1280u, 1400u, 1500u}) {
      for (size_t header : {20u, 24u, 40u, 64u}) {
        for (size_t extra : {0u, 8u, 24u}) {
          const size_t most = maxTransportLength(&l, mtu, header, extra);
          ASSERT_GT(most, header);
          // What goes on the wire: the kept header, ESP around the rest, the extra bytes.
          EXPECT_LE(header + espPacketLength(l, most - header) + extra, mtu) << mtu << " " << header;
          EXPECT_GT(header + espPacketLength(l, most + 1 - header) + extra, mtu) << mtu << " " << header;
        }
      }
    }
  }
}

TEST(MaxTransportLength, WithoutEspIsTheMtuLessWhatIsAdded) {
  EXPECT_EQ(maxTransportLength(nullptr, 1400, 20, 24), 1376u);  // AH with a 12-byte ICV over IPv4
  EXPECT_EQ(maxTransportLength(nullptr, 1280, 40, 32), 1248u);
  EXPECT_EQ(maxTransportLength(nullptr, 40, 20, 24), 0u);
}

TEST(MaxTransportLength, IsZeroWhenNothingFits) {
  const EspLayout l{16, 16, 16};
  EXPECT_EQ(maxTransportLength(&l, 60, 20, 0), 0u);
}

TEST(TransportFragments, AnEspTransportPacketCutAtTheMtuReassemblesToItself) {
  const EspLayout l{16, 16, 16};
  const auto host = hostIpv4(1400);
  const size_t headroom = 64;
  std::vector<uint8_t> buf(headroom + host.size() + 128);
  std::memcpy(buf.data() + headroom, host.data(), host.size());
  const auto split = transportSplit(host);
  ASSERT_TRUE(split);
  const auto r = encapsulateTransport(buf, headroom, host.size(), 0x1000, 7, l, *split);
  ASSERT_TRUE(r.ok());
  const std::span<const uint8_t> packet(buf.data() + r.headerOffset, r.headerLength + r.espLength);
  EXPECT_GT(packet.size(), 1400u);
  std::array<Fragment, 8> frags;
  const size_t n = fragmentPacket(packet, 1400, be16(packet.data() + 4), frags);
  ASSERT_EQ(n, 2u);
  std::vector<uint8_t> back(packet.begin(), packet.begin() + 20);
  for (size_t i = 0; i < n; ++i) {
    const uint8_t* h = frags[i].header.data();
    EXPECT_LE(frags[i].headerLength + frags[i].length, 1400u);
    EXPECT_EQ(be16(h + 4), 0x1234) << "the host's own Identification";
    EXPECT_EQ(h[9], 50);
    EXPECT_EQ(std::memcmp(h + 12, packet.data() + 12, 8), 0);
    EXPECT_EQ((be16(h + 6) & 0x1fff) * 8u, back.size() - 20);
    back.insert(back.end(), packet.begin() + frags[i].offset, packet.begin() + frags[i].offset + frags[i].length);
  }
  EXPECT_TRUE(std::equal(back.begin() + 20, back.end(), packet.begin() + 20, packet.end()));
}

TEST(TransportFragments, Ipv6WithAhOrEspRightAfterTheHeaderIsCut) {
  std::array<Fragment, 8> frags;
  for (uint8_t next : {uint8_t{50}, uint8_t{51}}) {
    const auto packet = hostIpv6(1400, next);
    const size_t n = fragmentPacket(packet, 1280, 9, frags);
    ASSERT_EQ(n, 2u);
    EXPECT_EQ(frags[0].header[40], next);
  }
}

TEST(TransportFragments, Ipv6HeadersThatMustStayInFrontAreRefused) {
  std::array<Fragment, 8> frags;
  // Hop-by-hop, routing, fragment, destination options: the fragment header
  // would have to go after them; refused rather than put in the wrong place.
  for (uint8_t next : {uint8_t{0}, uint8_t{43}, uint8_t{44}, uint8_t{60}}) {
    const auto packet = hostIpv6(1400, next);
    EXPECT_EQ(fragmentPacket(packet, 1280, 9, frags), 0u) << int{next};
  }
}

}  // namespace
}  // namespace ipsec::esp
