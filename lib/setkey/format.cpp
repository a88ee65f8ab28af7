// ipsec-tools-compatible text for SA and policy dumps (see format.h).
#include "setkey/format.h"

#include <arpa/inet.h>
#include <linux/ipsec.h>
#include <netinet/in.h>

#include <cinttypes>
#include <cstdio>
#include <cstdlib>

#include "setkey/algorithms.h"
#include "setkey/command.h"

namespace ipsec::setkey {
namespace {

std::string printf(const char* fmt, auto... args) {
  char buf[512];
  int n = std::snprintf(buf, sizeof buf, fmt, args...);
  return std::string(buf, n < 0 ? 0 : std::min<size_t>(static_cast<size_t>(n), sizeof buf - 1));
}

std::string hexGroups(std::span<const uint8_t> b) {
  std::string out;
  for (size_t i = 0; i < b.size(); ++i) {
    if (i && i % 4 == 0) out += ' ';
    out += printf("%02x", b[i]);
  }
  return out;
}

const char* modeName(uint8_t m) {
  switch (m) {
    case IPSEC_MODE_ANY: return "any";
    case IPSEC_MODE_TRANSPORT: return "transport";
    case IPSEC_MODE_TUNNEL: return "tunnel";
    case IPSEC_MODE_BEET: return "beet";
    default: return "?";
  }
}

const char* satypeName(uint8_t t, bool natT) {
  switch (t) {
    case SADB_SATYPE_ESP: return natT ? "esp-udp" : "esp";
    case SADB_SATYPE_AH: return "ah";
    case SADB_X_SATYPE_IPCOMP: return "ipcomp";
    default: return "?";
  }
}

const char* stateName(uint8_t s) {
  static const char* kNames[] = {"larval", "mature", "dying", "dead"};
  return s <= SADB_SASTATE_DEAD ? kNames[s] : "?";
}

std::string hostPort(const pfkey::AddressExt& a, bool withPrefix, bool alwaysPort) {
  std::string s = a.addr.toString();
  if (withPrefix && a.prefixlen != a.addr.fullPrefix()) s += "/" + std::to_string(a.prefixlen);
  if (alwaysPort) s += a.addr.port ? "[" + std::to_string(a.addr.port) + "]" : "[any]";
  else if (a.addr.port) s += "[" + std::to_string(a.addr.port) + "]";
  return s;
}

std::string upperName(uint8_t p) {
  switch (p) {
    case IPPROTO_ICMP: return "icmp";
    case IPPROTO_TCP: return "tcp";
    case IPPROTO_UDP: return "udp";
    case IPPROTO_ICMPV6: return "ipv6-icmp";
    case IPPROTO_GRE: return "gre";
    default: return std::to_string(p);
  }
}

const char* policyTypeName(uint16_t t) {
  static const char* kNames[] = {"discard", "none", "ipsec", "entrust", "bypass"};
  return t <= IPSEC_POLICY_BYPASS ? kNames[t] : "?";
}

const char* dirName(uint8_t d) {
  static const char* kNames[] = {"any", "in", "out", "fwd"};
  return d <= IPSEC_DIR_FWD ? kNames[d] : "?";
}

std::string requestText(const pfkey::IpsecRequest& r) {
  std::string s = r.proto == IPPROTO_ESP ? "esp" : r.proto == IPPROTO_AH ? "ah" : "ipcomp";
  s += "/";
  s += modeName(r.mode);
  s += "/";
  if (r.tunnelSrc && r.tunnelDst) s += r.tunnelSrc->toString() + "-" + r.tunnelDst->toString();
  s += "/";
  // As Linux rebuilds it: unique if a reqid is set, use if optional, else require.
  switch (r.level) {
    case IPSEC_LEVEL_DEFAULT: s += "default"; break;
    case IPSEC_LEVEL_USE: s += "use"; break;
    case IPSEC_LEVEL_REQUIRE: s += "require"; break;
    case IPSEC_LEVEL_UNIQUE: s += r.reqid ? "unique:" + std::to_string(r.reqid) : "unique"; break;
    default: s += "?";
  }
  return s;
}

}  // namespace

std::string formatTime(uint64_t t) {
  if (t == 0) return std::string(20, ' ');
  std::time_t tt = static_cast<std::time_t>(t);
  std::tm tm{};
  localtime_r(&tt, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%b %e %H:%M:%S %Y", &tm);
  return buf;
}

std::string formatPriority(uint32_t p) {
  struct Base { const char* name; uint32_t value; };
  const Base bases[] = {{"high", kPriorityHigh}, {"def", kPriorityDefault}, {"low", kPriorityLow}};
  const Base* best = &bases[0];
  int64_t bestOff = INT64_MAX;
  for (const auto& b : bases) {
    int64_t off = static_cast<int64_t>(b.value) - static_cast<int64_t>(p);
    if (std::llabs(off) < std::llabs(bestOff)) {
      best = &b;
      bestOff = off;
    }
  }
  if (bestOff == 0) return best->name;
  return printf("%s %c %" PRId64, best->name, bestOff > 0 ? '+' : '-', std::llabs(bestOff));
}

std::string formatSa(const pfkey::ParsedMessage& m, std::time_t now) {
  std::string o;
  auto src = m.address(SADB_EXT_ADDRESS_SRC);
  auto dst = m.address(SADB_EXT_ADDRESS_DST);
  auto sa = m.sa();
  if (!src || !dst || !sa) return "(incomplete SA message)\n";
  o += hostPort(*src, false, false) + " " + hostPort(*dst, false, false) + " \n";
  auto sa2 = m.sa2();
  uint32_t spi = ntohl(sa->sadb_sa_spi);
  uint32_t reqid = sa2 ? sa2->sadb_x_sa2_reqid : 0;
  o += printf("\t%s mode=%s spi=%u(0x%08x) reqid=%u(0x%08x)\n",
              satypeName(m.msg().sadb_msg_satype, m.natTType().has_value()),
              modeName(sa2 ? sa2->sadb_x_sa2_mode : 0), spi, spi, reqid, reqid);
  if (m.msg().sadb_msg_satype == SADB_X_SATYPE_IPCOMP) {
    auto c = algorithmById(AlgKind::kCompress, sa->sadb_sa_encrypt);
    o += printf("\tC: %s\n", c ? std::string(c->name).c_str() : "?");
  } else {
    if (sa->sadb_sa_encrypt != SADB_EALG_NONE) {
      auto e = algorithmById(AlgKind::kEncrypt, sa->sadb_sa_encrypt);
      auto k = m.key(SADB_EXT_KEY_ENCRYPT);
      o += "\tE: " + (e ? std::string(e->name) : std::to_string(sa->sadb_sa_encrypt)) + "  " +
           (k ? hexGroups(k->bytes) : "") + "\n";
    }
    if (sa->sadb_sa_auth != SADB_AALG_NONE) {
      auto a = algorithmById(AlgKind::kAuth, sa->sadb_sa_auth);
      auto k = m.key(SADB_EXT_KEY_AUTH);
      o += "\tA: " + (a ? std::string(a->name) : std::to_string(sa->sadb_sa_auth)) + "  " +
           (k ? hexGroups(k->bytes) : "") + "\n";
    }
  }
  // A window above 255 comes in our SA_REPLAY extension; ESN shows in flags (0x400).
  o += printf("\tseq=0x%08x replay=%u flags=0x%08x state=%s \n",
              sa2 ? sa2->sadb_x_sa2_sequence : 0, m.saReplay().value_or(sa->sadb_sa_replay), sa->sadb_sa_flags,
              stateName(sa->sadb_sa_state));
  // esp-udp's original address (NAT_T_OA), as setkey's "esp-udp ADDR" takes
  // it: a line of its own, only when there is one.
  if (auto oa = m.address(SADB_X_EXT_NAT_T_OA)) o += "\tnat-oa=" + oa->addr.toString() + " \n";
  // Our SA_OPTIONS, a line of its own and only the fields that are set, so
  // that scripts parsing ipsec-tools' output see nothing new otherwise.
  if (auto opt = m.saOptions(); opt && opt->any()) {
    static const char* kDf[] = {"inherit", "clear", "set", "copy"};
    std::string line;
    if (opt->df != pfkey::kSaDfInherit) line += printf("df=%s ", opt->df <= pfkey::kSaDfCopy ? kDf[opt->df] : "?");
    if (opt->mtu) line += printf("mtu=%u ", opt->mtu);
    if (opt->tfcPad) line += printf("tfc=%u ", opt->tfcPad);
    if (opt->dummyIntervalMs) line += printf("dummy=%u(ms) ", opt->dummyIntervalMs);
    o += "\t" + line + "\n";
  }
  sadb_lifetime none{};
  auto cur = m.lifetime(SADB_EXT_LIFETIME_CURRENT).value_or(none);
  auto hard = m.lifetime(SADB_EXT_LIFETIME_HARD).value_or(none);
  auto soft = m.lifetime(SADB_EXT_LIFETIME_SOFT).value_or(none);
  uint64_t diff = cur.sadb_lifetime_addtime && static_cast<uint64_t>(now) > cur.sadb_lifetime_addtime
                      ? static_cast<uint64_t>(now) - cur.sadb_lifetime_addtime : 0;
  o += "\tcreated: " + formatTime(cur.sadb_lifetime_addtime) +
       "\tcurrent: " + formatTime(static_cast<uint64_t>(now)) + "\n";
  o += printf("\tdiff: %" PRIu64 "(s)\thard: %" PRIu64 "(s)\tsoft: %" PRIu64 "(s)\n", diff,
              static_cast<uint64_t>(hard.sadb_lifetime_addtime),
              static_cast<uint64_t>(soft.sadb_lifetime_addtime));
  o += "\tlast: " + formatTime(cur.sadb_lifetime_usetime) +
       printf("\thard: %" PRIu64 "(s)\tsoft: %" PRIu64 "(s)\n",
              static_cast<uint64_t>(hard.sadb_lifetime_usetime),
              static_cast<uint64_t>(soft.sadb_lifetime_usetime));
  o += printf("\tcurrent: %" PRIu64 "(bytes)\thard: %" PRIu64 "(bytes)\tsoft: %" PRIu64 "(bytes)\n",
              static_cast<uint64_t>(cur.sadb_lifetime_bytes),
              static_cast<uint64_t>(hard.sadb_lifetime_bytes),
              static_cast<uint64_t>(soft.sadb_lifetime_bytes));
  o += printf("\tallocated: %u\thard: %u\tsoft: %u\n", cur.sadb_lifetime_allocations,
              hard.sadb_lifetime_allocations, soft.sadb_lifetime_allocations);
  o += printf("\tsadb_seq=%u pid=%u refcnt=%u\n", m.msg().sadb_msg_seq, m.msg().sadb_msg_pid,
              m.msg().sadb_msg_reserved);
  return o;
}

std::string formatPolicy(const pfkey::ParsedMessage& m, std::time_t /*now*/) {
  auto src = m.address(SADB_EXT_ADDRESS_SRC);
  auto dst = m.address(SADB_EXT_ADDRESS_DST);
  const auto& p = m.policy();
  if (!src || !dst || !p) return "(incomplete policy message)\n";
  std::string o = hostPort(*src, true, true) + " " + hostPort(*dst, true, true) + " " +
                  upperName(src->proto) + "\n";
  o += printf("\t%s prio %s %s\n", dirName(p->dir), formatPriority(p->priority).c_str(),
              policyTypeName(p->type));
  for (const auto& r : p->requests()) o += "\t" + requestText(r) + "\n";
  sadb_lifetime none{};
  auto cur = m.lifetime(SADB_EXT_LIFETIME_CURRENT).value_or(none);
  auto hard = m.lifetime(SADB_EXT_LIFETIME_HARD).value_or(none);
  o += "\tcreated: " + formatTime(cur.sadb_lifetime_addtime) +
       "  lastused: " + formatTime(cur.sadb_lifetime_usetime) + "\n";
  o += printf("\tlifetime: %" PRIu64 "(s) validtime: %" PRIu64 "(s)\n",
              static_cast<uint64_t>(hard.sadb_lifetime_addtime),
              static_cast<uint64_t>(hard.sadb_lifetime_usetime));
  o += printf("\tspid=%u seq=%u pid=%u\n", p->id, m.msg().sadb_msg_seq, m.msg().sadb_msg_pid);
  o += printf("\trefcnt=%u\n", m.msg().sadb_msg_reserved);
  return o;
}

std::string formatDebug(const pfkey::ParsedMessage& m) {
  const sadb_msg& h = m.msg();
  std::string o = printf("sadb_msg{ version=%u type=%u(%s) errno=%u satype=%u\n", h.sadb_msg_version,
                         h.sadb_msg_type, pfkey::messageTypeName(h.sadb_msg_type), h.sadb_msg_errno,
                         h.sadb_msg_satype);
  o += printf("  len=%u reserved=%u seq=%u pid=%u\n", h.sadb_msg_len, h.sadb_msg_reserved,
              h.sadb_msg_seq, h.sadb_msg_pid);
  for (uint16_t t = 1; t <= pfkey::kExtMax; ++t) {
    auto e = m.extBytes(t);
    if (e.empty()) continue;
    o += printf("sadb_ext{ len=%zu type=%u(%s) }\n", e.size() / 8, t, pfkey::extTypeName(t));
    if (auto a = m.address(t)) {
      o += printf("  proto=%u prefixlen=%u %s port=%u\n", a->proto, a->prefixlen,
                  a->addr.toString().c_str(), a->addr.port);
    } else if (t == SADB_EXT_SA) {
      auto s = *m.sa();
      o += printf("  spi=0x%08x replay=%u state=%u auth=%u encrypt=%u flags=0x%08x\n",
                  ntohl(s.sadb_sa_spi), s.sadb_sa_replay, s.sadb_sa_state, s.sadb_sa_auth,
                  s.sadb_sa_encrypt, s.sadb_sa_flags);
    } else if (t == SADB_X_EXT_POLICY) {
      const auto& p = *m.policy();
      o += printf("  type=%u dir=%u id=%u priority=%u\n", p.type, p.dir, p.id, p.priority);
      for (const auto& r : p.requests()) o += "  " + requestText(r) + "\n";
    } else {
      o += "  " + hexGroups(e.subspan(4)) + "\n";
    }
  }
  return o;
}

}  // namespace ipsec::setkey
