// The OpenSSL 3 EVP driver of ipsec-crypto: AES-GCM-16 (RFC 4106) and
// AES-CBC (RFC 3602) or NULL (RFC 2410) encryption with HMAC-SHA1-96 /
// HMAC-SHA2 (RFC 2404, RFC 4868) integrity, ESP style.
//
// Runs ONLY in ipsec-crypto. Trusts keydb for keys and algorithm ids; trusts
// nothing in the packet buffer, which lives in memory the forwarder shares
// and may change at any moment: each value the security depends on (IV,
// ciphertext to verify) is fetched once into private memory.
//
// Per-packet cost: the EVP contexts are keyed once in the constructor and
// only re-initialised with a new IV per packet; HMAC reuses its keyed
// context; nothing is allocated.
#include <linux/pfkeyv2.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <array>
#include <cstring>
#include <stdexcept>

#include "cryptodrv/driver.h"
#include "cryptodrv/hmac.h"
#include "cryptodrv/secure_bytes.h"

namespace ipsec::cryptodrv {

namespace {

constexpr size_t kHeader = 8;
constexpr size_t kGcmIv = 8;
constexpr size_t kGcmIcv = 16;
constexpr size_t kGcmSalt = 4;
constexpr size_t kCbcIv = 16;

// Private copy of an inbound packet, one per worker thread, so that a packet
// is read from shared memory once. Zero-initialised TLS, never allocated.
alignas(64) thread_local uint8_t tlsScratch[Transform::kMaxPacketLength];

void store32(uint8_t* p, uint32_t v) noexcept {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}

struct CtxFree {
  void operator()(EVP_CIPHER_CTX* ctx) const noexcept { EVP_CIPHER_CTX_free(ctx); }
};
using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, CtxFree>;

// A context keyed for one direction; the IV is set per packet.
CipherCtx keyedContext(const EVP_CIPHER* cipher, const uint8_t* key, bool encrypt) {
  CipherCtx ctx(EVP_CIPHER_CTX_new());
  if (!ctx || EVP_CipherInit_ex(ctx.get(), cipher, nullptr, key, nullptr, encrypt ? 1 : 0) != 1 ||
      EVP_CIPHER_CTX_set_padding(ctx.get(), 0) != 1) {
    throw std::runtime_error("EVP cipher context set-up failed");
  }
  return ctx;
}

struct HmacAlg {
  uint8_t id;
  const char* digest;
  uint8_t keyBytes;
  uint8_t icvBytes;
  const char* name;
};

constexpr HmacAlg kHmacAlgs[] = {
    {SADB_AALG_SHA1HMAC, "SHA1", 20, 12, "hmac-sha1"},
    {SADB_X_AALG_SHA2_256HMAC, "SHA256", 32, 16, "hmac-sha256"},
    {SADB_X_AALG_SHA2_384HMAC, "SHA384", 48, 24, "hmac-sha384"},
    {SADB_X_AALG_SHA2_512HMAC, "SHA512", 64, 32, "hmac-sha512"},
};

const HmacAlg* findHmac(uint8_t id) noexcept {
  for (const auto& a : kHmacAlgs)
    if (a.id == id) return &a;
  return nullptr;
}

bool isNoAuth(uint8_t id) noexcept { return id == SADB_AALG_NONE || id == SADB_X_AALG_NULL; }

const AlgorithmInfo kAlgorithms[] = {
    {AlgorithmKind::kEncrypt, SADB_X_EALG_AES_GCM_ICV16, kGcmIv, kGcmIcv, 160, 288, "aes-gcm-16", true},
    {AlgorithmKind::kEncrypt, SADB_X_EALG_AESCBC, kCbcIv, 0, 128, 256, "aes-cbc", false},
    {AlgorithmKind::kEncrypt, SADB_EALG_NULL, 0, 0, 0, 0, "null", false},
    {AlgorithmKind::kAuth, SADB_AALG_SHA1HMAC, 0, 12, 160, 160, "hmac-sha1", false},
    {AlgorithmKind::kAuth, SADB_X_AALG_SHA2_256HMAC, 0, 16, 256, 256, "hmac-sha256", false},
    {AlgorithmKind::kAuth, SADB_X_AALG_SHA2_384HMAC, 0, 24, 384, 384, "hmac-sha384", false},
    {AlgorithmKind::kAuth, SADB_X_AALG_SHA2_512HMAC, 0, 32, 512, 512, "hmac-sha512", false},
};

// AAD per RFC 4106 §5 from a private copy of the header.
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

class AesGcmTransform final : public Transform {
 public:
  AesGcmTransform(const EVP_CIPHER* cipher, std::span<const uint8_t> keymat, bool esn)
      : keymat_(keymat),
        esn_(esn),
        enc_(keyedContext(cipher, keymat_.data(), true)),
        dec_(keyedContext(cipher, keymat_.data(), false)),
        name_("openssl:aes-gcm-16-" + std::to_string((keymat.size() - kGcmSalt) * 8)) {}

