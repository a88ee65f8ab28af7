// Every ESP algorithm of lib/cryptodrv, sealed and opened through its
// Transform at 64, 512 and 1420 bytes of payload, next to the same work done
// with the library's own calls inline (EVP with a context keyed once,
// EVP_MAC, libsodium): the ratio of the two in one run is the Transform's
// overhead (virtual call, length checks, nonce/AAD assembly, the private
// copy open() makes). Not a test: never fails on timing.
//
// Names: Transform/seal/<transform name>/<bytes>, Transform/open/..., and
// Raw/<what>/<bytes>. Compare e.g. Transform/seal/openssl:aes-gcm-16-128
// with Raw/evp-aes-128-gcm. Raw/evp-params-* and Raw/evp-copy-* are the
// other EVP idioms for a keyed context (see rawEvpAeadIdiom); the
// Transform's own (the provider's functions) beat them here; Raw/provider-*
// is that idiom without the Transform around it.
#include <benchmark/benchmark.h>
#include <linux/pfkeyv2.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <sodium.h>

#include <cstring>
#include <string>
#include <vector>

#include "cryptodrv/driver.h"
#include "cryptodrv/provider_cipher.h"

namespace {

using ipsec::cryptodrv::DriverRegistry;
using ipsec::cryptodrv::Status;
using ipsec::cryptodrv::TransformSpec;
using Bytes = std::vector<uint8_t>;

Bytes keyBytes(size_t n, uint8_t seed) {
  Bytes k(n);
  for (size_t i = 0; i < n; ++i) k[i] = static_cast<uint8_t>(seed + i * 7);
  return k;
}

struct Config {
  const char* driver;
  uint8_t encAlg;
  size_t encKey;
  uint8_t authAlg;
  size_t authKey;
};

const Config kConfigs[] = {
    {"openssl", SADB_X_EALG_AES_GCM_ICV16, 20, SADB_AALG_NONE, 0},
    {"openssl", SADB_X_EALG_AES_GCM_ICV16, 36, SADB_AALG_NONE, 0},
    {"openssl", SADB_X_EALG_AES_GCM_ICV8, 20, SADB_AALG_NONE, 0},
    {"openssl", SADB_X_EALG_AES_GCM_ICV12, 20, SADB_AALG_NONE, 0},
    {"openssl", SADB_X_EALG_AES_CCM_ICV16, 19, SADB_AALG_NONE, 0},
    {"openssl", SADB_X_EALG_AES_CCM_ICV8, 35, SADB_AALG_NONE, 0},
    {"openssl", SADB_X_EALG_NULL_AES_GMAC, 20, SADB_AALG_NONE, 0},
    {"openssl", ipsec::cryptodrv::kSadbXEalgChacha20Poly1305, 36, SADB_AALG_NONE, 0},
    {"sodium", ipsec::cryptodrv::kSadbXEalgChacha20Poly1305, 36, SADB_AALG_NONE, 0},
    {"sodium", SADB_X_EALG_AES_GCM_ICV16, 36, SADB_AALG_NONE, 0},
    {"openssl", SADB_X_EALG_AESCBC, 16, SADB_AALG_SHA1HMAC, 20},
    {"openssl", SADB_X_EALG_AESCBC, 16, SADB_X_AALG_SHA2_256HMAC, 32},
    {"openssl", SADB_X_EALG_AESCBC, 32, SADB_X_AALG_SHA2_512HMAC, 64},
    {"openssl", SADB_X_EALG_AESCTR, 20, SADB_X_AALG_SHA2_256HMAC, 32},
    {"openssl", SADB_X_EALG_AESCBC, 16, SADB_X_AALG_AES_XCBC_MAC, 16},
    {"openssl", SADB_X_EALG_AESCBC, 16, ipsec::cryptodrv::kSadbXAalgAesCmac96, 16},
    {"openssl", SADB_EALG_NULL, 0, SADB_X_AALG_SHA2_256HMAC, 32},
    {"openssl", SADB_EALG_3DESCBC, 24, SADB_AALG_MD5HMAC, 16},
};

const DriverRegistry& registry() {
  static const DriverRegistry r = DriverRegistry::withDefaultDrivers();
  return r;
}

void transformBench(benchmark::State& state, const Config& c, bool seal) {
  const Bytes encKey = keyBytes(c.encKey, 1), authKey = keyBytes(c.authKey, 2);
  const auto* driver = registry().driver(c.driver);
  std::string error = "no driver";
  auto t = driver ? driver->create({c.encAlg, c.authAlg, encKey, authKey, false, true}, &error) : nullptr;
  if (!t) {
    state.SkipWithError(error.c_str());
    return;
  }
  // Payload rounded up to the cipher's alignment, as the forwarder pads it.
  const size_t n = (static_cast<size_t>(state.range(0)) + t->padAlign() - 1) / t->padAlign() * t->padAlign();
  const size_t len = 8 + t->ivLength() + n + t->icvLength();
  Bytes p(len, 0x5a), sealed(len);
  uint8_t iv[16] = {};
  if (t->sealWithIv(p.data(), len, 0, iv) != Status::kOk) state.SkipWithError("seal failed");
  sealed = p;
  uint64_t counter = 0;
  for (auto _ : state) {
    if (seal) {
      ++counter;
      std::memcpy(iv, &counter, sizeof counter);
      if (t->sealWithIv(p.data(), len, 0, iv) != Status::kOk) {
        state.SkipWithError("seal failed");
        break;
      }
    } else {
      std::memcpy(p.data(), sealed.data(), len);  // open decrypts in place
      if (t->open(p.data(), len, 0) != Status::kOk) {
        state.SkipWithError("open failed");
        break;
      }
    }
    benchmark::DoNotOptimize(p.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * state.range(0));
  state.SetLabel(std::string(t->name()));
}

// Baselines: the library's calls for one packet's worth of work, inline.

// EVP AEAD: nonce, AAD, data, tag. CCM needs its length first; GMAC has all
// of it as AAD.
void rawEvpAead(benchmark::State& state, const EVP_CIPHER* cipher, size_t keyLen, int ivLen, bool ccm, bool gmac) {
  const Bytes key = keyBytes(keyLen, 1);
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  EVP_EncryptInit_ex(ctx, cipher, nullptr, nullptr, nullptr);
  EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_IVLEN, ivLen, nullptr);
  if (ccm) EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, 16, nullptr);
  EVP_EncryptInit_ex(ctx, nullptr, nullptr, key.data(), nullptr);
  const int n = static_cast<int>(state.range(0));
  Bytes p(16 + static_cast<size_t>(n) + 16, 0x5a);
  uint8_t nonce[12] = {};
  uint64_t counter = 0;
  for (auto _ : state) {
    ++counter;
    std::memcpy(nonce + 4, &counter, sizeof counter);
    int out = 0;
    EVP_EncryptInit_ex(ctx, nullptr, nullptr, nullptr, nonce);
    if (ccm) EVP_EncryptUpdate(ctx, nullptr, &out, nullptr, n);
    EVP_EncryptUpdate(ctx, nullptr, &out, p.data(), 8);
    if (gmac) {
      EVP_EncryptUpdate(ctx, nullptr, &out, p.data() + 8, 8 + n);
    } else {
      EVP_EncryptUpdate(ctx, p.data() + 16, &out, p.data() + 16, n);
    }
    if (!ccm) EVP_EncryptFinal_ex(ctx, p.data() + 16 + n, &out);
    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, 16, p.data() + 16 + n);
    benchmark::DoNotOptimize(p.data());
  }
  EVP_CIPHER_CTX_free(ctx);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * state.range(0));
}

