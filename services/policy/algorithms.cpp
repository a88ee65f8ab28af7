// See algorithms.h: keep in step with lib/cryptodrv/algorithms.cpp (a unit
// test in tests/unit/cryptodrv compares them).
#include "algorithms.h"

#include <array>

namespace ipsec::policy {
namespace {

using cryptodrv::kSadbXAalgAesCmac96;
using cryptodrv::kSadbXEalgChacha20Poly1305;

// Auth: MACs with their full key lengths, and the KAME "null" auth that
// setkey sends for `-A null` (the driver treats it as no authentication, as
// it does id 0). Legacy rows last: the default view is a prefix.
constexpr std::array kAuth{
    AlgorithmSpec{SADB_AALG_SHA1HMAC, 0, 160, 160},
    AlgorithmSpec{SADB_X_AALG_SHA2_256HMAC, 0, 256, 256},
    AlgorithmSpec{SADB_X_AALG_SHA2_384HMAC, 0, 384, 384},
    AlgorithmSpec{SADB_X_AALG_SHA2_512HMAC, 0, 512, 512},
    AlgorithmSpec{SADB_X_AALG_AES_XCBC_MAC, 0, 128, 128},
    AlgorithmSpec{kSadbXAalgAesCmac96, 0, 128, 128},
    AlgorithmSpec{SADB_X_AALG_NULL, 0, 0, 0},
    AlgorithmSpec{SADB_AALG_MD5HMAC, 0, 128, 128, false, true},
};
constexpr std::size_t kAuthModern = 7;

// Encryption: ivLength 8 for AES-CBC is what Linux's table says (clients
// only display it). Key lengths include the salt or nonce, as FreeBSD's
// setkey and ours write them: 4 bytes for AES-CTR (RFC 3686), AES-GCM
// (RFC 4106), AES-GMAC (RFC 4543) and ChaCha20-Poly1305 (RFC 7634), 3 for
// AES-CCM (RFC 4309).
constexpr std::array kEncrypt{
    AlgorithmSpec{SADB_EALG_NULL, 0, 0, 0},
    AlgorithmSpec{SADB_X_EALG_AESCBC, 8, 128, 256},
    AlgorithmSpec{SADB_X_EALG_AESCTR, 8, 160, 288},
    AlgorithmSpec{SADB_X_EALG_AES_CCM_ICV8, 8, 152, 280, true},
    AlgorithmSpec{SADB_X_EALG_AES_CCM_ICV12, 8, 152, 280, true},
    AlgorithmSpec{SADB_X_EALG_AES_CCM_ICV16, 8, 152, 280, true},
    AlgorithmSpec{SADB_X_EALG_AES_GCM_ICV8, 8, 160, 288, true},
    AlgorithmSpec{SADB_X_EALG_AES_GCM_ICV12, 8, 160, 288, true},
    AlgorithmSpec{SADB_X_EALG_AES_GCM_ICV16, 8, 160, 288, true},
    AlgorithmSpec{SADB_X_EALG_NULL_AES_GMAC, 8, 160, 288, true},
    AlgorithmSpec{kSadbXEalgChacha20Poly1305, 8, 288, 288, true},
    AlgorithmSpec{SADB_EALG_3DESCBC, 8, 192, 192, false, true},
};
constexpr std::size_t kEncryptModern = 11;

static_assert(!kAuth[kAuthModern - 1].legacy && kAuth[kAuthModern].legacy);
static_assert(!kEncrypt[kEncryptModern - 1].legacy && kEncrypt[kEncryptModern].legacy);

template <class Table>
std::span<const AlgorithmSpec> view(const Table& t, std::size_t modern, bool allowLegacy) noexcept {
  return std::span<const AlgorithmSpec>(t).first(allowLegacy ? t.size() : modern);
}

const AlgorithmSpec* find(std::span<const AlgorithmSpec> t, std::uint8_t id) noexcept {
  for (const auto& a : t) {
    if (a.id == id) return &a;
  }
  return nullptr;
}

}  // namespace

std::span<const AlgorithmSpec> supportedAuth(bool allowLegacy) noexcept {
  return view(kAuth, kAuthModern, allowLegacy);
}
std::span<const AlgorithmSpec> supportedEncrypt(bool allowLegacy) noexcept {
  return view(kEncrypt, kEncryptModern, allowLegacy);
}
const AlgorithmSpec* findAuth(std::uint8_t id, bool allowLegacy) noexcept {
  return find(supportedAuth(allowLegacy), id);
}
const AlgorithmSpec* findEncrypt(std::uint8_t id, bool allowLegacy) noexcept {
  return find(supportedEncrypt(allowLegacy), id);
}

}  // namespace ipsec::policy
