// See request_check.h.
#include "request_check.h"

#include "cryptodrv/transform.h"
#include "ring/pool.h"

namespace ipsec::crypto {
namespace {

// One ESP segment length against the layout. All segments but the last are
// segmentStride long, so judging the stride and the last length judges all.
LayoutError checkEspLength(std::uint32_t length, const SessionLayout& l) noexcept {
  if (length < minEspSegment(l)) return LayoutError::kSegmentTooShort;
  if (length > cryptodrv::Transform::kMaxPacketLength) return LayoutError::kSegmentTooLong;
  const std::uint32_t block = l.padAlign < 4 ? 4 : l.padAlign;
  const std::uint32_t encrypted = length - 8u - l.ivLength - l.icvLength;
  if (encrypted % block != 0) return LayoutError::kSegmentMisaligned;
  return LayoutError::kNone;
}

}  // namespace

LayoutError checkLayout(const proto::CryptoRequest& r, const SessionLayout& l) noexcept {
  if (l.ah) {
    // No AH packet is longer than an IP packet; the transform would refuse it
    // only after signing the segments before it (a refused request that wrote).
    const std::uint32_t last = ring::segmentOf(r, static_cast<std::uint16_t>(r.segmentCount - 1)).length;
    if (last > cryptodrv::Transform::kMaxPacketLength ||
        (r.segmentCount > 1 && r.segmentStride > cryptodrv::Transform::kMaxPacketLength)) {
      return LayoutError::kSegmentTooLong;
    }
    if (r.icvOffset < kMinAhIcvOffset) return LayoutError::kAhIcvOffsetLow;
    if (std::uint32_t{r.icvOffset} + l.icvLength > ring::shortestSegment(r)) return LayoutError::kAhIcvOutside;
    return LayoutError::kNone;
  }
  if (r.segmentCount > 1) {
    if (const LayoutError e = checkEspLength(r.segmentStride, l); e != LayoutError::kNone) return e;
  }
  return checkEspLength(ring::segmentOf(r, static_cast<std::uint16_t>(r.segmentCount - 1)).length, l);
}

const char* counterName(LayoutError error) noexcept {
  switch (error) {
    case LayoutError::kNone: return "none";
    case LayoutError::kSegmentTooShort: return "segment_too_short";
    case LayoutError::kSegmentTooLong: return "segment_too_long";
    case LayoutError::kSegmentMisaligned: return "segment_misaligned";
    case LayoutError::kAhIcvOffsetLow: return "ah_icv_offset_low";
    case LayoutError::kAhIcvOutside: return "ah_icv_outside_segment";
  }
  return "unknown";
}

}  // namespace ipsec::crypto