  uint8_t ivLength() const noexcept override { return kGcmIv; }
  uint8_t icvLength() const noexcept override { return kGcmIcv; }
  uint8_t padAlign() const noexcept override { return 4; }
  bool ivIsCounter() const noexcept override { return true; }
  bool esn() const noexcept override { return esn_; }
  std::string_view name() const noexcept override { return name_; }

  Status sealWithIv(uint8_t* esp, size_t len, uint32_t seqHigh, const uint8_t* iv) noexcept override {
    size_t region = 0;
    if (!regionOf(esp, len, region)) return Status::kBadLength;
    std::memcpy(esp + kHeader, iv, kGcmIv);
    uint8_t nonce[kGcmSalt + kGcmIv];
    makeNonce(iv, nonce);
    uint8_t header[kHeader];
    std::memcpy(header, esp, kHeader);
    uint8_t aad[12];
    const int aadLen = static_cast<int>(buildAad(header, esn_, seqHigh, aad));
    uint8_t* payload = esp + kHeader + kGcmIv;
    int out = 0;
    int fin = 0;
    EVP_CIPHER_CTX* c = enc_.get();
    if (EVP_EncryptInit_ex(c, nullptr, nullptr, nullptr, nonce) != 1 ||
        EVP_EncryptUpdate(c, nullptr, &out, aad, aadLen) != 1 ||
        EVP_EncryptUpdate(c, payload, &out, payload, static_cast<int>(region)) != 1 ||
        EVP_EncryptFinal_ex(c, payload + out, &fin) != 1 ||
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, kGcmIcv, payload + region) != 1) {
      return Status::kInternal;
    }
    return Status::kOk;
  }

  Status open(uint8_t* esp, size_t len, uint32_t seqHigh) noexcept override {
    size_t region = 0;
    if (!regionOf(esp, len, region)) return Status::kBadLength;
    uint8_t* copy = tlsScratch;
    std::memcpy(copy, esp, len);
    uint8_t nonce[kGcmSalt + kGcmIv];
    makeNonce(copy + kHeader, nonce);
    uint8_t aad[12];
    const int aadLen = static_cast<int>(buildAad(copy, esn_, seqHigh, aad));
    uint8_t* payload = copy + kHeader + kGcmIv;
    int out = 0;
    int fin = 0;
    EVP_CIPHER_CTX* c = dec_.get();
    if (EVP_DecryptInit_ex(c, nullptr, nullptr, nullptr, nonce) != 1 ||
        EVP_DecryptUpdate(c, nullptr, &out, aad, aadLen) != 1 ||
        EVP_DecryptUpdate(c, payload, &out, payload, static_cast<int>(region)) != 1 ||
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, kGcmIcv, payload + region) != 1) {
      return Status::kInternal;
    }
    // The tag comparison inside EVP_DecryptFinal_ex is CRYPTO_memcmp. The
    // plaintext so far exists only in the private copy.
    if (EVP_DecryptFinal_ex(c, payload + out, &fin) != 1) return Status::kBadIcv;
    std::memcpy(esp + kHeader + kGcmIv, payload, region);
    return Status::kOk;
  }

 private:
  bool regionOf(const uint8_t* esp, size_t len, size_t& region) const noexcept {
    // At least the 2-byte trailer, padded to 4.
    if (esp == nullptr || len > kMaxPacketLength || len < kHeader + kGcmIv + 4 + kGcmIcv) return false;
    region = len - kHeader - kGcmIv - kGcmIcv;
    return region % 4 == 0;
  }
  void makeNonce(const uint8_t* iv, uint8_t* nonce) const noexcept {
    std::memcpy(nonce, keymat_.data() + keymat_.size() - kGcmSalt, kGcmSalt);
    std::memcpy(nonce + kGcmSalt, iv, kGcmIv);
  }

