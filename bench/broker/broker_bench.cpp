// What the crypto broker's ring hop costs: ESP seal and open, and AH sign and
// verify (ring ops kSeal, kOpen, kAhSign, kAhVerify), through a real
// ipsec-crypto Worker thread against the same library calls done in-process
// (Transform::sealWithIv/open, AhTransform::sign/verify), for every ESP and
// AH algorithm the broker runs. Open and verify take packets sealed/signed
// with the row's key before the clock starts, copied into the buffer per op
// on both paths (as a socket read would put them there).
//
// Runs as one benchmark process with two threads; nothing is trusted or
// untrusted here, but the broker path uses the production pieces unchanged:
// a memfd Region (lib/ring), the SessionTable and Worker of services/crypto
// (compiled from their sources by this folder's CMakeLists.txt), eventfd
// doorbells, and esp::encapsulate for the framing.
//
// For each algorithm (algorithms(): AES-CBC 128/192/256 with each HMAC,
// XCBC and CMAC, AES-CTR, AES-GCM-8/12/16, AES-CCM-8/12/16, AES-GMAC,
// ChaCha20-Poly1305 and AES-GCM on both drivers, NULL+HMAC, the legacy
// 3DES and MD5) and inner payload size (64, 512, 1420 bytes), one iteration
// is one burst of 32 packets:
//   in-process  the benchmark thread frames each packet in a pool buffer
//               (esp::encapsulate), makes the IV as the broker does (a
//               counter for counter-mode ciphers; for CBC, random bytes from
//               a 4 KiB pool refilled by one RAND_bytes call, like the
//               worker's) and calls Transform::sealWithIv;
//   broker      the benchmark thread plays the forwarder: it frames the burst
//               in pool buffers, enqueues 32 CryptoRequests, rings the
//               worker's doorbell only if the worker sleeps, and reaps
//               completions, sleeping on its completion doorbell when it has
//               no free buffer and nothing has completed (as ipsec-forwarder
//               does). Up to kInFlightBursts bursts are in flight, so framing
//               and crypto overlap on two cores as in the real pipeline.
// So the two differ only by the hop: rings, doorbells, the worker's
// descriptor checks and session lookup, the cross-core cache traffic, and the
// scheduler. One extra baseline, in-process-rand-per-iv, calls RAND_bytes for
// every CBC IV, as this benchmark's baseline once did, so that older figures
// can be compared. At the end the program prints broker/in-process packets/s
// per algorithm and size, sorted (with repetitions, the best run of each).
// `--quick` shortens every run (the whole matrix in under two minutes);
// other flags go to Google Benchmark.
// Timing is never a failure; a seal that does not succeed is (it would mean
// the figures measure an error path).
#include <benchmark/benchmark.h>
#include <linux/pfkeyv2.h>
#include <openssl/rand.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "clock/clock.h"
#include "control/unique_fd.h"
#include "cryptodrv/ah_transform.h"
#include "cryptodrv/driver.h"
#include "esp/esp.h"
#include "ring/doorbell.h"
#include "ring/endpoints.h"
#include "ring/pool.h"
#include "ring/region.h"
#include "sessions.h"
#include "worker.h"

namespace ipsec::bench {
namespace {

constexpr std::size_t kBurst = 32;
constexpr std::uint32_t kInFlightBursts = 4;
// ipsec-forwarder's Forwarder::kCompletionPollNs: how long after a submit it
// polls its completion ring before sleeping on the completion doorbell.
constexpr std::uint64_t kCompletionPollNs = 50000;
// Room before the inner packet for the ESP header and the largest IV.
constexpr std::size_t kHeadroom = 64;
constexpr std::uint32_t kSpi = 0x1001;
constexpr int kPayloadSizes[] = {64, 512, 1420};

// 2 KiB buffers hold a 1420-byte inner packet with ESP around it; the rings
// are larger than the pool so that an enqueue never finds them full.
const ring::RegionConfig kRegionConfig{256, 256, 128, 2048};

// Fixed test keys: the figures do not depend on them. Long enough for the
// longest key of any algorithm (AES-256 + salt, HMAC-SHA-512).
constexpr std::array<std::uint8_t, 64> keyBytes(std::uint8_t seed) {
  std::array<std::uint8_t, 64> k{};
  for (std::size_t i = 0; i < k.size(); ++i) k[i] = static_cast<std::uint8_t>(seed + i * 7);
  return k;
}
constexpr std::array<std::uint8_t, 64> kEncKey = keyBytes(0x4c);
constexpr std::array<std::uint8_t, 64> kAuthKey = keyBytes(0x11);

struct Algorithm {
  std::string name;    // row name, e.g. aes-gcm-16-128 or chacha20-poly1305/sodium
  bool preferSodium;   // the broker's registry with libsodium first
  std::uint8_t encAlg;
  std::size_t encKeyLength;  // with the salt or nonce the RFC appends
  std::uint8_t authAlg;
  std::size_t authKeyLength;
  bool legacy;  // 3DES, MD5: the broker runs them with allow_legacy only

