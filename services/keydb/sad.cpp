// See sad.h.
#include "sad.h"

#include <linux/pfkeyv2.h>
#include <sodium.h>

#include <algorithm>

namespace ipsec::keydb {
namespace {
constexpr std::uint64_t kNoEsnLimit = std::uint64_t{1} << 32;  // exclusive: seq 2^32-1 is the last
}

SaKey Sa::key() const {
  auto d = p().getDst();
  return {p().getSatype(), p().getSpi(), std::string(reinterpret_cast<const char*>(d.begin()), d.size())};
}

bool Sa::larval() const { return p().getState() == SADB_SASTATE_LARVAL; }

Sa* Sad::find(const SaKey& k) {
  auto it = byKey_.find(k);
  return it == byKey_.end() ? nullptr : slots_[it->second].get();
}

Sa* Sad::find(SaRef ref) {
  if (ref.index >= slots_.size() || !slots_[ref.index] || slots_[ref.index]->ref != ref) return nullptr;
  return slots_[ref.index].get();
}

Sa& Sad::create(proto::SaParams::Reader params) {
  std::uint32_t index;
  if (!freeSlots_.empty()) {
    index = freeSlots_.back();
    freeSlots_.pop_back();
  } else {
    index = static_cast<std::uint32_t>(slots_.size());
    slots_.emplace_back();
    generations_.push_back(0);
  }
  auto sa = std::make_unique<Sa>();
  sa->ref = {index, ++generations_[index]};
  sa->ivGranted = randomIvBase();
  // Exactly the words the parameters take (plus the root pointer): an IPv4
  // SA's are ~25 words, and every byte per SA is memory the kernel must
  // fault in and zero (a third of keydb's time in an ADD burst of 100 000).
  // capnp's default first segment (1024 words, 8 KiB) was most of keydb's
  // memory per SA, a fixed 64 still half of it.
  const auto words = static_cast<unsigned>(params.totalSize().wordCount + 1);
  sa->params = std::make_unique<capnp::MallocMessageBuilder>(words);
  sa->params->setRoot(params);
  byKey_[sa->key()] = index;
  slots_[index] = std::move(sa);
  return *slots_[index];
}

void Sad::erase(SaRef ref) {
  Sa* sa = find(ref);
  if (!sa) return;
  byKey_.erase(sa->key());
  slots_[ref.index].reset();
  freeSlots_.push_back(ref.index);
}

std::unique_ptr<Sa> Sad::detach(SaRef ref) {
  Sa* sa = find(ref);
  if (!sa) return nullptr;
  byKey_.erase(sa->key());
  return std::move(slots_[ref.index]);  // the slot stays out of freeSlots_
}

bool Sad::reattach(std::unique_ptr<Sa>& sa) {
  const std::uint32_t index = sa->ref.index;
  if (index >= slots_.size() || slots_[index] || generations_[index] != sa->ref.generation ||
      byKey_.contains(sa->key())) {
    return false;
  }
  byKey_[sa->key()] = index;
  slots_[index] = std::move(sa);
  return true;
}

void Sad::releaseSlot(std::uint32_t index) {
  if (index < slots_.size() && !slots_[index]) freeSlots_.push_back(index);
}

bool Sad::move(const std::vector<Move>& moves) {
  std::map<SaKey, const Sa*> taken;  // new key -> the SA taking it
  for (const auto& m : moves) {
    SaKey k{m.sa->p().getSatype(), m.sa->p().getSpi(), m.dst};
    if (!taken.emplace(k, m.sa).second) return false;  // two SAs onto one name
    auto it = byKey_.find(k);
    if (it == byKey_.end()) continue;
    const Sa* holder = slots_[it->second].get();
    const bool holderMoves =
        std::any_of(moves.begin(), moves.end(), [&](const Move& o) { return o.sa == holder; });
    if (!holderMoves) return false;
  }
  for (const auto& m : moves) byKey_.erase(m.sa->key());
  for (const auto& m : moves) {
    auto bytes = [](const std::string& s) {
      return capnp::Data::Reader(reinterpret_cast<const capnp::byte*>(s.data()), s.size());
    };
    m.sa->pb().setSrc(bytes(m.src));
    m.sa->pb().setDst(bytes(m.dst));
    byKey_[m.sa->key()] = m.sa->ref.index;
  }
  return true;
}

std::vector<Sa*> Sad::all(std::uint8_t satype) {
  std::vector<Sa*> out;
  for (auto& [k, i] : byKey_) {
    if (satype == SADB_SATYPE_UNSPEC || k.satype == satype) out.push_back(slots_[i].get());
  }
  return out;
}

std::optional<std::uint32_t> Sad::allocateSpi(std::uint8_t satype, const std::string& dst, std::uint32_t min,
                                              std::uint32_t max) {
  // SPIs 0-255 are reserved by IANA (RFC 4303 §2.1).
  min = std::max<std::uint32_t>(min, 256);
  if (min > max) return std::nullopt;
  const std::uint64_t span = std::uint64_t{max} - min + 1;
  // Start from a random point in the range, then walk: a bounded search.
  std::uint32_t start = min + static_cast<std::uint32_t>(randombytes_uniform(
                                  static_cast<std::uint32_t>(std::min<std::uint64_t>(span, 0xffffffffu))));
  const std::uint64_t tries = std::min<std::uint64_t>(span, 1u << 20);
  for (std::uint64_t i = 0; i < tries; ++i) {
    std::uint32_t spi = static_cast<std::uint32_t>(min + (std::uint64_t{start} - min + i) % span);
    if (!byKey_.contains(SaKey{satype, spi, dst})) return spi;
  }
  return std::nullopt;
}

std::pair<std::uint64_t, std::uint64_t> Sad::grantSeqFromScratch(Sa& sa) {
  const std::uint64_t cap = sa.p().getEsn() ? ~std::uint64_t{0} : kNoEsnLimit;
  const std::uint64_t next = std::max<std::uint64_t>(sa.seqGranted, 1);
  const std::uint64_t limit = std::min(cap, next + kSeqBlock);
  sa.seqGranted = std::max(limit, next);
  return {next, std::max(limit, next)};
}

std::uint64_t Sad::extendSeq(Sa& sa) {
  const std::uint64_t cap = sa.p().getEsn() ? ~std::uint64_t{0} : kNoEsnLimit;
  sa.seqGranted = std::min(cap, sa.seqGranted + kSeqBlock);
  return sa.seqGranted;
}

std::uint64_t Sad::randomIvBase() {
  std::uint64_t base = 0;
  randombytes_buf(&base, sizeof base);
  return base >> 1;
}

std::pair<std::uint64_t, std::uint64_t> Sad::grantIvFromScratch(Sa& sa) {
  const std::uint64_t next = sa.ivGranted;
  sa.ivGranted = next + kIvBlock;
  return {next, sa.ivGranted};
}

std::uint64_t Sad::extendIv(Sa& sa) {
  sa.ivGranted += kIvBlock;
  return sa.ivGranted;
}

}  // namespace ipsec::keydb
