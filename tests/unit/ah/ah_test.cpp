// lib/ah on byte arrays. Known answers come from scapy (vectors.inc): each
// packet it signed is canonicalised by lib/ah, compared byte for byte with
// scapy's own canonical form, and MACed here with OpenSSL's EVP_Q_mac (no
// lib/cryptodrv code), which must give scapy's ICV. Where scapy and RFC 4302
// part ways (IPv4 source routes: scapy leaves the destination as sent; RFC
// 4302 §3.3.3.1.1.1 makes it the route's last address), hand-made packets
// test the RFC's answer instead.
#include "ah/ah.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <cstring>
#include <string>
#include <vector>

namespace ipsec::ah {
namespace {

struct ScapyAhVector {
  const char* name;
  int authAlg;  // PF_KEY id
  const char* keyHex;
  size_t icvLength;
  bool esn;
  uint32_t seqHigh;
  const char* packetHex;
  const char* canonicalHex;
};
#include "vectors.inc"

std::vector<uint8_t> fromHex(std::string_view hex) {
  std::vector<uint8_t> out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    out.push_back(static_cast<uint8_t>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
  return out;
}

std::vector<uint8_t> mac(int authAlg, const std::vector<uint8_t>& key, const std::vector<uint8_t>& data) {
  const char* name = "HMAC";
  const char* sub = nullptr;
  switch (authAlg) {
    case 2: sub = "MD5"; break;   // SADB_AALG_MD5HMAC
    case 3: sub = "SHA1"; break;  // SADB_AALG_SHA1HMAC
    case 5: sub = "SHA256"; break;
    case 6: sub = "SHA384"; break;
    case 7: sub = "SHA512"; break;
    case 250: name = "CMAC"; sub = "AES-128-CBC"; break;
  }
  std::vector<uint8_t> out(64);
  size_t outLen = 0;
  const bool ok = EVP_Q_mac(nullptr, name, nullptr, sub, nullptr, key.data(), key.size(), data.data(), data.size(),
                            out.data(), out.size(), &outLen) != nullptr;
  EXPECT_TRUE(ok);
  out.resize(outLen);
  return out;
}

TEST(AhScapy, CanonicalFormMatchesScapyAndItsIcvVerifies) {
  for (const auto& v : kScapyAh) {
    SCOPED_TRACE(v.name);
    auto packet = fromHex(v.packetHex);
    const auto sent = packet;
    const auto canonical = fromHex(v.canonicalHex);
    const AhLocation where = locate(packet);
    ASSERT_TRUE(where.ok()) << toString(where.error);
    EXPECT_EQ(where.packetLength, packet.size());
    const std::vector<uint8_t> icv(packet.begin() + where.icvOffset, packet.begin() + where.icvOffset + v.icvLength);

    SavedHeaders saved;
    ASSERT_TRUE(saved.save(packet, where.ahOffset));
    const AhLocation c = canonicalise(packet, v.icvLength, true);
    ASSERT_TRUE(c.ok()) << toString(c.error);
    EXPECT_EQ(c.icvOffset, where.icvOffset);
    EXPECT_EQ(packet, canonical);

    std::vector<uint8_t> input = packet;
    if (v.esn) {  // RFC 4302 §2.5.1 / App. B: the high 32 bits follow the packet
      const uint8_t hi[4] = {static_cast<uint8_t>(v.seqHigh >> 24), static_cast<uint8_t>(v.seqHigh >> 16),
                             static_cast<uint8_t>(v.seqHigh >> 8), static_cast<uint8_t>(v.seqHigh)};
      input.insert(input.end(), hi, hi + 4);
    }
    auto full = mac(v.authAlg, fromHex(v.keyHex), input);
    ASSERT_GE(full.size(), v.icvLength);
    full.resize(v.icvLength);
    EXPECT_EQ(full, icv);

    saved.restore(packet);
    std::memcpy(packet.data() + c.icvOffset, icv.data(), icv.size());
    EXPECT_EQ(packet, sent);
  }
}

TEST(AhScapy, WriteHeaderBuildsScapysHeader) {
  for (const auto& v : kScapyAh) {
    SCOPED_TRACE(v.name);
    const auto packet = fromHex(v.packetHex);
    const AhLocation where = locate(packet);
    ASSERT_TRUE(where.ok());
    ASSERT_EQ(checkLength(where.header, v.icvLength, where.ipv6), AhError::kOk);
    std::vector<uint8_t> ours(headerLength(v.icvLength, where.ipv6));
    size_t written = 0;
    ASSERT_EQ(writeHeader(ours, where.header.nextHeader, where.header.spi, where.header.seqLow, v.icvLength, where.ipv6,
                          &written),
              AhError::kOk);
    ASSERT_EQ(written, where.header.length());
    std::vector<uint8_t> theirs(packet.begin() + where.ahOffset, packet.begin() + where.ahOffset + written);
    std::memset(theirs.data() + kIcvOffset, 0, v.icvLength);  // ours leaves the ICV zero
    EXPECT_EQ(ours, theirs);
  }
}

TEST(AhScapy, ATamperedImmutableByteChangesTheCanonicalForm) {
  // The test above could pass if canonicalise zeroed everything: flip an
  // immutable byte (the last payload byte) and a mutable one (TTL/hop limit).
  const auto& v = kScapyAh[0];
  auto a = fromHex(v.packetHex);
  ASSERT_GT(a.size(), 100u);
  auto b = a;
  b[a.size() - 1] ^= 1;
  auto c = a;
  c[c[0] >> 4 == 4 ? 8 : 7] ^= 0x55;
  ASSERT_TRUE(canonicalise(a, v.icvLength, true).ok());
  ASSERT_TRUE(canonicalise(b, v.icvLength, true).ok());
  ASSERT_TRUE(canonicalise(c, v.icvLength, true).ok());
  EXPECT_NE(a, b);
  EXPECT_EQ(a, c);
}

// A hand-made IPv4 packet: 20-byte header + options, AH (ICV 12), 8 payload bytes.
std::vector<uint8_t> ipv4WithOptions(const std::vector<uint8_t>& options) {
  const size_t ihl = 20 + options.size();
  const size_t total = ihl + 24 + 8;
  std::vector<uint8_t> p = {static_cast<uint8_t>(0x40 | ihl / 4), 0xb8, static_cast<uint8_t>(total >> 8),
                            static_cast<uint8_t>(total), 0x12, 0x34, 0x40, 0x00, 64, kProtoAh, 0xAB, 0xCD,
                            192, 0, 2, 1, 192, 0, 2, 2};
  p.insert(p.end(), options.begin(), options.end());
  std::vector<uint8_t> ah(24);
  size_t n = 0;
  EXPECT_EQ(writeHeader(ah, 17, 0x100, 1, 12, false, &n), AhError::kOk);
  for (size_t i = 12; i < 24; ++i) ah[i] = 0x99;  // a received ICV
  p.insert(p.end(), ah.begin(), ah.end());
  for (int i = 0; i < 8; ++i) p.push_back(static_cast<uint8_t>(i));
  return p;
}

TEST(AhIpv4, ZeroesMutableBaseFieldsAndKeepsTheRest) {
  auto p = ipv4WithOptions({});
  const auto before = p;
  const AhLocation c = canonicalise(p, 12, false);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(p[1], 0);   // TOS
  EXPECT_EQ(p[6], 0);   // flags
  EXPECT_EQ(p[8], 0);   // TTL
  EXPECT_EQ(p[10], 0);  // checksum
  EXPECT_EQ(p[11], 0);
  EXPECT_EQ(p[4], 0x12);  // identification kept
  EXPECT_EQ(p[9], kProtoAh);
  EXPECT_EQ(0, std::memcmp(p.data() + 12, before.data() + 12, 8));  // addresses
  // zeroIcv false: the broker's kAhVerify reads the ICV itself.
  EXPECT_EQ(p[c.icvOffset], 0x99);
  auto q = before;
  canonicalise(q, 12, true);
  EXPECT_EQ(q[c.icvOffset], 0);
  EXPECT_EQ(q[c.icvOffset + 11], 0);
}

TEST(AhIpv4, ZeroesMutableOptionsWholeAndKeepsImmutableOnes) {
  // NOP, Timestamp (68, mutable), Router Alert (148, immutable), unknown 222 (mutable), EOL.
  const std::vector<uint8_t> opts = {1, 68, 8, 5, 0, 1, 2, 3, 4, 148, 4, 0, 0, 222, 3, 7, 0, 0, 0, 0};
  auto p = ipv4WithOptions(opts);
  ASSERT_TRUE(canonicalise(p, 12, true).ok());
  const std::vector<uint8_t> expected = {1, 0, 0, 0, 0, 0, 0, 0, 0, 148, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  EXPECT_EQ(std::vector<uint8_t>(p.begin() + 20, p.begin() + 40), expected);
}

TEST(AhIpv4, LooseSourceRoutePredictsTheFinalDestination) {
  // LSRR with two hops left: 198.51.100.7, then 203.0.113.9 (final). Pointer 4.
  const std::vector<uint8_t> opts = {1, 131, 11, 4, 198, 51, 100, 7, 203, 0, 113, 9};
  auto p = ipv4WithOptions(opts);
  ASSERT_TRUE(canonicalise(p, 12, true).ok());
  EXPECT_EQ(std::vector<uint8_t>(p.begin() + 16, p.begin() + 20), (std::vector<uint8_t>{203, 0, 113, 9}));
  EXPECT_EQ(std::vector<uint8_t>(p.begin() + 21, p.begin() + 32), std::vector<uint8_t>(11, 0));
  // At the destination the route is used up (pointer > length): dst stays.
  auto done = ipv4WithOptions({1, 137, 11, 12, 198, 51, 100, 7, 203, 0, 113, 9});
  ASSERT_TRUE(canonicalise(done, 12, true).ok());
  EXPECT_EQ(std::vector<uint8_t>(done.begin() + 16, done.begin() + 20), (std::vector<uint8_t>{192, 0, 2, 2}));
}

TEST(AhIpv4, RejectsBadOptionLengthsWithoutTouchingThePacket) {
  for (const auto& opts : {std::vector<uint8_t>{7, 0, 0, 0}, std::vector<uint8_t>{7, 1, 0, 0},
                           std::vector<uint8_t>{1, 1, 1, 7}, std::vector<uint8_t>{7, 9, 0, 0}}) {
    auto p = ipv4WithOptions(opts);
    const auto before = p;
    EXPECT_EQ(canonicalise(p, 12, true).error, AhError::kBadIpv4Options);
    EXPECT_EQ(p, before);
  }
}

TEST(AhIpv4, RejectsFragmentsOtherProtocolsAndBadHeaders) {
  auto frag = ipv4WithOptions({});
  frag[6] = 0x20;  // MF
  EXPECT_EQ(locate(frag).error, AhError::kFragment);
  auto offset = ipv4WithOptions({});
  offset[7] = 1;
  EXPECT_EQ(locate(offset).error, AhError::kFragment);
  auto udp = ipv4WithOptions({});
  udp[9] = 17;
  EXPECT_EQ(locate(udp).error, AhError::kNoAh);
  auto ihl = ipv4WithOptions({});
  ihl[0] = 0x44;
  EXPECT_EQ(locate(ihl).error, AhError::kBadIpHeader);
  auto longer = ipv4WithOptions({});
  longer[3] += 1;
  EXPECT_EQ(locate(longer).error, AhError::kBadIpHeader);
  auto p = ipv4WithOptions({});
  EXPECT_EQ(locate(std::span<const uint8_t>(p.data(), 19)).error, AhError::kTruncated);
  EXPECT_EQ(locate({}).error, AhError::kTruncated);
  auto v5 = ipv4WithOptions({});
  v5[0] = 0x55;
  EXPECT_EQ(locate(v5).error, AhError::kBadIpHeader);
}

TEST(AhHeader, ChecksLengthAgainstTheSaAndFamily) {
  auto p = ipv4WithOptions({});
  AhLocation l = locate(p);
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(checkLength(l.header, 12, false), AhError::kOk);
  EXPECT_EQ(checkLength(l.header, 16, false), AhError::kBadLength);
  EXPECT_EQ(canonicalise(p, 16, true).error, AhError::kBadLength);
  EXPECT_EQ(checkLength(l.header, 0, false), AhError::kBadIcvLength);
  EXPECT_EQ(headerLength(12, false), 24u);
  EXPECT_EQ(headerLength(12, true), 24u);
  EXPECT_EQ(headerLength(16, false), 28u);
  EXPECT_EQ(headerLength(16, true), 32u);
  EXPECT_EQ(headerLength(24, true), 40u);
  EXPECT_EQ(headerLength(32, true), 48u);
}

TEST(AhHeader, RejectsReservedSpiShortHeaderAndOverlongPayloadLength) {
  auto p = ipv4WithOptions({});
  auto spi0 = p;
  std::memset(spi0.data() + 20 + 4, 0, 4);
  EXPECT_EQ(locate(spi0).error, AhError::kReservedSpi);
  auto big = p;
  big[21] = 200;
  EXPECT_EQ(locate(big).error, AhError::kTruncated);
  auto zero = p;
  zero[21] = 0;
  EXPECT_EQ(locate(zero).error, AhError::kBadLength);
  uint8_t shortAh[11] = {};
  AhHeader h;
  EXPECT_EQ(parseHeader(shortAh, h), AhError::kTruncated);
  uint8_t small[8];
  EXPECT_EQ(writeHeader(small, 4, 1, 1, 12, false, nullptr), AhError::kNoHeadroom);
  uint8_t room[64];
  EXPECT_EQ(writeHeader(room, 4, 1, 1, 33, false, nullptr), AhError::kBadIcvLength);
}

// IPv6: a 40-byte header, then the given extension headers, then AH (ICV 12), 8 payload bytes.
std::vector<uint8_t> ipv6With(uint8_t firstNh, const std::vector<uint8_t>& ext) {
  std::vector<uint8_t> p(40, 0);
  p[0] = 0x6b;
  p[1] = 0x81;
  p[2] = 0x23;
  p[3] = 0x45;
  p[6] = firstNh;
  p[7] = 64;
  p[8] = 0x20; p[9] = 0x01; p[10] = 0x0d; p[11] = 0xb8; p[23] = 1;
  p[24] = 0x20; p[25] = 0x01; p[26] = 0x0d; p[27] = 0xb8; p[39] = 2;
  for (uint8_t b : ext) p.push_back(b);  // (insert() trips GCC 12's -Warray-bounds)
  std::vector<uint8_t> ah(24);
  EXPECT_EQ(writeHeader(ah, 17, 0x200, 3, 12, true, nullptr), AhError::kOk);
  p.insert(p.end(), ah.begin(), ah.end());
  for (int i = 0; i < 8; ++i) p.push_back(static_cast<uint8_t>(0xF0 + i));
  const size_t plen = p.size() - 40;
  p[4] = static_cast<uint8_t>(plen >> 8);
  p[5] = static_cast<uint8_t>(plen);
  return p;
}

std::vector<uint8_t> addr(uint8_t last) {
  std::vector<uint8_t> a = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, last};
  return a;
}

std::vector<uint8_t> routing0(uint8_t nh, uint8_t segLeft, std::initializer_list<uint8_t> lasts) {
  std::vector<uint8_t> rh = {nh, static_cast<uint8_t>(2 * lasts.size()), 0, segLeft, 0, 0, 0, 0};
  for (uint8_t l : lasts) {
    const auto a = addr(l);
    rh.insert(rh.end(), a.begin(), a.end());
  }
  return rh;
}

TEST(AhIpv6, ZeroesTrafficClassFlowLabelHopLimit) {
  auto p = ipv6With(kProtoAh, {});
  ASSERT_TRUE(canonicalise(p, 12, true).ok());
  EXPECT_EQ(p[0], 0x60);
  EXPECT_EQ(p[1], 0);
  EXPECT_EQ(p[2], 0);
  EXPECT_EQ(p[3], 0);
  EXPECT_EQ(p[7], 0);
  EXPECT_EQ(p[6], kProtoAh);
}

TEST(AhIpv6, RotatesARoutingHeaderWithHopsLeftIntoItsFinalForm) {
  // Three addresses, two segments left: ::5 was visited (swapped in at the
  // last hop), the packet goes to ::2 now (dst), then ::6, then ::7.
  auto p = ipv6With(43, routing0(kProtoAh, 2, {5, 6, 7}));
  ASSERT_TRUE(canonicalise(p, 12, true).ok());
  EXPECT_EQ(std::vector<uint8_t>(p.begin() + 24, p.begin() + 40), addr(7));
  EXPECT_EQ(p[40 + 3], 0);
  EXPECT_EQ(std::vector<uint8_t>(p.begin() + 48, p.begin() + 64), addr(5));
  EXPECT_EQ(std::vector<uint8_t>(p.begin() + 64, p.begin() + 80), addr(2));
  EXPECT_EQ(std::vector<uint8_t>(p.begin() + 80, p.begin() + 96), addr(6));
}

TEST(AhIpv6, LeavesAFinishedRoutingHeaderAlone) {
  auto p = ipv6With(43, routing0(kProtoAh, 0, {5, 6}));
  auto expected = p;
  ASSERT_TRUE(canonicalise(p, 12, true).ok());
  EXPECT_EQ(std::vector<uint8_t>(p.begin() + 40, p.begin() + 80), std::vector<uint8_t>(expected.begin() + 40, expected.begin() + 80));
}

TEST(AhIpv6, RejectsBadRoutingHeaders) {
  auto tooMany = ipv6With(43, routing0(kProtoAh, 3, {5, 6}));
  EXPECT_EQ(canonicalise(tooMany, 12, true).error, AhError::kBadRoutingHeader);
  auto odd = ipv6With(43, routing0(kProtoAh, 1, {5, 6}));
  odd[41] = 3;  // hdr ext len odd: header length 32, but addresses would not fit evenly
  // Length 3 → 32 bytes, shorter than the 40 bytes written: AH is no longer where it was.
  EXPECT_NE(canonicalise(odd, 12, true).error, AhError::kOk);
  auto srh = ipv6With(43, routing0(kProtoAh, 1, {5, 6}));
  srh[42] = 4;  // Segment Routing Header: not predicted
  const auto before = srh;
  EXPECT_EQ(canonicalise(srh, 12, true).error, AhError::kUnsupportedRouting);
  EXPECT_EQ(srh, before);
  auto type2 = ipv6With(43, routing0(kProtoAh, 1, {5, 6}));
  type2[42] = 2;  // type 2 carries exactly one address
  EXPECT_EQ(canonicalise(type2, 12, true).error, AhError::kBadRoutingHeader);
}

TEST(AhIpv6, ZeroesOnlyChangeEnRouteOptionData) {
  // Hop-by-hop (8 bytes): Pad1, option 0x05 (immutable) AA BB, Pad1; then
  // destination options (8 bytes): option 0x3e (may change) 11 22 33 44.
  const std::vector<uint8_t> ext = {60, 0, 0, 0x05, 2, 0xAA, 0xBB, 0,
                                    kProtoAh, 0, 0x3e, 4, 0x11, 0x22, 0x33, 0x44};
  auto p = ipv6With(0, ext);
  ASSERT_TRUE(canonicalise(p, 12, true).ok());
  EXPECT_EQ(std::vector<uint8_t>(p.begin() + 40, p.begin() + 56),
            (std::vector<uint8_t>{60, 0, 0, 0x05, 2, 0xAA, 0xBB, 0, kProtoAh, 0, 0x3e, 4, 0, 0, 0, 0}));
}

TEST(AhIpv6, RejectsMalformedExtensionHeaders) {
  // An option TLV running past the header.
  auto tlv = ipv6With(0, {kProtoAh, 0, 0x05, 9, 0, 0, 0, 0});
  EXPECT_EQ(canonicalise(tlv, 12, true).error, AhError::kBadExtensionHeader);
  // Hop-by-hop not first.
  auto late = ipv6With(60, {0, 0, 1, 4, 0, 0, 0, 0, kProtoAh, 0, 1, 4, 0, 0, 0, 0});
  EXPECT_EQ(locate(late).error, AhError::kBadExtensionHeader);
  // A fragment header.
  auto frag = ipv6With(44, {kProtoAh, 0, 0, 1, 0, 0, 0, 9});
  EXPECT_EQ(locate(frag).error, AhError::kFragment);
  // Nine destination-options headers.
  std::vector<uint8_t> nine;
  for (int i = 0; i < 9; ++i) {
    const uint8_t nh = i == 8 ? kProtoAh : 60;
    nine.insert(nine.end(), {nh, 0, 1, 4, 0, 0, 0, 0});
  }
  auto many = ipv6With(60, nine);
  EXPECT_EQ(locate(many).error, AhError::kTooManyExtHeaders);
  // An extension header longer than the packet.
  auto longer = ipv6With(60, {kProtoAh, 200, 1, 4, 0, 0, 0, 0});
  EXPECT_EQ(locate(longer).error, AhError::kTruncated);
  // Payload length beyond the buffer, and 0 (jumbogram).
  auto plen = ipv6With(kProtoAh, {});
  plen[5] += 1;
  EXPECT_EQ(locate(plen).error, AhError::kBadIpHeader);
  auto jumbo = ipv6With(kProtoAh, {});
  jumbo[4] = jumbo[5] = 0;
  EXPECT_EQ(locate(jumbo).error, AhError::kBadIpHeader);
  // No AH at all.
  auto udp = ipv6With(17, {});
  EXPECT_EQ(locate(udp).error, AhError::kNoAh);
}

TEST(AhSavedHeaders, RefusesMoreThanItsCapacity) {
  std::vector<uint8_t> big(kMaxSavedHeaders + 1);
  SavedHeaders s;
  EXPECT_FALSE(s.save(big, big.size()));
  EXPECT_TRUE(s.save(big, kMaxSavedHeaders));
  EXPECT_FALSE(s.save(std::span<const uint8_t>(big.data(), 10), 11));
}

TEST(AhErrors, EveryErrorHasAName) {
  for (int e = 0; e <= static_cast<int>(AhError::kBadIcvLength); ++e)
    EXPECT_NE(toString(static_cast<AhError>(e)), "unknown");
}

}  // namespace
}  // namespace ipsec::ah
