// See server.h. This file: PF_KEY SA messages (REGISTER, ADD/UPDATE, DELETE,
// GET, FLUSH, DUMP, GETSPI, X_PROMISC), their translation into SAD requests
// to keydb (proto/sad.capnp), and the replies built from keydb's answers.
// Validation follows Linux's af_key.c where the corpus shows it; what keydb
// decides (existence, SPI allocation) comes back as its errno.
#include <arpa/inet.h>
#include <linux/udp.h>
#include <string.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "algorithms.h"
#include "wire_address.h"
#include "control/scratch_builder.h"
#include "log/log.h"
#include "pfkey/builder.h"
#include "sa_direction.h"
#include "server.h"

namespace ipsec::policy {
namespace {

// Linux returns only these sadb_sa_flags; KAME bits such as CYCSEQ (0x40)
// that setkey sends are not echoed (the corpus shows flags=0x0).
constexpr std::uint32_t kReturnedSaFlags = SADB_SAFLAGS_NOPMTUDISC | SADB_SAFLAGS_DECAP_DSCP | SADB_SAFLAGS_NOECN;
// Linux's default SPI range for GETSPI without SPIRANGE.
// Requests to keydb name or carry one SA: a 1 KiB first segment on the
// stack holds any of them (keys included), instead of capnp's default 8 KiB,
// which is calloc'ed and, for an ADD, wiped again after the send.
constexpr unsigned kOneSaMessageWords = 128;

constexpr std::uint32_t kDefaultSpiMin = 0x100;
constexpr std::uint32_t kDefaultSpiMax = 0x0fffffff;

bool ipsecSatype(std::uint8_t t) {
  return t == SADB_SATYPE_ESP || t == SADB_SATYPE_AH || t == SADB_X_SATYPE_IPCOMP;
}

sadb_msg replyHeader(const sadb_msg& request) {
  sadb_msg h = request;
  h.sadb_msg_errno = 0;
  h.sadb_msg_len = 2;
  return h;
}

// The reader sits on the control channel's own (mutable) receive buffer, so
// wiping through it wipes the only copy of those keys outside keydb.
void wipe(capnp::Data::Reader d) {
  if (d.size() != 0) explicit_bzero(const_cast<capnp::byte*>(d.begin()), d.size());
}

void setLifetime(proto::Lifetime::Builder out, const std::optional<sadb_lifetime>& l) {
  if (!l) return;
  out.setAllocations(l->sadb_lifetime_allocations);
  out.setBytes(l->sadb_lifetime_bytes);
  out.setAddTime(l->sadb_lifetime_addtime);
  out.setUseTime(l->sadb_lifetime_usetime);
}

void putLifetime(pfkey::Builder& b, std::uint16_t type, proto::Lifetime::Reader l) {
  b.lifetime(type, l.getAllocations(), l.getBytes(), l.getAddTime(), l.getUseTime());
}

void putKey(pfkey::Builder& b, std::uint16_t type, std::uint16_t bits, capnp::Data::Reader key) {
  if (key.size() == 0) return;
  if ((std::size_t{bits} + 7) / 8 > key.size() || bits == 0) bits = static_cast<std::uint16_t>(key.size() * 8);
  b.key(type, bits, std::span<const std::uint8_t>(key.begin(), key.size()));
}

// Which extensions an SA message carries.
enum class SaMessage { kState, kStateWithKeys, kExpireSoft, kExpireHard };

// An SA as Linux's pfkey_xfrm_state2msg lays it out: SA, LIFETIME_HARD,
// LIFETIME_SOFT, LIFETIME_CURRENT, SRC, DST, [KEY_AUTH, KEY_ENCRYPT], SA2.
// An EXPIRE carries only the lifetime that ran out (HARD or SOFT) before
// CURRENT. nullopt if keydb sent an address that is not 4 or 16 bytes.
std::optional<std::vector<std::uint8_t>> saMessage(sadb_msg header, proto::SaRecord::Reader r, SaMessage kind) {
  auto p = r.getParams();
  auto src = addressFrom(p.getSrc());
  auto dst = addressFrom(p.getDst());
  if (!src || !dst) return std::nullopt;
  header.sadb_msg_satype = p.getSatype();
  pfkey::Builder b(header);
  pfkey::SaFields sa;
  sa.spi = p.getSpi();
  // A window above 255 is said in our SA_REPLAY extension (sadb_sa_replay
  // then holds 255), ESN in FreeBSD's flag bit: lib/pfkey/message.h.
  sa.replay = static_cast<std::uint8_t>(std::min<std::uint32_t>(p.getReplayWindow(), 255));
  sa.state = p.getState();
  sa.auth = p.getAuthAlg();
  sa.encrypt = p.getEncAlg();
  sa.flags = (p.getFlags() & kReturnedSaFlags) | (p.getEsn() ? pfkey::kSaFlagEsn : 0);
  b.sa(sa);
  if (kind != SaMessage::kExpireSoft) putLifetime(b, SADB_EXT_LIFETIME_HARD, p.getHard());
  if (kind != SaMessage::kExpireHard) putLifetime(b, SADB_EXT_LIFETIME_SOFT, p.getSoft());
  putLifetime(b, SADB_EXT_LIFETIME_CURRENT, r.getCurrent());
  // Linux answers with protocol 0 and a full-length prefix for SA addresses.
  b.address(SADB_EXT_ADDRESS_SRC, *src, src->fullPrefix(), 0);
  b.address(SADB_EXT_ADDRESS_DST, *dst, dst->fullPrefix(), 0);
  if (kind == SaMessage::kStateWithKeys && r.hasKeys()) {
    putKey(b, SADB_EXT_KEY_AUTH, p.getAuthKeyBits(), r.getKeys().getAuth());
    putKey(b, SADB_EXT_KEY_ENCRYPT, p.getEncKeyBits(), r.getKeys().getEncrypt());
  }
  b.sa2(p.getMode(), p.getReqid());
  if (p.getReplayWindow() > 255) b.saReplay(p.getReplayWindow());
  // Our SA_OPTIONS only when one is set: a client that never sent it never sees it.
  const pfkey::SaOptions options{p.getDfPolicy(), p.getMtu(), p.getTfcPad(), p.getDummyInterval()};
  if (options.any()) b.saOptions(options);
  // NAT-T after SA2, as pfkey_xfrm_state2msg. Linux keeps its one NAT_T_OA
  // without ever returning it; we return it so that GET round-trips it.
  if (p.getNatTType() != 0) {
    b.natTType(p.getNatTType());
    b.natTPort(SADB_X_EXT_NAT_T_SPORT, p.getNatTSport());
    b.natTPort(SADB_X_EXT_NAT_T_DPORT, p.getNatTDport());
    if (auto oa = addressFrom(p.getNatOaSrc())) b.address(SADB_X_EXT_NAT_T_OA, *oa, oa->fullPrefix(), 0);
  }
  return b.finish();
}

// A pending ACQUIRE as Linux's DUMP shows its XFRM_STATE_ACQ state
// (pfkey_xfrm_state2msg): SPI 0, state larval, no algorithms, the hard
// add-time lifetime it dies after (net.key.larval_lifetime), its creation
// time, the acquire's addresses, SA2 with the template's mode and reqid.
std::vector<std::uint8_t> acquireMessage(sadb_msg header, std::uint8_t satype, const pfkey::SockAddress& src,
                                         const pfkey::SockAddress& dst, std::uint8_t mode, std::uint32_t reqid,
                                         std::uint64_t created, std::uint64_t lifetime) {
  header.sadb_msg_satype = satype;
  pfkey::Builder b(header);
  pfkey::SaFields sa;
  sa.spi = 0;
  sa.state = SADB_SASTATE_LARVAL;
  b.sa(sa);
  b.lifetime(SADB_EXT_LIFETIME_HARD, 0, 0, lifetime, 0);
  b.lifetime(SADB_EXT_LIFETIME_SOFT, 0, 0, 0, 0);
  b.lifetime(SADB_EXT_LIFETIME_CURRENT, 0, 0, created, 0);
  b.address(SADB_EXT_ADDRESS_SRC, src, src.fullPrefix(), 0);
  b.address(SADB_EXT_ADDRESS_DST, dst, dst.fullPrefix(), 0);
  b.sa2(mode, reqid);
  return b.finish();
}

// NAT-T extensions of an ADD/UPDATE into `p`, as pfkey_msg2xfrm_state reads
// them: ports and the original address count only with a NAT_T_TYPE. Only
// ESP is encapsulated (AH's init refuses an encap on Linux too), only
// UDP_ENCAP_ESPINUDP (RFC 3948: the non-ESP marker) is run. Stricter than
// Linux: both ports must be given and non-zero (an encap to port 0 would
// be sent nowhere). Linux numbering has one NAT_T_OA (no OAI/OAR): it is
// the peer's original address, which the receiver of transport-mode
// traffic needs for its checksum fix-up, so it lands in natOaSrc.
int setNatT(proto::SaParams::Builder p, std::uint8_t satype, const pfkey::ParsedMessage& m,
            const pfkey::AddressExt& src) {
  const auto type = m.natTType();
  if (!type) return 0;
  if (satype != SADB_SATYPE_ESP || *type != UDP_ENCAP_ESPINUDP) return EINVAL;
  const auto sport = m.natTPort(SADB_X_EXT_NAT_T_SPORT);
  const auto dport = m.natTPort(SADB_X_EXT_NAT_T_DPORT);
  if (!sport || !dport || *sport == 0 || *dport == 0) return EINVAL;
  p.setNatTType(*type);
  p.setNatTSport(*sport);
  p.setNatTDport(*dport);
  if (const auto oa = m.address(SADB_X_EXT_NAT_T_OA)) {
    if (oa->addr.family != src.addr.family) return EINVAL;
    p.setNatOaSrc(raw(oa->addr));
  }
  return 0;
}

// Our SA_OPTIONS extension (lib/pfkey/message.h) into `p`. parse() checked
// the fields alone; what needs the SA: only ESP and AH have an outer header
// and padding to tune (IPComp is EINVAL rather than silently ignored, so a
// script that asks for a DF policy on the wrong SA hears of it), and an IPv6
// outer path below 1280 bytes (RFC 8200 §5) is EINVAL.
int setSaOptions(proto::SaParams::Builder p, std::uint8_t satype, const pfkey::ParsedMessage& m,
                 const pfkey::AddressExt& src) {
  const auto o = m.saOptions();
  if (!o) return 0;
  if (satype != SADB_SATYPE_ESP && satype != SADB_SATYPE_AH) return EINVAL;
  if (src.addr.isV6() && o->mtu != 0 && o->mtu < pfkey::kMinMtuV6) return EINVAL;
  p.setDfPolicy(o->df);
  p.setMtu(o->mtu);
  p.setTfcPad(o->tfcPad);
  p.setDummyInterval(o->dummyIntervalMs);
  return 0;
}

// ESP: a cipher the broker runs, an HMAC or none; AES-GCM authenticates
// itself; not both NULL (RFC 4303 §3.2). AH: an HMAC and no cipher.
// Linux answers an algorithm it does not know with ENOSYS.
int checkAlgorithms(std::uint8_t satype, const sadb_sa& sa, const pfkey::ParsedMessage& m, bool allowLegacy) {
  const auto encKey = m.key(SADB_EXT_KEY_ENCRYPT);
  const auto authKey = m.key(SADB_EXT_KEY_AUTH);
  auto keyFits = [](const AlgorithmSpec* a, const std::optional<pfkey::KeyExt>& k) {
    const std::uint16_t bits = k ? k->bits : 0;
    return bits >= a->minBits && bits <= a->maxBits;
  };
  const bool noAuth = sa.sadb_sa_auth == SADB_AALG_NONE;
  const AlgorithmSpec* auth = noAuth ? nullptr : findAuth(sa.sadb_sa_auth, allowLegacy);
  if (!noAuth && !auth) return ENOSYS;
  if (auth && !keyFits(auth, authKey)) return EINVAL;
  if (noAuth && authKey && authKey->bits != 0) return EINVAL;
  if (satype == SADB_SATYPE_AH) {
    if (!auth || auth->id == SADB_X_AALG_NULL || sa.sadb_sa_encrypt != SADB_EALG_NONE || encKey) return EINVAL;
    return 0;
  }
  const AlgorithmSpec* enc = findEncrypt(sa.sadb_sa_encrypt, allowLegacy);
  if (!enc) return ENOSYS;
  if (!keyFits(enc, encKey)) return EINVAL;
  const bool authenticates = auth && auth->id != SADB_X_AALG_NULL;
  if (enc->aead && authenticates) return EINVAL;  // an AEAD authenticates itself
  if (enc->id == SADB_EALG_NULL && !authenticates) return EINVAL;
  return 0;
}

// IPComp (RFC 3173): the CPI is 16 bits in the SPI field; DEFLATE is the one
// algorithm we run (Linux answers a compression it lacks with ENOSYS); an
// IPComp SA has nothing secret, so a key or an authenticator is EINVAL.
int checkIpcomp(const sadb_sa& sa, const pfkey::ParsedMessage& m) {
  if (ntohl(sa.sadb_sa_spi) > 0xffff) return EINVAL;
  if (sa.sadb_sa_auth != SADB_AALG_NONE || m.has(SADB_EXT_KEY_AUTH) || m.has(SADB_EXT_KEY_ENCRYPT)) return EINVAL;
  if (sa.sadb_sa_encrypt != SADB_X_CALG_DEFLATE) return ENOSYS;
  return 0;
}

}  // namespace

int Server::sendToKeydb(Client* c, const sadb_msg& request, capnp::MallocMessageBuilder& b, std::uint64_t id) {
  if (pending_.size() >= options_.maxPendingRequests) return ENOBUFS;
  switch (keydb_->send(b)) {
    case control::Channel::SendResult::kSent:
    case control::Channel::SendResult::kQueued: break;
    case control::Channel::SendResult::kTooLarge: return EMSGSIZE;
    case control::Channel::SendResult::kClosed: return EIO;  // the SAD is gone; onPeerLost fails closed
  }
  Pending pending;
  pending.clientId = c ? c->id : 0;
  pending.request = request;
  pending_.emplace(id, std::move(pending));
  return 0;
}

int Server::onRegister(Client* c, const pfkey::ParsedMessage& m) {
  const std::uint8_t satype = m.msg().sadb_msg_satype;
  if (satype != SADB_SATYPE_UNSPEC) {
    // UNSPEC (setkey's) asks for the lists without registering for events.
    if (!ipsecSatype(satype)) return EINVAL;
    const std::uint32_t bit = std::uint32_t{1} << satype;
    if (c && (c->registered & bit)) return EEXIST;
    if (c) c->registered |= bit;
  }
  auto algs = [](std::span<const AlgorithmSpec> table) {
    std::vector<sadb_alg> out;
    for (const auto& a : table) out.push_back(sadb_alg{a.id, a.ivLength, a.minBits, a.maxBits, 0});
    return out;
  };
  pfkey::Builder b(replyHeader(m.msg()));
  b.supported(SADB_EXT_SUPPORTED_AUTH, algs(supportedAuth(allowLegacy_)));
  b.supported(SADB_EXT_SUPPORTED_ENCRYPT, algs(supportedEncrypt(allowLegacy_)));
  deliver(b.finish(), Audience::kRegistered, c);
  return 0;
}

int Server::onAddOrUpdate(Client* c, const pfkey::ParsedMessage& m) {
  const std::uint8_t satype = m.msg().sadb_msg_satype;
  if (!ipsecSatype(satype)) return EINVAL;
  const auto sa = m.sa();
  const auto src = m.address(SADB_EXT_ADDRESS_SRC);
  const auto dst = m.address(SADB_EXT_ADDRESS_DST);
  if (!sa || !src || !dst || src->addr.family != dst->addr.family) return EINVAL;
  if (satype != SADB_X_SATYPE_IPCOMP) {
    if (int err = checkAlgorithms(satype, *sa, m, allowLegacy_)) return err;
  } else if (int err = checkIpcomp(*sa, m)) {
    return err;
  }
  const auto sa2 = m.sa2();
  const auto encKey = m.key(SADB_EXT_KEY_ENCRYPT);
  const auto authKey = m.key(SADB_EXT_KEY_AUTH);

  control::ScratchMessageBuilder<kOneSaMessageWords> b;
  const std::uint64_t id = newRequestId();
  auto req = b.initRoot<proto::PolicyToKeydb>();
  req.setRequestId(id);
  auto add = req.initAdd();
  add.setUpdate(m.msg().sadb_msg_type == SADB_UPDATE);
  auto p = add.initParams();
  p.setSatype(satype);
  p.setSpi(ntohl(sa->sadb_sa_spi));
  p.setSrc(raw(src->addr));
  p.setDst(raw(dst->addr));
  p.setMode(sa2 ? sa2->sadb_x_sa2_mode : std::uint8_t{IPSEC_MODE_ANY});
  p.setReqid(sa2 ? sa2->sadb_x_sa2_reqid : 0);
  // Whether this host sends on it, by the SPD as it is now; a policy stored
  // later marks it then (markOutbound).
  add.setOutbound(
      saIsOutbound(spd_, options_.localAddresses, satype, p.getMode(), p.getReqid(), src->addr, dst->addr));
  p.setEncAlg(sa->sadb_sa_encrypt);
  p.setAuthAlg(sa->sadb_sa_auth);
  p.setEncKeyBits(encKey ? encKey->bits : 0);
  p.setAuthKeyBits(authKey ? authKey->bits : 0);
  // Our SA_REPLAY extension overrides the u8 window (as FreeBSD's does); a
  // window the data path cannot keep is refused, never clipped. ESN needs a
  // sequence number: not for IPComp. And a window: the receiver infers the
  // high half from the window's top (RFC 4303 App. A), so ESN with window 0
  // would check every ICV against the wrong high half after 2^32 packets;
  // Linux refuses it too ("ESN replay window must be > 0").
  const std::uint32_t window = m.saReplay().value_or(sa->sadb_sa_replay);
  const bool esn = (sa->sadb_sa_flags & pfkey::kSaFlagEsn) != 0;
  if (window > pfkey::kMaxReplayWindow) return EINVAL;
  if (esn && satype == SADB_X_SATYPE_IPCOMP) return EINVAL;
  if (esn && window == 0) return EINVAL;
  p.setReplayWindow(window);
  p.setFlags(sa->sadb_sa_flags);
  p.setState(sa->sadb_sa_state);
  p.setEsn(esn);
  setLifetime(p.initSoft(), m.lifetime(SADB_EXT_LIFETIME_SOFT));
  setLifetime(p.initHard(), m.lifetime(SADB_EXT_LIFETIME_HARD));
  if (int err = setNatT(p, satype, m, *src)) return err;
  if (int err = setSaOptions(p, satype, m, *src)) return err;
  auto keys = add.initKeys();
  if (encKey) keys.setEncrypt(capnp::Data::Reader(encKey->bytes.data(), encKey->bytes.size()));
  if (authKey) keys.setAuth(capnp::Data::Reader(authKey->bytes.data(), authKey->bytes.size()));
  const int err = sendToKeydb(c, m.msg(), b, id);
  control::wipeMessage(b);  // the datagram itself is wiped by handleDatagram
  return err;
}

int Server::onDeleteOrGet(Client* c, const pfkey::ParsedMessage& m) {
  const std::uint8_t satype = m.msg().sadb_msg_satype;
  if (!ipsecSatype(satype)) return EINVAL;
  const auto sa = m.sa();
  const auto src = m.address(SADB_EXT_ADDRESS_SRC);
  const auto dst = m.address(SADB_EXT_ADDRESS_DST);
  if (!sa || !src || !dst || src->addr.family != dst->addr.family) return EINVAL;
  control::ScratchMessageBuilder<kOneSaMessageWords> b;
  const std::uint64_t id = newRequestId();
  auto req = b.initRoot<proto::PolicyToKeydb>();
  req.setRequestId(id);
  auto name = m.msg().sadb_msg_type == SADB_GET ? req.initGet() : req.initDelete();
  name.setSatype(satype);
  name.setSpi(ntohl(sa->sadb_sa_spi));
  name.setSrc(raw(src->addr));
  name.setDst(raw(dst->addr));
  return sendToKeydb(c, m.msg(), b, id);
}

int Server::onFlush(Client* c, const pfkey::ParsedMessage& m) {
  const std::uint8_t satype = m.msg().sadb_msg_satype;
  if (satype != SADB_SATYPE_UNSPEC && !ipsecSatype(satype)) return EINVAL;
  control::ScratchMessageBuilder<kOneSaMessageWords> b;
  const std::uint64_t id = newRequestId();
  auto req = b.initRoot<proto::PolicyToKeydb>();
  req.setRequestId(id);
  if (m.msg().sadb_msg_type == SADB_FLUSH) {
    req.setFlush(satype);
  } else {
    req.setDump(satype);
  }
  return sendToKeydb(c, m.msg(), b, id);
}

int Server::onDump(Client* c, const pfkey::ParsedMessage& m) {
  const int err = onFlush(c, m);
  if (err == 0 && c) c->sadDumpRunning = true;
  return err;
}

int Server::onGetSpi(Client* c, const pfkey::ParsedMessage& m) {
  const std::uint8_t satype = m.msg().sadb_msg_satype;
  if (!ipsecSatype(satype)) return EINVAL;
  const auto src = m.address(SADB_EXT_ADDRESS_SRC);
  const auto dst = m.address(SADB_EXT_ADDRESS_DST);
  if (!src || !dst || src->addr.family != dst->addr.family) return EINVAL;
  std::uint32_t min = kDefaultSpiMin, max = kDefaultSpiMax;
  if (auto r = m.spirange()) {
    min = r->sadb_spirange_min;
    max = r->sadb_spirange_max;
  }
  // net.key.spi_minval/spi_maxval clamp every range; nothing left is EINVAL.
  min = std::max(min, spiMin_);
  max = std::min(max, spiMax_);
  if (min > max || max == 0) return EINVAL;
  auto sa2 = m.sa2();
  // As Linux's pfkey_getspi: a seq naming a pending ACQUIRE with this
  // destination gives the SPI to that acquire's SA (its mode and reqid).
  if (!sa2 && m.msg().sadb_msg_seq != 0) {
    for (const auto& a : acquires_) {
      if (a.seq == m.msg().sadb_msg_seq && a.satype == satype && a.dst.sameAddress(dst->addr)) {
        sadb_x_sa2 from{};
        from.sadb_x_sa2_mode = a.mode;
        from.sadb_x_sa2_reqid = a.reqid;
        sa2 = from;
        break;
      }
    }
  }
  control::ScratchMessageBuilder<kOneSaMessageWords> b;
  const std::uint64_t id = newRequestId();
  auto req = b.initRoot<proto::PolicyToKeydb>();
  req.setRequestId(id);
  auto g = req.initGetSpi();
  g.setSatype(satype);
  g.setSrc(raw(src->addr));
  g.setDst(raw(dst->addr));
  g.setMin(min);
  g.setMax(max);
  g.setMode(sa2 ? sa2->sadb_x_sa2_mode : std::uint8_t{IPSEC_MODE_ANY});
  g.setReqid(sa2 ? sa2->sadb_x_sa2_reqid : 0);
  return sendToKeydb(c, m.msg(), b, id);
}

int Server::onPromisc(Client* c, const pfkey::ParsedMessage& m) {
  const std::uint8_t on = m.msg().sadb_msg_satype;
  if (on > 1) return EINVAL;
  if (c) c->promiscuous = on == 1;
  // Linux broadcasts the request itself to every socket.
  auto bytes = m.bytes();
  deliver(std::vector<std::uint8_t>(bytes.begin(), bytes.end()), Audience::kAll, nullptr);
  return 0;
}

// ---- keydb --------------------------------------------------------------------------

bool Server::onKeydb(capnp::MessageReader& m, std::vector<UniqueFd>& fds) {
  if (!fds.empty()) return false;
  // An answer queued behind a full socket is not held: without this scope no
  // acknowledgement would follow it and the preload would wait its 5 s.
  SendHold hold(*this);
  auto msg = m.getRoot<proto::KeydbToPolicy>();
  switch (msg.which()) {
    case proto::KeydbToPolicy::REPLY: return onKeydbReply(msg.getReply());
    case proto::KeydbToPolicy::EXPIRE: return onKeydbExpire(msg.getExpire());
    case proto::KeydbToPolicy::OUTBOUND_MARKED: return onOutboundMarked(msg.getOutboundMarked());
  }
  return false;
}

bool Server::onKeydbReply(proto::SadReply::Reader r) {
  if (auto nat = natChecks_.extract(r.getRequestId())) return onNatMappingChecked(nat.mapped(), r);
  auto it = pending_.find(r.getRequestId());
  if (it == pending_.end()) {
    log::error("keydb answered request {}, which was never asked", r.getRequestId());
    return false;
  }
  if (it->second.awaitsMark) {
    log::error("keydb answered outbound marks {} with a SAD reply", r.getRequestId());
    return false;
  }
  const bool isDump = it->second.request.sadb_msg_type == SADB_DUMP;
  if (r.getMore() && (!isDump || r.getErrno() != 0)) {
    log::error("keydb sent a continued reply to request {}, which is no dump", r.getRequestId());
    return false;
  }
  Pending p = std::move(it->second);
  if (r.getMore()) {
    it->second.request = p.request;  // keep waiting for the rest
    it->second.clientId = p.clientId;
  } else {
    pending_.erase(it);
  }
  Client* c = findClient(p.clientId);
  if (c && isDump && !r.getMore()) c->sadDumpRunning = false;
  auto sas = r.getSas();
  // Whatever happens below, keys in this message must not outlive it.
  struct WipeKeys {
    capnp::List<proto::SaRecord>::Reader list;
    ~WipeKeys() {
      for (auto s : list) {
        if (!s.hasKeys()) continue;
        wipe(s.getKeys().getEncrypt());
        wipe(s.getKeys().getAuth());
      }
    }
  } wipeKeys{sas};

  // An empty SAD is no error for a dump that has pending ACQUIREs to show.
  const bool emptyDump = isDump && r.getErrno() == ENOENT;
  if (r.getErrno() != 0 && !emptyDump) {
    if (r.getErrno() > 255) return false;
    replyError(c, p.request, r.getErrno());
    return true;
  }
  const std::uint8_t type = p.request.sadb_msg_type;
  const sadb_msg header = replyHeader(p.request);
  auto one = [&](SaMessage kind, Audience to, Client* who) {
    if (sas.size() != 1) return false;
    auto bytes = saMessage(header, sas[0], kind);
    if (!bytes) return false;
    deliver(std::move(*bytes), to, who);
    return true;
  };
  switch (type) {
    case SADB_ADD:
    case SADB_UPDATE:
      if (sas.size() == 1) {
        // The SA answers any ACQUIRE pending for it (xfrm_state_add drops the acquire state).
        auto sp = sas[0].getParams();
        auto s = addressFrom(sp.getSrc());
        auto d = addressFrom(sp.getDst());
        if (s && d) completeAcquires(sp.getSatype(), *s, *d, sp.getMode(), sp.getReqid());
      }
      return one(SaMessage::kState, Audience::kAll, nullptr);
    case SADB_DELETE: return one(SaMessage::kState, Audience::kAll, nullptr);
    case SADB_GET: return one(SaMessage::kStateWithKeys, Audience::kOne, c);
    case SADB_GETSPI: return one(SaMessage::kState, Audience::kOne, c);
    case SADB_X_MIGRATE: return onMigrateDone(p);
    case SADB_FLUSH:
      // As Linux: the requester always gets a header reply, and every socket
      // hears of the flush only if something was flushed.
      deliver(pfkey::Builder(header).finish(), Audience::kOne, c);
      if (sas.size() != 0) deliver(pfkey::Builder(header).finish(), Audience::kAll, nullptr);
      return true;
    case SADB_DUMP: {
      // One message per SA, seq 1, 2, ... and 0 on the last (Linux's dump_sa).
      // keydb sends the SAs in chunks; the latest entry waits in heldBack
      // until the next one (or the end) says whether it is the last.
      for (auto sa : sas) {
        sadb_msg h = header;
        h.sadb_msg_seq = ++p.dumped;
        auto bytes = saMessage(h, sa, SaMessage::kStateWithKeys);
        if (!bytes) return false;
        if (!p.heldBack.empty()) deliverDump(c, std::move(p.heldBack));
        p.heldBack = std::move(*bytes);
      }
      if (r.getMore()) {
        auto& still = pending_.at(r.getRequestId());
        still.dumped = p.dumped;
        still.heldBack = std::move(p.heldBack);
        return true;
      }
      // After keydb's SAs, the pending ACQUIREs (policy owns them), each as
      // the larval SA with SPI 0 Linux's dump shows.
      const std::uint8_t want = p.request.sadb_msg_satype;
      for (const auto& a : acquires_) {
        if (want != SADB_SATYPE_UNSPEC && a.satype != want) continue;
        sadb_msg h = header;
        h.sadb_msg_seq = ++p.dumped;
        auto bytes = acquireMessage(h, a.satype, a.src, a.dst, a.mode, a.reqid, a.created, larvalLifetime_);
        if (!p.heldBack.empty()) deliverDump(c, std::move(p.heldBack));
        p.heldBack = std::move(bytes);
      }
      if (p.heldBack.empty()) {
        replyError(c, p.request, ENOENT);
        return true;
      }
      sadb_msg last{};
      std::memcpy(&last, p.heldBack.data(), sizeof last);
      last.sadb_msg_seq = 0;
      std::memcpy(p.heldBack.data(), &last, sizeof last);
      deliverDump(c, std::move(p.heldBack));
      return true;
    }
  }
  return false;
}

bool Server::onKeydbExpire(proto::Expire::Reader e) {
  ++counters_.pfkey_expires;
  sadb_msg h{};
  h.sadb_msg_version = PF_KEY_V2;
  h.sadb_msg_type = SADB_EXPIRE;
  h.sadb_msg_len = 2;
  auto bytes = saMessage(h, e.getRecord(), e.getHard() ? SaMessage::kExpireHard : SaMessage::kExpireSoft);
  if (!bytes) return false;
  deliver(std::move(*bytes), Audience::kRegistered, nullptr);
  return true;
}

}  // namespace ipsec::policy
