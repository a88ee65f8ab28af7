// setkey commands → PF_KEY request bytes, laid out as ipsec-tools' setkey
// lays them out on Linux (the corpus .bin captures are the reference): keys
// first, then SA, SA2, NAT-T type, lifetimes, addresses, NAT-T ports; for
// policies X_POLICY, then SRC, DST.
#include "setkey/command.h"

#include <netinet/in.h>

#include <algorithm>

#include "pfkey/message.h"

namespace ipsec::setkey {
namespace {

using pfkey::Builder;

uint8_t fullPrefix(const pfkey::SockAddress& a) { return a.fullPrefix(); }

void addSaAddresses(Builder& b, const SaSpec& s) {
  b.address(SADB_EXT_ADDRESS_SRC, s.src, fullPrefix(s.src), IPSEC_ULPROTO_ANY);
  b.address(SADB_EXT_ADDRESS_DST, s.dst, fullPrefix(s.dst), IPSEC_ULPROTO_ANY);
}

std::vector<uint8_t> saAddRequest(const Command& c, uint8_t type, uint32_t pid) {
  const SaSpec& s = c.sa;
  Builder b(type, c.satype, 0, pid);
  if (c.satype == SADB_SATYPE_ESP) {
    // setkey always sends KEY_ENCRYPT for ESP, with 0 bits for null.
    b.key(SADB_EXT_KEY_ENCRYPT, static_cast<uint16_t>(s.encryptKey.size() * 8), s.encryptKey);
  }
  if (s.auth) b.key(SADB_EXT_KEY_AUTH, static_cast<uint16_t>(s.authKey.size() * 8), s.authKey);
  pfkey::SaFields f;
  f.spi = s.spi;
  f.replay = static_cast<uint8_t>(std::min<uint32_t>(s.replay, 255));
  f.state = SADB_SASTATE_LARVAL;
  f.auth = s.auth ? s.auth->id : SADB_AALG_NONE;
  f.encrypt = s.compress ? s.compress->id : s.encrypt ? s.encrypt->id : SADB_EALG_NONE;
  f.flags = s.flags;
  b.sa(f);
  b.sa2(s.mode, s.reqid);
  if (s.replay > 255) b.saReplay(s.replay);
  if (s.options.any()) b.saOptions(s.options);
  if (s.natT) b.natTType(kNatTEspInUdp);
  if (s.hardTime || s.softTime || s.hardBytes || s.softBytes) {
    // Linux wants HARD and SOFT together; an unset one is 0 (infinite).
    b.lifetime(SADB_EXT_LIFETIME_HARD, 0, s.hardBytes, s.hardTime, 0);
    b.lifetime(SADB_EXT_LIFETIME_SOFT, 0, s.softBytes, s.softTime, 0);
  }
  addSaAddresses(b, s);
  if (s.natT) {
    b.natTPort(SADB_X_EXT_NAT_T_SPORT, s.src.port);
    b.natTPort(SADB_X_EXT_NAT_T_DPORT, s.dst.port);
    if (s.natOa) b.address(SADB_X_EXT_NAT_T_OA, *s.natOa, s.natOa->fullPrefix(), IPSEC_ULPROTO_ANY);
  }
  return b.finish();
}

std::vector<uint8_t> saLookupRequest(const Command& c, uint8_t type, uint32_t spi, uint32_t pid) {
  Builder b(type, c.satype, 0, pid);
  pfkey::SaFields f;
  f.spi = spi;
  f.flags = kSaFlagCyclicSeq;
  b.sa(f);
  b.sa2(IPSEC_MODE_ANY, 0);
  addSaAddresses(b, c.sa);
  return b.finish();
}

std::vector<uint8_t> getSpiRequest(const Command& c, uint32_t pid) {
  Builder b(SADB_GETSPI, c.satype, 0, pid);
  b.spirange(c.sa.spi, c.sa.spi);
  pfkey::SaFields f;
  f.spi = c.sa.spi;
  f.flags = kSaFlagCyclicSeq;
  b.sa(f);
  b.sa2(c.sa.mode, c.sa.reqid);
  addSaAddresses(b, c.sa);
  return b.finish();
}

std::vector<uint8_t> spdRequest(const Command& c, uint8_t type, uint8_t dir, uint32_t pid) {
  const SpdSpec& s = c.spd;
  pfkey::PolicyFields p = s.policy;
  p.dir = dir;
  return Builder(type, SADB_SATYPE_UNSPEC, 0, pid)
      .policy(p)
      .address(SADB_EXT_ADDRESS_SRC, s.src, s.srcPrefix, s.upperProto)
      .address(SADB_EXT_ADDRESS_DST, s.dst, s.dstPrefix, s.upperProto)
      .finish();
}

std::vector<std::vector<uint8_t>> spdRequests(const Command& c, uint8_t type, uint32_t pid) {
  std::vector<std::vector<uint8_t>> out;
  out.push_back(spdRequest(c, type, c.spd.policy.dir, pid));
  if (c.spd.policy.dir == IPSEC_DIR_INBOUND) out.push_back(spdRequest(c, type, IPSEC_DIR_FWD, pid));
  return out;
}

std::vector<uint8_t> headerOnly(uint8_t type, uint8_t satype, uint32_t pid) {
  return Builder(type, satype, 0, pid).finish();
}

}  // namespace

std::vector<std::vector<uint8_t>> Command::requests(uint32_t pid) const {
  switch (kind) {
    case CommandKind::kAdd: return {saAddRequest(*this, SADB_ADD, pid)};
    case CommandKind::kUpdate: return {saAddRequest(*this, SADB_UPDATE, pid)};
    case CommandKind::kGet: return {saLookupRequest(*this, SADB_GET, sa.spi, pid)};
    case CommandKind::kDelete: return {saLookupRequest(*this, SADB_DELETE, sa.spi, pid)};
    case CommandKind::kGetSpi: return {getSpiRequest(*this, pid)};
    case CommandKind::kDeleteAll:
    case CommandKind::kDump: return {headerOnly(SADB_DUMP, satype, pid)};
    case CommandKind::kFlush: return {headerOnly(SADB_FLUSH, satype, pid)};
    case CommandKind::kSpdAdd: return spdRequests(*this, SADB_X_SPDADD, pid);
    case CommandKind::kSpdUpdate: return spdRequests(*this, SADB_X_SPDUPDATE, pid);
    case CommandKind::kSpdDelete: return spdRequests(*this, SADB_X_SPDDELETE, pid);
    case CommandKind::kSpdFlush: return {headerOnly(SADB_X_SPDFLUSH, SADB_SATYPE_UNSPEC, pid)};
    case CommandKind::kSpdDump: return {headerOnly(SADB_X_SPDDUMP, SADB_SATYPE_UNSPEC, pid)};
  }
  return {};
}

std::vector<uint8_t> Command::deleteRequest(uint32_t spi, uint32_t pid) const {
  return saLookupRequest(*this, SADB_DELETE, spi, pid);
}

}  // namespace ipsec::setkey
