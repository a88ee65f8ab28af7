// Anti-replay window, RFC 4303 §3.4.3 and Appendix A (with ESN, A2).
//
// Runs in ipsec-forwarder, one window per inbound SA, touched only by the
// thread that owns the SA table (no locking). The sequence numbers fed to it
// come from the network: check() runs before any crypto and is cheap; accept()
// runs after the broker verified the ICV and re-checks, because another packet
// with the same number may have been accepted while this one was in the ring.
//
// The bitmap is a ring of 64-bit words with at least one word more than the
// window needs, so that sliding clears whole words (the RFC 6479 technique)
// and costs at most one pass over the bitmap however far the window jumps.
// Storage is allocated once, in the constructor.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

namespace ipsec::esp {

class ReplayWindow {
 public:
  static constexpr uint32_t kMinSize = 32;
  static constexpr uint32_t kMaxSize = 65536;

  // True for multiples of 32 in [kMinSize, kMaxSize].
  static constexpr bool isSupportedSize(uint32_t size) noexcept {
    return size >= kMinSize && size <= kMaxSize && size % 32 == 0;
  }

  // Throws std::invalid_argument for an unsupported size: a window is never
  // silently made smaller or larger than configured.
  ReplayWindow(uint32_t size, bool esn);
  // The non-throwing form: nullopt for an unsupported size.
  static std::optional<ReplayWindow> make(uint32_t size, bool esn);

  // Pre-check of a received packet's low 32 bits. Returns the full sequence
  // number (for ESN, the high half inferred per RFC 4303 Appendix A2), or
  // nullopt if it is 0, a duplicate, left of the window, or (ESN) would need
  // a high half outside 0..2^32-1.
  std::optional<uint64_t> check(uint32_t seqLow) const noexcept;

  // After the ICV verified: re-checks `seq` and marks it seen, sliding the
  // window if it is new highest. False if it is a replay or too old by now.
  bool accept(uint64_t seq) noexcept;

  // Highest sequence number accepted so far (0 before the first).
  uint64_t highest() const noexcept { return top_; }
  uint32_t size() const noexcept { return size_; }
  bool esn() const noexcept { return esn_; }

 private:
  struct Unchecked {};
  ReplayWindow(Unchecked, uint32_t size, bool esn);

  // Whether `seq` could be accepted given the current state (full 64 bits).
  bool acceptable(uint64_t seq) const noexcept;
  bool testBit(uint64_t seq) const noexcept;

  uint32_t size_;
  bool esn_;
  uint64_t top_ = 0;
  uint64_t wordMask_;            // number of words - 1 (a power of two)
  std::vector<uint64_t> words_;  // bit (seq % (64 * words)) is set once seq is accepted
};

}  // namespace ipsec::esp
