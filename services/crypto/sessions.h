// ipsec-crypto: the session table. A session is one SA's keyed transform,
// created from keydb's keys and named by the SA's (index, generation), so a
// descriptor naming a deleted or reused slot fails instead of reaching a newer
// SA's keys. An ESP session runs kSeal/kOpen on a Transform; an AH session
// (SADB_SATYPE_AH) runs kAhSign/kAhVerify on an AhTransform, and nothing
// else. Every worker gets its own Transform instance (EVP contexts are
// not shareable between threads); the IV counter is shared and atomic.
//
// Threads: the control thread creates and destroys sessions under the
// exclusive lock; workers look sessions up under the shared lock, held for a
// whole burst.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <shared_mutex>
#include <string>
#include <vector>

#include "cryptodrv/ah_transform.h"
#include "cryptodrv/driver.h"
#include "cryptodrv/transform.h"
#include "proto/ring_abi.h"

namespace ipsec::crypto {

struct Session {
  std::uint32_t generation = 0;
  std::vector<std::unique_ptr<cryptodrv::Transform>> perWorker;        // ESP
  std::vector<std::unique_ptr<cryptodrv::AhTransform>> ahPerWorker;   // AH
  bool ah = false;
  bool ivIsCounter = false;
  std::uint8_t ivLength = 0;
  std::atomic<std::uint64_t> ivNext{0};
  std::atomic<std::uint64_t> ivLimit{0};
  std::atomic<bool> ivRequested{false};
  std::atomic<std::uint64_t> sealed{0}, opened{0}, badIcv{0}, ivExhausted{0};
  std::atomic<std::uint64_t> ahSigned{0}, ahVerified{0}, badOp{0};
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
                     std::uint64_t ivNext, std::uint64_t ivLimit, std::uint8_t layout[3], int* errorCode = nullptr);
  // An AH session: spec carries authAlg/authKey/esn/allowLegacy only.
  // layout = {ivLength 0, icvLength, padAlign 0}.
  std::string createAh(std::uint32_t index, std::uint32_t generation, const cryptodrv::TransformSpec& spec,
                       std::uint8_t layout[3], int* errorCode = nullptr);
  void destroy(std::uint32_t index, std::uint32_t generation);
  void grantIv(std::uint32_t index, std::uint32_t generation, std::uint64_t ivLimit);

  // Worker threads: processes one request in place and returns its status.
  // onIvLow(index, generation, ivNext) is called once when a session's IV
  // grant runs low (it must only post work to the control thread).
  proto::CryptoStatus process(unsigned worker, std::uint8_t* buffer, proto::CryptoRequest& req) noexcept;

  std::shared_mutex& mutex() { return mutex_; }
  std::function<void(std::uint32_t, std::uint32_t, std::uint64_t)> onIvLow;

  template <class F>
  void forEach(F&& f) {
    std::shared_lock lock(mutex_);
    for (std::uint32_t i = 0; i < sessions_.size(); ++i) {
      if (sessions_[i]) f(i, *sessions_[i]);
    }
  }

 private:
  Session* find(std::uint32_t index, std::uint32_t generation) noexcept;
  bool makeIv(Session& s, std::uint32_t index, std::uint8_t* iv) noexcept;
  proto::CryptoStatus processAh(Session& s, unsigned worker, std::uint8_t* buffer, proto::CryptoRequest& req) noexcept;
  void install(std::uint32_t index, std::unique_ptr<Session> s);

  const cryptodrv::DriverRegistry& drivers_;
  unsigned workers_;
  std::shared_mutex mutex_;
  std::vector<std::unique_ptr<Session>> sessions_;
};

}  // namespace ipsec::crypto
