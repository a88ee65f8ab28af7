// The OpenSSL 3 EVP driver's combined-mode ESP transforms: AES-GCM with 8,
// 12 or 16-byte ICVs (RFC 4106), AES-CCM with 8, 12 or 16-byte ICVs
// (RFC 4309), AES-GMAC (RFC 4543: authenticated, not encrypted) and
// ChaCha20-Poly1305 (RFC 7634).
//
// Runs ONLY in ipsec-crypto. Trusts keydb for keys and algorithm ids; trusts
// nothing in the packet buffer, which the forwarder shares and may change at
// any moment: what the security depends on (IV, ciphertext, ICV) is read
// once into private memory before it is verified.
//
// Contexts: one per direction, keyed on first use. An SA only seals
// (outbound) or only opens (inbound), so keying both up front doubled every
// session's set-up time and memory for a context never used. The contexts
// are the provider's own (provider_cipher.h): keyed once with every constant
// parameter (CCM's nonce and tag lengths), then per packet only the nonce,
// AAD, data and tag, the tag through an OSSL_PARAM array built once per
// context; nothing is allocated.
#include <linux/pfkeyv2.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include <cstring>
#include <memory>
#include <stdexcept>

#include "cryptodrv/algorithms.h"
#include "cryptodrv/esp_common.h"
#include "cryptodrv/provider_cipher.h"
#include "securemem/secure_bytes.h"

namespace ipsec::cryptodrv::detail {
namespace {

constexpr size_t kIv = 8;  // every one of these carries an 8-byte IV

enum class Mode : uint8_t { kGcm, kCcm, kGmac, kChacha };

struct AeadAlg {
  uint8_t id;
  Mode mode;
  uint8_t icv;
  uint8_t salt;  // bytes of salt at the end of the PF_KEY key
  const char* name;
};

constexpr AeadAlg kAeads[] = {
    {SADB_X_EALG_AES_CCM_ICV8, Mode::kCcm, 8, 3, "aes-ccm-8"},
    {SADB_X_EALG_AES_CCM_ICV12, Mode::kCcm, 12, 3, "aes-ccm-12"},
    {SADB_X_EALG_AES_CCM_ICV16, Mode::kCcm, 16, 3, "aes-ccm-16"},
    {SADB_X_EALG_AES_GCM_ICV8, Mode::kGcm, 8, 4, "aes-gcm-8"},
    {SADB_X_EALG_AES_GCM_ICV12, Mode::kGcm, 12, 4, "aes-gcm-12"},
    {SADB_X_EALG_AES_GCM_ICV16, Mode::kGcm, 16, 4, "aes-gcm-16"},
    {SADB_X_EALG_NULL_AES_GMAC, Mode::kGmac, 16, 4, "aes-gmac"},
    {kSadbXEalgChacha20Poly1305, Mode::kChacha, 16, 4, "chacha20-poly1305"},
};

const AeadAlg* findAead(uint8_t id) noexcept {
  for (const auto& a : kAeads)
    if (a.id == id) return &a;
  return nullptr;
}

const EVP_CIPHER* cipherFor(Mode mode, size_t keyBytes) noexcept {
  switch (mode) {
    case Mode::kChacha: return keyBytes == 32 ? EVP_chacha20_poly1305() : nullptr;
    case Mode::kCcm:
      return keyBytes == 16 ? EVP_aes_128_ccm() : keyBytes == 24 ? EVP_aes_192_ccm() : keyBytes == 32 ? EVP_aes_256_ccm() : nullptr;
    case Mode::kGcm:
    case Mode::kGmac:
      return keyBytes == 16 ? EVP_aes_128_gcm() : keyBytes == 24 ? EVP_aes_192_gcm() : keyBytes == 32 ? EVP_aes_256_gcm() : nullptr;
  }
  return nullptr;
}

class OpenSslAeadTransform final : public Transform {
 public:
  OpenSslAeadTransform(const AeadAlg& alg, const EVP_CIPHER* cipher, std::span<const uint8_t> keymat, bool esn)
      : alg_(alg),
        keymat_(keymat),
        esn_(esn),
        cipher_(fetchedCipher(cipher)),
        name_(std::string("openssl:") + alg.name + "-" + std::to_string((keymat.size() - alg.salt) * 8)) {}

