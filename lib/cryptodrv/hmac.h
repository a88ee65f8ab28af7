// Keyed HMAC on OpenSSL 3 EVP_MAC, reusable per packet without allocation.
//
// Runs ONLY in ipsec-crypto (inside the CBC/NULL + HMAC transform; public so
// that the RFC 2202/4231/4868 vectors can test it with any key length).
// The key is given to OpenSSL once; begin() re-initialises the context with
// that key (EVP_MAC_init with a null key), which OpenSSL documents as reuse.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "cryptodrv/mac.h"

struct evp_mac_ctx_st;

namespace ipsec::cryptodrv {

class Hmac final : public Mac {
 public:
  // digest: an OpenSSL digest name, "MD5", "SHA1", "SHA224", "SHA256",
  // "SHA384", "SHA512".
  // nullptr and *error on failure.
  static std::unique_ptr<Hmac> create(std::string_view digest, std::span<const uint8_t> key, std::string* error);
  ~Hmac() override;

  size_t size() const noexcept override { return size_; }
  bool begin() noexcept override;
  bool update(const uint8_t* data, size_t len) noexcept override;
  bool finish(uint8_t* out) noexcept override;

 private:
  Hmac(evp_mac_ctx_st* ctx, size_t size) : ctx_(ctx), size_(size) {}
  evp_mac_ctx_st* ctx_;
  size_t size_;
};

}  // namespace ipsec::cryptodrv
