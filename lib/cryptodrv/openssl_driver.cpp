// The OpenSSL 3 EVP driver of ipsec-crypto. Its combined-mode transforms
// (GCM, CCM, GMAC, ChaCha20-Poly1305) are in openssl_aead.cpp; this file has
// the encrypt-then-MAC transform, ESP style: AES-CBC (RFC 3602), AES-CTR
// (RFC 3686), 3DES-CBC (RFC 2451, legacy) or NULL (RFC 2410) encryption,
// then HMAC-SHA1-96 (RFC 2404), HMAC-SHA2 (RFC 4868), AES-XCBC-MAC-96
// (RFC 3566), AES-CMAC-96 (RFC 4494), HMAC-MD5-96 (RFC 2403, legacy) or no
// integrity; and the driver that picks between them.
//
// Runs ONLY in ipsec-crypto. Trusts keydb for keys and algorithm ids; trusts
// nothing in the packet buffer, which lives in memory the forwarder shares
// and may change at any moment: each value the security depends on (IV,
// ciphertext to verify) is fetched once into private memory.
//
// Per-packet cost: each direction's cipher context is keyed once, on its
// first packet, with padding off, through the provider's own functions
// (provider_cipher.h: OpenSSL 3.0's EVP re-init re-asked the provider for the
// IV length and re-sent the padding flag every packet); per packet it only
// gets the IV. The MAC reuses its keyed context (provider_mac.h); nothing of
// ours is allocated after that first packet (OpenSSL 3.0's HMAC copies its
// keyed digest states per message, which allocates inside OpenSSL).
#include <linux/pfkeyv2.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include <cstring>
#include <stdexcept>

#include "cryptodrv/driver.h"
#include "cryptodrv/esp_common.h"
#include "cryptodrv/hmac.h"
#include "cryptodrv/mac.h"
#include "cryptodrv/provider_cipher.h"
#include "securemem/secure_bytes.h"