  SecureBytes keymat_;  // key || salt
  bool esn_;
  CipherCtx enc_;
  CipherCtx dec_;
  std::string name_;
};

// AES-CBC or NULL encryption, then HMAC or no integrity (encrypt-then-MAC).
class CbcHmacTransform final : public Transform {
 public:
  CbcHmacTransform(const EVP_CIPHER* cipher, std::span<const uint8_t> encKey, const HmacAlg* auth,
                   std::span<const uint8_t> authKey, bool esn)
      : encKey_(encKey), esn_(esn), auth_(auth) {
    if (cipher != nullptr) {
      enc_ = keyedContext(cipher, encKey_.data(), true);
      dec_ = keyedContext(cipher, encKey_.data(), false);
    }
    if (auth != nullptr) {
      std::string error;
      // OpenSSL keeps its own (cleansed on free) copy of the HMAC key.
      hmac_ = Hmac::create(auth->digest, authKey, &error);
      if (!hmac_) throw std::runtime_error(error);
    }
    name_ = std::string("openssl:") + (cipher ? "aes-cbc-" + std::to_string(encKey.size() * 8) : "null") + "+" +
            (auth ? auth->name : "none");
  }

  uint8_t ivLength() const noexcept override { return enc_ ? kCbcIv : 0; }
  uint8_t icvLength() const noexcept override { return auth_ ? auth_->icvBytes : 0; }
  uint8_t padAlign() const noexcept override { return enc_ ? 16 : 4; }
  // CBC needs an unpredictable IV (RFC 3602 §2.3); NULL has none to make.
  bool ivIsCounter() const noexcept override { return !enc_; }
  bool esn() const noexcept override { return esn_; }
  std::string_view name() const noexcept override { return name_; }

  Status sealWithIv(uint8_t* esp, size_t len, uint32_t seqHigh, const uint8_t* iv) noexcept override {
    size_t region = 0;
    if (!regionOf(esp, len, region)) return Status::kBadLength;
    const size_t ivLen = ivLength();
    uint8_t* payload = esp + kHeader + ivLen;
    if (enc_) {
      std::memcpy(esp + kHeader, iv, ivLen);
      int out = 0;
      int fin = 0;
      EVP_CIPHER_CTX* c = enc_.get();
      if (EVP_EncryptInit_ex(c, nullptr, nullptr, nullptr, iv) != 1 ||
          EVP_EncryptUpdate(c, payload, &out, payload, static_cast<int>(region)) != 1 ||
          EVP_EncryptFinal_ex(c, payload + out, &fin) != 1 || static_cast<size_t>(out + fin) != region) {
        return Status::kInternal;
      }
    }
    if (auth_) {
      uint8_t mac[Hmac::kMaxSize];
      if (!computeMac(esp, len - auth_->icvBytes, seqHigh, mac)) return Status::kInternal;
      std::memcpy(esp + len - auth_->icvBytes, mac, auth_->icvBytes);
    }
    return Status::kOk;
  }

  Status open(uint8_t* esp, size_t len, uint32_t seqHigh) noexcept override {
    size_t region = 0;
    if (!regionOf(esp, len, region)) return Status::kBadLength;
    uint8_t* copy = tlsScratch;
    std::memcpy(copy, esp, len);
    if (auth_) {
      const size_t icv = auth_->icvBytes;
      uint8_t mac[Hmac::kMaxSize];
      if (!computeMac(copy, len - icv, seqHigh, mac)) return Status::kInternal;
      if (CRYPTO_memcmp(mac, copy + len - icv, icv) != 0) return Status::kBadIcv;
    }
    const size_t ivLen = ivLength();
    const uint8_t* cipherText = copy + kHeader + ivLen;
    uint8_t* plainText = esp + kHeader + ivLen;
    if (!enc_) {
      std::memcpy(plainText, cipherText, region);  // exactly the bytes verified
      return Status::kOk;
    }
    int out = 0;
    int fin = 0;
    EVP_CIPHER_CTX* c = dec_.get();
    if (EVP_DecryptInit_ex(c, nullptr, nullptr, nullptr, copy + kHeader) != 1 ||
        EVP_DecryptUpdate(c, plainText, &out, cipherText, static_cast<int>(region)) != 1 ||
        EVP_DecryptFinal_ex(c, plainText + out, &fin) != 1 || static_cast<size_t>(out + fin) != region) {
      return Status::kInternal;
    }
    return Status::kOk;
  }

