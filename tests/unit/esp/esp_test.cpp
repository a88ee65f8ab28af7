// Unit tests of ESP framing (lib/esp/esp.h) on byte arrays: outbound
// encapsulation, inbound header parsing and decapsulation, round trips, every
// malformed case, and a cross-check against the RFC 3602 tunnel-mode packets
// of the shared known-answer file.
#include "esp/esp.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <numeric>
#include <set>
#include <vector>

namespace ipsec::esp {
namespace {

constexpr EspLayout kCbc{16, 16, 16};  // AES-CBC + HMAC-SHA2-256-128
constexpr EspLayout kGcm{8, 16, 4};    // AES-GCM-16

std::vector<uint8_t> ipv4Packet(size_t length) {
  std::vector<uint8_t> p(length);
  std::iota(p.begin(), p.end(), uint8_t{0});
  p[0] = 0x45;
  p[2] = static_cast<uint8_t>(length >> 8);
  p[3] = static_cast<uint8_t>(length);
  return p;
}

std::vector<uint8_t> ipv6Packet(size_t length) {
  std::vector<uint8_t> p(length);
  std::iota(p.begin(), p.end(), uint8_t{7});
  p[0] = 0x60;
  return p;
}

std::vector<uint8_t> fromHex(const std::string& hex) {
  std::vector<uint8_t> out(hex.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<uint8_t>(std::stoul(hex.substr(2 * i, 2), nullptr, 16));
  return out;
}

// A pool-like buffer: headroom, the inner packet, tailroom.
struct Frame {
  std::vector<uint8_t> buf;
  size_t off;
  size_t len;
  Frame(const std::vector<uint8_t>& inner, size_t headroom, size_t tailroom)
      : buf(headroom + inner.size() + tailroom, 0xee), off(headroom), len(inner.size()) {
    std::copy(inner.begin(), inner.end(), buf.begin() + static_cast<std::ptrdiff_t>(off));
  }
};

void expectRoundTrip(const std::vector<uint8_t>& inner, const EspLayout& layout, uint8_t expectedNextHeader) {
  Frame f(inner, 64, 64);
  const EncapResult enc = encapsulate(f.buf, f.off, f.len, 0x12345678, 42, layout);
  ASSERT_TRUE(enc.ok()) << toString(enc.error);
  EXPECT_EQ(enc.offset, f.off - 8 - layout.ivLength);
  const size_t encrypted = enc.length - 8 - layout.ivLength - layout.icvLength;
  EXPECT_EQ(encrypted % layout.padAlign, 0u);
  EXPECT_LT(encrypted - inner.size() - 2, layout.padAlign) << "padding is minimal";
  EXPECT_EQ(enc.length % 4, 0u);

  std::span<const uint8_t> esp(f.buf.data() + enc.offset, enc.length);
  const HeaderResult h = parseHeader(esp);
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h.header.spi, 0x12345678u);
  EXPECT_EQ(h.header.seqLow, 42u);
  for (size_t i = 0; i < layout.ivLength; ++i) EXPECT_EQ(esp[8 + i], 0) << "IV gap is zeroed";
  EXPECT_EQ(esp[8 + layout.ivLength + encrypted - 1], expectedNextHeader);

  const DecapResult dec = decapsulate(esp, layout);
  ASSERT_TRUE(dec.ok()) << toString(dec.error);
  EXPECT_EQ(dec.nextHeader, expectedNextHeader);
  ASSERT_EQ(dec.length, inner.size());
  EXPECT_TRUE(std::equal(inner.begin(), inner.end(), esp.begin() + static_cast<std::ptrdiff_t>(dec.offset)));
}

TEST(EspFraming, RoundTripsIpv4InnerForEveryLengthWithCbcLayout) {
  for (size_t len = 20; len < 80; ++len) expectRoundTrip(ipv4Packet(len), kCbc, kNextHeaderIpv4);
}

TEST(EspFraming, RoundTripsIpv6InnerForEveryLengthWithGcmLayout) {
  for (size_t len = 40; len < 60; ++len) expectRoundTrip(ipv6Packet(len), kGcm, kNextHeaderIpv6);
}

TEST(EspFraming, WritesHeaderInNetworkOrderAndMonotonicPadding) {
  Frame f(ipv4Packet(21), 32, 48);
  const EncapResult enc = encapsulate(f.buf, f.off, f.len, 0xc0000201, 0x01020304, kCbc);
  ASSERT_TRUE(enc.ok());
  const uint8_t* esp = f.buf.data() + enc.offset;
  EXPECT_EQ(std::vector<uint8_t>(esp, esp + 8), (std::vector<uint8_t>{0xc0, 0x00, 0x02, 0x01, 1, 2, 3, 4}));
  // 21 + 9 + 2 = 32: pad 1..9, pad length 9, next header 4.
  const uint8_t* trailer = f.buf.data() + f.off + f.len;
  EXPECT_EQ(std::vector<uint8_t>(trailer, trailer + 11), (std::vector<uint8_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 4}));
  EXPECT_EQ(enc.length, 8u + 16 + 32 + 16);
}

TEST(EspFraming, AddsNoPaddingWhenAlreadyAligned) {
  Frame f(ipv4Packet(30), 32, 32);
  const EncapResult enc = encapsulate(f.buf, f.off, f.len, 1000, 1, kCbc);
  ASSERT_TRUE(enc.ok());
  EXPECT_EQ(f.buf[f.off + 30], 0);
  EXPECT_EQ(f.buf[f.off + 31], kNextHeaderIpv4);
}

TEST(EspFraming, UsesExactHeadroomAndTailroom) {
  const auto inner = ipv4Packet(30);  // no padding with padAlign 16
  Frame exact(inner, kCbc.headroom(), 2 + kCbc.icvLength);
  EXPECT_TRUE(encapsulate(exact.buf, exact.off, exact.len, 1000, 1, kCbc).ok());
}

TEST(EspFraming, RejectsShortHeadroom) {
  Frame f(ipv4Packet(40), kCbc.headroom() - 1, 64);
  EXPECT_EQ(encapsulate(f.buf, f.off, f.len, 1000, 1, kCbc).error, EspError::kNoHeadroom);
}

TEST(EspFraming, RejectsShortTailroom) {
  Frame f(ipv4Packet(30), 64, 2 + kCbc.icvLength - 1);
  EXPECT_EQ(encapsulate(f.buf, f.off, f.len, 1000, 1, kCbc).error, EspError::kNoTailroom);
}

TEST(EspFraming, RejectsInnerPacketThatIsNotIp) {
  auto inner = ipv4Packet(40);
  inner[0] = 0x55;
  Frame f(inner, 64, 64);
  EXPECT_EQ(encapsulate(f.buf, f.off, f.len, 1000, 1, kCbc).error, EspError::kBadInnerPacket);
  EXPECT_EQ(encapsulate(f.buf, f.off, 0, 1000, 1, kCbc).error, EspError::kBadInnerPacket);
}

TEST(EspFraming, RejectsInnerPacketOutsideTheBuffer) {
  Frame f(ipv4Packet(40), 64, 0);
  EXPECT_EQ(encapsulate(f.buf, f.off, f.len + 1, 1000, 1, kCbc).error, EspError::kBadInnerPacket);
  EXPECT_EQ(encapsulate(f.buf, f.buf.size() + 1, 1, 1000, 1, kCbc).error, EspError::kBadInnerPacket);
}

TEST(EspFraming, RejectsLayoutWhosePaddingCannotAlignTheTrailer) {
  Frame f(ipv4Packet(40), 64, 64);
  EXPECT_EQ(encapsulate(f.buf, f.off, f.len, 1000, 1, EspLayout{8, 16, 6}).error, EspError::kBadLayout);
  EXPECT_EQ(decapsulate(f.buf, EspLayout{8, 16, 0}).error, EspError::kBadLayout);
}

TEST(EspHeader, RejectsTruncatedHeader) {
  const std::vector<uint8_t> seven{0, 0, 1, 0, 0, 0, 0};
  EXPECT_EQ(parseHeader(seven).error, EspError::kTruncated);
  EXPECT_EQ(parseHeader({}).error, EspError::kTruncated);
}

TEST(EspHeader, RejectsReservedSpiZero) {
  const std::vector<uint8_t> zero{0, 0, 0, 0, 0, 0, 0, 1};
  EXPECT_EQ(parseHeader(zero).error, EspError::kReservedSpi);
}

// Builds a decrypted ESP packet (header, IV, inner, trailer, ICV) by hand.
std::vector<uint8_t> decrypted(const EspLayout& layout, const std::vector<uint8_t>& inner,
                               const std::vector<uint8_t>& padding, uint8_t padLength, uint8_t nextHeader) {
  std::vector<uint8_t> p{0, 0, 0x10, 0, 0, 0, 0, 1};
  p.resize(8 + layout.ivLength, 0xaa);
  p.insert(p.end(), inner.begin(), inner.end());
  p.insert(p.end(), padding.begin(), padding.end());
  p.push_back(padLength);
  p.push_back(nextHeader);
  p.resize(p.size() + layout.icvLength, 0xcc);
  return p;
}

TEST(EspDecap, AcceptsHandBuiltPacket) {
  const auto inner = ipv4Packet(28);
  const auto p = decrypted(kGcm, inner, {1, 2}, 2, 4);
  const DecapResult d = decapsulate(p, kGcm);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d.offset, 16u);
  EXPECT_EQ(d.length, 28u);
}

