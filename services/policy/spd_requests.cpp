// See server.h. This file: the X_SPD* messages served from the SPD kept in
// this process (spd.h), the pushes of every change to the forwarder's replica
// (PolicyToForwarder), and ACQUIREs coming back from the forwarder.
//
// Replies as Linux: SPDADD, SPDUPDATE, SPDDELETE and SPDDELETE2 go to every
// socket; SPDGET and SPDDUMP only to the requester; SPDFLUSH as FLUSH (a
// header reply to the requester, a broadcast only if something was flushed).
#include <netinet/in.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "algorithms.h"
#include "wire_address.h"
#include "clock/clock.h"
#include "clock/deadline.h"
#include "log/log.h"
#include "pfkey/builder.h"
#include "server.h"
#include "service/replacement.h"

namespace ipsec::policy {
namespace {

// Policy lifetimes and PF_KEY's addtime are wall-clock seconds.
std::uint64_t now() { return clock::unixSeconds(); }

// SADB_EXT_PROPOSAL body (after the 4-byte ext header): replay, 3 reserved
// bytes, then one sadb_comb per combination the broker runs, with Linux's
// default lifetimes so that key managers see familiar values.
std::vector<std::uint8_t> proposal(std::uint8_t satype) {
  std::vector<sadb_comb> combs;
  auto add = [&](std::uint8_t auth, const AlgorithmSpec* authSpec, std::uint8_t enc, const AlgorithmSpec* encSpec) {
    sadb_comb c{};
    c.sadb_comb_auth = auth;
    c.sadb_comb_encrypt = enc;
    if (authSpec) {
      c.sadb_comb_auth_minbits = authSpec->minBits;
      c.sadb_comb_auth_maxbits = authSpec->maxBits;
    }
    if (encSpec) {
      c.sadb_comb_encrypt_minbits = encSpec->minBits;
      c.sadb_comb_encrypt_maxbits = encSpec->maxBits;
    }
    c.sadb_comb_soft_addtime = 20 * 60 * 60;
    c.sadb_comb_hard_addtime = 24 * 60 * 60;
    c.sadb_comb_soft_usetime = 7 * 60 * 60;
    c.sadb_comb_hard_usetime = 8 * 60 * 60;
    combs.push_back(c);
  };
  for (const auto& a : supportedAuth()) {
    if (a.id == SADB_X_AALG_NULL) continue;
    if (satype == SADB_SATYPE_AH) {
      add(a.id, &a, SADB_EALG_NONE, nullptr);
    } else if (satype == SADB_SATYPE_ESP) {
      add(a.id, &a, SADB_X_EALG_AESCBC, findEncrypt(SADB_X_EALG_AESCBC));
    }
  }
  if (satype == SADB_SATYPE_ESP) {
    add(SADB_AALG_NONE, nullptr, SADB_X_EALG_AES_GCM_ICV16, findEncrypt(SADB_X_EALG_AES_GCM_ICV16));
  }
  std::vector<std::uint8_t> body(4 + combs.size() * sizeof(sadb_comb), 0);
  body[0] = 32;  // sadb_prop_replay: Linux's default window
  if (!combs.empty()) std::memcpy(body.data() + 4, combs.data(), combs.size() * sizeof(sadb_comb));
  return body;
}

}  // namespace

// An outbound policy whose SAs keydb must mark is stored in the SPD at once
// (SPDGET and SPDDUMP show it from now on, and a second SPDADD of it is
// EEXIST), but the forwarder gets it, and every socket hears of it, only
// once keydb says the broker has the marks: until then a packet the policy
// sends would be sealed under a session still refused for sealing.
int Server::onSpdAddOrUpdate(Client* c, const pfkey::ParsedMessage& m) {
  auto decoded = decodePolicy(m, spd_, now());
  if (auto* err = std::get_if<int>(&decoded)) return *err;
  // Room to wait for keydb is checked before the SPD changes.
  if (needsMarks(std::get<Policy>(decoded)) && pending_.size() >= options_.maxPendingRequests) return ENOBUFS;
  auto stored = spd_.insert(std::move(std::get<Policy>(decoded)), m.msg().sadb_msg_type == SADB_X_SPDUPDATE);
  if (auto* err = std::get_if<int>(&stored)) return *err;
  const Policy& p = *std::get<const Policy*>(stored);
  if (p.hard.addTime != 0) noteDeadline(p.created + p.hard.addTime);
  sadb_msg h = m.msg();
  if (h.sadb_msg_type == SADB_X_SPDSETIDX) h.sadb_msg_type = SADB_X_SPDADD;  // Linux's event2poltype
  auto announce = encodePolicy(p, h);
  if (announceWhenMarked(c, m.msg(), p, announce)) return 0;
  pushPolicy(p);
  deliver(std::move(announce), Audience::kAll, nullptr);
  return 0;
}

int Server::onSpdDelete(Client* c, const pfkey::ParsedMessage& m) {
  const auto& pol = m.policy();
  if (!pol || pol->dir < IPSEC_DIR_INBOUND || pol->dir > IPSEC_DIR_FWD) return EINVAL;
  auto sel = decodeSelector(m);
  if (auto* err = std::get_if<int>(&sel)) return *err;
  auto removed = spd_.removeBySelector(std::get<Selector>(sel), pol->dir);
  if (!removed) return ENOENT;
  pushDelete(removed->id);
  deliver(encodePolicy(*removed, m.msg()), Audience::kAll, nullptr);
  return 0;
}

int Server::onSpdGetOrDelete2(Client* c, const pfkey::ParsedMessage& m) {
  const auto& pol = m.policy();
  if (!pol) return EINVAL;
  if ((pol->id & 7) >= 3) return EINVAL;  // no direction Linux knows in the low bits
  if (m.msg().sadb_msg_type == SADB_X_SPDGET) {
    const Policy* p = spd_.findById(pol->id);
    if (!p) return ENOENT;
    deliver(encodePolicy(*p, m.msg()), Audience::kOne, c);
    return 0;
  }
  auto removed = spd_.removeById(pol->id);
  if (!removed) return ENOENT;
  pushDelete(removed->id);
  deliver(encodePolicy(*removed, m.msg()), Audience::kAll, nullptr);
  return 0;
}

int Server::onSpdDump(Client* c, const pfkey::ParsedMessage& m) {
  const auto& all = spd_.all();
  if (all.empty()) return ENOENT;
  // One message per policy, seq 1, 2, ... and 0 on the last (Linux's dump_sp).
  for (std::size_t i = 0; i < all.size(); ++i) {
    sadb_msg h = m.msg();
    h.sadb_msg_seq = i + 1 == all.size() ? 0 : static_cast<std::uint32_t>(i + 1);
    deliverDump(c, encodePolicy(all[i], h));
  }
  return 0;
}

int Server::onSpdFlush(Client* c, const pfkey::ParsedMessage& m) {
  const std::size_t flushed = spd_.flush();
  pushFlush();
  sadb_msg h = m.msg();
  h.sadb_msg_errno = 0;
  deliver(pfkey::Builder(h).finish(), Audience::kOne, c);
  if (flushed != 0) deliver(pfkey::Builder(h).finish(), Audience::kAll, nullptr);
  return 0;
}

// ---- time: X_SPDEXPIRE, larval ACQUIRE states ----------------------------------------

// The tick sleeps until the earliest policy hard add-time or larval ACQUIRE
// end, and not at all while there is none (an idle policy process wakes for
// nothing; it ticked once a second before). noteDeadline re-arms it when an
// earlier one comes.
void Server::armTick() {
  if (stopped_) return;
  clock::NextDeadline next;
  for (const auto& p : spd_.all()) {
    if (p.hard.addTime != 0) next.consider(p.created + p.hard.addTime);
  }
  for (const auto& a : acquires_) next.consider(a.created + larvalLifetime_);
  if (!next.at()) {
    tickAt_ = 0;
    tick_.cancel();
    return;
  }
  tickAt_ = *next.at();
  // Not before 10 ms; at least once a minute, so that a wall clock set
  // forward is noticed as the fixed tick noticed it.
  const std::uint64_t waitMs = clock::msUntilUnixSecond(tickAt_, clock::unixNs(), 10, 60000);
  std::weak_ptr<int> alive = alive_;
  tick_.expires_after(std::chrono::milliseconds(waitMs));  // cancels the wait armed before
  tick_.async_wait([this, alive](const boost::system::error_code& ec) {
    if (alive.expired() || ec || stopped_) return;
    tickAt_ = 0;
    onTick(now());
    armTick();
  });
}

void Server::noteDeadline(std::uint64_t atS) {
  if (tickAt_ == 0 || atS < tickAt_) armTick();
}

// A policy's hard lifetime (LIFETIME_HARD of X_SPDADD) in add time ends it:
// it is deleted (here and in the forwarder) and registered sockets hear
// X_SPDEXPIRE with the policy, its lifetimes and CURRENT (FreeBSD's
// key_spdexpire; Linux's af_key sends nothing here, its notifier is a stub).
// Use time is not enforced: the forwarder reports no per-policy use.
void Server::onTick(std::uint64_t t) {
  std::vector<std::uint32_t> ended;
  for (const auto& p : spd_.all()) {
    if (p.hard.addTime != 0 && t >= p.created + p.hard.addTime) ended.push_back(p.id);
  }
  for (std::uint32_t id : ended) {
    auto removed = spd_.removeById(id);
    if (!removed) continue;
    pushDelete(id);
    ++counters_.spd_expires;
    sadb_msg h{};
    h.sadb_msg_version = PF_KEY_V2;
    h.sadb_msg_type = SADB_X_SPDEXPIRE;
    h.sadb_msg_len = 2;
    deliver(encodePolicy(*removed, h), Audience::kRegistered, nullptr);
  }
  std::erase_if(acquires_, [&](const AcquireState& a) { return t >= a.created + larvalLifetime_; });
}

// Only an SA the forwarder would take for the acquire's request ends it
// (Linux's xfrm_state_add finds the acquire state by its template's mode,
// reqid and addresses): the same satype and endpoints, the request's mode
// unless the SA's is any, and a unique request's reqid (policy keeps a reqid
// only for those). Any other SA (the inbound one, one of another mode or
// reqid) leaves it pending, so that it still rate-limits the forwarder's
// repeats.
void Server::completeAcquires(std::uint8_t satype, const pfkey::SockAddress& src, const pfkey::SockAddress& dst,
                              std::uint8_t mode, std::uint32_t reqid) {
  std::erase_if(acquires_, [&](const AcquireState& a) {
    return a.satype == satype && a.src.sameAddress(src) && a.dst.sameAddress(dst) &&
           (mode == IPSEC_MODE_ANY || mode == a.mode) && (a.reqid == 0 || a.reqid == reqid);
  });
}

// ---- X_MIGRATE ---------------------------------------------------------------------

namespace {

// One (old, new) pair of ipsecrequests of an X_MIGRATE (Linux's xfrm_migrate).
struct Migration {
  pfkey::IpsecRequest from, to;
};

bool anyAddress(const pfkey::SockAddress& a) {
  for (std::size_t i = 0; i < (a.isV6() ? 16u : 4u); ++i) {
    if (a.bytes[i] != 0) return false;
  }
  return true;
}

// SADB_X_EXT_KMADDRESS: sadb_x_kmaddress, then the key managers' local and
// remote sockaddrs, of one family (Linux's parse_sockaddr_pair).
bool goodKmaddress(std::span<const std::uint8_t> e) {
  auto pair = e.subspan(sizeof(sadb_x_kmaddress));
  auto a = pfkey::SockAddress::readSockaddr(pair);
  if (!a) return false;
  auto b = pfkey::SockAddress::readSockaddr(pair.subspan(a->sockaddrSize()));
  return b && b->family == a->family;
}

}  // namespace

// Linux's pfkey_migrate → xfrm_migrate: SRC/DST name the policy's selector,
// X_POLICY its direction and (old, new) pairs of ipsecrequests with the same
// protocol, mode and level; each policy template matching an old request
// (tunnel: its endpoints too; a reqid if given) takes the new endpoints, and
// so do the SAs of each pair (keydb's migrate: by satype, mode, old
// addresses and the reqid when nonzero). As xfrm_migrate, all or nothing:
// the policy is checked first (ENOENT, ENODATA), keydb moves the SAs (EEXIST
// if a new SA name is taken, nothing moved then), and only then does the
// policy move. No separate reply: on success the request is echoed as
// Linux's km_migrate does (pid 0, seq 0, to every socket).
int Server::onMigrate(Client* c, const pfkey::ParsedMessage& m) {
  if (int err = migratePolicy(c, m.msg(), m, false)) return err;
  capnp::MallocMessageBuilder b;
  const std::uint64_t id = newRequestId();
  auto req = b.initRoot<proto::PolicyToKeydb>();
  req.setRequestId(id);
  const auto rqs = m.policy()->requests();
  auto list = req.initMigrate(static_cast<unsigned>(rqs.size() / 2));
  auto raw = [](const pfkey::SockAddress& a) { return capnp::Data::Reader(a.bytes.data(), a.isV6() ? 16 : 4); };
  for (std::size_t i = 0; i < rqs.size(); i += 2) {
    auto mv = list[static_cast<unsigned>(i / 2)];
    mv.setSatype(satypeOf(rqs[i].proto));
    mv.setMode(rqs[i].mode);
    mv.setReqid(rqs[i].reqid);
    mv.setOldSrc(raw(*rqs[i].tunnelSrc));
    mv.setOldDst(raw(*rqs[i].tunnelDst));
    mv.setNewSrc(raw(*rqs[i + 1].tunnelSrc));
    mv.setNewDst(raw(*rqs[i + 1].tunnelDst));
  }
  if (int err = sendToKeydb(c, m.msg(), b, id)) return err;
  const auto bytes = m.bytes();
  pending_.at(id).migrate.assign(bytes.begin(), bytes.end());
  return 0;
}

// keydb has moved the SAs (possibly none): now the policy.
bool Server::onMigrateDone(Pending& p) {
  Client* c = findClient(p.clientId);
  auto parsed = pfkey::parse(p.migrate);
  const auto* m = std::get_if<pfkey::ParsedMessage>(&parsed);
  if (!m) return false;  // it parsed when it came in
  // The policy may have changed while keydb worked; the SAs stay moved then.
  if (int err = migratePolicy(c, p.request, *m, true)) replyError(c, p.request, err);
  return true;
}

int Server::migratePolicy(Client* c, const sadb_msg& request, const pfkey::ParsedMessage& m, bool commit) {
  const auto& pol = m.policy();
  if (!pol || pol->dir < IPSEC_DIR_INBOUND || pol->dir > IPSEC_DIR_FWD) return EINVAL;
  auto decoded = decodeSelector(m);
  if (auto* err = std::get_if<int>(&decoded)) return *err;
  const Selector sel = std::get<Selector>(decoded);
  const auto kma = m.extBytes(SADB_X_EXT_KMADDRESS);
  if (!kma.empty() && !goodKmaddress(kma)) return EINVAL;
  const auto rqs = pol->requests();
  if (rqs.empty() || rqs.size() % 2 != 0) return EINVAL;
  std::vector<Migration> moves;
  for (std::size_t i = 0; i < rqs.size(); i += 2) {
    const auto& from = rqs[i];
    const auto& to = rqs[i + 1];
    if (!from.tunnelSrc || !to.tunnelSrc) return EINVAL;  // both carry addresses, whatever the mode
    if (from.proto != to.proto || from.mode != to.mode || from.level != to.level) return EINVAL;
    if (anyAddress(*to.tunnelSrc) || anyAddress(*to.tunnelDst)) return EINVAL;
    if (from.tunnelSrc->sameAddress(*to.tunnelSrc) && from.tunnelDst->sameAddress(*to.tunnelDst)) return EINVAL;
    moves.push_back({from, to});
  }
  Policy* p = spd_.find(sel, pol->dir);
  if (!p) return ENOENT;
  Policy moved = *p;
  std::size_t matched = 0;
  for (auto& r : moved.requests) {
    for (const auto& mv : moves) {
      if (r.proto != mv.from.proto || r.mode != mv.from.mode || (mv.from.reqid != 0 && r.reqid != mv.from.reqid)) continue;
      if (r.mode == IPSEC_MODE_TRANSPORT) {
        ++matched;  // nothing to move: the SA's addresses are the packet's
        break;
      }
      if (!r.tunnelSrc || !r.tunnelDst || !r.tunnelSrc->sameAddress(*mv.from.tunnelSrc) ||
          !r.tunnelDst->sameAddress(*mv.from.tunnelDst)) continue;
      r.tunnelSrc = *mv.to.tunnelSrc;
      r.tunnelDst = *mv.to.tunnelDst;
      ++matched;
      break;
    }
  }
  if (matched == 0) return ENODATA;  // as xfrm_policy_migrate: no template matched
  if (!commit) return 0;
  *p = std::move(moved);
  ++counters_.pfkey_migrations;

  // km_migrate's message: KMADDRESS (if given), the selector, then X_POLICY
  // (ipsec, dir, id 0, priority 0) with the pairs as received, levels rebuilt.
  pfkey::Builder b(SADB_X_MIGRATE, satypeOf(moves.front().from.proto), 0, 0);
  if (!kma.empty()) b.raw(SADB_X_EXT_KMADDRESS, kma.subspan(sizeof(sadb_ext)));
  const std::uint8_t proto = sel.proto == IPSEC_ULPROTO_ANY ? 0 : sel.proto;
  b.address(SADB_EXT_ADDRESS_SRC, sel.src, sel.srcPrefix, proto);
  b.address(SADB_EXT_ADDRESS_DST, sel.dst, sel.dstPrefix, proto);
  pfkey::PolicyFields pf{IPSEC_POLICY_IPSEC, pol->dir, 0, 0, {}};
  for (const auto& mv : moves) {
    const std::uint8_t level = mv.from.reqid != 0 ? IPSEC_LEVEL_UNIQUE : IPSEC_LEVEL_REQUIRE;
    pf.requests.push_back({mv.from.proto, mv.from.mode, level, mv.from.reqid, mv.from.tunnelSrc, mv.from.tunnelDst});
    pf.requests.push_back({mv.to.proto, mv.to.mode, level, mv.from.reqid, mv.to.tunnelSrc, mv.to.tunnelDst});
  }
  b.policy(pf);
  // Its new endpoints name the moved SAs: as SPDADD, the forwarder and the
  // sockets hear of it once the broker has their marks.
  auto announce = b.finish();
  if (announceWhenMarked(c, request, *p, announce)) return 0;
  pushPolicy(*p);
  deliver(std::move(announce), Audience::kAll, nullptr);
  return 0;
}

// ---- forwarder -------------------------------------------------------------------

void Server::startForwarder() {
  if (!forwarder_) return;
  forwarder_->start([this](capnp::MessageReader& m, std::vector<UniqueFd>& f) { return onForwarder(m, f); },
                    [](std::string_view why) {
                      // Not fatal: ipsecd restarts the data plane and sends a new channel.
                      log::warn("channel to ipsec-forwarder closed: {}", why);
                    });
}

bool Server::onDataPlaneRestarted(std::vector<UniqueFd>& fds) {
  UniqueFd forwarder = service::takeReplacement(fdlayout::PolicyFd::kForwarder, fds);
  if (!forwarder) return false;
  if (forwarder_) forwarder_->close();
  forwarder_ = std::make_unique<control::Channel>(io_, std::move(forwarder), "ipsec-forwarder");
  startForwarder();
  pushAll();
  log::info("data plane reattached; {} policies pushed", spd_.size());
  return true;
}

// The order rule: the forwarder's replica changes in the order the SPD did.
// A policy that waits for its outbound marks (announceWhenMarked) waits in
// forwarderQueue_, and every push after it (adds, deletes, flushes, of any
// policy) queues behind it, even one that waits for nothing: a SPDDELETE
// must not overtake the add it deletes. When keydb answers, the queue goes
// out from its head up to the next push still waiting. keydb answers in
// request order, so in practice the queue empties at each answer.
void Server::push(std::unique_ptr<capnp::MallocMessageBuilder> m, std::uint32_t policyId, std::uint64_t awaitsMark) {
  if (awaitsMark == 0 && forwarderQueue_.empty()) return sendToForwarder(*m);
  forwarderQueue_.push_back({awaitsMark, policyId, std::move(m)});
}

void Server::sendToForwarder(capnp::MallocMessageBuilder& m) {
  if (!forwarder_ || !forwarder_->isOpen()) return;  // pushAll() catches up on reattach
  forwarder_->send(m);
  ++counters_.spd_forwarder_pushes;
}

void Server::releaseForwarderPushes() {
  while (!forwarderQueue_.empty() && forwarderQueue_.front().awaitsMark == 0) {
    sendToForwarder(*forwarderQueue_.front().message);
    forwarderQueue_.pop_front();
  }
}

void Server::pushPolicy(const Policy& p, std::uint64_t awaitsMark) {
  auto b = std::make_unique<capnp::MallocMessageBuilder>();
  toProto(p, b->initRoot<proto::PolicyToForwarder>().initAdd());
  push(std::move(b), p.id, awaitsMark);
}

void Server::pushDelete(std::uint32_t id) {
  auto b = std::make_unique<capnp::MallocMessageBuilder>();
  b->initRoot<proto::PolicyToForwarder>().setDelete(id);
  push(std::move(b), 0, 0);
}

void Server::pushFlush() {
  auto b = std::make_unique<capnp::MallocMessageBuilder>();
  b->initRoot<proto::PolicyToForwarder>().setFlush();
  push(std::move(b), 0, 0);
}

// A new forwarder gets the whole SPD at once, but for the policies with a
// push still waiting for marks: the queue brings those (and every change
// after them) when keydb answers, in order, after this flush.
void Server::pushAll() {
  capnp::MallocMessageBuilder flush;
  flush.initRoot<proto::PolicyToForwarder>().setFlush();
  sendToForwarder(flush);
  auto waiting = [&](std::uint32_t id) {
    return std::any_of(forwarderQueue_.begin(), forwarderQueue_.end(),
                       [&](const ForwarderPush& f) { return f.awaitsMark != 0 && f.policyId == id; });
  };
  for (const auto& p : spd_.all()) {
    if (waiting(p.id)) continue;
    capnp::MallocMessageBuilder b;
    toProto(p, b.initRoot<proto::PolicyToForwarder>().initAdd());
    sendToForwarder(b);
  }
}

bool Server::onForwarder(capnp::MessageReader& m, std::vector<UniqueFd>& fds) {
  if (!fds.empty()) return false;
  auto msg = m.getRoot<proto::ForwarderToPolicy>();
  switch (msg.which()) {
    case proto::ForwarderToPolicy::NONE: return true;
    case proto::ForwarderToPolicy::NAT_MAPPING: return onNatMapping(msg.getNatMapping());
    case proto::ForwarderToPolicy::ACQUIRE: {
      auto a = msg.getAcquire();
      auto src = addressFrom(a.getSrc());
      auto dst = addressFrom(a.getDst());
      if (!src || !dst || src->family != dst->family) return false;
      const Policy* p = spd_.findById(a.getPolicyId());
      // The policy may have been deleted while the packet waited: nothing to ask for.
      if (!p || p->type != IPSEC_POLICY_IPSEC || p->requests.empty()) return true;
      // The request without an SA (the AH of an ESP+AH bundle whose ESP SA
      // exists is AH's ACQUIRE, as Linux names the template's protocol).
      const Request& rq = a.getRequestIndex() < p->requests.size() ? p->requests[a.getRequestIndex()]
                                                                   : p->requests.front();
      const std::uint8_t satype = satypeOf(rq.proto);
      // The larval ACQUIRE state of (policy, src, dst): a new one is sent at
      // once; while it lives, repeats are suppressed blockacq_count times or
      // until blockacq_lifetime has passed since the last one sent.
      const std::uint64_t t = now();
      auto st = std::find_if(acquires_.begin(), acquires_.end(), [&](const AcquireState& x) {
        return x.policyId == p->id && x.satype == satype && x.src.sameAddress(*src) && x.dst.sameAddress(*dst);
      });
      if (st != acquires_.end()) {
        if (st->suppressed < blockacqCount_ && t < st->lastSent + blockacqLifetime_) {
          ++st->suppressed;
          ++counters_.pfkey_acquires_blocked;
          return true;
        }
        st->suppressed = 0;
        st->lastSent = t;
      } else {
        if (acquires_.size() >= kMaxAcquires) acquires_.erase(acquires_.begin());  // the oldest
        acquires_.push_back({++acquireSeq_, satype, *src, *dst, rq.mode, rq.reqid, p->id, t, t, 0});
        st = acquires_.end() - 1;
        noteDeadline(t + larvalLifetime_);
      }
      ++counters_.pfkey_acquires;
      pfkey::Builder b(SADB_ACQUIRE, satype, st->seq, 0);
      // The SA's endpoints, not a selector: Linux's pfkey_send_acquire writes
      // sadb_address_proto 0 and a full prefix (the packet's protocol, which
      // the forwarder reports, is not in an ACQUIRE).
      b.address(SADB_EXT_ADDRESS_SRC, *src, src->fullPrefix(), 0);
      b.address(SADB_EXT_ADDRESS_DST, *dst, dst->fullPrefix(), 0);
      // As Linux: the policy's id and priority, dir out, no requests.
      b.policy(pfkey::PolicyFields{IPSEC_POLICY_IPSEC, IPSEC_DIR_OUTBOUND, p->id, p->priority, {}});
      b.raw(SADB_EXT_PROPOSAL, proposal(satype));
      deliver(b.finish(), Audience::kRegistered, nullptr);
      return true;
    }
  }
  return false;
}

}  // namespace ipsec::policy
