// Keyed MACs for ESP integrity, reusable per packet without allocation:
// HMAC (hmac.h), AES-XCBC-MAC (RFC 3566) and AES-CMAC (RFC 4494).
//
// Runs ONLY in ipsec-crypto (inside the cipher + MAC transform; public so
// that RFC vectors can test each MAC with its full output). Each keys its
// library state once in create(); begin() starts a new message on it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

namespace ipsec::cryptodrv {

class Mac {
 public:
  static constexpr size_t kMaxSize = 64;  // HMAC-SHA-512

  virtual ~Mac() = default;
  Mac(const Mac&) = delete;
  Mac& operator=(const Mac&) = delete;

  // Length of the full (untruncated) MAC.
  virtual size_t size() const noexcept = 0;
  virtual bool begin() noexcept = 0;
  virtual bool update(const uint8_t* data, size_t len) noexcept = 0;
  // Writes size() bytes to `out`.
  virtual bool finish(uint8_t* out) noexcept = 0;

 protected:
  Mac() = default;
};

// AES-XCBC-MAC (RFC 3566) with a 128-bit key; 16-byte output (ESP uses the
// first 12, AES-XCBC-MAC-96). OpenSSL has no XCBC, so it is built on its
// AES-128-CBC: the CBC chain with IV 0 under K1 is the XCBC chain, and the
// last block is XORed with K2 or K3 before it joins the chain.
// nullptr and *error on a key that is not 16 bytes or a library failure.
std::unique_ptr<Mac> makeAesXcbcMac(std::span<const uint8_t> key, std::string* error);

// AES-CMAC (RFC 4493, RFC 4494 for ESP) with a 128-bit key on OpenSSL's
// EVP_MAC "CMAC"; 16-byte output (ESP uses the first 12, AES-CMAC-96).
std::unique_ptr<Mac> makeAesCmac(std::span<const uint8_t> key, std::string* error);

}  // namespace ipsec::cryptodrv