  cryptodrv::TransformSpec spec() const {
    return {encAlg, authAlg, std::span(kEncKey.data(), encKeyLength), std::span(kAuthKey.data(), authKeyLength),
            false, legacy};
  }
};

// Every algorithm the broker runs. AEAD key lengths include the salt
// (4 bytes; 3 for CCM), AES-CTR's the 4-byte nonce.
const std::vector<Algorithm>& algorithms() {
  static const std::vector<Algorithm> all = [] {
    std::vector<Algorithm> v;
    struct Mac {
      const char* name;
      std::uint8_t id;
      std::size_t keyLength;
    };
    const Mac kHmacs[] = {{"hmac-sha1", SADB_AALG_SHA1HMAC, 20},
                          {"hmac-sha256", SADB_X_AALG_SHA2_256HMAC, 32},
                          {"hmac-sha384", SADB_X_AALG_SHA2_384HMAC, 48},
                          {"hmac-sha512", SADB_X_AALG_SHA2_512HMAC, 64}};
    for (int bits : {128, 192, 256}) {
      const std::size_t key = static_cast<std::size_t>(bits / 8);
      const std::string aes = std::to_string(bits);
      for (const Mac& m : kHmacs) {
        v.push_back({"aes-cbc-" + aes + "+" + m.name, false, SADB_X_EALG_AESCBC, key, m.id, m.keyLength, false});
      }
      v.push_back({"aes-ctr-" + aes + "+hmac-sha256", false, SADB_X_EALG_AESCTR, key + 4, SADB_X_AALG_SHA2_256HMAC,
                   32, false});
      const std::pair<int, std::uint8_t> kGcm[] = {
          {8, SADB_X_EALG_AES_GCM_ICV8}, {12, SADB_X_EALG_AES_GCM_ICV12}, {16, SADB_X_EALG_AES_GCM_ICV16}};
      const std::pair<int, std::uint8_t> kCcm[] = {
          {8, SADB_X_EALG_AES_CCM_ICV8}, {12, SADB_X_EALG_AES_CCM_ICV12}, {16, SADB_X_EALG_AES_CCM_ICV16}};
      for (auto [icv, id] : kGcm) {
        v.push_back({"aes-gcm-" + std::to_string(icv) + "-" + aes, false, id, key + 4, SADB_AALG_NONE, 0, false});
      }
      for (auto [icv, id] : kCcm) {
        v.push_back({"aes-ccm-" + std::to_string(icv) + "-" + aes, false, id, key + 3, SADB_AALG_NONE, 0, false});
      }
      v.push_back({"aes-gmac-" + aes, false, SADB_X_EALG_NULL_AES_GMAC, key + 4, SADB_AALG_NONE, 0, false});
    }
    v.push_back({"aes-cbc-128+aes-xcbc", false, SADB_X_EALG_AESCBC, 16, SADB_X_AALG_AES_XCBC_MAC, 16, false});
    v.push_back({"aes-cbc-128+aes-cmac", false, SADB_X_EALG_AESCBC, 16, cryptodrv::kSadbXAalgAesCmac96, 16, false});
    v.push_back({"chacha20-poly1305", false, cryptodrv::kSadbXEalgChacha20Poly1305, 36, SADB_AALG_NONE, 0, false});
    v.push_back({"chacha20-poly1305/sodium", true, cryptodrv::kSadbXEalgChacha20Poly1305, 36, SADB_AALG_NONE, 0,
                 false});
    v.push_back({"aes-gcm-16-256/sodium", true, SADB_X_EALG_AES_GCM_ICV16, 36, SADB_AALG_NONE, 0, false});
    v.push_back({"null+hmac-sha1", false, SADB_EALG_NULL, 0, SADB_AALG_SHA1HMAC, 20, false});
    v.push_back({"null+hmac-sha256", false, SADB_EALG_NULL, 0, SADB_X_AALG_SHA2_256HMAC, 32, false});
    v.push_back({"3des-cbc+hmac-sha1", false, SADB_EALG_3DESCBC, 24, SADB_AALG_SHA1HMAC, 20, true});
    v.push_back({"3des-cbc+hmac-md5", false, SADB_EALG_3DESCBC, 24, SADB_AALG_MD5HMAC, 16, true});
    v.push_back({"aes-cbc-128+hmac-md5", false, SADB_X_EALG_AESCBC, 16, SADB_AALG_MD5HMAC, 16, true});
    return v;
  }();
  return all;
}

// Every AH algorithm the broker runs (kAhSign/kAhVerify on an AhTransform).
const std::vector<Algorithm>& ahAlgorithms() {
  static const std::vector<Algorithm> all = {
      {"ah/hmac-sha1-96", false, SADB_EALG_NONE, 0, SADB_AALG_SHA1HMAC, 20, false},
      {"ah/hmac-sha256-128", false, SADB_EALG_NONE, 0, SADB_X_AALG_SHA2_256HMAC, 32, false},
      {"ah/hmac-sha384-192", false, SADB_EALG_NONE, 0, SADB_X_AALG_SHA2_384HMAC, 48, false},
      {"ah/hmac-sha512-256", false, SADB_EALG_NONE, 0, SADB_X_AALG_SHA2_512HMAC, 64, false},
      {"ah/aes-xcbc-96", false, SADB_EALG_NONE, 0, SADB_X_AALG_AES_XCBC_MAC, 16, false},
      {"ah/aes-cmac-96", false, SADB_EALG_NONE, 0, cryptodrv::kSadbXAalgAesCmac96, 16, false},
      {"ah/hmac-md5-96", false, SADB_EALG_NONE, 0, SADB_AALG_MD5HMAC, 16, true},
  };
  return all;
}

// What one row measures. kSeal frames a fresh packet per seal (as a TUN read);
// the others copy a packet prepared before the clock starts into the buffer
// (as a socket read would) and run the op on it.
enum class Op { kSeal, kOpen, kAhSign, kAhVerify };
constexpr Op kEspOps[] = {Op::kSeal, Op::kOpen};
constexpr Op kAhOps[] = {Op::kAhSign, Op::kAhVerify};

const char* opName(Op op) {
  switch (op) {
    case Op::kSeal: return "seal";
    case Op::kOpen: return "open";
    case Op::kAhSign: return "ah-sign";
    case Op::kAhVerify: return "ah-verify";
  }
  return "?";
}

proto::CryptoOp ringOp(Op op) {
  switch (op) {
    case Op::kSeal: return proto::CryptoOp::kSeal;
    case Op::kOpen: return proto::CryptoOp::kOpen;
    case Op::kAhSign: return proto::CryptoOp::kAhSign;
    case Op::kAhVerify: return proto::CryptoOp::kAhVerify;
  }
  return proto::CryptoOp::kSeal;
}

// The CBC row also measured with the old baseline (RAND_bytes per IV).
constexpr const char* kRandPerIvRow = "aes-cbc-128+hmac-sha256";

const cryptodrv::DriverRegistry& registry(bool preferSodium) {
  static const cryptodrv::DriverRegistry openssl = cryptodrv::DriverRegistry::withDefaultDrivers();
  static const cryptodrv::DriverRegistry sodium = cryptodrv::DriverRegistry::withDefaultDrivers("sodium");
  return preferSodium ? sodium : openssl;
}

// Random IV bytes as the crypto worker draws them (services/crypto/
// sessions.cpp, randomIv): a 4 KiB pool per thread refilled by one
// RAND_bytes call, each byte handed out once. Without it the baseline pays a
// RAND_bytes call per packet that the broker does not.
class IvPool {
 public:
  bool take(std::uint8_t* iv, std::size_t len) noexcept {
    if (len > pool_.size()) return false;
    if (pool_.size() - used_ < len) {
      if (RAND_bytes(pool_.data(), static_cast<int>(pool_.size())) != 1) return false;
      used_ = 0;
    }
    std::memcpy(iv, pool_.data() + used_, len);
    explicit_bzero(pool_.data() + used_, len);
    used_ += len;
    return true;
  }

