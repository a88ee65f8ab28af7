// ipsec-forwarder: the forwarder's threads (forwarder_threads, issue 13 item
// 5). One thread: the Forwarder on the service's io_context, exactly as
// before. N threads: thread t has its own io_context, its own Forwarder on
// TUN queue t and on the crypto workers t, t + N, ..., and thread 0 (the
// service's) the control channels, relayed to the others over socket pairs
// made here, before the sandbox (threads.cpp says how they cooperate).
//
// Lifetime: everything is made before the sandbox; the extra threads start
// after it (runThreads, from Handlers::sandboxed) so they inherit the seccomp
// filter and the dropped credentials; stop() ends them and the destructor
// joins them before any Forwarder goes.
#pragma once

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "forwarder.h"

namespace ipsec::forwarder {

class ThreadGroup {
 public:
  // fds: thread 0's (the table's), all workers' rings; tunQueues: queues 1..N-1.
  ThreadGroup(boost::asio::io_context& io, Fds fds, std::vector<UniqueFd> tunQueues,
              std::optional<unsigned> tunOffloads);
  ~ThreadGroup();
  ThreadGroup(const ThreadGroup&) = delete;
  ThreadGroup& operator=(const ThreadGroup&) = delete;

  void start();       // every instance, before the sandbox
  void runThreads();  // threads 1..N-1, after it
  void stop();
  void fillStats(proto::Stats::Builder out) { forwarders_[0]->fillStats(out); }
  // Applied on every thread, each on its own.
  void setSysctl(std::string_view name, std::int64_t value);

 private:
  std::vector<std::unique_ptr<boost::asio::io_context>> ios_;  // threads 1..N-1
  std::vector<std::unique_ptr<Forwarder>> forwarders_;          // by thread
  std::vector<std::thread> threads_;                            // threads 1..N-1
  std::shared_ptr<std::atomic<bool>> stopping_ = std::make_shared<std::atomic<bool>>(false);
};

}  // namespace ipsec::forwarder
