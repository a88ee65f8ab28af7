// ipsec-forwarder: one Forwarder per thread and TUN queue (issue 13 item 5,
// forwarder_threads). Each instance stays single-threaded: shared nothing,
// no lock on the packet path.
//
// One owner per SA: Forwarder::ownerThread, the thread of the SA's crypto
// worker, on both directions. Only the owner hands out the SA's sequence
// numbers (GCM's IV is the sequence number: two threads sealing under one SA
// would reuse a nonce) and keeps its replay window. That is enforced where the
// tables change, not only where packets are routed: on every other thread
// the SA's copy has no sequence numbers (seqLimit 0, afterKeydb), so whatever
// path reaches it there (a held packet re-run, a bundle's second SA) counts
// out_drop_seq_wait and never seals.
//
// Hand-off: a TUN read whose first step's SA belongs to another thread, and
// an outer packet (thread 0 alone reads the outer sockets) whose SPI names
// one, is copied into the bounded queue to its owner (thread_handoff.h) and
// the owner woken by one asio::post per burst. A thread reads only while the
// queues it may hand to have room (handoffRoom: one slot per TUN read, a
// burst's worth per outer read), so a full queue stalls its reads, counted
// in thread_handoff_stall_full, and the kernel's queues hold the packets
// (TCP sees back-pressure, not loss); the owner restarts them after taking
// some. Full all the same (a GRO datagram of many segments): dropped,
// counted in thread_handoff_drop_full. The owner takes a packet as if it
// had read it.
//
// Control: thread 0 alone talks to keydb and policy. Every message it applies
// is copied to the other threads over a socket pair each (their "keydb" and
// "policy" channels), so every instance's tables are the same; what another
// thread sends on those channels (sequence requests, usage, ACQUIREs, NAT
// mapping reports) thread 0 relays to the real channel. Stats: thread 0 asks
// each thread for its counters on that thread (a posted task) and sums them.
//
// Trust: the peers are threads of this process; the packets they hand over
// are parsed again as untrusted.
#include <cstring>
#include <future>

#include "forwarder.h"
#include "log/log.h"
#include "offload/vnet_header.h"
#include "proto/dataplane.capnp.h"

