// The packet-buffer pool of a region, from both sides.
//
// Forwarder side: BufferPool hands out buffer indices. Its free list lives in
// the forwarder's private memory, never in the shared region, so a worker
// cannot make it hand out a buffer twice. A buffer belongs to the forwarder
// until its index travels in a request, and again once the completion with
// that index comes back.
//
// Worker side: checkDescriptor() bounds-checks a request (copied out of the
// ring first) against the private header copy before any byte of the buffer
// is touched: a compromised forwarder must not make the worker read or write
// outside its own pool. This is the generic half of the judgement: what any
// request must satisfy whatever its session. The session-aware half (is each
// segment long enough for the session's header, IV, padding and ICV, is the
// ICV field inside it) lives with the sessions (services/crypto/request_check.h)
// and reads the segments through segmentOf()/shortestSegment() below, so both
// halves agree on where a segment starts and ends.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "proto/ring_abi.h"
#include "ring/region.h"

namespace ipsec::ring {

class BufferPool {
 public:
  // Allocates the free list once; nothing allocates afterwards.
  explicit BufferPool(const Region& region);
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;

  // A free buffer's index, or nullopt when all are in use (count the drop).
  std::optional<std::uint32_t> alloc() noexcept;
  // Returns a buffer. False (and nothing changes) for an index out of range
  // or one that is not allocated: a double free is a bug the caller counts.
  bool free(std::uint32_t index) noexcept;
  // The bytes of an allocated buffer; empty for an index out of range.
  std::span<std::byte> data(std::uint32_t index) const noexcept;

  std::uint32_t available() const noexcept { return static_cast<std::uint32_t>(freeList_.size()); }
  std::uint32_t count() const noexcept { return count_; }
  std::uint32_t bufferSize() const noexcept { return bufferSize_; }

 private:
  std::byte* pool_;
  std::uint32_t count_;
  std::uint32_t bufferSize_;
  std::vector<std::uint32_t> freeList_;  // stack; reserved to count_ up front
  std::vector<std::uint8_t> inUse_;
};

// Why a request was refused; the worker counts each under its own name and
// completes the request with CryptoStatus::kBadDescriptor or kBadOp.
enum class DescriptorError : std::uint8_t {
  kNone,
  kBadOp,             // not seal, open, AH sign or AH verify
  kBadBufferIndex,    // >= bufferCount
  kBadSegmentCount,   // 0 or > kMaxSegments
  kBadSegmentLayout,  // empty, or a stride that leaves the last segment empty
  kOutOfBuffer,       // [offset, offset + length) leaves the buffer
};
inline constexpr std::size_t kDescriptorErrorCount = 6;
static_assert(static_cast<std::size_t>(DescriptorError::kOutOfBuffer) + 1 == kDescriptorErrorCount);
const char* toString(DescriptorError error) noexcept;
// snake_case, for the worker's counter of each reason (drop_descriptor_<name>).
const char* counterName(DescriptorError error) noexcept;

DescriptorError checkDescriptor(const proto::CryptoRequest& request, std::uint32_t bufferCount,
                                std::uint32_t bufferSize) noexcept;

// Segment i (< segmentCount) of a request that passed checkDescriptor:
// buffer bytes [start, start + length). Every segment but the last is
// segmentStride long, so segments never overlap; the last runs to the end.
struct Segment {
  std::uint32_t start;
  std::uint32_t length;
};
inline Segment segmentOf(const proto::CryptoRequest& r, std::uint16_t i) noexcept {
  // checkDescriptor bounded (segmentCount - 1) * stride below length, so
  // nothing here wraps.
  const std::uint32_t start = r.offset + std::uint32_t{i} * r.segmentStride;
  const std::uint32_t length = i + 1u == r.segmentCount ? r.offset + r.length - start : r.segmentStride;
  return {start, length};
}
// segmentFailMask for a request refused whole: every segment failed.
constexpr std::uint64_t allSegments(std::uint16_t segmentCount) noexcept {
  return segmentCount >= 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << segmentCount) - 1;
}
// The shortest segment of a request that passed checkDescriptor: a session
// whose packets need N bytes judges the whole request by this one number.
inline std::uint32_t shortestSegment(const proto::CryptoRequest& r) noexcept {
  const std::uint32_t last = segmentOf(r, static_cast<std::uint16_t>(r.segmentCount - 1)).length;
  return r.segmentCount > 1 && r.segmentStride < last ? r.segmentStride : last;
}

}  // namespace ipsec::ring
