// ipsec-crypto: one worker thread per ring. It trusts nothing the forwarder
// wrote: the region header was validated at attach, and every descriptor is
// bounds-checked against this ring's pool and its session looked up by
// (index, generation) before any byte is touched. Requests are processed in
// ring order and completed in the same order, in bursts; the worker spins
// briefly when idle, then sleeps on its doorbell.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>

#include "control/unique_fd.h"
#include "ring/doorbell.h"
#include "ring/endpoints.h"
#include "ring/pool.h"
#include "ring/region.h"
#include "sessions.h"

namespace ipsec::crypto {

struct WorkerCounters {
  std::atomic<std::uint64_t> requests{0}, bursts{0}, sleeps{0}, badDescriptor{0}, badSession{0}, ringCorrupt{0};
};

class Worker {
 public:
  static constexpr std::size_t kBurst = 32;

  Worker(unsigned id, ring::Region region, ring::Doorbell requestBell, ring::Doorbell completionBell,
         SessionTable& sessions);
  ~Worker();
  void start();
  void stop();
  const WorkerCounters& counters() const { return counters_; }

 private:
  void run() noexcept;
  std::size_t serviceBurst() noexcept;

  unsigned id_;
  ring::Region region_;
  ring::RequestConsumer requests_;
  ring::CompletionProducer completions_;
  ring::Doorbell requestBell_, completionBell_;
  SessionTable& sessions_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  WorkerCounters counters_;
};

}  // namespace ipsec::crypto
