// NAT-OA checksum fix-up of transport-mode packets received in UDP (see
// nat_oa.h for what is done and why). Pure functions on a byte buffer.
#include "esp/nat_oa.h"

#include <cstring>

#include "checksum/internet.h"

namespace ipsec::esp {
namespace {

constexpr std::uint8_t kTcp = 6;
constexpr std::uint8_t kUdp = 17;

std::uint16_t load16(const std::uint8_t* p) noexcept { return static_cast<std::uint16_t>(p[0] << 8 | p[1]); }
void store16(std::uint8_t* p, std::uint16_t v) noexcept {
  p[0] = static_cast<std::uint8_t>(v >> 8);
  p[1] = static_cast<std::uint8_t>(v);
}

// RFC 1624 eqn. 3 for every 16-bit word of an address: HC' = ~(~HC + ~m + m').
std::uint32_t replaceAddress(std::uint32_t acc, std::span<const std::uint8_t> from,
                             std::span<const std::uint8_t> to) noexcept {
  for (std::size_t i = 0; i + 1 < from.size(); i += 2) {
    acc += static_cast<std::uint16_t>(~load16(from.data() + i));
    acc += load16(to.data() + i);
    acc = checksum::fold(acc);
  }
  return acc;
}

}  // namespace

std::uint16_t onesComplementSum(std::span<const std::uint8_t> bytes, std::uint32_t initial) noexcept {
  return checksum::fold(checksum::add(initial, bytes));
}

NatOaFixup fixNatOaChecksum(std::span<std::uint8_t> packet, const NatOriginalAddresses& oa) noexcept {
  if (packet.empty()) return NatOaFixup::kMalformed;
  const bool v4 = (packet[0] >> 4) == 4;
  std::size_t headerLength = 0, segmentLength = 0, addressLength = 0;
  std::uint8_t protocol = 0;
  std::uint8_t *src = nullptr, *dst = nullptr;
  if (v4) {
    if (packet.size() < 20) return NatOaFixup::kMalformed;
    headerLength = static_cast<std::size_t>(packet[0] & 0x0f) * 4;
    const std::size_t total = load16(packet.data() + 2);
    if (headerLength < 20 || total < headerLength || total > packet.size()) return NatOaFixup::kMalformed;
    // A fragment: ESP in transport mode carries whole datagrams (the kernel
    // reassembled before ESP); nothing sensible to fix in a piece.
    if ((load16(packet.data() + 6) & 0x3fff) != 0) return NatOaFixup::kNotNeeded;
    segmentLength = total - headerLength;
    protocol = packet[9];
    src = packet.data() + 12;
    dst = packet.data() + 16;
    addressLength = 4;
  } else if ((packet[0] >> 4) == 6) {
    if (packet.size() < 40) return NatOaFixup::kMalformed;
    headerLength = 40;
    segmentLength = load16(packet.data() + 4);
    if (segmentLength > packet.size() - 40) return NatOaFixup::kMalformed;
    protocol = packet[6];
    src = packet.data() + 8;
    dst = packet.data() + 24;
    addressLength = 16;
  } else {
    return NatOaFixup::kMalformed;
  }
  if (protocol != kTcp && protocol != kUdp) return NatOaFixup::kNotNeeded;
  const std::size_t checksumOffset = protocol == kTcp ? 16 : 6;
  if (segmentLength < (protocol == kTcp ? 20u : 8u)) return NatOaFixup::kMalformed;
  std::uint8_t* segment = packet.data() + headerLength;
  std::uint8_t* checksum = segment + checksumOffset;
  const std::uint16_t old = load16(checksum);

  auto usable = [&](const std::optional<IpAddress>& a) { return a && a->bytes().size() == addressLength; };
  if (usable(oa.src) || usable(oa.dst)) {
    if (protocol == kUdp && old == 0) return NatOaFixup::kNotNeeded;  // IPv4: the sender sent none
    std::uint32_t acc = static_cast<std::uint16_t>(~old);
    if (usable(oa.src)) acc = replaceAddress(acc, oa.src->bytes(), {src, addressLength});
    if (usable(oa.dst)) acc = replaceAddress(acc, oa.dst->bytes(), {dst, addressLength});
    std::uint16_t fixed = static_cast<std::uint16_t>(~checksum::fold(acc));
    if (protocol == kUdp && fixed == 0) fixed = 0xffff;  // 0 would mean "no checksum"
    store16(checksum, fixed);
    return NatOaFixup::kAdjusted;
  }
  if (v4 && protocol == kUdp) {
    store16(checksum, 0);
    return NatOaFixup::kZeroed;
  }
  // Pseudo-header (RFC 793 / RFC 768 / RFC 8200 §8.1) then the segment with
  // its checksum field taken as zero.
  store16(checksum, 0);
  std::uint32_t pseudo = onesComplementSum({src, addressLength});
  pseudo = onesComplementSum({dst, addressLength}, pseudo);
  pseudo += protocol;
  pseudo += static_cast<std::uint32_t>(segmentLength >> 16) + static_cast<std::uint32_t>(segmentLength & 0xffff);
  std::uint16_t sum = static_cast<std::uint16_t>(~onesComplementSum({segment, segmentLength}, checksum::fold(pseudo)));
  if (protocol == kUdp && sum == 0) sum = 0xffff;
  store16(checksum, sum);
  return NatOaFixup::kRecomputed;
}

RestoreResult restoreIpv4FromUdp(std::span<std::uint8_t> buf, std::size_t espOffset, const DecapResult& d,
                                 const Ipv4HeaderFields& fields) noexcept {
  constexpr std::size_t kHeader = 20;
  if (!fields.src.isV4() || !fields.dst.isV4() || d.length > 0xffff - kHeader) {
    return {.error = EspError::kBadInnerPacket};
  }
  std::size_t start = espOffset + d.offset;
  if (start > buf.size() || d.length > buf.size() - start) return {.error = EspError::kBadInnerPacket};
  if (start < kHeader) {
    if (buf.size() - kHeader < d.length) return {.error = EspError::kNoTailroom};
    std::memmove(buf.data() + kHeader, buf.data() + start, d.length);
    start = kHeader;
  }
  std::uint8_t* h = buf.data() + start - kHeader;
  h[0] = 0x45;
  h[1] = fields.tos;
  store16(h + 2, static_cast<std::uint16_t>(kHeader + d.length));
  store16(h + 4, 0);  // identification: a whole datagram, never fragmented here
  store16(h + 6, 0);
  h[8] = fields.ttl;
  h[9] = d.nextHeader;
  store16(h + 10, 0);
  std::memcpy(h + 12, fields.src.bytes().data(), 4);
  std::memcpy(h + 16, fields.dst.bytes().data(), 4);
  store16(h + 10, ipv4HeaderChecksum({h, kHeader}));
  return {EspError::kOk, start - kHeader, kHeader + d.length};
}

}  // namespace ipsec::esp
