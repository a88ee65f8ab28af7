// ESP framing (see esp.h). Runs in ipsec-forwarder on untrusted packets; the
// only trusted inputs are the EspLayout and the buffer geometry, which come
// from the forwarder's own SA table and buffer pool.
#include "esp/esp.h"

#include <cstring>

namespace ipsec::esp {

namespace {

void store32(uint8_t* p, uint32_t v) noexcept {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}

uint32_t load32(const uint8_t* p) noexcept {
  return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | uint32_t{p[3]};
}

}  // namespace

std::string_view toString(EspError error) noexcept {
  switch (error) {
    case EspError::kOk: return "ok";
    case EspError::kTruncated: return "truncated";
    case EspError::kBadLength: return "bad_length";
    case EspError::kBadPadding: return "bad_padding";
    case EspError::kBadNextHeader: return "bad_next_header";
    case EspError::kInnerMismatch: return "inner_mismatch";
    case EspError::kDummyPacket: return "dummy_packet";
    case EspError::kReservedSpi: return "reserved_spi";
    case EspError::kNoHeadroom: return "no_headroom";
    case EspError::kNoTailroom: return "no_tailroom";
    case EspError::kBadInnerPacket: return "bad_inner_packet";
    case EspError::kBadLayout: return "bad_layout";
  }
  return "unknown";
}

EncapResult encapsulate(std::span<uint8_t> buf, size_t off, size_t len, uint32_t spi, uint32_t seqLow,
                        const EspLayout& layout) noexcept {
  if (len == 0 || off >= buf.size()) return {.error = EspError::kBadInnerPacket};
  switch (buf[off] >> 4) {
    case 4: return encapsulate(buf, off, len, spi, seqLow, layout, kNextHeaderIpv4);
    case 6: return encapsulate(buf, off, len, spi, seqLow, layout, kNextHeaderIpv6);
    default: return {.error = EspError::kBadInnerPacket};
  }
}

EncapResult encapsulate(std::span<uint8_t> buf, size_t off, size_t len, uint32_t spi, uint32_t seqLow,
                        const EspLayout& layout, uint8_t nextHeader) noexcept {
  if (!layout.valid()) return {.error = EspError::kBadLayout};
  if (off > buf.size() || len > buf.size() - off) return {.error = EspError::kBadInnerPacket};
  const size_t head = layout.headroom();
  if (off < head) return {.error = EspError::kNoHeadroom};
  const size_t align = layout.padAlign;
  const size_t padLength = (align - (len + kEspTrailerLength) % align) % align;
  const size_t tail = padLength + kEspTrailerLength + layout.icvLength;
  if (buf.size() - off - len < tail) return {.error = EspError::kNoTailroom};

  uint8_t* esp = buf.data() + off - head;
  store32(esp, spi);
  store32(esp + 4, seqLow);
  std::memset(esp + kEspHeaderLength, 0, layout.ivLength);
  uint8_t* trailer = buf.data() + off + len;
  for (size_t i = 0; i < padLength; ++i) trailer[i] = static_cast<uint8_t>(i + 1);
  trailer[padLength] = static_cast<uint8_t>(padLength);
  trailer[padLength + 1] = nextHeader;
  return {EspError::kOk, off - head, head + len + tail};
}

HeaderResult parseHeader(std::span<const uint8_t> packet) noexcept {
  if (packet.size() < kEspHeaderLength) return {.error = EspError::kTruncated};
  const uint32_t spi = load32(packet.data());
  if (spi == 0) return {.error = EspError::kReservedSpi};
  return {EspError::kOk, {spi, load32(packet.data() + 4)}};
}

DecapResult decapsulate(std::span<const uint8_t> esp, const EspLayout& layout) noexcept {
  if (!layout.valid()) return {.error = EspError::kBadLayout};
  const size_t overhead = layout.headroom() + layout.icvLength;
  if (esp.size() < overhead + kEspTrailerLength) return {.error = EspError::kTruncated};
  const size_t encrypted = esp.size() - overhead;
  if (encrypted % layout.padAlign != 0) return {.error = EspError::kBadLength};

  const uint8_t* payload = esp.data() + layout.headroom();
  const size_t padLength = payload[encrypted - 2];
  const uint8_t nextHeader = payload[encrypted - 1];
  if (padLength + kEspTrailerLength > encrypted) return {.error = EspError::kBadPadding};
  const size_t innerLength = encrypted - kEspTrailerLength - padLength;
  // RFC 4303 §2.4: with the default padding the receiver checks 1,2,3,...
  for (size_t i = 0; i < padLength; ++i) {
    if (payload[innerLength + i] != static_cast<uint8_t>(i + 1)) return {.error = EspError::kBadPadding};
  }
  DecapResult result{EspError::kOk, layout.headroom(), innerLength, nextHeader};
  switch (nextHeader) {
    case kNextHeaderDummy:
      result.error = EspError::kDummyPacket;
      return result;
    case kNextHeaderIpv4:
      if (innerLength == 0 || payload[0] >> 4 != 4) result.error = EspError::kInnerMismatch;
      return result;
    case kNextHeaderIpv6:
      if (innerLength == 0 || payload[0] >> 4 != 6) result.error = EspError::kInnerMismatch;
      return result;
    default:
      result.error = EspError::kBadNextHeader;
      return result;
  }
}

}  // namespace ipsec::esp
