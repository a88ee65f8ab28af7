// The libsodium driver of ipsec-crypto: ChaCha20-Poly1305 (RFC 7634, the
// IETF construction with a 96-bit nonce) and AES-256-GCM with a 16-byte ICV
// (RFC 4106), the latter only where libsodium can run it (it needs AES-NI
// and PCLMUL: crypto_aead_aes256gcm_is_available()).
//
// Runs ONLY in ipsec-crypto. Same trust rules as the OpenSSL driver: the
// packet buffer is shared with the forwarder, so open() verifies and
// decrypts a private copy (libsodium compares the tag in constant time) and
// only then writes the plaintext back.
//
// Keys (and AES-GCM's expanded key schedule) live in sodium_malloc memory;
// nothing is allocated per packet.
#include <linux/pfkeyv2.h>
#include <sodium.h>

#include <cstdint>
#include <cstring>
#include <stdexcept>

#include "cryptodrv/driver.h"
#include "cryptodrv/esp_common.h"
#include "securemem/secure_bytes.h"

namespace ipsec::cryptodrv {
namespace {

using detail::kEspHeader;

constexpr size_t kIv = 8;
constexpr size_t kSalt = 4;
constexpr size_t kIcv = 16;
constexpr size_t kKey = 32;

static_assert(crypto_aead_chacha20poly1305_ietf_NPUBBYTES == kSalt + kIv);
static_assert(crypto_aead_chacha20poly1305_ietf_ABYTES == kIcv);
static_assert(crypto_aead_chacha20poly1305_ietf_KEYBYTES == kKey);
static_assert(crypto_aead_aes256gcm_NPUBBYTES == kSalt + kIv);
static_assert(crypto_aead_aes256gcm_ABYTES == kIcv);
static_assert(crypto_aead_aes256gcm_KEYBYTES == kKey);

enum class Cipher : uint8_t { kChacha20Poly1305, kAes256Gcm };

class SodiumTransform final : public Transform {
 public:
  SodiumTransform(Cipher cipher, std::span<const uint8_t> keymat, bool esn)
      : cipher_(cipher),
        keymat_(keymat),
        // The AES-GCM key schedule is key material too: locked, guarded memory.
        state_(std::span<const uint8_t>(zeroState_, cipher == Cipher::kAes256Gcm ? sizeof zeroState_ : 0)),
        esn_(esn),
        name_(cipher == Cipher::kAes256Gcm ? "sodium:aes-gcm-16-256" : "sodium:chacha20-poly1305") {
    if (cipher == Cipher::kAes256Gcm) {
      // libsodium wants the state 16-byte aligned; sodium_malloc places a
      // block of 512 bytes against a page end, which is.
      if (reinterpret_cast<uintptr_t>(state_.data()) % alignof(crypto_aead_aes256gcm_state) != 0)
        throw std::runtime_error("misaligned AES-GCM state");
      crypto_aead_aes256gcm_beforenm(gcmState(), keymat_.data());
    }
  }

  uint8_t ivLength() const noexcept override { return kIv; }
  uint8_t icvLength() const noexcept override { return kIcv; }
  uint8_t padAlign() const noexcept override { return 4; }
  bool ivIsCounter() const noexcept override { return true; }
  bool esn() const noexcept override { return esn_; }
  std::string_view name() const noexcept override { return name_; }

  Status sealWithIv(uint8_t* esp, size_t len, uint32_t seqHigh, const uint8_t* iv) noexcept override {
    size_t region = 0;
    if (!regionOf(esp, len, region)) return Status::kBadLength;
    std::memcpy(esp + kEspHeader, iv, kIv);
    uint8_t nonce[kSalt + kIv];
    makeNonce(iv, nonce);
    uint8_t header[kEspHeader];
    std::memcpy(header, esp, kEspHeader);
    uint8_t aad[12];
    const size_t aadLen = detail::buildAad(header, esn_, seqHigh, aad);
    uint8_t* payload = esp + kEspHeader + kIv;
    unsigned long long tagLen = 0;
    const int rc = cipher_ == Cipher::kAes256Gcm
                       ? crypto_aead_aes256gcm_encrypt_detached_afternm(payload, payload + region, &tagLen, payload,
                                                                        region, aad, aadLen, nullptr, nonce, gcmState())
                       : crypto_aead_chacha20poly1305_ietf_encrypt_detached(payload, payload + region, &tagLen, payload,
                                                                            region, aad, aadLen, nullptr, nonce,
                                                                            keymat_.data());
    return rc == 0 && tagLen == kIcv ? Status::kOk : Status::kInternal;
  }

