// The Internet checksum's one's-complement sum (RFC 1071), once for every
// library that needs it (lib/esp: outer and ICMP headers; lib/offload: TCP and
// UDP checksums of every segment the forwarder cuts from a super-packet).
// Header-only so that neither library links the other. Pure, noexcept.
//
// Why not the plain loop over 16-bit big-endian words: it was the forwarder's
// hottest function of its own (5 % of its CPU samples under TCP through the
// tunnel, bench/compare.py with perf, session 10), summing 2 bytes a step. The
// sum does not depend on byte order (RFC 1071 §2(B)) and folds the same from
// any word width (§2(C)), so here it adds native 64-bit words with the
// carry wrapped around and swaps the folded result once.
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

namespace ipsec::checksum {
namespace detail {

inline std::uint64_t addWrapped(std::uint64_t acc, std::uint64_t v) noexcept {
  acc += v;
  return acc + (acc < v);  // the carry out of bit 63 comes back in at bit 0
}

// The one's-complement sum of data as native-order 16-bit words, folded to 16 bits.
inline std::uint16_t nativeSum(const std::uint8_t* p, std::size_t n) noexcept {
  std::uint64_t acc = 0;
  std::uint64_t words[4];
  for (; n >= sizeof words; n -= sizeof words, p += sizeof words) {
    std::memcpy(words, p, sizeof words);
    acc = addWrapped(acc, words[0]);
    acc = addWrapped(acc, words[1]);
    acc = addWrapped(acc, words[2]);
    acc = addWrapped(acc, words[3]);
  }
  for (; n >= 8; n -= 8, p += 8) {
    std::memcpy(words, p, 8);
    acc = addWrapped(acc, words[0]);
  }
  if (n >= 4) {
    std::uint32_t w;
    std::memcpy(&w, p, 4);
    acc = addWrapped(acc, w);
    n -= 4;
    p += 4;
  }
  if (n >= 2) {
    std::uint16_t w;
    std::memcpy(&w, p, 2);
    acc = addWrapped(acc, w);
    n -= 2;
    p += 2;
  }
  // A last odd byte is the high half of a big-endian word padded with zero.
  if (n == 1) acc = addWrapped(acc, std::endian::native == std::endian::little ? p[0] : std::uint64_t{p[0]} << 8);
  acc = (acc & 0xffffffffu) + (acc >> 32);
  acc = (acc & 0xffffffffu) + (acc >> 32);
  acc = (acc & 0xffffu) + (acc >> 16);
  acc = (acc & 0xffffu) + (acc >> 16);
  return static_cast<std::uint16_t>(acc);
}

}  // namespace detail

// sum plus the one's-complement sum of data's big-endian 16-bit words, folded
// to 32 bits (not to 16: callers add more and fold once). A sum is 0 only if
// sum and every byte of data are 0, as with the plain loop.
inline std::uint32_t add(std::uint32_t sum, std::span<const std::uint8_t> data) noexcept {
  std::uint16_t folded = detail::nativeSum(data.data(), data.size());
  if constexpr (std::endian::native == std::endian::little) folded = static_cast<std::uint16_t>(folded << 8 | folded >> 8);
  const std::uint64_t total = std::uint64_t{sum} + folded;
  return static_cast<std::uint32_t>((total & 0xffffffffu) + (total >> 32));
}

// Folds a sum to 16 bits (not complemented).
inline std::uint16_t fold(std::uint32_t sum) noexcept {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<std::uint16_t>(sum);
}

// The IPv4 header checksum (RFC 791) over header (its IHL's bytes), the
// checksum field (bytes 10-11) counted as zero whatever it holds.
inline std::uint16_t ipv4Header(std::span<const std::uint8_t> header) noexcept {
  if (header.size() < 12) return static_cast<std::uint16_t>(~fold(add(0, header.first(std::min<std::size_t>(header.size(), 10)))));
  return static_cast<std::uint16_t>(~fold(add(add(0, header.first(10)), header.subspan(12))));
}

}  // namespace ipsec::checksum