  uint8_t ivLength() const noexcept override { return kIv; }
  uint8_t icvLength() const noexcept override { return alg_.icv; }
  uint8_t padAlign() const noexcept override { return 4; }
  bool ivIsCounter() const noexcept override { return true; }  // a nonce, never repeated
  bool esn() const noexcept override { return esn_; }
  std::string_view name() const noexcept override { return name_; }

  Status sealWithIv(uint8_t* esp, size_t len, uint32_t seqHigh, const uint8_t* iv) noexcept override {
    size_t region = 0;
    if (!regionOf(esp, len, region)) return Status::kBadLength;
    std::memcpy(esp + kEspHeader, iv, kIv);
    uint8_t nonce[4 + kIv];
    makeNonce(iv, nonce);
    uint8_t header[kEspHeader];
    std::memcpy(header, esp, kEspHeader);
    uint8_t aad[12];
    const size_t aadLen = buildAad(header, esn_, seqHigh, aad);
    uint8_t* payload = esp + kEspHeader + kIv;
    ProviderCipher* c = ready(enc_, true);
    if (c == nullptr || !c->start(nonce, nonceLength())) return Status::kInternal;
    // CCM needs the length up front and the AAD in one call (RFC 3610).
    if (alg_.mode == Mode::kCcm && !c->update(nullptr, nullptr, region)) return Status::kInternal;
    if (!c->update(nullptr, aad, aadLen)) return Status::kInternal;
    if (alg_.mode == Mode::kGmac) {
      // RFC 4543 §3: AAD = SPI, sequence, IV, then the whole payload.
      if (!c->update(nullptr, iv, kIv) || !c->update(nullptr, payload, region)) return Status::kInternal;
    } else if (!c->update(payload, payload, region)) {
      return Status::kInternal;
    }
    if (alg_.mode != Mode::kCcm && !c->finish(payload + region, alg_.icv)) return Status::kInternal;
    if (!c->get(tagParams_)) return Status::kInternal;
    std::memcpy(payload + region, tag_, alg_.icv);
    return Status::kOk;
  }

  Status open(uint8_t* esp, size_t len, uint32_t seqHigh) noexcept override {
    size_t region = 0;
    if (!regionOf(esp, len, region)) return Status::kBadLength;
    uint8_t* copy = packetScratch();
    std::memcpy(copy, esp, len);
    uint8_t nonce[4 + kIv];
    makeNonce(copy + kEspHeader, nonce);
    uint8_t aad[12];
    const size_t aadLen = buildAad(copy, esn_, seqHigh, aad);
    uint8_t* payload = copy + kEspHeader + kIv;
    std::memcpy(tag_, payload + region, alg_.icv);
    ProviderCipher* c = ready(dec_, false);
    // The expected tag goes in with the nonce: one call to the provider.
    if (c == nullptr || !c->start(nonce, nonceLength(), tagParams_)) return Status::kInternal;
    if (alg_.mode == Mode::kCcm && !c->update(nullptr, nullptr, region)) return Status::kInternal;
    if (!c->update(nullptr, aad, aadLen)) return Status::kInternal;
    if (alg_.mode == Mode::kGmac) {
      if (!c->update(nullptr, copy + kEspHeader, kIv + region)) return Status::kInternal;
    } else if (!c->update(payload, payload, region)) {
      // CCM verifies inside the update (and wipes its output on failure).
      return alg_.mode == Mode::kCcm ? Status::kBadIcv : Status::kInternal;
    }
    // GCM/GMAC/ChaCha20-Poly1305 compare the tag in the final call with
    // CRYPTO_memcmp. The plaintext so far exists only in the private copy.
    if (alg_.mode != Mode::kCcm && !c->finish(payload + region, alg_.icv)) return Status::kBadIcv;
    std::memcpy(esp + kEspHeader + kIv, payload, region);  // exactly the bytes verified
    return Status::kOk;
  }