  Status open(uint8_t* esp, size_t len, uint32_t seqHigh) noexcept override {
    size_t region = 0;
    if (!regionOf(esp, len, region)) return Status::kBadLength;
    uint8_t* copy = detail::packetScratch();
    std::memcpy(copy, esp, len);
    uint8_t nonce[kSalt + kIv];
    makeNonce(copy + kEspHeader, nonce);
    uint8_t aad[12];
    const size_t aadLen = detail::buildAad(copy, esn_, seqHigh, aad);
    // In place in the private copy: libsodium's AES-GCM wipes its output on
    // a bad tag, and a rejected packet must stay as received.
    uint8_t* payload = copy + kEspHeader + kIv;
    const int rc = cipher_ == Cipher::kAes256Gcm
                       ? crypto_aead_aes256gcm_decrypt_detached_afternm(payload, nullptr, payload, region,
                                                                        payload + region, aad, aadLen, nonce,
                                                                        gcmState())
                       : crypto_aead_chacha20poly1305_ietf_decrypt_detached(payload, nullptr, payload, region,
                                                                            payload + region, aad, aadLen, nonce,
                                                                            keymat_.data());
    if (rc != 0) return Status::kBadIcv;
    std::memcpy(esp + kEspHeader + kIv, payload, region);
    return Status::kOk;
  }

 private:
  bool regionOf(const uint8_t* esp, size_t len, size_t& region) const noexcept {
    if (esp == nullptr || len > kMaxPacketLength || len < kEspHeader + kIv + 4 + kIcv) return false;
    region = len - kEspHeader - kIv - kIcv;
    return region % 4 == 0;
  }
  void makeNonce(const uint8_t* iv, uint8_t* nonce) const noexcept {
    std::memcpy(nonce, keymat_.data() + kKey, kSalt);
    std::memcpy(nonce + kSalt, iv, kIv);
  }
  crypto_aead_aes256gcm_state* gcmState() noexcept {
    return reinterpret_cast<crypto_aead_aes256gcm_state*>(state_.mutableData());
  }

  static constexpr uint8_t zeroState_[sizeof(crypto_aead_aes256gcm_state)] = {};
  Cipher cipher_;
  securemem::SecureBytes keymat_;  // key || salt
  securemem::SecureBytes state_;   // crypto_aead_aes256gcm_state (AES-GCM only)
  bool esn_;
  std::string name_;
};

class SodiumDriver final : public Driver {
 public:
  SodiumDriver() {
    securemem::ensureSodiumInitialized();
    for (const auto& a : knownAlgorithms()) {
      if (a.kind != AlgorithmKind::kEncrypt) continue;
      if (a.id == kSadbXEalgChacha20Poly1305) algorithms_.push_back(a);
      if (a.id == SADB_X_EALG_AES_GCM_ICV16 && aesGcm()) {
        // Only AES-256 (a 36-byte key with its salt).
        AlgorithmInfo only256 = a;
        only256.minKeyBits = only256.maxKeyBits = (kKey + kSalt) * 8;
        algorithms_.push_back(only256);
      }
    }
  }

  std::string_view name() const noexcept override { return "sodium"; }
  std::span<const AlgorithmInfo> algorithms() const noexcept override { return algorithms_; }

  // Key lengths matter here: this driver runs AES-GCM only with 256-bit keys,
  // so that a registry preferring it still finds OpenSSL for the others.
  bool supports(const TransformSpec& spec) const noexcept override {
    if (spec.authAlg != SADB_AALG_NONE && spec.authAlg != SADB_X_AALG_NULL) return false;
    if (spec.encAlg == kSadbXEalgChacha20Poly1305) return true;
    return spec.encAlg == SADB_X_EALG_AES_GCM_ICV16 && aesGcm() && spec.encKey.size() == kKey + kSalt;
  }

  std::unique_ptr<Transform> create(const TransformSpec& spec, std::string* error) const override {
    if (!supports(spec)) {
      detail::fail(error, "sodium driver: unsupported algorithm pair (encryption " + std::to_string(spec.encAlg) +
                              ", authentication " + std::to_string(spec.authAlg) + ", key " +
                              std::to_string(spec.encKey.size()) + " bytes)");
      return nullptr;
    }
    if (spec.encKey.size() != kKey + kSalt) {
      detail::fail(error, "chacha20-poly1305: key must be 36 bytes (key and 4-byte salt), got " +
                              std::to_string(spec.encKey.size()));
      return nullptr;
    }
    if (!spec.authKey.empty()) {
      detail::fail(error, "sodium driver: an AEAD takes no authentication key");
      return nullptr;
    }
    try {
      const Cipher c = spec.encAlg == kSadbXEalgChacha20Poly1305 ? Cipher::kChacha20Poly1305 : Cipher::kAes256Gcm;
      return std::make_unique<SodiumTransform>(c, spec.encKey, spec.esn);
    } catch (const std::exception& e) {
      detail::fail(error, std::string("sodium driver: ") + e.what());
      return nullptr;
    }
  }

 private:
  static bool aesGcm() noexcept { return crypto_aead_aes256gcm_is_available() == 1; }
  std::vector<AlgorithmInfo> algorithms_;
};

}  // namespace

std::unique_ptr<Driver> makeSodiumDriver() { return std::make_unique<SodiumDriver>(); }

}  // namespace ipsec::cryptodrv
