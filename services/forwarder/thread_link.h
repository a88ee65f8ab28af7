// ipsec-forwarder: one forwarder thread's link to the others (issue 13 item
// 5; issue 12 item 3: the thread group's state in a type of its own). Held by
// each Forwarder as one member; threads.cpp is the shell that ties it to the
// Forwarder's packet path (what a handed-off packet becomes, what a table
// change means for an SA of another thread).
//
// What it holds: where this thread stands (its index, the group's size, the
// crypto workers in all), the other threads' links, the hand-off queues into
// this thread (thread_handoff.h, one per producer thread), thread 0's relays
// of the control channels, and the hand-off counters. What it does without
// the packet path: who owns an SA, handing bytes to a thread and waking it,
// whether the queues a read may need have room, draining the queues in bursts
// through a function the Forwarder gives, the relays, and the stats shares.
//
// Trust: the peers are threads of this process; the bytes they hand over are
// parsed again by the taker as untrusted. Each link is used on its own
// thread, except its queues' far ends (lock-free, thread_handoff.h) and the
// tasks it posts to another thread's io_context.
#pragma once

#include <utility>  // before asio (Boost 1.74 with GCC 12)

#include <atomic>
#include <boost/asio.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <unordered_map>
#include <vector>

#include "control/channel.h"
#include "control/unique_fd.h"
#include "counters.h"
#include "esp_in.h"
#include "offload/vnet_header.h"
#include "proto/dataplane.capnp.h"
#include "proto/common.capnp.h"
#include "tables.h"
#include "thread_handoff.h"

namespace ipsec::forwarder {

// A packet in a HandoffQueue: a TUN read (its virtio_net_hdr included when
// the TUN has one) or an outer packet received whole, with what its outer
// headers said.
struct HandoffSlot {
  bool inbound = false;
  std::uint32_t saIndex = 0;  // inbound: the SA the SPI named (its worker takes the copy)
  Outer outer;
  std::vector<std::uint8_t> bytes;
  std::size_t length = 0;
};

// What one thread's link counted.
struct HandoffCounts {
  std::uint64_t tunReads = 0;  // reads of this thread's TUN queue
  std::uint64_t handedOff = 0, dropFull = 0, taken = 0, stalls = 0;
};

// What one thread counted, taken on that thread (fillStats sums them).
struct StatsShare {
  Counters counters;
  std::vector<std::pair<SaRef, SaCounters>> sas;  // the SAs this thread used
  HandoffCounts handoff;
};

// Thread 0's stats: the other threads' shares, the per-SA counters of theirs
// summed by SA, rows after the counter list (per TUN queue, hand-offs).
struct ThreadShares {
  std::vector<StatsShare> shares;  // by thread; empty with one thread
  std::unordered_map<std::uint64_t, SaCounters> saCounters;  // threads 1.. by (index << 32 | generation)
  SaCounters of(const Sa& sa) const;
  unsigned extraRows() const;
  void fillExtra(capnp::List<proto::Counter>::Builder rows, unsigned first) const;
};

class ThreadLink {
 public:
  // Eight bursts of reads: a thread's burst (32 reads) behind several others
  // while its owner is busy with its own. 64 dropped packets under parallel
  // TCP flows on a loaded 2-core machine; 256 none.
  static constexpr std::size_t kHandoffSlots = 256;
  // The longest TUN read (tun_reader.cpp): a 64 KiB super-packet behind its header.
  static constexpr std::size_t kMaxHandoffBytes = offload::kVnetHeaderSize + 65536;

  // What the link asks of its own Forwarder, on the Forwarder's thread.
  struct Hooks {
    std::function<void()> drain;         // take what was handed to us (a burst's wake-up)
    std::function<void()> restartReads;  // reads put off for want of room may go on
    std::function<StatsShare()> share;   // this thread's counters, for thread 0's stats
  };
  // Where this instance stands: thread `thread` of `threads`, driving the
  // crypto workers thread, thread + threads, ... of `totalWorkers`.
  struct Place {
    unsigned thread = 0, threads = 1, totalWorkers = 1;
    std::vector<ThreadLink*> peers;  // every instance's link, by thread (this one included)
    // Thread 0: for each other thread u (index u - 1), thread 0's ends of the
    // socket pairs u uses as its keydb and policy channels (relayed here).
    std::vector<std::pair<control::UniqueFd, control::UniqueFd>> relays;
    std::shared_ptr<std::atomic<bool>> stopping;  // set first when the process stops
  };

  explicit ThreadLink(boost::asio::io_context& io) : io_(io) {}
  ThreadLink(const ThreadLink&) = delete;
  ThreadLink& operator=(const ThreadLink&) = delete;

