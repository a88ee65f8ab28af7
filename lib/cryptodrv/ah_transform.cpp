// See ah_transform.h. Runs only in ipsec-crypto.
#include "cryptodrv/ah_transform.h"

#include <linux/pfkeyv2.h>
#include <openssl/crypto.h>

#include <cstring>

#include "cryptodrv/algorithms.h"
#include "cryptodrv/driver.h"
#include "cryptodrv/esp_common.h"
#include "cryptodrv/hmac.h"

namespace ipsec::cryptodrv {

namespace {

// The digest behind each HMAC id; XCBC and CMAC have their own factories.
const char* hmacDigest(uint8_t id) noexcept {
  switch (id) {
    case SADB_AALG_MD5HMAC: return "MD5";
    case SADB_AALG_SHA1HMAC: return "SHA1";
    case SADB_X_AALG_SHA2_256HMAC: return "SHA256";
    case SADB_X_AALG_SHA2_384HMAC: return "SHA384";
    case SADB_X_AALG_SHA2_512HMAC: return "SHA512";
    default: return nullptr;
  }
}

}  // namespace

std::unique_ptr<AhTransform> AhTransform::create(const TransformSpec& spec, std::string* error) {
  if (spec.encAlg != SADB_EALG_NONE || !spec.encKey.empty()) {
    detail::fail(error, "ah: takes no encryption algorithm or key");
    return nullptr;
  }
  const AlgorithmInfo* alg = findAlgorithm(AlgorithmKind::kAuth, spec.authAlg);
  const char* digest = hmacDigest(spec.authAlg);
  const bool xcbc = spec.authAlg == SADB_X_AALG_AES_XCBC_MAC;
  const bool cmac = spec.authAlg == kSadbXAalgAesCmac96;
  if (alg == nullptr || (digest == nullptr && !xcbc && !cmac)) {
    detail::fail(error, "ah: unsupported authentication algorithm " + std::to_string(spec.authAlg));
    return nullptr;
  }
  if (std::string why; !legacyAllowed(spec, &why)) {
    detail::fail(error, why);
    return nullptr;
  }
  const size_t keyBytes = alg->minKeyBits / 8;
  if (spec.authKey.size() != keyBytes) {
    detail::fail(error, std::string(alg->name) + ": key must be " + std::to_string(keyBytes) + " bytes, got " +
                            std::to_string(spec.authKey.size()));
    return nullptr;
  }
  std::unique_ptr<Mac> mac = digest != nullptr ? std::unique_ptr<Mac>(Hmac::create(digest, spec.authKey, error))
                             : xcbc            ? makeAesXcbcMac(spec.authKey, error)
                                               : makeAesCmac(spec.authKey, error);
  if (!mac) return nullptr;
  if (mac->size() < alg->icvLength) {
    detail::fail(error, "ah: MAC shorter than its ICV");
    return nullptr;
  }
  return std::unique_ptr<AhTransform>(
      new AhTransform(std::move(mac), alg->icvLength, spec.esn, std::string("openssl:ah-") + std::string(alg->name)));
}

bool AhTransform::fits(size_t len, size_t icvOffset) const noexcept {
  return len <= Transform::kMaxPacketLength && icvOffset <= len && len - icvOffset >= icvLength_;
}

bool AhTransform::macOf(const uint8_t* packet, size_t len, size_t icvOffset, uint32_t seqHigh,
                        uint8_t* out) noexcept {
  static constexpr uint8_t kZeros[Mac::kMaxSize] = {};
  const size_t after = icvOffset + icvLength_;
  if (!mac_->begin() || !mac_->update(packet, icvOffset) || !mac_->update(kZeros, icvLength_) ||
      !mac_->update(packet + after, len - after)) {
    return false;
  }
  if (esn_) {
    uint8_t high[4];
    detail::store32(high, seqHigh);
    if (!mac_->update(high, sizeof high)) return false;
  }
  return mac_->finish(out);
}

Status AhTransform::sign(uint8_t* packet, size_t len, size_t icvOffset, uint32_t seqHigh) noexcept {
  if (packet == nullptr || !fits(len, icvOffset)) return Status::kBadLength;
  uint8_t mac[Mac::kMaxSize];
  if (!macOf(packet, len, icvOffset, seqHigh, mac)) return Status::kInternal;
  std::memcpy(packet + icvOffset, mac, icvLength_);
  OPENSSL_cleanse(mac, sizeof mac);
  return Status::kOk;
}

Status AhTransform::verify(const uint8_t* packet, size_t len, size_t icvOffset, uint32_t seqHigh) noexcept {
  if (packet == nullptr || !fits(len, icvOffset)) return Status::kBadLength;
  uint8_t* copy = detail::packetScratch();
  std::memcpy(copy, packet, len);  // the one read of shared memory
  uint8_t received[Mac::kMaxSize];
  std::memcpy(received, copy + icvOffset, icvLength_);
  uint8_t mac[Mac::kMaxSize];
  if (!macOf(copy, len, icvOffset, seqHigh, mac)) return Status::kInternal;
  const bool good = CRYPTO_memcmp(mac, received, icvLength_) == 0;
  OPENSSL_cleanse(mac, sizeof mac);
  return good ? Status::kOk : Status::kBadIcv;
}

}  // namespace ipsec::cryptodrv
