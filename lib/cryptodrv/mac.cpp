// AES-XCBC-MAC and AES-CMAC (see mac.h). Runs only in ipsec-crypto.
#include "cryptodrv/mac.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include <algorithm>
#include <cstring>

#include "cryptodrv/provider_cipher.h"
#include "cryptodrv/provider_mac.h"
#include "securemem/secure_bytes.h"

namespace ipsec::cryptodrv {
namespace {

constexpr size_t kBlock = 16;

struct CipherCtxFree {
  void operator()(EVP_CIPHER_CTX* ctx) const noexcept { EVP_CIPHER_CTX_free(ctx); }
};

// RFC 3566 §4: K1, K2, K3 derived from K; messages chained under K1 with the
// last (full or 10*-padded) block XORed with K2 or K3.
class AesXcbcMac final : public Mac {
 public:
  AesXcbcMac(std::unique_ptr<detail::ProviderCipher> chain, std::span<const uint8_t> k2k3)
      : chain_(std::move(chain)), k2k3_(k2k3) {}

  size_t size() const noexcept override { return kBlock; }

  bool begin() noexcept override {
    static constexpr uint8_t kZero[kBlock] = {};
    pendingLength_ = 0;
    return chain_->start(kZero, kBlock);
  }

  bool update(const uint8_t* data, size_t len) noexcept override {
    // The last block is treated differently, so a full block is only chained
    // once more data follows it.
    while (len > 0) {
      if (pendingLength_ == kBlock) {
        if (!chainBlocks(pending_, kBlock)) return false;
        pendingLength_ = 0;
      }
      if (pendingLength_ == 0 && len > kBlock) {
        // Bulk: every whole block but the one that might be last.
        size_t bulk = ((len - 1) / kBlock) * kBlock;
        if (!chainBlocks(data, bulk)) return false;
        data += bulk;
        len -= bulk;
        continue;
      }
      const size_t take = std::min(len, kBlock - pendingLength_);
      std::memcpy(pending_ + pendingLength_, data, take);
      pendingLength_ += take;
      data += take;
      len -= take;
    }
    return true;
  }

  bool finish(uint8_t* out) noexcept override {
    uint8_t last[kBlock];
    const uint8_t* k = k2k3_.data();  // K2
    std::memcpy(last, pending_, pendingLength_);
    if (pendingLength_ < kBlock) {
      last[pendingLength_] = 0x80;
      std::memset(last + pendingLength_ + 1, 0, kBlock - pendingLength_ - 1);
      k += kBlock;  // K3
    }
    for (size_t i = 0; i < kBlock; ++i) last[i] ^= k[i];
    const bool ok = chain_->update(out, last, kBlock);
    OPENSSL_cleanse(last, sizeof last);
    return ok;
  }

 private:
  bool chainBlocks(const uint8_t* data, size_t len) noexcept {
    // CBC output is discarded; only the chaining value (inside the context)
    // matters. 512 bytes at a time through a stack buffer.
    uint8_t sink[512];
    while (len > 0) {
      const size_t n = std::min(len, sizeof sink);
      if (!chain_->update(sink, data, n)) return false;
      data += n;
      len -= n;
    }
    return true;
  }

  // AES-128-CBC under K1, padding off, through the provider's functions
  // (provider_cipher.h): per message only the zero IV is set again.
  std::unique_ptr<detail::ProviderCipher> chain_;
  securemem::SecureBytes k2k3_;                                      // K2 || K3
  uint8_t pending_[kBlock] = {};
  size_t pendingLength_ = 0;
};

// AES-CMAC on the provider's MAC functions (provider_mac.h): the MAC size is
// asked once, not by every final. OpenSSL's CMAC re-initialises its CBC
// context per message inside the provider; that part is unchanged.
class AesCmac final : public Mac {
 public:
  explicit AesCmac(std::unique_ptr<detail::ProviderMac> mac) : mac_(std::move(mac)) {}

  size_t size() const noexcept override { return kBlock; }
  bool begin() noexcept override { return mac_->begin(); }
  bool update(const uint8_t* data, size_t len) noexcept override { return mac_->update(data, len); }
  bool finish(uint8_t* out) noexcept override { return mac_->finish(out); }

 private:
  std::unique_ptr<detail::ProviderMac> mac_;
};

}  // namespace

std::unique_ptr<Mac> makeAesXcbcMac(std::span<const uint8_t> key, std::string* error) {
  auto fail = [&](const char* why) -> std::unique_ptr<Mac> {
    if (error) *error = std::string("aes-xcbc-mac: ") + why;
    return nullptr;
  };
  if (key.size() != kBlock) return fail("key must be 16 bytes");
  // K1 = E(K, 0x01..), K2 = E(K, 0x02..), K3 = E(K, 0x03..) in one ECB call.
  uint8_t constants[3 * kBlock];
  for (size_t i = 0; i < 3; ++i) std::memset(constants + i * kBlock, static_cast<int>(i + 1), kBlock);
  uint8_t derived[3 * kBlock];
  std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree> ecb(EVP_CIPHER_CTX_new());
  int outLength = 0;
  const bool derivedOk = ecb && EVP_EncryptInit_ex(ecb.get(), EVP_aes_128_ecb(), nullptr, key.data(), nullptr) == 1 &&
                         EVP_CIPHER_CTX_set_padding(ecb.get(), 0) == 1 &&
                         EVP_EncryptUpdate(ecb.get(), derived, &outLength, constants, sizeof constants) == 1 &&
                         outLength == sizeof derived;
  std::unique_ptr<Mac> mac;
  if (derivedOk) {
    try {
      unsigned int padding = 0;
      const OSSL_PARAM noPadding[] = {
          OSSL_PARAM_construct_uint(OSSL_CIPHER_PARAM_PADDING, &padding),
          OSSL_PARAM_construct_end(),
      };
      auto chain = std::make_unique<detail::ProviderCipher>(EVP_aes_128_cbc(), derived, kBlock, true, noPadding);
      mac = std::make_unique<AesXcbcMac>(std::move(chain), std::span<const uint8_t>(derived + kBlock, 2 * kBlock));
    } catch (const std::exception&) {
      mac = nullptr;
    }
  }
  OPENSSL_cleanse(derived, sizeof derived);
  return mac ? std::move(mac) : fail("key set-up failed");
}

std::unique_ptr<Mac> makeAesCmac(std::span<const uint8_t> key, std::string* error) {
  auto fail = [&](const char* why) -> std::unique_ptr<Mac> {
    if (error) *error = std::string("aes-cmac: ") + why;
    return nullptr;
  };
  if (key.size() != kBlock) return fail("key must be 16 bytes");
  char cipher[] = "AES-128-CBC";
  const OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_CIPHER, cipher, 0),
      OSSL_PARAM_construct_end(),
  };
  try {
    auto mac = std::make_unique<detail::ProviderMac>("CMAC", params, key.data(), key.size());
    if (mac->size() != kBlock) return fail("unexpected MAC size");
    return std::make_unique<AesCmac>(std::move(mac));
  } catch (const std::exception&) {
    return fail("key set-up failed");
  }
}

}  // namespace ipsec::cryptodrv
