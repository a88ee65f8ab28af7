// See sa_direction.h.
#include "sa_direction.h"
#include "wire_address.h"

#include "log/log.h"
#include "server.h"

#include <algorithm>
#include <linux/ipsec.h>
#include <linux/pfkeyv2.h>
#include <netinet/in.h>

namespace ipsec::policy {
namespace {

// Are the first `prefix` bits of `a` those of `net`?
bool inPrefix(const pfkey::SockAddress& a, const pfkey::SockAddress& net, unsigned prefix) {
  if (a.family != net.family || prefix > a.fullPrefix()) return false;
  const unsigned whole = prefix / 8, rest = prefix % 8;
  for (unsigned i = 0; i < whole; ++i) {
    if (a.bytes[i] != net.bytes[i]) return false;
  }
  if (rest == 0) return true;
  const auto mask = static_cast<std::uint8_t>(0xff << (8 - rest));
  return (a.bytes[whole] & mask) == (net.bytes[whole] & mask);
}

}  // namespace

namespace {

bool outboundIpsec(const Policy& p) { return p.dir == IPSEC_DIR_OUTBOUND && p.type == IPSEC_POLICY_IPSEC; }

// Calls f(template) for each request of an outbound IPsec policy, in order,
// with the addresses that request's SA carries. As Linux's
// xfrm_tmpl_resolve_one: a request in transport mode takes the current
// endpoints — the selector's (the packet's own addresses) until a tunnel
// request has been applied, that tunnel's endpoints after it (an ESP transport
// SA around an IPComp tunnel, AH transport around an ESP tunnel). Returns true
// as soon as f does.
// Could an SA and its reverse both lie inside (src/srcPrefix, dst/dstPrefix)?
// Exactly when both its ends lie in the two prefixes' intersection, which for
// prefixes is the longer one when they overlap; a single host there only
// admits an SA from the host to itself.
bool bothWays(const pfkey::SockAddress& src, unsigned srcPrefix, const pfkey::SockAddress& dst, unsigned dstPrefix) {
  if (src.family != dst.family || !inPrefix(src, dst, std::min(srcPrefix, dstPrefix))) return false;
  return std::max(srcPrefix, dstPrefix) < src.fullPrefix();
}

template <class F>
bool forEachTemplate(const Policy& p, std::span<const pfkey::SockAddress> local, F&& f) {
  if (!outboundIpsec(p)) return false;
  pfkey::SockAddress src = p.selector.src, dst = p.selector.dst;
  std::uint8_t srcPrefix = p.selector.srcPrefix, dstPrefix = p.selector.dstPrefix;
  bool tunnelled = false;
  for (const auto& r : p.requests) {
    OutboundTemplate t;
    t.satype = satypeOf(r.proto);
    t.mode = r.mode;
    t.reqid = r.reqid;  // nonzero exactly for level unique (spd.h)
    if (r.mode == IPSEC_MODE_TUNNEL && r.tunnelSrc && r.tunnelDst) {
      src = *r.tunnelSrc;
      dst = *r.tunnelDst;
      srcPrefix = src.fullPrefix();
      dstPrefix = dst.fullPrefix();
      tunnelled = true;
    }
    t.src = src;
    t.dst = dst;
    t.srcPrefix = srcPrefix;
    t.dstPrefix = dstPrefix;
    t.src.port = t.dst.port = 0;
    if (!tunnelled && bothWays(src, srcPrefix, dst, dstPrefix)) {
      // Both ends inside both prefixes: only this host's own addresses tell
      // its sending SA from the peer's (see outboundTemplates in the header).
      for (const auto& a : local) {
        if (!inPrefix(a, src, srcPrefix)) continue;
        OutboundTemplate mine = t;
        mine.src = a;
        mine.src.port = 0;
        mine.srcPrefix = a.fullPrefix();
        if (f(mine)) return true;
      }
      continue;
    }
    if (f(t)) return true;
  }
  return false;
}

}  // namespace

std::vector<OutboundTemplate> outboundTemplates(const Policy& p, std::span<const pfkey::SockAddress> local) {
  std::vector<OutboundTemplate> out;
  forEachTemplate(p, local, [&](const OutboundTemplate& t) {
    out.push_back(t);
    return false;
  });
  return out;
}

bool covers(const OutboundTemplate& t, std::uint8_t satype, std::uint8_t mode, std::uint32_t reqid,
            const pfkey::SockAddress& src, const pfkey::SockAddress& dst) {
  if (t.satype != satype) return false;
  if (mode != IPSEC_MODE_ANY && mode != t.mode) return false;
  if (t.reqid != 0 && t.reqid != reqid) return false;
  return inPrefix(src, t.src, t.srcPrefix) && inPrefix(dst, t.dst, t.dstPrefix);
}

bool saIsOutbound(const Spd& spd, std::span<const pfkey::SockAddress> local, std::uint8_t satype, std::uint8_t mode, std::uint32_t reqid,
                  const pfkey::SockAddress& src, const pfkey::SockAddress& dst) {
  // Linear, as every SPD lookup here (spd.h), and without allocation: an
  // ADD burst asks this once per SA.
  for (const auto& p : spd.all()) {
    if (forEachTemplate(p, local, [&](const OutboundTemplate& t) { return covers(t, satype, mode, reqid, src, dst); })) {
      return true;
    }
  }
  return false;
}

void toProto(const OutboundTemplate& t, proto::OutboundTemplate::Builder out) {
  out.setSatype(t.satype);
  out.setMode(t.mode);
  out.setReqid(t.reqid);
  out.setSrc(raw(t.src));
  out.setSrcPrefix(t.srcPrefix);
  out.setDst(raw(t.dst));
  out.setDstPrefix(t.dstPrefix);
}

}  // namespace ipsec::policy

