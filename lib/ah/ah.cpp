// See ah.h. Every walk over untrusted headers validates first and writes
// second, so a malformed packet is rejected before any byte changes (except
// where ah.h says otherwise), and every read is bounds-checked against the
// IP packet's own length, never beyond the span.
#include "ah/ah.h"

namespace ipsec::ah {
namespace {

constexpr std::uint8_t kNhHopByHop = 0;
constexpr std::uint8_t kNhRouting = 43;
constexpr std::uint8_t kNhFragment = 44;
constexpr std::uint8_t kNhDestOpts = 60;
constexpr std::size_t kIpv6Header = 40;
constexpr std::size_t kIpv4MinHeader = 20;

std::uint16_t load16(const std::uint8_t* p) noexcept { return static_cast<std::uint16_t>(p[0] << 8 | p[1]); }
std::uint32_t load32(const std::uint8_t* p) noexcept {
  return std::uint32_t{p[0]} << 24 | std::uint32_t{p[1]} << 16 | std::uint32_t{p[2]} << 8 | p[3];
}
void store32(std::uint8_t* p, std::uint32_t v) noexcept {
  p[0] = static_cast<std::uint8_t>(v >> 24);
  p[1] = static_cast<std::uint8_t>(v >> 16);
  p[2] = static_cast<std::uint8_t>(v >> 8);
  p[3] = static_cast<std::uint8_t>(v);
}

// RFC 4302 Appendix A.1: the IPv4 options that are immutable (full type byte).
bool immutableIpv4Option(std::uint8_t type) noexcept {
  switch (type) {
    case 0: case 1: case 130: case 133: case 134: case 148: case 149: return true;
    default: return false;
  }
}

constexpr std::uint8_t kOptLsrr = 131;
constexpr std::uint8_t kOptSsrr = 137;

// The IP packet's extent: its header length (IPv4) and its total length.
struct IpExtent {
  AhError error = AhError::kOk;
  bool ipv6 = false;
  std::size_t headerLength = 0;  // IPv4 IHL * 4, IPv6 40
  std::size_t totalLength = 0;
};

IpExtent ipExtent(std::span<const std::uint8_t> p) noexcept {
  IpExtent e;
  if (p.empty()) {
    e.error = AhError::kTruncated;
    return e;
  }
  const unsigned version = p[0] >> 4;
  if (version == 4) {
    if (p.size() < kIpv4MinHeader) {
      e.error = AhError::kTruncated;
      return e;
    }
    e.headerLength = std::size_t{p[0] & 0x0Fu} * 4;
    e.totalLength = load16(p.data() + 2);
    if (e.headerLength < kIpv4MinHeader || e.totalLength < e.headerLength || e.totalLength > p.size())
      e.error = AhError::kBadIpHeader;
    return e;
  }
  if (version == 6) {
    e.ipv6 = true;
    if (p.size() < kIpv6Header) {
      e.error = AhError::kTruncated;
      return e;
    }
    e.headerLength = kIpv6Header;
    const std::size_t plen = load16(p.data() + 4);
    e.totalLength = kIpv6Header + plen;
    if (plen == 0 || e.totalLength > p.size()) e.error = AhError::kBadIpHeader;  // 0: jumbogram
    return e;
  }
  e.error = AhError::kBadIpHeader;
  return e;
}

// One IPv6 extension header before AH.
struct ExtHeader {
  std::uint8_t type = 0;
  std::size_t offset = 0;
  std::size_t length = 0;
};

struct ExtChain {
  AhError error = AhError::kOk;
  ExtHeader headers[kMaxExtensionHeaders];
  unsigned count = 0;
  std::size_t ahOffset = 0;
  std::size_t nextHeaderOffset = 0;
};

// Walks hop-by-hop, destination options and routing headers up to AH.
ExtChain walkToAh(std::span<const std::uint8_t> p, std::size_t end) noexcept {
  ExtChain c;
  std::uint8_t nh = p[6];
  std::size_t nhOffset = 6;
  std::size_t off = kIpv6Header;
  for (;;) {
    if (nh == kProtoAh) {
      c.ahOffset = off;
      c.nextHeaderOffset = nhOffset;
      return c;
    }
    if (nh == kNhFragment) {
      c.error = AhError::kFragment;
      return c;
    }
    if (nh != kNhHopByHop && nh != kNhDestOpts && nh != kNhRouting) {
      c.error = AhError::kNoAh;
      return c;
    }
    // RFC 8200 §4.3: hop-by-hop only right after the IPv6 header.
    if (nh == kNhHopByHop && off != kIpv6Header) {
      c.error = AhError::kBadExtensionHeader;
      return c;
    }
    if (c.count == kMaxExtensionHeaders) {
      c.error = AhError::kTooManyExtHeaders;
      return c;
    }
    if (end - off < 2) {
      c.error = AhError::kTruncated;
      return c;
    }
    const std::size_t len = (std::size_t{p[off + 1]} + 1) * 8;
    if (end - off < len) {
      c.error = AhError::kTruncated;
      return c;
    }
    c.headers[c.count++] = ExtHeader{nh, off, len};
    nh = p[off];
    nhOffset = off;
    off += len;
  }
}

// Checks an options header's TLVs (RFC 8200 §4.2); with `zero`, zeroes the
// data of options whose type has the change-en-route bit (0x20).
AhError walkOptions(std::span<std::uint8_t> p, const ExtHeader& h, bool zero) noexcept {
  std::size_t i = h.offset + 2;
  const std::size_t end = h.offset + h.length;
  while (i < end) {
    const std::uint8_t type = p[i];
    if (type == 0) {  // Pad1: one byte, no length
      ++i;
      continue;
    }
    if (end - i < 2) return AhError::kBadExtensionHeader;
    const std::size_t dataLen = p[i + 1];
    if (end - i - 2 < dataLen) return AhError::kBadExtensionHeader;
    if (zero && (type & 0x20) != 0) std::memset(p.data() + i + 2, 0, dataLen);
    i += 2 + dataLen;
  }
  return AhError::kOk;
}

// Routing header type 0 (deprecated by RFC 5095 but still defined) and type
// 2 (RFC 6275) carry a list of addresses; at the final destination, segments
// left is 0, the destination field holds the last address, and each address
// the packet was sent to on its way sits in the list (RFC 8200 §4.4 swaps
// them hop by hop). With k segments left of n: the list's last k entries and
// the destination rotate by one.
AhError checkRouting(std::span<const std::uint8_t> p, const ExtHeader& h) noexcept {
  const std::uint8_t type = p[h.offset + 2];
  const std::uint8_t segLeft = p[h.offset + 3];
  if (segLeft == 0) return AhError::kOk;  // already as at the destination
  if (type != 0 && type != 2) return AhError::kUnsupportedRouting;
  const std::size_t hdrExtLen = p[h.offset + 1];
  if (hdrExtLen % 2 != 0) return AhError::kBadRoutingHeader;
  const std::size_t n = hdrExtLen / 2;
  if (segLeft > n || (type == 2 && (n != 1 || segLeft != 1))) return AhError::kBadRoutingHeader;
  return AhError::kOk;
}

void predictRouting(std::span<std::uint8_t> p, const ExtHeader& h) noexcept {
  const std::size_t k = p[h.offset + 3];
  if (k == 0) return;
  const std::size_t n = std::size_t{p[h.offset + 1]} / 2;
  std::uint8_t* addr = p.data() + h.offset + 8;
  std::uint8_t* dst = p.data() + 24;
  std::uint8_t last[16];
  std::memcpy(last, addr + (n - 1) * 16, 16);
  // addr[n-k+1 .. n-1] = addr[n-k .. n-2], addr[n-k] = dst, dst = old addr[n-1].
  std::memmove(addr + (n - k + 1) * 16, addr + (n - k) * 16, (k - 1) * 16);
  std::memcpy(addr + (n - k) * 16, dst, 16);
  std::memcpy(dst, last, 16);
  p[h.offset + 3] = 0;
}

// IPv4 options (RFC 791 §3.1 layout). Validates; with `zero`, zeroes the
// mutable ones and, for a source route with hops left, sets the destination
// to its last address (the value the destination will see).
AhError walkIpv4Options(std::span<std::uint8_t> p, std::size_t headerLength, bool zero) noexcept {
  std::size_t i = kIpv4MinHeader;
  while (i < headerLength) {
    const std::uint8_t type = p[i];
    if (type == 0) break;  // End of Option List: the rest is padding, immutable
    if (type == 1) {
      ++i;
      continue;
    }
    if (headerLength - i < 2) return AhError::kBadIpv4Options;
    const std::size_t len = p[i + 1];
    if (len < 2 || len > headerLength - i) return AhError::kBadIpv4Options;
    if (zero && !immutableIpv4Option(type)) {
      if ((type == kOptLsrr || type == kOptSsrr) && len >= 7) {
        const std::size_t pointer = p[i + 2];  // 1-based, from the option's start
        if (pointer <= len) std::memcpy(p.data() + 16, p.data() + i + len - 4, 4);
      }
      std::memset(p.data() + i, 0, len);
    }
    i += len;
  }
  return AhError::kOk;
}

}  // namespace

std::string_view toString(AhError error) noexcept {
  switch (error) {
    case AhError::kOk: return "ok";
    case AhError::kTruncated: return "truncated";
    case AhError::kBadLength: return "bad_length";
    case AhError::kReservedSpi: return "reserved_spi";
    case AhError::kBadIpHeader: return "bad_ip_header";
    case AhError::kBadIpv4Options: return "bad_ipv4_options";
    case AhError::kBadExtensionHeader: return "bad_extension_header";
    case AhError::kTooManyExtHeaders: return "too_many_ext_headers";
    case AhError::kBadRoutingHeader: return "bad_routing_header";
    case AhError::kUnsupportedRouting: return "unsupported_routing";
    case AhError::kFragment: return "fragment";
    case AhError::kNoAh: return "no_ah";
    case AhError::kHeadersTooLong: return "headers_too_long";
    case AhError::kNoHeadroom: return "no_headroom";
    case AhError::kBadIcvLength: return "bad_icv_length";
  }
  return "unknown";
}

AhError writeHeader(std::span<std::uint8_t> out, std::uint8_t nextHeader, std::uint32_t spi, std::uint32_t seqLow,
                    std::size_t icvLength, bool ipv6, std::size_t* written) noexcept {
  if (icvLength == 0 || icvLength > kMaxIcvLength) return AhError::kBadIcvLength;
  const std::size_t len = headerLength(icvLength, ipv6);
  if (out.size() < len) return AhError::kNoHeadroom;
  out[0] = nextHeader;
  out[1] = static_cast<std::uint8_t>(len / 4 - 2);
  out[2] = 0;
  out[3] = 0;
  store32(out.data() + 4, spi);
  store32(out.data() + 8, seqLow);
  std::memset(out.data() + kFixedLength, 0, len - kFixedLength);  // ICV and padding
  if (written != nullptr) *written = len;
  return AhError::kOk;
}

AhError parseHeader(std::span<const std::uint8_t> ah, AhHeader& out) noexcept {
  if (ah.size() < kFixedLength) return AhError::kTruncated;
  out.nextHeader = ah[0];
  out.payloadLength = ah[1];
  out.spi = load32(ah.data() + 4);
  out.seqLow = load32(ah.data() + 8);
  if (out.length() < kFixedLength) return AhError::kBadLength;  // payload length 0: shorter than the fixed part
  if (out.length() > ah.size()) return AhError::kTruncated;
  if (out.spi == 0) return AhError::kReservedSpi;
  return AhError::kOk;
}

AhError checkLength(const AhHeader& header, std::size_t icvLength, bool ipv6) noexcept {
  if (icvLength == 0 || icvLength > kMaxIcvLength) return AhError::kBadIcvLength;
  return header.length() == headerLength(icvLength, ipv6) ? AhError::kOk : AhError::kBadLength;
}

AhLocation locate(std::span<const std::uint8_t> packet) noexcept {
  AhLocation loc;
  const IpExtent e = ipExtent(packet);
  loc.ipv6 = e.ipv6;
  if (e.error != AhError::kOk) {
    loc.error = e.error;
    return loc;
  }
  loc.packetLength = e.totalLength;
  if (!e.ipv6) {
    if ((load16(packet.data() + 6) & 0x3FFF) != 0) {  // MF or a fragment offset
      loc.error = AhError::kFragment;
      return loc;
    }
    if (packet[9] != kProtoAh) {
      loc.error = AhError::kNoAh;
      return loc;
    }
    loc.ahOffset = e.headerLength;
    loc.nextHeaderOffset = 9;
  } else {
    const ExtChain c = walkToAh(packet, e.totalLength);
    if (c.error != AhError::kOk) {
      loc.error = c.error;
      return loc;
    }
    loc.ahOffset = c.ahOffset;
    loc.nextHeaderOffset = c.nextHeaderOffset;
  }
  loc.icvOffset = loc.ahOffset + kIcvOffset;
  loc.error = parseHeader(packet.subspan(loc.ahOffset, e.totalLength - loc.ahOffset), loc.header);
  return loc;
}

AhLocation canonicalise(std::span<std::uint8_t> packet, std::size_t icvLength, bool zeroIcv) noexcept {
  AhLocation loc = locate(packet);
  if (!loc.ok()) return loc;
  if ((loc.error = checkLength(loc.header, icvLength, loc.ipv6)) != AhError::kOk) return loc;
  if (loc.ahOffset > kMaxSavedHeaders) {
    loc.error = AhError::kHeadersTooLong;
    return loc;
  }
  std::uint8_t* p = packet.data();
  if (!loc.ipv6) {
    if ((loc.error = walkIpv4Options(packet, loc.ahOffset, false)) != AhError::kOk) return loc;
    p[1] = 0;            // TOS (DSCP, ECN)
    p[6] = p[7] = 0;     // flags, fragment offset
    p[8] = 0;            // TTL
    p[10] = p[11] = 0;   // header checksum
    walkIpv4Options(packet, loc.ahOffset, true);
  } else {
    const ExtChain c = walkToAh(packet, loc.packetLength);
    for (unsigned i = 0; i < c.count; ++i) {
      const ExtHeader& h = c.headers[i];
      const AhError err = h.type == kNhRouting ? checkRouting(packet, h) : walkOptions(packet, h, false);
      if (err != AhError::kOk) {
        loc.error = err;
        return loc;
      }
    }
    p[0] &= 0xF0;            // traffic class (high nibble in byte 0, low in byte 1)
    p[1] = p[2] = p[3] = 0;  // ... and the flow label
    p[7] = 0;                // hop limit
    for (unsigned i = 0; i < c.count; ++i) {
      const ExtHeader& h = c.headers[i];
      if (h.type == kNhRouting) {
        predictRouting(packet, h);
      } else {
        walkOptions(packet, h, true);
      }
    }
  }
  if (zeroIcv) std::memset(p + loc.icvOffset, 0, icvLength);
  return loc;
}

InsertionPoint findInsertionPoint(std::span<const std::uint8_t> packet) noexcept {
  InsertionPoint ip;
  const IpExtent e = ipExtent(packet);
  if (e.error != AhError::kOk) {
    ip.error = e.error;
    return ip;
  }
  if (!e.ipv6) {
    ip.offset = e.headerLength;
    ip.nextHeaderOffset = 9;
    ip.nextHeader = packet[9];
    return ip;
  }
  std::uint8_t nh = packet[6];
  std::size_t nhOffset = 6;
  std::size_t off = kIpv6Header;
  for (unsigned count = 0;; ++count) {
    bool before = nh == kNhHopByHop || nh == kNhRouting || nh == kNhFragment;
    std::size_t len = 8;  // the fragment header's fixed length
    if (nh == kNhDestOpts) {
      // Destination options for the intermediate destinations come before a
      // routing header (RFC 8200 §4.1 item 3); the final destination's
      // options (item 8) follow ESP/AH.
      before = e.totalLength - off >= 2 && packet[off] == kNhRouting;
    }
    if (!before) break;
    if (count == kMaxExtensionHeaders) {
      ip.error = AhError::kTooManyExtHeaders;
      return ip;
    }
    if (e.totalLength - off < 8) {
      ip.error = AhError::kTruncated;
      return ip;
    }
    if (nh != kNhFragment) len = (std::size_t{packet[off + 1]} + 1) * 8;
    if (e.totalLength - off < len) {
      ip.error = AhError::kTruncated;
      return ip;
    }
    nh = packet[off];
    nhOffset = off;
    off += len;
  }
  ip.offset = off;
  ip.nextHeaderOffset = nhOffset;
  ip.nextHeader = nh;
  return ip;
}

}  // namespace ipsec::ah
