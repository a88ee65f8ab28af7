// The shared-memory region of one forwarder–crypto-worker pair (proto/ring_abi.h).
//
// ipsecd calls Region::create (memfd, sealed against resizing) and passes the
// fd to both peers; each peer calls Region::attach, which maps the memfd and
// validates the header against the file before anything is used. Neither peer
// trusts the other: attach keeps a private copy of the validated header, and
// every later size, offset and capacity comes from that copy, never from the
// shared page a peer could rewrite.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>

#include "control/unique_fd.h"
#include "proto/ring_abi.h"

namespace ipsec::ring {

struct RegionConfig {
  std::uint32_t requestCapacity = proto::kDefaultRingCapacity;
  std::uint32_t completionCapacity = proto::kDefaultRingCapacity;
  std::uint32_t bufferCount = proto::kDefaultBufferCount;
  std::uint32_t bufferSize = proto::kDefaultBufferSize;

  bool operator==(const RegionConfig&) const = default;
};

// Why attach refused a region; one value per check so that a log line or a
// test names the field at fault.
enum class RegionError : std::uint8_t {
  kNone,
  kNotSealed,        // not a memfd sealed against shrink and grow
  kStatFailed,
  kTooSmall,         // smaller than a header
  kMapFailed,
  kBadMagic,
  kBadVersion,
  kBadHeaderSize,
  kBadSlotSize,
  kBadCapacity,      // not a power of two within bounds
  kBadBufferCount,
  kBadBufferSize,
  kBadOffset,        // misaligned, overlapping, or out of order
  kBadRegionSize,    // header's size differs from the file's
  kConfigMismatch,   // valid, but not what ipsecd said it created
};
const char* toString(RegionError error) noexcept;

// Byte offsets of the parts of a region built from a config; the single
// source of the layout for create and for tests.
struct RegionLayout {
  std::uint64_t requestRingOffset;
  std::uint64_t completionRingOffset;
  std::uint64_t bufferPoolOffset;
  std::uint64_t regionSize;
};
// nullopt when the config breaks a bound of proto/ring_abi.h.
std::optional<RegionLayout> computeLayout(const RegionConfig& config) noexcept;

struct AttachResult;

// Whether attach surrounds the mapping with inaccessible pages. With
// kSurround, one PROT_NONE page sits right before the region and one right
// after it, so a bounds check that ever lets an access run off either end
// faults at once instead of reading or writing whatever mapping lies next
// (the crypto worker maps its ring this way: it writes where a peer it does
// not trust points it).
enum class GuardPages : std::uint8_t { kNone, kSurround };

// Non-copyable owner of the mapping and the memfd.
class Region {
 public:
  // Supervisor side. Throws std::invalid_argument for a config out of bounds
  // and std::system_error when the kernel refuses (start-up tier).
  static Region create(const RegionConfig& config = {});

  // Peer side: takes the fd, maps and validates. When `expected` is given
  // (the config ipsecd announced on the control channel) the header must
  // match it exactly, so a peer that rewrote a valid-looking header before
  // we attached is caught too.
  static AttachResult attach(control::UniqueFd fd, const RegionConfig* expected = nullptr,
                             GuardPages guard = GuardPages::kNone) noexcept;

  Region(Region&& other) noexcept;
  Region& operator=(Region&& other) noexcept;
  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;
  ~Region();

  // The private, validated copy of the header.
  const proto::RegionHeader& header() const noexcept { return header_; }
  RegionConfig config() const noexcept;
  int fd() const noexcept { return fd_.get(); }
  std::byte* base() const noexcept { return base_; }
  std::size_t size() const noexcept { return size_; }
  // Bytes of PROT_NONE before base() and after base() + size(); 0 without guards.
  std::size_t guardSize() const noexcept { return guard_; }

  proto::RingControl* requestControl() const noexcept;
  proto::CryptoRequest* requestSlots() const noexcept;
  proto::RingControl* completionControl() const noexcept;
  proto::CryptoCompletion* completionSlots() const noexcept;
  // Start of buffer `index`; the caller has checked index < bufferCount.
  std::byte* buffer(std::uint32_t index) const noexcept;

 private:
  Region(control::UniqueFd fd, std::byte* base, std::size_t size, std::size_t guard,
         const proto::RegionHeader& header) noexcept;
  void unmap() noexcept;

  control::UniqueFd fd_;
  std::byte* base_ = nullptr;
  std::size_t size_ = 0;
  std::size_t guard_ = 0;  // the reservation is [base_ - guard_, base_ + size_ + guard_)
  proto::RegionHeader header_{};
};

struct AttachResult {
  std::optional<Region> region;  // set exactly when error == kNone
  RegionError error = RegionError::kNone;
};

// Validates a header copy against the size of the file it came from. Exposed
// for tests and for the fuzz-style checks of corrupted headers.
RegionError validateHeader(const proto::RegionHeader& header, std::uint64_t fileSize) noexcept;

}  // namespace ipsec::ring
