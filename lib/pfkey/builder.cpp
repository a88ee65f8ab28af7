// PF_KEY v2 message builder (see builder.h). Writes structs with memcpy into
// a byte vector so the output does not depend on the vector's alignment.
#include "pfkey/builder.h"

#include "pfkey/message.h"

#include <arpa/inet.h>

#include <cstring>
#include <stdexcept>

namespace ipsec::pfkey {
namespace {
constexpr size_t kUnit = 8;
size_t padded(size_t n) { return (n + kUnit - 1) / kUnit * kUnit; }

template <class T>
void store(std::vector<uint8_t>& buf, size_t at, const T& v) {
  std::memcpy(buf.data() + at, &v, sizeof v);
}
}  // namespace

Builder::Builder(uint8_t type, uint8_t satype, uint32_t seq, uint32_t pid, uint8_t errnum) {
  sadb_msg h{};
  h.sadb_msg_version = PF_KEY_V2;
  h.sadb_msg_type = type;
  h.sadb_msg_errno = errnum;
  h.sadb_msg_satype = satype;
  h.sadb_msg_seq = seq;
  h.sadb_msg_pid = pid;
  buf_.resize(sizeof h);
  store(buf_, 0, h);
}

Builder::Builder(const sadb_msg& header) {
  buf_.resize(sizeof header);
  store(buf_, 0, header);
}

size_t Builder::grow(size_t n) {
  size_t at = buf_.size();
  if (at + padded(n) > size_t{UINT16_MAX} * kUnit)
    throw std::length_error("PF_KEY message exceeds 65535 words");
  buf_.resize(at + padded(n), 0);
  return at;
}

void Builder::putExtHeader(size_t at, size_t bytes, uint16_t extType) {
  sadb_ext e{};
  e.sadb_ext_len = static_cast<uint16_t>(padded(bytes) / kUnit);
  e.sadb_ext_type = extType;
  store(buf_, at, e);
}

Builder& Builder::sa(const SaFields& f) {
  size_t at = grow(sizeof(sadb_sa));
  sadb_sa s{};
  s.sadb_sa_len = sizeof s / kUnit;
  s.sadb_sa_exttype = SADB_EXT_SA;
  s.sadb_sa_spi = htonl(f.spi);
  s.sadb_sa_replay = f.replay;
  s.sadb_sa_state = f.state;
  s.sadb_sa_auth = f.auth;
  s.sadb_sa_encrypt = f.encrypt;
  s.sadb_sa_flags = f.flags;
  store(buf_, at, s);
  return *this;
}

Builder& Builder::sa2(uint8_t mode, uint32_t reqid, uint32_t sequence) {
  size_t at = grow(sizeof(sadb_x_sa2));
  sadb_x_sa2 s{};
  s.sadb_x_sa2_len = sizeof s / kUnit;
  s.sadb_x_sa2_exttype = SADB_X_EXT_SA2;
  s.sadb_x_sa2_mode = mode;
  s.sadb_x_sa2_sequence = sequence;
  s.sadb_x_sa2_reqid = reqid;
  store(buf_, at, s);
  return *this;
}

Builder& Builder::address(uint16_t extType, const SockAddress& a, uint8_t prefixlen,
                          uint8_t proto) {
  if (a.sockaddrSize() == 0) throw std::invalid_argument("address without a family");
  size_t bytes = sizeof(sadb_address) + a.sockaddrSize();
  size_t at = grow(bytes);
  sadb_address h{};
  h.sadb_address_len = static_cast<uint16_t>(padded(bytes) / kUnit);
  h.sadb_address_exttype = extType;
  h.sadb_address_proto = proto;
  h.sadb_address_prefixlen = prefixlen;
  store(buf_, at, h);
  a.writeSockaddr(buf_.data() + at + sizeof h);
  return *this;
}

Builder& Builder::key(uint16_t extType, uint16_t bits, std::span<const uint8_t> bytes) {
  size_t keyBytes = (size_t{bits} + 7) / 8;
  if (bytes.size() < keyBytes) throw std::invalid_argument("key shorter than its bit count");
  size_t at = grow(sizeof(sadb_key) + keyBytes);
  sadb_key k{};
  k.sadb_key_len = static_cast<uint16_t>(padded(sizeof k + keyBytes) / kUnit);
  k.sadb_key_exttype = extType;
  k.sadb_key_bits = bits;
  store(buf_, at, k);
  if (keyBytes) std::memcpy(buf_.data() + at + sizeof k, bytes.data(), keyBytes);
  return *this;
}

Builder& Builder::lifetime(uint16_t extType, uint32_t allocations, uint64_t bytes,
                           uint64_t addtime, uint64_t usetime) {
  size_t at = grow(sizeof(sadb_lifetime));
  sadb_lifetime l{};
  l.sadb_lifetime_len = sizeof l / kUnit;
  l.sadb_lifetime_exttype = extType;
  l.sadb_lifetime_allocations = allocations;
  l.sadb_lifetime_bytes = bytes;
  l.sadb_lifetime_addtime = addtime;
  l.sadb_lifetime_usetime = usetime;
  store(buf_, at, l);
  return *this;
}

Builder& Builder::spirange(uint32_t min, uint32_t max) {
  size_t at = grow(sizeof(sadb_spirange));
  sadb_spirange r{};
  r.sadb_spirange_len = sizeof r / kUnit;
  r.sadb_spirange_exttype = SADB_EXT_SPIRANGE;
  r.sadb_spirange_min = min;
  r.sadb_spirange_max = max;
  store(buf_, at, r);
  return *this;
}

Builder& Builder::natTType(uint8_t type) {
  size_t at = grow(sizeof(sadb_x_nat_t_type));
  sadb_x_nat_t_type t{};
  t.sadb_x_nat_t_type_len = sizeof t / kUnit;
  t.sadb_x_nat_t_type_exttype = SADB_X_EXT_NAT_T_TYPE;
  t.sadb_x_nat_t_type_type = type;
  store(buf_, at, t);
  return *this;
}

Builder& Builder::natTPort(uint16_t extType, uint16_t port) {
  size_t at = grow(sizeof(sadb_x_nat_t_port));
  sadb_x_nat_t_port p{};
  p.sadb_x_nat_t_port_len = sizeof p / kUnit;
  p.sadb_x_nat_t_port_exttype = extType;
  p.sadb_x_nat_t_port_port = htons(port);
  store(buf_, at, p);
  return *this;
}

Builder& Builder::saReplay(uint32_t window) {
  size_t at = grow(sizeof(SaReplayExt));
  SaReplayExt r{};
  r.len = sizeof r / kUnit;
  r.exttype = kExtSaReplay;
  r.replay = window;
  store(buf_, at, r);
  return *this;
}

Builder& Builder::saOptions(const SaOptions& o) {
  size_t at = grow(sizeof(SaOptionsExt));
  SaOptionsExt e{};
  e.len = sizeof e / kUnit;
  e.exttype = kExtSaOptions;
  e.df = o.df;
  e.mtu = o.mtu;
  e.tfcPad = o.tfcPad;
  e.dummyIntervalMs = o.dummyIntervalMs;
  store(buf_, at, e);
  return *this;
}

Builder& Builder::policy(const PolicyFields& pf) {
  size_t bytes = sizeof(sadb_x_policy);
  for (const auto& r : pf.requests) {
    bytes += sizeof(sadb_x_ipsecrequest);
    if (r.tunnelSrc && r.tunnelDst) bytes += r.tunnelSrc->sockaddrSize() + r.tunnelDst->sockaddrSize();
  }
  size_t at = grow(bytes);
  sadb_x_policy p{};
  p.sadb_x_policy_len = static_cast<uint16_t>(padded(bytes) / kUnit);
  p.sadb_x_policy_exttype = SADB_X_EXT_POLICY;
  p.sadb_x_policy_type = pf.type;
  p.sadb_x_policy_dir = pf.dir;
  p.sadb_x_policy_id = pf.id;
  p.sadb_x_policy_priority = pf.priority;
  store(buf_, at, p);
  size_t off = at + sizeof p;
  for (const auto& r : pf.requests) {
    bool addrs = r.tunnelSrc && r.tunnelDst;
    size_t len = sizeof(sadb_x_ipsecrequest) +
                 (addrs ? r.tunnelSrc->sockaddrSize() + r.tunnelDst->sockaddrSize() : 0);
    sadb_x_ipsecrequest q{};
    q.sadb_x_ipsecrequest_len = static_cast<uint16_t>(len);  // bytes, not words
    q.sadb_x_ipsecrequest_proto = r.proto;
    q.sadb_x_ipsecrequest_mode = r.mode;
    q.sadb_x_ipsecrequest_level = r.level;
    q.sadb_x_ipsecrequest_reqid = r.reqid;
    store(buf_, off, q);
    if (addrs) {
      r.tunnelSrc->writeSockaddr(buf_.data() + off + sizeof q);
      r.tunnelDst->writeSockaddr(buf_.data() + off + sizeof q + r.tunnelSrc->sockaddrSize());
    }
    off += len;
  }
  return *this;
}

Builder& Builder::supported(uint16_t extType, std::span<const sadb_alg> algs) {
  size_t bytes = sizeof(sadb_supported) + algs.size() * sizeof(sadb_alg);
  size_t at = grow(bytes);
  putExtHeader(at, bytes, extType);
  for (size_t i = 0; i < algs.size(); ++i)
    store(buf_, at + sizeof(sadb_supported) + i * sizeof(sadb_alg), algs[i]);
  return *this;
}

Builder& Builder::secCtx(uint8_t alg, uint8_t doi, std::span<const uint8_t> context) {
  if (context.size() > UINT16_MAX) throw std::invalid_argument("security context too long");
  size_t bytes = sizeof(sadb_x_sec_ctx) + context.size();
  size_t at = grow(bytes);
  sadb_x_sec_ctx c{};
  c.sadb_x_sec_len = static_cast<uint16_t>(padded(bytes) / kUnit);
  c.sadb_x_sec_exttype = SADB_X_EXT_SEC_CTX;
  c.sadb_x_ctx_alg = alg;
  c.sadb_x_ctx_doi = doi;
  c.sadb_x_ctx_len = static_cast<uint16_t>(context.size());
  store(buf_, at, c);
  if (!context.empty()) std::memcpy(buf_.data() + at + sizeof c, context.data(), context.size());
  return *this;
}

Builder& Builder::raw(uint16_t extType, std::span<const uint8_t> body) {
  size_t bytes = sizeof(sadb_ext) + body.size();
  size_t at = grow(bytes);
  putExtHeader(at, bytes, extType);
  if (!body.empty()) std::memcpy(buf_.data() + at + sizeof(sadb_ext), body.data(), body.size());
  return *this;
}

std::vector<uint8_t> Builder::finish() {
  uint16_t words = static_cast<uint16_t>(buf_.size() / kUnit);
  std::memcpy(buf_.data() + offsetof(sadb_msg, sadb_msg_len), &words, sizeof words);
  return std::move(buf_);
}

std::vector<uint8_t> Builder::errorReply(const sadb_msg& request, uint8_t errnum) {
  sadb_msg h = request;
  h.sadb_msg_errno = errnum;
  return Builder(h).finish();
}

}  // namespace ipsec::pfkey
