// One direction of one SA's cipher, run through the OpenSSL 3 provider's
// own functions (its dispatch table, found once per process with the public
// OSSL_PROVIDER_query_operation) instead of the EVP_CIPHER_CTX layer.
//
// Why: OpenSSL 3.0's EVP layer, on every EVP_CipherInit_ex that only sets a
// new IV, asks the provider for the IV length again through an OSSL_PARAM
// round trip (3.1 caches it; Debian 12 ships 3.0), takes and drops a
// reference on the cipher, and re-sends the padding flag; EVP_CIPHER_CTX_ctrl
// turns each tag get/set into another OSSL_PARAM round trip. In the broker's
// profile that was 17 % of a worker's time (45 % at 64 bytes). Here the
// constant parameters (key, IV length, CCM's tag length, padding) are set
// once at set-up, and per packet only the IV, AAD, data and tag go to the
// provider, the tag through an OSSL_PARAM array built once. The cipher itself
// is still the provider's (AES-NI, stitched GCM): nothing here is crypto.
//
// Runs ONLY in ipsec-crypto. The key goes straight into the provider's
// context, as it did into EVP's: OpenSSL cleanses that context when it is
// freed. Not thread-safe: each Transform (and so each ProviderCipher) is
// pinned to one worker. Every per-packet call is noexcept and allocates
// nothing; set-up failures throw std::runtime_error (control plane).
#pragma once

#include <openssl/core.h>
#include <openssl/evp.h>

#include <cstddef>
#include <cstdint>
#include <memory>

namespace ipsec::cryptodrv::detail {

struct ProviderCipherFunctions;  // the dispatch table, one per algorithm (provider_cipher.cpp)

class ProviderCipher {
 public:
  // Keys a new context of `cipher` (as EVP_CIPHER_fetch returned it) for one
  // direction. `setup` (may be null) is applied before the key, once: e.g.
  // CCM's IV and tag lengths, or the padding flag. Throws on failure.
  ProviderCipher(const EVP_CIPHER* cipher, const uint8_t* key, size_t keyLength, bool encrypt,
                 const OSSL_PARAM* setup);
  ~ProviderCipher();
  ProviderCipher(const ProviderCipher&) = delete;
  ProviderCipher& operator=(const ProviderCipher&) = delete;

  // A new message under the kept key: only the IV, and `params` (may be
  // null; e.g. the expected tag on open) in the same call.
  bool start(const uint8_t* iv, size_t ivLength, const OSSL_PARAM* params = nullptr) noexcept;
  // AAD when out is null (AEADs), else `n` bytes in to out (in == out is
  // fine); CCM's length announcement is in == out == null.
  bool update(uint8_t* out, const uint8_t* in, size_t n) noexcept;
  // Ends the message; `out` takes what a block cipher still held (nothing,
  // with padding off and whole blocks). An AEAD open verifies its tag here.
  bool finish(uint8_t* out, size_t outSize) noexcept;
  bool get(OSSL_PARAM* params) noexcept;
  bool set(const OSSL_PARAM* params) noexcept;

 private:
  const ProviderCipherFunctions* functions_;
  void* algorithmContext_ = nullptr;  // the provider's, holding the key schedule
  bool encrypt_;
};

// The dispatch table `provider` has for `name` under `operation`
// (OSSL_OP_CIPHER, OSSL_OP_MAC), or nullptr. Its functions stay valid while
// the provider is loaded. Control plane; a handful of calls per process.
const OSSL_DISPATCH* implementationIn(const OSSL_PROVIDER* provider, int operation, const char* name) noexcept;

// True if the provider behind `cipher` exposes the functions ProviderCipher
// needs (every built-in cipher of the default and FIPS providers does).
bool providerCipherAvailable(const EVP_CIPHER* cipher) noexcept;

}  // namespace ipsec::cryptodrv::detail
