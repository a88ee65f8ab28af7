// GRO in software (see coalesce.h).
#include "offload/coalesce.h"

#include <array>
#include <cstring>

#include "offload/packet.h"

namespace ipsec::offload {

namespace {

constexpr std::uint8_t kTcpFin = 0x01;
constexpr std::uint8_t kTcpSyn = 0x02;
constexpr std::uint8_t kTcpRst = 0x04;
constexpr std::uint8_t kTcpPsh = 0x08;
constexpr std::uint8_t kTcpUrg = 0x20;
constexpr std::uint8_t kTcpCwr = 0x80;
constexpr std::uint16_t kIpv4Df = 0x4000;

// One TCP (or UDP) packet that may take part in a merge, as far as its own
// bytes go.
struct TcpView {
  PacketLayout layout;
  std::size_t tcp = 0;  // = layout.l4Offset
  std::uint32_t seq = 0;    // TCP only
  std::uint8_t flags = 0;   // TCP only
  std::uint32_t payload = 0;
  bool isTcp() const noexcept { return layout.protocol == kProtoTcp; }
};

// IPv4 without options, IPv6 without extension headers, TCP (or UDP when
// asked for) with a payload.
bool viewTcp(std::span<const std::uint8_t> p, const CoalesceOptions& options, TcpView& v) noexcept {
  v.layout = parseLayout(p);
  if (!v.layout.ok() || (v.layout.protocol != kProtoTcp && !options.udp)) return false;
  if (v.layout.version == 4 && v.layout.l4Offset != kIpv4MinHeader) return false;
  v.tcp = v.layout.l4Offset;
  if (v.isTcp()) {
    v.seq = load32(&p[v.tcp + 4]);
    v.flags = p[v.tcp + 13];
  }
  v.payload = v.layout.payloadLength();
  return v.payload > 0;
}

// The kernel checks both before GRO (ip_fast_csum, skb_gro_checksum_validate):
// a merged packet goes up with NEEDS_CSUM, so a bad checksum must not hide in it.
bool checksumsValid(std::span<const std::uint8_t> p, const TcpView& v) noexcept {
  if (v.layout.version == 4 && ipv4HeaderChecksum(p) != load16(&p[10])) return false;
  return transportChecksumValid(p, v.layout);
}

bool mayStartGroup(const TcpView& v) noexcept {
  return !v.isTcp() || (v.flags & (kTcpSyn | kTcpRst | kTcpUrg | kTcpPsh | kTcpFin)) == 0;
}

// inet_gro_receive / ipv6_gro_receive: same flow and nothing that flushes.
bool sameIpFlow(std::span<const std::uint8_t> h, std::span<const std::uint8_t> c, std::uint32_t index) noexcept {
  if ((h[0] >> 4) == 4) {
    return h[1] == c[1] && h[8] == c[8] && h[9] == c[9] && std::memcmp(&h[12], &c[12], 8) == 0 &&
           (load16(&h[6]) & kIpv4Df) == (load16(&c[6]) & kIpv4Df) &&
           static_cast<std::uint16_t>(load16(&h[4]) + index) == load16(&c[4]);
  }
  return std::memcmp(&h[0], &c[0], 4) == 0 && h[7] == c[7] && std::memcmp(&h[8], &c[8], 32) == 0;
}

// tcp_gro_receive: ports, ACK, the word of data offset, flags and window
// (CWR/FIN/PSH aside; CWR on the newcomer flushes), then options bytewise.
bool sameTcpHeader(std::span<const std::uint8_t> h, const TcpView& hv, std::span<const std::uint8_t> c,
                   const TcpView& cv) noexcept {
  if (hv.layout.headerLength != cv.layout.headerLength) return false;
  const std::uint8_t* ht = &h[hv.tcp];
  const std::uint8_t* ct = &c[cv.tcp];
  const std::uint8_t mayDiffer = kTcpCwr | kTcpFin | kTcpPsh;
  if ((cv.flags & kTcpCwr) != 0 || ((hv.flags ^ cv.flags) & ~mayDiffer) != 0) return false;
  if (std::memcmp(ht, ct, 4) != 0 || std::memcmp(ht + 8, ct + 8, 5) != 0) return false;  // ports; ACK, offset
  const std::size_t tcpLength = hv.layout.headerLength - hv.tcp;
  return std::memcmp(ht + 14, ct + 14, 2) == 0 && std::memcmp(ht + 20, ct + 20, tcpLength - 20) == 0;
}

// A group being built: its head and what it holds so far.
struct OpenGroup {
  std::span<const std::uint8_t> head;
  TcpView headView;
  bool headChecked = false;
  std::uint32_t count = 0;
  std::uint32_t payload = 0;  // bytes of payload so far
  bool ended = false;         // a short payload, PSH or FIN came
};

// udp_gro_receive_segment: the same ports (the IP flow is checked apart).
bool sameUdpPorts(std::span<const std::uint8_t> h, const TcpView& hv, std::span<const std::uint8_t> c,
                  const TcpView& cv) noexcept {
  return std::memcmp(&h[hv.tcp], &c[cv.tcp], 4) == 0;
}

bool mayJoin(OpenGroup& g, std::span<const std::uint8_t> c, const TcpView& cv) noexcept {
  if (g.ended || g.count >= kMaxSegments || cv.payload > g.headView.payload) return false;
  if (g.headView.layout.version != cv.layout.version || g.headView.layout.protocol != cv.layout.protocol) {
    return false;
  }
  if (std::size_t{g.headView.layout.headerLength} + g.payload + cv.payload > kMaxPacket) return false;
  if (!sameIpFlow(g.head, c, g.count)) return false;
  if (cv.isTcp()) {
    if (cv.seq != g.headView.seq + g.payload || !sameTcpHeader(g.head, g.headView, c, cv)) return false;
  } else if (!sameUdpPorts(g.head, g.headView, c, cv)) {
    return false;
  }
  if (!g.headChecked) {
    if (!checksumsValid(g.head, g.headView)) return false;
    g.headChecked = true;
  }
  return checksumsValid(c, cv);
}

VnetHeader mergedHeader(const TcpView& head) noexcept {
  VnetHeader h;
  h.flags = kVnetFlagNeedsChecksum;
  if (head.isTcp()) {
    h.gsoType = head.layout.version == 4 ? kGsoTcpV4 : kGsoTcpV6;
    if ((head.flags & kTcpCwr) != 0) h.gsoType |= kGsoEcn;
  } else {
    h.gsoType = kGsoUdpL4;
  }
  h.gsoSize = static_cast<std::uint16_t>(head.payload);
  h.headerLength = head.layout.headerLength;
  h.checksumStart = head.layout.l4Offset;
  h.checksumOffset = head.isTcp() ? kTcpChecksumOffset : kUdpChecksumOffset;
  return h;
}

CoalesceGroup alone(std::uint32_t index, std::size_t length) noexcept {
  CoalesceGroup g;
  g.first = index;
  g.count = 1;
  g.length = static_cast<std::uint32_t>(length);
  return g;
}

// The IP lengths, PSH/FIN (TCP) or the UDP length, and the partial checksum
// of a merged packet of `total` bytes, in its headers `out`.
void finishMerged(std::span<std::uint8_t> out, const CoalesceGroup& group, bool isTcp, bool isIpv4,
                  std::uint8_t lastFlags, std::size_t total) noexcept {
  const std::size_t l4 = group.header.checksumStart;
  const std::uint32_t l4Length = static_cast<std::uint32_t>(total - l4);
  if (isIpv4) {
    store16(&out[2], static_cast<std::uint16_t>(total));
    store16(&out[10], ipv4HeaderChecksum(out));
  } else {
    store16(&out[4], static_cast<std::uint16_t>(total - kIpv6Header));
  }
  if (isTcp) {
    out[l4 + 13] |= lastFlags & (kTcpFin | kTcpPsh);
  } else {
    store16(&out[l4 + 4], static_cast<std::uint16_t>(l4Length));
  }
  PacketLayout layout;
  layout.version = isIpv4 ? 4 : 6;
  layout.protocol = isTcp ? kProtoTcp : kProtoUdp;
  store16(&out[l4 + group.header.checksumOffset], checksumFold(pseudoHeaderSum(out, layout, l4Length)));
}

}  // namespace

std::size_t planCoalesce(std::span<const std::span<const std::uint8_t>> burst, std::span<CoalesceGroup> groups,
                         const CoalesceOptions& options) noexcept {
  std::size_t filled = 0;
  std::size_t i = 0;
  while (i < burst.size() && filled < groups.size()) {
    OpenGroup g;
    g.head = burst[i];
    if (!viewTcp(g.head, options, g.headView) || !mayStartGroup(g.headView)) {
      groups[filled++] = alone(static_cast<std::uint32_t>(i), burst[i].size());
      ++i;
      continue;
    }
    g.count = 1;
    g.payload = g.headView.payload;
    TcpView cv;
    while (i + g.count < burst.size() && viewTcp(burst[i + g.count], options, cv) &&
           mayJoin(g, burst[i + g.count], cv)) {
      ++g.count;
      g.payload += cv.payload;
      g.ended = cv.payload < g.headView.payload || (cv.flags & (kTcpPsh | kTcpFin)) != 0;
    }
    CoalesceGroup group = alone(static_cast<std::uint32_t>(i), g.head.size());
    if (g.count > 1) {
      group.count = g.count;
      group.length = g.headView.layout.headerLength + g.payload;
      group.header = mergedHeader(g.headView);
    }
    groups[filled++] = group;
    i += g.count;
  }
  return filled;
}

std::size_t sliceCoalesced(const CoalesceGroup& group, std::span<const std::span<const std::uint8_t>> burst,
                           std::span<std::uint8_t, kMaxMergedHeaders> headerBytes,
                           std::span<std::span<const std::uint8_t>> slices) noexcept {
  if (group.count == 0 || group.first >= burst.size() || burst.size() - group.first < group.count) return 0;
  const auto head = burst[group.first];
  if (group.count == 1) {
    if (head.size() != group.length || slices.empty()) return 0;
    slices[0] = head;
    return 1;
  }
  if (slices.size() < std::size_t{group.count} + 1) return 0;
  const std::size_t headers = group.header.headerLength;
  if (headers > headerBytes.size()) return 0;
  std::size_t total = head.size();
  for (std::uint32_t k = 1; k < group.count; ++k) {
    if (burst[group.first + k].size() < headers) return 0;
    total += burst[group.first + k].size() - headers;
  }
  const std::uint8_t kind = group.header.gsoKind();
  const bool isTcp = kind == kGsoTcpV4 || kind == kGsoTcpV6;
  if (!isTcp && kind != kGsoUdpL4) return 0;
  const std::size_t l4 = group.header.checksumStart;
  if (total != group.length || head.size() < headers || headers < l4 + (isTcp ? kTcpMinHeader : kUdpHeader)) return 0;
  // The IP header must be the one the plan saw: without options or extensions.
  const bool isIpv4 = head[0] == 0x45 && l4 == kIpv4MinHeader && kind != kGsoTcpV6;
  const bool isIpv6 = (head[0] >> 4) == 6 && l4 == kIpv6Header && kind != kGsoTcpV4;
  if (!isIpv4 && !isIpv6) return 0;
  const std::uint8_t lastFlags = isTcp ? burst[group.first + group.count - 1][l4 + 13] : 0;
  const std::span<std::uint8_t> out = headerBytes.first(headers);
  std::memcpy(out.data(), head.data(), headers);
  finishMerged(out, group, isTcp, isIpv4, lastFlags, total);
  slices[0] = out;
  for (std::uint32_t k = 0; k < group.count; ++k) slices[1 + k] = burst[group.first + k].subspan(headers);
  return std::size_t{group.count} + 1;
}

std::size_t writeCoalesced(const CoalesceGroup& group, std::span<const std::span<const std::uint8_t>> burst,
                           std::span<std::uint8_t> out) noexcept {
  std::array<std::uint8_t, kMaxMergedHeaders> headers;
  std::array<std::span<const std::uint8_t>, kMaxSegments + 1> slices;
  const std::size_t n = sliceCoalesced(group, burst, headers, slices);
  if (n == 0 || out.size() < group.length) return 0;
  // In place, the first packet's payload is already where it goes, and each
  // later payload lands behind the earlier ones, before its own bytes.
  std::size_t at = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (out.data() + at != slices[i].data()) std::memmove(out.data() + at, slices[i].data(), slices[i].size());
    at += slices[i].size();
  }
  return at;
}

}  // namespace ipsec::offload
