// ipsec-crypto: the session table. A session is one SA's keyed transform,
// created from keydb's keys and named by the SA's (index, generation), so a
// descriptor naming a deleted or reused slot fails instead of reaching a newer
// SA's keys. An ESP session runs kSeal/kOpen on a Transform; an AH session
// (SADB_SATYPE_AH) runs kAhSign/kAhVerify on an AhTransform, and nothing
// else. Every worker gets its own Transform instance (EVP contexts are
// not shareable between threads); the IV counter is shared and atomic.
//
// Direction (DESIGN.md §3, nonce safety): an SA is sealed only by the host
// that sends on it, so a session seals (kSeal) and signs (kAhSign) only when
// keydb named it outbound, and opens (kOpen) and verifies (kAhVerify) only
// when it is not outbound (inbound, or unknown: no outbound policy names it
// yet). There is no "both": a test or tool that seals and then opens with one
// key creates two sessions. A refused op completes with kWrongDirection and
// writes nothing.
//
// Every request is judged before a byte of its buffer is touched: the worker
// checked the descriptor against its pool (lib/ring checkDescriptor), and
// process() checks each segment against the session's layout
// (request_check.h) and the op against the direction.
//
// Threads: the control thread creates and destroys sessions under the
// exclusive lock; workers look sessions up under the shared lock, held for a
// whole burst. A worker that finds a session's IV grant running low
// allocates nothing and posts nothing: it sets the session's bit in a bitmap
// made with the table and rings an eventfd; the control thread, woken by it,
// takes the bits (takeIvLow) and asks keydb for more.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <string>
#include <vector>

#include "cryptodrv/ah_transform.h"
#include "cryptodrv/driver.h"
#include "cryptodrv/transform.h"
#include "proto/ring_abi.h"
#include "ring/doorbell.h"
#include "request_check.h"

namespace ipsec::crypto {

// Which way this host uses the session's SA (proto/crypto.capnp Direction).
enum class SessionDirection : std::uint8_t { kUnknown, kOutbound, kInbound };

// May a session of this direction run this op? See the file comment.
constexpr bool directionAllows(SessionDirection d, proto::CryptoOp op) noexcept {
  const bool sends = op == proto::CryptoOp::kSeal || op == proto::CryptoOp::kAhSign;
  return sends == (d == SessionDirection::kOutbound);
}

struct Session {
  std::uint32_t generation = 0;
  std::vector<std::unique_ptr<cryptodrv::Transform>> perWorker;        // ESP
  std::vector<std::unique_ptr<cryptodrv::AhTransform>> ahPerWorker;   // AH
  SessionLayout layout;  // layout.ah: an AH session
  bool ivIsCounter = false;
  std::atomic<SessionDirection> direction{SessionDirection::kUnknown};
  std::atomic<std::uint64_t> ivNext{0};
  std::atomic<std::uint64_t> ivLimit{0};
  std::atomic<bool> ivRequested{false};  // set by the worker that found it low, cleared by a grant
  std::atomic<std::uint64_t> sealed{0}, opened{0}, badIcv{0}, ivExhausted{0};
  std::atomic<std::uint64_t> ahSigned{0}, ahVerified{0}, badOp{0};
  // Refused for the direction: seal or AH sign on a session that is not
  // outbound, open or AH verify on an outbound one.
  std::atomic<std::uint64_t> sealRefusedDirection{0}, openRefusedDirection{0};
};

// Refusals the table counts whatever session they named (a session's own
// counters go with it when it is destroyed; these totals stay).
struct RefusalCounters {
  std::atomic<std::uint64_t> sealRefusedDirection{0}, openRefusedDirection{0};
  std::atomic<std::uint64_t> ahSignRefusedDirection{0}, ahVerifyRefusedDirection{0};
  // Indexed by LayoutError (kNone unused).
  std::atomic<std::uint64_t> layout[kLayoutErrorCount]{};
  // A driver said kBadLength after the layout check passed (not expected).
  std::atomic<std::uint64_t> driverBadLength{0};
};

class SessionTable {
 public:
  static constexpr std::uint32_t kMaxSessions = 1u << 20;
  // Ask keydb for more IVs when fewer than this many remain.
  static constexpr std::uint64_t kIvLowWater = 1u << 18;

  SessionTable(const cryptodrv::DriverRegistry& drivers, unsigned workers);