 private:
  std::array<std::uint8_t, 4096> pool_{};
  std::size_t used_ = pool_.size();
};

std::span<std::uint8_t> bytes(std::span<std::byte> b) noexcept {
  return {reinterpret_cast<std::uint8_t*>(b.data()), b.size()};
}

// A spin-wait hint to the core (and the hypervisor) while polling a ring.
inline void cpuRelax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// The fastest stretch of kWindow consecutive bursts in a run, as packets/s.
// On a machine shared with other builds the mean measures the neighbours as
// much as the code (a thread preempted for a time slice, or a spinning one
// spending its fair share); a window of a few hundred µs that no other task
// touched is what the path costs on two free cores. Both paths report it
// ("best_window"), and the summary prints its ratio beside the mean's.
class BestWindow {
 public:
  static constexpr std::size_t kWindow = 16;

  void burstDone() noexcept {
    const std::uint64_t now = clock::monotonicNs();
    if (count_ >= kWindow) best_ = std::min(best_, now - times_[count_ % kWindow]);
    times_[count_ % kWindow] = now;
    ++count_;
  }
  double packetsPerSecond() const noexcept {
    return best_ == ~std::uint64_t{0} ? 0 : static_cast<double>(kWindow * kBurst) * 1e9 / static_cast<double>(best_);
  }

