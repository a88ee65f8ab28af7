// ipsec-forwarder: set-up and the control side — keydb's SA pushes and
// sequence grants, policy's SPD pushes, stats. Runs on the same thread as the
// data path, between bursts, so the tables need no locks.
#include "forwarder.h"

#include <linux/ipsec.h>
#include <linux/udp.h>
#include <sched.h>

#include <algorithm>
#include <stdexcept>

#include "clock/clock.h"
#include "clock/deadline.h"
#include "proto/dataplane.capnp.h"
#include "log/log.h"

namespace ipsec::forwarder {

namespace asio = boost::asio;

Forwarder::Forwarder(asio::io_context& io, Fds fds, std::optional<unsigned> tunOffloads)
    : io_(io),
      fds_(std::move(fds)),
      tunWatch_(io, fds_.tun.get()),
      raw4Watch_(io, fds_.raw4.get()),
      raw6Watch_(io, fds_.raw6.get()),
      udp4Watch_(io, fds_.udp4.get()),
      udp6Watch_(io, fds_.udp6.get()),
      usageTimer_(io),
      keepaliveTimer_(io),
      link_(io) {
  // IPv4 tunnel ESP leaves with our own outer header (pmtu.cpp: DF per SA,
  // fragments by us); ESP in UDP on the NAT-T sockets, the kernel writing
  // IP and UDP (IPv4: DF per run, gro.cpp), our own header only for
  // fragments and for an SA whose source port is not the socket's.
  send4_.fd = fds_.hdr4.get();
  send6_.fd = fds_.raw6.get();
  sendUdp4_.fd = fds_.udp4.get();
  sendUdp6_.fd = fds_.udp6.get();
  sendUdpOwnHeader4_.fd = fds_.hdr4.get();
  sendUdp4_.udp = sendUdp6_.udp = sendUdpOwnHeader4_.udp = true;
  sockaddr_in bound{};
  socklen_t boundLength = sizeof bound;
  if (fds_.udp4.get() >= 0 &&
      getsockname(fds_.udp4.get(), reinterpret_cast<sockaddr*>(&bound), &boundLength) == 0 &&
      bound.sin_family == AF_INET) {
    udp4Port_ = ntohs(bound.sin_port);
  }
  for (auto& wf : fds_.workers) {
    // Guard pages as the broker maps it: a bounds slip here faults instead of touching the next mapping.
    auto attached = ring::Region::attach(std::move(wf.region), nullptr, ring::GuardPages::kSurround);
    if (!attached.region) {
      throw std::runtime_error(std::string("crypto ring region rejected: ") + ring::toString(attached.error));
    }
    auto w = std::make_unique<Worker>(Worker{
        std::make_unique<ring::Region>(std::move(*attached.region)), {}, {},
        ring::Doorbell(std::move(wf.requestBell)), ring::Doorbell(std::move(wf.completionBell)), nullptr, nullptr, {}, {},
        0});
    w->requests = ring::requestProducer(*w->region);
    w->completions = ring::completionConsumer(*w->region);
    const auto& h = w->region->header();
    w->bufferSize = h.bufferSize;
    w->contexts.resize(h.bufferCount);
    w->pool = std::make_unique<ring::BufferPool>(*w->region);
    w->pending.reserve(kBurst);
    w->bellWatch = std::make_unique<asio::posix::stream_descriptor>(io, w->completionBell.fd());
    workers_.push_back(std::move(w));
  }
  if (workers_.empty()) throw std::runtime_error("no crypto worker rings");
  link_.setTotalWorkers(static_cast<unsigned>(workers_.size()));  // joinThreads: more, several threads
  setUpTunOffload(tunOffloads);  // tun_reader.cpp
  setUpEspRing();                // esp_ring_reader.cpp
  setUpPacketSend();             // packet_send.cpp
}

Forwarder::~Forwarder() {
  // The stream_descriptors must not close descriptors owned elsewhere.
  tunWatch_.release();
  raw4Watch_.release();
  raw6Watch_.release();
  udp4Watch_.release();
  udp6Watch_.release();
  if (espRingWatch_) espRingWatch_->release();
  if (netlinkWatch_) netlinkWatch_->release();
  for (auto& w : workers_) w->bellWatch->release();
  if (ah4Watch_) ah4Watch_->release();
  if (ah6Watch_) ah6Watch_->release();
}

void Forwarder::start() {
  keydb_ = std::make_unique<control::Channel>(io_, std::move(fds_.keydb), "ipsec-keydb");
  policy_ = std::make_unique<control::Channel>(io_, std::move(fds_.policy), "ipsec-policy");
  // Losing keydb or policy means the SAD/SPD copies can no longer be kept
  // right: fail closed and let ipsecd restart the data plane.
  auto fatal = [this](const char* who) {
    return [this, who](std::string_view why) {
      if (stopping()) return;
      log::error("channel to {} closed: {}", who, why);
      std::exit(1);
    };
  };
  // afterKeydb/afterPolicy: several forwarder threads' share of a table change (threads.cpp).
  keydb_->start([this](capnp::MessageReader& m, std::vector<UniqueFd>& f) { return onKeydb(m, f) && afterKeydb(m); },
                fatal("ipsec-keydb"));
  policy_->start([this](capnp::MessageReader& m, std::vector<UniqueFd>& f) { return onPolicy(m, f) && afterPolicy(m); },
                 fatal("ipsec-policy"));
  armTun();
  if (link_.thread() == 0) {  // the outer sockets are read by thread 0 alone (threads.cpp)
    armRaw(AF_INET);
    armRaw(AF_INET6);
    armEspRing();
    armNetlink();
    armUdp(AF_INET);
    armUdp(AF_INET6);
    startAh();
    startRelays();
  }
  for (auto& w : workers_) serviceCompletions(*w);
  sendUsage();
  armKeepalives();
}

void Forwarder::stop() {
  stopped_ = true;
  if (keydb_) keydb_->close();
  if (policy_) policy_->close();
  link_.closeRelays();
}

void Forwarder::armTun() {
  tunWatch_.async_wait(asio::posix::stream_descriptor::wait_read, [this](boost::system::error_code ec) {
    if (!ec && !stopped_) readTun();
  });
}

void Forwarder::armRaw(int family) {
  auto& watch = family == AF_INET ? raw4Watch_ : raw6Watch_;
  watch.async_wait(asio::posix::stream_descriptor::wait_read, [this, family](boost::system::error_code ec) {
    if (!ec && !stopped_) readRaw(family);
  });
}

void Forwarder::armUdp(int family) {
  auto& watch = family == AF_INET ? udp4Watch_ : udp6Watch_;
  watch.async_wait(asio::posix::stream_descriptor::wait_read, [this, family](boost::system::error_code ec) {
    if (!ec && !stopped_) readUdp(family);
  });
}

// Keepalives go out every natt_keepalive_interval seconds (the first one an
// interval after the first arming), none when it is 0; TFC dummies on idle
// SAs (pmtu.cpp). The timer sleeps until the next of them is due, never
// less than a second (the fixed tick it replaces), and not at all when
// neither is on: an idle tunnel's forwarder ticked once a second before.
// An SA install and the keepalive sysctl re-arm it (their deadlines move).
void Forwarder::armKeepalives() {
  if (stopped_) return;
  const std::uint64_t now = clock::monotonicMs();
  if (lastKeepaliveMs_ == 0) lastKeepaliveMs_ = now;
  clock::NextDeadline next;
  if (keepaliveIntervalS_ > 0) next.consider(lastKeepaliveMs_ + static_cast<std::uint64_t>(keepaliveIntervalS_) * 1000);
  // An SA with dummies that has not sent yet (not known outbound) is looked
  // at every second, as before: its first packet gives no signal here.
  sas_.forEach([&](Sa& sa) {
    const TunnelOptions* t = tunnelOf(sa);
    if (t && t->dummyIntervalMs != 0) next.consider(t->outbound ? t->lastOutMs + t->dummyIntervalMs : 0);
  });
  if (!next.at()) {
    keepaliveTimer_.cancel();
    return;
  }
  keepaliveTimer_.expires_after(std::chrono::milliseconds(clock::msUntil(*next.at(), now, 1000, 3600000)));
  keepaliveTimer_.async_wait([this](boost::system::error_code ec) {
    if (ec || stopped_) return;  // aborted: re-armed, or stopping
    const std::uint64_t now = clock::monotonicMs();
    if (keepaliveIntervalS_ > 0 && now - lastKeepaliveMs_ >= static_cast<std::uint64_t>(keepaliveIntervalS_) * 1000) {
      lastKeepaliveMs_ = now;
      sendKeepalives();
    }
    sendDummies();
    armKeepalives();
  });
}

// Completion doorbell protocol: drain, then declare ourselves asleep and
// re-check before waiting, so a completion published in between is not missed.
void Forwarder::armBell(Worker& w) {
  w.bellArmed = true;
  w.bellWatch->async_wait(asio::posix::stream_descriptor::wait_read, [this, &w](boost::system::error_code ec) {
    w.bellArmed = false;
    if (ec || stopped_) return;
    w.completionBell.drain();
    serviceCompletions(w);
  });
}

// While requests are in flight and their poll window is open (flushRequests
// opens it), look at the completion ring again in a posted step instead of
// sleeping on the completion bell: a worker answers one packet within a few
// µs when awake and within tens of µs when our ring woke it, and the bell's
// wake-up costs us more than that (plus the worker's eventfd write, which
// it skips while our sleeping flag is down). Each step returns to asio, which
// looks at the other descriptors without blocking, so a busy TUN or socket
// is read meanwhile. While the worker has not taken our requests yet it may
// be waiting for our core: sched_yield lets it run. Once it has, it runs
// elsewhere and a pause instruction is all the wait needs; a sched_yield
// then would only hand a busy core to other work for a whole time slice.
void Forwarder::serviceCompletions(Worker& w) {
  w.completions.finishSleep();
  drainCompletions(w);
  if (w.inFlight != 0 && clock::monotonicNs() < w.pollUntilNs) {
    if (w.requests.freeSlots() != w.requests.capacity()) {
      sched_yield();
    } else {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    }
    pollCompletions(w);
    return;
  }
  if (w.completions.prepareToSleep()) {
    if (!w.bellArmed) armBell(w);
  } else {
    pollCompletions(w);
  }
}

// Posts one serviceCompletions step for w unless one is posted already.
void Forwarder::pollCompletions(Worker& w) {
  if (w.pollPosted || stopped_) return;
  w.pollPosted = true;
  asio::post(io_, [this, &w] {
    w.pollPosted = false;
    if (!stopped_) serviceCompletions(w);
  });
}

// An ESP or AH SA's entry and its side tables (NAT-T, tunnel options).
void Forwarder::removeSaEntry(SaRef ref) {
  sas_.remove(ref);
  natt_.forget(ref);
  removeTunnelOptions(ref);
}

bool Forwarder::onKeydb(capnp::MessageReader& m, std::vector<UniqueFd>& fds) {
  if (!fds.empty()) return false;
  auto msg = m.getRoot<proto::KeydbToForwarder>();
  switch (msg.which()) {
    case proto::KeydbToForwarder::INSTALL: {
      if (isIpcompInstall(msg.getInstall())) {  // no session, no ESP layout: bundle.cpp keeps it
        if (!installIpcomp(msg.getInstall())) {
          log::error("keydb sent a bad IPComp SA");
          return false;
        }
        releaseHeld();
        return true;
      }
      auto p = msg.getInstall().getParams();
      const SaRef ref{msg.getInstall().getSa().getIndex(), msg.getInstall().getSa().getGeneration()};
      const SaRef replaced{msg.getInstall().getReplaces().getIndex(), msg.getInstall().getReplaces().getGeneration()};
      // An UPDATE's new entry inherits what the old one accepted (read
      // before the install, which may reuse the old one's slot).
      std::optional<esp::ReplayWindow> inherited;
      if (const Sa* old = replaced.generation != 0 ? sas_.find(replaced) : nullptr;
          old && old->replay && old->spi == p.getSpi() && old->satype == p.getSatype()) {
        inherited = old->replay;
      }
      if (auto err = isAhInstall(msg.getInstall()) ? installAh(msg.getInstall()) : sas_.install(msg.getInstall())) {
        log::error("keydb sent a bad SA: {}", *err);
        return false;
      }
      if (replaced.generation != 0 && replaced != ref) {
        if (Sa* sa = sas_.find(ref); sa && sa->replay && inherited) SaTable::carryReplayHistory(*inherited, *sa->replay);
        removeSaEntry(replaced);
      }
      if (p.getNatTType() != 0 && p.getNatTType() != UDP_ENCAP_ESPINUDP) {
        // Only RFC 3948 encapsulation; the old draft's (non-IKE marker) is not run.
        log::error("SA SPI {:#x}: NAT-T type {} not supported, SA not installed", p.getSpi(), p.getNatTType());
        sas_.remove(ref);
        return true;
      }
      natt_.set(ref, NatT{true, ref.generation, p.getNatTType(), p.getNatTSport(), p.getNatTDport(), 0, false,
                          natOriginalAddresses(p)});
      installTunnelOptions(ref, msg.getInstall());
      if (const Sa* sa = sas_.find(ref); sa && tunnelOf(*sa)) armKeepalives();  // its dummies may be due before the timer
      log::debug("SA installed: SPI {:#x} seq [{}, {}){}", p.getSpi(), msg.getInstall().getSeqNext(),
                msg.getInstall().getSeqLimit(),
                p.getNatTType() ? " in UDP, ports " + std::to_string(p.getNatTSport()) + "->" +
                                      std::to_string(p.getNatTDport())
                                : std::string());
      releaseHeld();
      return true;
    }
    case proto::KeydbToForwarder::REMOVE: {
      const SaRef ref{msg.getRemove().getIndex(), msg.getRemove().getGeneration()};
      if (removeIpcomp(ref)) return true;
      removeSaEntry(ref);
      return true;
    }
    case proto::KeydbToForwarder::SEQ_GRANT: {
      auto g = msg.getSeqGrant();
      if (Sa* sa = sas_.find({g.getSa().getIndex(), g.getSa().getGeneration()})) {
        if (g.getSeqLimit() > sa->seqLimit) sa->seqLimit = g.getSeqLimit();
        sa->seqRequested = false;
      }
      return true;
    }
  }
  return false;
}

bool Forwarder::onPolicy(capnp::MessageReader& m, std::vector<UniqueFd>& fds) {
  if (!fds.empty()) return false;
  auto msg = m.getRoot<proto::PolicyToForwarder>();
  switch (msg.which()) {
    case proto::PolicyToForwarder::ADD:
      if (auto err = spd_.add(msg.getAdd())) {
        log::error("policy sent a bad policy: {}", *err);
        return false;
      }
      return true;
    case proto::PolicyToForwarder::DELETE:
      spd_.remove(msg.getDelete());
      return true;
    case proto::PolicyToForwarder::FLUSH:
      spd_.clear();
      return true;
  }
  return false;
}

// Usage for lifetimes (bytes, packets, first use) goes to keydb once a
// second while it changes; held packets expire on the same tick. The timer
// runs only while there is something to report or expire: a completion or a
// held packet starts it (armUsage), and a tick that finds no new usage, no
// held packet and no ACQUIRE to age lets it stop, so an idle tunnel's
// forwarder and keydb sleep (the report keydb has is still the latest).
void Forwarder::sendUsage() {
  if (stopped_) return;
  expireHeld();
  std::vector<const Sa*> used;
  std::uint64_t total = 0;  // changes with any SA's use, and with the set of SAs in use
  sas_.forEach([&](Sa& sa) {
    if (sa.firstUse == 0) return;
    used.push_back(&sa);
    total += sa.counters.out_packets + sa.counters.in_packets + sa.counters.out_bytes + sa.counters.in_bytes + 1;
  });
  const bool changed = total != lastUsageTotal_;
  lastUsageTotal_ = total;
  if (changed && !used.empty() && keydb_) {
    capnp::MallocMessageBuilder b;
    auto list = b.initRoot<proto::ForwarderToKeydb>().initUsage(static_cast<unsigned>(used.size()));
    for (unsigned i = 0; i < used.size(); ++i) {
      const Sa& sa = *used[i];
      list[i].initSa().setIndex(sa.ref.index);
      list[i].getSa().setGeneration(sa.ref.generation);
      list[i].setBytes(sa.counters.out_bytes + sa.counters.in_bytes);
      list[i].setPackets(sa.counters.out_packets + sa.counters.in_packets);
      list[i].setFirstUse(sa.firstUse);
    }
    keydb_->send(b);
  }
  if (changed || !held_.empty() || acquireTimes_.size() != 0) armUsage();
}

void Forwarder::armUsage() noexcept {
  if (usageArmed_ || stopped_) return;
  usageArmed_ = true;
  usageTimer_.expires_after(std::chrono::seconds(1));
  usageTimer_.async_wait([this](boost::system::error_code ec) {
    usageArmed_ = false;
    if (!ec) sendUsage();
  });
}

void Forwarder::fillStats(proto::Stats::Builder out) {
  Counters now = counters_;
  // The other forwarder threads' (thread_link.h); this one's share only taken when there are others.
  const ThreadShares threads = link_.several() ? link_.gatherShares(statsShare(), now) : ThreadShares{};
  sas_.forEach([&](Sa&) { ++now.sas; });
  now.policies = spd_.size();
  // Each listed SA costs about 350 bytes of the answer, which must fit one
  // control message (lib/control kMaxMessageBytes, 1 MiB): beyond the cap the
  // answer says how many it left out instead of not arriving at all.
  const std::uint64_t listed = std::min<std::uint64_t>(now.sas, kMaxListedSas);
  now.sas_not_listed = now.sas - listed;
  threads.fillExtra(stats::fillCounters(out, now, threads.extraRows()), std::size(Counters::kInfo));

  auto saList = out.initSas(static_cast<unsigned>(listed));
  unsigned j = 0;
  sas_.forEach([&](Sa& sa) {
    if (j == listed) return;
    auto e = saList[j++];
    e.setSatype(sa.satype);
    e.setSpi(sa.spi);
    auto d = sa.dst.bytes();
    e.setDst(capnp::Data::Reader(d.data(), d.size()));
    auto src = sa.src.bytes();  // the src label of ipsecctl stats --prometheus
    e.setSrc(capnp::Data::Reader(src.data(), src.size()));
    stats::fillCounters(e, threads.of(sa));
  });
}

void Forwarder::setSysctl(std::string_view name, std::int64_t value) {
  if (name == "net.inet.esp.enable") espEnabled_ = value != 0;
  if (name == "net.inet.ah.enable") ahEnabled_ = value != 0;
  if (name == "net.inet.ipcomp.enable") ipcompEnabled_ = value != 0;
  if (name == "net.inet.ipsec.debug") log::setDebug(value != 0);
  // The window of SAs installed from now on whose client gave none (tables.h).
  if (name == "net.inet.ipsec.replay_window") sas_.setDefaultReplayWindow(value);
  if (name == "net.inet.ipsec.natt_keepalive_interval") {
    keepaliveIntervalS_ = value < 0 ? 0 : value;
    armKeepalives();  // the next keepalive moved
  }
  // Tunnel details (pmtu.cpp): FreeBSD's dfbit (0 clear, 1 set, 2 copy) for
  // SAs without their own DF policy; the path MTU of SAs without their own.
  if (name == "net.inet.ipsec.dfbit") tunnels_.setDfbit(value);
  // UDP GRO/GSO on the NAT-T sockets (gro.cpp).
  if (name == "net.inet.ipsec.udp_gro") setUdpGro(value != 0);
  if (name == "net.inet.ipsec.udp_gso") udpGso_ = value != 0;
  if (name == "net.inet.ipsec.default_mtu") tunnels_.setDefaultMtu(value);
}

}  // namespace ipsec::forwarder
