// AH tunnel mode with the tunnel details (ah.cpp, pmtu.cpp): the outer DF
// bit is written by frameTunnel but kept out of the ICV, and a signed packet
// cut into fragments by lib/esp/pmtu, then reassembled as a receiver does,
// canonicalises to the very bytes that were signed — so whatever MAC the
// broker computed, the receiver's check over its reassembled packet agrees.
// A fragment that took a new Identification would not (the ID is immutable).
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "ah_frame.h"
#include "esp/pmtu.h"

namespace ipsec::forwarder::ahframe {
namespace {

constexpr std::size_t kHeadroom = 128;
constexpr std::size_t kIcv = 12;  // HMAC-SHA1-96: AH is 24 bytes over IPv4 and IPv6

esp::IpAddress addr(const char* text) { return *esp::IpAddress::parse(text); }
std::uint16_t be16(const std::uint8_t* p) { return static_cast<std::uint16_t>(p[0] << 8 | p[1]); }

// An inner IPv4 packet of `total` bytes with a recognisable payload, at kHeadroom in a buffer.
std::vector<std::uint8_t> bufferWithInner(std::size_t total) {
  std::vector<std::uint8_t> buf(kHeadroom + total + 64, 0);
  std::uint8_t* p = buf.data() + kHeadroom;
  for (std::size_t i = 20; i < total; ++i) p[i] = static_cast<std::uint8_t>(i * 13);
  p[0] = 0x45;
  p[2] = static_cast<std::uint8_t>(total >> 8);
  p[3] = static_cast<std::uint8_t>(total);
  p[6] = 0x40;  // the inner sender's DF: copy policy would set the outer one
  p[8] = 64;
  p[9] = 17;
  const std::uint8_t src[] = {198, 51, 100, 1}, dst[] = {203, 0, 113, 1};
  std::memcpy(p + 12, src, 4);
  std::memcpy(p + 16, dst, 4);
  fixIpv4Checksum(p);
  return buf;
}

// What the forwarder does from frameAh to onAhSigned: frame, save, canonicalise,
// "sign" (a fixed ICV stands in for the broker's MAC), restore.
struct Signed {
  std::vector<std::uint8_t> packet;     // as sent, before fragmenting
  std::vector<std::uint8_t> canonical;  // what the MAC was computed over (ICV zero)
};

Signed signTunnel(std::size_t innerTotal, const Outer& outer) {
  auto buf = bufferWithInner(innerTotal);
  const Framed f = frameTunnel(buf, kHeadroom, innerTotal, outer, 0x5101, 7, kIcv);
  EXPECT_TRUE(f.ok());
  std::span<std::uint8_t> ip{buf.data() + f.start, f.length};
  const auto where = ah::locate(ip);
  EXPECT_TRUE(where.ok());
  ah::SavedHeaders saved;
  EXPECT_TRUE(saved.save(ip, where.ahOffset));
  const auto canon = ah::canonicalise(ip, kIcv, true);
  EXPECT_TRUE(canon.ok());
  Signed s;
  s.canonical.assign(ip.begin(), ip.end());
  for (std::size_t i = 0; i < kIcv; ++i) ip[canon.icvOffset + i] = static_cast<std::uint8_t>(0xa0 + i);
  saved.restore(ip);
  s.packet.assign(ip.begin(), ip.end());
  return s;
}

// The receiver's side for IPv4 (RFC 791 reassembly): the first fragment's
// header, the payloads in order, flags and offset cleared, length fixed; a
// router on the way took one off the TTL.
std::vector<std::uint8_t> reassemble4(const std::vector<std::uint8_t>& packet, std::span<const esp::Fragment> frags) {
  std::vector<std::uint8_t> out(frags[0].header.begin(), frags[0].header.begin() + 20);
  for (const auto& f : frags) {
    const std::size_t at = 20 + static_cast<std::size_t>(be16(f.header.data() + 6) & 0x1fff) * 8;
    if (out.size() < at + f.length) out.resize(at + f.length);
    std::memcpy(out.data() + at, packet.data() + f.offset, f.length);
  }
  out[2] = static_cast<std::uint8_t>(out.size() >> 8);
  out[3] = static_cast<std::uint8_t>(out.size());
  out[6] = out[7] = 0;
  out[8] -= 1;
  fixIpv4Checksum(out.data());
  return out;
}

std::vector<std::uint8_t> canonicalOf(std::vector<std::uint8_t> packet) {
  const auto canon = ah::canonicalise(packet, kIcv, true);
  EXPECT_TRUE(canon.ok());
  return packet;
}

TEST(AhTunnelDetails, TheOuterDfBitIsSentButNotSigned) {
  const Outer withDf{addr("192.0.2.1"), addr("192.0.2.2"), 0, 0x4242, 64, true};
  Outer without = withDf;
  without.dontFragment = false;
  const Signed a = signTunnel(200, withDf), b = signTunnel(200, without);
  EXPECT_EQ(be16(a.packet.data() + 6), 0x4000);
  EXPECT_EQ(be16(b.packet.data() + 6), 0);
  EXPECT_EQ(a.canonical, b.canonical) << "DF is mutable: the ICV must not depend on it";
  EXPECT_EQ(esp::checksumFinish(esp::checksumAdd(0, {a.packet.data(), 20})), 0) << "header checksum with DF";
}

TEST(AhTunnelDetails, Ipv4FragmentsOfASignedPacketReassembleToWhatWasSigned) {
  const Outer outer{addr("192.0.2.1"), addr("192.0.2.2"), 0, 0x4242, 64, false};
  const Signed s = signTunnel(1400, outer);  // 20 + 24 + 1400 = 1444 > 1280
  ASSERT_EQ(s.packet.size(), 1444u);
  std::array<esp::Fragment, 8> frags{};
  // As Forwarder::sendFragments cuts an IPv4 packet: with its own Identification.
  const std::size_t n = esp::fragmentPacket(s.packet, 1280, be16(s.packet.data() + 4), frags);
  ASSERT_EQ(n, 2u);
  for (std::size_t i = 0; i < n; ++i) {
    EXPECT_EQ(be16(frags[i].header.data() + 4), 0x4242) << "fragment " << i << " keeps the signed ID";
    EXPECT_LE(frags[i].headerLength + frags[i].length, 1280u);
  }
  const auto whole = reassemble4(s.packet, {frags.data(), n});
  EXPECT_EQ(canonicalOf(whole), s.canonical);
  // The ICV travelled intact.
  EXPECT_EQ(std::vector<std::uint8_t>(whole.begin() + 32, whole.begin() + 44),
            std::vector<std::uint8_t>(s.packet.begin() + 32, s.packet.begin() + 44));

  // Fragments with another Identification would reassemble into a packet whose ICV no longer verifies.
  esp::fragmentPacket(s.packet, 1280, 0x4243, frags);
  EXPECT_NE(canonicalOf(reassemble4(s.packet, {frags.data(), n})), s.canonical);
}

TEST(AhTunnelDetails, Ipv6FragmentsOfASignedPacketCarryAhAsTheirNextHeader) {
  const Outer outer{addr("2001:db8:1::1"), addr("2001:db8:1::2"), 0, 1, 64, false};
  const Signed s = signTunnel(1400, outer);  // 40 + 24 + 1400
  std::array<esp::Fragment, 8> frags{};
  const std::size_t n = esp::fragmentPacket(s.packet, 1280, 77, frags);
  ASSERT_EQ(n, 2u);
  // Reassembled (RFC 8200 §4.5): the unfragmentable part, its next header from the fragment header.
  std::vector<std::uint8_t> whole(frags[0].header.begin(), frags[0].header.begin() + 40);
  EXPECT_EQ(frags[0].header[6], 44);
  whole[6] = frags[0].header[40];
  EXPECT_EQ(whole[6], ah::kProtoAh);
  for (std::size_t i = 0; i < n; ++i) {
    whole.insert(whole.end(), s.packet.begin() + frags[i].offset, s.packet.begin() + frags[i].offset + frags[i].length);
  }
  whole[4] = static_cast<std::uint8_t>((whole.size() - 40) >> 8);
  whole[5] = static_cast<std::uint8_t>(whole.size() - 40);
  whole[7] -= 1;  // hop limit: mutable
  EXPECT_EQ(canonicalOf(whole), s.canonical);
}

}  // namespace
}  // namespace ipsec::forwarder::ahframe
