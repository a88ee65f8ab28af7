// See thread_link.h; threads.cpp ties it to the Forwarder.
#include "thread_link.h"

#include <chrono>
#include <cstring>
#include <future>
#include <string>

#include "log/log.h"

namespace ipsec::forwarder {

namespace asio = boost::asio;

namespace {

template <class Table>
void addCounters(Table& into, const Table& more) {
  more.forEach([&](const char* name, std::uint64_t value) {
    if (std::uint64_t* c = into.find(name)) *c += value;
  });
}

std::uint64_t saKey(const SaRef& ref) noexcept { return (std::uint64_t{ref.index} << 32) | ref.generation; }

}  // namespace

void ThreadLink::join(Place place, Hooks hooks) {
  thread_ = place.thread;
  threads_ = place.threads;
  totalWorkers_ = place.totalWorkers;
  peers_ = std::move(place.peers);
  stopping_ = std::move(place.stopping);
  relayFds_ = std::move(place.relays);
  hooks_ = std::move(hooks);
  if (threads_ < 2) return;
  in_.resize(threads_);
  for (unsigned from = 0; from < threads_; ++from) {
    if (from != thread_) in_[from] = std::make_unique<Handoff>(kHandoffSlots);
  }
}

// ---- hand-off ---------------------------------------------------------------

bool ThreadLink::handOff(unsigned to, bool inbound, std::uint32_t saIndex, const Outer& outer,
                         std::span<const std::uint8_t> bytes) noexcept {
  ThreadLink& peer = *peers_[to];
  Handoff& queue = *peer.in_[thread_];
  HandoffSlot* slot = queue.beginPush();
  if (!slot || bytes.size() > kMaxHandoffBytes) {
    ++counts_.dropFull;
    return false;
  }
  // A slot grows to the longest packet it has carried (outer packets stay
  // small; a super-packet's slot grows once), so no allocation after that.
  if (slot->bytes.size() < bytes.size()) slot->bytes.resize(bytes.size());
  std::memcpy(slot->bytes.data(), bytes.data(), bytes.size());
  slot->length = bytes.size();
  slot->inbound = inbound;
  slot->saIndex = saIndex;
  slot->outer = outer;
  queue.commitPush();
  ++counts_.handedOff;
  if (queue.wakeConsumer()) asio::post(peer.io_, [&peer] { peer.hooks_.drain(); });
  return true;
}

bool ThreadLink::room(std::size_t need) noexcept {
  if (threads_ < 2) return true;
  bool room = true;
  for (unsigned to = 0; to < threads_; ++to) {
    // Every queue is asked, so each full one restarts us when it drains.
    if (to != thread_ && !peers_[to]->in_[thread_]->hasRoom(need)) room = false;
  }
  if (!room) ++counts_.stalls;
  return room;
}

// ---- control relays ---------------------------------------------------------

// One relay: thread `thread`'s channel to `peer` ends at fd here; what it
// sends (of type Root, no descriptors) goes on through `forward`, unchanged.
template <class Root>
std::unique_ptr<control::Channel> ThreadLink::startRelay(control::UniqueFd fd, unsigned thread, const char* peer,
                                                         Forward forward) {
  auto channel = std::make_unique<control::Channel>(
      io_, std::move(fd), "forwarder thread " + std::to_string(thread) + " (" + peer + ")");
  channel->start(
      [forward = std::move(forward)](capnp::MessageReader& m, std::vector<control::UniqueFd>& fds) {
        if (!fds.empty()) return false;
        capnp::MallocMessageBuilder copy;
        copy.setRoot(m.getRoot<Root>());
        forward(copy);
        return true;
      },
      [this, thread](std::string_view why) {
        if (stopping()) return;
        log::error("channel to forwarder thread {} closed: {}", thread, why);
        std::exit(1);
      });
  return channel;
}

void ThreadLink::startRelays(Forward toKeydb, Forward toPolicy) {
  for (std::size_t i = 0; i < relayFds_.size(); ++i) {
    const auto thread = static_cast<unsigned>(i + 1);
    keydbRelays_.push_back(startRelay<proto::ForwarderToKeydb>(std::move(relayFds_[i].first), thread, "keydb", toKeydb));
    policyRelays_.push_back(
        startRelay<proto::ForwarderToPolicy>(std::move(relayFds_[i].second), thread, "policy", toPolicy));
  }
  relayFds_.clear();
}

void ThreadLink::relayKeydb(proto::KeydbToForwarder::Reader msg) {
  for (auto& relay : keydbRelays_) {
    capnp::MallocMessageBuilder copy;
    copy.setRoot(msg);
    relay->send(copy);
  }
}

void ThreadLink::relayPolicy(proto::PolicyToForwarder::Reader msg) {
  for (auto& relay : policyRelays_) {
    capnp::MallocMessageBuilder copy;
    copy.setRoot(msg);
    relay->send(copy);
  }
}

void ThreadLink::closeRelays() {
  for (auto& relay : keydbRelays_) relay->close();
  for (auto& relay : policyRelays_) relay->close();
}

// ---- stats ------------------------------------------------------------------

ThreadShares ThreadLink::gatherShares(StatsShare own, Counters& now) {
  ThreadShares all;
  if (threads_ < 2) return all;
  all.shares.push_back(std::move(own));
  for (unsigned t = 1; t < threads_; ++t) {
    // On thread t, between its bursts; a thread that does not answer in time
    // (stopping) is left out rather than waited for.
    auto promise = std::make_shared<std::promise<StatsShare>>();
    auto answer = promise->get_future();
    ThreadLink* peer = peers_[t];
    asio::post(peer->io_, [peer, promise] { promise->set_value(peer->hooks_.share()); });
    if (answer.wait_for(std::chrono::seconds(2)) != std::future_status::ready) {
      log::warn("forwarder thread {} did not answer for stats", t);
      all.shares.emplace_back();
      continue;
    }
    all.shares.push_back(answer.get());
    addCounters(now, all.shares.back().counters);
  }
  for (std::size_t t = 1; t < all.shares.size(); ++t) {
    for (const auto& [ref, counters] : all.shares[t].sas) addCounters(all.saCounters[saKey(ref)], counters);
  }
  return all;
}

SaCounters ThreadShares::of(const Sa& sa) const {
  SaCounters c = sa.counters;
  if (auto it = saCounters.find(saKey(sa.ref)); it != saCounters.end()) addCounters(c, it->second);
  return c;
}

unsigned ThreadShares::extraRows() const {
  return shares.empty() ? 0 : static_cast<unsigned>(shares.size()) + 4;
}

void ThreadShares::fillExtra(capnp::List<proto::Counter>::Builder rows, unsigned first) const {
  if (shares.empty()) return;
  HandoffCounts sum;
  for (std::size_t t = 0; t < shares.size(); ++t) {
    // Reads from queue t of the TUN (packets or super-packets), wherever they were then handled.
    rows[first].setName("tun_queue" + std::to_string(t) + "_reads");
    rows[first++].setValue(shares[t].handoff.tunReads);
    sum.handedOff += shares[t].handoff.handedOff;
    sum.dropFull += shares[t].handoff.dropFull;
    sum.taken += shares[t].handoff.taken;
    sum.stalls += shares[t].handoff.stalls;
  }
  rows[first].setName("thread_handoff_packets");  // copied to the SA's owner thread
  rows[first++].setValue(sum.handedOff);
  rows[first].setName("thread_handoff_taken");  // taken from the queue by the owner
  rows[first++].setValue(sum.taken);
  rows[first].setName("thread_handoff_stall_full");  // reads put off: a queue they may need was full
  rows[first++].setValue(sum.stalls);
  rows[first].setName("thread_handoff_drop_full");  // the owner's queue was full all the same: dropped
  rows[first++].setValue(sum.dropFull);
}

}  // namespace ipsec::forwarder
