// See ah_frame.h.
#include "ah_frame.h"

#include <netinet/in.h>

#include <cstring>

#include "esp/transport.h"

namespace ipsec::forwarder::ahframe {
namespace {

void store16(std::uint8_t* p, std::uint16_t v) noexcept {
  p[0] = static_cast<std::uint8_t>(v >> 8);
  p[1] = static_cast<std::uint8_t>(v);
}
std::uint16_t load16(const std::uint8_t* p) noexcept { return static_cast<std::uint16_t>(p[0] << 8 | p[1]); }

constexpr std::size_t kMaxIpv4Total = 65535;
constexpr std::size_t kMaxIpv6Payload = 65535;

}  // namespace

void fixIpv4Checksum(std::uint8_t* ip) noexcept {
  const std::size_t ihl = (ip[0] & 0x0fu) * 4u;
  store16(ip + 10, esp::ipv4HeaderChecksum({ip, ihl}));
}

Framed frameTunnel(std::span<std::uint8_t> buf, std::size_t innerOffset, std::size_t innerLength, const Outer& outer,
                   std::uint32_t spi, std::uint32_t seqLow, std::size_t icvLength, std::uint8_t nextHeader) noexcept {
  Framed f;
  const bool v6 = outer.dst.isV6();
  const std::size_t ipLen = v6 ? 40 : 20;
  const std::size_t ahLen = ah::headerLength(icvLength, v6);
  if (innerOffset < ipLen + ahLen || innerOffset + innerLength > buf.size() || innerLength == 0) {
    f.error = ah::AhError::kNoHeadroom;
    return f;
  }
  const std::size_t total = ipLen + ahLen + innerLength;
  if (v6 ? total - 40 > kMaxIpv6Payload : total > kMaxIpv4Total) {
    f.error = ah::AhError::kBadLength;
    return f;
  }
  f.start = innerOffset - ahLen - ipLen;
  f.length = total;
  std::uint8_t* ip = buf.data() + f.start;
  const std::uint8_t innerVersion = buf[innerOffset] >> 4;
  if (!v6) {
    ip[0] = 0x45;
    ip[1] = outer.tos;
    store16(ip + 2, static_cast<std::uint16_t>(total));
    store16(ip + 4, outer.ipv4Id);
    store16(ip + 6, outer.dontFragment ? 0x4000 : 0);
    ip[8] = outer.hopLimit;
    ip[9] = ah::kProtoAh;
    std::memcpy(ip + 12, outer.src.bytes().data(), 4);
    std::memcpy(ip + 16, outer.dst.bytes().data(), 4);
    fixIpv4Checksum(ip);
  } else {
    ip[0] = static_cast<std::uint8_t>(0x60 | outer.tos >> 4);
    ip[1] = static_cast<std::uint8_t>(outer.tos << 4);
    ip[2] = ip[3] = 0;
    store16(ip + 4, static_cast<std::uint16_t>(total - 40));
    ip[6] = ah::kProtoAh;
    ip[7] = outer.hopLimit;
    std::memcpy(ip + 8, outer.src.bytes().data(), 16);
    std::memcpy(ip + 24, outer.dst.bytes().data(), 16);
  }
  std::size_t written = 0;
  std::uint8_t next = nextHeader;
  if (next == 0) next = innerVersion == 4 ? IPPROTO_IPIP : IPPROTO_IPV6;
  f.error = ah::writeHeader({ip + ipLen, ahLen}, next, spi, seqLow, icvLength, v6, &written);
  return f;
}

Framed frameTransport(std::span<std::uint8_t> buf, std::size_t offset, std::size_t length, std::uint32_t spi,
                      std::uint32_t seqLow, std::size_t icvLength) noexcept {
  Framed f;
  if (offset + length > buf.size() || length < 20) {
    f.error = ah::AhError::kTruncated;
    return f;
  }
  std::uint8_t* host = buf.data() + offset;
  const bool v6 = (host[0] >> 4) == 6;
  if (!v6 && (load16(host + 6) & 0x3fffu) != 0) {  // MF or a fragment offset
    f.error = ah::AhError::kFragment;
    return f;
  }
  const auto at = ah::findInsertionPoint({host, length});
  if (!at.ok()) {
    f.error = at.error;
    return f;
  }
  const std::size_t ahLen = ah::headerLength(icvLength, v6);
  if (offset < ahLen) {
    f.error = ah::AhError::kNoHeadroom;
    return f;
  }
  const std::size_t total = length + ahLen;
  if (v6 ? total - 40 > kMaxIpv6Payload : total > kMaxIpv4Total) {
    f.error = ah::AhError::kBadLength;
    return f;
  }
  f.start = offset - ahLen;
  f.length = total;
  std::uint8_t* ip = buf.data() + f.start;
  std::memmove(ip, host, at.offset);
  ip[at.nextHeaderOffset] = ah::kProtoAh;
  std::size_t written = 0;
  f.error = ah::writeHeader({ip + at.offset, ahLen}, at.nextHeader, spi, seqLow, icvLength, v6, &written);
  if (!f.ok()) return f;
  if (v6) {
    store16(ip + 4, static_cast<std::uint16_t>(total - 40));
  } else {
    store16(ip + 2, static_cast<std::uint16_t>(total));
    fixIpv4Checksum(ip);
  }
  return f;
}

Framed stripTransport(std::span<std::uint8_t> buf, std::size_t start, std::size_t length, std::size_t ahOffset,
                      std::size_t nextHeaderOffset) noexcept {
  Framed f;
  if (start + length > buf.size() || ahOffset + ah::kFixedLength > length || nextHeaderOffset >= ahOffset) {
    f.error = ah::AhError::kTruncated;
    return f;
  }
  std::uint8_t* ip = buf.data() + start;
  const std::uint8_t next = ip[ahOffset];
  const std::size_t ahLen = (std::size_t{ip[ahOffset + 1]} + 2) * 4;
  if (ahOffset + ahLen > length) {
    f.error = ah::AhError::kTruncated;
    return f;
  }
  ip[nextHeaderOffset] = next;
  std::memmove(ip + ahLen, ip, ahOffset);
  f.start = start + ahLen;
  f.length = length - ahLen;
  std::uint8_t* out = buf.data() + f.start;
  if ((out[0] >> 4) == 6) {
    store16(out + 4, static_cast<std::uint16_t>(f.length - 40));
  } else {
    store16(out + 2, static_cast<std::uint16_t>(f.length));
    fixIpv4Checksum(out);
  }
  return f;
}

Framed rebuildIpv6(std::span<std::uint8_t> buf, std::size_t at, std::size_t payloadLength, const esp::IpAddress& src,
                   const esp::IpAddress& dst, std::uint8_t trafficClass, std::uint8_t hopLimit,
                   std::span<const std::uint8_t> ext, std::uint8_t firstNextHeader) noexcept {
  Framed f;
  if (at < 40 + ext.size() || at + payloadLength > buf.size() || !src.isV6() || !dst.isV6()) {
    f.error = ah::AhError::kHeadersTooLong;
    return f;
  }
  const std::size_t payload = ext.size() + payloadLength;
  if (payload > kMaxIpv6Payload) {
    f.error = ah::AhError::kBadLength;
    return f;
  }
  f.start = at - 40 - ext.size();
  f.length = 40 + payload;
  std::uint8_t* ip = buf.data() + f.start;
  ip[0] = static_cast<std::uint8_t>(0x60 | trafficClass >> 4);
  ip[1] = static_cast<std::uint8_t>(trafficClass << 4);
  ip[2] = ip[3] = 0;
  store16(ip + 4, static_cast<std::uint16_t>(payload));
  ip[6] = firstNextHeader;
  ip[7] = hopLimit;
  std::memcpy(ip + 8, src.bytes().data(), 16);
  std::memcpy(ip + 24, dst.bytes().data(), 16);
  if (!ext.empty()) std::memcpy(ip + 40, ext.data(), ext.size());
  return f;
}

}  // namespace ipsec::forwarder::ahframe
