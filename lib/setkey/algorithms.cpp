// Algorithm table for the setkey language (see algorithms.h). Key sizes of
// counter-mode and AEAD ciphers include the salt/nonce: 4 bytes for AES-CTR
// (RFC 3686), AES-GCM (RFC 4106), AES-GMAC (RFC 4543) and ChaCha20-Poly1305
// (RFC 7634), 3 bytes for AES-CCM (RFC 4309), as FreeBSD's setkey writes them.
// Every name here is an algorithm the drivers run, except camellia-cbc.
#include "setkey/algorithms.h"

#include <algorithm>

namespace ipsec::setkey {
namespace {

constexpr Algorithm kTable[] = {
    // Encryption. The first entry of an id is its canonical (dump) name.
    {"null", AlgKind::kEncrypt, SADB_EALG_NULL, {}, 0, false},
    {"3des-cbc", AlgKind::kEncrypt, SADB_EALG_3DESCBC, {192}, 1, false},
    {"aes-cbc", AlgKind::kEncrypt, SADB_X_EALG_AESCBC, {128, 192, 256}, 3, false},
    {"rijndael-cbc", AlgKind::kEncrypt, SADB_X_EALG_AESCBC, {128, 192, 256}, 3, false},
    {"aes-ctr", AlgKind::kEncrypt, SADB_X_EALG_AESCTR, {160, 224, 288}, 3, false},
    // Not run by our drivers, so ipsec-policy does not offer it and setkey
    // refuses it against ipsecd; kept so that setkey still speaks to a
    // Linux-like service that lists it (the pfkey-corpus case does).
    {"camellia-cbc", AlgKind::kEncrypt, SADB_X_EALG_CAMELLIACBC, {128, 192, 256}, 3, false},
    {"aes-ccm-8", AlgKind::kEncrypt, SADB_X_EALG_AES_CCM_ICV8, {152, 216, 280}, 3, true},
    {"aes-ccm-12", AlgKind::kEncrypt, SADB_X_EALG_AES_CCM_ICV12, {152, 216, 280}, 3, true},
    {"aes-ccm-16", AlgKind::kEncrypt, SADB_X_EALG_AES_CCM_ICV16, {152, 216, 280}, 3, true},
    {"aes-gcm-8", AlgKind::kEncrypt, SADB_X_EALG_AES_GCM_ICV8, {160, 224, 288}, 3, true},
    {"aes-gcm-12", AlgKind::kEncrypt, SADB_X_EALG_AES_GCM_ICV12, {160, 224, 288}, 3, true},
    {"aes-gcm-16", AlgKind::kEncrypt, SADB_X_EALG_AES_GCM_ICV16, {160, 224, 288}, 3, true},
    {"aes-gmac", AlgKind::kEncrypt, SADB_X_EALG_NULL_AES_GMAC, {160, 224, 288}, 3, true},
    {"null-aes-gmac", AlgKind::kEncrypt, SADB_X_EALG_NULL_AES_GMAC, {160, 224, 288}, 3, true},
    {"chacha20-poly1305", AlgKind::kEncrypt, kSadbXEalgChacha20Poly1305, {288}, 1, true},
    // Authentication.
    {"null", AlgKind::kAuth, SADB_X_AALG_NULL, {}, 0, false},
    {"hmac-md5", AlgKind::kAuth, SADB_AALG_MD5HMAC, {128}, 1, false},
    {"hmac-sha1", AlgKind::kAuth, SADB_AALG_SHA1HMAC, {160}, 1, false},
    {"hmac-sha256", AlgKind::kAuth, SADB_X_AALG_SHA2_256HMAC, {256}, 1, false},
    {"hmac-sha384", AlgKind::kAuth, SADB_X_AALG_SHA2_384HMAC, {384}, 1, false},
    {"hmac-sha512", AlgKind::kAuth, SADB_X_AALG_SHA2_512HMAC, {512}, 1, false},
    {"aes-xcbc-mac", AlgKind::kAuth, SADB_X_AALG_AES_XCBC_MAC, {128}, 1, false},
    {"aes-cmac", AlgKind::kAuth, kSadbXAalgAesCmac96, {128}, 1, false},
    // Compression.
    {"deflate", AlgKind::kCompress, SADB_X_CALG_DEFLATE, {}, 0, false},
};

}  // namespace

bool Algorithm::acceptsKeyBits(uint32_t bits) const noexcept {
  auto k = keyBits();
  return std::find(k.begin(), k.end(), bits) != k.end();
}

const Algorithm* findAlgorithm(AlgKind kind, std::string_view name) noexcept {
  for (const auto& a : kTable)
    if (a.kind == kind && a.name == name) return &a;
  return nullptr;
}

const Algorithm* algorithmById(AlgKind kind, uint8_t id) noexcept {
  for (const auto& a : kTable)
    if (a.kind == kind && a.id == id) return &a;
  return nullptr;
}

}  // namespace ipsec::setkey
