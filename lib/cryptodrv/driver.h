// Crypto drivers and the registry of what they can run, in the manner of
// opencrypto(9): each driver announces its algorithms, a session (Transform)
// is pinned to the first driver that supports the SA's algorithms.
//
// Runs ONLY in ipsec-crypto. The registry's algorithm list also feeds the
// PF_KEY REGISTER reply (SUPPORTED_ENCRYPT / SUPPORTED_AUTH) that ipsec-policy
// sends: the broker reports it once at start.
//
// Creating a Transform is control plane (keydb asked for a session): errors
// come back as nullptr plus a message, never as an exception.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "cryptodrv/transform.h"

namespace ipsec::cryptodrv {

enum class AlgorithmKind : uint8_t { kEncrypt, kAuth };

// One row of a SUPPORTED extension, plus what the broker needs itself.
struct AlgorithmInfo {
  AlgorithmKind kind = AlgorithmKind::kEncrypt;
  uint8_t id = 0;          // PF_KEY id (<linux/pfkeyv2.h>)
  uint8_t ivLength = 0;    // bytes on the wire (note: Linux reports 8 for AES-CBC)
  uint8_t icvLength = 0;   // bytes; AEADs carry theirs in the encryption row
  uint16_t minKeyBits = 0; // key as carried in PF_KEY, AEAD salt included
  uint16_t maxKeyBits = 0;
  std::string_view name{}; // setkey's name: "aes-gcm-16", "hmac-sha256"
  bool aead = false;       // needs no authentication algorithm
};

class Driver {
 public:
  virtual ~Driver() = default;
  Driver(const Driver&) = delete;
  Driver& operator=(const Driver&) = delete;

  virtual std::string_view name() const noexcept = 0;
  virtual std::span<const AlgorithmInfo> algorithms() const noexcept = 0;
  // True if this driver runs the pair (encAlg, authAlg); key lengths are
  // checked by create(), so that the caller learns why a key is refused.
  virtual bool supports(const TransformSpec& spec) const noexcept = 0;
  // nullptr and *error set (if error is non-null) on a bad key length or an
  // unsupported pair.
  virtual std::unique_ptr<Transform> create(const TransformSpec& spec, std::string* error) const = 0;

 protected:
  Driver() = default;
};

class DriverRegistry {
 public:
  DriverRegistry() = default;
  // The drivers this build has, in order of preference (today: OpenSSL).
  static DriverRegistry withDefaultDrivers();

  void add(std::unique_ptr<Driver> driver);
  std::span<const std::unique_ptr<Driver>> drivers() const noexcept { return drivers_; }
  // The first driver that supports the spec, or nullptr.
  const Driver* find(const TransformSpec& spec) const noexcept;
  std::unique_ptr<Transform> makeTransform(const TransformSpec& spec, std::string* error) const;
  // Every algorithm of one kind that some driver runs, one row per id (the
  // first driver's row wins), sorted by id.
  std::vector<AlgorithmInfo> algorithms(AlgorithmKind kind) const;

 private:
  std::vector<std::unique_ptr<Driver>> drivers_;
};

// The OpenSSL 3 EVP driver: AES-GCM-16 (128/192/256), AES-CBC (128/192/256)
// or NULL encryption with HMAC-SHA1-96, HMAC-SHA2-256-128, -384-192,
// -512-256, or no integrity (AES-CBC only).
std::unique_ptr<Driver> makeOpenSslDriver();

// makeTransform() on a process-wide registry withDefaultDrivers().
std::unique_ptr<Transform> makeTransform(const TransformSpec& spec, std::string* error);

}  // namespace ipsec::cryptodrv
