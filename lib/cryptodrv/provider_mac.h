// One SA's keyed MAC (HMAC, CMAC) run through the OpenSSL 3 provider's own
// functions instead of EVP_MAC_CTX, as provider_cipher.h does for ciphers.
//
// Why: EVP_MAC_final asks the provider for the MAC size through an
// OSSL_PARAM round trip on every call (OpenSSL 3.0), though the size is
// fixed when the context is keyed; here it is asked once, at set-up. What
// the provider does per message is unchanged (HMAC copies its keyed digest
// states: OpenSSL 3.0 allocates there, and no public call avoids it).
//
// Runs ONLY in ipsec-crypto. The key goes into the provider's context, as it
// did into EVP_MAC_CTX's; OpenSSL cleanses it when the context is freed.
// Not thread-safe (one worker per transform); per-message calls are
// noexcept; set-up failures throw std::runtime_error (control plane).
#pragma once

#include <openssl/core.h>

#include <cstddef>
#include <cstdint>

namespace ipsec::cryptodrv::detail {

struct ProviderMacFunctions;  // the dispatch table, one per MAC (provider_mac.cpp)

class ProviderMac {
 public:
  // `mac`: "HMAC" or "CMAC"; `setup` names its digest or cipher.
  ProviderMac(const char* mac, const OSSL_PARAM* setup, const uint8_t* key, size_t keyLength);
  ~ProviderMac();
  ProviderMac(const ProviderMac&) = delete;
  ProviderMac& operator=(const ProviderMac&) = delete;

  size_t size() const noexcept { return size_; }
  // A new message under the kept key.
  bool begin() noexcept;
  bool update(const uint8_t* data, size_t length) noexcept;
  // Writes size() bytes.
  bool finish(uint8_t* out) noexcept;

 private:
  const ProviderMacFunctions* functions_;
  void* macContext_ = nullptr;  // the provider's, holding the keyed state
  size_t size_ = 0;
};

}  // namespace ipsec::cryptodrv::detail
