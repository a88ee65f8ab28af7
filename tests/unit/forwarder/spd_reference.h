// A linear SPD: the forwarder's policy lookup as it was before the index, kept
// as the reference the indexed Spd is checked against (tables_test) and
// measured against (bench/pfkey). Test and benchmark code only; it trusts its
// caller to hand it well-formed policies.
#pragma once

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <vector>

#include <capnp/message.h>

#include "tables.h"

namespace ipsec::forwarder::testing {

class LinearSpd {
 public:
  // Same rule as Spd::add: a policy with a known id replaces it and counts as
  // newly inserted.
  void add(Policy p) {
    remove(p.id);
    p.order = nextOrder_++;
    auto pos = std::upper_bound(policies_.begin(), policies_.end(), p, [](const Policy& a, const Policy& b) {
      return a.priority != b.priority ? a.priority < b.priority : a.order < b.order;
    });
    policies_.insert(pos, std::move(p));
  }
  // Many at once, as that many add() calls would leave them (ids distinct and
  // new), without the quadratic cost of sorted inserts.
  void addAll(std::vector<Policy> ps) {
    for (auto& p : ps) p.order = nextOrder_++;
    std::stable_sort(ps.begin(), ps.end(), [](const Policy& a, const Policy& b) { return a.priority < b.priority; });
    std::vector<Policy> merged;
    merged.reserve(policies_.size() + ps.size());
    std::merge(std::make_move_iterator(policies_.begin()), std::make_move_iterator(policies_.end()),
               std::make_move_iterator(ps.begin()), std::make_move_iterator(ps.end()), std::back_inserter(merged),
               [](const Policy& a, const Policy& b) {
                 return a.priority != b.priority ? a.priority < b.priority : a.order < b.order;
               });
    policies_ = std::move(merged);
  }
  void remove(std::uint32_t id) {
    std::erase_if(policies_, [id](const Policy& p) { return p.id == id; });
  }
  void clear() { policies_.clear(); }
  const Policy* lookup(std::uint8_t dir, const esp::FlowKey& flow) const noexcept {
    for (const auto& p : policies_) {
      if (p.dir == dir && p.selector.matches(flow)) return &p;
    }
    return nullptr;
  }
  std::size_t size() const noexcept { return policies_.size(); }

 private:
  std::vector<Policy> policies_;
  std::uint64_t nextOrder_ = 1;
};

// The control-channel message that installs `p` (selector and header fields;
// requests are left empty, the lookup does not read them).
inline void fillPolicyMessage(const Policy& p, proto::Policy::Builder m) {
  auto bytesOf = [](const esp::IpAddress& a) { return capnp::Data::Reader(a.bytes().data(), a.bytes().size()); };
  m.setId(p.id);
  m.setDir(p.dir);
  m.setAction(p.action);
  m.setPriority(p.priority);
  auto s = m.initSelector();
  s.setSrc(bytesOf(p.selector.src.address));
  s.setSrcPrefix(p.selector.src.length);
  s.setDst(bytesOf(p.selector.dst.address));
  s.setDstPrefix(p.selector.dst.length);
  s.setProto(p.selector.proto);
  s.setSrcPort(p.selector.srcPort);
  s.setDstPort(p.selector.dstPort);
}

}  // namespace ipsec::forwarder::testing
