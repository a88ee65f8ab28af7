// ESP transport-mode framing (see transport.h). Runs in ipsec-forwarder on
// packets from the TUN (local applications) and, inbound, on decrypted
// packets from the network: the only trusted inputs are the EspLayout, the
// buffer geometry and the addresses the kernel reported.
#include "esp/transport.h"

#include <cstring>

#include "checksum/internet.h"

namespace ipsec::esp {

namespace {

constexpr uint8_t kHopByHop = 0;
constexpr uint8_t kRouting = 43;
constexpr uint8_t kFragment = 44;
constexpr uint8_t kDestinationOptions = 60;
constexpr size_t kIpv6HeaderLength = 40;
constexpr unsigned kMaxExtensionHeaders = 8;

uint16_t load16(const uint8_t* p) noexcept { return static_cast<uint16_t>(p[0] << 8 | p[1]); }

void store16(uint8_t* p, size_t v) noexcept {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}

void setIpv4Checksum(uint8_t* header, size_t length) noexcept {
  header[10] = header[11] = 0;
  store16(header + 10, ipv4HeaderChecksum({header, length}));
}

std::optional<TransportSplit> splitIpv4(std::span<const uint8_t> p) noexcept {
  if (p.size() < 20) return std::nullopt;
  const size_t ihl = (p[0] & 0x0fu) * 4u;
  const size_t total = load16(p.data() + 2);
  if (ihl < 20 || ihl > p.size() || total < ihl || total > p.size()) return std::nullopt;
  TransportSplit s;
  s.version = 4;
  s.headerLength = ihl;
  s.nextHeaderOffset = 9;
  s.protocol = p[9];
  s.totalLength = total;
  s.fragment = (load16(p.data() + 6) & 0x3fffu) != 0;  // MF or an offset
  return s;
}

// RFC 8200 §4.1 order: hop-by-hop, destination options (for the routing
// header's hops), routing, fragment stay in front of ESP; destination
// options for the final destination go inside it (RFC 4303 §3.1.1).
std::optional<TransportSplit> splitIpv6(std::span<const uint8_t> p) noexcept {
  if (p.size() < kIpv6HeaderLength) return std::nullopt;
  const size_t payload = load16(p.data() + 4);
  if (payload == 0 || kIpv6HeaderLength + payload > p.size()) return std::nullopt;  // no jumbograms
  TransportSplit s;
  s.version = 6;
  s.totalLength = kIpv6HeaderLength + payload;
  size_t pos = kIpv6HeaderLength;
  size_t nhOffset = 6;
  uint8_t nh = p[6];
  for (unsigned count = 0;; ++count) {
    const bool keep = (nh == kHopByHop && pos == kIpv6HeaderLength) || nh == kRouting || nh == kFragment ||
                      (nh == kDestinationOptions && pos < s.totalLength && p[pos] == kRouting);
    if (!keep) break;
    if (count == kMaxExtensionHeaders || pos + 8 > s.totalLength) return std::nullopt;
    const size_t length = nh == kFragment ? 8 : (size_t{p[pos + 1]} + 1) * 8;
    if (pos + length > s.totalLength) return std::nullopt;
    if (nh == kFragment) s.fragment = true;
    nhOffset = pos;
    nh = p[pos];
    pos += length;
  }
  s.headerLength = pos;
  s.nextHeaderOffset = nhOffset;
  s.protocol = nh;
  return s;
}

}  // namespace

uint16_t ipv4HeaderChecksum(std::span<const uint8_t> header) noexcept { return checksum::ipv4Header(header); }

std::optional<TransportSplit> transportSplit(std::span<const uint8_t> packet) noexcept {
  if (packet.empty()) return std::nullopt;
  switch (packet[0] >> 4) {
    case 4: return splitIpv4(packet);
    case 6: return splitIpv6(packet);
    default: return std::nullopt;
  }
}

TransportEncapResult encapsulateTransport(std::span<uint8_t> buf, size_t off, size_t len, uint32_t spi,
                                          uint32_t seqLow, const EspLayout& layout,
                                          const TransportSplit& split) noexcept {
  if (!layout.valid()) return {.error = EspError::kBadLayout};
  const size_t head = layout.headroom();
  const size_t h = split.headerLength;
  if (split.totalLength > len || h > split.totalLength || off > buf.size() || len > buf.size() - off) {
    return {.error = EspError::kBadInnerPacket};
  }
  if (off < head) return {.error = EspError::kNoHeadroom};
  // Check the tail before touching anything, so a refusal leaves the packet intact.
  const size_t payload = split.totalLength - h;
  if (buf.size() - (off + h + payload) < layout.maxTailroom()) return {.error = EspError::kNoTailroom};

  uint8_t* header = buf.data() + off - head;
  std::memmove(header, buf.data() + off, h);
  auto r = encapsulate(buf, off + h, payload, spi, seqLow, layout, split.protocol);
  if (!r.ok()) return {.error = r.error};
  header[split.nextHeaderOffset] = kProtoEsp;
  if (split.version == 4) {
    if (h + r.length > 0xffff) return {.error = EspError::kNoTailroom};
    store16(header + 2, h + r.length);
    setIpv4Checksum(header, h);
  } else {
    if (h - kIpv6HeaderLength + r.length > 0xffff) return {.error = EspError::kNoTailroom};
    store16(header + 4, h - kIpv6HeaderLength + r.length);
  }
  return {EspError::kOk, off - head, h, r.offset, r.length};
}

DecapResult decapsulateTransport(std::span<const uint8_t> esp, const EspLayout& layout) noexcept {
  DecapResult d = decapsulate(esp, layout);
  // Tunnel mode allows only IPv4/IPv6 inside; here the payload is whatever
  // the peer's own packet carried.
  if (d.error == EspError::kBadNextHeader) d.error = EspError::kOk;
  return d;
}

RestoreResult restoreIpv4(std::span<uint8_t> buf, size_t espOffset, const DecapResult& d) noexcept {
  if (buf.size() < 20 || (buf[0] >> 4) != 4) return {.error = EspError::kBadInnerPacket};
  const size_t ihl = (buf[0] & 0x0fu) * 4u;
  const size_t start = espOffset + d.offset;
  if (ihl < 20 || ihl > espOffset || start > buf.size() || d.length > buf.size() - start) {
    return {.error = EspError::kBadInnerPacket};
  }
  if (ihl + d.length > 0xffff) return {.error = EspError::kBadInnerPacket};
  uint8_t* header = buf.data() + start - ihl;
  std::memmove(header, buf.data(), ihl);
  header[9] = d.nextHeader;
  store16(header + 2, ihl + d.length);
  // The kernel reassembled what it delivered: this is one whole datagram.
  header[6] &= 0x40;  // keep DF, clear MF and the offset
  header[7] = 0;
  setIpv4Checksum(header, ihl);
  return {EspError::kOk, start - ihl, ihl + d.length};
}

RestoreResult restoreIpv6(std::span<uint8_t> buf, size_t espOffset, const DecapResult& d,
                          const Ipv6HeaderFields& fields) noexcept {
  if (!fields.src.isV6() || !fields.dst.isV6() || d.length > 0xffff) return {.error = EspError::kBadInnerPacket};
  size_t start = espOffset + d.offset;
  if (start > buf.size() || d.length > buf.size() - start) return {.error = EspError::kBadInnerPacket};
  if (start < kIpv6HeaderLength) {
    if (buf.size() - kIpv6HeaderLength < d.length) return {.error = EspError::kNoTailroom};
    std::memmove(buf.data() + kIpv6HeaderLength, buf.data() + start, d.length);
    start = kIpv6HeaderLength;
  }
  uint8_t* header = buf.data() + start - kIpv6HeaderLength;
  header[0] = static_cast<uint8_t>(0x60 | fields.trafficClass >> 4);
  header[1] = static_cast<uint8_t>((fields.trafficClass & 0x0f) << 4);
  header[2] = header[3] = 0;  // flow label: not carried by the raw socket
  store16(header + 4, d.length);
  header[6] = d.nextHeader;
  header[7] = fields.hopLimit;
  std::memcpy(header + 8, fields.src.bytes().data(), 16);
  std::memcpy(header + 24, fields.dst.bytes().data(), 16);
  return {EspError::kOk, start - kIpv6HeaderLength, kIpv6HeaderLength + d.length};
}

}  // namespace ipsec::esp
