// The algorithm table (see algorithms.h). Runs only in ipsec-crypto.
// Key lengths include the salt/nonce that RFC 3686 (CTR, 4 bytes), RFC 4106
// and RFC 4543 (GCM, GMAC, 4 bytes), RFC 4309 (CCM, 3 bytes) and RFC 7634
// (ChaCha20-Poly1305, 4 bytes) append to the key.
#include "cryptodrv/algorithms.h"

#include <linux/pfkeyv2.h>

namespace ipsec::cryptodrv {
namespace {

using K = AlgorithmKind;

constexpr AlgorithmInfo kTable[] = {
    // Encryption, by id.
    {K::kEncrypt, SADB_EALG_3DESCBC, 8, 0, 192, 192, "3des-cbc", false, true},
    {K::kEncrypt, SADB_EALG_NULL, 0, 0, 0, 0, "null", false, false},
    {K::kEncrypt, SADB_X_EALG_AESCBC, 16, 0, 128, 256, "aes-cbc", false, false},
    {K::kEncrypt, SADB_X_EALG_AESCTR, 8, 0, 160, 288, "aes-ctr", false, false},
    {K::kEncrypt, SADB_X_EALG_AES_CCM_ICV8, 8, 8, 152, 280, "aes-ccm-8", true, false},
    {K::kEncrypt, SADB_X_EALG_AES_CCM_ICV12, 8, 12, 152, 280, "aes-ccm-12", true, false},
    {K::kEncrypt, SADB_X_EALG_AES_CCM_ICV16, 8, 16, 152, 280, "aes-ccm-16", true, false},
    {K::kEncrypt, SADB_X_EALG_AES_GCM_ICV8, 8, 8, 160, 288, "aes-gcm-8", true, false},
    {K::kEncrypt, SADB_X_EALG_AES_GCM_ICV12, 8, 12, 160, 288, "aes-gcm-12", true, false},
    {K::kEncrypt, SADB_X_EALG_AES_GCM_ICV16, 8, 16, 160, 288, "aes-gcm-16", true, false},
    {K::kEncrypt, SADB_X_EALG_NULL_AES_GMAC, 8, 16, 160, 288, "aes-gmac", true, false},
    {K::kEncrypt, kSadbXEalgChacha20Poly1305, 8, 16, 288, 288, "chacha20-poly1305", true, false},
    // Authentication, by id.
    {K::kAuth, SADB_AALG_MD5HMAC, 0, 12, 128, 128, "hmac-md5", false, true},
    {K::kAuth, SADB_AALG_SHA1HMAC, 0, 12, 160, 160, "hmac-sha1", false, false},
    {K::kAuth, SADB_X_AALG_SHA2_256HMAC, 0, 16, 256, 256, "hmac-sha256", false, false},
    {K::kAuth, SADB_X_AALG_SHA2_384HMAC, 0, 24, 384, 384, "hmac-sha384", false, false},
    {K::kAuth, SADB_X_AALG_SHA2_512HMAC, 0, 32, 512, 512, "hmac-sha512", false, false},
    {K::kAuth, SADB_X_AALG_AES_XCBC_MAC, 0, 12, 128, 128, "aes-xcbc-mac", false, false},
    {K::kAuth, kSadbXAalgAesCmac96, 0, 12, 128, 128, "aes-cmac", false, false},
};

}  // namespace

std::span<const AlgorithmInfo> knownAlgorithms() noexcept { return kTable; }

const AlgorithmInfo* findAlgorithm(AlgorithmKind kind, uint8_t id) noexcept {
  for (const auto& a : kTable)
    if (a.kind == kind && a.id == id) return &a;
  return nullptr;
}

}  // namespace ipsec::cryptodrv
