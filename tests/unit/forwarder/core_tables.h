// Test support for ipsec-forwarder: building the tables the packet core borrows from plain
// values, as keydb's and policy's messages would fill them — for the core's
// unit tests and fuzz targets (tests/unit/forwarder, tests/fuzz/forwarder),
// which drive it without the processes that send those messages.
#pragma once

#include <linux/ipsec.h>
#include <linux/pfkeyv2.h>

#include <capnp/message.h>

#include <initializer_list>
#include <optional>
#include <string>

#include "ipcomp_sas.h"
#include "tables.h"

namespace ipsec::forwarder::core_tables {

inline capnp::Data::Reader bytesOf(const esp::IpAddress& a) { return {a.bytes().data(), a.bytes().size()}; }

struct SaValues {
  std::uint32_t index = 0;
  std::uint8_t satype = SADB_SATYPE_ESP;
  std::uint32_t spi = 0;
  std::uint8_t mode = IPSEC_MODE_TUNNEL;
  esp::IpAddress src, dst;
  esp::EspLayout layout{8, 16, 4};
  std::uint64_t seqNext = 1, seqLimit = 1000;
  std::uint32_t reqid = 0;
};

// An IPComp SA between src and dst as keydb installs it (no session: the
// forwarder keeps it, ipcomp_sas.h); false when the table refused it.
inline bool installIpcompSa(IpcompSas& sas, std::uint32_t index, std::uint32_t cpi, const esp::IpAddress& src,
                            const esp::IpAddress& dst, std::uint32_t reqid = 0,
                            std::uint8_t mode = IPSEC_MODE_TUNNEL) {
  capnp::MallocMessageBuilder b;
  auto m = b.initRoot<proto::SaInstall>();
  m.initSa().setIndex(index);
  m.getSa().setGeneration(1);
  auto p = m.initParams();
  p.setSatype(SADB_X_SATYPE_IPCOMP);
  p.setSpi(cpi);
  p.setMode(mode);
  p.setReqid(reqid);
  p.setSrc(bytesOf(src));
  p.setDst(bytesOf(dst));
  return sas.install(m.asReader());
}

// nullopt, or keydb's install refused (a wrong fixture).
inline std::optional<std::string> installSa(SaTable& sas, const SaValues& v) {
  capnp::MallocMessageBuilder b;
  auto m = b.initRoot<proto::SaInstall>();
  m.initSa().setIndex(v.index);
  m.getSa().setGeneration(1);
  auto p = m.initParams();
  p.setSatype(v.satype);
  p.setSpi(v.spi);
  p.setMode(v.mode);
  p.setSrc(bytesOf(v.src));
  p.setDst(bytesOf(v.dst));
  p.setReqid(v.reqid);
  p.setIvLength(v.layout.ivLength);
  p.setIcvLength(v.layout.icvLength);
  p.setPadAlign(v.layout.padAlign);
  p.setReplayWindow(64);
  m.setSeqNext(v.seqNext);
  m.setSeqLimit(v.seqLimit);
  return sas.install(m.asReader());
}

struct PolicyValues {
  std::uint32_t id = 0;
  std::uint8_t dir = IPSEC_DIR_OUTBOUND;
  std::uint8_t action = IPSEC_POLICY_IPSEC;
  esp::Prefix src, dst;
  std::initializer_list<Request> requests;
};

inline std::optional<std::string> addPolicy(Spd& spd, const PolicyValues& v) {
  capnp::MallocMessageBuilder b;
  auto m = b.initRoot<proto::Policy>();
  m.setId(v.id);
  m.setDir(v.dir);
  m.setAction(v.action);
  auto s = m.initSelector();
  s.setSrc(bytesOf(v.src.address));
  s.setSrcPrefix(v.src.length);
  s.setDst(bytesOf(v.dst.address));
  s.setDstPrefix(v.dst.length);
  s.setProto(255);
  auto rs = m.initRequests(static_cast<unsigned>(v.requests.size()));
  unsigned i = 0;
  for (const Request& r : v.requests) {
    auto q = rs[i++];
    q.setProto(r.proto);
    q.setMode(r.mode);
    q.setLevel(r.level);
    q.setReqid(r.reqid);
    if (r.tunnelSrc) q.setTunnelSrc(bytesOf(*r.tunnelSrc));
    if (r.tunnelDst) q.setTunnelDst(bytesOf(*r.tunnelDst));
  }
  return spd.add(m.asReader());
}

}  // namespace ipsec::forwarder::core_tables
