// Keyed HMAC on OpenSSL 3's HMAC provider, reusable per packet. Nothing of
// ours is allocated per packet; OpenSSL 3.0's HMAC itself allocates and frees
// a digest context per message (it copies its keyed inner and outer states).
//
// Runs ONLY in ipsec-crypto (inside the CBC/NULL + HMAC transform; public so
// that the RFC 2202/4231/4868 vectors can test it with any key length).
// The key is given to OpenSSL once; begin() re-initialises the context with
// that key (the provider's init with a null key, which OpenSSL documents as
// reuse). The provider's functions are called directly (provider_mac.h): the
// MAC size is asked once, not by every EVP_MAC_final.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "cryptodrv/mac.h"

namespace ipsec::cryptodrv {

namespace detail {
class ProviderMac;
}

class Hmac final : public Mac {
 public:
  // digest: an OpenSSL digest name, "MD5", "SHA1", "SHA224", "SHA256",
  // "SHA384", "SHA512".
  // nullptr and *error on failure.
  static std::unique_ptr<Hmac> create(std::string_view digest, std::span<const uint8_t> key, std::string* error);
  ~Hmac() override;

  size_t size() const noexcept override;
  bool begin() noexcept override;
  bool update(const uint8_t* data, size_t len) noexcept override;
  bool finish(uint8_t* out) noexcept override;

 private:
  explicit Hmac(std::unique_ptr<detail::ProviderMac> mac);
  std::unique_ptr<detail::ProviderMac> mac_;
};

}  // namespace ipsec::cryptodrv