TEST(EspDecap, RejectsPacketShorterThanHeaderIvTrailerAndIcv) {
  std::vector<uint8_t> p(8 + 8 + 16 + 1, 0);
  EXPECT_EQ(decapsulate(p, kGcm).error, EspError::kTruncated);
  p.resize(4);
  EXPECT_EQ(decapsulate(p, kGcm).error, EspError::kTruncated);
}

TEST(EspDecap, RejectsEncryptedPartThatIsNotABlockMultiple) {
  const auto p = decrypted(kCbc, ipv4Packet(28), {1, 2}, 2, 4);  // 32 bytes
  std::vector<uint8_t> shorter(p.begin() + 4, p.end());          // 28 bytes encrypted
  EXPECT_EQ(decapsulate(shorter, kCbc).error, EspError::kBadLength);
}

TEST(EspDecap, RejectsPadLengthLargerThanThePayload) {
  const auto p = decrypted(kGcm, ipv4Packet(26), {}, 27, 4);
  EXPECT_EQ(decapsulate(p, kGcm).error, EspError::kBadPadding);
}

TEST(EspDecap, RejectsEmptyInnerPacketUnlessDummy) {
  const auto p = decrypted(kGcm, {}, {1, 2}, 2, kNextHeaderDummy);
  EXPECT_EQ(decapsulate(p, kGcm).error, EspError::kDummyPacket);
  const auto q = decrypted(kGcm, {}, {1, 2}, 2, kNextHeaderIpv4);
  EXPECT_EQ(decapsulate(q, kGcm).error, EspError::kInnerMismatch);
}

