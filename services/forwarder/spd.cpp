// See spd.h.
#include "spd.h"

#include <endian.h>
#include <linux/ipsec.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <functional>

#include "sa_table.h"  // addressFrom

namespace ipsec::forwarder {

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
  p.plan = compilePlan(p.requests);
  remove(p.id);
  p.order = nextOrder_++;

  std::uint32_t slot;
  if (!freeSlots_.empty()) {
    slot = freeSlots_.back();
    freeSlots_.pop_back();
  } else {
    slot = static_cast<std::uint32_t>(slots_.size());
    slots_.emplace_back();
  }
  const BucketKey key = keyOf(p);
  const Selector& ps = p.selector;
  insertEntry(key, Entry{masked(bitsOf(ps.src.address), ps.src.length), p.order, p.priority, slot, ps.srcPort,
                         ps.dstPort, ps.src.length, ps.proto});

  Group* g = group(p.dir, p.selector.dst.address.family());
  if (!g) {
    groups_.push_back(Group{p.dir, static_cast<std::uint8_t>(p.selector.dst.address.family()), {}, {}});
    g = &groups_.back();
  }
  if (g->countByLength[key.length]++ == 0) {
    auto at = std::upper_bound(g->lengths.begin(), g->lengths.end(), key.length, std::greater<>());
    g->lengths.insert(at, key.length);
  }
  byId_[p.id] = slot;
  slots_[slot] = std::move(p);
  ++version_;
  return std::nullopt;
}

Spd::Spd() : cache_(kCacheEntries) {}

void Spd::remove(uint32_t id) {
  auto it = byId_.find(id);
  if (it == byId_.end()) return;
  const std::uint32_t slot = it->second;
  byId_.erase(it);
  const Policy& p = *slots_[slot];
  const BucketKey key = keyOf(p);
  removeEntry(key, slot);
  if (Group* g = group(p.dir, p.selector.dst.address.family()); g && --g->countByLength[key.length] == 0) {
    std::erase(g->lengths, key.length);
  }
  slots_[slot].reset();
  freeSlots_.push_back(slot);
  ++version_;
}

void Spd::clear() {
  slots_.clear();
  freeSlots_.clear();
  byId_.clear();
  tags_.clear();
  table_.clear();
  usedBuckets_ = 0;
  overflow_.clear();
  freeOverflow_.clear();
  groups_.clear();
  ++version_;
}

[[gnu::always_inline]] inline Spd::Bits Spd::bitsOf(const esp::IpAddress& a) noexcept {
  // An IPv4 address is the first 4 of 16 stored bytes, the rest zero
  // (esp/ip.h), so both families read as 16 bytes.
  std::uint64_t w[2];
  std::memcpy(w, a.bytes().data(), sizeof w);
  return {be64toh(w[0]), be64toh(w[1])};
}

// An IPv4 address sits in the top 32 bits of hi, the rest zero, so one
// masking rule serves both families. The masks come from a table (2 KiB, in
// L1 during a lookup): two ANDs, no branch, where a bucket's source tests
// would otherwise mispredict on mixed prefix lengths.
[[gnu::always_inline]] inline Spd::Bits Spd::masked(Bits b, unsigned length) noexcept {
  static constexpr auto kMasks = [] {
    std::array<Bits, 129> m{};
    for (unsigned l = 0; l <= 128; ++l) {
      m[l].hi = l == 0 ? 0 : l >= 64 ? ~std::uint64_t{0} : ~std::uint64_t{0} << (64 - l);
      m[l].lo = l <= 64 ? 0 : l == 128 ? ~std::uint64_t{0} : ~std::uint64_t{0} << (128 - l);
    }
    return m;
  }();
  const Bits& m = kMasks[length <= 128 ? length : 128];
  return {b.hi & m.hi, b.lo & m.lo};
}

Spd::BucketKey Spd::keyOf(const Policy& p) noexcept {
  const auto& d = p.selector.dst;
  return {masked(bitsOf(d.address), d.length), p.dir,
          static_cast<std::uint8_t>(d.address.family()), d.length};
}

[[gnu::always_inline]] inline std::size_t Spd::hashOf(const BucketKey& k) noexcept {
  // A multiply-xorshift mix: cheap, and the masked addresses of a policy set
  // often differ only in a few middle bits.
  std::uint64_t h = k.dst.hi * 0x9e3779b97f4a7c15ull;
  h ^= (k.dst.lo + 0x632be59bd9b4e019ull) * 0xc2b2ae3d27d4eb4full;
  h ^= (std::uint64_t{k.length} << 16 | std::uint64_t{k.dir} << 8 | k.family) * 0x165667b19e3779f9ull;
  h ^= h >> 29;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 32;
  return static_cast<std::size_t>(h);
}

