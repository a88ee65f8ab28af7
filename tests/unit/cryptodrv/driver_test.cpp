// The two drivers against each other: OpenSSL and libsodium must give the
// same bytes for the same key, IV and packet (ChaCha20-Poly1305, and
// AES-256-GCM where libsodium can run it), each must open what the other
// sealed, and the registry must route specs by preference and key length.
#include <gtest/gtest.h>
#include <linux/pfkeyv2.h>
#include <sodium.h>

#include <random>
#include <string>
#include <vector>

#include "cryptodrv/driver.h"

namespace ipsec::cryptodrv {
namespace {

using Bytes = std::vector<uint8_t>;

std::unique_ptr<Transform> on(const DriverRegistry& r, std::string_view driver, const TransformSpec& spec) {
  const Driver* d = r.driver(driver);
  if (d == nullptr) return nullptr;
  std::string error;
  auto t = d->create(spec, &error);
  EXPECT_TRUE(t) << driver << ": " << error;
  return t;
}

// Random keys and packets (fixed seed: a failure reproduces), random
// lengths up to a jumbo frame, with and without ESN.
void crossCheck(uint8_t encAlg) {
  const auto registry = DriverRegistry::withDefaultDrivers();
  std::mt19937_64 rng(0x1p9 + encAlg);
  auto bytes = [&](size_t n) {
    Bytes b(n);
    for (auto& x : b) x = static_cast<uint8_t>(rng());
    return b;
  };
  for (int round = 0; round < 8; ++round) {
    const Bytes key = bytes(36);
    const bool esn = round % 2 == 1;
    const TransformSpec spec{encAlg, SADB_AALG_NONE, key, {}, esn};
    auto a = on(registry, "openssl", spec);
    auto b = on(registry, "sodium", spec);
    ASSERT_TRUE(a && b);
    ASSERT_EQ(a->ivLength(), b->ivLength());
    ASSERT_EQ(a->icvLength(), b->icvLength());
    ASSERT_EQ(a->padAlign(), b->padAlign());
    for (int packet = 0; packet < 32; ++packet) {
      const size_t region = 4 * (1 + rng() % 2300);
      const uint32_t seqHigh = static_cast<uint32_t>(rng());
      Bytes p = bytes(8 + 8 + region + 16);
      const Bytes iv = bytes(8);
      Bytes q = p;
      ASSERT_EQ(a->sealWithIv(p.data(), p.size(), seqHigh, iv.data()), Status::kOk);
      ASSERT_EQ(b->sealWithIv(q.data(), q.size(), seqHigh, iv.data()), Status::kOk);
      ASSERT_EQ(p, q) << a->name() << " vs " << b->name() << " region " << region;
      Bytes plain = p;
      ASSERT_EQ(b->open(p.data(), p.size(), seqHigh), Status::kOk) << "sodium opens openssl's";
      ASSERT_EQ(a->open(q.data(), q.size(), seqHigh), Status::kOk) << "openssl opens sodium's";
      ASSERT_EQ(p, q);
      plain[16 + rng() % region] ^= 0x20;
      Bytes plain2 = plain;
      EXPECT_EQ(a->open(plain.data(), plain.size(), seqHigh), Status::kBadIcv);
      EXPECT_EQ(b->open(plain2.data(), plain2.size(), seqHigh), Status::kBadIcv);
    }
  }
}

TEST(DriverCrossCheck, ChaCha20Poly1305IsTheSameOnOpenSslAndLibsodium) { crossCheck(kSadbXEalgChacha20Poly1305); }

TEST(DriverCrossCheck, Aes256GcmIsTheSameOnOpenSslAndLibsodium) {
  if (crypto_aead_aes256gcm_is_available() != 1) GTEST_SKIP() << "libsodium cannot run AES-GCM on this CPU";
  crossCheck(SADB_X_EALG_AES_GCM_ICV16);
}

TEST(SodiumDriver, AnnouncesAesGcmOnlyWhereAvailableAndOnly256Bit) {
  auto d = makeSodiumDriver();
  ASSERT_TRUE(d);
  EXPECT_EQ(d->name(), "sodium");
  bool chacha = false, gcm = false;
  for (const auto& a : d->algorithms()) {
    chacha |= a.id == kSadbXEalgChacha20Poly1305;
    if (a.id == SADB_X_EALG_AES_GCM_ICV16) {
      gcm = true;
      EXPECT_EQ(a.minKeyBits, 288);
      EXPECT_EQ(a.maxKeyBits, 288);
    }
  }
  EXPECT_TRUE(chacha);
  EXPECT_EQ(gcm, crypto_aead_aes256gcm_is_available() == 1);
  const Bytes k20(20, 1), k36(36, 1);
  EXPECT_FALSE(d->supports({SADB_X_EALG_AES_GCM_ICV16, SADB_AALG_NONE, k20}));
  EXPECT_FALSE(d->supports({SADB_X_EALG_AES_CCM_ICV16, SADB_AALG_NONE, k36}));
  EXPECT_FALSE(d->supports({kSadbXEalgChacha20Poly1305, SADB_X_AALG_SHA2_256HMAC, k36}));
  std::string error;
  EXPECT_FALSE(d->create({kSadbXEalgChacha20Poly1305, SADB_AALG_NONE, k20}, &error));
  EXPECT_NE(error.find("36 bytes"), std::string::npos) << error;
}

TEST(DriverRegistry, PrefersOpenSslUnlessToldOtherwise) {
  const Bytes k36(36, 3), k20(20, 3);
  const auto byDefault = DriverRegistry::withDefaultDrivers();
  EXPECT_EQ(byDefault.find({kSadbXEalgChacha20Poly1305, SADB_AALG_NONE, k36})->name(), "openssl");
  EXPECT_EQ(byDefault.find({SADB_X_EALG_AES_GCM_ICV16, SADB_AALG_NONE, k36})->name(), "openssl");

  const auto sodiumFirst = DriverRegistry::withDefaultDrivers("sodium");
  ASSERT_EQ(sodiumFirst.drivers().size(), 2u);
  EXPECT_EQ(sodiumFirst.drivers()[0]->name(), "sodium");
  EXPECT_EQ(sodiumFirst.find({kSadbXEalgChacha20Poly1305, SADB_AALG_NONE, k36})->name(), "sodium");
  std::string error;
  auto t = sodiumFirst.makeTransform({kSadbXEalgChacha20Poly1305, SADB_AALG_NONE, k36}, &error);
  ASSERT_TRUE(t) << error;
  EXPECT_EQ(t->name(), "sodium:chacha20-poly1305");
  // What libsodium cannot run still finds OpenSSL.
  EXPECT_EQ(sodiumFirst.find({SADB_X_EALG_AES_GCM_ICV16, SADB_AALG_NONE, k20})->name(), "openssl");
  EXPECT_EQ(sodiumFirst.find({SADB_X_EALG_AESCBC, SADB_X_AALG_SHA2_256HMAC, Bytes(16), Bytes(32)})->name(),
            "openssl");
  if (crypto_aead_aes256gcm_is_available() == 1) {
    EXPECT_EQ(sodiumFirst.find({SADB_X_EALG_AES_GCM_ICV16, SADB_AALG_NONE, k36})->name(), "sodium");
  }
  EXPECT_EQ(sodiumFirst.driver("nonesuch"), nullptr);
}

}  // namespace
}  // namespace ipsec::cryptodrv
