// Eventfd doorbells for a ring side that sleeps (DESIGN.md §3a: adaptive
// polling, at most one wake-up per burst).
//
// Each side owns one Doorbell (an EFD_NONBLOCK eventfd that ipsecd creates
// and hands to both peers); the peer rings it. Protocol, for a consumer
// waiting on an empty ring (a producer waiting for room is symmetric):
//
//   consumer                               producer
//   if (side.prepareToSleep())  // flag=1,  enqueue(burst)          // publish
//     bell.wait(timeout) or asio wait      if (side.peerNeedsWakeup()) // flag 1->0
//   side.finishSleep()                        peerBell.ring()
//
// Either the consumer's re-check sees the burst, or the producer sees the
// flag; the seq_cst fences in spsc.h rule out both missing. A woken side may
// find nothing (a ring it raced with); that is harmless. A peer that never
// rings only stalls itself; workers wait with a timeout anyway.
//
// For an asio loop: wrap a dup() of fd() in posix::stream_descriptor, call
// prepareToSleep(), async_wait(wait_read), then drain() and finishSleep().
#pragma once

#include <cstdint>

#include "control/unique_fd.h"

namespace ipsec::ring {

class Doorbell {
 public:
  // A fresh eventfd (EFD_NONBLOCK | EFD_CLOEXEC). Throws std::system_error.
  static Doorbell create();
  // Takes an eventfd received from ipsecd.
  explicit Doorbell(control::UniqueFd fd) noexcept : fd_(std::move(fd)) {}

  int fd() const noexcept { return fd_.get(); }

  // Wakes the owner. A saturated counter means it is rung already.
  void ring() noexcept;
  // Consumes pending rings; true when there was at least one.
  bool drain() noexcept;
  // Blocks until rung or timeoutMs passes (-1: forever), then drains.
  // True when rung.
  bool wait(int timeoutMs) noexcept;

 private:
  control::UniqueFd fd_;
};

// The blocking form of the protocol above for a worker thread. `side` is an
// SpscConsumer or SpscProducer. Returns true when work may be there (the
// re-check found some, or the bell rang), false on timeout.
template <class Side>
bool sleepUntilReady(Side& side, Doorbell& ownBell, int timeoutMs) noexcept {
  if (!side.prepareToSleep()) return true;
  const bool rung = ownBell.wait(timeoutMs);
  side.finishSleep();
  return rung;
}

// After a burst: ring the peer only if it announced it sleeps.
template <class Side>
bool notifyPeer(Side& side, Doorbell& peerBell) noexcept {
  if (!side.peerNeedsWakeup()) return false;
  peerBell.ring();
  return true;
}

}  // namespace ipsec::ring
