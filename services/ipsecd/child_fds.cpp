// See child_fds.h. Each switch names every entry of one process's table: a
// new entry without a source fails to compile (-Wswitch, -Werror).
#include "child_fds.h"

#include <stdexcept>
#include <string>

#include "proto/fd_layout.h"

namespace ipsec::supervisor {
namespace {

using fdlayout::CryptoFd;
using fdlayout::ForwarderFd;
using fdlayout::KeydbFd;
using fdlayout::OnClose;
using fdlayout::PolicyFd;

// Slot number - 3 of the vector gets source(entry, worker) for every entry
// (every worker's copy of a group member).
template <class Id, std::size_t N, class Source>
std::vector<int> fromLayout(const fdlayout::Layout<Id, N>& layout, unsigned workers, Source source) {
  std::vector<int> fds(static_cast<std::size_t>(layout.count(workers)), -1);
  for (const auto& e : layout.entries) {
    for (unsigned w = 0; w < (e.perWorker ? workers : 1u); ++w) {
      const int fd = source(e.id, w);
      if (fd < 0) {
        throw std::logic_error(std::string(layout.process) + ": no descriptor for its " + std::string(e.name));
      }
      fds[static_cast<std::size_t>(layout.number(e.id, workers, w) - fdlayout::kFirstFd)] = fd;
    }
  }
  return fds;
}

template <class Id, std::size_t N, class Source>
std::vector<int> replacements(const fdlayout::Layout<Id, N>& layout, Source source) {
  std::vector<int> fds;
  for (const auto& e : layout.entries) {
    if (e.onClose != OnClose::kAwaitReplacement) continue;
    const int fd = source(e.id, 0);
    if (fd < 0) throw std::logic_error(std::string(layout.process) + ": no replacement for its " + std::string(e.name));
    fds.push_back(fd);
  }
  return fds;
}

auto keydbSource(const ChildEnds& c) {
  return [&c](KeydbFd id, unsigned) {
    switch (id) {
      case KeydbFd::kIpsecd: return c.ipsecd;
      case KeydbFd::kPolicy: return c.keydbOfPolicy;
      case KeydbFd::kCrypto: return c.keydbOfCrypto;
      case KeydbFd::kForwarder: return c.keydbOfForwarder;
    }
    return -1;
  };
}

auto policySource(const ChildEnds& c) {
  return [&c](PolicyFd id, unsigned) {
    switch (id) {
      case PolicyFd::kIpsecd: return c.ipsecd;
      case PolicyFd::kKeydb: return c.policyOfKeydb;
      case PolicyFd::kForwarder: return c.policyOfForwarder;
      case PolicyFd::kPfkeyListen: return c.pfkeyListen;
    }
    return -1;
  };
}

// A worker's member, or -1 for a worker the ends do not have.
int workerEnd(const ChildEnds& c, unsigned w, int WorkerEnds::*member) {
  return w < c.workers.size() ? c.workers[w].*member : -1;
}

}  // namespace

std::vector<int> keydbFds(const ChildEnds& c) { return fromLayout(fdlayout::kKeydb, 1, keydbSource(c)); }

std::vector<int> policyFds(const ChildEnds& c) { return fromLayout(fdlayout::kPolicy, 1, policySource(c)); }

std::vector<int> cryptoFds(const ChildEnds& c) {
  const auto workers = static_cast<unsigned>(c.workers.size());
  return fromLayout(fdlayout::kCrypto, workers, [&c](CryptoFd id, unsigned w) {
    switch (id) {
      case CryptoFd::kIpsecd: return c.ipsecd;
      case CryptoFd::kKeydb: return c.cryptoOfKeydb;
      case CryptoFd::kRingMemfd: return workerEnd(c, w, &WorkerEnds::region);
      case CryptoFd::kRequestBell: return workerEnd(c, w, &WorkerEnds::requestBell);
      case CryptoFd::kCompletionBell: return workerEnd(c, w, &WorkerEnds::completionBell);
    }
    return -1;
  });
}

std::vector<int> forwarderFds(const ChildEnds& c) {
  const auto workers = static_cast<unsigned>(c.workers.size());
  auto fds = fromLayout(fdlayout::kForwarder, workers, [&c](ForwarderFd id, unsigned w) {
    switch (id) {
      case ForwarderFd::kIpsecd: return c.ipsecd;
      case ForwarderFd::kKeydb: return c.forwarderOfKeydb;
      case ForwarderFd::kPolicy: return c.forwarderOfPolicy;
      case ForwarderFd::kTun: return c.tun;
      case ForwarderFd::kEsp4: return c.esp4;
      case ForwarderFd::kEsp6: return c.esp6;
      case ForwarderFd::kAh4: return c.ah4;
      case ForwarderFd::kAh6: return c.ah6;
      case ForwarderFd::kUdp4: return c.udp4;
      case ForwarderFd::kUdp6: return c.udp6;
      case ForwarderFd::kRingMemfd: return workerEnd(c, w, &WorkerEnds::region);
      case ForwarderFd::kRequestBell: return workerEnd(c, w, &WorkerEnds::requestBell);
      case ForwarderFd::kCompletionBell: return workerEnd(c, w, &WorkerEnds::completionBell);
      case ForwarderFd::kHeaderIncluded4: return c.headerIncluded4;
      case ForwarderFd::kHeaderIncluded6: return c.headerIncluded6;
      case ForwarderFd::kEspRing4: return c.espRing4;
      case ForwarderFd::kPacket4: return c.packet4;
      case ForwarderFd::kRouteNetlink: return c.routeNetlink;
    }
    return -1;
  });
  // The TUN's further queues follow the table, in queue order (tunQueueNumber).
  for (const int queue : c.tunQueues) {
    if (queue < 0) throw std::logic_error("ipsec-forwarder: no descriptor for a TUN queue");
    fds.push_back(queue);
  }
  return fds;
}

std::vector<int> keydbReplacementFds(const ChildEnds& c) { return replacements(fdlayout::kKeydb, keydbSource(c)); }

std::vector<int> policyReplacementFds(const ChildEnds& c) { return replacements(fdlayout::kPolicy, policySource(c)); }

}  // namespace ipsec::supervisor
