// Creation (ipsecd) and validated attachment (forwarder, crypto worker) of a
// ring region. See region.h for the trust model.
#include "ring/region.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <system_error>

namespace ipsec::ring {
namespace {

using proto::CryptoRequest;
using proto::RegionHeader;
using proto::RingControl;

constexpr unsigned kRequiredSeals = F_SEAL_SHRINK | F_SEAL_GROW;

constexpr std::uint64_t alignUp(std::uint64_t value, std::uint64_t alignment) {
  return (value + alignment - 1) & ~(alignment - 1);
}

constexpr std::uint64_t ringBytes(std::uint32_t capacity) {
  return proto::kRingControlSize + std::uint64_t{capacity} * sizeof(CryptoRequest);
}

bool validCapacity(std::uint32_t capacity) {
  return std::has_single_bit(capacity) && capacity >= proto::kMinRingCapacity &&
         capacity <= proto::kMaxRingCapacity;
}

bool validBufferSize(std::uint32_t size) {
  return size >= proto::kMinBufferSize && size <= proto::kMaxBufferSize && size % proto::kCacheLine == 0;
}

bool validBufferCount(std::uint32_t count) { return count >= 1 && count <= proto::kMaxBufferCount; }

// [offset, offset + length) lies within [0, limit), without overflow.
bool fits(std::uint64_t offset, std::uint64_t length, std::uint64_t limit) {
  return offset <= limit && length <= limit - offset;
}

RegionHeader makeHeader(const RegionConfig& config, const RegionLayout& layout) {
  RegionHeader h{};
  h.magic = proto::kRegionMagic;
  h.version = proto::kRegionVersion;
  h.headerSize = sizeof(RegionHeader);
  h.requestCapacity = config.requestCapacity;
  h.completionCapacity = config.completionCapacity;
  h.requestSlotSize = sizeof(proto::CryptoRequest);
  h.completionSlotSize = sizeof(proto::CryptoCompletion);
  h.bufferCount = config.bufferCount;
  h.bufferSize = config.bufferSize;
  h.requestRingOffset = layout.requestRingOffset;
  h.completionRingOffset = layout.completionRingOffset;
  h.bufferPoolOffset = layout.bufferPoolOffset;
  h.regionSize = layout.regionSize;
  return h;
}

[[noreturn]] void throwErrno(const char* what) { throw std::system_error(errno, std::generic_category(), what); }

// Maps the memfd shared and read-write; with guards, inside a PROT_NONE
// reservation one page larger on each side (the fixed mapping replaces the
// middle of the reservation, the two ends stay inaccessible). nullptr on failure.
std::byte* mapShared(int fd, std::size_t size, std::size_t guard) noexcept {
  if (guard == 0) {
    void* base = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    return base == MAP_FAILED ? nullptr : static_cast<std::byte*>(base);
  }
  void* reserved = ::mmap(nullptr, size + 2 * guard, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (reserved == MAP_FAILED) return nullptr;
  auto* middle = static_cast<std::byte*>(reserved) + guard;
  if (::mmap(middle, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED) {
    ::munmap(reserved, size + 2 * guard);
    return nullptr;
  }
  return middle;
}

}  // namespace

const char* toString(RegionError error) noexcept {
  switch (error) {
    case RegionError::kNone: return "none";
    case RegionError::kNotSealed: return "not a memfd sealed against shrink and grow";
    case RegionError::kStatFailed: return "fstat failed";
    case RegionError::kTooSmall: return "smaller than a region header";
    case RegionError::kMapFailed: return "mmap failed";
    case RegionError::kBadMagic: return "bad magic";
    case RegionError::kBadVersion: return "unsupported version";
    case RegionError::kBadHeaderSize: return "bad header size";
    case RegionError::kBadSlotSize: return "bad slot size";
    case RegionError::kBadCapacity: return "ring capacity not a power of two within bounds";
    case RegionError::kBadBufferCount: return "buffer count out of bounds";
    case RegionError::kBadBufferSize: return "buffer size out of bounds";
    case RegionError::kBadOffset: return "ring or pool offset misaligned, overlapping or out of bounds";
    case RegionError::kBadRegionSize: return "header region size differs from the file size";
    case RegionError::kConfigMismatch: return "region differs from the announced configuration";
  }
  return "unknown";
}

std::optional<RegionLayout> computeLayout(const RegionConfig& config) noexcept {
  if (!validCapacity(config.requestCapacity) || !validCapacity(config.completionCapacity) ||
      !validBufferCount(config.bufferCount) || !validBufferSize(config.bufferSize)) {
    return std::nullopt;
  }
  RegionLayout layout{};
  layout.requestRingOffset = alignUp(sizeof(RegionHeader), proto::kIndexSpacing);
  layout.completionRingOffset =
      alignUp(layout.requestRingOffset + ringBytes(config.requestCapacity), proto::kIndexSpacing);
  layout.bufferPoolOffset =
      alignUp(layout.completionRingOffset + ringBytes(config.completionCapacity), proto::kPageSize);
  layout.regionSize = alignUp(
      layout.bufferPoolOffset + std::uint64_t{config.bufferCount} * config.bufferSize, proto::kPageSize);
  return layout;
}

RegionError validateHeader(const RegionHeader& h, std::uint64_t fileSize) noexcept {
  if (h.magic != proto::kRegionMagic) return RegionError::kBadMagic;
  if (h.version != proto::kRegionVersion) return RegionError::kBadVersion;
  if (h.headerSize != sizeof(RegionHeader)) return RegionError::kBadHeaderSize;
  if (h.requestSlotSize != sizeof(proto::CryptoRequest) ||
      h.completionSlotSize != sizeof(proto::CryptoCompletion)) {
    return RegionError::kBadSlotSize;
  }
  if (!validCapacity(h.requestCapacity) || !validCapacity(h.completionCapacity)) return RegionError::kBadCapacity;
  if (!validBufferCount(h.bufferCount)) return RegionError::kBadBufferCount;
  if (!validBufferSize(h.bufferSize)) return RegionError::kBadBufferSize;
  if (h.regionSize != fileSize) return RegionError::kBadRegionSize;

  // In order, aligned, non-overlapping, and inside the file: header, request
  // ring, completion ring, pool.
  const std::uint64_t poolBytes = std::uint64_t{h.bufferCount} * h.bufferSize;
  const bool ordered =
      h.requestRingOffset % proto::kIndexSpacing == 0 && h.completionRingOffset % proto::kIndexSpacing == 0 &&
      h.bufferPoolOffset % proto::kPageSize == 0 && h.requestRingOffset >= sizeof(RegionHeader) &&
      fits(h.requestRingOffset, ringBytes(h.requestCapacity), h.completionRingOffset) &&
      fits(h.completionRingOffset, ringBytes(h.completionCapacity), h.bufferPoolOffset) &&
      fits(h.bufferPoolOffset, poolBytes, fileSize);
  if (!ordered) return RegionError::kBadOffset;
  return RegionError::kNone;
}

Region::Region(control::UniqueFd fd, std::byte* base, std::size_t size, std::size_t guard,
               const RegionHeader& header) noexcept
    : fd_(std::move(fd)), base_(base), size_(size), guard_(guard), header_(header) {}

Region::Region(Region&& other) noexcept
    : fd_(std::move(other.fd_)),
      base_(std::exchange(other.base_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      guard_(std::exchange(other.guard_, 0)),
      header_(other.header_) {}

Region& Region::operator=(Region&& other) noexcept {
  if (this != &other) {
    unmap();
    fd_ = std::move(other.fd_);
    base_ = std::exchange(other.base_, nullptr);
    size_ = std::exchange(other.size_, 0);
    guard_ = std::exchange(other.guard_, 0);
    header_ = other.header_;
  }
  return *this;
}

Region::~Region() { unmap(); }

void Region::unmap() noexcept {
  // With guards this also releases them: they are the ends of one reservation.
  if (base_ != nullptr) ::munmap(base_ - guard_, size_ + 2 * guard_);
  base_ = nullptr;
  size_ = 0;
  guard_ = 0;
}

Region Region::create(const RegionConfig& config) {
  const auto layout = computeLayout(config);
  if (!layout) throw std::invalid_argument("ring region: configuration out of bounds");

  control::UniqueFd fd(::memfd_create("ipsec-ring", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd) throwErrno("memfd_create");
  if (::ftruncate(fd.get(), static_cast<off_t>(layout->regionSize)) != 0) throwErrno("ftruncate");
  // A peer that could shrink the file would turn the other side's next access
  // into SIGBUS; sealing makes the size a fact both sides can rely on.
  if (::fcntl(fd.get(), F_ADD_SEALS, kRequiredSeals | F_SEAL_SEAL) != 0) throwErrno("F_ADD_SEALS");

  void* base = ::mmap(nullptr, layout->regionSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (base == MAP_FAILED) throwErrno("mmap");
  const RegionHeader header = makeHeader(config, *layout);
  std::memcpy(base, &header, sizeof header);
  // Ring controls are zero already: ftruncate gives zero-filled pages.
  return Region(std::move(fd), static_cast<std::byte*>(base), layout->regionSize, 0, header);
}

AttachResult Region::attach(control::UniqueFd fd, const RegionConfig* expected, GuardPages guard) noexcept {
  AttachResult result;
  const int seals = ::fcntl(fd.get(), F_GET_SEALS);
  if (seals < 0 || (static_cast<unsigned>(seals) & kRequiredSeals) != kRequiredSeals) {
    result.error = RegionError::kNotSealed;
    return result;
  }
  struct stat st{};
  if (::fstat(fd.get(), &st) != 0) {
    result.error = RegionError::kStatFailed;
    return result;
  }
  const auto fileSize = static_cast<std::uint64_t>(st.st_size);
  if (fileSize < sizeof(RegionHeader)) {
    result.error = RegionError::kTooSmall;
    return result;
  }
  const std::size_t guardBytes = guard == GuardPages::kSurround ? proto::kPageSize : 0;
  std::byte* base = mapShared(fd.get(), fileSize, guardBytes);
  if (base == nullptr) {
    result.error = RegionError::kMapFailed;
    return result;
  }
  // Validate a private copy: the shared page can change under us.
  RegionHeader header;
  std::memcpy(&header, base, sizeof header);
  Region region(std::move(fd), base, fileSize, guardBytes, header);
  result.error = validateHeader(header, fileSize);
  if (result.error == RegionError::kNone && expected != nullptr && region.config() != *expected) {
    result.error = RegionError::kConfigMismatch;
  }
  if (result.error == RegionError::kNone) result.region.emplace(std::move(region));
  return result;
}

RegionConfig Region::config() const noexcept {
  return RegionConfig{header_.requestCapacity, header_.completionCapacity, header_.bufferCount, header_.bufferSize};
}

proto::RingControl* Region::requestControl() const noexcept {
  return reinterpret_cast<RingControl*>(base_ + header_.requestRingOffset);
}
proto::CryptoRequest* Region::requestSlots() const noexcept {
  return reinterpret_cast<CryptoRequest*>(base_ + header_.requestRingOffset + proto::kRingControlSize);
}
proto::RingControl* Region::completionControl() const noexcept {
  return reinterpret_cast<RingControl*>(base_ + header_.completionRingOffset);
}
proto::CryptoCompletion* Region::completionSlots() const noexcept {
  return reinterpret_cast<proto::CryptoCompletion*>(base_ + header_.completionRingOffset + proto::kRingControlSize);
}
std::byte* Region::buffer(std::uint32_t index) const noexcept {
  return base_ + header_.bufferPoolOffset + std::uint64_t{index} * header_.bufferSize;
}

}  // namespace ipsec::ring
