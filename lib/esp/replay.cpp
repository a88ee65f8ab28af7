// Anti-replay window (see replay.h). Runs in ipsec-forwarder on sequence
// numbers from the network; all per-packet calls are noexcept and allocate
// nothing.
#include "esp/replay.h"

#include <algorithm>
#include <bit>
#include <stdexcept>
#include <string>

namespace ipsec::esp {

ReplayWindow::ReplayWindow(uint32_t size, bool esn) : ReplayWindow(Unchecked{}, size, esn) {}

ReplayWindow::ReplayWindow(Unchecked, uint32_t size, bool esn) : size_(size), esn_(esn) {
  if (!isSupportedSize(size)) {
    throw std::invalid_argument("replay window size " + std::to_string(size) +
                                " unsupported (multiple of 32 from 32 to 65536)");
  }
  // One spare word beyond the window: the word holding top_ may be partly
  // ahead of it, and sliding must be able to clear whole words.
  const uint64_t words = std::bit_ceil(uint64_t{size} / 64 + 2);
  wordMask_ = words - 1;
  words_.assign(words, 0);
}

std::optional<ReplayWindow> ReplayWindow::make(uint32_t size, bool esn) {
  if (!isSupportedSize(size)) return std::nullopt;
  return ReplayWindow(Unchecked{}, size, esn);
}

bool ReplayWindow::testBit(uint64_t seq) const noexcept {
  return (words_[(seq >> 6) & wordMask_] >> (seq & 63)) & 1u;
}

bool ReplayWindow::acceptable(uint64_t seq) const noexcept {
  if (seq == 0) return false;  // never sent, with or without ESN
  if (seq > top_) return true;
  if (top_ - seq >= size_) return false;  // left of the window
  return !testBit(seq);
}

std::optional<uint64_t> ReplayWindow::check(uint32_t seqLow) const noexcept {
  uint64_t seq = seqLow;
  if (esn_) {
    // RFC 4303 Appendix A2.1: the window [top - W + 1, top] either lies in one
    // 2^32 subspace (case A) or straddles two (case B); place seqLow relative
    // to the window's bottom to pick the high half.
    const uint32_t topLow = static_cast<uint32_t>(top_);
    const uint32_t topHigh = static_cast<uint32_t>(top_ >> 32);
    const uint32_t bottomLow = topLow - size_ + 1;  // modulo 2^32 on purpose
    uint64_t high = topHigh;
    if (topLow >= size_ - 1) {
      if (seqLow < bottomLow) {
        if (topHigh == UINT32_MAX) return std::nullopt;  // 2^64 exhausted
        high = uint64_t{topHigh} + 1;
      }
    } else if (seqLow >= bottomLow) {
      if (topHigh == 0) return std::nullopt;  // would precede sequence number 1
      high = uint64_t{topHigh} - 1;
    }
    seq = high << 32 | seqLow;
  }
  if (!acceptable(seq)) return std::nullopt;
  return seq;
}

bool ReplayWindow::accept(uint64_t seq) noexcept {
  if (!esn_ && seq > UINT32_MAX) return false;
  if (!acceptable(seq)) return false;
  if (seq > top_) {
    // Clear the words entered between the old top and the new one; their
    // bits belong to sequence numbers a full ring ago.
    const uint64_t oldWord = top_ >> 6;
    const uint64_t newWord = seq >> 6;
    const uint64_t count = std::min<uint64_t>(newWord - oldWord, wordMask_ + 1);
    for (uint64_t i = 1; i <= count; ++i) words_[(oldWord + i) & wordMask_] = 0;
    top_ = seq;
  }
  words_[(seq >> 6) & wordMask_] |= uint64_t{1} << (seq & 63);
  return true;
}

}  // namespace ipsec::esp
