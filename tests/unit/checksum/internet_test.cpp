// lib/checksum/internet.h against the definition (RFC 1071 §1: big-endian
// 16-bit words added with end-around carry), written here the slow, obvious
// way, over every length and alignment the word-wide loop distinguishes.
#include "checksum/internet.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

namespace ipsec::checksum {
namespace {

std::uint16_t byDefinition(std::uint32_t initial, const std::uint8_t* p, std::size_t n) {
  std::uint32_t sum = initial;
  sum = (sum & 0xffff) + (sum >> 16);
  sum = (sum & 0xffff) + (sum >> 16);
  for (std::size_t i = 0; i < n; i += 2) {
    const std::uint32_t word = std::uint32_t{p[i]} << 8 | (i + 1 < n ? p[i + 1] : 0);
    sum += word;
    if (sum > 0xffff) sum -= 0xffff;  // end-around carry
  }
  return static_cast<std::uint16_t>(sum);
}

TEST(InternetChecksum, Rfc1071Example) {
  // RFC 1071 §3: 0001 f203 f4f5 f6f7 sums to ddf2.
  const std::uint8_t words[] = {0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7};
  EXPECT_EQ(fold(add(0, words)), 0xddf2);
}

TEST(InternetChecksum, EveryLengthAndAlignmentMatchesTheDefinition) {
  std::mt19937 random(1071);
  std::vector<std::uint8_t> buffer(300 + 8);
  for (auto& b : buffer) b = static_cast<std::uint8_t>(random());
  for (std::size_t offset = 0; offset < 8; ++offset) {
    for (std::size_t length = 0; length + offset <= buffer.size(); ++length) {
      const std::span<const std::uint8_t> data(buffer.data() + offset, length);
      ASSERT_EQ(fold(add(0, data)), byDefinition(0, data.data(), length)) << offset << "+" << length;
      ASSERT_EQ(fold(add(0x1234567, data)), byDefinition(0x1234567, data.data(), length)) << offset << "+" << length;
    }
  }
}

TEST(InternetChecksum, CarriesOfAWholeSuperPacketOfOnes) {
  // 0xff bytes carry out of every word width; 65535 bytes is the longest
  // IPv4 packet and odd, so the last byte is padded.
  for (std::size_t length : {1u, 2u, 7u, 8u, 31u, 32u, 33u, 65534u, 65535u}) {
    const std::vector<std::uint8_t> ones(length, 0xff);
    EXPECT_EQ(fold(add(0, ones)), byDefinition(0, ones.data(), length)) << length;
    EXPECT_EQ(fold(add(0xffffffffu, ones)), byDefinition(0xffffffffu, ones.data(), length)) << length;
  }
}

TEST(InternetChecksum, ZeroOnlyForZeros) {
  // A nonzero sum that is a multiple of 0xffff folds to 0xffff (negative
  // zero), never to 0: a UDP checksum computed as 0 would mean "none".
  const std::uint8_t negativeZero[] = {0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
  EXPECT_EQ(fold(add(0, negativeZero)), 0xffff);
  const std::uint8_t halves[] = {0x80, 0x00, 0x7f, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  EXPECT_EQ(fold(add(0, halves)), 0xffff);
  const std::vector<std::uint8_t> zeros(100, 0);
  EXPECT_EQ(fold(add(0, zeros)), 0);
}

TEST(InternetChecksum, Ipv4HeaderIgnoresItsOwnField) {
  // A header from RFC 1071's neighbourhood of textbook examples: checksum b861.
  std::uint8_t header[] = {0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11,
                           0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7};
  EXPECT_EQ(ipv4Header(header), 0xb861);
  header[10] = 0xb8;
  header[11] = 0x61;
  EXPECT_EQ(ipv4Header(header), 0xb861);
  EXPECT_EQ(fold(add(0, header)), 0xffff);  // and the whole header now verifies
}

}  // namespace
}  // namespace ipsec::checksum