// ---- Server: keydb hears of each outbound policy stored -----------------------

namespace ipsec::policy {

bool Server::needsMarks(const Policy& p) const { return !outboundTemplates(p, options_.localAddresses).empty(); }

bool Server::announceWhenMarked(Client* c, const sadb_msg& request, const Policy& p,
                                std::vector<std::uint8_t> announce) {
  const auto templates = outboundTemplates(p, options_.localAddresses);
  if (templates.empty()) return false;
  capnp::MallocMessageBuilder b;
  const std::uint64_t id = newRequestId();
  auto req = b.initRoot<proto::PolicyToKeydb>();
  req.setRequestId(id);  // keydb answers once the broker has the marks (sad.capnp)
  auto list = req.initMarkOutbound(static_cast<unsigned>(templates.size()));
  for (unsigned i = 0; i < templates.size(); ++i) toProto(templates[i], list[i]);
  // Callers check pending_'s room before they change the SPD; the channel is
  // closed only when keydb is gone, which fails us closed (onPeerLost); a
  // message too large cannot be: a policy's requests are few. Either way the
  // policy goes out at once, as before there was an answer to wait for.
  if (sendToKeydb(c, request, b, id) != 0) return false;
  Pending& pending = pending_.at(id);
  pending.awaitsMark = true;
  pending.announce = std::move(announce);
  ++counters_.spd_pushes_awaited_marks;
  if (c) ++c->marksAwaited;
  pushPolicy(p, id);
  return true;
}

bool Server::onOutboundMarked(std::uint64_t id) {
  auto it = pending_.find(id);
  if (it == pending_.end() || !it->second.awaitsMark) {
    log::error("keydb answered outbound marks {}, which were never asked", id);
    return false;
  }
  Pending p = std::move(it->second);
  pending_.erase(it);
  for (auto& f : forwarderQueue_) {
    if (f.awaitsMark == id) f.awaitsMark = 0;
  }
  releaseForwarderPushes();
  deliver(std::move(p.announce), Audience::kAll, nullptr);
  if (Client* c = findClient(p.clientId)) {
    --c->marksAwaited;
    resumeClient(c->id);
  }
  return true;
}

}  // namespace ipsec::policy