TEST(EspDecap, RejectsPaddingThatIsNotOneTwoThree) {
  const auto inner = ipv4Packet(25);
  for (size_t bad = 0; bad < 5; ++bad) {
    std::vector<uint8_t> padding{1, 2, 3, 4, 5};
    padding[bad] ^= 0x40;
    const auto p = decrypted(kGcm, inner, padding, 5, 4);
    EXPECT_EQ(decapsulate(p, kGcm).error, EspError::kBadPadding) << "corrupt pad byte " << bad;
  }
}

TEST(EspDecap, RejectsNextHeaderOtherThanIpv4OrIpv6) {
  for (uint8_t nh : {0, 1, 6, 17, 50, 255}) {
    const auto p = decrypted(kGcm, ipv4Packet(26), {}, 0, nh);
    EXPECT_EQ(decapsulate(p, kGcm).error, EspError::kBadNextHeader) << int{nh};
  }
}

TEST(EspDecap, RejectsNextHeaderThatDisagreesWithInnerVersion) {
  const auto v6 = decrypted(kGcm, ipv6Packet(42), {}, 0, kNextHeaderIpv4);
  EXPECT_EQ(decapsulate(v6, kGcm).error, EspError::kInnerMismatch);
  const auto v4 = decrypted(kGcm, ipv4Packet(42), {}, 0, kNextHeaderIpv6);
  EXPECT_EQ(decapsulate(v4, kGcm).error, EspError::kInnerMismatch);
}