namespace ipsec::cryptodrv {

namespace {

using detail::kEspHeader;
using detail::ProviderCipher;

enum class CipherKind : uint8_t { kNull, kAesCbc, kAesCtr, kDes3Cbc };

struct CipherAlg {
  uint8_t id;
  CipherKind kind;
  uint8_t iv;
  uint8_t align;  // padAlign(): the cipher's block, at least 4
  uint8_t nonce;  // bytes at the end of the PF_KEY key (RFC 3686 nonce)
  const char* name;
};

constexpr CipherAlg kCiphers[] = {
    {SADB_EALG_NULL, CipherKind::kNull, 0, 4, 0, "null"},
    {SADB_X_EALG_AESCBC, CipherKind::kAesCbc, 16, 16, 0, "aes-cbc"},
    {SADB_X_EALG_AESCTR, CipherKind::kAesCtr, 8, 4, 4, "aes-ctr"},
    {SADB_EALG_3DESCBC, CipherKind::kDes3Cbc, 8, 8, 0, "3des-cbc"},
};

enum class MacKind : uint8_t { kHmac, kXcbc, kCmac };

struct MacAlg {
  uint8_t id;
  MacKind kind;
  const char* digest;  // HMAC only
  uint8_t keyBytes;
  uint8_t icvBytes;
  const char* name;
};

constexpr MacAlg kMacs[] = {
    {SADB_AALG_MD5HMAC, MacKind::kHmac, "MD5", 16, 12, "hmac-md5"},
    {SADB_AALG_SHA1HMAC, MacKind::kHmac, "SHA1", 20, 12, "hmac-sha1"},
    {SADB_X_AALG_SHA2_256HMAC, MacKind::kHmac, "SHA256", 32, 16, "hmac-sha256"},
    {SADB_X_AALG_SHA2_384HMAC, MacKind::kHmac, "SHA384", 48, 24, "hmac-sha384"},
    {SADB_X_AALG_SHA2_512HMAC, MacKind::kHmac, "SHA512", 64, 32, "hmac-sha512"},
    {SADB_X_AALG_AES_XCBC_MAC, MacKind::kXcbc, nullptr, 16, 12, "aes-xcbc-mac"},
    {kSadbXAalgAesCmac96, MacKind::kCmac, nullptr, 16, 12, "aes-cmac"},
};

template <class Table>
auto findIn(const Table& table, uint8_t id) noexcept -> decltype(&table[0]) {
  for (const auto& a : table)
    if (a.id == id) return &a;
  return nullptr;
}

bool isNoAuth(uint8_t id) noexcept { return id == SADB_AALG_NONE || id == SADB_X_AALG_NULL; }

// What this driver announces: every row of the shared table that it runs.
std::vector<AlgorithmInfo> openSslAlgorithms() {
  std::vector<AlgorithmInfo> out;
  for (const auto& a : knownAlgorithms()) {
    const bool runs = a.kind == AlgorithmKind::kEncrypt
                          ? (findIn(kCiphers, a.id) != nullptr || detail::openSslRunsAead(a.id))
                          : findIn(kMacs, a.id) != nullptr;
    if (runs) out.push_back(a);
  }
  return out;
}

const EVP_CIPHER* evpCipher(CipherKind kind, size_t keyBytes) noexcept {
  switch (kind) {
    case CipherKind::kNull: return nullptr;
    case CipherKind::kAesCbc:
      return keyBytes == 16 ? EVP_aes_128_cbc() : keyBytes == 24 ? EVP_aes_192_cbc() : keyBytes == 32 ? EVP_aes_256_cbc() : nullptr;
    case CipherKind::kAesCtr:
      return keyBytes == 16 ? EVP_aes_128_ctr() : keyBytes == 24 ? EVP_aes_192_ctr() : keyBytes == 32 ? EVP_aes_256_ctr() : nullptr;
    case CipherKind::kDes3Cbc: return keyBytes == 24 ? EVP_des_ede3_cbc() : nullptr;
  }
  return nullptr;
}

std::unique_ptr<Mac> makeMac(const MacAlg& alg, std::span<const uint8_t> key, std::string* error) {
  switch (alg.kind) {
    case MacKind::kHmac: return Hmac::create(alg.digest, key, error);
    case MacKind::kXcbc: return makeAesXcbcMac(key, error);
    case MacKind::kCmac: return makeAesCmac(key, error);
  }
  return nullptr;
}

// A cipher (or NULL), then a MAC (or none): encrypt-then-MAC.
class CipherMacTransform final : public Transform {
 public:
  CipherMacTransform(const CipherAlg& cipherAlg, const EVP_CIPHER* cipher, std::span<const uint8_t> encKey,
                     const MacAlg* auth, std::span<const uint8_t> authKey, bool esn)
      : cipherAlg_(cipherAlg), encKey_(encKey), esn_(esn), auth_(auth), cipher_(detail::fetchedCipher(cipher)) {
    // The cipher contexts are keyed on first use, one per direction: an SA
    // only seals or only opens (see openssl_aead.cpp).
    if (auth != nullptr) {
      std::string error;
      // OpenSSL keeps its own (cleansed on free) copy of the MAC key.
      mac_ = makeMac(*auth, authKey, &error);
      if (!mac_) throw std::runtime_error(error);
    }
    const size_t keyBits = (encKey.size() - cipherAlg.nonce) * 8;
    name_ = std::string("openssl:") + cipherAlg.name;
    if (cipherAlg.kind == CipherKind::kAesCbc || cipherAlg.kind == CipherKind::kAesCtr)
      name_ += "-" + std::to_string(keyBits);
    name_ += std::string("+") + (auth ? auth->name : "none");
  }

  uint8_t ivLength() const noexcept override { return cipherAlg_.iv; }
  uint8_t icvLength() const noexcept override { return auth_ ? auth_->icvBytes : 0; }
  uint8_t padAlign() const noexcept override { return cipherAlg_.align; }
  // CBC needs an unpredictable IV (RFC 3602 §2.3, RFC 2451); CTR only a
  // unique one (RFC 3686 §3); NULL has none to make.
  bool ivIsCounter() const noexcept override {
    return cipherAlg_.kind != CipherKind::kAesCbc && cipherAlg_.kind != CipherKind::kDes3Cbc;
  }
  bool esn() const noexcept override { return esn_; }
  std::string_view name() const noexcept override { return name_; }

