// Shared transform pieces (see esp_common.h). Runs only in ipsec-crypto.
#include "cryptodrv/esp_common.h"

#include <cstring>
#include <mutex>
#include <stdexcept>
#include <utility>
#include <vector>

namespace ipsec::cryptodrv::detail {

namespace {
// Zero-initialised TLS, never allocated per packet.
alignas(64) thread_local uint8_t tlsScratch[Transform::kMaxPacketLength];
}  // namespace

uint8_t* packetScratch() noexcept { return tlsScratch; }

size_t buildAad(const uint8_t* header, bool esn, uint32_t seqHigh, uint8_t* aad) noexcept {
  std::memcpy(aad, header, 4);
  if (!esn) {
    std::memcpy(aad + 4, header + 4, 4);
    return 8;
  }
  store32(aad + 4, seqHigh);
  std::memcpy(aad + 8, header + 4, 4);
  return 12;
}

const EVP_CIPHER* fetchedCipher(const EVP_CIPHER* legacy) noexcept {
  if (legacy == nullptr) return nullptr;
  static std::mutex mutex;
  // Fetched once, kept for the process's life (a handful of algorithms). The
  // cache itself is never destroyed: contexts may still be freed after static
  // destructors ran, and a destroyed vector would leave the fetched ciphers
  // unreachable (LeakSanitizer reports them) though OpenSSL still holds them.
  static auto* const cache = new std::vector<std::pair<const EVP_CIPHER*, EVP_CIPHER*>>();
  std::lock_guard lock(mutex);
  for (const auto& [l, f] : *cache)
    if (l == legacy || f == legacy) return f;  // also when handed one fetched here
  EVP_CIPHER* f = EVP_CIPHER_fetch(nullptr, EVP_CIPHER_get0_name(legacy), nullptr);
  if (f == nullptr) return legacy;  // the implicit fetch at init still works
  try {
    cache->emplace_back(legacy, f);
  } catch (...) {
    EVP_CIPHER_free(f);
    return legacy;
  }
  return f;
}

bool fail(std::string* error, std::string why) {
  if (error) *error = std::move(why);
  return false;
}

}  // namespace ipsec::cryptodrv::detail
