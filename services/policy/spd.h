// The SPD (security policy database) of ipsec-policy: the one authoritative
// copy of every policy; the forwarder holds a pushed replica (PolicyToForwarder).
//
// Runs in ipsec-policy, single-threaded on its event loop. Input comes from
// PF_KEY clients (untrusted bytes, already structurally checked by
// pfkey::parse); decodePolicy() applies Linux's semantic rules on top:
// policy type discard/none/ipsec only (bypass and entrust are EINVAL), dir
// in/out/fwd, tunnel requests must carry both outer addresses, level unique
// with reqid 0 (or above IPSEC_MANUAL_REQID_MAX) gets a reqid we choose.
//
// Identity: a policy is keyed by (selector, dir), as Linux's
// xfrm_policy_insert does; its id is (counter << 3) | xfrmDir where xfrmDir
// is dir - 1 (Linux's XFRM_POLICY_IN/OUT/FWD = 0/1/2), so the first outbound
// policy is 9 and the second policy, fwd, 18, exactly as the corpus shows.
// Ids a client puts in sadb_x_policy_id are ignored, so the low 3 bits always
// carry the direction. Lookups are linear: the SPD is control-plane state of
// at most a few thousand entries; the forwarder keeps its own index.
#pragma once

#include <linux/ipsec.h>
#include <linux/pfkeyv2.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <variant>
#include <vector>

#include "pfkey/address.h"
#include "pfkey/message.h"
#include "proto/common.capnp.h"

namespace ipsec::policy {

struct Selector {
  pfkey::SockAddress src;  // port inside (host order); 0 = any
  pfkey::SockAddress dst;
  std::uint8_t srcPrefix = 0;
  std::uint8_t dstPrefix = 0;
  std::uint8_t proto = IPSEC_ULPROTO_ANY;  // upper-layer protocol, 255 = any
  bool operator==(const Selector&) const = default;
};

// One ipsecrequest as Linux stores it: `optional` for level use, a reqid for
// level unique; the level a client sees is rebuilt from these.
struct Request {
  std::uint16_t proto = 0;
  std::uint8_t mode = 0;
  bool optional = false;
  std::uint32_t reqid = 0;
  std::optional<pfkey::SockAddress> tunnelSrc;
  std::optional<pfkey::SockAddress> tunnelDst;
  std::uint8_t level() const noexcept;
};

struct Lifetime {
  std::uint32_t allocations = 0;
  std::uint64_t bytes = 0;
  std::uint64_t addTime = 0;
  std::uint64_t useTime = 0;
};

struct Policy {
  std::uint32_t id = 0;
  std::uint8_t dir = 0;    // IPSEC_DIR_INBOUND/OUTBOUND/FWD
  std::uint16_t type = 0;  // IPSEC_POLICY_DISCARD/NONE/IPSEC
  std::uint32_t priority = 0;
  Selector selector;
  std::vector<Request> requests;
  Lifetime soft, hard;
  std::uint64_t created = 0;  // unix seconds, LIFETIME_CURRENT addtime
};

class Spd {
 public:
  // Adds `p` (a fresh id is assigned). An existing (selector, dir) is EEXIST
  // unless `replace`, in which case it is replaced in place and keeps its id.
  // Returns the stored policy (valid until the next change) or an errno.
  std::variant<const Policy*, int> insert(Policy p, bool replace);
  std::optional<Policy> removeBySelector(const Selector& s, std::uint8_t dir);
  std::optional<Policy> removeById(std::uint32_t id);
  const Policy* findById(std::uint32_t id) const noexcept;
  // The policy of (selector, dir), for changes in place (X_MIGRATE).
  Policy* find(const Selector& s, std::uint8_t dir) noexcept;
  // Removes everything; returns how many policies there were.
  std::size_t flush() noexcept;
  // Insertion order, which is the order dumps report.
  const std::vector<Policy>& all() const noexcept { return policies_; }
  std::size_t size() const noexcept { return policies_.size(); }
  // A reqid above the manual range (IPSEC_MANUAL_REQID_MAX) no policy uses.
  std::uint32_t chooseReqid();

 private:
  std::vector<Policy> policies_;
  std::uint32_t nextIndex_ = 1;
  std::uint32_t nextReqid_ = 0;
};

// The direction bits Linux keeps in a policy id.
inline constexpr std::uint8_t xfrmDir(std::uint8_t ipsecDir) noexcept {
  return static_cast<std::uint8_t>(ipsecDir - 1);
}

// Reads the selector (SRC, DST) of an SPD message. EINVAL if either address is
// missing or the families differ.
std::variant<Selector, int> decodeSelector(const pfkey::ParsedMessage& m);

// Reads X_SPDADD / X_SPDUPDATE into a policy (id 0); reqids for `unique`
// without one come from `spd`. Returns the policy or an errno.
std::variant<Policy, int> decodePolicy(const pfkey::ParsedMessage& m, Spd& spd, std::uint64_t now);

// The PF_KEY message Linux sends for a policy (pfkey_xfrm_policy2msg order:
// SRC, DST, LIFETIME_HARD, LIFETIME_SOFT, LIFETIME_CURRENT, X_POLICY), with
// the header of `request` (type, seq, pid), satype 0, errno 0 and
// sadb_msg_reserved 1 (Linux's refcount field).
std::vector<std::uint8_t> encodePolicy(const Policy& p, const sadb_msg& request);

// The forwarder's copy (proto::Policy: addresses as raw 4/16 bytes).
void toProto(const Policy& p, proto::Policy::Builder out);

}  // namespace ipsec::policy
