// ipsec-forwarder: outbound packets that matched an ipsec policy before its
// SA existed, held while an ACQUIRE asks for one (as the kernel's larval
// state queue): a bounded queue, a bounded wait, then dropped by the caller
// (and counted as out_drop_no_sa). Fixed arrays: holding, re-running and
// expiring allocate nothing. The buffers stay in their worker's pool; this
// only remembers where. One thread (the data path).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace ipsec::forwarder {

template <class Pool>
class HeldPackets {
 public:
  static constexpr std::size_t kMax = 64;
  static constexpr std::uint64_t kHoldMs = 5000;

  struct Packet {
    Pool* pool = nullptr;
    std::uint32_t buffer = 0;
    std::uint32_t length = 0;
    std::uint64_t sinceMs = 0;  // when first held (a re-run keeps it)
  };

  // False when it may not wait (the queue is full, or it has waited kHoldMs
  // already): the caller drops it.
  bool hold(const Packet& p, std::uint64_t nowMs) noexcept {
    if (count_ >= kMax || nowMs - p.sinceMs > kHoldMs) return false;
    items_[count_++] = p;
    return true;
  }

  // An SA arrived: every held packet is handed to f once, in the order held,
  // the queue emptied first (f may hold it again).
  template <class F>
  void rerun(F&& f) noexcept {
    const std::size_t n = count_;
    again_ = items_;
    count_ = 0;
    for (std::size_t i = 0; i < n; ++i) f(again_[i]);
  }

  // Packets held longer than kHoldMs are taken out and handed to f (to free and count).
  template <class F>
  void expire(std::uint64_t nowMs, F&& f) noexcept {
    std::size_t kept = 0;
    for (std::size_t i = 0; i < count_; ++i) {
      if (nowMs - items_[i].sinceMs > kHoldMs) {
        f(items_[i]);
      } else {
        items_[kept++] = items_[i];
      }
    }
    count_ = kept;
  }

  std::size_t size() const noexcept { return count_; }
  bool empty() const noexcept { return count_ == 0; }

 private:
  std::array<Packet, kMax> items_{};
  std::array<Packet, kMax> again_{};  // a re-run's snapshot
  std::size_t count_ = 0;
};

}  // namespace ipsec::forwarder