Spd::Group* Spd::group(uint8_t dir, esp::IpFamily family) noexcept {
  for (auto& g : groups_) {
    if (g.dir == dir && g.family == static_cast<std::uint8_t>(family)) return &g;
  }
  return nullptr;
}

const Spd::Group* Spd::group(uint8_t dir, esp::IpFamily family) const noexcept {
  return const_cast<Spd*>(this)->group(dir, family);
}

[[gnu::always_inline]] inline std::size_t Spd::findBucket(const BucketKey& k, std::size_t hash) const noexcept {
  if (tags_.empty()) return kNone;
  const std::size_t mask = tags_.size() - 1;
  const std::uint8_t tag = tagOf(hash);
  for (std::size_t i = hash & mask;; i = (i + 1) & mask) {
    const std::uint8_t t = tags_[i];
    if (t == 0) return kNone;
    // Only a matching tag reads the bucket's line (1 in 128 for others).
    if (t == tag && table_[i].holds(k)) return i;
  }
}

void Spd::grow() {
  std::vector<Bucket> oldTable(std::max<std::size_t>(64, table_.size() * 2));
  std::vector<std::uint8_t> oldTags(oldTable.size(), 0);
  oldTable.swap(table_);
  oldTags.swap(tags_);
  const std::size_t mask = table_.size() - 1;
  for (std::size_t j = 0; j < oldTable.size(); ++j) {
    if (oldTags[j] == 0) continue;
    const Bucket& b = oldTable[j];
    std::size_t i = hashOf(BucketKey{b.dst, b.dir, b.family, b.length}) & mask;
    while (tags_[i] != 0) i = (i + 1) & mask;
    tags_[i] = oldTags[j];  // the tag comes from the full hash, not the slot
    table_[i] = b;
  }
}

std::uint32_t Spd::newOverflow() {
  if (!freeOverflow_.empty()) {
    const std::uint32_t i = freeOverflow_.back();
    freeOverflow_.pop_back();
    return i;
  }
  overflow_.emplace_back();
  return static_cast<std::uint32_t>(overflow_.size() - 1);
}

void Spd::insertEntry(const BucketKey& k, const Entry& e) {
  std::size_t h = hashOf(k);
  if (const std::size_t at = findBucket(k, h); at != kNone) {
    Bucket& b = table_[at];
    // Sorted by (priority, order); a new entry has the highest order, so it
    // goes after every entry of its priority.
    Entry moved = e;
    if (ranksBefore(e, b.first)) std::swap(moved, b.first);
    if (b.more == kNone) b.more = newOverflow();
    auto& rest = overflow_[b.more];
    rest.insert(std::upper_bound(rest.begin(), rest.end(), moved, ranksBefore), moved);
    return;
  }
  if ((usedBuckets_ + 1) * kMaxLoadDen > table_.size() * kMaxLoadNum) grow();
  const std::size_t mask = table_.size() - 1;
  std::size_t i = h & mask;
  while (tags_[i] != 0) i = (i + 1) & mask;
  tags_[i] = tagOf(h);
  Bucket& b = table_[i];
  b.dst = k.dst;
  b.dir = k.dir;
  b.family = k.family;
  b.length = k.length;
  b.first = e;
  b.more = kNone;
  ++usedBuckets_;
}

void Spd::removeEntry(const BucketKey& k, std::uint32_t slot) noexcept {
  const std::size_t at = findBucket(k, hashOf(k));
  if (at == kNone) return;
  Bucket& b = table_[at];
  if (b.first.slot == slot) {
    if (b.more == kNone) {
      eraseBucket(at);
      return;
    }
    auto& rest = overflow_[b.more];
    b.first = rest.front();
    rest.erase(rest.begin());
  } else if (b.more != kNone) {
    std::erase_if(overflow_[b.more], [slot](const Entry& e) { return e.slot == slot; });
  }
  if (b.more != kNone && overflow_[b.more].empty()) {
    std::vector<Entry>().swap(overflow_[b.more]);
    freeOverflow_.push_back(b.more);
    b.more = kNone;
  }
}