// The other OpenSSL 3 idioms for one AEAD seal per packet, beside the one
// above (EVP_EncryptInit_ex with the nonce, EVP_CIPHER_CTX_ctrl for the tag)
// and the Transform's (the provider's functions, lib/cryptodrv/
// provider_cipher.h): which is fastest on this OpenSSL.
//   params: EVP_CipherInit_ex2 with the nonce, the tag through
//           EVP_CIPHER_CTX_get_params and an OSSL_PARAM array built once;
//   copy:   a keyed template context copied (EVP_CIPHER_CTX_copy) into the
//           working one per packet, then the nonce as in `params`.
//   provider: lib/cryptodrv's ProviderCipher (the Transform's idiom) alone,
//           without the Transform's ESP framing around it.
enum class AeadIdiom { kParams, kCopy, kProvider };

void rawProviderAead(benchmark::State& state, const char* cipherName, size_t keyLen) {
  const Bytes key = keyBytes(keyLen, 1);
  EVP_CIPHER* cipher = EVP_CIPHER_fetch(nullptr, cipherName, nullptr);
  ipsec::cryptodrv::detail::ProviderCipher c(cipher, key.data(), keyLen, true, nullptr);
  const size_t n = static_cast<size_t>(state.range(0));
  Bytes p(16 + n + 16, 0x5a);
  uint8_t nonce[12] = {};
  uint8_t tag[16];
  OSSL_PARAM tagParams[] = {OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, tag, sizeof tag),
                            OSSL_PARAM_construct_end()};
  uint64_t counter = 0;
  bool ok = true;
  for (auto _ : state) {
    ++counter;
    std::memcpy(nonce + 4, &counter, sizeof counter);
    ok &= c.start(nonce, sizeof nonce) && c.update(nullptr, p.data(), 8) &&
          c.update(p.data() + 16, p.data() + 16, n) && c.finish(p.data() + 16 + n, 16) && c.get(tagParams);
    std::memcpy(p.data() + 16 + n, tag, sizeof tag);
    benchmark::DoNotOptimize(p.data());
  }
  if (!ok) state.SkipWithError("a provider call failed");
  EVP_CIPHER_free(cipher);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * state.range(0));
}