  // Control thread. Returns an error text, or "" on success. On a refusal
  // *errorCode (when given) is the errno keydb answers the PF_KEY client
  // with: ENOMEM when the process's locked key memory (lib/securemem's
  // KeySlab) or the heap is exhausted, EINVAL otherwise (a key or algorithm
  // no driver runs, a legacy algorithm refused, an index out of range).
  std::string create(std::uint32_t index, std::uint32_t generation, const cryptodrv::TransformSpec& spec,
                     SessionDirection direction, std::uint64_t ivNext, std::uint64_t ivLimit, std::uint8_t layout[3],
                     int* errorCode = nullptr);
  // An AH session: spec carries authAlg/authKey/esn/allowLegacy only.
  // layout = {ivLength 0, icvLength, padAlign 0}.
  std::string createAh(std::uint32_t index, std::uint32_t generation, const cryptodrv::TransformSpec& spec,
                       SessionDirection direction, std::uint8_t layout[3], int* errorCode = nullptr);
  void destroy(std::uint32_t index, std::uint32_t generation);
  void grantIv(std::uint32_t index, std::uint32_t generation, std::uint64_t ivLimit);
  // keydb's SetDirection; a stale (index, generation) is ignored.
  void setDirection(std::uint32_t index, std::uint32_t generation, SessionDirection direction);

  // Worker threads, under the shared lock: processes one request in place
  // and returns its status. `req` passed ring::checkDescriptor against the
  // pool `buffer` belongs to; before touching a byte, process() refuses an op
  // the session's kind does not run (kBadOp), an op its direction forbids
  // (kWrongDirection), and segments that do not fit the session's layout
  // (ESP: kBadLength, AH: kBadDescriptor), each counted in refusals().
  // A seal that finds its session's IV grant low marks it for takeIvLow
  // (once per grant) and rings ivLowFd().
  proto::CryptoStatus process(unsigned worker, std::uint8_t* buffer, proto::CryptoRequest& req) noexcept;
  const RefusalCounters& refusals() const noexcept { return refusals_; }

  // Control thread: readable when a session ran low since the last takeIvLow.
  int ivLowFd() const noexcept { return ivLowBell_.fd(); }
  // Control thread: the sessions that ran low since the last call, each once,
  // with where their counter is now (what keydb's IvRequest carries).
  struct IvLow {
    std::uint32_t index, generation;
    std::uint64_t ivNext;
  };
  std::vector<IvLow> takeIvLow();

  std::shared_mutex& mutex() { return mutex_; }

  template <class F>
  void forEach(F&& f) {
    std::shared_lock lock(mutex_);
    for (std::uint32_t i = 0; i < sessions_.size(); ++i) {
      if (sessions_[i]) f(i, *sessions_[i]);
    }
  }

 private:
  Session* find(std::uint32_t index, std::uint32_t generation) noexcept;
  // A seal request's block of counter IVs (sessions.cpp).
  struct CounterIvs {
    std::uint64_t first = 0;
    std::uint16_t usable = 0;
  };
  CounterIvs reserveCounterIvs(Session& s, std::uint32_t index, std::uint16_t count) noexcept;
  static bool makeIv(const Session& s, const CounterIvs& counters, std::uint16_t i, std::uint8_t* iv) noexcept;
  void noteIvLow(std::uint32_t index) noexcept;
  proto::CryptoStatus refuseEarly(Session& s, const proto::CryptoRequest& req) noexcept;
  proto::CryptoStatus processAh(Session& s, unsigned worker, std::uint8_t* buffer, proto::CryptoRequest& req) noexcept;
  proto::CryptoStatus processEsp(Session& s, unsigned worker, std::uint8_t* buffer, proto::CryptoRequest& req) noexcept;
  void install(std::uint32_t index, std::unique_ptr<Session> s);

  const cryptodrv::DriverRegistry& drivers_;
  unsigned workers_;
  std::shared_mutex mutex_;
  std::vector<std::unique_ptr<Session>> sessions_;
  RefusalCounters refusals_;
  // Bit i: session i ran low (set by workers, taken by the control thread).
  // Sized for kMaxSessions up front (128 KiB) so that setting one never allocates.
  std::unique_ptr<std::atomic<std::uint64_t>[]> ivLowBits_;
  ring::Doorbell ivLowBell_;
};

}  // namespace ipsec::crypto
