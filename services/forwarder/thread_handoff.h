// ipsec-forwarder: the bounded single-producer single-consumer queue one
// forwarder thread hands packets to another through (issue 13 item 5,
// threads.cpp). Every SA belongs to one thread; a packet read on another
// thread is copied into a slot here and its owner woken.
//
// One queue per ordered pair of threads: the producer alone moves `tail_`,
// the consumer alone moves `head_`, each publishing with release and reading
// the other's with acquire, so a slot's bytes are written before the consumer
// can see them and read before the producer may reuse them. No lock, no
// allocation once a slot has grown to the largest packet it carried. Full:
// the producer is told (it counts the drop); nothing blocks.
//
// Room: a producer that must not drop (a TUN read it has not made yet) asks
// hasRoom before reading. Short of room, it leaves its reads stalled and the
// consumer, after popping, learns from producerWantsRoom that it must restart
// them (once). The flag and the head are a Dekker pair: each side writes its
// own, fences, then reads the other's, so a drain between the producer's look
// and its flag is never missed.
//
// Waking: the producer asks wakeConsumer() after a push; it is true only for
// the first push since the consumer last began draining (beginDrain), so a
// burst costs one wake-up (an asio::post to the consumer's io_context).
//
// Trust: both ends are threads of one process; the bytes are a packet already
// received from the network or the TUN and are parsed again by the consumer
// as untrusted.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>

namespace ipsec::forwarder {

// The forwarder thread an SA belongs to: the thread that drives its crypto
// worker (worker i is thread i % threads's; the SA's worker is its slot index
// % totalWorkers, worker_pin.cpp). A function of the slot index alone, so
// every thread and both directions agree.
constexpr unsigned saOwnerThread(std::uint32_t saIndex, unsigned totalWorkers, unsigned threads) noexcept {
  return (saIndex % totalWorkers) % threads;
}

template <class Slot>
class HandoffQueue {
 public:
  // capacity: a power of two.
  explicit HandoffQueue(std::size_t capacity) : slots_(std::make_unique<Slot[]>(capacity)), mask_(capacity - 1) {}
  HandoffQueue(const HandoffQueue&) = delete;
  HandoffQueue& operator=(const HandoffQueue&) = delete;

  std::size_t capacity() const noexcept { return mask_ + 1; }

  // Producer: the next free slot to fill, or nullptr when the queue is full.
  Slot* beginPush() noexcept {
    const std::size_t tail = tail_.load(std::memory_order_relaxed);
    if (tail - head_.load(std::memory_order_acquire) > mask_) return nullptr;
    return &slots_[tail & mask_];
  }
  // Producer: publishes the slot beginPush gave.
  void commitPush() noexcept { tail_.store(tail_.load(std::memory_order_relaxed) + 1, std::memory_order_release); }
  // Producer, after a push: true when the consumer must be woken (no wake-up is pending).
  bool wakeConsumer() noexcept { return !wakePending_.exchange(true, std::memory_order_seq_cst); }

  // Consumer: call before draining; a push after it wakes the consumer again.
  void beginDrain() noexcept { wakePending_.store(false, std::memory_order_seq_cst); }
  // Consumer: the oldest filled slot, or nullptr when empty.
  Slot* front() noexcept {
    const std::size_t head = head_.load(std::memory_order_relaxed);
    if (head == tail_.load(std::memory_order_acquire)) return nullptr;
    return &slots_[head & mask_];
  }
  // Consumer: frees the slot front gave.
  void pop() noexcept { head_.store(head_.load(std::memory_order_relaxed) + 1, std::memory_order_release); }

  // Producer: true when `need` slots are free. When fewer are, the consumer
  // is asked to say so once it has popped (producerWantsRoom).
  bool hasRoom(std::size_t need) noexcept {
    if (freeSlots() >= need) return true;
    roomWanted_.store(true, std::memory_order_seq_cst);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    return freeSlots() >= need;  // a drain since the first look; the flag may stay (a spare restart)
  }
  // Consumer, after popping: true (once) when the producer waits for room.
  bool producerWantsRoom() noexcept {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    return roomWanted_.load(std::memory_order_relaxed) && roomWanted_.exchange(false, std::memory_order_seq_cst);
  }

 private:
  std::unique_ptr<Slot[]> slots_;
  const std::size_t mask_;
  alignas(64) std::atomic<std::size_t> head_{0};
  alignas(64) std::atomic<std::size_t> tail_{0};
  alignas(64) std::atomic<bool> wakePending_{false};
  std::atomic<bool> roomWanted_{false};

  std::size_t freeSlots() const noexcept {
    return mask_ + 1 - (tail_.load(std::memory_order_relaxed) - head_.load(std::memory_order_acquire));
  }
};

}  // namespace ipsec::forwarder
