// HMAC on EVP_MAC (see hmac.h). Runs only in ipsec-crypto.
#include "cryptodrv/hmac.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>

namespace ipsec::cryptodrv {

std::unique_ptr<Hmac> Hmac::create(std::string_view digest, std::span<const uint8_t> key, std::string* error) {
  auto fail = [&](const char* why) -> std::unique_ptr<Hmac> {
    if (error) *error = std::string("HMAC-") + std::string(digest) + ": " + why;
    return nullptr;
  };
  if (key.empty()) return fail("empty key");
  // Fetched once per process (a fetch per SA was a name lookup in the
  // method store); each context keeps its own reference.
  static EVP_MAC* const mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  if (mac == nullptr) return fail("EVP_MAC_fetch(HMAC) failed");
  EVP_MAC_CTX* ctx = EVP_MAC_CTX_new(mac);
  if (ctx == nullptr) return fail("EVP_MAC_CTX_new failed");
  std::string name(digest);
  const OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, name.data(), 0),
      OSSL_PARAM_construct_end(),
  };
  if (EVP_MAC_init(ctx, key.data(), key.size(), params) != 1) {
    EVP_MAC_CTX_free(ctx);
    return fail("unknown digest or bad key");
  }
  const size_t size = EVP_MAC_CTX_get_mac_size(ctx);
  if (size == 0 || size > kMaxSize) {
    EVP_MAC_CTX_free(ctx);
    return fail("unexpected MAC size");
  }
  return std::unique_ptr<Hmac>(new Hmac(ctx, size));
}

Hmac::~Hmac() { EVP_MAC_CTX_free(ctx_); }  // OpenSSL cleanses the keyed state

bool Hmac::begin() noexcept { return EVP_MAC_init(ctx_, nullptr, 0, nullptr) == 1; }

bool Hmac::update(const uint8_t* data, size_t len) noexcept { return EVP_MAC_update(ctx_, data, len) == 1; }

bool Hmac::finish(uint8_t* out) noexcept {
  size_t outLength = 0;
  return EVP_MAC_final(ctx_, out, &outLength, size_) == 1 && outLength == size_;
}

}  // namespace ipsec::cryptodrv
