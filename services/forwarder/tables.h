// ipsec-forwarder: its copies of the SAD (metadata only — the forwarder never
// holds a key) and of the SPD, as keydb and policy push them. Indexed for the
// two lookups the data path makes: by SPI for inbound packets, and by policy
// for outbound ones (the newest SA of the policy's tunnel endpoints and reqid).
// Only the data-path thread touches these tables.
#pragma once

#include <cstdint>
#include <optional>
#include <unordered_map>
#include <vector>

#include "proto/dataplane.capnp.h"
#include "counters.h"
#include "esp/esp.h"
#include "esp/ip.h"
#include "esp/replay.h"

namespace ipsec::forwarder {

// Addresses on control channels are 4 or 16 raw bytes; anything else is a
// protocol error, reported as nullopt.
std::optional<esp::IpAddress> addressFrom(capnp::Data::Reader bytes);

struct SaRef {
  std::uint32_t index = 0;
  std::uint32_t generation = 0;
  bool operator==(const SaRef&) const = default;
};

struct Sa {
  SaRef ref;
  std::uint32_t spi = 0;
  std::uint8_t satype = 0;
  std::uint8_t mode = 0;
  std::uint32_t reqid = 0;
  esp::IpAddress src, dst;
  esp::EspLayout layout;
  bool esn = false;
  std::uint64_t seqNext = 1;   // next sequence number to send
  std::uint64_t seqLimit = 1;  // exclusive; granted by keydb
  bool seqRequested = false;
  std::optional<esp::ReplayWindow> replay;  // none when the SA's window is 0
  std::uint64_t firstUse = 0;  // unix seconds
  std::uint64_t installOrder = 0;
  SaCounters counters;
};

class SaTable {
 public:
  // Adds or replaces; returns an error text for a bad install (channel-fatal).
  std::optional<std::string> install(proto::SaInstall::Reader msg);
  void remove(SaRef ref);
  void clear();

  Sa* find(SaRef ref) noexcept;
  Sa* findInbound(std::uint32_t spi, const esp::IpAddress& dst) noexcept;
  // The newest SA (highest install order) from src to dst with this reqid
  // (0 = any), or nullptr.
  Sa* selectOutbound(const esp::IpAddress& src, const esp::IpAddress& dst, std::uint32_t reqid) noexcept;

  template <class F>
  void forEach(F&& f) {
    for (auto& s : slots_) {
      if (s) f(*s);
    }
  }
  std::uint64_t version() const noexcept { return version_; }

 private:
  std::vector<std::optional<Sa>> slots_;  // by keydb slot index
  std::unordered_multimap<std::uint32_t, std::uint32_t> bySpi_;
  std::uint64_t nextOrder_ = 1;
  std::uint64_t version_ = 0;
};

struct Selector {
  esp::Prefix src, dst;
  std::uint8_t proto = 255;
  std::uint16_t srcPort = 0, dstPort = 0;
  bool matches(const esp::FlowKey& flow) const noexcept;
};

struct Request {
  std::uint8_t proto = 0, mode = 0, level = 0;
  std::uint32_t reqid = 0;
  std::optional<esp::IpAddress> tunnelSrc, tunnelDst;
};

struct Policy {
  std::uint32_t id = 0;
  std::uint8_t dir = 0;
  std::uint8_t action = 0;
  std::uint32_t priority = 0;
  std::uint64_t order = 0;
  Selector selector;
  std::vector<Request> requests;
};

// Ordered by (priority, insertion): the first match wins, as in the kernel.
// A linear scan for now; the indexed SPD is issue 4's.
class Spd {
 public:
  std::optional<std::string> add(proto::Policy::Reader msg);
  void remove(std::uint32_t id);
  void clear();
  const Policy* lookup(std::uint8_t dir, const esp::FlowKey& flow) const noexcept;
  std::size_t size() const noexcept { return policies_.size(); }

 private:
  std::vector<Policy> policies_;
  std::uint64_t nextOrder_ = 1;
};

}  // namespace ipsec::forwarder