 private:
  std::array<std::uint64_t, kWindow> times_{};
  std::uint64_t count_ = 0;
  std::uint64_t best_ = ~std::uint64_t{0};
};

control::UniqueFd dupFd(int fd) {
  control::UniqueFd copy(::dup(fd));
  if (!copy) throw std::runtime_error("dup failed");
  return copy;
}

// Fills a fresh inner packet: an IPv4 version nibble, so that encapsulate()
// picks next header 4 as for a packet read from the TUN.
void writeInnerPacket(std::span<std::uint8_t> buffer, std::size_t length) noexcept {
  std::memset(buffer.data() + kHeadroom, 0x5a, length);
  buffer[kHeadroom] = 0x45;
}

// Frames the inner packet at kHeadroom (the payload is rewritten first, as a
// TUN read would, because the previous seal left ciphertext there).
esp::EncapResult frame(std::span<std::uint8_t> buffer, std::size_t payload, std::uint32_t seq,
                       const esp::EspLayout& layout) noexcept {
  writeInnerPacket(buffer, payload);
  return esp::encapsulate(buffer, kHeadroom, payload, kSpi, seq, layout);
}

// A packet prepared before the clock starts, copied into a pool buffer per
// op: an ESP packet sealed with the row's key (for open), or an IPv4 packet
// with an AH header (20 + 12 bytes, then the ICV field) around the payload,
// unsigned for ah-sign and signed for ah-verify. One per buffer of a burst,
// each with its own sequence number.
struct Prepared {
  std::vector<std::uint8_t> bytes;  // [0, length): what lands at `offset` in the buffer
  std::uint32_t offset = 0;
  std::uint16_t icvOffset = 0;  // AH: from the start of the packet
};

std::vector<Prepared> prepare(const Algorithm& alg, Op op, std::size_t payload, std::string* error) {
  std::vector<Prepared> out;
  std::vector<std::uint8_t> buffer(kRegionConfig.bufferSize);
  if (op == Op::kOpen) {
    auto t = registry(alg.preferSodium).makeTransform(alg.spec(), error);
    if (!t) return {};
    const esp::EspLayout layout{t->ivLength(), t->icvLength(), t->padAlign()};
    IvPool ivPool;
    for (std::uint32_t i = 0; i < kBurst; ++i) {
      const auto framed = frame(buffer, payload, i + 1, layout);
      std::uint8_t iv[cryptodrv::Transform::kMaxIvLength] = {};
      if (t->ivIsCounter()) {
        for (int b = 0; b < 4 && b < t->ivLength(); ++b) {
          iv[t->ivLength() - 1 - b] = static_cast<std::uint8_t>((i + 1) >> (8 * b));
        }
      } else if (!ivPool.take(iv, t->ivLength())) {
        *error = "no random IV";
        return {};
      }
      if (!framed.ok() || t->sealWithIv(buffer.data() + framed.offset, framed.length, 0, iv) != cryptodrv::Status::kOk) {
        *error = "could not seal a packet to open";
        return {};
      }
      out.push_back({{buffer.begin() + static_cast<std::ptrdiff_t>(framed.offset),
                      buffer.begin() + static_cast<std::ptrdiff_t>(framed.offset + framed.length)},
                     static_cast<std::uint32_t>(framed.offset), 0});
    }
    return out;
  }
  auto t = cryptodrv::AhTransform::create(alg.spec(), error);
  if (!t) return {};
  const std::size_t icv = t->icvLength();
  const std::size_t ahLength = 12 + icv;  // a multiple of 4 for every ICV length here
  const std::size_t length = 20 + ahLength + payload;
  for (std::uint32_t i = 0; i < kBurst; ++i) {
    std::vector<std::uint8_t> p(length, 0x5a);
    // IPv4 header, canonicalised as lib/ah leaves it (TOS, flags, TTL, checksum zero).
    std::fill(p.begin(), p.begin() + 20 + static_cast<std::ptrdiff_t>(ahLength), 0);
    p[0] = 0x45;
    p[2] = static_cast<std::uint8_t>(length >> 8);
    p[3] = static_cast<std::uint8_t>(length);
    p[9] = 51;
    p[12] = 192, p[13] = 0, p[14] = 2, p[15] = 1;
    p[16] = 192, p[17] = 0, p[18] = 2, p[19] = 2;
    p[20] = 4;  // next header: IPv4 (tunnel mode)
    p[21] = static_cast<std::uint8_t>(ahLength / 4 - 2);
    p[24] = static_cast<std::uint8_t>(kSpi >> 24), p[25] = static_cast<std::uint8_t>(kSpi >> 16);
    p[26] = static_cast<std::uint8_t>(kSpi >> 8), p[27] = static_cast<std::uint8_t>(kSpi);
    p[31] = static_cast<std::uint8_t>(i + 1);  // sequence number
    p[20 + ahLength] = 0x45;
    if (op == Op::kAhVerify && t->sign(p.data(), p.size(), 32, 0) != cryptodrv::Status::kOk) {
      *error = "could not sign a packet to verify";
      return {};
    }
    out.push_back({std::move(p), static_cast<std::uint32_t>(kHeadroom), 32});
  }
  return out;
}

// ---- in-process baseline ------------------------------------------------------

// randPerIv: the old baseline, a RAND_bytes call for every random IV.
void inProcessSeal(benchmark::State& state, const Algorithm& alg, int payload, bool randPerIv) {
  std::string error;
  auto t = registry(alg.preferSodium).makeTransform(alg.spec(), &error);
  if (!t) {
    state.SkipWithError(error.c_str());
    return;
  }
  const esp::EspLayout layout{t->ivLength(), t->icvLength(), t->padAlign()};
  // The same pool buffers the broker path uses, from a region of its own.
  ring::Region region = ring::Region::create(kRegionConfig);
  ring::BufferPool pool(region);
  std::array<std::uint32_t, kBurst> buffers{};
  for (auto& b : buffers) b = *pool.alloc();

  IvPool ivPool;
  BestWindow window;
  std::uint64_t ivCounter = 1;
  std::uint32_t seq = 0;
  std::uint64_t sealed = 0;
  const char* failure = nullptr;
  for (auto _ : state) {
    for (std::uint32_t index : buffers) {
      auto buffer = bytes(pool.data(index));
      const auto framed = frame(buffer, static_cast<std::size_t>(payload), ++seq, layout);
      std::uint8_t iv[cryptodrv::Transform::kMaxIvLength] = {};
      // The IV as SessionTable::makeIv makes it, so that the ratio is the hop only.
      if (t->ivIsCounter()) {
        const std::uint64_t n = ivCounter++;
        for (int i = 0; i < 8 && i < t->ivLength(); ++i) iv[t->ivLength() - 1 - i] = static_cast<std::uint8_t>(n >> (8 * i));
      } else if (randPerIv ? RAND_bytes(iv, t->ivLength()) != 1 : !ivPool.take(iv, t->ivLength())) {
        failure = "no random IV";
        break;
      }
      if (!framed.ok() || t->sealWithIv(buffer.data() + framed.offset, framed.length, 0, iv) != cryptodrv::Status::kOk) {
        failure = "in-process seal failed";
        break;
      }
      benchmark::DoNotOptimize(buffer.data());
    }
    if (failure) {
      state.SkipWithError(failure);
      break;
    }
    sealed += kBurst;
    window.burstDone();
  }
  // The broker path's counters, zero here, so the console prints one table.
  state.counters["fwd_sleeps/burst"] = 0;
  state.counters["worker_wakeups/burst"] = 0;
  state.counters["worker_burst"] = 0;
  state.counters["worker_busy"] = 0;
  state.counters["worker_ns/pkt"] = 0;
  state.counters["best_window"] = window.packetsPerSecond();
  state.SetItemsProcessed(static_cast<std::int64_t>(sealed));
  state.SetBytesProcessed(static_cast<std::int64_t>(sealed) * payload);
}

// open, ah-sign, ah-verify in-process: copy the prepared packet in, run the
// same library call the worker makes.
void inProcessOther(benchmark::State& state, const Algorithm& alg, Op op, int payload) {
  std::string error;
  const auto prepared = prepare(alg, op, static_cast<std::size_t>(payload), &error);
  std::unique_ptr<cryptodrv::Transform> esp;
  std::unique_ptr<cryptodrv::AhTransform> ah;
  if (op == Op::kOpen) {
    esp = registry(alg.preferSodium).makeTransform(alg.spec(), &error);
  } else {
    ah = cryptodrv::AhTransform::create(alg.spec(), &error);
  }
  if (prepared.empty() || (!esp && !ah)) {
    state.SkipWithError(error.c_str());
    return;
  }
  ring::Region region = ring::Region::create(kRegionConfig);
  ring::BufferPool pool(region);
  std::array<std::uint32_t, kBurst> buffers{};
  for (auto& b : buffers) b = *pool.alloc();
  std::uint64_t done = 0;
  BestWindow window;
  bool failed = false;
  for (auto _ : state) {
    for (std::size_t i = 0; i < kBurst; ++i) {
      auto buffer = bytes(pool.data(buffers[i]));
      const Prepared& p = prepared[i];
      std::memcpy(buffer.data() + p.offset, p.bytes.data(), p.bytes.size());
      std::uint8_t* at = buffer.data() + p.offset;
      cryptodrv::Status st;
      switch (op) {
        case Op::kOpen: st = esp->open(at, p.bytes.size(), 0); break;
        case Op::kAhSign: st = ah->sign(at, p.bytes.size(), p.icvOffset, 0); break;
        default: st = ah->verify(at, p.bytes.size(), p.icvOffset, 0); break;
      }
      if (st != cryptodrv::Status::kOk) failed = true;
      benchmark::DoNotOptimize(buffer.data());
    }
    if (failed) {
      state.SkipWithError("an in-process op failed");
      break;
    }
    done += kBurst;
    window.burstDone();
  }
  state.counters["fwd_sleeps/burst"] = 0;
  state.counters["worker_wakeups/burst"] = 0;
  state.counters["worker_burst"] = 0;
  state.counters["worker_busy"] = 0;
  state.counters["worker_ns/pkt"] = 0;
  state.counters["best_window"] = window.packetsPerSecond();
  state.SetItemsProcessed(static_cast<std::int64_t>(done));
  state.SetBytesProcessed(static_cast<std::int64_t>(done) * payload);
}

// ---- broker path --------------------------------------------------------------

// The forwarder's half of one ring pair plus a running crypto Worker. Members
// are declared so that the worker stops before the sessions it uses go away.
class BrokerRig {
 public:
  BrokerRig(const Algorithm& alg, Op op, std::size_t payload)
      : op_(op),
        region_(ring::Region::create(kRegionConfig)),
        pool_(region_),
        requests_(ring::requestProducer(region_)),
        completions_(ring::completionConsumer(region_)),
        requestBell_(ring::Doorbell::create()),
        completionBell_(ring::Doorbell::create()),
        sessions_(registry(alg.preferSodium), 1) {
    std::uint8_t layout[3] = {};
    // Generation 1 at index 0; an IV grant no benchmark can exhaust.
    const bool ah = op == Op::kAhSign || op == Op::kAhVerify;
    // The op's own direction: seal and sign need an outbound session, open
    // and verify an inbound one (a session runs only one way).
    const auto direction = op == Op::kSeal || op == Op::kAhSign ? crypto::SessionDirection::kOutbound
                                                                : crypto::SessionDirection::kInbound;
    std::string error = ah ? sessions_.createAh(0, 1, alg.spec(), direction, layout)
                           : sessions_.create(0, 1, alg.spec(), direction, 1, std::uint64_t{1} << 62, layout);
    if (!error.empty()) throw std::runtime_error(error);
    if (op != Op::kSeal) {
      prepared_ = prepare(alg, op, payload, &error);
      if (prepared_.empty()) throw std::runtime_error(error);
    }
    layout_ = {layout[0], layout[1], layout[2]};
    // The worker attaches its own mapping of the same memfd, as ipsec-crypto does.
    auto attached = ring::Region::attach(dupFd(region_.fd()), &kRegionConfig);
    if (!attached.region) throw std::runtime_error(ring::toString(attached.error));
    worker_ = std::make_unique<crypto::Worker>(0, std::move(*attached.region), ring::Doorbell(dupFd(requestBell_.fd())),
                                               ring::Doorbell(dupFd(completionBell_.fd())), sessions_);
    worker_->start();
  }
  ~BrokerRig() { worker_.reset(); }