// Backward-shift deletion: later members of the probe run move up into the
// hole when their home slot allows, so lookups need no tombstones.
void Spd::eraseBucket(std::size_t hole) noexcept {
  const std::size_t mask = table_.size() - 1;
  for (std::size_t j = (hole + 1) & mask; tags_[j] != 0; j = (j + 1) & mask) {
    const Bucket& b = table_[j];
    const std::size_t home = hashOf(BucketKey{b.dst, b.dir, b.family, b.length}) & mask;
    const bool staysPut = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
    if (staysPut) continue;
    table_[hole] = table_[j];
    tags_[hole] = tags_[j];
    hole = j;
  }
  tags_[hole] = 0;
  table_[hole] = Bucket{};
  --usedBuckets_;
}

// Selector::matches without its destination test (the bucket did that) and
// with the source prefix pre-masked.
[[gnu::always_inline]] inline bool Spd::entryMatches(const Entry& e, Bits src,
                                                     const esp::FlowKey& flow) noexcept {
  if (!(masked(src, e.srcLength) == e.src)) return false;
  if (e.proto != 255 && e.proto != flow.proto) return false;
  if (e.srcPort != 0 || e.dstPort != 0) {
    // Port selectors need a first fragment; a later fragment has no ports.
    if (flow.nonInitialFragment) return false;
    if (e.srcPort != 0 && e.srcPort != flow.srcPort) return false;
    if (e.dstPort != 0 && e.dstPort != flow.dstPort) return false;
  }
  return true;
}

std::uint32_t Spd::search(uint8_t dir, const esp::FlowKey& flow) const noexcept {
  // A selector's prefixes share a family, so a flow whose two do not matches none.
  if (flow.src.family() != flow.dst.family()) return kNoSlot;
  const Group* g = group(dir, flow.dst.family());
  if (!g || tags_.empty()) return kNoSlot;
  const Bits dst = bitsOf(flow.dst), src = bitsOf(flow.src);
  const std::size_t mask = tags_.size() - 1;
  // Hash every length first and prefetch its tag and home bucket, so that
  // the cache misses of all lengths are in flight together.
  std::array<std::size_t, kPrefetchLengths> hashes{};
  const std::size_t n = g->lengths.size();
  for (std::size_t l = 0; l < n && l < kPrefetchLengths; ++l) {
    const std::uint8_t length = g->lengths[l];
    hashes[l] = hashOf(BucketKey{masked(dst, length), dir, g->family, length});
    __builtin_prefetch(&tags_[hashes[l] & mask]);
    __builtin_prefetch(&table_[hashes[l] & mask]);
  }
  const Entry* best = nullptr;
  for (std::size_t l = 0; l < n; ++l) {
    const std::uint8_t length = g->lengths[l];
    const BucketKey key{masked(dst, length), dir, g->family, length};
    const std::size_t at = findBucket(key, l < kPrefetchLengths ? hashes[l] : hashOf(key));
    if (at == kNone) continue;
    const Bucket& b = table_[at];
    // Sorted: once an entry ranks after the best so far, so do the rest.
    if (best && !ranksBefore(b.first, *best)) continue;
    if (entryMatches(b.first, src, flow)) {
      best = &b.first;
      continue;
    }
    if (b.more == kNone) continue;
    for (const Entry& e : overflow_[b.more]) {
      if (best && !ranksBefore(e, *best)) break;
      if (entryMatches(e, src, flow)) {
        best = &e;
        break;
      }
    }
  }
  return best ? best->slot : kNoSlot;
}

const Policy* Spd::lookup(uint8_t dir, const esp::FlowKey& flow) const noexcept {
  const auto src = bitsOf(flow.src), dst = bitsOf(flow.dst);
  std::uint64_t h = (src.hi ^ (src.lo * 0x9e3779b97f4a7c15ull)) * 0xc2b2ae3d27d4eb4full;
  h ^= (dst.hi + (dst.lo * 0x165667b19e3779f9ull)) * 0x9e3779b97f4a7c15ull;
  h ^= (std::uint64_t{flow.srcPort} << 32 | std::uint64_t{flow.dstPort} << 16 | std::uint64_t{flow.proto} << 8 |
        std::uint64_t{dir} << 1 | (flow.nonInitialFragment ? 1u : 0u)) *
       0xbf58476d1ce4e5b9ull;
  h ^= h >> 31;
  CacheEntry& c = cache_[h & (kCacheEntries - 1)];
  std::uint32_t slot;
  if (c.version == version_ && c.dir == dir && c.flow == flow) {
    ++cacheHits_;
    slot = c.slot;
  } else {
    ++cacheMisses_;
    slot = search(dir, flow);
    c.flow = flow;
    c.dir = dir;
    c.version = version_;
    c.slot = slot;
  }
  return slot == kNoSlot ? nullptr : &*slots_[slot];
}

}  // namespace ipsec::forwarder
