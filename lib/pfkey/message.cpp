// PF_KEY v2 parser: untrusted bytes in, a checked view or an errno out.
// Runs in ipsec-policy for every client datagram, and in setkey for replies.
// Every read is length-checked first and done with memcpy (no alignment
// assumption); nothing here allocates or throws.
#include "pfkey/message.h"

#include <linux/ipsec.h>
#include <netinet/in.h>

#include <cerrno>

namespace ipsec::pfkey {
namespace {

constexpr size_t kUnit = 8;  // PF_KEY lengths count 64-bit words

// Minimum size of each extension (its struct), indexed by type; as af_key.c.
constexpr std::array<uint16_t, kExtMax + 1> kMinLen = [] {
  std::array<uint16_t, kExtMax + 1> m{};
  m[SADB_EXT_SA] = sizeof(sadb_sa);
  m[SADB_EXT_LIFETIME_CURRENT] = sizeof(sadb_lifetime);
  m[SADB_EXT_LIFETIME_HARD] = sizeof(sadb_lifetime);
  m[SADB_EXT_LIFETIME_SOFT] = sizeof(sadb_lifetime);
  m[SADB_EXT_ADDRESS_SRC] = sizeof(sadb_address);
  m[SADB_EXT_ADDRESS_DST] = sizeof(sadb_address);
  m[SADB_EXT_ADDRESS_PROXY] = sizeof(sadb_address);
  m[SADB_EXT_KEY_AUTH] = sizeof(sadb_key);
  m[SADB_EXT_KEY_ENCRYPT] = sizeof(sadb_key);
  m[SADB_EXT_IDENTITY_SRC] = sizeof(sadb_ident);
  m[SADB_EXT_IDENTITY_DST] = sizeof(sadb_ident);
  m[SADB_EXT_SENSITIVITY] = sizeof(sadb_sens);
  m[SADB_EXT_PROPOSAL] = sizeof(sadb_prop);
  m[SADB_EXT_SUPPORTED_AUTH] = sizeof(sadb_supported);
  m[SADB_EXT_SUPPORTED_ENCRYPT] = sizeof(sadb_supported);
  m[SADB_EXT_SPIRANGE] = sizeof(sadb_spirange);
  m[SADB_X_EXT_KMPRIVATE] = sizeof(sadb_x_kmprivate);
  m[SADB_X_EXT_POLICY] = sizeof(sadb_x_policy);
  m[SADB_X_EXT_SA2] = sizeof(sadb_x_sa2);
  m[SADB_X_EXT_NAT_T_TYPE] = sizeof(sadb_x_nat_t_type);
  m[SADB_X_EXT_NAT_T_SPORT] = sizeof(sadb_x_nat_t_port);
  m[SADB_X_EXT_NAT_T_DPORT] = sizeof(sadb_x_nat_t_port);
  m[SADB_X_EXT_NAT_T_OA] = sizeof(sadb_address);
  m[SADB_X_EXT_SEC_CTX] = sizeof(sadb_x_sec_ctx);
  m[SADB_X_EXT_KMADDRESS] = sizeof(sadb_x_kmaddress);
  m[SADB_X_EXT_FILTER] = sizeof(sadb_x_filter);
  m[kExtSaReplay] = sizeof(SaReplayExt);
  m[kExtSaOptions] = sizeof(SaOptionsExt);
  return m;
}();

// Extensions whose struct is all there is: a longer one is malformed.
constexpr bool isFixedSize(uint16_t t) noexcept {
  switch (t) {
    case SADB_EXT_SA:
    case SADB_EXT_LIFETIME_CURRENT:
    case SADB_EXT_LIFETIME_HARD:
    case SADB_EXT_LIFETIME_SOFT:
    case SADB_EXT_SPIRANGE:
    case SADB_X_EXT_SA2:
    case SADB_X_EXT_NAT_T_TYPE:
    case SADB_X_EXT_NAT_T_SPORT:
    case SADB_X_EXT_NAT_T_DPORT:
    case kExtSaReplay:
    case kExtSaOptions:
      return true;
    default:
      return false;
  }
}

constexpr bool isAddress(uint16_t t) noexcept {
  return t == SADB_EXT_ADDRESS_SRC || t == SADB_EXT_ADDRESS_DST ||
         t == SADB_EXT_ADDRESS_PROXY || t == SADB_X_EXT_NAT_T_OA;
}

ParseError fail(int errnum, const char* reason, uint16_t ext, size_t offset) noexcept {
  return ParseError{errnum, reason, ext, offset};
}

template <class T>
T load(const uint8_t* p) noexcept {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Checks a sadb_address extension (whole extension in `e`).
const char* checkAddress(std::span<const uint8_t> e) noexcept {
  auto hdr = load<sadb_address>(e.data());
  auto sa = e.subspan(sizeof(sadb_address));
  sa_family_t family = AF_UNSPEC;
  if (sa.size() >= sizeof family) std::memcpy(&family, sa.data(), sizeof family);
  if (family == AF_INET) {
    if (hdr.sadb_address_len != (sizeof(sadb_address) + sizeof(sockaddr_in) + 7) / kUnit)
      return "sadb_address length does not fit sockaddr_in";
    if (hdr.sadb_address_prefixlen > 32) return "IPv4 prefix length above 32";
    return nullptr;
  }
  if (family == AF_INET6) {
    if (hdr.sadb_address_len != (sizeof(sadb_address) + sizeof(sockaddr_in6) + 7) / kUnit)
      return "sadb_address length does not fit sockaddr_in6";
    if (hdr.sadb_address_prefixlen > 128) return "IPv6 prefix length above 128";
    return nullptr;
  }
  return "sadb_address family is neither AF_INET nor AF_INET6";
}

const char* checkKey(std::span<const uint8_t> e) noexcept {
  auto k = load<sadb_key>(e.data());
  size_t need = sizeof(sadb_key) + (size_t{k.sadb_key_bits} + 7) / 8;
  return need <= e.size() ? nullptr : "key bits exceed the extension";
}

const char* checkSaOptions(std::span<const uint8_t> e) noexcept {
  auto o = load<SaOptionsExt>(e.data());
  if (o.df > kSaDfCopy) return "SA_OPTIONS df policy above 3";
  if (o.reserved1 != 0 || o.reserved2 != 0) return "SA_OPTIONS reserved field not 0";
  if (o.mtu != 0 && o.mtu < kMinMtuV4) return "SA_OPTIONS mtu below 576";
  return nullptr;
}

const char* checkSecCtx(std::span<const uint8_t> e) noexcept {
  auto c = load<sadb_x_sec_ctx>(e.data());
  size_t want = (sizeof(sadb_x_sec_ctx) + c.sadb_x_ctx_len + 7) / kUnit;
  return want == c.sadb_x_sec_len ? nullptr : "security context length mismatch";
}

// Decodes and checks the ipsecrequest list of an X_POLICY extension.
std::optional<ParseError> parsePolicy(std::span<const uint8_t> e, size_t base,
                                      PolicyExt& out) noexcept {
  auto p = load<sadb_x_policy>(e.data());
  out.type = p.sadb_x_policy_type;
  out.dir = p.sadb_x_policy_dir;
  out.id = p.sadb_x_policy_id;
  out.priority = p.sadb_x_policy_priority;
  size_t off = sizeof(sadb_x_policy);
  // As Linux: trailing bytes shorter than a request are padding.
  while (e.size() - off >= sizeof(sadb_x_ipsecrequest)) {
    auto rq = load<sadb_x_ipsecrequest>(e.data() + off);
    size_t len = rq.sadb_x_ipsecrequest_len;  // in BYTES, unlike everything else
    if (len < sizeof rq || len > e.size() - off)
      return fail(EINVAL, "ipsecrequest length out of bounds", SADB_X_EXT_POLICY, base + off);
    if (out.requestCount == kMaxIpsecRequests)
      return fail(ELOOP, "more ipsecrequests than a policy may chain", SADB_X_EXT_POLICY,
                  base + off);
    uint16_t proto = rq.sadb_x_ipsecrequest_proto;
    if (proto != IPPROTO_ESP && proto != IPPROTO_AH && proto != IPPROTO_COMP)
      return fail(EINVAL, "ipsecrequest protocol is not ESP, AH or IPCOMP", SADB_X_EXT_POLICY,
                  base + off);
    uint8_t mode = rq.sadb_x_ipsecrequest_mode;
    if (mode < IPSEC_MODE_TRANSPORT || mode > IPSEC_MODE_BEET)
      return fail(EINVAL, "ipsecrequest mode invalid", SADB_X_EXT_POLICY, base + off);
    if (rq.sadb_x_ipsecrequest_level > IPSEC_LEVEL_UNIQUE)
      return fail(EINVAL, "ipsecrequest level invalid", SADB_X_EXT_POLICY, base + off);
    IpsecRequest& r = out.requestStore[out.requestCount++];
    r = IpsecRequest{proto, mode, rq.sadb_x_ipsecrequest_level, rq.sadb_x_ipsecrequest_reqid,
                     std::nullopt, std::nullopt};
    if (len > sizeof rq) {
      auto addrs = e.subspan(off + sizeof rq, len - sizeof rq);
      auto src = SockAddress::readSockaddr(addrs);
      if (!src)
        return fail(EINVAL, "ipsecrequest source sockaddr invalid", SADB_X_EXT_POLICY, base + off);
      auto dst = SockAddress::readSockaddr(addrs.subspan(src->sockaddrSize()));
      if (!dst || dst->family != src->family ||
          src->sockaddrSize() + dst->sockaddrSize() != addrs.size())
        return fail(EINVAL, "ipsecrequest address pair invalid", SADB_X_EXT_POLICY, base + off);
      r.tunnelSrc = src;
      r.tunnelDst = dst;
    } else if (mode == IPSEC_MODE_TUNNEL) {
      return fail(EINVAL, "tunnel ipsecrequest without addresses", SADB_X_EXT_POLICY, base + off);
    }
    off += len;
  }
  return std::nullopt;
}

}  // namespace

std::variant<ParsedMessage, ParseError> parse(std::span<const uint8_t> d, Origin origin) noexcept {
  if (d.size() < sizeof(sadb_msg)) return fail(EMSGSIZE, "shorter than sadb_msg", 0, 0);
  ParsedMessage m;
  m.header_ = load<sadb_msg>(d.data());
  const sadb_msg& h = m.header_;
  if (h.sadb_msg_version != PF_KEY_V2) return fail(EINVAL, "not PF_KEY_V2", 0, 0);
  if (origin == Origin::kClient && h.sadb_msg_reserved != 0) return fail(EINVAL, "sadb_msg_reserved not 0", 0, 6);
  if (h.sadb_msg_type == SADB_RESERVED || h.sadb_msg_type > SADB_MAX)
    return fail(EINVAL, "unknown message type", 0, 1);
  if (d.size() > kMaxMessageBytes) return fail(EMSGSIZE, "message too large", 0, 0);
  if (size_t{h.sadb_msg_len} * kUnit != d.size() || h.sadb_msg_len < 2)
    return fail(EMSGSIZE, "sadb_msg_len disagrees with the datagram length", 0, 4);
  m.data_ = d;

  size_t off = sizeof(sadb_msg);
  while (off < d.size()) {
    if (d.size() - off < sizeof(sadb_ext)) return fail(EINVAL, "truncated extension", 0, off);
    auto eh = load<sadb_ext>(d.data() + off);
    size_t len = size_t{eh.sadb_ext_len} * kUnit;
    uint16_t type = eh.sadb_ext_type;
    if (len < kUnit || len > d.size() - off)
      return fail(EINVAL, "extension length out of bounds", type, off);
    if (type == SADB_EXT_RESERVED || (type > SADB_EXT_MAX && type != kExtSaReplay && type != kExtSaOptions))
      return fail(EINVAL, "unknown extension type", type, off);
    if (m.offsets_[type] != 0) return fail(EINVAL, "duplicate extension", type, off);
    if (len < kMinLen[type]) return fail(EINVAL, "extension shorter than its struct", type, off);
    if (isFixedSize(type) && len != kMinLen[type])
      return fail(EINVAL, "fixed-size extension has the wrong length", type, off);
    auto e = d.subspan(off, len);
    const char* why = nullptr;
    if (isAddress(type)) {
      why = checkAddress(e);
    } else if (type == SADB_EXT_KEY_AUTH || type == SADB_EXT_KEY_ENCRYPT) {
      why = checkKey(e);
    } else if (type == SADB_X_EXT_SEC_CTX) {
      why = checkSecCtx(e);
    } else if (type == kExtSaOptions) {
      why = checkSaOptions(e);
    } else if (type == SADB_X_EXT_POLICY) {
      PolicyExt p;
      if (auto err = parsePolicy(e, off, p)) return *err;
      m.policy_ = p;
    }
    if (why) return fail(EINVAL, why, type, off);
    m.offsets_[type] = static_cast<uint32_t>(off);
    off += len;
  }
  return m;
}

std::span<const uint8_t> ParsedMessage::extBytes(uint16_t t) const noexcept {
  if (!has(t)) return {};
  size_t off = offsets_[t];
  auto eh = load<sadb_ext>(data_.data() + off);
  return data_.subspan(off, size_t{eh.sadb_ext_len} * kUnit);
}

std::optional<AddressExt> ParsedMessage::address(uint16_t t) const noexcept {
  if (!isAddress(t)) return std::nullopt;
  auto e = extBytes(t);
  if (e.empty()) return std::nullopt;
  auto hdr = load<sadb_address>(e.data());
  auto a = SockAddress::readSockaddr(e.subspan(sizeof(sadb_address)));
  if (!a) return std::nullopt;
  return AddressExt{*a, hdr.sadb_address_prefixlen, hdr.sadb_address_proto};
}

std::optional<KeyExt> ParsedMessage::key(uint16_t t) const noexcept {
  if (t != SADB_EXT_KEY_AUTH && t != SADB_EXT_KEY_ENCRYPT) return std::nullopt;
  auto e = extBytes(t);
  if (e.empty()) return std::nullopt;
  auto k = load<sadb_key>(e.data());
  return KeyExt{k.sadb_key_bits, e.subspan(sizeof(sadb_key), (size_t{k.sadb_key_bits} + 7) / 8)};
}

std::optional<uint8_t> ParsedMessage::natTType() const noexcept {
  auto t = ext<sadb_x_nat_t_type>(SADB_X_EXT_NAT_T_TYPE);
  if (!t) return std::nullopt;
  return t->sadb_x_nat_t_type_type;
}

std::optional<uint16_t> ParsedMessage::natTPort(uint16_t t) const noexcept {
  if (t != SADB_X_EXT_NAT_T_SPORT && t != SADB_X_EXT_NAT_T_DPORT) return std::nullopt;
  auto p = ext<sadb_x_nat_t_port>(t);
  if (!p) return std::nullopt;
  return ntohs(p->sadb_x_nat_t_port_port);
}

std::optional<SecCtxExt> ParsedMessage::secCtx() const noexcept {
  auto e = extBytes(SADB_X_EXT_SEC_CTX);
  if (e.empty()) return std::nullopt;
  auto c = load<sadb_x_sec_ctx>(e.data());
  return SecCtxExt{c.sadb_x_ctx_alg, c.sadb_x_ctx_doi,
                   e.subspan(sizeof(sadb_x_sec_ctx), c.sadb_x_ctx_len)};
}

std::optional<uint32_t> ParsedMessage::saReplay() const noexcept {
  auto r = ext<SaReplayExt>(kExtSaReplay);
  if (!r) return std::nullopt;
  return r->replay;
}

std::optional<SaOptions> ParsedMessage::saOptions() const noexcept {
  auto o = ext<SaOptionsExt>(kExtSaOptions);
  if (!o) return std::nullopt;
  return SaOptions{o->df, o->mtu, o->tfcPad, o->dummyIntervalMs};
}

size_t ParsedMessage::supportedCount(uint16_t t) const noexcept {
  if (t != SADB_EXT_SUPPORTED_AUTH && t != SADB_EXT_SUPPORTED_ENCRYPT) return 0;
  auto e = extBytes(t);
  if (e.empty()) return 0;
  return (e.size() - sizeof(sadb_supported)) / sizeof(sadb_alg);
}

std::optional<sadb_alg> ParsedMessage::supportedAlg(uint16_t t, size_t i) const noexcept {
  if (i >= supportedCount(t)) return std::nullopt;
  auto e = extBytes(t);
  return load<sadb_alg>(e.data() + sizeof(sadb_supported) + i * sizeof(sadb_alg));
}

const char* messageTypeName(uint8_t type) noexcept {
  static constexpr const char* kNames[] = {
      "RESERVED",  "GETSPI",      "UPDATE",      "ADD",        "DELETE",
      "GET",       "ACQUIRE",     "REGISTER",    "EXPIRE",     "FLUSH",
      "DUMP",      "X_PROMISC",   "X_PCHANGE",   "X_SPDUPDATE", "X_SPDADD",
      "X_SPDDELETE", "X_SPDGET",  "X_SPDACQUIRE", "X_SPDDUMP", "X_SPDFLUSH",
      "X_SPDSETIDX", "X_SPDEXPIRE", "X_SPDDELETE2", "X_NAT_T_NEW_MAPPING", "X_MIGRATE"};
  static_assert(std::size(kNames) == SADB_MAX + 1);
  return type <= SADB_MAX ? kNames[type] : "?";
}

const char* extTypeName(uint16_t type) noexcept {
  static constexpr const char* kNames[] = {
      "RESERVED",       "SA",           "LIFETIME_CURRENT", "LIFETIME_HARD", "LIFETIME_SOFT",
      "ADDRESS_SRC",    "ADDRESS_DST",  "ADDRESS_PROXY",    "KEY_AUTH",      "KEY_ENCRYPT",
      "IDENTITY_SRC",   "IDENTITY_DST", "SENSITIVITY",      "PROPOSAL",      "SUPPORTED_AUTH",
      "SUPPORTED_ENCRYPT", "SPIRANGE",  "X_KMPRIVATE",      "X_POLICY",      "X_SA2",
      "X_NAT_T_TYPE",   "X_NAT_T_SPORT", "X_NAT_T_DPORT",   "X_NAT_T_OA",    "X_SEC_CTX",
      "X_KMADDRESS",    "X_FILTER"};
  static_assert(std::size(kNames) == SADB_EXT_MAX + 1);
  if (type == kExtSaReplay) return "X_SA_REPLAY";
  if (type == kExtSaOptions) return "X_SA_OPTIONS";
  return type <= SADB_EXT_MAX ? kNames[type] : "?";
}

}  // namespace ipsec::pfkey