namespace ipsec::forwarder {

namespace asio = boost::asio;

namespace {

// The longest TUN read (tun_reader.cpp): a 64 KiB super-packet behind its header.
constexpr std::size_t kMaxHandoffBytes = offload::kVnetHeaderSize + 65536;

template <class Table>
void addCounters(Table& into, const Table& more) {
  more.forEach([&](const char* name, std::uint64_t value) {
    if (std::uint64_t* c = into.find(name)) *c += value;
  });
}

}  // namespace

void Forwarder::joinThreads(ThreadPlace place) {
  thread_ = place.thread;
  threads_ = place.threads;
  totalWorkers_ = place.totalWorkers;
  peers_ = std::move(place.peers);
  stopping_ = std::move(place.stopping);
  relayFds_ = std::move(place.relays);
  if (threads_ < 2) return;
  handoffIn_.resize(threads_);
  for (unsigned from = 0; from < threads_; ++from) {
    if (from != thread_) handoffIn_[from] = std::make_unique<Handoff>(kHandoffSlots);
  }
  // Reads go through the scratch: each is looked at before a pool is chosen.
  if (tunScratch_.empty()) tunScratch_.resize(kMaxHandoffBytes);
  // IPv4 Identification and IPv6 fragment ids are per instance: each thread
  // starts its own part of the space, so two threads' fragments to one peer
  // do not share an id until one has sent a whole part's worth.
  outerIpId_ = static_cast<std::uint16_t>(1 + thread_ * (65536u / threads_));
  ahIpId_ = outerIpId_;
  fragmentId_ = 1 + thread_ * (0xffffffffu / threads_);
  if (thread_ != 0) keepaliveIntervalS_ = 0;  // NAT keepalives: thread 0's alone
}

// ---- hand-off ---------------------------------------------------------------

bool Forwarder::handOffTunRead(std::span<const std::uint8_t> read) noexcept {
  if (threads_ < 2 || takingHandoff_) return false;
  ++tunReads_;
  std::span<const std::uint8_t> packet = read;
  if (tunOffload_.vnetHeader) {
    if (read.size() < offload::kVnetHeaderSize) return false;  // placeTunRead counts it
    packet = read.subspan(offload::kVnetHeaderSize);
  }
  const Sa* sa = firstStepSa(packet);  // worker_pin.cpp
  if (!sa) return false;               // no SA yet: held (or dropped) here
  const unsigned owner = ownerThread(sa->ref.index, totalWorkers_, threads_);
  if (owner == thread_) return false;
  handOff(owner, false, sa->ref.index, Outer{}, read);
  return true;
}

bool Forwarder::handOffInbound(Worker& w, std::uint32_t buf, std::uint32_t len, const Outer& outer,
                               const Sa& sa) noexcept {
  if (threads_ < 2 || takingHandoff_) return false;
  const unsigned owner = ownerThread(sa.ref.index, totalWorkers_, threads_);
  if (owner == thread_) return false;
  // The whole buffer as received: transport mode rebuilds from its start.
  handOff(owner, true, sa.ref.index, outer, {bufferData(w, buf), len});
  freeBuffer(w, buf);
  return true;
}

bool Forwarder::handOff(unsigned to, bool inbound, std::uint32_t saIndex, const Outer& outer,
                        std::span<const std::uint8_t> bytes) noexcept {
  Forwarder& peer = *peers_[to];
  Handoff& queue = *peer.handoffIn_[thread_];
  HandoffSlot* slot = queue.beginPush();
  if (!slot || bytes.size() > kMaxHandoffBytes) {
    ++handoffDropFull_;
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
  ++handedOff_;
  if (queue.wakeConsumer()) asio::post(peer.io_, [&peer] { peer.drainHandoffs(); });
  return true;
}

bool Forwarder::handoffRoom(std::size_t need) noexcept {
  if (threads_ < 2) return true;
  bool room = true;
  for (unsigned to = 0; to < threads_; ++to) {
    // Every queue is asked, so each full one restarts us when it drains.
    if (to != thread_ && !peers_[to]->handoffIn_[thread_]->hasRoom(need)) room = false;
  }
  if (!room) ++handoffStalls_;
  return room;
}

void Forwarder::drainHandoffs() noexcept {
  if (stopping()) return;
  bool more = false, outbound = false;
  takingHandoff_ = true;
  for (unsigned from = 0; from < handoffIn_.size(); ++from) {
    auto& queue = handoffIn_[from];
    if (!queue) continue;
    queue->beginDrain();
    std::size_t n = 0;
    for (HandoffSlot* slot; n < kBurst && (slot = queue->front()) != nullptr; ++n) {
      if (!takeHandoff(*slot)) break;  // no buffer now: stays first in line
      outbound = !slot->inbound;
      queue->pop();
    }
    if (n != 0 && queue->producerWantsRoom()) {
      Forwarder& producer = *peers_[from];
      asio::post(producer.io_, [&producer] { producer.restartStalledReads(); });
    }
    if (queue->front()) more = true;
  }
  takingHandoff_ = false;
  flushAllRequests(outbound);
  flushTunWrites();
  // Left over (a long burst, or waiting for buffers the broker returns): go on after the other handlers.
  if (more) asio::post(io_, [this] { drainHandoffs(); });
}

bool Forwarder::takeHandoff(HandoffSlot& slot) noexcept {
  const std::span<std::uint8_t> bytes(slot.bytes.data(), slot.length);
  if (!slot.inbound) {
    if (!tunReadRoom()) return false;
    ++handoffTaken_;
    placeTunRead(bytes);  // tun_reader.cpp, as if read from this thread's queue
    return true;
  }
  const unsigned global = slot.saIndex % totalWorkers_;  // as workerFor (worker_pin.cpp)
  Worker& w = *workers_[global % threads_ == thread_ ? global / threads_ : 0];
  if (slot.length > w.bufferSize) {
    ++counters_.esp_in_drop_truncated;
    return true;
  }
  const auto buf = allocBuffer(w);
  if (!buf) return false;
  ++handoffTaken_;
  std::memcpy(bufferData(w, *buf), bytes.data(), bytes.size());
  if (w.pending.size() >= kBurst) flushRequests(w, false);
  inboundPacket(w, *buf, static_cast<std::uint32_t>(bytes.size()), slot.outer, true);
  return true;
}

// ---- control ----------------------------------------------------------------

bool Forwarder::afterKeydb(capnp::MessageReader& m) {
  if (threads_ < 2) return true;
  auto msg = m.getRoot<proto::KeydbToForwarder>();
  proto::SaRef::Reader id;
  if (msg.isInstall()) {
    id = msg.getInstall().getSa();
  } else if (msg.isSeqGrant()) {
    id = msg.getSeqGrant().getSa();
  }
  if (Sa* sa = id.getGeneration() != 0 ? sas_.find({id.getIndex(), id.getGeneration()}) : nullptr;
      sa && ownerThread(sa->ref.index, totalWorkers_, threads_) != thread_) {
    sa->seqLimit = 0;  // another thread's SA: never sealed here (seqNext >= seqLimit everywhere it would be)
  }
  for (auto& relay : keydbRelays_) {
    capnp::MallocMessageBuilder copy;
    copy.setRoot(msg);
    relay->send(copy);
  }
  return true;
}

bool Forwarder::afterPolicy(capnp::MessageReader& m) {
  for (auto& relay : policyRelays_) {
    capnp::MallocMessageBuilder copy;
    copy.setRoot(m.getRoot<proto::PolicyToForwarder>());
    relay->send(copy);
  }
  return true;
}

// Thread 0: the other threads' channels end here; what they send goes on to
// keydb and policy, unchanged.
void Forwarder::startRelays() {
  auto closed = [this](unsigned thread) {
    return [this, thread](std::string_view why) {
      if (stopping()) return;
      log::error("channel to forwarder thread {} closed: {}", thread, why);
      std::exit(1);
    };
  };
  for (std::size_t i = 0; i < relayFds_.size(); ++i) {
    const auto thread = static_cast<unsigned>(i + 1);
    auto& k = keydbRelays_.emplace_back(std::make_unique<control::Channel>(
        io_, std::move(relayFds_[i].first), "forwarder thread " + std::to_string(thread) + " (keydb)"));
    auto& p = policyRelays_.emplace_back(std::make_unique<control::Channel>(
        io_, std::move(relayFds_[i].second), "forwarder thread " + std::to_string(thread) + " (policy)"));
    k->start(
        [this](capnp::MessageReader& m, std::vector<UniqueFd>& fds) {
          if (!fds.empty()) return false;
          capnp::MallocMessageBuilder copy;
          copy.setRoot(m.getRoot<proto::ForwarderToKeydb>());
          if (keydb_) keydb_->send(copy);
          return true;
        },
        closed(thread));
    p->start(
        [this](capnp::MessageReader& m, std::vector<UniqueFd>& fds) {
          if (!fds.empty()) return false;
          capnp::MallocMessageBuilder copy;
          copy.setRoot(m.getRoot<proto::ForwarderToPolicy>());
          if (policy_) policy_->send(copy);
          return true;
        },
        closed(thread));
  }
  relayFds_.clear();
}

// ---- stats ------------------------------------------------------------------

Forwarder::StatsShare Forwarder::statsShare() {
  StatsShare s;
  s.counters = counters_;
  sas_.forEach([&](Sa& sa) { s.sas.emplace_back(sa.ref, sa.counters); });
  s.tunReads = tunReads_;
  s.handedOff = handedOff_;
  s.handoffDropFull = handoffDropFull_;
  s.handoffTaken = handoffTaken_;
  s.handoffStalls = handoffStalls_;
  return s;
}

Forwarder::ThreadShares Forwarder::gatherShares(Counters& now) {
  ThreadShares all;
  if (threads_ < 2) return all;
  all.shares.push_back(statsShare());
  for (unsigned t = 1; t < threads_; ++t) {
    // On thread t, between its bursts; a thread that does not answer in time
    // (stopping) is left out rather than waited for.
    auto promise = std::make_shared<std::promise<StatsShare>>();
    auto answer = promise->get_future();
    Forwarder* peer = peers_[t];
    asio::post(peer->io_, [peer, promise] { promise->set_value(peer->statsShare()); });
    if (answer.wait_for(std::chrono::seconds(2)) != std::future_status::ready) {
      log::warn("forwarder thread {} did not answer for stats", t);
      all.shares.emplace_back();
      continue;
    }
    all.shares.push_back(answer.get());
    addCounters(now, all.shares.back().counters);
  }
  for (std::size_t t = 1; t < all.shares.size(); ++t) {
    for (const auto& [ref, counters] : all.shares[t].sas) {
      addCounters(all.saCounters[(std::uint64_t{ref.index} << 32) | ref.generation], counters);
    }
  }
  return all;
}

SaCounters Forwarder::ThreadShares::of(const Sa& sa) const {
  SaCounters c = sa.counters;
  if (auto it = saCounters.find((std::uint64_t{sa.ref.index} << 32) | sa.ref.generation); it != saCounters.end()) {
    addCounters(c, it->second);
  }
  return c;
}

unsigned Forwarder::ThreadShares::extraRows() const {
  return shares.empty() ? 0 : static_cast<unsigned>(shares.size()) + 4;
}

void Forwarder::ThreadShares::fillExtra(capnp::List<proto::Counter>::Builder rows, unsigned first) const {
  if (shares.empty()) return;
  StatsShare sum;
  for (std::size_t t = 0; t < shares.size(); ++t) {
    // Reads from queue t of the TUN (packets or super-packets), wherever they were then handled.
    rows[first].setName("tun_queue" + std::to_string(t) + "_reads");
    rows[first++].setValue(shares[t].tunReads);
    sum.handedOff += shares[t].handedOff;
    sum.handoffDropFull += shares[t].handoffDropFull;
    sum.handoffTaken += shares[t].handoffTaken;
    sum.handoffStalls += shares[t].handoffStalls;
  }
  rows[first].setName("thread_handoff_packets");  // copied to the SA's owner thread
  rows[first++].setValue(sum.handedOff);
  rows[first].setName("thread_handoff_taken");  // taken from the queue by the owner
  rows[first++].setValue(sum.handoffTaken);
  rows[first].setName("thread_handoff_stall_full");  // reads put off: a queue they may need was full
  rows[first++].setValue(sum.handoffStalls);
  rows[first].setName("thread_handoff_drop_full");  // the owner's queue was full all the same: dropped
  rows[first++].setValue(sum.handoffDropFull);
}

}  // namespace ipsec::forwarder