void rawEvpAeadIdiom(benchmark::State& state, const char* cipherName, size_t keyLen, AeadIdiom idiom) {
  if (idiom == AeadIdiom::kProvider) return rawProviderAead(state, cipherName, keyLen);
  const Bytes key = keyBytes(keyLen, 1);
  EVP_CIPHER* cipher = EVP_CIPHER_fetch(nullptr, cipherName, nullptr);
  EVP_CIPHER_CTX* keyed = EVP_CIPHER_CTX_new();
  EVP_CIPHER_CTX* work = idiom == AeadIdiom::kCopy ? EVP_CIPHER_CTX_new() : keyed;
  EVP_EncryptInit_ex2(keyed, cipher, key.data(), nullptr, nullptr);
  const int n = static_cast<int>(state.range(0));
  Bytes p(16 + static_cast<size_t>(n) + 16, 0x5a);
  uint8_t nonce[12] = {};
  uint8_t tag[16];
  OSSL_PARAM tagParams[] = {OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, tag, sizeof tag),
                            OSSL_PARAM_construct_end()};
  uint64_t counter = 0;
  bool ok = true;
  for (auto _ : state) {
    ++counter;
    std::memcpy(nonce + 4, &counter, sizeof counter);
    int out = 0;
    if (idiom == AeadIdiom::kCopy) ok &= EVP_CIPHER_CTX_copy(work, keyed) == 1;
    ok &= EVP_EncryptInit_ex2(work, nullptr, nullptr, nonce, nullptr) == 1;
    ok &= EVP_EncryptUpdate(work, nullptr, &out, p.data(), 8) == 1;
    ok &= EVP_EncryptUpdate(work, p.data() + 16, &out, p.data() + 16, n) == 1;
    ok &= EVP_EncryptFinal_ex(work, p.data() + 16 + n, &out) == 1;
    ok &= EVP_CIPHER_CTX_get_params(work, tagParams) == 1;
    std::memcpy(p.data() + 16 + n, tag, sizeof tag);
    benchmark::DoNotOptimize(p.data());
  }
  if (!ok) state.SkipWithError("an EVP call failed");
  if (work != keyed) EVP_CIPHER_CTX_free(work);
  EVP_CIPHER_CTX_free(keyed);
  EVP_CIPHER_free(cipher);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * state.range(0));
}

