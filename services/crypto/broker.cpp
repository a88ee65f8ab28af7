// See broker.h.
#include "broker.h"

#include <linux/pfkeyv2.h>
#include <sodium.h>
#include <fcntl.h>

#include <array>
#include <cerrno>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>

#include "control/scratch_builder.h"
#include "log/log.h"
#include "proto/crypto.capnp.h"

namespace ipsec::crypto {
namespace {

SessionDirection fromProto(proto::Direction d) noexcept {
  switch (d) {
    case proto::Direction::OUTBOUND: return SessionDirection::kOutbound;
    case proto::Direction::INBOUND: return SessionDirection::kInbound;
    case proto::Direction::UNKNOWN: break;
  }
  return SessionDirection::kUnknown;  // unknown, or a value newer than this build: opens only
}

}  // namespace

Broker::Broker(boost::asio::io_context& io, UniqueFd keydb, std::vector<RingFds> rings)
    : io_(io), drivers_(cryptodrv::DriverRegistry::withDefaultDrivers()) {
  keydb_ = std::make_unique<control::Channel>(io_, std::move(keydb), "ipsec-keydb");
  sessions_ = std::make_unique<SessionTable>(drivers_, static_cast<unsigned>(rings.size()));
  // Workers ring this when a session's IV grant runs low (sessions.h); a dup,
  // as asio closes what it watches.
  const int ivLowFd = ::fcntl(sessions_->ivLowFd(), F_DUPFD_CLOEXEC, 0);
  if (ivLowFd < 0) throw std::runtime_error("dup of the IV-low eventfd failed");
  ivLowWatch_ = std::make_unique<boost::asio::posix::stream_descriptor>(io_, ivLowFd);
  for (unsigned i = 0; i < rings.size(); ++i) {
    // Guard pages around the mapping: the worker writes where the forwarder
    // points it, so a bounds check that ever failed would fault, not corrupt.
    auto attached = ring::Region::attach(std::move(rings[i].region), nullptr, ring::GuardPages::kSurround);
    if (!attached.region) {
      throw std::runtime_error(std::string("ring region rejected: ") + ring::toString(attached.error));
    }
    workers_.push_back(std::make_unique<Worker>(i, std::move(*attached.region),
                                                ring::Doorbell(std::move(rings[i].requestBell)),
                                                ring::Doorbell(std::move(rings[i].completionBell)), *sessions_));
  }
}

Broker::~Broker() { stop(); }

void Broker::start() {
  keydb_->start([this](capnp::MessageReader& m, std::vector<UniqueFd>& f) { return onKeydb(m, f); },
                [this](std::string_view why) {
                  if (stopped_) return;
                  log::error("channel to ipsec-keydb closed: {}", why);
                  std::exit(1);
                });
  armIvLow();
}

// keydb's answer (an IvGrant) clears the session's request; until then a
// session is asked for at most once.
void Broker::armIvLow() {
  ivLowWatch_->async_wait(boost::asio::posix::stream_descriptor::wait_read, [this](boost::system::error_code ec) {
    if (ec || stopped_) return;
    for (const auto& low : sessions_->takeIvLow()) {
      control::ScratchMessageBuilder<32> b;  // one per session: not 8 KiB of heap each
      auto r = b.initRoot<proto::CryptoToKeydb>().initIvRequest();
      r.initSa().setIndex(low.index);
      r.getSa().setGeneration(low.generation);
      r.setIvNext(low.ivNext);
      keydb_->send(b);
    }
    armIvLow();
  });
}

void Broker::startWorkers() {
  for (auto& w : workers_) w->start();
}

void Broker::stop() {
  if (stopped_) return;
  stopped_ = true;
  for (auto& w : workers_) w->stop();
  boost::system::error_code ignored;
  ivLowWatch_->cancel(ignored);
  keydb_->close();
}

bool Broker::onKeydb(capnp::MessageReader& m, std::vector<UniqueFd>& fds) {
  if (!fds.empty()) return false;
  auto msg = m.getRoot<proto::KeydbToCrypto>();
  switch (msg.which()) {
    case proto::KeydbToCrypto::CREATE_SESSION: {
      auto c = msg.getCreateSession();
      auto p = c.getParams();
      auto keys = c.getKeys();
      cryptodrv::TransformSpec spec;
      spec.encAlg = p.getEncAlg();
      spec.authAlg = p.getAuthAlg();
      spec.encKey = {keys.getEncrypt().begin(), keys.getEncrypt().size()};
      spec.authKey = {keys.getAuth().begin(), keys.getAuth().size()};
      spec.esn = p.getEsn();
      spec.allowLegacy = allowLegacy_;
      std::uint8_t layout[3] = {0, 0, 0};
      std::string err;
      int code = 0;  // the errno keydb answers a refused ADD with
      switch (p.getSatype()) {
        case SADB_SATYPE_UNSPEC:  // senders from before AH sessions existed
        case SADB_SATYPE_ESP:
          err = sessions_->create(c.getSa().getIndex(), c.getSa().getGeneration(), spec,
                                  fromProto(c.getDirection()), c.getIvNext(), c.getIvLimit(), layout, &code);
          break;
        case SADB_SATYPE_AH:  // integrity only; no IVs, so the IV grant is unused
          err = sessions_->createAh(c.getSa().getIndex(), c.getSa().getGeneration(), spec,
                                    fromProto(c.getDirection()), layout, &code);
          break;
        default:  // IPComp needs no key: the forwarder compresses without a session
          err = "satype " + std::to_string(p.getSatype()) + " has no crypto session";
          code = EINVAL;
          break;
      }
      // The transforms copied the keys into locked memory; the channel wipes
      // its receive buffer once this handler returns.
      control::ScratchMessageBuilder<32> b;  // one per session: not 8 KiB of heap each
      auto r = b.initRoot<proto::CryptoToKeydb>().initSessionResult();
      r.setSa(c.getSa());
      r.setOk(err.empty());
      r.setError(err);
      r.setErrorCode(static_cast<std::uint16_t>(err.empty() ? 0 : code));
      r.setIvLength(layout[0]);  // AH: 0; icvLength is the AH ICV; padAlign 0
      r.setIcvLength(layout[1]);
      r.setPadAlign(layout[2]);
      keydb_->send(b);
      (err.empty() ? sessionsCreated_ : sessionsRefused_)++;
      if (!err.empty() && code == ENOMEM) ++sessionsNoKeyMemory_;
      if (!err.empty()) log::warn("session for SPI {:#x} refused: {}", p.getSpi(), err);
      return true;
    }
    case proto::KeydbToCrypto::DESTROY_SESSION:
      sessions_->destroy(msg.getDestroySession().getIndex(), msg.getDestroySession().getGeneration());
      return true;
    case proto::KeydbToCrypto::IV_GRANT: {
      auto g = msg.getIvGrant();
      sessions_->grantIv(g.getSa().getIndex(), g.getSa().getGeneration(), g.getIvLimit());
      return true;
    }
    case proto::KeydbToCrypto::SET_DIRECTION: {
      // Applied here, on the control thread, before the next message: the
      // workers read the session's direction on their next request.
      auto d = msg.getSetDirection();
      sessions_->setDirection(d.getSa().getIndex(), d.getSa().getGeneration(), fromProto(d.getDirection()));
      return true;
    }
    case proto::KeydbToCrypto::BARRIER: {
      // Every message before it was handled in order, synchronously (none is
      // posted elsewhere): echoing on receipt says they are all applied.
      control::ScratchMessageBuilder<16> b;
      b.initRoot<proto::CryptoToKeydb>().setBarrier(msg.getBarrier());
      keydb_->send(b);
      return true;
    }
  }
  return false;
}

void Broker::setSysctl(std::string_view name, std::int64_t value) {
  if (name == "net.inet.ipsec.allow_legacy") allowLegacy_ = value != 0;
}

// The workers' and sessions' atomics, summed into one snapshot.
void Broker::fillStats(proto::Stats::Builder out) {
  Counters now;
  now.sessions_created = sessionsCreated_;
  now.sessions_refused = sessionsRefused_;
  now.sessions_refused_no_key_memory = sessionsNoKeyMemory_;
  addWorkerCounters(now);
  addSessionCounters(now);
  stats::fillCounters(out, now);
}

namespace {

// A refusal kept per reason (ring::DescriptorError, LayoutError) goes to the
// counter named by its prefix and the reason's counterName; counters.h has
// one for each (tests/unit/crypto/broker_test.cpp), so a missing one is a
// broken invariant.
void setReasonCounter(Counters& now, std::string_view prefix, std::string_view reason, std::uint64_t value) {
  std::string name(prefix);
  name += reason;
  std::uint64_t* counter = now.find(name);
  if (counter == nullptr) {
    log::error("ipsec-crypto: no counter {} in counters.h", name);
    std::abort();
  }
  *counter = value;
}

}  // namespace

void Broker::addWorkerCounters(Counters& now) const {
  std::array<std::uint64_t, ring::kDescriptorErrorCount> refused{};
  for (const auto& w : workers_) {
    const auto& c = w->counters();
    now.requests += c.requests;
    now.bursts += c.bursts;
    now.worker_sleeps += c.sleeps;
    now.worker_sleeps_completion_full += c.completionFullSleeps;
    now.drop_bad_descriptor += c.badDescriptor;
    now.drop_bad_session += c.badSession;
    now.ring_corrupt += c.ringCorrupt;
    for (std::size_t i = 0; i < refused.size(); ++i) refused[i] += c.descriptorRefused[i];
  }
  for (std::size_t i = 1; i < refused.size(); ++i) {  // 0 is kNone
    setReasonCounter(now, "drop_descriptor_", ring::counterName(static_cast<ring::DescriptorError>(i)), refused[i]);
  }
}

void Broker::addSessionCounters(Counters& now) const {
  sessions_->forEach([&](std::uint32_t, Session& s) {
    ++now.sessions;
    switch (s.direction.load(std::memory_order_relaxed)) {
      case SessionDirection::kOutbound: ++now.sessions_outbound; break;
      case SessionDirection::kInbound: ++now.sessions_inbound; break;
      case SessionDirection::kUnknown: ++now.sessions_unknown_direction; break;
    }
    now.sealed += s.sealed;
    now.opened += s.opened;
    now.open_bad_icv += s.badIcv;
    now.seal_iv_exhausted += s.ivExhausted;
    now.ah_signed += s.ahSigned;
    now.ah_verified += s.ahVerified;
    now.drop_bad_op += s.badOp;
  });
  const RefusalCounters& refused = sessions_->refusals();
  for (std::size_t i = 1; i < kLayoutErrorCount; ++i) {  // 0 is kNone
    setReasonCounter(now, "drop_", counterName(static_cast<LayoutError>(i)), refused.layout[i].load());
  }
  now.drop_driver_bad_length = refused.driverBadLength;
  now.seal_refused_direction = refused.sealRefusedDirection;
  now.open_refused_direction = refused.openRefusedDirection;
  now.ah_sign_refused_direction = refused.ahSignRefusedDirection;
  now.ah_verify_refused_direction = refused.ahVerifyRefusedDirection;
}

}  // namespace ipsec::crypto
