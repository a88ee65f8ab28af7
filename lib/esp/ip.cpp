// IP address values and the inner-packet selector parser (see ip.h).
// parseInnerPacket() runs on untrusted bytes in ipsec-forwarder: every read is
// preceded by a length check against the span, the IPv4 total length or the
// IPv6 payload length, whichever is smaller.
#include "esp/ip.h"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>
#include <cstring>

namespace ipsec::esp {

namespace {

constexpr uint8_t kExtHopByHop = 0;
constexpr uint8_t kExtRouting = 43;
constexpr uint8_t kExtFragment = 44;
constexpr uint8_t kExtDestOpts = 60;
constexpr int kMaxExtensionHeaders = 8;

uint16_t load16(const uint8_t* p) noexcept { return static_cast<uint16_t>(p[0] << 8 | p[1]); }

// Fills the port fields from the transport header at `l4` (length `avail`).
// Returns false when a header that must carry ports is cut short.
bool readPorts(FlowKey& key, const uint8_t* l4, size_t avail) noexcept {
  switch (key.proto) {
    case kProtoTcp:
    case kProtoUdp:
    case kProtoSctp:
      if (avail < 4) return false;
      key.srcPort = load16(l4);
      key.dstPort = load16(l4 + 2);
      return true;
    case kProtoIcmp:
    case kProtoIcmpv6:
      if (avail < 2) return false;
      key.srcPort = l4[0];
      key.dstPort = l4[1];
      return true;
    default:
      return true;
  }
}

std::optional<FlowKey> parseV4(std::span<const uint8_t> p) noexcept {
  if (p.size() < 20) return std::nullopt;
  const size_t ihl = size_t{p[0] & 0x0fu} * 4;
  const size_t total = load16(&p[2]);
  if (ihl < 20 || ihl > p.size() || total < ihl || total > p.size()) return std::nullopt;
  FlowKey key;
  key.version = 4;
  key.proto = p[9];
  key.src = IpAddress::v4(p.subspan<12, 4>());
  key.dst = IpAddress::v4(p.subspan<16, 4>());
  const uint16_t fragOffset = load16(&p[6]) & 0x1fffu;
  if (fragOffset != 0) {
    key.nonInitialFragment = true;
    return key;
  }
  if (!readPorts(key, p.data() + ihl, total - ihl)) return std::nullopt;
  return key;
}

std::optional<FlowKey> parseV6(std::span<const uint8_t> p) noexcept {
  if (p.size() < 40) return std::nullopt;
  const size_t payload = load16(&p[4]);
  // Payload length 0 announces a jumbogram, which cannot fit a TUN frame.
  if (payload == 0 || 40 + payload > p.size()) return std::nullopt;
  const size_t end = 40 + payload;
  FlowKey key;
  key.version = 6;
  key.src = IpAddress::v6(p.subspan<8, 16>());
  key.dst = IpAddress::v6(p.subspan<24, 16>());
  uint8_t next = p[6];
  size_t pos = 40;
  for (int i = 0;; ++i) {
    if (next != kExtHopByHop && next != kExtRouting && next != kExtDestOpts && next != kExtFragment)
      break;
    if (i == kMaxExtensionHeaders) return std::nullopt;
    // Hop-by-hop is only valid directly after the fixed header (RFC 8200 §4.3).
    if (next == kExtHopByHop && pos != 40) return std::nullopt;
    if (end - pos < 8) return std::nullopt;
    const uint8_t* h = p.data() + pos;
    if (next == kExtFragment) {
      const uint16_t offset = load16(h + 2) >> 3;
      next = h[0];
      pos += 8;
      if (offset != 0) {
        key.proto = next;
        key.nonInitialFragment = true;
        return key;
      }
      continue;
    }
    const size_t len = (size_t{h[1]} + 1) * 8;
    if (end - pos < len) return std::nullopt;
    next = h[0];
    pos += len;
  }
  key.proto = next;
  if (!readPorts(key, p.data() + pos, end - pos)) return std::nullopt;
  return key;
}

}  // namespace

IpAddress IpAddress::v4(std::span<const uint8_t, 4> bytes) noexcept {
  IpAddress a;
  a.family_ = IpFamily::kV4;
  std::copy(bytes.begin(), bytes.end(), a.storage_.begin());
  return a;
}

IpAddress IpAddress::v6(std::span<const uint8_t, 16> bytes) noexcept {
  IpAddress a;
  a.family_ = IpFamily::kV6;
  std::copy(bytes.begin(), bytes.end(), a.storage_.begin());
  return a;
}

IpAddress IpAddress::v4(uint32_t hostOrder) noexcept {
  const std::array<uint8_t, 4> b{static_cast<uint8_t>(hostOrder >> 24), static_cast<uint8_t>(hostOrder >> 16),
                                 static_cast<uint8_t>(hostOrder >> 8), static_cast<uint8_t>(hostOrder)};
  return v4(std::span<const uint8_t, 4>(b));
}

std::optional<IpAddress> IpAddress::parse(std::string_view text) {
  // inet_pton needs a terminated string; the longest valid form is
  // INET6_ADDRSTRLEN - 1 characters.
  char buf[INET6_ADDRSTRLEN];
  if (text.empty() || text.size() >= sizeof buf) return std::nullopt;
  std::memcpy(buf, text.data(), text.size());
  buf[text.size()] = '\0';
  uint8_t raw[16];
  if (text.find(':') == std::string_view::npos) {
    if (inet_pton(AF_INET, buf, raw) != 1) return std::nullopt;
    return v4(std::span<const uint8_t, 4>(raw, 4));
  }
  if (inet_pton(AF_INET6, buf, raw) != 1) return std::nullopt;
  return v6(std::span<const uint8_t, 16>(raw, 16));
}

std::string IpAddress::toString() const {
  char buf[INET6_ADDRSTRLEN];
  const int af = isV4() ? AF_INET : AF_INET6;
  if (inet_ntop(af, storage_.data(), buf, sizeof buf) == nullptr) return "?";
  return buf;
}

std::optional<Prefix> Prefix::make(const IpAddress& address, unsigned length) {
  if (length > address.bitLength()) return std::nullopt;
  return Prefix{address, static_cast<uint8_t>(length)};
}

std::optional<Prefix> Prefix::parse(std::string_view text) {
  const size_t slash = text.find('/');
  auto address = IpAddress::parse(text.substr(0, slash));
  if (!address) return std::nullopt;
  if (slash == std::string_view::npos) return Prefix{*address, static_cast<uint8_t>(address->bitLength())};
  const std::string_view digits = text.substr(slash + 1);
  unsigned length = 0;
  auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), length);
  if (digits.empty() || ec != std::errc{} || ptr != digits.data() + digits.size()) return std::nullopt;
  return make(*address, length);
}

bool Prefix::contains(const IpAddress& a) const noexcept {
  if (a.family() != address.family()) return false;
  const auto mine = address.bytes();
  const auto theirs = a.bytes();
  const size_t whole = length / 8;
  if (!std::equal(mine.begin(), mine.begin() + static_cast<std::ptrdiff_t>(whole), theirs.begin())) return false;
  const unsigned rest = length % 8;
  if (rest == 0) return true;
  const uint8_t mask = static_cast<uint8_t>(0xffu << (8 - rest));
  return (mine[whole] & mask) == (theirs[whole] & mask);
}

std::string Prefix::toString() const { return address.toString() + "/" + std::to_string(length); }

std::optional<FlowKey> parseInnerPacket(std::span<const uint8_t> packet) noexcept {
  if (packet.empty()) return std::nullopt;
  switch (packet[0] >> 4) {
    case 4:
      return parseV4(packet);
    case 6:
      return parseV6(packet);
    default:
      return std::nullopt;
  }
}

}  // namespace ipsec::esp
