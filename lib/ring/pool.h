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
// outside its own pool. Sessions are checked by the broker, not here.
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
const char* toString(DescriptorError error) noexcept;

DescriptorError checkDescriptor(const proto::CryptoRequest& request, std::uint32_t bufferCount,
                                std::uint32_t bufferSize) noexcept;

// True when every segment of `request` lies inside one buffer of the region
// described by `header` (the validated private copy).
inline bool validate(const proto::CryptoRequest& request, const proto::RegionHeader& header) noexcept {
  return checkDescriptor(request, header.bufferCount, header.bufferSize) == DescriptorError::kNone;
}

}  // namespace ipsec::ring