// EVP cipher over the payload, then an EVP_MAC over header..ciphertext.
void rawEvpCipherMac(benchmark::State& state, const EVP_CIPHER* cipher, size_t keyLen, const char* macName,
                     const char* paramName, const char* paramValue, size_t macKeyLen) {
  const Bytes key = keyBytes(keyLen, 1), macKey = keyBytes(macKeyLen, 2);
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  EVP_EncryptInit_ex(ctx, cipher, nullptr, key.data(), nullptr);
  EVP_CIPHER_CTX_set_padding(ctx, 0);
  EVP_MAC* mac = EVP_MAC_fetch(nullptr, macName, nullptr);
  EVP_MAC_CTX* macCtx = EVP_MAC_CTX_new(mac);
  std::string value(paramValue);
  const OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(paramName, value.data(), 0), OSSL_PARAM_construct_end()};
  EVP_MAC_init(macCtx, macKey.data(), macKey.size(), params);
  const int n = static_cast<int>((state.range(0) + 15) / 16 * 16);
  Bytes p(24 + static_cast<size_t>(n) + 64, 0x5a);
  uint8_t iv[16] = {};
  uint8_t tag[64];
  for (auto _ : state) {
    int out = 0;
    size_t tagLen = 0;
    EVP_EncryptInit_ex(ctx, nullptr, nullptr, nullptr, iv);
    EVP_EncryptUpdate(ctx, p.data() + 24, &out, p.data() + 24, n);
    EVP_EncryptFinal_ex(ctx, p.data() + 24 + out, &out);
    EVP_MAC_init(macCtx, nullptr, 0, nullptr);
    EVP_MAC_update(macCtx, p.data(), 24 + static_cast<size_t>(n));
    EVP_MAC_final(macCtx, tag, &tagLen, sizeof tag);
    std::memcpy(p.data() + 24 + n, tag, 16);
    benchmark::DoNotOptimize(p.data());
  }
  EVP_MAC_CTX_free(macCtx);
  EVP_MAC_free(mac);
  EVP_CIPHER_CTX_free(ctx);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * state.range(0));
}

void rawSodium(benchmark::State& state, bool aesGcm) {
  if (sodium_init() < 0 || (aesGcm && crypto_aead_aes256gcm_is_available() != 1)) {
    state.SkipWithError("libsodium cannot run it here");
    return;
  }
  const Bytes key = keyBytes(32, 1);
  crypto_aead_aes256gcm_state* gcm = static_cast<crypto_aead_aes256gcm_state*>(sodium_malloc(sizeof *gcm));
  crypto_aead_aes256gcm_beforenm(gcm, key.data());
  const size_t n = static_cast<size_t>(state.range(0));
  Bytes p(16 + n + 16, 0x5a);
  uint8_t nonce[12] = {};
  uint64_t counter = 0;
  for (auto _ : state) {
    ++counter;
    std::memcpy(nonce + 4, &counter, sizeof counter);
    unsigned long long tagLen = 0;
    uint8_t* m = p.data() + 16;
    if (aesGcm) {
      crypto_aead_aes256gcm_encrypt_detached_afternm(m, m + n, &tagLen, m, n, p.data(), 8, nullptr, nonce, gcm);
    } else {
      crypto_aead_chacha20poly1305_ietf_encrypt_detached(m, m + n, &tagLen, m, n, p.data(), 8, nullptr, nonce,
                                                         key.data());
    }
    benchmark::DoNotOptimize(p.data());
  }
  sodium_free(gcm);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * state.range(0));
}

void applySizes(benchmark::internal::Benchmark* b) { b->Arg(64)->Arg(512)->Arg(1420); }

