// See server.h. This file: the forwarder's NAT mapping reports (an ESP-in-UDP
// SA's peer now sends from another address or port, RFC 3947/3948), which
// key managers hear as SADB_X_NAT_T_NEW_MAPPING and act on by moving the SA.
//
// Trust: the forwarder parses the network and may be compromised. A report it
// makes up would have a key manager move an SA's peer to an address of the
// attacker's choosing, or flood every registered socket; so a report passes
// only (1) within its rate (one per SA per kNatMappingIntervalMs, at most
// kNatMappingsPerSecond overall, checked before keydb is asked, so a flood
// costs keydb nothing), and (2) if keydb has the SA (ESP, SPI, dst), it is
// UDP-encapsulated and the old endpoint the report names is the SA's
// (address and both ports). Each refusal is counted under its reason. A
// report that is malformed (not ESP, bad addresses) closes the channel.

#include <cerrno>
#include <cstring>

#include "clock/clock.h"
#include "log/log.h"
#include "pfkey/builder.h"
#include "server.h"
#include "stats/drop.h"
#include "wire_address.h"

namespace ipsec::policy {

bool Server::onNatMapping(proto::NatMapping::Reader n) {
  auto oldSrc = addressFrom(n.getSrc());
  auto dst = addressFrom(n.getDst());
  auto newSrc = addressFrom(n.getNewSrc());
  if (n.getSatype() != SADB_SATYPE_ESP || !oldSrc || !dst || !newSrc || oldSrc->family != newSrc->family ||
      dst->family != oldSrc->family) {
    return false;
  }
  NatReport r{n.getSpi(), *oldSrc, *dst, *newSrc, n.getSport(), n.getDport(), n.getNewSport()};
  if (!natMappingAdmitted(r)) return true;
  capnp::MallocMessageBuilder b;
  const std::uint64_t id = newRequestId();
  auto req = b.initRoot<proto::PolicyToKeydb>();
  req.setRequestId(id);
  auto name = req.initLookup();
  name.setSatype(SADB_SATYPE_ESP);
  name.setSpi(r.spi);
  name.setSrc(raw(r.oldSrc));
  name.setDst(raw(r.dst));
  if (keydb_->send(b) == control::Channel::SendResult::kClosed) return true;  // onPeerLost fails closed
  natChecks_.emplace(id, r);
  return true;
}

bool Server::natMappingAdmitted(const NatReport& r) {
  const std::uint64_t t = clock::monotonicMs();
  const auto sa = std::make_pair(r.spi, r.dst.bytes);
  auto last = natLastMs_.find(sa);
  if (last != natLastMs_.end() && t - last->second < kNatMappingIntervalMs) {
    ++counters_.pfkey_nat_mapping_refused_rate_limited_sa;
    return false;
  }
  if (t - natWindowStartMs_ >= 1000) {
    natWindowStartMs_ = t;
    natInWindow_ = 0;
    // Entries past the interval limit nothing: the map holds at most two
    // windows' worth of admitted reports.
    std::erase_if(natLastMs_, [t](const auto& e) { return t - e.second >= kNatMappingIntervalMs; });
  }
  // natChecks_ stays below a second's worth too, whatever keydb's pace.
  if (natInWindow_ >= kNatMappingsPerSecond || natChecks_.size() >= kNatMappingsPerSecond) {
    ++counters_.pfkey_nat_mapping_refused_rate_limited;
    return false;
  }
  ++natInWindow_;
  natLastMs_[sa] = t;
  return true;
}

bool Server::onNatMappingChecked(const NatReport& r, proto::SadReply::Reader reply) {
  if (reply.getMore()) return false;  // a lookup is answered in one message
  if (reply.getErrno() != 0) {
    stats::drop(counters_.pfkey_nat_mapping_refused_no_sa, "NAT mapping for SPI {:#x}: no such SA", r.spi);
    return true;
  }
  if (reply.getSas().size() != 1) return false;
  auto p = reply.getSas()[0].getParams();
  if (p.getNatTType() == 0) {
    stats::drop(counters_.pfkey_nat_mapping_refused_not_encap, "NAT mapping for SPI {:#x}: the SA is not UDP-encapsulated", r.spi);
    return true;
  }
  auto saSrc = addressFrom(p.getSrc());
  if (!saSrc || !saSrc->sameAddress(r.oldSrc) || p.getNatTSport() != r.sport || p.getNatTDport() != r.dport) {
    stats::drop(counters_.pfkey_nat_mapping_refused_wrong_endpoint, "NAT mapping for SPI {:#x}: the old endpoint is not the SA's", r.spi);
    return true;
  }
  // Linux's pfkey_send_new_mapping: HDR | SA (SPI only) | ADDRESS_SRC (the
  // SA's peer as installed) | NAT_T_SPORT (its port) | ADDRESS_DST (where
  // the packet really came from) | NAT_T_DPORT (that port), a fresh
  // acquire seq, pid 0, to registered sockets.
  ++counters_.pfkey_nat_mappings;
  pfkey::Builder b(SADB_X_NAT_T_NEW_MAPPING, SADB_SATYPE_ESP, ++acquireSeq_, 0);
  b.sa(pfkey::SaFields{r.spi, 0, 0, 0, 0, 0});
  b.address(SADB_EXT_ADDRESS_SRC, r.oldSrc, r.oldSrc.fullPrefix(), 0);
  b.natTPort(SADB_X_EXT_NAT_T_SPORT, r.sport);
  b.address(SADB_EXT_ADDRESS_DST, r.newSrc, r.newSrc.fullPrefix(), 0);
  b.natTPort(SADB_X_EXT_NAT_T_DPORT, r.newSport);
  deliver(b.finish(), Audience::kRegistered, nullptr);
  return true;
}

}  // namespace ipsec::policy
