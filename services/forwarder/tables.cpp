// See tables.h.
#include "tables.h"

#include <linux/ipsec.h>

#include <algorithm>
#include <cstring>

namespace ipsec::forwarder {

std::optional<esp::IpAddress> addressFrom(capnp::Data::Reader bytes) {
  if (bytes.size() == 4) return esp::IpAddress::v4(std::span<const uint8_t, 4>(bytes.begin(), 4));
  if (bytes.size() == 16) return esp::IpAddress::v6(std::span<const uint8_t, 16>(bytes.begin(), 16));
  return std::nullopt;
}

std::optional<std::string> SaTable::install(proto::SaInstall::Reader msg) {
  auto p = msg.getParams();
  auto src = addressFrom(p.getSrc());
  auto dst = addressFrom(p.getDst());
  if (!src || !dst || src->family() != dst->family()) return "SA with bad addresses";
  esp::EspLayout layout{p.getIvLength(), p.getIcvLength(), p.getPadAlign()};
  if (!layout.valid()) return "SA with a bad ESP layout";
  Sa sa;
  sa.ref = {msg.getSa().getIndex(), msg.getSa().getGeneration()};
  sa.spi = p.getSpi();
  sa.satype = p.getSatype();
  sa.mode = p.getMode();
  sa.reqid = p.getReqid();
  sa.src = *src;
  sa.dst = *dst;
  sa.layout = layout;
  sa.esn = p.getEsn();
  sa.seqNext = msg.getSeqNext();
  sa.seqLimit = msg.getSeqLimit();
  if (sa.seqNext == 0 || sa.seqLimit < sa.seqNext) return "SA with a bad sequence grant";
  if (uint32_t w = p.getReplayWindow(); w != 0) {
    // Windows below the minimum round up: a larger window never accepts a
    // replay, it only tolerates more reordering.
    uint32_t size = std::max<uint32_t>(esp::ReplayWindow::kMinSize, (w + 31) / 32 * 32);
    sa.replay = esp::ReplayWindow::make(size, sa.esn);
    if (!sa.replay) return "SA with an unsupported replay window";
  }
  if (sa.ref.index >= (1u << 20)) return "SA index out of range";
  if (slots_.size() <= sa.ref.index) slots_.resize(sa.ref.index + 1);
  auto& slot = slots_[sa.ref.index];
  if (slot) remove(slot->ref);
  sa.installOrder = nextOrder_++;
  bySpi_.emplace(sa.spi, sa.ref.index);
  slot = std::move(sa);
  ++version_;
  return std::nullopt;
}

void SaTable::remove(SaRef ref) {
  if (ref.index >= slots_.size() || !slots_[ref.index] || slots_[ref.index]->ref != ref) return;
  auto range = bySpi_.equal_range(slots_[ref.index]->spi);
  for (auto it = range.first; it != range.second; ++it) {
    if (it->second == ref.index) {
      bySpi_.erase(it);
      break;
    }
  }
  slots_[ref.index].reset();
  ++version_;
}

void SaTable::clear() {
  slots_.clear();
  bySpi_.clear();
  ++version_;
}

Sa* SaTable::find(SaRef ref) noexcept {
  if (ref.index >= slots_.size() || !slots_[ref.index] || slots_[ref.index]->ref != ref) return nullptr;
  return &*slots_[ref.index];
}

Sa* SaTable::findInbound(uint32_t spi, const esp::IpAddress& dst) noexcept {
  auto range = bySpi_.equal_range(spi);
  for (auto it = range.first; it != range.second; ++it) {
    Sa& sa = *slots_[it->second];
    if (sa.dst == dst) return &sa;
  }
  return nullptr;
}

Sa* SaTable::selectOutbound(const esp::IpAddress& src, const esp::IpAddress& dst, uint32_t reqid) noexcept {
  Sa* best = nullptr;
  for (auto& s : slots_) {
    if (!s || s->src != src || s->dst != dst) continue;
    if (reqid != 0 && s->reqid != reqid) continue;
    if (!best || s->installOrder > best->installOrder) best = &*s;
  }
  return best;
}

bool Selector::matches(const esp::FlowKey& flow) const noexcept {
  if (src.address.family() != flow.src.family()) return false;
  if (!src.contains(flow.src) || !dst.contains(flow.dst)) return false;
  if (proto != 255 && proto != flow.proto) return false;
  // Port selectors need a first fragment; a later fragment has no ports.
  if ((srcPort != 0 || dstPort != 0) && flow.nonInitialFragment) return false;
  if (srcPort != 0 && srcPort != flow.srcPort) return false;
  if (dstPort != 0 && dstPort != flow.dstPort) return false;
  return true;
}

std::optional<std::string> Spd::add(proto::Policy::Reader msg) {
  auto sel = msg.getSelector();
  auto src = addressFrom(sel.getSrc());
  auto dst = addressFrom(sel.getDst());
  if (!src || !dst || src->family() != dst->family()) return "policy with bad selector addresses";
  Policy p;
  p.id = msg.getId();
  p.dir = msg.getDir();
  p.action = msg.getAction();
  p.priority = msg.getPriority();
  auto sp = esp::Prefix::make(*src, sel.getSrcPrefix());
  auto dp = esp::Prefix::make(*dst, sel.getDstPrefix());
  if (!sp || !dp) return "policy with a bad prefix length";
  p.selector = {*sp, *dp, sel.getProto(), sel.getSrcPort(), sel.getDstPort()};
  for (auto r : msg.getRequests()) {
    Request q{r.getProto(), r.getMode(), r.getLevel(), r.getReqid(), {}, {}};
    if (r.getTunnelSrc().size() != 0 || r.getTunnelDst().size() != 0) {
      q.tunnelSrc = addressFrom(r.getTunnelSrc());
      q.tunnelDst = addressFrom(r.getTunnelDst());
      if (!q.tunnelSrc || !q.tunnelDst) return "policy with bad tunnel addresses";
    }
    p.requests.push_back(q);
  }
  remove(p.id);
  p.order = nextOrder_++;
  auto pos = std::upper_bound(policies_.begin(), policies_.end(), p, [](const Policy& a, const Policy& b) {
    return a.priority != b.priority ? a.priority < b.priority : a.order < b.order;
  });
  policies_.insert(pos, std::move(p));
  return std::nullopt;
}

void Spd::remove(uint32_t id) {
  std::erase_if(policies_, [id](const Policy& p) { return p.id == id; });
}

void Spd::clear() { policies_.clear(); }

const Policy* Spd::lookup(uint8_t dir, const esp::FlowKey& flow) const noexcept {
  for (const auto& p : policies_) {
    if (p.dir == dir && p.selector.matches(flow)) return &p;
  }
  return nullptr;
}

}  // namespace ipsec::forwarder
