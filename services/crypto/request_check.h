// ipsec-crypto: the session-aware half of judging a forwarder's request.
//
// Runs on the worker threads, after lib/ring's checkDescriptor (the generic
// half: op known, buffer index, segment count, every segment inside its
// buffer) and before any byte of the buffer is read or written. The
// forwarder may be compromised and write any descriptor: here each segment
// is held against the session's own layout (the IV, ICV and pad alignment its
// Transform reported when keydb created it), so that neither the broker's IV
// copy to ESP header + 8 nor a driver ever touches a byte outside the segment.
// Pure functions on values: no session lookup, no I/O, noexcept.
#pragma once

#include <cstddef>
#include <cstdint>

#include "proto/ring_abi.h"

namespace ipsec::crypto {

// What a session's packets need (ring_abi.h: a segment spans ESP header..ICV,
// or for AH the whole IP packet).
struct SessionLayout {
  bool ah = false;
  std::uint8_t ivLength = 0;   // ESP: bytes after SPI and sequence number
  std::uint8_t icvLength = 0;  // ESP or AH ICV
  std::uint8_t padAlign = 4;   // ESP: the encrypted part is a multiple of this
};

// Why a request does not fit its session. ESP refusals are bad packets
// (CryptoStatus::kBadLength); AH refusals are a bad ICV field position, a
// forwarder's framing (kBadDescriptor).
enum class LayoutError : std::uint8_t {
  kNone,
  kSegmentTooShort,    // ESP: a segment shorter than minEspSegment()
  kSegmentTooLong,     // a segment longer than an IP packet or payload can be (ESP, AH)
  kSegmentMisaligned,  // ESP: payload..next header not a multiple of padAlign
  kAhIcvOffsetLow,     // AH: icvOffset inside the smallest IP header + AH fixed part
  kAhIcvOutside,       // AH: [icvOffset, + icvLength) runs past a segment
};
inline constexpr std::size_t kLayoutErrorCount = 6;
static_assert(static_cast<std::size_t>(LayoutError::kAhIcvOutside) + 1 == kLayoutErrorCount);

// The shortest ESP packet (RFC 4303 §2): SPI and sequence number (8), the IV,
// one pad-aligned block holding at least pad length and next header (the
// encrypted part is a nonzero multiple of padAlign, and padAlign is at least
// 4 because the ICV must start 32-bit aligned, §2.4), and the ICV.
constexpr std::uint32_t minEspSegment(const SessionLayout& l) noexcept {
  const std::uint32_t block = l.padAlign < 4 ? 4 : l.padAlign;
  return 8u + l.ivLength + block + l.icvLength;
}

// The smallest icvOffset an AH request may carry: the smallest IP header
// (IPv4, 20 bytes) and AH's fixed part before the ICV (12 bytes, RFC 4302 §2).
inline constexpr std::uint32_t kMinAhIcvOffset = 20 + 12;

// Every segment of `request` (which passed ring::checkDescriptor) judged
// against the session's layout.
LayoutError checkLayout(const proto::CryptoRequest& request, const SessionLayout& layout) noexcept;

// snake_case, for counters (drop_<name>).
const char* counterName(LayoutError error) noexcept;

}  // namespace ipsec::crypto