  Status sealWithIv(uint8_t* esp, size_t len, uint32_t seqHigh, const uint8_t* iv) noexcept override {
    size_t region = 0;
    if (!regionOf(esp, len, region)) return Status::kBadLength;
    const size_t ivLen = ivLength();
    uint8_t* payload = esp + kEspHeader + ivLen;
    if (cipher_ != nullptr) {
      ProviderCipher* c = ready(enc_, true);
      if (c == nullptr) return Status::kInternal;
      std::memcpy(esp + kEspHeader, iv, ivLen);
      if (!crypt(c, iv, payload, payload, region)) return Status::kInternal;
    }
    if (auth_) {
      uint8_t mac[Mac::kMaxSize];
      if (!computeMac(esp, len - auth_->icvBytes, seqHigh, mac)) return Status::kInternal;
      std::memcpy(esp + len - auth_->icvBytes, mac, auth_->icvBytes);
    }
    return Status::kOk;
  }

  Status open(uint8_t* esp, size_t len, uint32_t seqHigh) noexcept override {
    size_t region = 0;
    if (!regionOf(esp, len, region)) return Status::kBadLength;
    uint8_t* copy = detail::packetScratch();
    std::memcpy(copy, esp, len);
    if (auth_) {
      const size_t icv = auth_->icvBytes;
      uint8_t mac[Mac::kMaxSize];
      if (!computeMac(copy, len - icv, seqHigh, mac)) return Status::kInternal;
      if (CRYPTO_memcmp(mac, copy + len - icv, icv) != 0) return Status::kBadIcv;
    }
    const size_t ivLen = ivLength();
    const uint8_t* cipherText = copy + kEspHeader + ivLen;
    uint8_t* plainText = esp + kEspHeader + ivLen;
    if (cipher_ == nullptr) {
      std::memcpy(plainText, cipherText, region);  // exactly the bytes verified
      return Status::kOk;
    }
    ProviderCipher* c = ready(dec_, false);
    if (c == nullptr) return Status::kInternal;
    return crypt(c, copy + kEspHeader, cipherText, plainText, region) ? Status::kOk : Status::kInternal;
  }

 private:
  // The direction's context, keyed now if this is its first packet (on the
  // worker thread that owns this transform); nullptr if OpenSSL failed.
  ProviderCipher* ready(std::unique_ptr<ProviderCipher>& slot, bool encrypt) noexcept {
    if (!slot) {
      try {
        // ESP pads itself (RFC 4303 §2.4): the cipher sees whole blocks.
        unsigned int padding = 0;
        const OSSL_PARAM noPadding[] = {
            OSSL_PARAM_construct_uint(OSSL_CIPHER_PARAM_PADDING, &padding),
            OSSL_PARAM_construct_end(),
        };
        slot = std::make_unique<ProviderCipher>(cipher_, encKey_.data(), encKey_.size() - cipherAlg_.nonce, encrypt,
                                                noPadding);
      } catch (...) {
        return nullptr;
      }
    }
    return slot.get();
  }
  bool regionOf(const uint8_t* esp, size_t len, size_t& region) const noexcept {
    const size_t fixed = kEspHeader + ivLength() + icvLength();
    if (esp == nullptr || len > kMaxPacketLength || len < fixed + padAlign()) return false;
    region = len - fixed;
    return region % padAlign() == 0;
  }
  // One packet through the keyed context; `iv` is private memory.
  bool crypt(ProviderCipher* c, const uint8_t* iv, const uint8_t* in, uint8_t* out, size_t n) noexcept {
    uint8_t counterBlock[16];
    const uint8_t* start = iv;
    size_t startLength = cipherAlg_.iv;
    if (cipherAlg_.kind == CipherKind::kAesCtr) {
      // RFC 3686 §4: nonce || IV || block counter starting at 1.
      std::memcpy(counterBlock, encKey_.data() + encKey_.size() - 4, 4);
      std::memcpy(counterBlock + 4, iv, 8);
      detail::store32(counterBlock + 12, 1);
      start = counterBlock;
      startLength = sizeof counterBlock;
    }
    // update() checks that all n bytes came out, finish() that none was held.
    return c->start(start, startLength) && c->update(out, in, n) && c->finish(out + n, 0);
  }
  bool computeMac(const uint8_t* data, size_t len, uint32_t seqHigh, uint8_t* mac) noexcept {
    if (!mac_->begin() || !mac_->update(data, len)) return false;
    if (esn_) {
      uint8_t high[4];
      detail::store32(high, seqHigh);
      if (!mac_->update(high, sizeof high)) return false;
    }
    return mac_->finish(mac);
  }

