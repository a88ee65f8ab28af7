// ipsec-forwarder: one Forwarder per thread and TUN queue (issue 13 item 5,
// forwarder_threads). Each instance stays single-threaded: shared nothing,
// no lock on the packet path.
//
// One owner per SA: ThreadLink::ownerOf, the thread of the SA's crypto
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
// This file is the shell that ties the thread group's link (thread_link.h:
// the queues, the relays, the shares) to the Forwarder's packet path.
//
// Trust: the peers are threads of this process; the packets they hand over
// are parsed again as untrusted.
#include <cstring>

#include "forwarder.h"
#include "offload/vnet_header.h"
#include "proto/dataplane.capnp.h"

namespace ipsec::forwarder {

namespace asio = boost::asio;

void Forwarder::joinThreads(ThreadLink::Place place) {
  ThreadLink::Hooks hooks{[this] { drainHandoffs(); }, [this] { restartStalledReads(); },
                          [this] { return statsShare(); }};
  link_.join(std::move(place), std::move(hooks));
  if (!link_.several()) return;
  const unsigned thread = link_.thread(), threads = link_.threads();
  // Reads go through the scratch: each is looked at before a pool is chosen.
  if (tunScratch_.empty()) tunScratch_.resize(ThreadLink::kMaxHandoffBytes);
  // IPv4 Identification and IPv6 fragment ids are per instance: each thread
  // starts its own part of the space, so two threads' fragments to one peer
  // do not share an id until one has sent a whole part's worth.
  outerIpId_ = static_cast<std::uint16_t>(1 + thread * (65536u / threads));
  ahIpId_ = outerIpId_;
  fragmentId_ = 1 + thread * (0xffffffffu / threads);
  if (thread != 0) keepaliveIntervalS_ = 0;  // NAT keepalives: thread 0's alone
}

// ---- hand-off ---------------------------------------------------------------

bool Forwarder::handOffTunRead(std::span<const std::uint8_t> read) noexcept {
  if (!link_.several() || link_.taking()) return false;
  ++link_.counts().tunReads;
  std::span<const std::uint8_t> packet = read;
  if (tunOffload_.vnetHeader) {
    if (read.size() < offload::kVnetHeaderSize) return false;  // placeTunRead counts it
    packet = read.subspan(offload::kVnetHeaderSize);
  }
  const Sa* sa = firstStepSa(packet);  // worker_pin.cpp
  if (!sa || link_.owns(sa->ref.index)) return false;  // no SA yet: held (or dropped) here
  link_.handOff(link_.ownerOf(sa->ref.index), false, sa->ref.index, Outer{}, read);
  return true;
}

bool Forwarder::handOffInbound(Worker& w, std::uint32_t buf, std::uint32_t len, const Outer& outer,
                               const Sa& sa) noexcept {
  if (!link_.several() || link_.taking() || link_.owns(sa.ref.index)) return false;
  // The whole buffer as received: transport mode rebuilds from its start.
  link_.handOff(link_.ownerOf(sa.ref.index), true, sa.ref.index, outer, {bufferData(w, buf), len});
  freeBuffer(w, buf);
  return true;
}

void Forwarder::drainHandoffs() noexcept {
  if (stopping()) return;
  const ThreadLink::Drained d = link_.drain(kBurst, [this](HandoffSlot& slot) { return takeHandoff(slot); });
  flushAllRequests(d.outbound);
  flushTunWrites();
  // Left over (a long burst, or waiting for buffers the broker returns): go on after the other handlers.
  if (d.more) asio::post(io_, [this] { drainHandoffs(); });
}

bool Forwarder::takeHandoff(HandoffSlot& slot) noexcept {
  const std::span<std::uint8_t> bytes(slot.bytes.data(), slot.length);
  if (!slot.inbound) {
    if (!tunReadRoom()) return false;
    ++link_.counts().taken;
    placeTunRead(bytes);  // tun_reader.cpp, as if read from this thread's queue
    return true;
  }
  Worker& w = *workers_[link_.localWorkerOf(slot.saIndex)];  // as workerFor (worker_pin.cpp)
  if (slot.length > w.bufferSize) {
    ++counters_.esp_in_drop_truncated;
    return true;
  }
  const auto buf = allocBuffer(w);
  if (!buf) return false;
  ++link_.counts().taken;
  std::memcpy(bufferData(w, *buf), bytes.data(), bytes.size());
  if (w.pending.size() >= kBurst) flushRequests(w, false);
  inboundPacket(w, *buf, static_cast<std::uint32_t>(bytes.size()), slot.outer, true);
  return true;
}

// ---- control ----------------------------------------------------------------

bool Forwarder::afterKeydb(capnp::MessageReader& m) {
  if (!link_.several()) return true;
  auto msg = m.getRoot<proto::KeydbToForwarder>();
  proto::SaRef::Reader id;
  if (msg.isInstall()) {
    id = msg.getInstall().getSa();
  } else if (msg.isSeqGrant()) {
    id = msg.getSeqGrant().getSa();
  }
  if (Sa* sa = id.getGeneration() != 0 ? sas_.find({id.getIndex(), id.getGeneration()}) : nullptr;
      sa && !link_.owns(sa->ref.index)) {
    sa->seqLimit = 0;  // another thread's SA: never sealed here (seqNext >= seqLimit everywhere it would be)
  }
  link_.relayKeydb(msg);
  return true;
}

bool Forwarder::afterPolicy(capnp::MessageReader& m) {
  link_.relayPolicy(m.getRoot<proto::PolicyToForwarder>());
  return true;
}

// Thread 0: what the other threads send on their channels goes on to keydb
// and policy, unchanged.
void Forwarder::startRelays() {
  link_.startRelays([this](capnp::MessageBuilder& m) { if (keydb_) keydb_->send(m); },
                    [this](capnp::MessageBuilder& m) { if (policy_) policy_->send(m); });
}

StatsShare Forwarder::statsShare() {
  StatsShare s;
  s.counters = counters_;
  sas_.forEach([&](Sa& sa) { s.sas.emplace_back(sa.ref, sa.counters); });
  s.handoff = link_.counts();
  return s;
}

}  // namespace ipsec::forwarder
