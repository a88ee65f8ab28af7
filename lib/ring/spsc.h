// Single-producer/single-consumer rings over a region's shared slots.
//
// Runs in the forwarder (request producer, completion consumer) and in a
// crypto worker (request consumer, completion producer), on the data path:
// noexcept, no allocation, bursts. The other side is another process that may
// be compromised, so:
//   - each side keeps its own index privately and only publishes it; it never
//     reads its own index back from shared memory;
//   - the peer's index is treated as untrusted: a count it implies above the
//     capacity is clamped and remembered in peerCorrupt(), slot positions are
//     always masked, so no index value can move an access outside the slots;
//   - items are copied out of the shared slots before use, so a descriptor
//     cannot change between its validation and its use.
// Capacity and slot addresses come from the validated private header copy.
//
// Ordering: slots are written before the index is published with release;
// the reader loads the index with acquire before copying slots. The sleeping
// flags use the store / seq_cst fence / load pattern on both sides so that a
// side about to block and a side publishing cannot both miss each other
// (see doorbell.h for the protocol).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <type_traits>

#include "proto/ring_abi.h"

namespace ipsec::ring {

namespace detail {
static_assert(std::atomic_ref<std::uint32_t>::is_always_lock_free,
              "cross-process atomics must be lock-free");
static_assert(std::atomic_ref<std::uint32_t>::required_alignment <= alignof(std::uint32_t));

inline std::uint32_t loadAcquire(std::uint32_t& word) noexcept {
  return std::atomic_ref<std::uint32_t>(word).load(std::memory_order_acquire);
}
inline std::uint32_t loadRelaxed(std::uint32_t& word) noexcept {
  return std::atomic_ref<std::uint32_t>(word).load(std::memory_order_relaxed);
}
inline void storeRelease(std::uint32_t& word, std::uint32_t value) noexcept {
  std::atomic_ref<std::uint32_t>(word).store(value, std::memory_order_release);
}
inline void storeRelaxed(std::uint32_t& word, std::uint32_t value) noexcept {
  std::atomic_ref<std::uint32_t>(word).store(value, std::memory_order_relaxed);
}
// After publishing: was the peer asleep? Clears its flag so one burst (and
// any bursts before it wakes) costs a single doorbell write.
inline bool takeSleeping(std::uint32_t& flag) noexcept {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (loadRelaxed(flag) == 0) return false;
  return std::atomic_ref<std::uint32_t>(flag).exchange(0, std::memory_order_acq_rel) != 0;
}
}  // namespace detail

template <class T>
class SpscProducer {
  static_assert(std::is_trivially_copyable_v<T>);

 public:
  SpscProducer() noexcept = default;
  // `capacity` must be the validated power of two from the private header.
  SpscProducer(proto::RingControl* control, T* slots, std::uint32_t capacity) noexcept
      : control_(control), slots_(slots), capacity_(capacity), mask_(capacity - 1) {}

  // Copies up to items.size() items into free slots and publishes them.
  // Returns how many went in; fewer than asked means the ring is full.
  std::size_t enqueue(std::span<const T> items) noexcept {
    std::uint32_t free = capacity_ - static_cast<std::uint32_t>(head_ - cachedTail_);
    if (free < items.size()) free = refreshFree();
    const auto n = static_cast<std::uint32_t>(std::min<std::size_t>(items.size(), free));
    for (std::uint32_t i = 0; i < n; ++i) {
      std::memcpy(static_cast<void*>(&slots_[(head_ + i) & mask_]), &items[i], sizeof(T));
    }
    if (n != 0) {
      head_ += n;
      detail::storeRelease(control_->producerIndex, head_);
    }
    return n;
  }

  // Free slots as of now (reads the consumer's index).
  std::uint32_t freeSlots() noexcept { return refreshFree(); }

  // After enqueue: true when the consumer was asleep and its doorbell must be rung.
  bool peerNeedsWakeup() noexcept { return detail::takeSleeping(control_->consumerSleeping); }

