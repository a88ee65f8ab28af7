// ipsec-forwarder: its copy of the SPD, as ipsec-policy pushes it: each
// policy with its requests compiled into a plan (plan.h), indexed for the
// lookup of every packet (below). Only the data-path thread touches it.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "proto/dataplane.capnp.h"
#include "esp/esp.h"
#include "esp/ip.h"
#include "plan.h"

namespace ipsec::forwarder {

struct Selector {
  esp::Prefix src, dst;
  std::uint8_t proto = 255;
  std::uint16_t srcPort = 0, dstPort = 0;
  bool matches(const esp::FlowKey& flow) const noexcept;
};

struct Policy {
  std::uint32_t id = 0;
  std::uint8_t dir = 0;
  std::uint8_t action = 0;
  std::uint32_t priority = 0;
  std::uint64_t order = 0;
  Selector selector;
  std::vector<Request> requests;
  Plan plan;  // compiled from requests when the policy is installed (plan.h)
};

// Ordered by (priority, insertion): the first match wins, as in the kernel.
//
// Indexed so that a lookup does not scan the table: per direction and address
// family, policies are grouped by destination prefix length, and per length a
// hash table goes from the masked destination to that key's policies sorted by
// (priority, insertion). A lookup probes each length present (at most 33 or
// 129, in practice a handful), keeps the best candidate that also matches
// the source prefix, protocol and ports, and can stop scanning a bucket at
// the first entry that ranks after the best so far. The cost grows with the
// number of distinct destination lengths and with the size of one bucket
// (policies that share a destination and differ only in the rest), not with
// the table. In front sits a direct-mapped flow cache (results, misses
// included) invalidated wholesale by a version bumped on every change.
//
// Cold lookups (flow cache missed) are bound by memory latency at 100 000
// policies, where the table is many MB, so the layout minimises cache misses:
// - a byte array of tags (a 7-bit fingerprint of each bucket's key, 0 for an
//   empty slot) beside the bucket array: a probe for an absent key, the usual
//   case for most lengths, reads only this array, 64 times smaller than the
//   buckets and mostly in cache;
// - one 64-byte cache line per bucket, holding its key and its best-ranked
//   entry, so that a found bucket with one policy costs one miss; further
//   entries (rare) live out of line, sorted;
// - the tag and home bucket of every length are prefetched before the first
//   is read, so that the misses of the 2-3 lengths overlap.
//
// lookup() neither allocates nor throws; add/remove are amortised O(1) plus
// the size of the one bucket they touch. Pointers returned by lookup() stay
// valid until the next add/remove/clear.
class Spd {
 public:
  Spd();
  std::optional<std::string> add(proto::Policy::Reader msg);
  void remove(std::uint32_t id);
  void clear();
  const Policy* lookup(std::uint8_t dir, const esp::FlowKey& flow) const noexcept;
  std::size_t size() const noexcept { return byId_.size(); }

  // Flow cache figures, for benchmarks and tests.
  std::uint64_t cacheHits() const noexcept { return cacheHits_; }
  std::uint64_t cacheMisses() const noexcept { return cacheMisses_; }
  // Forgets every cached result (as any change does); for benchmarks.
  void flushCache() noexcept { ++version_; }

  static constexpr std::size_t kCacheEntries = 4096;  // power of two

