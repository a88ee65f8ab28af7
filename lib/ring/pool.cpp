// Buffer allocation (forwarder) and descriptor bounds checks (crypto worker).
#include "ring/pool.h"

namespace ipsec::ring {

BufferPool::BufferPool(const Region& region)
    : pool_(region.buffer(0)),
      count_(region.header().bufferCount),
      bufferSize_(region.header().bufferSize),
      inUse_(count_, 0) {
  freeList_.reserve(count_);
  // Lowest index on top: the first buffers used are the first pages touched.
  for (std::uint32_t i = count_; i > 0; --i) freeList_.push_back(i - 1);
}

std::optional<std::uint32_t> BufferPool::alloc() noexcept {
  if (freeList_.empty()) return std::nullopt;
  const std::uint32_t index = freeList_.back();
  freeList_.pop_back();
  inUse_[index] = 1;
  return index;
}

bool BufferPool::free(std::uint32_t index) noexcept {
  if (index >= count_ || inUse_[index] == 0) return false;
  inUse_[index] = 0;
  freeList_.push_back(index);  // never reallocates: capacity is count_
  return true;
}

std::span<std::byte> BufferPool::data(std::uint32_t index) const noexcept {
  if (index >= count_) return {};
  return {pool_ + std::size_t{index} * bufferSize_, bufferSize_};
}

const char* toString(DescriptorError error) noexcept {
  switch (error) {
    case DescriptorError::kNone: return "none";
    case DescriptorError::kBadOp: return "bad op";
    case DescriptorError::kBadBufferIndex: return "buffer index out of range";
    case DescriptorError::kBadSegmentCount: return "segment count out of range";
    case DescriptorError::kBadSegmentLayout: return "empty segment";
    case DescriptorError::kOutOfBuffer: return "segment outside its buffer";
  }
  return "unknown";
}

const char* counterName(DescriptorError error) noexcept {
  switch (error) {
    case DescriptorError::kNone: return "none";
    case DescriptorError::kBadOp: return "bad_op";
    case DescriptorError::kBadBufferIndex: return "bad_buffer_index";
    case DescriptorError::kBadSegmentCount: return "bad_segment_count";
    case DescriptorError::kBadSegmentLayout: return "bad_segment_layout";
    case DescriptorError::kOutOfBuffer: return "out_of_buffer";
  }
  return "unknown";
}

DescriptorError checkDescriptor(const proto::CryptoRequest& r, std::uint32_t bufferCount,
                                std::uint32_t bufferSize) noexcept {
  switch (r.op) {
    case proto::CryptoOp::kSeal:
    case proto::CryptoOp::kOpen:
    case proto::CryptoOp::kAhSign:
    case proto::CryptoOp::kAhVerify: break;
    default: return DescriptorError::kBadOp;
  }
  if (r.bufferIndex >= bufferCount) return DescriptorError::kBadBufferIndex;
  if (r.segmentCount == 0 || r.segmentCount > proto::kMaxSegments) return DescriptorError::kBadSegmentCount;
  if (r.length == 0) return DescriptorError::kBadSegmentLayout;
  // All segments lie inside [offset, offset + length); 64-bit sums cannot wrap.
  if (std::uint64_t{r.offset} + r.length > bufferSize) return DescriptorError::kOutOfBuffer;
  if (r.segmentCount > 1) {
    // Segment i starts at offset + i * stride; the last must start before the end.
    const std::uint64_t lastStart = std::uint64_t{r.segmentCount - 1u} * r.segmentStride;
    if (r.segmentStride == 0 || lastStart >= r.length) return DescriptorError::kBadSegmentLayout;
  }
  return DescriptorError::kNone;
}

}  // namespace ipsec::ring