  BrokerRig(const BrokerRig&) = delete;
  BrokerRig& operator=(const BrokerRig&) = delete;

  // Frames and submits one burst; false if framing failed (a setup bug).
  bool submitBurst(std::size_t payload) noexcept {
    std::array<proto::CryptoRequest, kBurst> burst{};
    for (std::size_t i = 0; i < kBurst; ++i) {
      auto& req = burst[i];
      const auto index = pool_.alloc();
      if (!index) return false;  // the caller waited for kBurst free buffers
      auto buffer = bytes(pool_.data(*index));
      if (op_ == Op::kSeal) {
        const auto framed = frame(buffer, payload, ++seq_, layout_);
        if (!framed.ok()) return false;
        req.offset = static_cast<std::uint32_t>(framed.offset);
        req.length = static_cast<std::uint32_t>(framed.length);
      } else {
        const Prepared& p = prepared_[i];
        std::memcpy(buffer.data() + p.offset, p.bytes.data(), p.bytes.size());
        req.offset = p.offset;
        req.length = static_cast<std::uint32_t>(p.bytes.size());
        req.icvOffset = p.icvOffset;
      }
      req.cookie = *index;
      req.session = 0;
      req.sessionGeneration = 1;
      req.op = ringOp(op_);
      req.status = proto::CryptoStatus::kPending;
      req.segmentCount = 1;
      req.bufferIndex = *index;
      req.segmentStride = req.length;
    }
    // The rings hold more slots than the pool has buffers: this never falls short.
    const std::size_t n = requests_.enqueue(burst);
    inFlight_ += n;
    if (ring::notifyPeer(requests_, requestBell_)) ++wakeups_;
    pollUntilNs_ = clock::monotonicNs() + kCompletionPollNs;
    return n == kBurst;
  }

