// ipsec-forwarder: the tunnel details of each SA and the path-MTU settings
// (tunnel_options.h).
#include "tunnel_options.h"

#include <algorithm>

namespace ipsec::forwarder {

TunnelOptions *TunnelOptionsTable::of(const Sa &sa) noexcept {
  if (sa.ref.index >= bySlot_.size()) return nullptr;
  TunnelOptions &t = bySlot_[sa.ref.index];
  return t.present && t.generation == sa.ref.generation ? &t : nullptr;
}

void TunnelOptionsTable::install(SaRef ref, proto::SaParams::Reader p) {
  if (ref.index >= bySlot_.size()) bySlot_.resize(ref.index + 1);
  bySlot_[ref.index] =
      TunnelOptions{true, ref.generation, p.getDfPolicy(), p.getMtu(), p.getTfcPad(), p.getDummyInterval(), false, 0};
}

void TunnelOptionsTable::remove(SaRef ref) noexcept {
  if (ref.index < bySlot_.size() && bySlot_[ref.index].generation == ref.generation) bySlot_[ref.index] = {};
}

void TunnelOptionsTable::setDefaultMtu(std::int64_t value) noexcept {
  defaultMtu_ = value <= 0 ? 1500 : static_cast<std::size_t>(std::min<std::int64_t>(value, 65535));
}

std::size_t TunnelOptionsTable::pathMtu(const Sa &sa) const noexcept {
  const TunnelOptions *t = of(sa);
  const std::size_t mtu = t && t->mtu != 0 ? t->mtu : defaultMtu_;
  return std::max(mtu, sa.dst.isV4() ? kIpv4MinMtu : kIpv6MinMtu);
}

TunnelFacts TunnelOptionsTable::facts(const Sa &sa, bool natT) const noexcept {
  const TunnelOptions *t = of(sa);
  return {pathMtu(sa), outerOverhead(sa, natT), t ? t->dfPolicy : std::uint8_t{0}, dfbit_,
          t ? std::uint32_t{t->tfcPad} : 0u};
}

}  // namespace ipsec::forwarder
