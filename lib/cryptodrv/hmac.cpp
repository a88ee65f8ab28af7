// HMAC on the provider's MAC functions (see hmac.h). Runs only in ipsec-crypto.
#include "cryptodrv/hmac.h"

#include <openssl/core_names.h>
#include <openssl/params.h>

#include <stdexcept>

#include "cryptodrv/provider_mac.h"

namespace ipsec::cryptodrv {

std::unique_ptr<Hmac> Hmac::create(std::string_view digest, std::span<const uint8_t> key, std::string* error) {
  auto fail = [&](const std::string& why) -> std::unique_ptr<Hmac> {
    if (error) *error = std::string("HMAC-") + std::string(digest) + ": " + why;
    return nullptr;
  };
  if (key.empty()) return fail("empty key");
  std::string name(digest);
  const OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, name.data(), 0),
      OSSL_PARAM_construct_end(),
  };
  try {
    auto mac = std::make_unique<detail::ProviderMac>("HMAC", params, key.data(), key.size());
    if (mac->size() > kMaxSize) return fail("unexpected MAC size");
    return std::unique_ptr<Hmac>(new Hmac(std::move(mac)));
  } catch (const std::exception& e) {
    return fail(std::string("unknown digest or bad key (") + e.what() + ")");
  }
}

Hmac::Hmac(std::unique_ptr<detail::ProviderMac> mac) : mac_(std::move(mac)) {}
Hmac::~Hmac() = default;  // the provider cleanses the keyed state

size_t Hmac::size() const noexcept { return mac_->size(); }
bool Hmac::begin() noexcept { return mac_->begin(); }
bool Hmac::update(const uint8_t* data, size_t len) noexcept { return mac_->update(data, len); }
bool Hmac::finish(uint8_t* out) noexcept { return mac_->finish(out); }

}  // namespace ipsec::cryptodrv
