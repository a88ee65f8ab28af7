// Packets and crypto for the forwarder's packet-core tests (InboundCore,
// InboundOpen, TunnelFrameCore): a host's inner packet as the TUN gives it,
// and a real AES-GCM-128 transform pair from lib/cryptodrv to seal and open
// with, so the core is driven by the bytes the broker would produce.
#pragma once

#include <gtest/gtest.h>
#include <linux/pfkeyv2.h>
#include <netinet/in.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cryptodrv/driver.h"
#include "esp/esp.h"
#include "esp/transport.h"

namespace ipsec::forwarder::core_packets {

inline constexpr std::array<std::uint8_t, 20> kKey{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
                                                   0xa, 0xb, 0xc, 0xd};

// A host's IPv4 packet (ICMP echo 198.51.100.1 -> 203.0.113.1, `payload` bytes
// of 'x', TOS tos, DF if asked, a correct header checksum) or IPv6
// (2001:db8:a::1 -> 2001:db8:b::1, ICMPv6 echo).
inline std::vector<std::uint8_t> innerPacket(int version, std::size_t payload = 8, std::uint8_t tos = 0,
                                             bool df = false) {
  if (version == 4) {
    const std::size_t total = 20 + 8 + payload;
    std::vector<std::uint8_t> p{0x45, tos, static_cast<std::uint8_t>(total >> 8), static_cast<std::uint8_t>(total),
                                0,    1,   static_cast<std::uint8_t>(df ? 0x40 : 0), 0, 64, 1, 0, 0, 198, 51, 100, 1,
                                203,  0,   113, 1, 8, 0, 0, 0, 0, 7, 0, 1};
    p.resize(total, 'x');
    const std::uint16_t sum = esp::ipv4HeaderChecksum({p.data(), 20});
    p[10] = static_cast<std::uint8_t>(sum >> 8);
    p[11] = static_cast<std::uint8_t>(sum);
    return p;
  }
  std::vector<std::uint8_t> p(40 + 8 + payload, 'x');
  p[0] = static_cast<std::uint8_t>(0x60 | tos >> 4);
  p[1] = static_cast<std::uint8_t>((tos & 0x0f) << 4);
  p[2] = p[3] = 0;
  p[4] = static_cast<std::uint8_t>((8 + payload) >> 8);
  p[5] = static_cast<std::uint8_t>(8 + payload);
  p[6] = 58;
  p[7] = 64;
  // The addresses outlive the views of their bytes.
  const esp::IpAddress src = *esp::IpAddress::parse("2001:db8:a::1"), dst = *esp::IpAddress::parse("2001:db8:b::1");
  const auto s = src.bytes(), d = dst.bytes();
  std::copy(s.begin(), s.end(), p.begin() + 8);
  std::copy(d.begin(), d.end(), p.begin() + 24);
  std::fill(p.begin() + 40, p.begin() + 48, 0);
  p[40] = 128;  // echo request
  return p;
}

// Wire checks written here, independent of lib/esp's checksum code: the
// send cores' tests verify what they wrote with these.
inline std::uint16_t be16(const std::uint8_t* p) { return static_cast<std::uint16_t>(p[0] << 8 | p[1]); }
inline std::uint32_t be32(const std::uint8_t* p) {
  return static_cast<std::uint32_t>(p[0]) << 24 | p[1] << 16 | p[2] << 8 | p[3];
}

// RFC 1071 one's-complement sum of 16-bit words, continued from `sum`.
inline std::uint32_t addWords(std::uint32_t sum, const std::uint8_t* p, std::size_t n) {
  for (std::size_t i = 0; i + 1 < n; i += 2) sum += be16(p + i);
  if (n % 2) sum += static_cast<std::uint32_t>(p[n - 1]) << 8;
  return sum;
}
inline std::uint16_t fold(std::uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<std::uint16_t>(sum);
}
inline bool ipv4ChecksumOk(const std::uint8_t* h) { return fold(addWords(0, h, 20)) == 0xffff; }

// The UDP checksum over IPv6 (RFC 8200 §8.1 pseudo-header) verifies: the
// sum over pseudo-header and datagram, checksum field included, is all ones.
inline bool udp6ChecksumOk(const std::uint8_t* ip6, const std::uint8_t* udp, std::size_t udpLength) {
  std::uint32_t sum = addWords(0, ip6 + 8, 32);  // source and destination
  sum += static_cast<std::uint32_t>(udpLength >> 16) + static_cast<std::uint32_t>(udpLength & 0xffff);
  sum += IPPROTO_UDP;
  sum = addWords(sum, udp, udpLength);
  return fold(sum) == 0xffff;
}

// A fixture with the real driver's AES-GCM-128 (ICV 16) under kKey: one
// transform seals, another opens, as the two ends' brokers would.
class GcmCore : public testing::Test {
 protected:
  void SetUp() override {
    std::string error;
    const cryptodrv::TransformSpec spec{SADB_X_EALG_AES_GCM_ICV16, SADB_AALG_NONE, kKey, {}, false, false};
    sealer_ = cryptodrv::makeTransform(spec, &error);
    opener_ = cryptodrv::makeTransform(spec, &error);
    ASSERT_TRUE(sealer_ && opener_) << error;
    layout_ = {sealer_->ivLength(), sealer_->icvLength(), sealer_->padAlign()};
  }

  std::unique_ptr<cryptodrv::Transform> sealer_, opener_;
  esp::EspLayout layout_;
};

}  // namespace ipsec::forwarder::core_packets
