// See sa_table.h.
#include "sa_table.h"

#include <algorithm>

namespace ipsec::forwarder {

std::optional<esp::IpAddress> addressFrom(capnp::Data::Reader bytes) {
  if (bytes.size() == 4) return esp::IpAddress::v4(std::span<const uint8_t, 4>(bytes.begin(), 4));
  if (bytes.size() == 16) return esp::IpAddress::v6(std::span<const uint8_t, 16>(bytes.begin(), 16));
  return std::nullopt;
}

// Moves a window's history into a fresh one. The same size and ESN flag: the
// window itself. Otherwise the new window starts at the old top with every
// number it covers marked seen: a late packet that was never received is
// dropped (as a replay) rather than a received one accepted twice.
void SaTable::carryReplayHistory(const esp::ReplayWindow& from, esp::ReplayWindow& to) {
  if (from.size() == to.size() && from.esn() == to.esn()) {
    to = from;
    return;
  }
  const std::uint64_t top = from.highest();
  const std::uint64_t span = std::min<std::uint64_t>(top, to.size());
  for (std::uint64_t seq = top - span + 1; seq <= top && span != 0; ++seq) to.accept(seq);
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
  uint32_t w = p.getReplayWindow();
  if (w == 0 && !sa.esn) w = defaultReplayWindow_;
  if (w != 0) {
    // Windows below the minimum round up: a larger window never accepts a
    // replay, it only tolerates more reordering.
    uint32_t size = std::max<uint32_t>(esp::ReplayWindow::kMinSize, (w + 31) / 32 * 32);
    sa.replay = esp::ReplayWindow::make(size, sa.esn);
    if (!sa.replay) return "SA with an unsupported replay window";
  }
  if (sa.ref.index >= (1u << 20)) return "SA index out of range";
  if (slots_.size() <= sa.ref.index) slots_.resize(sa.ref.index + 1);
  auto& slot = slots_[sa.ref.index];
  if (slot && slot->ref == sa.ref && slot->spi == sa.spi && slot->satype == sa.satype) {
    // The same SA installed again (X_MIGRATE gives it new addresses): what
    // it has already accepted stays accepted, or every packet in flight
    // before the move could be replayed after it; and its usage goes on
    // counting towards its lifetimes (keydb reads the totals).
    if (slot->replay && sa.replay) carryReplayHistory(*slot->replay, *sa.replay);
    sa.counters = slot->counters;
    sa.firstUse = slot->firstUse;
  }
  if (slot) remove(slot->ref);
  sa.installOrder = nextOrder_++;
  bySpi_.emplace(sa.spi, sa.ref.index);
  slot = std::move(sa);
  ++version_;
  return std::nullopt;
}

void SaTable::setDefaultReplayWindow(std::int64_t packets) noexcept {
  defaultReplayWindow_ = static_cast<std::uint32_t>(
      std::clamp<std::int64_t>(packets, 0, esp::ReplayWindow::kMaxSize));
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

Sa* SaTable::findInbound(uint8_t satype, uint32_t spi, const esp::IpAddress& dst) noexcept {
  auto range = bySpi_.equal_range(spi);
  for (auto it = range.first; it != range.second; ++it) {
    Sa& sa = *slots_[it->second];
    if (sa.satype == satype && sa.dst == dst) return &sa;
  }
  return nullptr;
}

Sa* SaTable::selectOutbound(uint8_t satype, const esp::IpAddress& src, const esp::IpAddress& dst,
                            uint32_t reqid) noexcept {
  Sa* best = nullptr;
  for (auto& s : slots_) {
    if (!s || s->satype != satype || s->src != src || s->dst != dst) continue;
    if (reqid != 0 && s->reqid != reqid) continue;
    if (!best || s->installOrder > best->installOrder) best = &*s;
  }
  return best;
}

}  // namespace ipsec::forwarder