  const CipherAlg& cipherAlg_;
  securemem::SecureBytes encKey_;  // key || nonce for CTR
  bool esn_;
  const MacAlg* auth_;
  const EVP_CIPHER* cipher_;             // fetched once per process; nullptr for NULL encryption
  std::unique_ptr<ProviderCipher> enc_;  // keyed on the first seal
  std::unique_ptr<ProviderCipher> dec_;  // keyed on the first open
  std::unique_ptr<Mac> mac_;
  std::string name_;
};

class OpenSslDriver final : public Driver {
 public:
  OpenSslDriver() : algorithms_(openSslAlgorithms()) {}

  std::string_view name() const noexcept override { return "openssl"; }
  std::span<const AlgorithmInfo> algorithms() const noexcept override { return algorithms_; }

  bool supports(const TransformSpec& spec) const noexcept override {
    if (detail::openSslRunsAead(spec.encAlg)) return isNoAuth(spec.authAlg);
    if (findIn(kCiphers, spec.encAlg) == nullptr) return false;
    if (isNoAuth(spec.authAlg)) return spec.encAlg != SADB_EALG_NULL;  // RFC 4303 §3.2: not both NULL
    return findIn(kMacs, spec.authAlg) != nullptr;
  }

  std::unique_ptr<Transform> create(const TransformSpec& spec, std::string* error) const override {
    auto fail = [&](std::string why) -> std::unique_ptr<Transform> {
      detail::fail(error, std::move(why));
      return nullptr;
    };
    if (!supports(spec)) {
      return fail("openssl driver: unsupported algorithm pair (encryption " + std::to_string(spec.encAlg) +
                  ", authentication " + std::to_string(spec.authAlg) + ")");
    }
    if (std::string why; !legacyAllowed(spec, &why)) return fail(why);
    if (detail::openSslRunsAead(spec.encAlg)) return detail::makeOpenSslAead(spec, error);
    const CipherAlg& cipherAlg = *findIn(kCiphers, spec.encAlg);
    const EVP_CIPHER* cipher = nullptr;
    if (cipherAlg.kind != CipherKind::kNull) {
      const size_t keyBytes = spec.encKey.size() >= cipherAlg.nonce ? spec.encKey.size() - cipherAlg.nonce : 0;
      cipher = evpCipher(cipherAlg.kind, keyBytes);
      if (cipher == nullptr) {
        const char* sizes = cipherAlg.kind == CipherKind::kAesCbc   ? "16, 24 or 32 bytes"
                            : cipherAlg.kind == CipherKind::kAesCtr ? "20, 28 or 36 bytes (key and 4-byte nonce)"
                                                                     : "24 bytes";
        return fail(std::string(cipherAlg.name) + ": key must be " + sizes + ", got " +
                    std::to_string(spec.encKey.size()));
      }
      if (!detail::providerCipherAvailable(cipher))
        return fail(std::string(cipherAlg.name) + ": OpenSSL's provider exposes no usable implementation");
    } else if (!spec.encKey.empty()) {
      return fail("null encryption: takes no key");
    }
    const MacAlg* auth = findIn(kMacs, spec.authAlg);
    if (auth != nullptr && spec.authKey.size() != auth->keyBytes) {
      return fail(std::string(auth->name) + ": key must be " + std::to_string(auth->keyBytes) + " bytes, got " +
                  std::to_string(spec.authKey.size()));
    }
    if (auth == nullptr && !spec.authKey.empty()) return fail("no authentication algorithm but a key was given");
    try {
      return std::make_unique<CipherMacTransform>(cipherAlg, cipher, spec.encKey, auth, spec.authKey, spec.esn);
    } catch (const std::exception& e) {
      return fail(std::string("openssl driver: ") + e.what());
    }
  }

 private:
  std::vector<AlgorithmInfo> algorithms_;
};

}  // namespace

std::unique_ptr<Driver> makeOpenSslDriver() { return std::make_unique<OpenSslDriver>(); }

}  // namespace ipsec::cryptodrv
