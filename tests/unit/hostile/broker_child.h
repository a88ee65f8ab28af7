// A real ipsec-crypto process for the hostile-forwarder test, started the way
// ipsecd starts it (services/ipsecd/spawn.cpp; descriptors as in
// services/crypto/main.cpp): fd 3 a socketpair this class drives as ipsecd
// (ready, stats, stop), fd 4 one it drives as keydb (sessions with real keys
// and a direction; every IvRequest answered with an IvGrant from a thread),
// fd 5..7 a ring region made with ring::Region::create and its two eventfds.
// The test process keeps the other side of everything: it is the forwarder.
//
// Trust: none in the child. It drops to uid/gid 65534 in an empty root by
// itself; everything here is stopped by its pid.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "control/unique_fd.h"
#include "proto/crypto.capnp.h"
#include "ring/doorbell.h"
#include "ring/region.h"

namespace ipsec::hostile {

struct SessionSpec {
  std::uint32_t index = 0;
  std::uint32_t generation = 0;
  bool ah = false;  // AH (HMAC-SHA-256-128) instead of ESP AES-GCM-16
  proto::Direction direction = proto::Direction::UNKNOWN;
  std::vector<std::uint8_t> key;  // GCM: 16-byte key || 4-byte salt; AH: 32 bytes
  std::uint64_t ivNext = 0;       // ESP: the first counter IV the broker may use
  std::uint64_t ivLimit = 0;
};

class BrokerChild {
 public:
  // Starts `binary` with a region of `config`; throws when it does not say
  // ready within a few seconds.
  BrokerChild(const std::string& binary, const ring::RegionConfig& config);
  ~BrokerChild();  // stop, then SIGKILL by pid if it lingers
  BrokerChild(const BrokerChild&) = delete;
  BrokerChild& operator=(const BrokerChild&) = delete;

  // keydb's role, before start(): "" when the broker accepted the session.
  std::string createSession(const SessionSpec& spec);
  void destroySession(std::uint32_t index, std::uint32_t generation);
  // From here on a thread answers the broker's IvRequests: each grant moves
  // the limit `grantStep` above the broker's ivNext.
  void startGranting(std::uint64_t grantStep);
  // The highest IV limit granted so far to session `index` (its creation's
  // limit if the broker never asked).
  std::uint64_t grantedLimit(std::uint32_t index);
  std::uint64_t ivRequests() const { return ivRequests_.load(); }

  // ipsecd's role: the broker's counters by name; nullopt if it did not answer.
  std::optional<std::map<std::string, std::uint64_t>> stats();
  // True while the process has not exited; sets exitStatus() once it has.
  bool alive();
  int exitStatus() const { return exitStatus_; }
  // ipsecd's stop; true when it exited 0 within the timeout.
  bool stop(int timeoutMs);

  ring::Region& region() { return *region_; }
  ring::Doorbell& requestBell() { return requestBell_; }        // we ring it
  ring::Doorbell& completionBell() { return completionBell_; }  // we wait on it

 private:
  void grantLoop();

  pid_t pid_ = -1;
  int exitStatus_ = -1;
  std::string emptyRoot_;
  control::UniqueFd supervisor_, keydb_;
  std::optional<ring::Region> region_;
  ring::Doorbell requestBell_, completionBell_;
  std::atomic<bool> stopGranting_{false};
  std::atomic<std::uint64_t> ivRequests_{0};
  std::uint64_t grantStep_ = 0;
  std::thread granter_;
  std::mutex grantsMutex_;
  std::map<std::uint32_t, std::uint64_t> granted_;  // index → highest limit
  std::uint64_t statsId_ = 0;
};

}  // namespace ipsec::hostile
