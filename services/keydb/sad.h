// ipsec-keydb: the SAD. Owns every SA — its parameters, its keys (in guarded,
// locked sodium_malloc memory), its lifetimes, and the sequence-number and IV
// blocks granted to the data plane. It parses nothing from the network: its
// inputs are policy's requests (already-parsed PF_KEY) and the data plane's
// grant requests and usage reports, each from a channel of ours.
//
// Nonce safety (DESIGN §3): every grant is recorded here before it is sent,
// and a restarted forwarder or broker is given a base above everything
// granted before. Without ESN no grant reaches past 2^32 - 1. Counter IVs of
// each SA start at a random point below 2^63 (drawn here, per SA and host),
// so the two hosts of one key do not both count from 0: even an SA sealed on
// the wrong side by mistake would not meet the peer's (key, IV) pairs.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include <capnp/message.h>

#include "proto/common.capnp.h"
#include "proto/crypto.capnp.h"
#include "securemem/secure_bytes.h"

namespace ipsec::keydb {

using securemem::SecureBytes;  // keys in locked, wiped memory

struct SaRef {
  std::uint32_t index = 0;
  std::uint32_t generation = 0;
  bool operator==(const SaRef&) const = default;
};

struct SaKey {
  std::uint8_t satype = 0;
  std::uint32_t spi = 0;
  std::string dst;  // raw address bytes
  auto operator<=>(const SaKey&) const = default;
};

struct Sa {
  SaRef ref;
  std::unique_ptr<capnp::MallocMessageBuilder> params;  // root: proto::SaParams
  SecureBytes encKey, authKey;
  std::uint64_t addTime = 0;
  std::uint64_t firstUse = 0;
  struct Usage {
    std::uint64_t bytes = 0;
    std::uint64_t packets = 0;
  };
  Usage usageBase;      // what earlier forwarders counted
  Usage usageReported;  // what the current forwarder reports (it counts from zero)
  std::uint64_t seqGranted = 1;  // exclusive bound of every sequence number ever granted
  std::uint64_t ivGranted = 0;   // exclusive bound of every counter IV ever granted
                                 // (Sad::create starts it at randomIvBase())
  // Which way this host uses the SA (proto/sad.capnp, OutboundTemplate):
  // inbound if GETSPI made it, outbound once a policy names it, and neither
  // ever changes back; unknown until then. The broker seals only outbound.
  proto::Direction direction = proto::Direction::UNKNOWN;
  bool sessionReady = false;     // the current broker has a session for it
  std::optional<std::uint64_t> pendingAdd;  // policy request awaiting the session
  // UPDATE of an ESP/AH SA (live, or larval after GETSPI): the old SA, out
  // of the SAD's names but whole (keys, lifetimes, usage, grants) and, if
  // live, still working in the forwarder and the broker under its ref until
  // this SA is installed (which then takes over the old entry's replay
  // window). If this SA's session is refused the old one goes back in
  // place as it was, as Linux and FreeBSD leave an SA a failed UPDATE names.
  std::unique_ptr<Sa> replaced;
  // The due time keydb's lifetime heap holds for this SA (0: none); older
  // heap entries for it are stale and skipped.
  std::uint64_t lifetimeDue = 0;

  proto::SaParams::Reader p() const { return params->getRoot<proto::SaParams>().asReader(); }
  proto::SaParams::Builder pb() { return params->getRoot<proto::SaParams>(); }
  SaKey key() const;
  bool larval() const;
};

class Sad {
 public:
  static constexpr std::uint64_t kSeqBlock = 1u << 16;
  static constexpr std::uint64_t kIvBlock = 1u << 20;
  // A random start for an SA's counter IVs in [0, 2^63): uniform over 63
  // bits, and 2^63 IVs of headroom so that grants never wrap a u64.
  static std::uint64_t randomIvBase();

  Sa* find(const SaKey& k);
  Sa* find(SaRef ref);
  // Creates an SA in a fresh slot (or a reused one with a new generation),
  // its counter IVs from a fresh randomIvBase().
  Sa& create(proto::SaParams::Reader params);
  void erase(SaRef ref);
  // An UPDATE's old SA: taken out of the SAD (no name, find(ref) misses it)
  // with its slot reserved, so its ref stays its own: the forwarder entry and
  // broker session under it live on. reattach puts it back under its ref
  // and name (false, and it stays with the caller, if the name is taken);
  // releaseSlot frees the slot once the SA is gone for good.
  std::unique_ptr<Sa> detach(SaRef ref);
  bool reattach(std::unique_ptr<Sa>& sa);
  void releaseSlot(std::uint32_t index);
  // X_MIGRATE: new addresses (raw bytes) for SAs, under their refs (crypto
  // sessions and grants stay). All or none: false, nothing changed, if a new
  // (satype, SPI, dst) is held by an SA that is not moving or taken twice.
  struct Move {
    Sa* sa = nullptr;
    std::string src, dst;
  };
  bool move(const std::vector<Move>& moves);
  std::vector<Sa*> all(std::uint8_t satype = 0);
  std::size_t size() const { return byKey_.size(); }

  // A free SPI in [min, max] for (satype, dst), or nullopt.
  std::optional<std::uint32_t> allocateSpi(std::uint8_t satype, const std::string& dst, std::uint32_t min,
                                           std::uint32_t max);

  // Grants: record first, then return what may be sent.
  std::pair<std::uint64_t, std::uint64_t> grantSeqFromScratch(Sa& sa);  // for a (re)installed SA
  std::uint64_t extendSeq(Sa& sa);                                      // new exclusive limit
  std::pair<std::uint64_t, std::uint64_t> grantIvFromScratch(Sa& sa);
  std::uint64_t extendIv(Sa& sa);

 private:
  std::vector<std::unique_ptr<Sa>> slots_;
  std::vector<std::uint32_t> generations_;
  std::vector<std::uint32_t> freeSlots_;
  std::map<SaKey, std::uint32_t> byKey_;
};

}  // namespace ipsec::keydb