  // Reaps every completion available now and frees their buffers.
  void reap() noexcept {
    std::array<proto::CryptoCompletion, kBurst> done{};
    for (;;) {
      const std::size_t n = completions_.dequeue(done);
      for (std::size_t i = 0; i < n; ++i) {
        if (done[i].status == proto::CryptoStatus::kOk) {
          ++completed_;
        } else {
          ++failed_;
        }
        pool_.free(done[i].bufferIndex);
      }
      inFlight_ -= n;
      // As ipsec-forwarder: a worker waiting for completion slots sleeps on
      // its request bell until we free some.
      if (n != 0) ring::notifyPeer(completions_, requestBell_);
      if (n < done.size()) return;
    }
  }

  // Waits until a burst's worth of buffers is free, as ipsec-forwarder waits
  // for its completions (services/forwarder/control.cpp serviceCompletions):
  // for kCompletionPollNs after a submit it polls the completion ring,
  // yielding the core while the worker has not taken the requests yet (it
  // may be waiting for this core) and pausing once it has; only then does it
  // sleep on the completion doorbell. A bench that slept at once would
  // measure a wake-up per burst that the forwarder no longer pays.
  void waitForBuffers() noexcept {
    reap();
    while (pool_.available() < kBurst || inFlight_ > (kInFlightBursts - 1) * kBurst) {
      if (clock::monotonicNs() < pollUntilNs_) {
        if (requests_.freeSlots() != requests_.capacity()) {
          sched_yield();
        } else {
          cpuRelax();
        }
      } else {
        ++sleeps_;
        ring::sleepUntilReady(completions_, completionBell_, 100);
      }
      reap();
    }
  }

  void drain() noexcept {
    while (inFlight_ != 0) {
      if (completions_.available() == 0) ring::sleepUntilReady(completions_, completionBell_, 100);
      reap();
    }
  }

  std::uint64_t completed() const noexcept { return completed_; }
  std::uint64_t failed() const noexcept { return failed_; }
  std::uint64_t sleeps() const noexcept { return sleeps_; }
  std::uint64_t wakeups() const noexcept { return wakeups_; }
  const crypto::WorkerCounters& workerCounters() const noexcept { return worker_->counters(); }

