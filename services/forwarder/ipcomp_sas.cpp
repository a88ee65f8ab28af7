// ipsec-forwarder: the IPComp SA table (ipcomp_sas.h). Installs come from
// keydb (a trusted peer) but are checked for shape all the same.
#include "ipcomp_sas.h"

#include <linux/pfkeyv2.h>

#include "log/log.h"

namespace ipsec::forwarder {

bool IpcompSas::isInstall(proto::SaInstall::Reader msg) noexcept {
  return msg.getParams().getSatype() == SADB_X_SATYPE_IPCOMP;
}

bool IpcompSas::install(proto::SaInstall::Reader msg) {
  auto p = msg.getParams();
  auto src = addressFrom(p.getSrc());
  auto dst = addressFrom(p.getDst());
  if (!src || !dst || src->family() != dst->family() || p.getSpi() > 0xffff) return false;
  const SaRef ref{msg.getSa().getIndex(), msg.getSa().getGeneration()};
  remove(ref);
  sas_.push_back({ref, static_cast<std::uint16_t>(p.getSpi()), p.getMode(), p.getReqid(), *src, *dst, nextOrder_++});
  if (!compressor_) compressor_ = std::make_unique<ipcomp::Compressor>();
  if (!decompressor_) decompressor_ = std::make_unique<ipcomp::Decompressor>();
  log::debug("IPComp SA installed: CPI {:#x} {} -> {}", p.getSpi(), src->toString(), dst->toString());
  return true;
}

bool IpcompSas::remove(SaRef ref) noexcept {
  return std::erase_if(sas_, [&](const IpcompSa& s) { return s.ref == ref; }) != 0;
}

const IpcompSa* IpcompSas::select(const esp::IpAddress& src, const esp::IpAddress& dst,
                                  std::uint32_t reqid) const noexcept {
  const IpcompSa* best = nullptr;
  for (const auto& s : sas_) {
    if (s.src != src || s.dst != dst || (reqid != 0 && s.reqid != reqid)) continue;
    if (!best || s.order > best->order) best = &s;
  }
  return best;
}

bool IpcompSas::knows(std::uint16_t cpi, const esp::IpAddress& src, const esp::IpAddress& dst) const noexcept {
  for (const auto& s : sas_) {
    if (s.cpi == cpi && s.src == src && s.dst == dst) return true;
  }
  return false;
}

}  // namespace ipsec::forwarder