TEST(EspDecap, ReportsDummyPacketAsItsOwnResult) {
  const auto p = decrypted(kCbc, std::vector<uint8_t>(14, 0x77), {}, 0, kNextHeaderDummy);
  const DecapResult d = decapsulate(p, kCbc);
  EXPECT_EQ(d.error, EspError::kDummyPacket);
  EXPECT_EQ(d.nextHeader, kNextHeaderDummy);
}

TEST(EspError, HasDistinctCounterNames) {
  std::set<std::string_view> names;
  for (int e = 0; e <= static_cast<int>(EspError::kBadLayout); ++e) {
    const auto name = toString(static_cast<EspError>(e));
    EXPECT_NE(name, "unknown");
    EXPECT_TRUE(names.insert(name).second) << name;
  }
}

// RFC 3602 cases 7 and 8 are tunnel-mode ESP with default padding: our framing
// of their inner packet must match the recorded plaintext trailer exactly.
TEST(EspFraming, MatchesRfc3602TunnelModeTrailers) {
  std::ifstream in(IPSEC_ESP_KAT_FILE);
  ASSERT_TRUE(in) << IPSEC_ESP_KAT_FILE;
  const auto kat = nlohmann::json::parse(in);
  int checked = 0;
  for (const auto& v : kat["vectors"]) {
    if (v["kind"] != "esp-packet" || v.value("mode", "") != "tunnel" || !v["key"].is_string() ||
        v["algorithm"].get<std::string>().find("AES_CBC") == std::string::npos)
      continue;
    SCOPED_TRACE(v["id"].get<std::string>());
    const auto inner = fromHex(v["plaintext_payload"]);
    const auto expected = fromHex(v["esp_plaintext_with_trailer"]);
    const EspLayout layout{16, 0, 16};
    Frame f(inner, 24, 32);
    const EncapResult enc = encapsulate(f.buf, f.off, f.len, std::stoul(v["spi"].get<std::string>(), nullptr, 16),
                                        v["seq"].get<uint32_t>(), layout);
    ASSERT_TRUE(enc.ok());
    ASSERT_EQ(enc.length, 8 + 16 + expected.size());
    EXPECT_TRUE(std::equal(expected.begin(), expected.end(), f.buf.begin() + static_cast<std::ptrdiff_t>(f.off)));
    const auto wire = fromHex(v["expected_esp"]);
    EXPECT_TRUE(std::equal(wire.begin(), wire.begin() + 8, f.buf.begin() + static_cast<std::ptrdiff_t>(enc.offset)));
    const DecapResult dec = decapsulate(std::span<const uint8_t>(f.buf).subspan(enc.offset, enc.length), layout);
    ASSERT_TRUE(dec.ok()) << toString(dec.error);
    EXPECT_EQ(dec.length, inner.size());
    ++checked;
  }
  EXPECT_GE(checked, 2);
}

}  // namespace
}  // namespace ipsec::esp
