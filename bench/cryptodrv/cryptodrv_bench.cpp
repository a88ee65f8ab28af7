// AES-GCM-128 seal through cryptodrv::Transform versus the same OpenSSL EVP
// calls written inline, at 64, 512 and 1420 bytes of payload, so that the
// overhead of the Transform layer (virtual call, length checks, nonce and
// AAD assembly) shows as the ratio of the two in one run. Also open(), which
// adds the private copy of the packet. Not a test: never fails on timing.
#include <benchmark/benchmark.h>
#include <linux/pfkeyv2.h>
#include <openssl/evp.h>

#include <cstring>
#include <vector>

#include "cryptodrv/driver.h"

namespace {

using ipsec::cryptodrv::Status;

std::vector<uint8_t> keymat() {
  std::vector<uint8_t> k(20);
  for (size_t i = 0; i < k.size(); ++i) k[i] = static_cast<uint8_t>(i * 7 + 1);
  return k;
}

void BM_TransformSeal(benchmark::State& state) {
  const auto key = keymat();
  std::string error;
  auto t = ipsec::cryptodrv::makeTransform({SADB_X_EALG_AES_GCM_ICV16, SADB_AALG_NONE, key, {}, false}, &error);
  if (!t) {
    state.SkipWithError(error.c_str());
    return;
  }
  const size_t len = 8 + 8 + static_cast<size_t>(state.range(0)) + 16;
  std::vector<uint8_t> p(len, 0x5a);
  uint64_t iv = 0;
  for (auto _ : state) {
    ++iv;
    if (t->sealWithIv(p.data(), len, 0, reinterpret_cast<const uint8_t*>(&iv)) != Status::kOk) {
      state.SkipWithError("seal failed");
      break;
    }
    benchmark::DoNotOptimize(p.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * state.range(0));
}

void BM_TransformOpen(benchmark::State& state) {
  const auto key = keymat();
  std::string error;
  auto t = ipsec::cryptodrv::makeTransform({SADB_X_EALG_AES_GCM_ICV16, SADB_AALG_NONE, key, {}, false}, &error);
  const size_t len = 8 + 8 + static_cast<size_t>(state.range(0)) + 16;
  std::vector<uint8_t> sealed(len, 0x5a);
  const uint64_t iv = 1;
  t->sealWithIv(sealed.data(), len, 0, reinterpret_cast<const uint8_t*>(&iv));
  std::vector<uint8_t> p(len);
  for (auto _ : state) {
    std::memcpy(p.data(), sealed.data(), len);  // open decrypts in place
    if (t->open(p.data(), len, 0) != Status::kOk) {
      state.SkipWithError("open failed");
      break;
    }
    benchmark::DoNotOptimize(p.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * state.range(0));
}

// The baseline: the EVP calls a seal needs, inline, with a context keyed once.
void BM_RawEvpSeal(benchmark::State& state) {
  const auto key = keymat();
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  EVP_EncryptInit_ex(ctx, EVP_aes_128_gcm(), nullptr, key.data(), nullptr);
  const size_t n = static_cast<size_t>(state.range(0));
  std::vector<uint8_t> p(8 + 8 + n + 16, 0x5a);
  uint8_t nonce[12];
  std::memcpy(nonce, key.data() + 16, 4);
  uint64_t iv = 0;
  for (auto _ : state) {
    ++iv;
    std::memcpy(nonce + 4, &iv, 8);
    int out = 0;
    int fin = 0;
    EVP_EncryptInit_ex(ctx, nullptr, nullptr, nullptr, nonce);
    EVP_EncryptUpdate(ctx, nullptr, &out, p.data(), 8);
    EVP_EncryptUpdate(ctx, p.data() + 16, &out, p.data() + 16, static_cast<int>(n));
    EVP_EncryptFinal_ex(ctx, p.data() + 16 + out, &fin);
    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, p.data() + 16 + n);
    benchmark::DoNotOptimize(p.data());
  }
  EVP_CIPHER_CTX_free(ctx);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * state.range(0));
}

BENCHMARK(BM_RawEvpSeal)->Arg(64)->Arg(512)->Arg(1420);
BENCHMARK(BM_TransformSeal)->Arg(64)->Arg(512)->Arg(1420);
BENCHMARK(BM_TransformOpen)->Arg(64)->Arg(512)->Arg(1420);

}  // namespace

BENCHMARK_MAIN();
