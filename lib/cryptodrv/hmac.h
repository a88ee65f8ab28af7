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

struct evp_mac_ctx_st;

namespace ipsec::cryptodrv {

class Hmac {
 public:
  static constexpr size_t kMaxSize = 64;  // SHA-512

  // digest: an OpenSSL digest name, "SHA1", "SHA256", "SHA384", "SHA512".
  // nullptr and *error on failure.
  static std::unique_ptr<Hmac> create(std::string_view digest, std::span<const uint8_t> key, std::string* error);
  ~Hmac();
  Hmac(const Hmac&) = delete;
  Hmac& operator=(const Hmac&) = delete;

  // Length of the full (untruncated) MAC.
  size_t size() const noexcept { return size_; }

  bool begin() noexcept;
  bool update(const uint8_t* data, size_t len) noexcept;
  // Writes size() bytes to `out`.
  bool finish(uint8_t* out) noexcept;

 private:
  Hmac(evp_mac_ctx_st* ctx, size_t size) : ctx_(ctx), size_(size) {}
  evp_mac_ctx_st* ctx_;
  size_t size_;
};

}  // namespace ipsec::cryptodrv