 private:
  Op op_;
  std::vector<Prepared> prepared_;
  ring::Region region_;
  ring::BufferPool pool_;
  ring::RequestProducer requests_;
  ring::CompletionConsumer completions_;
  ring::Doorbell requestBell_;     // we ring it: the worker sleeps on it
  ring::Doorbell completionBell_;  // the worker rings it: we sleep on it
  crypto::SessionTable sessions_;
  std::unique_ptr<crypto::Worker> worker_;
  esp::EspLayout layout_{};
  std::uint32_t seq_ = 0;
  std::uint64_t pollUntilNs_ = 0;
  std::uint64_t inFlight_ = 0, completed_ = 0, failed_ = 0, sleeps_ = 0, wakeups_ = 0;
};

// The CPU time of the other threads (here: the worker) as a share of the
// wall time between two readings: near 1, the worker never waited (the hop's
// cost is in its CPU time); well below 1, it waited for work or for a core.
struct CpuSplit {
  double wall, process, thisThread;

  static CpuSplit now() noexcept {
    return {seconds(CLOCK_MONOTONIC), seconds(CLOCK_PROCESS_CPUTIME_ID), seconds(CLOCK_THREAD_CPUTIME_ID)};
  }
  double otherThreadsCpu(const CpuSplit& start) const noexcept {
    return (process - start.process) - (thisThread - start.thisThread);
  }
  double otherThreadsShare(const CpuSplit& start) const noexcept {
    const double elapsed = wall - start.wall;
    return elapsed > 0 ? otherThreadsCpu(start) / elapsed : 0;
  }

 private:
  static double seconds(clockid_t clock) noexcept {
    timespec ts{};
    clock_gettime(clock, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
  }
};

void brokerRun(benchmark::State& state, const Algorithm& alg, Op op, int payload) {
  std::optional<BrokerRig> rig;
  try {
    rig.emplace(alg, op, static_cast<std::size_t>(payload));
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    return;
  }
  std::uint64_t timedCompletions = 0;
  const CpuSplit start = CpuSplit::now();
  BestWindow window;
  for (auto _ : state) {
    rig->waitForBuffers();
    if (!rig->submitBurst(static_cast<std::size_t>(payload))) {
      state.SkipWithError("could not frame or enqueue a burst");
      break;
    }
    window.burstDone();
  }
  // Packets completed while the clock ran; the rest are drained untimed.
  timedCompletions = rig->completed();
  const CpuSplit end = CpuSplit::now();
  rig->drain();
  if (rig->failed() != 0) {
    state.SkipWithError("the worker failed an op");
    return;
  }
  const double bursts = static_cast<double>(state.iterations());
  state.counters["fwd_sleeps/burst"] = bursts > 0 ? static_cast<double>(rig->sleeps()) / bursts : 0;
  state.counters["worker_wakeups/burst"] = bursts > 0 ? static_cast<double>(rig->wakeups()) / bursts : 0;
  state.counters["worker_burst"] =
      static_cast<double>(rig->workerCounters().requests.load()) /
      static_cast<double>(std::max<std::uint64_t>(1, rig->workerCounters().bursts.load()));
  state.counters["best_window"] = window.packetsPerSecond();
  state.counters["worker_busy"] = end.otherThreadsShare(start);
  state.counters["worker_ns/pkt"] =
      end.otherThreadsCpu(start) * 1e9 / static_cast<double>(std::max<std::uint64_t>(1, timedCompletions));
  state.SetItemsProcessed(static_cast<std::int64_t>(timedCompletions));
  state.SetBytesProcessed(static_cast<std::int64_t>(timedCompletions) * payload);
}

// ---- registration and the ratio table ----------------------------------------

std::string benchName(Op op, const Algorithm& alg, const char* path, int payload) {
  return std::string(opName(op)) + "/" + alg.name + "/" + path + "/" + std::to_string(payload);
}

// --quick leaves out the middle size: the matrix of four ops stays under 90 s.
bool quickRun = false;
std::vector<int> payloadSizes() {
  if (quickRun) return {kPayloadSizes[0], kPayloadSizes[2]};
  return {std::begin(kPayloadSizes), std::end(kPayloadSizes)};
}

void registerRow(Op op, const Algorithm& alg, int payload) {
  if (op == Op::kSeal) {
    benchmark::RegisterBenchmark(benchName(op, alg, "in-process", payload).c_str(),
                                 [&alg, payload](benchmark::State& s) { inProcessSeal(s, alg, payload, false); })
        ->UseRealTime();
    if (alg.name == kRandPerIvRow) {
      benchmark::RegisterBenchmark(benchName(op, alg, "in-process-rand-per-iv", payload).c_str(),
                                   [&alg, payload](benchmark::State& s) { inProcessSeal(s, alg, payload, true); })
          ->UseRealTime();
    }
  } else {
    benchmark::RegisterBenchmark(benchName(op, alg, "in-process", payload).c_str(),
                                 [&alg, op, payload](benchmark::State& s) { inProcessOther(s, alg, op, payload); })
        ->UseRealTime();
  }
  benchmark::RegisterBenchmark(benchName(op, alg, "broker", payload).c_str(),
                               [&alg, op, payload](benchmark::State& s) { brokerRun(s, alg, op, payload); })
      ->UseRealTime();
}

void registerAll() {
  for (const Algorithm& alg : algorithms()) {
    for (int payload : payloadSizes()) {
      for (Op op : kEspOps) registerRow(op, alg, payload);
    }
  }
  for (const Algorithm& alg : ahAlgorithms()) {
    for (int payload : payloadSizes()) {
      for (Op op : kAhOps) registerRow(op, alg, payload);
    }
  }
}

// The console output, plus packets/s of each run kept for the summary.
class RatioReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& run : runs) {
      if (run.run_type != Run::RT_Iteration || run.error_occurred) continue;
      const auto it = run.counters.find("items_per_second");
      // With repetitions, the best: on a shared machine the slow runs
      // measure the neighbours.
      if (it != run.counters.end()) {
        double& best = rates_[run.run_name.function_name];
        best = std::max(best, it->second.value);
      }
      if (const auto w = run.counters.find("best_window"); w != run.counters.end()) {
        double& best = windows_[run.run_name.function_name];
        best = std::max(best, w->second.value);
      }
    }
  }