int registerAll() {
  for (const Config& c : kConfigs) {
    const Bytes encKey = keyBytes(c.encKey, 1), authKey = keyBytes(c.authKey, 2);
    const auto* driver = registry().driver(c.driver);
    std::string error;
    auto t = driver ? driver->create({c.encAlg, c.authAlg, encKey, authKey, false, true}, &error) : nullptr;
    const std::string name = t ? std::string(t->name()) : std::string(c.driver) + ":unavailable";
    benchmark::RegisterBenchmark(("Transform/seal/" + name).c_str(),
                                 [&c](benchmark::State& s) { transformBench(s, c, true); })
        ->Apply(applySizes);
    benchmark::RegisterBenchmark(("Transform/open/" + name).c_str(),
                                 [&c](benchmark::State& s) { transformBench(s, c, false); })
        ->Apply(applySizes);
  }
  struct RawAead {
    const char* name;
    const EVP_CIPHER* (*cipher)();
    size_t key;
    int iv;
    bool ccm, gmac;
  };
  static const RawAead kRawAeads[] = {
      {"Raw/evp-aes-128-gcm", EVP_aes_128_gcm, 16, 12, false, false},
      {"Raw/evp-aes-256-gcm", EVP_aes_256_gcm, 32, 12, false, false},
      {"Raw/evp-aes-128-ccm", EVP_aes_128_ccm, 16, 11, true, false},
      {"Raw/evp-aes-256-ccm", EVP_aes_256_ccm, 32, 11, true, false},
      {"Raw/evp-aes-128-gmac", EVP_aes_128_gcm, 16, 12, false, true},
      {"Raw/evp-chacha20-poly1305", EVP_chacha20_poly1305, 32, 12, false, false},
  };
  for (const RawAead& r : kRawAeads) {
    benchmark::RegisterBenchmark(r.name, [&r](benchmark::State& s) {
      rawEvpAead(s, r.cipher(), r.key, r.iv, r.ccm, r.gmac);
    })->Apply(applySizes);
  }
  struct RawIdiom {
    const char* name;
    const char* cipher;
    size_t key;
    AeadIdiom idiom;
  };
  static const RawIdiom kRawIdioms[] = {
      {"Raw/evp-params-aes-128-gcm", "AES-128-GCM", 16, AeadIdiom::kParams},
      {"Raw/evp-copy-aes-128-gcm", "AES-128-GCM", 16, AeadIdiom::kCopy},
      {"Raw/evp-params-chacha20-poly1305", "ChaCha20-Poly1305", 32, AeadIdiom::kParams},
      {"Raw/evp-copy-chacha20-poly1305", "ChaCha20-Poly1305", 32, AeadIdiom::kCopy},
      {"Raw/provider-aes-128-gcm", "AES-128-GCM", 16, AeadIdiom::kProvider},
      {"Raw/provider-chacha20-poly1305", "ChaCha20-Poly1305", 32, AeadIdiom::kProvider},
  };
  for (const RawIdiom& r : kRawIdioms) {
    benchmark::RegisterBenchmark(r.name, [&r](benchmark::State& s) {
      rawEvpAeadIdiom(s, r.cipher, r.key, r.idiom);
    })->Apply(applySizes);
  }
  benchmark::RegisterBenchmark("Raw/sodium-chacha20-poly1305", [](benchmark::State& s) { rawSodium(s, false); })
      ->Apply(applySizes);
  benchmark::RegisterBenchmark("Raw/sodium-aes-256-gcm", [](benchmark::State& s) { rawSodium(s, true); })
      ->Apply(applySizes);
  struct RawCipherMac {
    const char* name;
    const EVP_CIPHER* (*cipher)();
    size_t key;
    const char* mac;
    const char* param;
    const char* value;
    size_t macKey;
  };
  // XCBC has no library call of its own: its baseline is the AES-128-CBC
  // pass it is built on (CMAC's shows what EVP_MAC adds to that).
  static const RawCipherMac kRawCipherMacs[] = {
      {"Raw/evp-aes-128-cbc+hmac-sha1", EVP_aes_128_cbc, 16, "HMAC", OSSL_MAC_PARAM_DIGEST, "SHA1", 20},
      {"Raw/evp-aes-128-cbc+hmac-sha256", EVP_aes_128_cbc, 16, "HMAC", OSSL_MAC_PARAM_DIGEST, "SHA256", 32},
      {"Raw/evp-aes-256-cbc+hmac-sha512", EVP_aes_256_cbc, 32, "HMAC", OSSL_MAC_PARAM_DIGEST, "SHA512", 64},
      {"Raw/evp-aes-128-ctr+hmac-sha256", EVP_aes_128_ctr, 16, "HMAC", OSSL_MAC_PARAM_DIGEST, "SHA256", 32},
      {"Raw/evp-aes-128-cbc+cmac", EVP_aes_128_cbc, 16, "CMAC", OSSL_MAC_PARAM_CIPHER, "AES-128-CBC", 16},
      {"Raw/evp-des-ede3-cbc+hmac-md5", EVP_des_ede3_cbc, 24, "HMAC", OSSL_MAC_PARAM_DIGEST, "MD5", 16},
  };
  for (const RawCipherMac& r : kRawCipherMacs) {
    benchmark::RegisterBenchmark(r.name, [&r](benchmark::State& s) {
      rawEvpCipherMac(s, r.cipher(), r.key, r.mac, r.param, r.value, r.macKey);
    })->Apply(applySizes);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  registerAll();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
