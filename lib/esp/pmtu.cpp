// Outer headers, fragments and PMTU messages (see pmtu.h). Byte offsets are
// those of RFC 791 (IPv4), RFC 8200 (IPv6), RFC 768 (UDP), RFC 792/1191
// (ICMP) and RFC 4443 (ICMPv6).
#include "esp/pmtu.h"

#include <algorithm>
#include <cstring>

#include "checksum/internet.h"

namespace ipsec::esp {
namespace {

constexpr size_t kIpv4Header = 20;
constexpr size_t kIpv6Header = 40;
constexpr size_t kUdpHeader = 8;
constexpr size_t kFragmentHeader = 8;
constexpr size_t kIcmpHeader = 8;
constexpr size_t kIpv4ErrorMax = 576;   // RFC 1812 §4.3.2.3
constexpr size_t kIpv6MinMtu = 1280;    // RFC 8200 §5
constexpr uint8_t kProtoFragment = 44;
constexpr uint16_t kIpv4Df = 0x4000, kIpv4Mf = 0x2000, kIpv4OffsetMask = 0x1fff;

uint16_t load16(const uint8_t* p) noexcept { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
void store16(uint8_t* p, uint16_t v) noexcept {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
void store32(uint8_t* p, uint32_t v) noexcept {
  store16(p, static_cast<uint16_t>(v >> 16));
  store16(p + 2, static_cast<uint16_t>(v));
}

int versionOf(std::span<const uint8_t> p) noexcept { return p.empty() ? 0 : p[0] >> 4; }

void ipv4HeaderChecksum(uint8_t* h) noexcept {
  store16(h + 10, checksum::ipv4Header({h, kIpv4Header}));
}

// The IPv6 pseudo-header (RFC 8200 §8.1) of an upper-layer packet.
uint32_t pseudoHeader6(const uint8_t* src, const uint8_t* dst, uint32_t length, uint8_t nextHeader) noexcept {
  uint32_t sum = checksumAdd(0, {src, 16});
  sum = checksumAdd(sum, {dst, 16});
  uint8_t tail[8] = {};
  store32(tail, length);
  tail[7] = nextHeader;
  return checksumAdd(sum, {tail, sizeof tail});
}

bool multicastOrUnspecified(const IpAddress& a) noexcept {
  auto b = a.bytes();
  if (a.isV4()) {
    const uint32_t v = static_cast<uint32_t>(b[0]) << 24 | static_cast<uint32_t>(b[1]) << 16 |
                       static_cast<uint32_t>(b[2]) << 8 | b[3];
    return v == 0 || (b[0] & 0xf0) == 0xe0 || v == 0xffffffffu;
  }
  return b[0] == 0xff || std::all_of(b.begin(), b.end(), [](uint8_t x) { return x == 0; });
}

}  // namespace

uint32_t checksumAdd(uint32_t sum, std::span<const uint8_t> data) noexcept {
  return checksum::fold(checksum::add(sum, data));
}

uint16_t checksumFinish(uint32_t sum) noexcept { return static_cast<uint16_t>(~checksum::fold(sum)); }

bool IcmpRateLimit::available(uint64_t nowMs) noexcept {
  const uint64_t second = nowMs / 1000;
  if (second != second_) {
    second_ = second;
    thisSecond_ = 0;
  }
  return thisSecond_ < perSecond_;
}

DfPolicy dfPolicyFromSysctl(int64_t value) noexcept {
  switch (value) {
    case 0: return DfPolicy::kClear;
    case 1: return DfPolicy::kSet;
    default: return DfPolicy::kCopy;
  }
}

DfPolicy effectiveDfPolicy(uint8_t saPolicy, DfPolicy sysctl) noexcept {
  switch (saPolicy) {
    case 1: return DfPolicy::kClear;
    case 2: return DfPolicy::kSet;
    case 3: return DfPolicy::kCopy;
    default: return sysctl == DfPolicy::kInherit ? DfPolicy::kCopy : sysctl;
  }
}

bool ipv4DontFragment(std::span<const uint8_t> packet) noexcept {
  return packet.size() >= kIpv4Header && versionOf(packet) == 4 && (load16(packet.data() + 6) & kIpv4Df) != 0;
}

bool outerDontFragment(DfPolicy policy, std::span<const uint8_t> inner) noexcept {
  switch (policy) {
    case DfPolicy::kClear: return false;
    case DfPolicy::kSet: return true;
    default:
      // An IPv6 inner packet may not be fragmented on its way either (RFC 8200 §5).
      return versionOf(inner) == 6 || ipv4DontFragment(inner);
  }
}

size_t ipPacketLength(std::span<const uint8_t> packet) noexcept {
  switch (versionOf(packet)) {
    case 4: {
      if (packet.size() < kIpv4Header) return 0;
      const size_t total = load16(packet.data() + 2);
      const size_t ihl = (packet[0] & 0x0fu) * 4u;
      return total >= ihl && ihl >= kIpv4Header && total <= packet.size() ? total : 0;
    }
    case 6: {
      if (packet.size() < kIpv6Header) return 0;
      const size_t total = kIpv6Header + load16(packet.data() + 4);
      return total <= packet.size() ? total : 0;
    }
    default: return 0;
  }
}

size_t espPacketLength(const EspLayout& layout, size_t innerLength) noexcept {
  const size_t align = layout.padAlign == 0 ? 4 : layout.padAlign;
  const size_t encrypted = (innerLength + kEspTrailerLength + align - 1) / align * align;
  return layout.headroom() + encrypted + layout.icvLength;
}

size_t maxInnerLength(const EspLayout& layout, size_t mtu, size_t outerOverhead) noexcept {
  const size_t align = layout.padAlign == 0 ? 4 : layout.padAlign;
  const size_t fixed = outerOverhead + layout.headroom() + layout.icvLength;
  if (mtu < fixed + align) return 0;
  const size_t encrypted = (mtu - fixed) / align * align;  // whole blocks only
  return encrypted < kEspTrailerLength ? 0 : encrypted - kEspTrailerLength;
}

size_t maxTransportLength(const EspLayout* layout, size_t mtu, size_t headerLength, size_t extra) noexcept {
  if (!layout) return mtu > headerLength + extra ? mtu - extra : 0;
  const size_t payload = maxInnerLength(*layout, mtu, headerLength + extra);
  return payload == 0 ? 0 : headerLength + payload;
}

size_t outerHeaderLength(const OuterHeader& h) noexcept {
  return (h.dst.isV4() ? kIpv4Header : kIpv6Header) + (h.udp() ? kUdpHeader : 0);
}

namespace {

// The IPv4 header (and the UDP header of ESP in UDP, checksum 0: RFC 3948
// §2.1) at p, for espLength bytes of ESP behind it: nothing of them is read.
bool writeIpv4OuterHeader(uint8_t* p, size_t espLength, const OuterHeader& h) noexcept {
  const size_t head = outerHeaderLength(h);
  const size_t total = head + espLength;
  if (total > 0xffff) return false;
  p[0] = 0x45;
  p[1] = h.tos;
  store16(p + 2, static_cast<uint16_t>(total));
  store16(p + 4, h.id);
  store16(p + 6, h.dontFragment ? kIpv4Df : 0);
  p[8] = h.ttl;
  p[9] = h.udp() ? kProtoUdp : 50;
  std::memcpy(p + 12, h.src.bytes().data(), 4);
  std::memcpy(p + 16, h.dst.bytes().data(), 4);
  ipv4HeaderChecksum(p);
  if (h.udp()) {
    uint8_t* u = p + kIpv4Header;
    store16(u, h.udpSport);
    store16(u + 2, h.udpDport);
    store16(u + 4, static_cast<uint16_t>(kUdpHeader + espLength));
    store16(u + 6, 0);
  }
  return true;
}

}  // namespace

std::optional<size_t> writeOuterHeaderApart(std::span<uint8_t> out, size_t espLength, const OuterHeader& h) noexcept {
  const size_t head = outerHeaderLength(h);
  if (!h.dst.isV4() || h.src.family() != h.dst.family() || out.size() < head) return std::nullopt;
  if (!writeIpv4OuterHeader(out.data(), espLength, h)) return std::nullopt;
  return head;
}

std::optional<size_t> writeOuterHeader(std::span<uint8_t> buf, size_t espOffset, size_t espLength,
                                       const OuterHeader& h) noexcept {
  const size_t head = outerHeaderLength(h);
  if (h.src.family() != h.dst.family() || espOffset < head || espOffset > buf.size() ||
      espLength > buf.size() - espOffset) {
    return std::nullopt;
  }
  uint8_t* p = buf.data() + espOffset - head;
  if (h.dst.isV4()) {
    if (!writeIpv4OuterHeader(p, espLength, h)) return std::nullopt;
    return espOffset - head;
  }
  const size_t payload = head - kIpv6Header + espLength;
  if (payload > 0xffff) return std::nullopt;
  store32(p, 0x60000000u | static_cast<uint32_t>(h.tos) << 20);
  store16(p + 4, static_cast<uint16_t>(payload));
  p[6] = h.udp() ? kProtoUdp : 50;
  p[7] = h.ttl;
  std::memcpy(p + 8, h.src.bytes().data(), 16);
  std::memcpy(p + 24, h.dst.bytes().data(), 16);
  if (h.udp()) {
    const size_t udpLength = kUdpHeader + espLength;
    uint8_t* u = p + kIpv6Header;
    store16(u, h.udpSport);
    store16(u + 2, h.udpDport);
    store16(u + 4, static_cast<uint16_t>(udpLength));
    store16(u + 6, 0);
    uint32_t sum = pseudoHeader6(p + 8, p + 24, static_cast<uint32_t>(udpLength), kProtoUdp);
    sum = checksumAdd(sum, {u, udpLength});
    uint16_t c = checksumFinish(sum);
    store16(u + 6, c == 0 ? 0xffff : c);  // 0 means "none" (RFC 768)
  }
  return espOffset - head;
}

size_t fragmentPacket(std::span<const uint8_t> packet, size_t mtu, uint32_t id, std::span<Fragment> out) noexcept {
  const size_t total = ipPacketLength(packet);
  if (total == 0) return 0;
  const bool v4 = versionOf(packet) == 4;
  if (v4 && (packet[0] & 0x0fu) != 5) return 0;  // no IPv4 options to sort into copied or not
  if (!v4 && (packet[6] == 0 || packet[6] == 43 || packet[6] == kProtoFragment || packet[6] == 60)) return 0;
  const size_t unfragmentable = v4 ? kIpv4Header : kIpv6Header;
  const size_t fragHeader = v4 ? kIpv4Header : kIpv6Header + kFragmentHeader;
  if (mtu < fragHeader + 8) return 0;
  const size_t chunk = (mtu - fragHeader) / 8 * 8;  // every fragment but the last: a multiple of 8
  const size_t payload = total - unfragmentable;
  const size_t count = payload == 0 ? 1 : (payload + chunk - 1) / chunk;
  if (count > out.size()) return 0;
  if (v4 && (payload + 7) / 8 > kIpv4OffsetMask + 1u) return 0;
  for (size_t i = 0; i < count; ++i) {
    Fragment& f = out[i];
    const size_t offset = i * chunk;
    const size_t length = std::min(chunk, payload - offset);
    const bool more = i + 1 < count;
    f.offset = static_cast<uint32_t>(unfragmentable + offset);
    f.length = static_cast<uint32_t>(length);
    f.headerLength = static_cast<uint8_t>(fragHeader);
    uint8_t* h = f.header.data();
    std::memcpy(h, packet.data(), unfragmentable);
    if (v4) {
      store16(h + 2, static_cast<uint16_t>(kIpv4Header + length));
      store16(h + 4, static_cast<uint16_t>(id));
      store16(h + 6, static_cast<uint16_t>((more ? kIpv4Mf : 0) | (offset / 8)));
      ipv4HeaderChecksum(h);
    } else {
      const uint8_t next = packet[6];
      store16(h + 4, static_cast<uint16_t>(kFragmentHeader + length));
      h[6] = kProtoFragment;
      uint8_t* fh = h + kIpv6Header;
      fh[0] = next;
      fh[1] = 0;
      store16(fh + 2, static_cast<uint16_t>(offset | (more ? 1u : 0u)));  // offset in 8-byte units << 3
      store32(fh + 4, id);
    }
  }
  return count;
}

size_t buildFragmentationNeeded(std::span<const uint8_t> inner, uint16_t mtu, std::span<uint8_t> out) noexcept {
  const size_t total = ipPacketLength(inner);
  if (total == 0 || versionOf(inner) != 4) return 0;
  const uint8_t* ip = inner.data();
  const size_t ihl = (ip[0] & 0x0fu) * 4u;
  if ((load16(ip + 6) & kIpv4OffsetMask) != 0) return 0;  // only about the first fragment (RFC 1812 §4.3.2.7)
  if (ip[9] == kProtoIcmp) {
    // An ICMP error (or a truncated ICMP header) never earns an error.
    if (total < ihl + 1) return 0;
    const uint8_t type = ip[ihl];
    if (type != 0 && type != 8 && type != 13 && type != 14 && type != 15 && type != 16 && type != 17 && type != 18) {
      return 0;
    }
  }
  const IpAddress src = IpAddress::v4(std::span<const uint8_t, 4>(ip + 12, 4));
  if (multicastOrUnspecified(src)) return 0;
  const size_t quote = std::min(total, kIpv4ErrorMax - kIpv4Header - kIcmpHeader);
  const size_t length = kIpv4Header + kIcmpHeader + quote;
  if (out.size() < length) return 0;
  uint8_t* p = out.data();
  std::memset(p, 0, kIpv4Header + kIcmpHeader);
  p[0] = 0x45;
  p[1] = 0xc0;  // internetwork control, as routers send their ICMP
  store16(p + 2, static_cast<uint16_t>(length));
  p[8] = 64;
  p[9] = kProtoIcmp;
  std::memcpy(p + 12, ip + 16, 4);  // from the inner destination (see pmtu.h)
  std::memcpy(p + 16, ip + 12, 4);  // to the inner source
  ipv4HeaderChecksum(p);
  uint8_t* icmp = p + kIpv4Header;
  icmp[0] = 3;
  icmp[1] = 4;
  store16(icmp + 6, mtu);
  std::memcpy(icmp + kIcmpHeader, ip, quote);
  store16(icmp + 2, checksumFinish(checksumAdd(0, {icmp, kIcmpHeader + quote})));
  return length;
}

size_t buildPacketTooBig(std::span<const uint8_t> inner, uint32_t mtu, std::span<uint8_t> out) noexcept {
  const size_t total = ipPacketLength(inner);
  if (total == 0 || versionOf(inner) != 6) return 0;
  const uint8_t* ip = inner.data();
  const IpAddress src = IpAddress::v6(std::span<const uint8_t, 16>(ip + 8, 16));
  if (multicastOrUnspecified(src)) return 0;
  // Never about an ICMPv6 error (RFC 4443 §2.4 (e)): when ICMPv6 follows the
  // header directly and its type is below 128. (Behind extension headers we
  // do not look: parseInnerPacket has walked them for the SPD already, and an
  // error about an error there is harmless — the sender drops it.)
  if (ip[6] == kProtoIcmpv6 && (total < kIpv6Header + 1 || ip[kIpv6Header] < 128)) return 0;
  const size_t quote = std::min(total, kIpv6MinMtu - kIpv6Header - kIcmpHeader);
  const size_t length = kIpv6Header + kIcmpHeader + quote;
  if (out.size() < length) return 0;
  uint8_t* p = out.data();
  std::memset(p, 0, kIpv6Header + kIcmpHeader);
  store32(p, 0x60000000u);
  store16(p + 4, static_cast<uint16_t>(kIcmpHeader + quote));
  p[6] = kProtoIcmpv6;
  p[7] = 64;
  std::memcpy(p + 8, ip + 24, 16);   // from the inner destination (see pmtu.h)
  std::memcpy(p + 24, ip + 8, 16);   // to the inner source
  uint8_t* icmp = p + kIpv6Header;
  icmp[0] = 2;
  icmp[1] = 0;
  store32(icmp + 4, std::max<uint32_t>(mtu, kIpv6MinMtu));
  std::memcpy(icmp + kIcmpHeader, ip, quote);
  uint32_t sum = pseudoHeader6(p + 8, p + 24, static_cast<uint32_t>(kIcmpHeader + quote), kProtoIcmpv6);
  store16(icmp + 2, checksumFinish(checksumAdd(sum, {icmp, kIcmpHeader + quote})));
  return length;
}

}  // namespace ipsec::esp