  // Before blocking because the ring is full: announce it, then re-check.
  // Returns true when it is still full and the caller may block on its doorbell.
  bool prepareToSleep() noexcept {
    detail::storeRelaxed(control_->producerSleeping, 1);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (refreshFree() != 0) {
      finishSleep();
      return false;
    }
    return true;
  }
  void finishSleep() noexcept { detail::storeRelaxed(control_->producerSleeping, 0); }

  // The consumer published an index that claims more than it was given.
  bool peerCorrupt() const noexcept { return peerCorrupt_; }
  std::uint32_t capacity() const noexcept { return capacity_; }

 private:
  std::uint32_t refreshFree() noexcept {
    const std::uint32_t tail = detail::loadAcquire(control_->consumerIndex);
    const std::uint32_t used = head_ - tail;
    if (used > capacity_) {
      // Trust nothing from a consumer that claims to have read unpublished
      // slots: report the ring full so that the owner fails closed.
      peerCorrupt_ = true;
      return 0;
    }
    cachedTail_ = tail;
    return capacity_ - used;
  }

  proto::RingControl* control_ = nullptr;
  T* slots_ = nullptr;
  std::uint32_t capacity_ = 0;
  std::uint32_t mask_ = 0;
  std::uint32_t head_ = 0;        // private: our published index
  std::uint32_t cachedTail_ = 0;  // the consumer's index when last read
  bool peerCorrupt_ = false;
};

template <class T>
class SpscConsumer {
  static_assert(std::is_trivially_copyable_v<T>);

 public:
  SpscConsumer() noexcept = default;
  SpscConsumer(proto::RingControl* control, T* slots, std::uint32_t capacity) noexcept
      : control_(control), slots_(slots), capacity_(capacity), mask_(capacity - 1) {}

  // Copies up to out.size() published items out of the ring, then releases
  // their slots. Returns how many were copied; never more than the capacity.
  std::size_t dequeue(std::span<T> out) noexcept {
    std::uint32_t ready = cachedHead_ - tail_;
    if (ready < out.size()) ready = refreshAvailable();
    const auto n = static_cast<std::uint32_t>(std::min<std::size_t>(out.size(), ready));
    for (std::uint32_t i = 0; i < n; ++i) {
      std::memcpy(static_cast<void*>(&out[i]), &slots_[(tail_ + i) & mask_], sizeof(T));
    }
    if (n != 0) {
      tail_ += n;
      detail::storeRelease(control_->consumerIndex, tail_);
    }
    return n;
  }

  // Published items not yet consumed (reads the producer's index).
  std::uint32_t available() noexcept { return refreshAvailable(); }

  // After dequeue: true when the producer was waiting for room.
  bool peerNeedsWakeup() noexcept { return detail::takeSleeping(control_->producerSleeping); }

  // Before blocking on an empty ring: announce it, then re-check. Returns
  // true when it is still empty and the caller may block on its doorbell.
  bool prepareToSleep() noexcept {
    detail::storeRelaxed(control_->consumerSleeping, 1);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (refreshAvailable() != 0) {
      finishSleep();
      return false;
    }
    return true;
  }
  void finishSleep() noexcept { detail::storeRelaxed(control_->consumerSleeping, 0); }

  // The producer published an index more than a ring ahead of ours.
  bool peerCorrupt() const noexcept { return peerCorrupt_; }
  std::uint32_t capacity() const noexcept { return capacity_; }

 private:
  std::uint32_t refreshAvailable() noexcept {
    std::uint32_t head = detail::loadAcquire(control_->producerIndex);
    if (head - tail_ > capacity_) {
      // Clamp: at most one ring's worth of (masked, in-bounds) slots, whose
      // contents the owner validates like any other. The flag lets it fail closed.
      peerCorrupt_ = true;
      head = tail_ + capacity_;
    }
    cachedHead_ = head;
    return head - tail_;
  }

  proto::RingControl* control_ = nullptr;
  T* slots_ = nullptr;
  std::uint32_t capacity_ = 0;
  std::uint32_t mask_ = 0;
  std::uint32_t tail_ = 0;        // private: our published index
  std::uint32_t cachedHead_ = 0;  // the producer's index when last read (clamped)
  bool peerCorrupt_ = false;
};

}  // namespace ipsec::ring