 private:
  // The direction's context, keyed now if this is its first packet (on the
  // worker thread that owns this transform); nullptr if OpenSSL failed.
  ProviderCipher* ready(std::unique_ptr<ProviderCipher>& slot, bool encrypt) noexcept {
    if (!slot) {
      try {
        slot = context(encrypt);
      } catch (...) {
        return nullptr;
      }
    }
    return slot.get();
  }
  std::unique_ptr<ProviderCipher> context(bool encrypt) {
    const size_t keyLength = keymat_.size() - alg_.salt;
    if (alg_.mode != Mode::kCcm)
      return std::make_unique<ProviderCipher>(cipher_, keymat_.data(), keyLength, encrypt, nullptr);
    // RFC 4309 §4: an 11-byte nonce (3-byte salt, 8-byte IV), so L = 4;
    // the tag length is fixed per context.
    size_t nonceBytes = nonceLength();
    const OSSL_PARAM lengths[] = {
        OSSL_PARAM_construct_size_t(OSSL_CIPHER_PARAM_AEAD_IVLEN, &nonceBytes),
        OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, nullptr, alg_.icv),
        OSSL_PARAM_construct_end(),
    };
    return std::make_unique<ProviderCipher>(cipher_, keymat_.data(), keyLength, encrypt, lengths);
  }
  size_t nonceLength() const noexcept { return alg_.salt + kIv; }
  bool regionOf(const uint8_t* esp, size_t len, size_t& region) const noexcept {
    // At least the 2-byte trailer, padded to 4.
    if (esp == nullptr || len > kMaxPacketLength || len < kEspHeader + kIv + 4 + alg_.icv) return false;
    region = len - kEspHeader - kIv - alg_.icv;
    return region % 4 == 0;
  }
  void makeNonce(const uint8_t* iv, uint8_t* nonce) const noexcept {
    std::memcpy(nonce, keymat_.data() + keymat_.size() - alg_.salt, alg_.salt);
    std::memcpy(nonce + alg_.salt, iv, kIv);
  }

  const AeadAlg& alg_;
  securemem::SecureBytes keymat_;  // key || salt
  bool esn_;
  const EVP_CIPHER* cipher_;             // fetched once per process (esp_common.h)
  std::unique_ptr<ProviderCipher> enc_;  // keyed on the first seal
  std::unique_ptr<ProviderCipher> dec_;  // keyed on the first open
  // The tag on its way out of (seal) or into (open) the provider: the
  // parameter array points here, so it is built once, not per packet.
  uint8_t tag_[16] = {};
  OSSL_PARAM tagParams_[2] = {
      OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, tag_, alg_.icv),
      OSSL_PARAM_construct_end(),
  };
  std::string name_;
};

}  // namespace

bool openSslRunsAead(uint8_t encAlg) noexcept { return findAead(encAlg) != nullptr; }

std::unique_ptr<Transform> makeOpenSslAead(const TransformSpec& spec, std::string* error) {
  const AeadAlg* alg = findAead(spec.encAlg);
  if (alg == nullptr) {
    fail(error, "openssl driver: not an AEAD: " + std::to_string(spec.encAlg));
    return nullptr;
  }
  if (spec.authAlg != SADB_AALG_NONE && spec.authAlg != SADB_X_AALG_NULL) {
    fail(error, std::string(alg->name) + ": authenticates itself, takes no authentication algorithm");
    return nullptr;
  }
  if (!spec.authKey.empty()) {
    fail(error, std::string(alg->name) + ": takes no authentication key");
    return nullptr;
  }
  const size_t keyBytes = spec.encKey.size() < alg->salt ? 0 : spec.encKey.size() - alg->salt;
  const EVP_CIPHER* cipher = spec.encKey.size() < alg->salt ? nullptr : cipherFor(alg->mode, keyBytes);
  if (cipher == nullptr) {
    const std::string sizes = alg->mode == Mode::kChacha ? std::string("36")
                              : alg->salt == 3           ? std::string("19, 27 or 35")
                                                         : std::string("20, 28 or 36");
    fail(error, std::string(alg->name) + ": key must be " + sizes + " bytes (key and " + std::to_string(alg->salt) +
                    "-byte salt), got " + std::to_string(spec.encKey.size()));
    return nullptr;
  }
  if (!providerCipherAvailable(cipher)) {
    fail(error, std::string(alg->name) + ": OpenSSL's provider exposes no usable implementation");
    return nullptr;
  }
  try {
    return std::make_unique<OpenSslAeadTransform>(*alg, cipher, spec.encKey, spec.esn);
  } catch (const std::exception& e) {
    fail(error, std::string("openssl driver: ") + e.what());
    return nullptr;
  }
}

}  // namespace ipsec::cryptodrv::detail