  // One thread (until join): every crypto worker is this thread's.
  void setTotalWorkers(unsigned n) noexcept { totalWorkers_ = n; }
  // Called before start(); with one thread nothing changes.
  void join(Place place, Hooks hooks);
  bool several() const noexcept { return threads_ > 1; }
  unsigned thread() const noexcept { return thread_; }
  unsigned threads() const noexcept { return threads_; }
  bool stopping() const noexcept { return stopping_ && stopping_->load(); }

  // The thread an SA belongs to: its crypto worker's (worker_pin.cpp), so
  // the same on both directions and on every thread.
  unsigned ownerOf(std::uint32_t saIndex) const noexcept {
    return saOwnerThread(saIndex, totalWorkers_, threads_);  // thread_handoff.h
  }
  bool owns(std::uint32_t saIndex) const noexcept { return ownerOf(saIndex) == thread_; }
  // The index among this thread's workers of the SA's worker; another
  // thread's SA gets our first (it cannot seal here, threads.cpp).
  std::size_t localWorkerOf(std::uint32_t saIndex) const noexcept {
    const unsigned global = saIndex % totalWorkers_;
    return global % threads_ == thread_ ? global / threads_ : 0;
  }

  // The bytes copied into thread `to`'s queue from us, `to` woken once per
  // burst; false (counted in dropFull) when its queue was full.
  bool handOff(unsigned to, bool inbound, std::uint32_t saIndex, const Outer& outer,
               std::span<const std::uint8_t> bytes) noexcept;
  // True when every other thread's queue from this one has `need` free
  // slots. Reads are made only then (a TUN read: one; a burst of outer
  // packets: kBurst), so a full queue stalls them, as a short pool does,
  // instead of dropping what was read; the owner restarts them when it has
  // taken some (drain, Hooks::restartReads).
  bool room(std::size_t need) noexcept;
  // Up to `burst` slots of each queue into us given to take(slot), which
  // returns false when the slot must wait (left first in line); producers
  // that wanted room are told to read again. While it runs taking() is true.
  struct Drained {
    bool more = false;      // some queue is not empty: drain again later
    bool outbound = false;  // the last slot taken was a TUN read
  };
  template <class Take>
  Drained drain(std::size_t burst, Take&& take) noexcept;
  // A handed-off packet is being taken: it stays on this thread.
  bool taking() const noexcept { return taking_; }

  // Thread 0: the other threads' channels end here; what they send goes on
  // through toKeydb and toPolicy (the real channels), unchanged.
  using Forward = std::function<void(capnp::MessageBuilder&)>;
  void startRelays(Forward toKeydb, Forward toPolicy);
  // Thread 0: a message applied here, copied to every other thread.
  void relayKeydb(proto::KeydbToForwarder::Reader msg);
  void relayPolicy(proto::PolicyToForwarder::Reader msg);
  void closeRelays();

  HandoffCounts& counts() noexcept { return counts_; }
  // Thread 0: every thread's share (this one's `own`), the others' counters added to `now`.
  ThreadShares gatherShares(StatsShare own, Counters& now);

 private:
  using Handoff = HandoffQueue<HandoffSlot>;
  template <class Root>
  std::unique_ptr<control::Channel> startRelay(control::UniqueFd fd, unsigned thread, const char* peer, Forward forward);

  boost::asio::io_context& io_;
  Hooks hooks_;
  unsigned thread_ = 0, threads_ = 1, totalWorkers_ = 1;
  std::vector<ThreadLink*> peers_;
  std::vector<std::unique_ptr<Handoff>> in_;  // by producer thread
  std::shared_ptr<std::atomic<bool>> stopping_;
  std::vector<std::pair<control::UniqueFd, control::UniqueFd>> relayFds_;
  std::vector<std::unique_ptr<control::Channel>> keydbRelays_, policyRelays_;  // thread 0: by thread - 1
  HandoffCounts counts_;
  bool taking_ = false;
};

template <class Take>
ThreadLink::Drained ThreadLink::drain(std::size_t burst, Take&& take) noexcept {
  Drained d;
  taking_ = true;
  for (unsigned from = 0; from < in_.size(); ++from) {
    auto& queue = in_[from];
    if (!queue) continue;
    queue->beginDrain();
    std::size_t n = 0;
    for (HandoffSlot* slot; n < burst && (slot = queue->front()) != nullptr; ++n) {
      if (!take(*slot)) break;  // no buffer now: stays first in line
      d.outbound = !slot->inbound;
      queue->pop();
    }
    if (n != 0 && queue->producerWantsRoom()) {
      ThreadLink& producer = *peers_[from];
      boost::asio::post(producer.io_, [&producer] { producer.hooks_.restartReads(); });
    }
    if (queue->front()) d.more = true;
  }
  taking_ = false;
  return d;
}

}  // namespace ipsec::forwarder
