// Layout and checksums of IPv4/IPv6 + TCP/UDP packets (see packet.h).
#include "offload/packet.h"

#include "checksum/internet.h"

namespace ipsec::offload {

const char* toString(LayoutError error) noexcept {
  switch (error) {
    case LayoutError::kOk: return "ok";
    case LayoutError::kShort: return "short";
    case LayoutError::kBadVersion: return "bad_version";
    case LayoutError::kBadIpv4HeaderLength: return "bad_ipv4_header_length";
    case LayoutError::kLengthMismatch: return "length_mismatch";
    case LayoutError::kFragment: return "fragment";
    case LayoutError::kNotTcpOrUdp: return "not_tcp_or_udp";
    case LayoutError::kBadTcpHeaderLength: return "bad_tcp_header_length";
  }
  return "unknown";
}

namespace {

PacketLayout fail(LayoutError error) noexcept {
  PacketLayout layout;
  layout.error = error;
  return layout;
}

// The IP part: version, where the transport header starts, which protocol.
PacketLayout parseIp(std::span<const std::uint8_t> p) noexcept {
  if (p.empty()) return fail(LayoutError::kShort);
  PacketLayout layout;
  layout.length = static_cast<std::uint32_t>(p.size());
  layout.version = p[0] >> 4;
  if (layout.version == 4) {
    if (p.size() < kIpv4MinHeader) return fail(LayoutError::kShort);
    const std::size_t ihl = (p[0] & 0x0f) * 4u;
    if (ihl < kIpv4MinHeader || ihl > p.size()) return fail(LayoutError::kBadIpv4HeaderLength);
    if (load16(&p[2]) != p.size()) return fail(LayoutError::kLengthMismatch);
    if ((load16(&p[6]) & 0x3fff) != 0) return fail(LayoutError::kFragment);
    layout.l4Offset = static_cast<std::uint16_t>(ihl);
    layout.protocol = p[9];
  } else if (layout.version == 6) {
    if (p.size() < kIpv6Header) return fail(LayoutError::kShort);
    if (load16(&p[4]) + kIpv6Header != p.size()) return fail(LayoutError::kLengthMismatch);
    layout.l4Offset = kIpv6Header;
    layout.protocol = p[6];  // an extension header here is refused below
  } else {
    return fail(LayoutError::kBadVersion);
  }
  if (layout.protocol != kProtoTcp && layout.protocol != kProtoUdp) return fail(LayoutError::kNotTcpOrUdp);
  return layout;
}

}  // namespace

PacketLayout parseLayout(std::span<const std::uint8_t> p) noexcept {
  PacketLayout layout = parseIp(p);
  if (!layout.ok()) return layout;
  const std::size_t l4 = layout.l4Offset;
  if (layout.protocol == kProtoTcp) {
    if (p.size() < l4 + kTcpMinHeader) return fail(LayoutError::kShort);
    const std::size_t doff = (p[l4 + 12] >> 4) * 4u;
    if (doff < kTcpMinHeader || l4 + doff > p.size()) return fail(LayoutError::kBadTcpHeaderLength);
    layout.headerLength = static_cast<std::uint16_t>(l4 + doff);
  } else {
    if (p.size() < l4 + kUdpHeader) return fail(LayoutError::kShort);
    if (load16(&p[l4 + 4]) != p.size() - l4) return fail(LayoutError::kLengthMismatch);
    layout.headerLength = static_cast<std::uint16_t>(l4 + kUdpHeader);
  }
  return layout;
}

std::uint32_t checksumAdd(std::uint32_t sum, std::span<const std::uint8_t> data) noexcept {
  return checksum::add(sum, data);
}

std::uint16_t checksumFold(std::uint32_t sum) noexcept { return checksum::fold(sum); }

std::uint32_t pseudoHeaderSum(std::span<const std::uint8_t> p, const PacketLayout& layout,
                              std::uint32_t l4Length) noexcept {
  std::uint32_t sum = layout.protocol + l4Length;
  if (layout.version == 4) return checksumAdd(sum, p.subspan(12, 8));
  return checksumAdd(sum, p.subspan(8, 32));
}

std::uint16_t ipv4HeaderChecksum(std::span<const std::uint8_t> header) noexcept {
  return checksum::ipv4Header(header.first((header[0] & 0x0f) * 4u));
}

bool transportChecksumValid(std::span<const std::uint8_t> p, const PacketLayout& layout) noexcept {
  const auto l4 = p.subspan(layout.l4Offset);
  if (layout.protocol == kProtoUdp && layout.version == 4 && load16(&l4[kUdpChecksumOffset]) == 0) return true;
  const std::uint32_t sum = checksumAdd(pseudoHeaderSum(p, layout, static_cast<std::uint32_t>(l4.size())), l4);
  return checksumFold(sum) == 0xffff;
}

}  // namespace ipsec::offload
