// ipsec-forwarder: its copy of the SAD (metadata only — the forwarder never
// holds a key), as keydb pushes it. Indexed for the two lookups the data path
// makes: by SPI for inbound packets, and by policy for outbound ones (the
// newest SA of the policy's tunnel endpoints and reqid). Only the data-path
// thread touches it (with several threads, each its own copy: threads.cpp).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
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
  std::optional<esp::ReplayWindow> replay;  // none when the window in force is 0
  std::uint64_t firstUse = 0;  // unix seconds
  std::uint64_t installOrder = 0;
  SaCounters counters;
};

class SaTable {
 public:
  // lib/config's default for replay_window, until the sysctl says otherwise.
  static constexpr std::uint32_t kDefaultReplayWindow = 64;

  // Adds or replaces; returns an error text for a bad install (channel-fatal).
  // Installing the same SaRef again (new addresses) keeps its replay history.
  // An SA whose client gave no window (0, and no ESN: ESN needs a window)
  // gets the default window in force at its install, as FreeBSD's
  // net.inet.ipsec.replay_window; keydb keeps the 0 the client set.
  std::optional<std::string> install(proto::SaInstall::Reader msg);
  // net.inet.ipsec.replay_window: for SAs installed from now on; 0 disables,
  // negative is 0, above ReplayWindow::kMaxSize is that maximum.
  void setDefaultReplayWindow(std::int64_t packets) noexcept;
  std::uint32_t defaultReplayWindow() const noexcept { return defaultReplayWindow_; }
  // Moves a window's history into a fresh one (X_MIGRATE, UPDATE).
  static void carryReplayHistory(const esp::ReplayWindow& from, esp::ReplayWindow& to);
  void remove(SaRef ref);
  void clear();

  Sa* find(SaRef ref) noexcept;
  // PF_KEY names an SA by (satype, SPI, dst): ESP and AH SAs may share an
  // SPI and endpoints, so every lookup says which protocol it wants.
  Sa* findInbound(std::uint8_t satype, std::uint32_t spi, const esp::IpAddress& dst) noexcept;
  // The newest SA (highest install order) of this satype from src to dst with
  // this reqid (0 = any), or nullptr.
  Sa* selectOutbound(std::uint8_t satype, const esp::IpAddress& src, const esp::IpAddress& dst,
                     std::uint32_t reqid) noexcept;

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
  std::uint32_t defaultReplayWindow_ = kDefaultReplayWindow;
};

}  // namespace ipsec::forwarder
