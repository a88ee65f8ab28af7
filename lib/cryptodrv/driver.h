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

#include "cryptodrv/algorithms.h"
#include "cryptodrv/transform.h"

namespace ipsec::cryptodrv {

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
  // The drivers this build has, in order of preference: OpenSSL, then
  // libsodium, unless `preferred` names a driver ("sodium"), which then goes
  // first. A spec goes to the first driver that supports it.
  static DriverRegistry withDefaultDrivers(std::string_view preferred = {});

  void add(std::unique_ptr<Driver> driver);
  std::span<const std::unique_ptr<Driver>> drivers() const noexcept { return drivers_; }
  // The first driver that supports the spec, or nullptr.
  const Driver* find(const TransformSpec& spec) const noexcept;
  // The driver of that name ("openssl", "sodium"), or nullptr.
  const Driver* driver(std::string_view name) const noexcept;
  std::unique_ptr<Transform> makeTransform(const TransformSpec& spec, std::string* error) const;
  // Every algorithm of one kind that some driver runs, one row per id (the
  // first driver's row wins), sorted by id.
  std::vector<AlgorithmInfo> algorithms(AlgorithmKind kind) const;

 private:
  std::vector<std::unique_ptr<Driver>> drivers_;
};

// The OpenSSL 3 EVP driver, every algorithm of algorithms.cpp: AES-GCM-8/
// 12/16, AES-CCM-8/12/16, AES-GMAC, ChaCha20-Poly1305 (each alone), and
// AES-CBC, AES-CTR, 3DES-CBC or NULL encryption with HMAC-SHA1-96,
// HMAC-SHA2-256-128/-384-192/-512-256, AES-XCBC-MAC-96, AES-CMAC-96,
// HMAC-MD5-96 or (not with NULL) no integrity.
std::unique_ptr<Driver> makeOpenSslDriver();

// The libsodium driver: ChaCha20-Poly1305, and AES-256-GCM-16 where the CPU
// lets libsodium run it (crypto_aead_aes256gcm_is_available()).
std::unique_ptr<Driver> makeSodiumDriver();

// False (and *error says why) if the spec names a legacy algorithm and does
// not set allowLegacy. Every driver's create() checks it.
bool legacyAllowed(const TransformSpec& spec, std::string* error);

// makeTransform() on a process-wide registry withDefaultDrivers().
std::unique_ptr<Transform> makeTransform(const TransformSpec& spec, std::string* error);

}  // namespace ipsec::cryptodrv
