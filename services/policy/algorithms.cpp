// See algorithms.h: keep in step with lib/cryptodrv/openssl_driver.cpp.
#include "algorithms.h"

#include <array>

namespace ipsec::policy {
namespace {

// Auth: HMACs with their full key lengths, and the KAME "null" auth that
// setkey sends for `-A null` (the driver treats it as no authentication, as
// it does id 0).
constexpr std::array kAuth{
    AlgorithmSpec{SADB_AALG_SHA1HMAC, 0, 160, 160},
    AlgorithmSpec{SADB_X_AALG_SHA2_256HMAC, 0, 256, 256},
    AlgorithmSpec{SADB_X_AALG_SHA2_384HMAC, 0, 384, 384},
    AlgorithmSpec{SADB_X_AALG_SHA2_512HMAC, 0, 512, 512},
    AlgorithmSpec{SADB_X_AALG_NULL, 0, 0, 0},
};

// Encryption: ivLength 8 for AES-CBC is what Linux's table says (clients
// only display it); AES-GCM-16 key lengths include the 4-byte salt
// (RFC 4106), as FreeBSD's setkey and ours write them.
constexpr std::array kEncrypt{
    AlgorithmSpec{SADB_EALG_NULL, 0, 0, 0},
    AlgorithmSpec{SADB_X_EALG_AESCBC, 8, 128, 256},
    AlgorithmSpec{SADB_X_EALG_AES_GCM_ICV16, 8, 160, 288},
};

template <class Table>
const AlgorithmSpec* find(const Table& t, std::uint8_t id) noexcept {
  for (const auto& a : t) {
    if (a.id == id) return &a;
  }
  return nullptr;
}

}  // namespace

std::span<const AlgorithmSpec> supportedAuth() noexcept { return kAuth; }
std::span<const AlgorithmSpec> supportedEncrypt() noexcept { return kEncrypt; }
const AlgorithmSpec* findAuth(std::uint8_t id) noexcept { return find(kAuth, id); }
const AlgorithmSpec* findEncrypt(std::uint8_t id) noexcept { return find(kEncrypt, id); }

}  // namespace ipsec::policy