 private:
  bool regionOf(const uint8_t* esp, size_t len, size_t& region) const noexcept {
    const size_t fixed = kHeader + ivLength() + icvLength();
    if (esp == nullptr || len > kMaxPacketLength || len < fixed + padAlign()) return false;
    region = len - fixed;
    return region % padAlign() == 0;
  }
  bool computeMac(const uint8_t* data, size_t len, uint32_t seqHigh, uint8_t* mac) noexcept {
    if (!hmac_->begin() || !hmac_->update(data, len)) return false;
    if (esn_) {
      uint8_t high[4];
      store32(high, seqHigh);
      if (!hmac_->update(high, sizeof high)) return false;
    }
    return hmac_->finish(mac);
  }

  SecureBytes encKey_;
  bool esn_;
  const HmacAlg* auth_;
  CipherCtx enc_;
  CipherCtx dec_;
  std::unique_ptr<Hmac> hmac_;
  std::string name_;
};

class OpenSslDriver final : public Driver {
 public:
  std::string_view name() const noexcept override { return "openssl"; }
  std::span<const AlgorithmInfo> algorithms() const noexcept override { return kAlgorithms; }

  bool supports(const TransformSpec& spec) const noexcept override {
    switch (spec.encAlg) {
      case SADB_X_EALG_AES_GCM_ICV16: return isNoAuth(spec.authAlg);
      case SADB_X_EALG_AESCBC: return isNoAuth(spec.authAlg) || findHmac(spec.authAlg) != nullptr;
      case SADB_EALG_NULL: return findHmac(spec.authAlg) != nullptr;  // RFC 4303 §3.2: not both NULL
      default: return false;
    }
  }

  std::unique_ptr<Transform> create(const TransformSpec& spec, std::string* error) const override {
    auto fail = [&](std::string why) -> std::unique_ptr<Transform> {
      if (error) *error = std::move(why);
      return nullptr;
    };
    if (!supports(spec)) {
      return fail("openssl driver: unsupported algorithm pair (encryption " + std::to_string(spec.encAlg) +
                  ", authentication " + std::to_string(spec.authAlg) + ")");
    }
    try {
      if (spec.encAlg == SADB_X_EALG_AES_GCM_ICV16) {
        if (!spec.authKey.empty()) return fail("aes-gcm-16: takes no authentication key");
        const EVP_CIPHER* cipher = nullptr;
        switch (spec.encKey.size()) {
          case 16 + kGcmSalt: cipher = EVP_aes_128_gcm(); break;
          case 24 + kGcmSalt: cipher = EVP_aes_192_gcm(); break;
          case 32 + kGcmSalt: cipher = EVP_aes_256_gcm(); break;
          default:
            return fail("aes-gcm-16: key must be 20, 28 or 36 bytes (key and 4-byte salt), got " +
                        std::to_string(spec.encKey.size()));
        }
        return std::make_unique<AesGcmTransform>(cipher, spec.encKey, spec.esn);
      }
      const EVP_CIPHER* cipher = nullptr;
      if (spec.encAlg == SADB_X_EALG_AESCBC) {
        switch (spec.encKey.size()) {
          case 16: cipher = EVP_aes_128_cbc(); break;
          case 24: cipher = EVP_aes_192_cbc(); break;
          case 32: cipher = EVP_aes_256_cbc(); break;
          default:
            return fail("aes-cbc: key must be 16, 24 or 32 bytes, got " + std::to_string(spec.encKey.size()));
        }
      } else if (!spec.encKey.empty()) {
        return fail("null encryption: takes no key");
      }
      const HmacAlg* auth = findHmac(spec.authAlg);
      if (auth != nullptr && spec.authKey.size() != auth->keyBytes) {
        return fail(std::string(auth->name) + ": key must be " + std::to_string(auth->keyBytes) + " bytes, got " +
                    std::to_string(spec.authKey.size()));
      }
      if (auth == nullptr && !spec.authKey.empty()) return fail("no authentication algorithm but a key was given");
      return std::make_unique<CbcHmacTransform>(cipher, spec.encKey, auth, spec.authKey, spec.esn);
    } catch (const std::exception& e) {
      return fail(std::string("openssl driver: ") + e.what());
    }
  }
};

}  // namespace

std::unique_ptr<Driver> makeOpenSslDriver() { return std::make_unique<OpenSslDriver>(); }

}  // namespace ipsec::cryptodrv