 private:
  // An address as two big-endian words, so that masking is two ANDs.
  struct Bits {
    std::uint64_t hi = 0, lo = 0;
    bool operator==(const Bits&) const = default;
  };
  struct BucketKey {
    Bits dst;  // masked to `length`
    std::uint8_t dir = 0;
    std::uint8_t family = 0;
    std::uint8_t length = 0;
    bool operator==(const BucketKey&) const = default;
  };
  // One policy as a bucket holds it: what the match needs beyond the
  // destination, inline, so that a lookup reads the Policy only to return it.
  struct Entry {
    Bits src;  // masked to srcLength
    std::uint64_t order;
    std::uint32_t priority;
    std::uint32_t slot;
    std::uint16_t srcPort, dstPort;
    std::uint8_t srcLength, proto;
  };
  // A slot of the open-addressing table (linear probing, power-of-two size,
  // at most kMaxLoad full); tags_ says which slots are used. One cache line.
  struct alignas(64) Bucket {
    Bits dst;                    // the key: masked to `length`
    Entry first;                 // the best-ranked entry
    std::uint32_t more = kNone;  // index in overflow_ of the others, sorted
    std::uint8_t dir = 0, family = 0, length = 0;
    bool holds(const BucketKey& k) const noexcept {
      return dst == k.dst && length == k.length && dir == k.dir && family == k.family;
    }
  };
  static_assert(sizeof(Bucket) == 64, "a bucket is one cache line");
  // The destination lengths present for one (direction, family).
  struct Group {
    std::uint8_t dir = 0;
    std::uint8_t family = 0;
    std::array<std::uint32_t, 129> countByLength{};
    std::vector<std::uint8_t> lengths;  // present ones, longest first
  };
  struct CacheEntry {
    esp::FlowKey flow;
    std::uint64_t version = 0;
    std::uint32_t slot = kNoSlot;
    std::uint8_t dir = 0;
  };
  static constexpr std::uint32_t kNoSlot = 0xffffffffu;
  static constexpr std::uint32_t kNone = 0xffffffffu;
  // Grow when more than 3/4 of the slots are used: tags keep the probe runs
  // of linear probing cheap to walk at that load.
  static constexpr std::size_t kMaxLoadNum = 3, kMaxLoadDen = 4;
  // How many lengths a lookup prefetches before probing; the rest are probed
  // without (a group rarely has this many).
  static constexpr std::size_t kPrefetchLengths = 16;

  static Bits bitsOf(const esp::IpAddress& a) noexcept;
  static Bits masked(Bits b, unsigned length) noexcept;
  static BucketKey keyOf(const Policy& p) noexcept;
  static std::size_t hashOf(const BucketKey& k) noexcept;
  static std::uint8_t tagOf(std::size_t hash) noexcept { return static_cast<std::uint8_t>(0x80 | (hash >> 57)); }
  static bool entryMatches(const Entry& e, Bits src, const esp::FlowKey& flow) noexcept;
  static bool ranksBefore(const Entry& a, const Entry& b) noexcept {
    return a.priority != b.priority ? a.priority < b.priority : a.order < b.order;
  }
  // The slot holding k, or kNone; starts at k's home slot.
  std::size_t findBucket(const BucketKey& k, std::size_t hash) const noexcept;
  void insertEntry(const BucketKey& k, const Entry& e);
  void removeEntry(const BucketKey& k, std::uint32_t slot) noexcept;
  void eraseBucket(std::size_t at) noexcept;
  void grow();
  std::uint32_t newOverflow();
  Group* group(std::uint8_t dir, esp::IpFamily family) noexcept;
  const Group* group(std::uint8_t dir, esp::IpFamily family) const noexcept;
  std::uint32_t search(std::uint8_t dir, const esp::FlowKey& flow) const noexcept;

  std::vector<std::optional<Policy>> slots_;
  std::vector<std::uint32_t> freeSlots_;
  std::unordered_map<std::uint32_t, std::uint32_t> byId_;  // id -> slot
  std::vector<std::uint8_t> tags_;  // per slot of table_: 0 empty, else tagOf(hash)
  std::vector<Bucket> table_;
  std::size_t usedBuckets_ = 0;
  std::vector<std::vector<Entry>> overflow_;  // entries after a bucket's first
  std::vector<std::uint32_t> freeOverflow_;
  std::vector<Group> groups_;  // few: directions x families
  std::uint64_t nextOrder_ = 1;

  // The data-path thread is the only user, so the cache may change under a
  // const lookup.
  mutable std::vector<CacheEntry> cache_;
  mutable std::uint64_t cacheHits_ = 0, cacheMisses_ = 0;
  std::uint64_t version_ = 1;  // cache entries start at 0: all invalid
};

}  // namespace ipsec::forwarder
