// See keydb.h.
#include "keydb.h"

#include <linux/pfkeyv2.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>

#include <sodium.h>

#include "clock/clock.h"
#include "clock/deadline.h"
#include "control/scratch_builder.h"
#include "log/log.h"
#include "service/replacement.h"

namespace ipsec::keydb {
namespace {

// Lifetimes and PF_KEY's addtime are wall-clock seconds.
std::uint64_t now() { return clock::unixSeconds(); }

std::span<const std::uint8_t> span(capnp::Data::Reader d) { return {d.begin(), d.size()}; }

// How PF_KEY names an SA: (satype, SPI, destination).
SaKey keyOf(std::uint8_t satype, std::uint32_t spi, capnp::Data::Reader dst) {
  return SaKey{satype, spi, std::string(dst.asChars().begin(), dst.size())};
}

bool goodAddress(capnp::Data::Reader a) { return a.size() == 4 || a.size() == 16; }

// The same key bytes (a lifetime refresh or an address change, not a rekey),
// compared in constant time.
bool sameKey(const SecureBytes& a, const SecureBytes& b) {
  return a.size() == b.size() && (a.size() == 0 || sodium_memcmp(a.bytes().data(), b.bytes().data(), a.size()) == 0);
}

void setRef(proto::SaRef::Builder b, SaRef r) {
  b.setIndex(r.index);
  b.setGeneration(r.generation);
}

}  // namespace

Keydb::Keydb(boost::asio::io_context& io, UniqueFd policy, UniqueFd crypto, UniqueFd forwarder)
    : io_(io), lifetimeTimer_(io), dumpTimer_(io) {
  policy_ = std::make_unique<control::Channel>(io_, std::move(policy), "ipsec-policy");
  attachDataPlane(std::move(crypto), std::move(forwarder));
}

void Keydb::startDataPlaneChannels() {
  crypto_->start([this](capnp::MessageReader& m, std::vector<UniqueFd>& f) { return onCrypto(m, f); },
                 [this](std::string_view why) {
                   log::warn("channel to ipsec-crypto closed: {}", why);
                   answerAwaitedMarks();  // no echo will come
                 });
  forwarder_->start([this](capnp::MessageReader& m, std::vector<UniqueFd>& f) { return onForwarder(m, f); },
                    [](std::string_view why) { log::warn("channel to ipsec-forwarder closed: {}", why); });
}

void Keydb::start() {
  startDataPlaneChannels();
  policy_->start([this](capnp::MessageReader& m, std::vector<UniqueFd>& f) { return onPolicy(m, f); },
                 [this](std::string_view why) {
                   if (stopped_) return;
                   log::error("channel to ipsec-policy closed: {}", why);
                   std::exit(1);  // fail closed: ipsecd stops everything
                 });
  armLifetimeTimer();
}

// The timer sleeps until the earliest due time in the heap, and not at all
// while the heap is empty (an idle keydb wakes for nothing; it ticked once a
// second before). scheduleLifetime re-arms it when an earlier time comes.
// A stale heap entry (SA gone or rescheduled) costs one early look at most.
void Keydb::armLifetimeTimer() {
  if (stopped_) return;
  if (lifetimeDue_.empty()) {
    lifetimeTimerAt_ = 0;
    lifetimeTimer_.cancel();
    return;
  }
  lifetimeTimerAt_ = lifetimeDue_.top().at;
  // Not before 10 ms (a due time now is judged then); at least once a minute,
  // so that a wall clock set forward is noticed as the fixed tick noticed it.
  const std::uint64_t waitMs = clock::msUntilUnixSecond(lifetimeTimerAt_, clock::unixNs(), 10, 60000);
  lifetimeTimer_.expires_after(std::chrono::milliseconds(waitMs));  // cancels the wait armed before
  lifetimeTimer_.async_wait([this](boost::system::error_code ec) {
    if (ec || stopped_) return;
    lifetimeTimerAt_ = 0;
    checkLifetimes();
    armLifetimeTimer();
  });
}

namespace {

// Has the SA used up this lifetime? Zero fields mean unlimited.
bool exceeded(proto::Lifetime::Reader l, std::uint64_t bytes, std::uint64_t packets, std::uint64_t addTime,
              std::uint64_t firstUse, std::uint64_t nowS) {
  return (l.getBytes() != 0 && bytes >= l.getBytes()) ||
         (l.getAllocations() != 0 && packets >= l.getAllocations()) ||
         (l.getAddTime() != 0 && nowS - addTime >= l.getAddTime()) ||
         (l.getUseTime() != 0 && firstUse != 0 && nowS - firstUse >= l.getUseTime());
}

// ESP and AH SAs reach the forwarder through a crypto session (their keys
// stay in the broker); IPComp SAs have no keys and go to the forwarder
// directly (it compresses without the broker).
bool needsSession(const Sa& sa) {
  const auto t = sa.p().getSatype();
  return t == SADB_SATYPE_ESP || t == SADB_SATYPE_AH;
}
bool hasDataPath(const Sa& sa) { return needsSession(sa) || sa.p().getSatype() == SADB_X_SATYPE_IPCOMP; }

// A message about one SA (its parameters, at most its keys) fits in 128
// words, on the stack (control/scratch_builder.h): capnp's default first
// segment (1024 words, 8 KiB, zeroed, on the heap) was a third of keydb's
// time per ADD, three messages each.
constexpr unsigned kOneSaMessageWords = 128;

// IPComp (RFC 3173): a 16-bit CPI in the SPI field, DEFLATE (RFC 2394) the
// only algorithm we run, and nothing secret. policy checks this first; keydb
// checks again because it is keydb that hands the SA to the data path.
bool goodIpcomp(proto::SaParams::Reader p, proto::SaKeys::Reader k) {
  return p.getSpi() <= 0xffff && p.getEncAlg() == SADB_X_CALG_DEFLATE && p.getAuthAlg() == SADB_AALG_NONE &&
         k.getEncrypt().size() == 0 && k.getAuth().size() == 0 && !p.getEsn();
}

}  // namespace

void Keydb::checkLifetimes() {
  const std::uint64_t t = now();
  while (!lifetimeDue_.empty() && lifetimeDue_.top().at <= t) {
    const LifetimeDue due = lifetimeDue_.top();
    lifetimeDue_.pop();
    Sa* sa = sad_.find(due.ref);
    if (sa == nullptr || sa->lifetimeDue != due.at) continue;  // gone, or rescheduled since
    sa->lifetimeDue = 0;
    checkLifetime(*sa, t);
  }
}

bool Keydb::checkLifetime(Sa& sa, std::uint64_t t) {
  if (sa.larval()) {
    if (t - sa.addTime >= larvalLifetime_) {
      ++counters_.larval_expired;
      removeSa(sa);
      return false;
    }
  } else if (!sa.pendingAdd) {  // a pending SA is not live yet: look again later
    const std::uint64_t bytes = sa.usageBase.bytes + sa.usageReported.bytes;
    const std::uint64_t packets = sa.usageBase.packets + sa.usageReported.packets;
    auto p = sa.p();
    if (exceeded(p.getHard(), bytes, packets, sa.addTime, sa.firstUse, t)) {
      sa.pb().setState(SADB_SASTATE_DEAD);
      sendExpire(sa, true);
      removeSa(sa);
      return false;
    }
    if (p.getState() == SADB_SASTATE_MATURE && exceeded(p.getSoft(), bytes, packets, sa.addTime, sa.firstUse, t)) {
      sa.pb().setState(SADB_SASTATE_DYING);
      sendExpire(sa, false);
    }
  }
  scheduleLifetime(sa, t);
  return true;
}

void Keydb::scheduleLifetime(Sa& sa, std::uint64_t t) {
  std::uint64_t at = 0;
  auto earliest = [&at](std::uint64_t when) {
    if (at == 0 || when < at) at = when;
  };
  if (sa.larval()) {
    earliest(sa.addTime + larvalLifetime_);
  } else if (sa.pendingAdd) {
    earliest(t + 1);
  } else {
    auto p = sa.p();
    auto timeLimits = [&](proto::Lifetime::Reader l) {
      if (l.getAddTime() != 0) earliest(sa.addTime + l.getAddTime());
      // Until the first use is known (a usage report) there is no use-time
      // deadline; the report that brings it judges the SA again.
      if (l.getUseTime() != 0 && sa.firstUse != 0) earliest(sa.firstUse + l.getUseTime());
    };
    timeLimits(p.getHard());
    if (p.getState() == SADB_SASTATE_MATURE) timeLimits(p.getSoft());
  }
  if (at == 0 || (sa.lifetimeDue != 0 && sa.lifetimeDue <= at)) return;
  sa.lifetimeDue = at;
  lifetimeDue_.push(LifetimeDue{at, sa.ref});
  if (lifetimeTimerAt_ == 0 || at < lifetimeTimerAt_) armLifetimeTimer();
}

void Keydb::rescheduleAllLifetimes() {
  lifetimeDue_ = {};
  lifetimeTimerAt_ = 0;
  const std::uint64_t t = now();
  for (Sa* sa : sad_.all()) {
    sa->lifetimeDue = 0;
    scheduleLifetime(*sa, t);
  }
  armLifetimeTimer();  // also when no SA is left to schedule
}

void Keydb::sendExpire(Sa& sa, bool hard) {
  (hard ? counters_.expires_hard : counters_.expires_soft)++;
  log::info("SA SPI {:#x}: {} lifetime reached", sa.p().getSpi(), hard ? "hard" : "soft");
  control::ScratchMessageBuilder<> b;
  auto e = b.initRoot<proto::KeydbToPolicy>().initExpire();
  e.setHard(hard);
  auto r = e.initRecord();
  r.setParams(sa.p());
  auto c = r.initCurrent();
  c.setAllocations(static_cast<std::uint32_t>(sa.usageBase.packets + sa.usageReported.packets));
  c.setBytes(sa.usageBase.bytes + sa.usageReported.bytes);
  c.setAddTime(sa.addTime);
  c.setUseTime(sa.firstUse);
  policy_->send(b);
}

void Keydb::stop() {
  stopped_ = true;
  dumpTimer_.cancel();
  for (auto* c : {&policy_, &crypto_, &forwarder_}) {
    if (*c) (*c)->close();
  }
}

void Keydb::attachDataPlane(UniqueFd crypto, UniqueFd forwarder) {
  crypto_ = std::make_unique<control::Channel>(io_, std::move(crypto), "ipsec-crypto");
  forwarder_ = std::make_unique<control::Channel>(io_, std::move(forwarder), "ipsec-forwarder");
}

bool Keydb::onDataPlaneRestarted(std::vector<UniqueFd>& fds) {
  UniqueFd crypto = service::takeReplacement(fdlayout::KeydbFd::kCrypto, fds);
  UniqueFd forwarder = service::takeReplacement(fdlayout::KeydbFd::kForwarder, fds);
  if (!crypto || !forwarder) return false;
  // The old broker's echoes will not come; the new one gets every SA with
  // its direction in CreateSession, before the forwarder gets the SA.
  answerAwaitedMarks();
  if (crypto_) crypto_->close();
  if (forwarder_) forwarder_->close();
  attachDataPlane(std::move(crypto), std::move(forwarder));
  startDataPlaneChannels();
  // The new broker has no sessions: recreate them all, each with an IV base
  // above everything granted to the old one; SAs reach the new forwarder as
  // their sessions come up, with sequence numbers above every old grant.
  for (Sa* sa : sad_.all()) {
    auto restart = [](Sa& s) {
      s.sessionReady = false;
      s.usageBase.bytes += s.usageReported.bytes;  // the new forwarder counts from zero
      s.usageBase.packets += s.usageReported.packets;
      s.usageReported = {};
    };
    restart(*sa);
    // An UPDATE's old SA lost its entry and session with the old data plane:
    // if it comes back (the successor refused) it gets a new session then.
    if (sa->replaced) restart(*sa->replaced);
    if (sa->larval() || !hasDataPath(*sa)) continue;
    if (needsSession(*sa)) {
      createSession(*sa);
    } else {
      sa->sessionReady = true;
      installInForwarder(*sa);
    }
  }
  log::info("data plane reattached; {} SAs re-issued", sad_.size());
  return true;
}

// ---- policy -----------------------------------------------------------------

bool Keydb::onPolicy(capnp::MessageReader& m, std::vector<UniqueFd>& fds) {
  if (!fds.empty()) return false;
  auto req = m.getRoot<proto::PolicyToKeydb>();
  const std::uint64_t id = req.getRequestId();
  if (debug_) log::info("SAD request {} (kind {}), {} SAs", id, static_cast<int>(req.which()), sad_.size());
  switch (req.which()) {
    case proto::PolicyToKeydb::ADD:
      add(id, req.getAdd());  // the channel wipes its receive buffer after this returns
      return true;
    case proto::PolicyToKeydb::DELETE: {
      auto n = req.getDelete();
      Sa* sa = sad_.find(keyOf(n.getSatype(), n.getSpi(), n.getDst()));
      if (!sa) return replyError(id, ESRCH), true;
      reply(id, 0, {sa});
      removeSa(*sa);
      return true;
    }
    case proto::PolicyToKeydb::GET: {
      auto n = req.getGet();
      Sa* sa = sad_.find(keyOf(n.getSatype(), n.getSpi(), n.getDst()));
      if (!sa) return replyError(id, ESRCH), true;
      reply(id, 0, {sa}, true);
      return true;
    }
    case proto::PolicyToKeydb::FLUSH: {
      auto victims = sad_.all(req.getFlush());
      // policy only needs to know whether anything was flushed (to tell every
      // socket): one record says so, and 100 000 would not fit one message.
      reply(id, 0, victims.empty() ? std::vector<Sa*>{} : std::vector<Sa*>{victims.front()});
      for (Sa* sa : victims) removeSa(*sa);
      return true;
    }
    case proto::PolicyToKeydb::DUMP: {
      startDump(id, req.getDump());  // only to the requester, keys included, as setkey -D shows them
      return true;
    }
    case proto::PolicyToKeydb::GET_SPI:
      getSpi(id, req.getGetSpi());
      return true;
    case proto::PolicyToKeydb::MIGRATE:
      migrate(id, req.getMigrate());
      return true;
    case proto::PolicyToKeydb::MARK_OUTBOUND:
      return markOutbound(id, req.getMarkOutbound());  // answered only with an id (sad.capnp)
    case proto::PolicyToKeydb::LOOKUP: {
      auto n = req.getLookup();
      Sa* sa = sad_.find(keyOf(n.getSatype(), n.getSpi(), n.getDst()));
      if (!sa) return replyError(id, ESRCH), true;
      reply(id, 0, {sa});  // without keys
      return true;
    }
  }
  return false;
}

void Keydb::add(std::uint64_t id, proto::SaAdd::Reader req) {
  auto p = req.getParams();
  if (!goodAddress(p.getSrc()) || !goodAddress(p.getDst()) || p.getSrc().size() != p.getDst().size()) {
    return replyError(id, EINVAL);
  }
  if (p.getSatype() != SADB_SATYPE_ESP && p.getSatype() != SADB_SATYPE_AH &&
      p.getSatype() != SADB_X_SATYPE_IPCOMP) {
    return replyError(id, EINVAL);
  }
  if (p.getSatype() == SADB_X_SATYPE_IPCOMP && !goodIpcomp(p, req.getKeys())) return replyError(id, EINVAL);
  SaKey key = keyOf(p.getSatype(), p.getSpi(), p.getDst());
  // UPDATE of a live SA (a MOBIKE address change, new NAT-T ports, new
  // lifetimes) replaces its slot but not its history: the new crypto session
  // and forwarder entry start above every sequence number and counter IV
  // granted before (the key may well be the same: restarting from zero would
  // reuse nonces), and usage and add time carry on as Linux keeps them. A
  // larval SA (GETSPI) has no history: it starts afresh. An UPDATE with
  // new keys is a new key's nonce space: its counter IVs start at their own
  // random point (Sad::create), the old grants matter only under the old key.
  struct History {
    std::uint64_t addTime, firstUse, seqGranted, ivGranted;
    Sa::Usage usage;
    bool sameKeys;
  };
  std::optional<History> history;
  Sa* old = sad_.find(key);
  if (old && !req.getUpdate()) return replyError(id, EEXIST);
  if (!old && req.getUpdate()) return replyError(id, ESRCH);
  // net.key.max_sas: a new SA beyond it is refused as Linux refuses one it
  // has no memory for, and the SAD (and its locked key memory, sized for the
  // maximum) stays as it is.
  if (!old && sad_.size() >= maxSas_) {
    ++counters_.add_over_max_sas;
    return replyError(id, ENOBUFS);
  }
  // Keys first: if the locked key memory cannot grow, the ADD is ENOMEM and
  // an UPDATE leaves the old SA in place.
  SecureBytes encKey, authKey;
  try {
    encKey = SecureBytes(span(req.getKeys().getEncrypt()));
    authKey = SecureBytes(span(req.getKeys().getAuth()));
  } catch (const std::bad_alloc&) {
    ++counters_.add_no_key_memory;
    log::warn("SA SPI {:#x}: no locked memory left for its keys ({} SAs): ENOMEM", p.getSpi(), sad_.size());
    return replyError(id, ENOMEM);
  }
  // A live ESP/AH SA keeps working (forwarder entry and broker session)
  // until its successor is installed, which inherits its replay window: an
  // UPDATE never opens a window in which packets it accepted are accepted
  // again, and drops nothing. Its sequence numbers and IVs stay inside the
  // grants it has; the successor starts above them. The old SA is held
  // whole, live or larval: if the successor's session is refused, it is
  // back as it was (Linux checks the new state, keys and algorithms, before
  // xfrm_state_update touches the old one, larval or not).
  std::unique_ptr<Sa> replaced;
  proto::Direction direction = req.getOutbound() ? proto::Direction::OUTBOUND : proto::Direction::UNKNOWN;
  if (old) {
    if (!old->larval()) {
      history = History{old->addTime, old->firstUse, old->seqGranted, old->ivGranted,
                        {old->usageBase.bytes + old->usageReported.bytes,
                         old->usageBase.packets + old->usageReported.packets},
                        sameKey(old->encKey, encKey) && sameKey(old->authKey, authKey)};
    }
    // Neither direction is taken back: a GETSPI SA was asked for to receive
    // on, and an outbound one may have sealed already.
    if (old->direction != proto::Direction::UNKNOWN) direction = old->direction;
    if (needsSession(*old) && (old->larval() || (old->sessionReady && !old->pendingAdd))) {
      replaced = sad_.detach(old->ref);  // a live one's session and entry live on under its ref
    } else if (old->pendingAdd && old->replaced) {
      // An earlier UPDATE still waits for its session: it ends (EINTR, its
      // pending session destroyed) and this one replaces what it replaced.
      replaced = std::move(old->replaced);
      removeSa(*old);
    } else {
      removeSa(*old);
    }
  }
  Sa& sa = sad_.create(p);
  sa.replaced = std::move(replaced);
  sa.direction = direction;
  sa.pb().setState(SADB_SASTATE_MATURE);
  sa.encKey = std::move(encKey);
  sa.authKey = std::move(authKey);
  sa.addTime = now();
  if (history) {
    sa.addTime = history->addTime;
    sa.firstUse = history->firstUse;
    sa.seqGranted = history->seqGranted;
    if (history->sameKeys) sa.ivGranted = history->ivGranted;
    sa.usageBase = history->usage;
  }
  if (!needsSession(sa)) {
    // IPComp: installed at once; the reply does not wait for the forwarder
    // (nothing can fail there that PF_KEY would report).
    sa.sessionReady = true;
    scheduleLifetime(sa, now());
    installInForwarder(sa);
    return reply(id, 0, {&sa});
  }
  // ESP and AH: the reply waits for the broker's verdict. A refused session
  // fails the ADD with the broker's errno (EINVAL for an algorithm or key it
  // does not run, ENOMEM when its locked key memory is exhausted) and the SA
  // is gone, whatever its type; a refused UPDATE leaves the old SA (onCrypto).
  sa.pendingAdd = id;
  scheduleLifetime(sa, now());
  createSession(sa);
}

void Keydb::getSpi(std::uint64_t id, proto::GetSpi::Reader req) {
  if (!goodAddress(req.getSrc()) || !goodAddress(req.getDst()) || req.getSrc().size() != req.getDst().size()) {
    return replyError(id, EINVAL);
  }
  std::string dst(req.getDst().asChars().begin(), req.getDst().size());
  auto spi = sad_.allocateSpi(req.getSatype(), dst, req.getMin(), req.getMax());
  if (!spi) return replyError(id, ENOENT);
  control::ScratchMessageBuilder<> b;
  auto p = b.initRoot<proto::SaParams>();
  p.setSatype(req.getSatype());
  p.setSpi(*spi);
  p.setSrc(req.getSrc());
  p.setDst(req.getDst());
  p.setMode(req.getMode());
  p.setReqid(req.getReqid());
  p.setState(SADB_SASTATE_LARVAL);
  if (sad_.size() >= maxSas_) {  // a larval SA takes a slot too
    ++counters_.add_over_max_sas;
    return replyError(id, ENOBUFS);
  }
  Sa& sa = sad_.create(p.asReader());
  sa.direction = proto::Direction::INBOUND;  // its SPI was asked for to receive on
  sa.addTime = now();
  scheduleLifetime(sa, sa.addTime);
  reply(id, 0, {&sa});
}

void Keydb::removeSa(Sa& sa) {
  if (sa.replaced) dropReplaced(std::move(sa.replaced), false);
  if (!sa.larval() && hasDataPath(sa)) {
    if (needsSession(sa) && crypto_ && crypto_->isOpen()) {
      control::ScratchMessageBuilder<> b;
      setRef(b.initRoot<proto::KeydbToCrypto>().initDestroySession(), sa.ref);
      crypto_->send(b);
    }
    if (forwarder_ && forwarder_->isOpen()) {
      control::ScratchMessageBuilder<> b;
      setRef(b.initRoot<proto::KeydbToForwarder>().initRemove(), sa.ref);
      forwarder_->send(b);
    }
  }
  if (sa.pendingAdd) replyError(*sa.pendingAdd, EINTR);
  sad_.erase(sa.ref);
}

void Keydb::dropReplaced(std::unique_ptr<Sa> old, bool installed) {  // its keys are wiped as it goes
  sad_.releaseSlot(old->ref.index);
  // A larval SA, or one whose data plane restarted while it waited, has no
  // session or entry to end.
  if (old->larval() || !old->sessionReady) return;
  if (crypto_ && crypto_->isOpen()) {
    control::ScratchMessageBuilder<> b;
    setRef(b.initRoot<proto::KeydbToCrypto>().initDestroySession(), old->ref);
    crypto_->send(b);
  }
  if (!installed && forwarder_ && forwarder_->isOpen()) {
    control::ScratchMessageBuilder<> b;
    setRef(b.initRoot<proto::KeydbToForwarder>().initRemove(), old->ref);
    forwarder_->send(b);
  }
}

void Keydb::restoreReplaced(Sa& successor) {
  std::unique_ptr<Sa> old = std::move(successor.replaced);
  // The refused successor's IV block was never used, but nothing granted
  // under these keys is granted again.
  old->ivGranted = std::max(old->ivGranted, successor.ivGranted);
  old->seqGranted = std::max(old->seqGranted, successor.seqGranted);
  // No DESTROY or REMOVE: the broker refused its session and the forwarder
  // never had it.
  sad_.erase(successor.ref);
  const SaRef ref = old->ref;
  if (!sad_.reattach(old)) {
    // Its name was taken while it waited (the successor migrated away and
    // another SA added there): it cannot come back, so it ends.
    log::warn("SA SPI {:#x}: its name was taken during a refused UPDATE; removed", old->p().getSpi());
    dropReplaced(std::move(old), false);
    return;
  }
  Sa& sa = *sad_.find(ref);
  log::info("SA SPI {:#x}: UPDATE refused, the SA stays as it was", sa.p().getSpi());
  if (!sa.larval() && hasDataPath(sa)) {
    if (!sa.sessionReady) {
      createSession(sa);  // the data plane restarted meanwhile: installed when its session is
    } else {
      // Requests for more sequence numbers or IVs that came while it waited
      // went unanswered (it had no name, and the successor's blocks started
      // at its grants), and the forwarder and broker ask only once: grant now.
      if (forwarder_ && forwarder_->isOpen()) {
        control::ScratchMessageBuilder<> b;
        auto g = b.initRoot<proto::KeydbToForwarder>().initSeqGrant();
        setRef(g.initSa(), sa.ref);
        g.setSeqLimit(sad_.extendSeq(sa));
        ++counters_.seq_grants;
        forwarder_->send(b);
      }
      if (crypto_ && crypto_->isOpen()) {
        control::ScratchMessageBuilder<> b;
        auto g = b.initRoot<proto::KeydbToCrypto>().initIvGrant();
        setRef(g.initSa(), sa.ref);
        g.setIvLimit(sad_.extendIv(sa));
        ++counters_.iv_grants;
        crypto_->send(b);
      }
    }
  }
  // Its heap entry may have been passed over while it had no name: judge it
  // now (a time limit reached meanwhile acts at once) and schedule it again.
  sa.lifetimeDue = 0;
  checkLifetime(sa, now());
}

void Keydb::startDump(std::uint64_t id, std::uint8_t satype) {
  DumpJob job{id, {}, 0};
  for (Sa* sa : sad_.all(satype)) job.refs.push_back(sa->ref);
  if (job.refs.empty()) return replyError(id, ENOENT);
  dumps_.push_back(std::move(job));
  continueDumps();
}

void Keydb::continueDumps() {
  while (!dumps_.empty() && !stopped_ && policy_->queuedMessages() < kDumpQueueDepth) {
    DumpJob& job = dumps_.front();
    std::vector<Sa*> chunk;
    while (job.next < job.refs.size() && chunk.size() < kDumpChunk) {
      if (Sa* sa = sad_.find(job.refs[job.next])) chunk.push_back(sa);
      ++job.next;
    }
    const bool more = job.next < job.refs.size();
    // An empty last chunk (everything left was deleted meanwhile) still ends
    // the dump; policy holds back one entry to mark the last one seq 0.
    reply(job.id, 0, chunk, true, more);
    if (!more) dumps_.pop_front();
  }
  if (dumps_.empty() || stopped_ || dumpTimerArmed_) return;
  // policy has not read what is queued yet: look again shortly.
  dumpTimerArmed_ = true;
  dumpTimer_.expires_after(std::chrono::milliseconds(1));
  dumpTimer_.async_wait([this](boost::system::error_code ec) {
    dumpTimerArmed_ = false;
    if (!ec) continueDumps();
  });
}

void Keydb::reply(std::uint64_t id, int err, const std::vector<Sa*>& sas, bool withKeys, bool more) {
  control::ScratchMessageBuilder<kOneSaMessageWords> b;  // a dump's chunk goes on in heap segments
  auto r = b.initRoot<proto::KeydbToPolicy>().initReply();
  r.setRequestId(id);
  r.setErrno(static_cast<std::uint16_t>(err));
  r.setMore(more);
  auto list = r.initSas(static_cast<unsigned>(sas.size()));
  for (unsigned i = 0; i < sas.size(); ++i) {
    const Sa& sa = *sas[i];
    list[i].setParams(sa.p());
    if (withKeys) {
      list[i].initKeys().setEncrypt(capnp::Data::Reader(sa.encKey.bytes().data(), sa.encKey.size()));
      list[i].getKeys().setAuth(capnp::Data::Reader(sa.authKey.bytes().data(), sa.authKey.size()));
    }
    auto c = list[i].initCurrent();
    c.setAllocations(static_cast<std::uint32_t>(sa.usageBase.packets + sa.usageReported.packets));
    c.setBytes(sa.usageBase.bytes + sa.usageReported.bytes);
    c.setAddTime(sa.addTime);
    c.setUseTime(sa.firstUse);
  }
  const auto sent = policy_->send(b);
  if (withKeys) control::wipeMessage(b);
  if (sent == control::Channel::SendResult::kTooLarge && err == 0) {
    // Cannot happen with kDumpChunk SAs of bounded size, but if it did the
    // request must still be answered (this ends a dump in progress too).
    if (more) dumps_.pop_front();
    log::warn("reply to request {} with {} SAs exceeds a control message: ENOBUFS", id, sas.size());
    reply(id, ENOBUFS);
  }
}

// ---- crypto -----------------------------------------------------------------

void Keydb::createSession(Sa& sa) {
  if (!crypto_ || !crypto_->isOpen()) return;  // sent when the data plane comes back
  auto [ivNext, ivLimit] = sad_.grantIvFromScratch(sa);
  ++counters_.iv_grants;
  control::ScratchMessageBuilder<kOneSaMessageWords> b;
  auto c = b.initRoot<proto::KeydbToCrypto>().initCreateSession();
  setRef(c.initSa(), sa.ref);
  c.setParams(sa.p());
  auto k = c.initKeys();
  k.setEncrypt(capnp::Data::Reader(sa.encKey.bytes().data(), sa.encKey.size()));
  k.setAuth(capnp::Data::Reader(sa.authKey.bytes().data(), sa.authKey.size()));
  c.setIvNext(ivNext);
  c.setIvLimit(ivLimit);
  c.setDirection(sa.direction);
  crypto_->send(b);
  control::wipeMessage(b);
}

bool Keydb::onCrypto(capnp::MessageReader& m, std::vector<UniqueFd>& fds) {
  if (!fds.empty()) return false;
  auto msg = m.getRoot<proto::CryptoToKeydb>();
  switch (msg.which()) {
    case proto::CryptoToKeydb::SESSION_RESULT: {
      auto r = msg.getSessionResult();
      Sa* sa = sad_.find(SaRef{r.getSa().getIndex(), r.getSa().getGeneration()});
      if (!sa) return true;  // deleted meanwhile
      if (!r.getOk()) {
        // The broker's errno (ENOMEM: no locked key memory left there); 0,
        // or anything a PF_KEY reply cannot carry (sadb_msg_errno is a u8),
        // is EINVAL. An UPDATE's old SA is back as it was, and the client
        // hears the errno.
        const int err = r.getErrorCode() != 0 && r.getErrorCode() <= 255 ? r.getErrorCode() : EINVAL;
        ++counters_.sessions_refused;
        if (err == ENOMEM) ++counters_.sessions_refused_no_key_memory;
        log::warn("SA SPI {:#x} refused by the broker ({}): {}", sa->p().getSpi(), std::strerror(err),
                  std::string(r.getError()));
        if (sa->pendingAdd) {
          auto id = *sa->pendingAdd;
          sa->pendingAdd.reset();
          replyError(id, err);
        }
        if (sa->replaced) return restoreReplaced(*sa), true;
        removeSa(*sa);
        return true;
      }
      sa->pb().setIvLength(r.getIvLength());
      sa->pb().setIcvLength(r.getIcvLength());
      sa->pb().setPadAlign(r.getPadAlign());
      sa->sessionReady = true;
      installInForwarder(*sa);
      if (sa->pendingAdd) {
        auto id = *sa->pendingAdd;
        sa->pendingAdd.reset();
        reply(id, 0, {sa});
      }
      return true;
    }
    case proto::CryptoToKeydb::BARRIER:
      return onBarrierEcho(msg.getBarrier());
    case proto::CryptoToKeydb::IV_REQUEST: {
      auto r = msg.getIvRequest();
      Sa* sa = sad_.find(SaRef{r.getSa().getIndex(), r.getSa().getGeneration()});
      if (!sa || !sa->sessionReady) return true;
      control::ScratchMessageBuilder<> b;
      auto g = b.initRoot<proto::KeydbToCrypto>().initIvGrant();
      setRef(g.initSa(), sa->ref);
      g.setIvLimit(sad_.extendIv(*sa));
      ++counters_.iv_grants;
      crypto_->send(b);
      return true;
    }
  }
  return false;
}

// ---- forwarder --------------------------------------------------------------

void Keydb::installInForwarder(Sa& sa) {
  if (!forwarder_ || !forwarder_->isOpen()) return;
  auto [next, limit] = sad_.grantSeqFromScratch(sa);
  ++counters_.seq_grants;
  control::ScratchMessageBuilder<kOneSaMessageWords> b;
  auto in = b.initRoot<proto::KeydbToForwarder>().initInstall();
  setRef(in.initSa(), sa.ref);
  in.setParams(sa.p());  // no keys: SaParams has none
  in.setSeqNext(next);
  in.setSeqLimit(limit);
  // Only an entry the forwarder has is named (not a larval SA's, not one
  // lost with a restarted data plane).
  const Sa* old = sa.replaced.get();
  if (old && !old->larval() && old->sessionReady) setRef(in.initReplaces(), old->ref);
  forwarder_->send(b);
  if (sa.replaced) dropReplaced(std::move(sa.replaced), true);
}

bool Keydb::onForwarder(capnp::MessageReader& m, std::vector<UniqueFd>& fds) {
  if (!fds.empty()) return false;
  auto msg = m.getRoot<proto::ForwarderToKeydb>();
  switch (msg.which()) {
    case proto::ForwarderToKeydb::SEQ_REQUEST: {
      auto r = msg.getSeqRequest();
      Sa* sa = sad_.find(SaRef{r.getSa().getIndex(), r.getSa().getGeneration()});
      if (!sa || !sa->sessionReady) return true;
      control::ScratchMessageBuilder<> b;
      auto g = b.initRoot<proto::KeydbToForwarder>().initSeqGrant();
      setRef(g.initSa(), sa->ref);
      g.setSeqLimit(sad_.extendSeq(*sa));
      ++counters_.seq_grants;
      forwarder_->send(b);
      return true;
    }
    case proto::ForwarderToKeydb::USAGE: {
      // Byte and packet limits act on fresh counts, and a first use starts
      // the use-time clock: judge each SA the report names.
      const std::uint64_t t = now();
      for (auto u : msg.getUsage()) {
        Sa* sa = sad_.find(SaRef{u.getSa().getIndex(), u.getSa().getGeneration()});
        if (!sa) continue;
        sa->usageReported = {u.getBytes(), u.getPackets()};
        if (sa->firstUse == 0) sa->firstUse = u.getFirstUse();
        checkLifetime(*sa, t);
      }
      return true;
    }
  }
  return false;
}

void Keydb::setSysctl(std::string_view name, std::int64_t value) {
  if (name == "net.key.larval_lifetime") {
    larvalLifetime_ = static_cast<std::uint64_t>(std::clamp<std::int64_t>(value, 1, 86400));
    rescheduleAllLifetimes();
  }
  else if (name == "net.key.debug") debug_ = value != 0;
  else if (name == "net.key.max_sas") maxSas_ = static_cast<std::size_t>(std::clamp<std::int64_t>(value, 1, kMaxSasCeiling));
}

void Keydb::fillStats(proto::Stats::Builder out) {
  Counters now = counters_;
  now.sas = sad_.size();
  for (Sa* sa : sad_.all()) now.sas_larval += sa->larval() ? 1 : 0;
  stats::fillCounters(out, now);
}

// ---- X_MIGRATE ----------------------------------------------------------------

// Linux's xfrm_migrate → xfrm_migrate_state_find: for each migration, the SAs
// of its satype and mode between its old source and destination (and of its
// reqid when that is nonzero) take the new addresses. Linux moves the first
// such SA of each migration; we move every one (an SA and its rekeyed
// successor both keep working). PF_KEY names an SA by (satype, SPI, dst), so
// a new destination renames it: if any new name is taken (by an SA that is
// not moving too), nothing moves and the answer is EEXIST. The SA keeps its
// ref, so its crypto session (which does not depend on addresses), grants,
// usage and NAT-T ports stay; the forwarder gets it removed and installed
// again with a sequence base above every grant (numbers continue, never
// restart). The reply lists the moved SAs, possibly none (Linux migrates the
// policy alone then).
void Keydb::migrate(std::uint64_t id, capnp::List<proto::SaMigration>::Reader moves) {
  std::vector<Sad::Move> plan;
  auto raw = [](capnp::Data::Reader d) { return std::string(d.asChars().begin(), d.size()); };
  for (auto m : moves) {
    const auto n = m.getOldSrc().size();
    if (!goodAddress(m.getOldSrc()) || !goodAddress(m.getNewSrc()) || m.getOldDst().size() != n ||
        m.getNewDst().size() != m.getNewSrc().size()) {
      return replyError(id, EINVAL);
    }
    for (Sa* sa : sad_.all(m.getSatype())) {
      auto p = sa->p();
      if (p.getMode() != m.getMode() || (m.getReqid() != 0 && p.getReqid() != m.getReqid())) continue;
      if (p.getSrc() != m.getOldSrc() || p.getDst() != m.getOldDst()) continue;
      if (std::any_of(plan.begin(), plan.end(), [&](const Sad::Move& o) { return o.sa == sa; })) continue;
      plan.push_back({sa, raw(m.getNewSrc()), raw(m.getNewDst())});
    }
  }
  if (!sad_.move(plan)) return replyError(id, EEXIST);
  std::vector<Sa*> moved;
  for (const auto& m : plan) {
    Sa& sa = *m.sa;
    moved.push_back(&sa);
    log::info("SA SPI {:#x} migrated", sa.p().getSpi());
    // Not yet in the forwarder (larval, session pending or data plane away):
    // it is installed with its new addresses when its session comes up.
    // The same ref installed again replaces the forwarder's entry and keeps
    // its replay window: no remove first, or packets accepted before the
    // move could be replayed after it.
    if (sa.larval() || !sa.sessionReady || !hasDataPath(sa)) continue;
    installInForwarder(sa);
  }
  reply(id, 0, moved);
}

}  // namespace ipsec::keydb
