// The hostile forwarder's request generator and its oracle: for each
// descriptor it makes, what the broker must answer (DESIGN §2: the broker
// bounds-checks every descriptor and uses only the sessions issued to its
// ring; §3 nonce safety: it seals only under outbound sessions and opens only
// under the others).
//
// Every adversarial request is a valid request with exactly one fault put
// into it, so the status it deserves does not depend on the order in which
// the broker checks things. The broker runs in another process; this code
// only builds descriptors and fills buffers the test owns.
#pragma once

#include <cstdint>
#include <random>
#include <string_view>
#include <vector>

#include "broker_child.h"
#include "proto/ring_abi.h"
#include "ring_client.h"

namespace ipsec::hostile {

// What this test names each session; index into Adversary::sessions().
enum SessionRole : int {
  kOut,        // ESP GCM, outbound: seals
  kOut2,       // a second outbound ESP session: its own IV counter
  kIn,         // ESP GCM, inbound: opens
  kUnknown,    // ESP GCM, direction unknown: opens, refuses to seal
  kLoop,       // inbound with kOut's key: opens what kOut sealed
  kAhOut,      // AH HMAC-SHA-256, outbound
  kAhIn,       // AH HMAC-SHA-256, inbound
  kReborn,     // outbound ESP whose slot held an older generation (stale)
  kRoleCount,
};

enum class Fault : std::uint8_t {
  kNone,           // a valid request
  kUnknownOp,
  kBufferIndex,
  kSegmentCount,
  kZeroLength,
  kOutOfBuffer,
  kStride,
  kSessionIndex,   // a slot never issued
  kGeneration,     // a live slot, wrong or stale generation
  kWrongKind,      // AH op on an ESP session or ESP op on an AH one
  kWrongDirection, // seal under an inbound/unknown session, open under outbound
  kShortSegment,   // ESP: shorter than header + IV + trailer + ICV, or misaligned
  kIcvOffset,      // AH: the ICV field does not fit in the segment
  kCount,
};
std::string_view toString(Fault fault);

struct Planned {
  proto::CryptoRequest request{};
  Fault fault = Fault::kNone;
  std::vector<proto::CryptoStatus> allowed;  // the statuses it deserves
  std::vector<const char*> counters;          // the broker counters its refusal adds one to
  int role = -1;                              // which session it names (or was based on)
  bool quiet = false;        // its buffer is not hammered: contents are checked
  bool genuineOpen = false;  // opens what kOut sealed in that buffer: keep its bytes
};

// Buffers [0, kHammered) are rewritten continuously by the TOCTOU thread;
// the rest are "quiet": the test knows every byte of them, and the odd ones
// below the last (kCanary) are never named at all.
inline constexpr std::uint32_t kHammered = 8;

class Adversary {
 public:
  Adversary(std::uint64_t seed, std::uint32_t bufferCount, std::uint32_t bufferSize);

  static std::vector<SessionSpec> sessionSpecs(std::mt19937_64& rng);
  void setSessions(std::vector<SessionSpec> specs) { sessions_ = std::move(specs); }
  const std::vector<SessionSpec>& sessions() const { return sessions_; }
  std::uint32_t staleGeneration() const { return staleGeneration_; }
  void setStaleGeneration(std::uint32_t g) { staleGeneration_ = g; }

  // A burst of requests; each quiet buffer is named at most once.
  // `sealedQuiet` lists quiet buffers holding a request kOut sealed whole
  // (it is consumed: those become genuine opens under kLoop).
  std::vector<Planned> burst(std::vector<Planned>& sealedQuiet);

  static bool isCanary(std::uint32_t index, std::uint32_t bufferCount) {
    return index >= kHammered && index % 2 == 1 && index + 1 < bufferCount;
  }
  std::mt19937_64& rng() { return rng_; }

 private:
  Planned valid(bool quiet, std::uint32_t buffer);
  Planned faulty(Fault fault, bool quiet, std::uint32_t buffer);
  void espLayout(proto::CryptoRequest& r, bool multi);
  void ahLayout(proto::CryptoRequest& r);
  void name(proto::CryptoRequest& r, int role, proto::CryptoOp op);
  std::uint32_t pick(std::uint32_t below) { return static_cast<std::uint32_t>(rng_() % below); }

  std::mt19937_64 rng_;
  std::uint32_t bufferCount_, bufferSize_;
  std::vector<SessionSpec> sessions_;
  std::uint32_t staleGeneration_ = 0;
  std::uint64_t cookie_ = 0;
};

// AH as the tests lay it out: an IPv4 header, then AH; the ICV field sits at
// 20 + 12, HMAC-SHA-256-128 makes it 16 bytes.
inline constexpr std::uint16_t kAhIcvOffset = 32;
inline constexpr std::uint32_t kAhIcvLength = 16;
// kEspMinLength (ESP AES-GCM-16's shortest segment): ring_client.h.

}  // namespace ipsec::hostile
