// ipsec-crypto: one worker thread per ring. It trusts nothing the forwarder
// wrote: the region header was validated at attach, and every descriptor is
// bounds-checked against this ring's pool and its session looked up by
// (index, generation) before any byte is touched. Requests are processed in
// ring order and completed in the same order, in bursts; the worker polls
// for a while when idle (as long as recent bursts say the next one is near,
// ring/spin.h; yielding its core only while the forwarder has completions to
// read), then sleeps on its doorbell. When the completion ring
// is full (the forwarder stopped reading) it sleeps too, on the same
// doorbell: it sets the completion ring's producerSleeping flag and the
// forwarder, after it dequeues completions, rings the request bell.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>

#include "control/unique_fd.h"
#include "ring/doorbell.h"
#include "ring/endpoints.h"
#include "ring/pool.h"
#include "ring/region.h"
#include "ring/spin.h"
#include "sessions.h"

namespace ipsec::crypto {

struct WorkerCounters {
  std::atomic<std::uint64_t> requests{0}, bursts{0}, sleeps{0}, badDescriptor{0}, badSession{0}, ringCorrupt{0};
  // Sleeps while the completion ring stayed full.
  std::atomic<std::uint64_t> completionFullSleeps{0};
  // badDescriptor by reason, indexed by ring::DescriptorError (kNone unused).
  std::array<std::atomic<std::uint64_t>, ring::kDescriptorErrorCount> descriptorRefused{};
};

// One request, already copied out of the ring: judged against this ring's
// pool (ring::checkDescriptor, counted per reason in `counters`), then handed
// to the session table, which judges it against its session and processes it
// in place. Sets request.status. The caller holds sessions.mutex() shared.
void handleRequest(proto::CryptoRequest& request, const ring::Region& region, SessionTable& sessions,
                   unsigned workerId, WorkerCounters& counters) noexcept;

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
  void complete(std::span<const proto::CryptoCompletion> done) noexcept;

  unsigned id_;
  ring::Region region_;
  ring::RequestConsumer requests_;
  ring::CompletionProducer completions_;
  ring::Doorbell requestBell_, completionBell_;
  SessionTable& sessions_;
  ring::SpinWindow spin_;  // the worker thread's own
  std::atomic<bool> stop_{false};
  std::thread thread_;
  WorkerCounters counters_;
};

}  // namespace ipsec::crypto