  // One row per algorithm and size that has both figures, sorted by name,
  // then size.
  void printRatios() const {
    // scripts/bench prints from this line on.
    std::printf("\nbroker / in-process, packets per second (1.00: the hop costs nothing; L: legacy;\n"
                "window: the same ratio of the best %zu-burst stretches, what two free cores would give)\n",
                BestWindow::kWindow);
    printTable("ESP (seal: kSeal vs Transform::sealWithIv; open: kOpen vs Transform::open)", algorithms(),
               kEspOps);
    printTable("AH (ah-sign: kAhSign vs AhTransform::sign; ah-verify: kAhVerify vs AhTransform::verify)", ahAlgorithms(),
               kAhOps);
    for (const Algorithm& alg : algorithms()) {
      if (alg.name != kRandPerIvRow) continue;
      std::printf("\n%s against the old baseline (RAND_bytes per IV; the broker draws from a pool):\n",
                  alg.name.c_str());
      for (int payload : payloadSizes()) {
        const double old = rate(benchName(Op::kSeal, alg, "in-process-rand-per-iv", payload));
        const double broker = rate(benchName(Op::kSeal, alg, "broker", payload));
        if (old <= 0 || broker <= 0) continue;
        std::printf("%-26s   %6d %12.0f/s %12.0f/s %7.2f\n", alg.name.c_str(), payload, old, broker, broker / old);
      }
    }
  }

 private:
  template <std::size_t N>
  void printTable(const char* title, const std::vector<Algorithm>& algs, const Op (&ops)[N]) const {
    std::vector<const Algorithm*> sorted;
    for (const Algorithm& alg : algs) sorted.push_back(&alg);
    std::sort(sorted.begin(), sorted.end(), [](const Algorithm* a, const Algorithm* b) { return a->name < b->name; });
    std::printf("\n%s\n", title);
    std::printf("%-9s %-28s %6s %14s %14s %7s %9s %9s %8s\n", "op", "algorithm", "bytes", "in-process", "broker", "ratio",
                "in Gb/s", "brk Gb/s", "window");
    for (const Algorithm* alg : sorted) {
      for (Op op : ops) {
        for (int payload : payloadSizes()) {
          const double base = rate(benchName(op, *alg, "in-process", payload));
          const double broker = rate(benchName(op, *alg, "broker", payload));
          if (base <= 0 || broker <= 0) continue;
          const double baseWindow = window(benchName(op, *alg, "in-process", payload));
          const double brokerWindow = window(benchName(op, *alg, "broker", payload));
          std::printf("%-9s %-26s %1s %6d %12.0f/s %12.0f/s %7.2f %9.2f %9.2f %8.2f\n", opName(op), alg->name.c_str(),
                      alg->legacy ? "L" : "", payload, base, broker, broker / base, base * payload * 8 / 1e9,
                      broker * payload * 8 / 1e9, baseWindow > 0 ? brokerWindow / baseWindow : 0);
        }
      }
    }
  }

  double rate(const std::string& name) const {
    const auto it = rates_.find(name);
    return it == rates_.end() ? 0 : it->second;
  }
  double window(const std::string& name) const {
    const auto it = windows_.find(name);
    return it == windows_.end() ? 0 : it->second;
  }

  std::map<std::string, double> rates_;
  std::map<std::string, double> windows_;  // best_window, the best run of each
};

}  // namespace
}  // namespace ipsec::bench

// --quick: one short run of each benchmark at 64 and 1420 bytes, so that the
// whole matrix (seal and open of every ESP algorithm, AH sign and verify:
// about 400 runs) stays under 90 s; an explicit --benchmark_min_time or
// _repetitions given after it still wins.
int main(int argc, char** argv) {
  std::vector<char*> args;
  static char quickMinTime[] = "--benchmark_min_time=0.05";
  static char quickRepetitions[] = "--benchmark_repetitions=1";
  for (int i = 0; i < argc; ++i) {
    if (i > 0 && std::strcmp(argv[i], "--quick") == 0) {
      args.insert(args.begin() + 1, {quickMinTime, quickRepetitions});
      ipsec::bench::quickRun = true;
      continue;
    }
    args.push_back(argv[i]);
  }
  int count = static_cast<int>(args.size());
  args.push_back(nullptr);
  ipsec::bench::registerAll();
  benchmark::Initialize(&count, args.data());
  if (benchmark::ReportUnrecognizedArguments(count, args.data())) return 1;
  ipsec::bench::RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  reporter.printRatios();
  benchmark::Shutdown();
  return 0;
}
