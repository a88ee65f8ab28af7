// See thread_group.h.
#include "thread_group.h"

#include <unistd.h>

#include "control/wire.h"

namespace ipsec::forwarder {

namespace asio = boost::asio;

namespace {

// Another thread's copy of a socket it sends on (reading stays thread 0's).
UniqueFd dupOf(const UniqueFd& fd) { return UniqueFd(fd.get() >= 0 ? ::fcntl(fd.get(), F_DUPFD_CLOEXEC, 0) : -1); }

}  // namespace

ThreadGroup::ThreadGroup(asio::io_context& io, Fds fds, std::vector<UniqueFd> tunQueues,
                         std::optional<unsigned> tunOffloads) {
  const auto threads = static_cast<unsigned>(tunQueues.size() + 1);
  const auto totalWorkers = static_cast<unsigned>(fds.workers.size());
  if (threads > totalWorkers) throw std::runtime_error("fewer crypto workers than forwarder threads");
  if (threads == 1) {
    forwarders_.push_back(std::make_unique<Forwarder>(io, std::move(fds), tunOffloads));
    return;
  }
  // Thread t's share of the workers: t, t + threads, ... (in that order: its local index is global / threads).
  std::vector<std::vector<WorkerFds>> workersOf(threads);
  for (unsigned i = 0; i < totalWorkers; ++i) workersOf[i % threads].push_back(std::move(fds.workers[i]));
  std::vector<Fds> perThread(threads);
  std::vector<std::pair<UniqueFd, UniqueFd>> relays;
  for (unsigned t = 1; t < threads; ++t) {
    Fds& f = perThread[t];
    auto keydb = control::makeSeqpacketPair();
    auto policy = control::makeSeqpacketPair();
    relays.emplace_back(std::move(keydb.first), std::move(policy.first));
    f.keydb = std::move(keydb.second);
    f.policy = std::move(policy.second);
    f.tun = std::move(tunQueues[t - 1]);
    f.raw4 = dupOf(fds.raw4);
    f.raw6 = dupOf(fds.raw6);
    f.ah4 = dupOf(fds.ah4);
    f.ah6 = dupOf(fds.ah6);
    f.udp4 = dupOf(fds.udp4);
    f.udp6 = dupOf(fds.udp6);
    f.hdr4 = dupOf(fds.hdr4);
    f.hdr6 = dupOf(fds.hdr6);
    f.workers = std::move(workersOf[t]);
  }
  fds.workers = std::move(workersOf[0]);
  perThread[0] = std::move(fds);
  for (unsigned t = 0; t < threads; ++t) {
    asio::io_context* context = &io;
    if (t != 0) context = ios_.emplace_back(std::make_unique<asio::io_context>(1)).get();
    forwarders_.push_back(std::make_unique<Forwarder>(*context, std::move(perThread[t]), tunOffloads));
  }
  std::vector<ThreadLink*> peers;
  for (auto& f : forwarders_) peers.push_back(&f->threadLink());
  for (unsigned t = 0; t < threads; ++t) {
    ThreadLink::Place place{t, threads, totalWorkers, peers, {}, stopping_};
    if (t == 0) place.relays = std::move(relays);
    forwarders_[t]->joinThreads(std::move(place));
  }
}

ThreadGroup::~ThreadGroup() {
  stopping_->store(true);
  for (auto& io : ios_) io->stop();  // thread-safe; their Forwarders go after the join
  for (auto& t : threads_) t.join();
}

void ThreadGroup::start() {
  for (auto& f : forwarders_) f->start();
}

void ThreadGroup::runThreads() {
  for (auto& io : ios_) {
    threads_.emplace_back([context = io.get()] {
      auto work = asio::make_work_guard(*context);
      context->run();
    });
  }
}

void ThreadGroup::stop() {
  if (stopping_->exchange(true)) return;
  forwarders_[0]->stop();
  for (std::size_t t = 1; t < forwarders_.size(); ++t) {
    Forwarder* f = forwarders_[t].get();
    asio::io_context* context = ios_[t - 1].get();
    asio::post(*context, [f, context] {
      f->stop();
      context->stop();
    });
  }
}

void ThreadGroup::setSysctl(std::string_view name, std::int64_t value) {
  forwarders_[0]->setSysctl(name, value);
  for (std::size_t t = 1; t < forwarders_.size(); ++t) {
    // NAT keepalives are thread 0's alone (threads.cpp joinThreads).
    if (name == "net.inet.ipsec.natt_keepalive_interval") continue;
    Forwarder* f = forwarders_[t].get();
    asio::post(*ios_[t - 1], [f, name = std::string(name), value] { f->setSysctl(name, value); });
  }
}

}  // namespace ipsec::forwarder
