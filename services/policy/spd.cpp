// See spd.h. Semantics follow Linux's af_key.c (pfkey_spdadd,
// parse_ipsecrequest, pfkey_xfrm_policy2msg) as observed in
// ../shared/pfkey-corpus; no code is taken from it.
#include "spd.h"

#include <algorithm>
#include <cerrno>

#include "pfkey/builder.h"

namespace ipsec::policy {
namespace {

bool reqidInUse(const std::vector<Policy>& policies, std::uint32_t reqid) {
  return std::any_of(policies.begin(), policies.end(), [reqid](const Policy& p) {
    return std::any_of(p.requests.begin(), p.requests.end(), [reqid](const Request& r) { return r.reqid == reqid; });
  });
}

Lifetime lifetimeFrom(const std::optional<sadb_lifetime>& l) {
  if (!l) return {};
  return {l->sadb_lifetime_allocations, l->sadb_lifetime_bytes, l->sadb_lifetime_addtime, l->sadb_lifetime_usetime};
}

capnp::Data::Reader rawAddress(const pfkey::SockAddress& a) {
  return capnp::Data::Reader(a.bytes.data(), a.isV6() ? 16 : 4);
}

}  // namespace

std::uint8_t Request::level() const noexcept {
  if (reqid != 0) return IPSEC_LEVEL_UNIQUE;
  if (optional) return IPSEC_LEVEL_USE;
  return IPSEC_LEVEL_REQUIRE;
}

std::variant<const Policy*, int> Spd::insert(Policy p, bool replace) {
  for (auto& old : policies_) {
    if (old.dir == p.dir && old.selector == p.selector) {
      if (!replace) return EEXIST;
      p.id = old.id;
      old = std::move(p);
      return &old;
    }
  }
  for (;;) {
    const std::uint32_t id = (nextIndex_++ << 3) | xfrmDir(p.dir);
    if (nextIndex_ >= (std::uint32_t{1} << 29)) nextIndex_ = 1;  // the counter wraps within 29 bits
    if (!findById(id)) {
      p.id = id;
      break;
    }
  }
  policies_.push_back(std::move(p));
  return &policies_.back();
}

std::optional<Policy> Spd::removeBySelector(const Selector& s, std::uint8_t dir) {
  auto it = std::find_if(policies_.begin(), policies_.end(),
                         [&](const Policy& p) { return p.dir == dir && p.selector == s; });
  if (it == policies_.end()) return std::nullopt;
  Policy out = std::move(*it);
  policies_.erase(it);
  return out;
}

std::optional<Policy> Spd::removeById(std::uint32_t id) {
  auto it = std::find_if(policies_.begin(), policies_.end(), [id](const Policy& p) { return p.id == id; });
  if (it == policies_.end()) return std::nullopt;
  Policy out = std::move(*it);
  policies_.erase(it);
  return out;
}

Policy* Spd::find(const Selector& s, std::uint8_t dir) noexcept {
  for (auto& p : policies_) {
    if (p.dir == dir && p.selector == s) return &p;
  }
  return nullptr;
}

const Policy* Spd::findById(std::uint32_t id) const noexcept {
  for (const auto& p : policies_) {
    if (p.id == id) return &p;
  }
  return nullptr;
}

std::size_t Spd::flush() noexcept {
  const std::size_t n = policies_.size();
  policies_.clear();
  return n;
}

std::uint32_t Spd::chooseReqid() {
  // Like Linux's gen_reqid: the next free value above the manual range,
  // wrapping past 2^32 back to IPSEC_MANUAL_REQID_MAX + 1.
  for (std::uint64_t tries = 0; tries < (std::uint64_t{1} << 32); ++tries) {
    ++nextReqid_;
    if (nextReqid_ <= IPSEC_MANUAL_REQID_MAX) nextReqid_ = IPSEC_MANUAL_REQID_MAX + 1;
    if (!reqidInUse(policies_, nextReqid_)) return nextReqid_;
  }
  return 0;
}

std::variant<Selector, int> decodeSelector(const pfkey::ParsedMessage& m) {
  auto src = m.address(SADB_EXT_ADDRESS_SRC);
  auto dst = m.address(SADB_EXT_ADDRESS_DST);
  if (!src || !dst || src->addr.family != dst->addr.family) return EINVAL;
  Selector s;
  s.src = src->addr;
  s.dst = dst->addr;
  s.srcPrefix = src->prefixlen;
  s.dstPrefix = dst->prefixlen;
  // Linux takes the protocol from the addresses (the destination's last, as
  // KAME clients set both alike) and reads 0 as "any", as 255 is.
  s.proto = dst->proto == 0 ? IPSEC_ULPROTO_ANY : dst->proto;
  return s;
}

std::variant<Policy, int> decodePolicy(const pfkey::ParsedMessage& m, Spd& spd, std::uint64_t now) {
  const auto& pol = m.policy();
  if (!pol) return EINVAL;
  auto sel = decodeSelector(m);
  if (auto* err = std::get_if<int>(&sel)) return *err;
  if (pol->type != IPSEC_POLICY_DISCARD && pol->type != IPSEC_POLICY_NONE && pol->type != IPSEC_POLICY_IPSEC) {
    return EINVAL;  // bypass and entrust are socket-policy types Linux refuses here
  }
  if (pol->dir < IPSEC_DIR_INBOUND || pol->dir > IPSEC_DIR_FWD) return EINVAL;

  Policy p;
  p.dir = pol->dir;
  p.type = pol->type;
  p.priority = pol->priority;
  p.selector = std::get<Selector>(sel);
  p.hard = lifetimeFrom(m.lifetime(SADB_EXT_LIFETIME_HARD));
  p.soft = lifetimeFrom(m.lifetime(SADB_EXT_LIFETIME_SOFT));
  p.created = now;
  if (p.type == IPSEC_POLICY_IPSEC) {
    for (const auto& r : pol->requests()) {
      Request q;
      q.proto = r.proto;
      q.mode = r.mode;
      if (r.level == IPSEC_LEVEL_USE) {
        q.optional = true;
      } else if (r.level == IPSEC_LEVEL_UNIQUE) {
        q.reqid = r.reqid;
        if (q.reqid == 0 || q.reqid > IPSEC_MANUAL_REQID_MAX) q.reqid = spd.chooseReqid();
        if (q.reqid == 0) return ENOBUFS;
      }
      if (r.mode == IPSEC_MODE_TUNNEL) {
        if (!r.tunnelSrc || !r.tunnelDst) return EINVAL;
        q.tunnelSrc = r.tunnelSrc;
        q.tunnelDst = r.tunnelDst;
      }
      p.requests.push_back(std::move(q));
    }
  }
  return p;
}

std::vector<std::uint8_t> encodePolicy(const Policy& p, const sadb_msg& request) {
  sadb_msg h = request;
  h.sadb_msg_errno = 0;
  h.sadb_msg_satype = SADB_SATYPE_UNSPEC;
  h.sadb_msg_reserved = 1;
  pfkey::Builder b(h);
  const auto& s = p.selector;
  b.address(SADB_EXT_ADDRESS_SRC, s.src, s.srcPrefix, s.proto);
  b.address(SADB_EXT_ADDRESS_DST, s.dst, s.dstPrefix, s.proto);
  b.lifetime(SADB_EXT_LIFETIME_HARD, p.hard.allocations, p.hard.bytes, p.hard.addTime, p.hard.useTime);
  b.lifetime(SADB_EXT_LIFETIME_SOFT, p.soft.allocations, p.soft.bytes, p.soft.addTime, p.soft.useTime);
  b.lifetime(SADB_EXT_LIFETIME_CURRENT, 0, 0, p.created, 0);
  pfkey::PolicyFields f;
  f.type = p.type;
  f.dir = p.dir;
  f.id = p.id;
  f.priority = p.priority;
  for (const auto& r : p.requests) {
    f.requests.push_back({r.proto, r.mode, r.level(), r.reqid, r.tunnelSrc, r.tunnelDst});
  }
  b.policy(f);
  return b.finish();
}

void toProto(const Policy& p, proto::Policy::Builder out) {
  out.setId(p.id);
  out.setDir(p.dir);
  out.setAction(static_cast<std::uint8_t>(p.type));
  out.setPriority(p.priority);
  auto sel = out.initSelector();
  sel.setSrc(rawAddress(p.selector.src));
  sel.setSrcPrefix(p.selector.srcPrefix);
  sel.setDst(rawAddress(p.selector.dst));
  sel.setDstPrefix(p.selector.dstPrefix);
  sel.setProto(p.selector.proto);
  sel.setSrcPort(p.selector.src.port);
  sel.setDstPort(p.selector.dst.port);
  auto reqs = out.initRequests(static_cast<unsigned>(p.requests.size()));
  for (unsigned i = 0; i < p.requests.size(); ++i) {
    const auto& r = p.requests[i];
    reqs[i].setProto(static_cast<std::uint8_t>(r.proto));
    reqs[i].setMode(r.mode);
    reqs[i].setLevel(r.level());
    reqs[i].setReqid(r.reqid);
    if (r.tunnelSrc && r.tunnelDst) {
      reqs[i].setTunnelSrc(rawAddress(*r.tunnelSrc));
      reqs[i].setTunnelDst(rawAddress(*r.tunnelDst));
    }
  }
}

}  // namespace ipsec::policy
