// Unit tests of the driver registry and the OpenSSL transforms beyond the
// known answers: the factory's refusals (unknown pairs, key lengths, legacy
// algorithms), the REGISTER algorithm list, layout properties, round trips of
// every algorithm at many lengths, each ICV against an independent MAC, ESN
// in the ICV, length checks, and that a packet failing verification is left
// untouched.
#include <gtest/gtest.h>
#include <linux/pfkeyv2.h>
#include <openssl/cmac.h>
#include <openssl/hmac.h>

#include <numeric>
#include <string>
#include <vector>

#include "cryptodrv/driver.h"
#include "cryptodrv/hmac.h"

namespace ipsec::cryptodrv {
namespace {

using Bytes = std::vector<uint8_t>;

Bytes pattern(size_t n, uint8_t seed) {
  Bytes b(n);
  std::iota(b.begin(), b.end(), seed);
  return b;
}

std::unique_ptr<Transform> make(uint8_t enc, size_t encLen, uint8_t auth, size_t authLen, bool esn = false,
                                bool allowLegacy = false) {
  static Bytes encKey, authKey;
  encKey = pattern(encLen, 1);
  authKey = pattern(authLen, 101);
  std::string error;
  auto t = makeTransform({enc, auth, encKey, authKey, esn, allowLegacy}, &error);
  EXPECT_TRUE(t) << error;
  return t;
}

std::string refusal(uint8_t enc, size_t encLen, uint8_t auth, size_t authLen) {
  const Bytes encKey = pattern(encLen, 1);
  const Bytes authKey = pattern(authLen, 2);
  std::string error;
  auto t = makeTransform({enc, auth, encKey, authKey, false}, &error);
  EXPECT_FALSE(t);
  return error;
}

TEST(MakeTransform, RefusesUnknownAlgorithmsAndNullWithNull) {
  EXPECT_NE(refusal(SADB_X_EALG_CAMELLIACBC, 16, SADB_X_AALG_SHA2_256HMAC, 32).find("no driver"), std::string::npos);
  EXPECT_NE(refusal(SADB_X_EALG_AESCBC, 16, SADB_X_AALG_RIPEMD160HMAC, 20).find("no driver"), std::string::npos);
  EXPECT_NE(refusal(SADB_EALG_NULL, 0, SADB_AALG_NONE, 0).find("no driver"), std::string::npos);
  EXPECT_NE(refusal(SADB_EALG_NULL, 0, SADB_X_AALG_NULL, 0).find("no driver"), std::string::npos);
  for (uint8_t aead : std::initializer_list<uint8_t>{SADB_X_EALG_AES_GCM_ICV16, SADB_X_EALG_AES_CCM_ICV8, SADB_X_EALG_NULL_AES_GMAC,
                       kSadbXEalgChacha20Poly1305}) {
    EXPECT_NE(refusal(aead, 20, SADB_X_AALG_SHA2_256HMAC, 32).find("no driver"), std::string::npos)
        << "an AEAD takes no separate integrity algorithm: " << int(aead);
  }
}

TEST(MakeTransform, RefusesLegacyAlgorithmsUnlessAllowed) {
  const Bytes des3 = pattern(24, 1), md5 = pattern(16, 2), sha = pattern(32, 3), aes = pattern(16, 4);
  std::string error;
  EXPECT_FALSE(makeTransform({SADB_EALG_3DESCBC, SADB_X_AALG_SHA2_256HMAC, des3, sha}, &error));
  EXPECT_NE(error.find("3des-cbc is a legacy algorithm"), std::string::npos) << error;
  EXPECT_NE(error.find("net.inet.ipsec.allow_legacy"), std::string::npos) << error;
  EXPECT_FALSE(makeTransform({SADB_X_EALG_AESCBC, SADB_AALG_MD5HMAC, aes, md5}, &error));
  EXPECT_NE(error.find("hmac-md5 is a legacy algorithm"), std::string::npos) << error;

  auto t = makeTransform({SADB_EALG_3DESCBC, SADB_AALG_MD5HMAC, des3, md5, false, true}, &error);
  ASSERT_TRUE(t) << error;
  EXPECT_EQ(t->name(), "openssl:3des-cbc+hmac-md5");
  EXPECT_EQ(t->ivLength(), 8);
  EXPECT_EQ(t->padAlign(), 8);
  EXPECT_EQ(t->icvLength(), 12);
  EXPECT_FALSE(t->ivIsCounter());
  for (const auto& a : knownAlgorithms())
    EXPECT_EQ(a.legacy, a.name == "3des-cbc" || a.name == "hmac-md5") << a.name;
}

TEST(MakeTransform, RefusesBadKeyLengthsWithTheReason) {
  for (size_t bad : {0u, 16u, 19u, 21u, 32u, 37u})
    EXPECT_NE(refusal(SADB_X_EALG_AES_GCM_ICV16, bad, SADB_AALG_NONE, 0).find("20, 28 or 36"), std::string::npos)
        << bad;
  for (size_t bad : {0u, 8u, 20u, 33u})
    EXPECT_NE(refusal(SADB_X_EALG_AESCBC, bad, SADB_X_AALG_SHA2_256HMAC, 32).find("16, 24 or 32"), std::string::npos)
        << bad;
  for (size_t bad : {0u, 16u, 31u, 64u})
    EXPECT_NE(refusal(SADB_X_EALG_AESCBC, 16, SADB_X_AALG_SHA2_256HMAC, bad).find("hmac-sha256: key must be 32"),
              std::string::npos)
        << bad;
  EXPECT_NE(refusal(SADB_EALG_NULL, 16, SADB_X_AALG_SHA2_256HMAC, 32).find("takes no key"), std::string::npos);
  EXPECT_NE(refusal(SADB_X_EALG_AESCBC, 16, SADB_AALG_NONE, 32).find("no authentication algorithm"),
            std::string::npos);
}

TEST(MakeTransform, ReportsLayoutOfEachAlgorithm) {
  auto gcm = make(SADB_X_EALG_AES_GCM_ICV16, 36, SADB_AALG_NONE, 0);
  ASSERT_TRUE(gcm);
  EXPECT_EQ(gcm->ivLength(), 8);
  EXPECT_EQ(gcm->icvLength(), 16);
  EXPECT_EQ(gcm->padAlign(), 4);
  EXPECT_TRUE(gcm->ivIsCounter());
  EXPECT_EQ(gcm->name(), "openssl:aes-gcm-16-256");

  auto cbc = make(SADB_X_EALG_AESCBC, 24, SADB_X_AALG_SHA2_256HMAC, 32, true);
  ASSERT_TRUE(cbc);
  EXPECT_EQ(cbc->ivLength(), 16);
  EXPECT_EQ(cbc->icvLength(), 16);
  EXPECT_EQ(cbc->padAlign(), 16);
  EXPECT_FALSE(cbc->ivIsCounter());
  EXPECT_TRUE(cbc->esn());
  EXPECT_EQ(cbc->name(), "openssl:aes-cbc-192+hmac-sha256");

  auto sha512 = make(SADB_EALG_NULL, 0, SADB_X_AALG_SHA2_512HMAC, 64);
  ASSERT_TRUE(sha512);
  EXPECT_EQ(sha512->ivLength(), 0);
  EXPECT_EQ(sha512->icvLength(), 32);
  EXPECT_EQ(sha512->padAlign(), 4);
}

TEST(DriverRegistry, ListsAlgorithmsForRegisterReply) {
  const auto registry = DriverRegistry::withDefaultDrivers();
  ASSERT_EQ(registry.drivers().size(), 2u);
  EXPECT_EQ(registry.drivers()[0]->name(), "openssl");
  EXPECT_EQ(registry.drivers()[1]->name(), "sodium");
  const auto enc = registry.algorithms(AlgorithmKind::kEncrypt);
  std::vector<uint8_t> ids;
  for (const auto& a : enc) ids.push_back(a.id);
  EXPECT_EQ(ids, (std::vector<uint8_t>{SADB_EALG_3DESCBC, SADB_EALG_NULL, SADB_X_EALG_AESCBC, SADB_X_EALG_AESCTR,
                                       SADB_X_EALG_AES_CCM_ICV8, SADB_X_EALG_AES_CCM_ICV12, SADB_X_EALG_AES_CCM_ICV16,
                                       SADB_X_EALG_AES_GCM_ICV8, SADB_X_EALG_AES_GCM_ICV12, SADB_X_EALG_AES_GCM_ICV16,
                                       SADB_X_EALG_NULL_AES_GMAC, kSadbXEalgChacha20Poly1305}));
  const AlgorithmInfo& gcm = enc[9];
  EXPECT_EQ(gcm.minKeyBits, 160) << "OpenSSL's row wins over libsodium's 256-bit-only one";
  EXPECT_EQ(gcm.maxKeyBits, 288);
  EXPECT_TRUE(gcm.aead);
  EXPECT_EQ(enc[4].minKeyBits, 152) << "CCM: key and 3-byte salt";
  const auto auth = registry.algorithms(AlgorithmKind::kAuth);
  ids.clear();
  for (const auto& a : auth) ids.push_back(a.id);
  EXPECT_EQ(ids, (std::vector<uint8_t>{SADB_AALG_MD5HMAC, SADB_AALG_SHA1HMAC, SADB_X_AALG_SHA2_256HMAC,
                                       SADB_X_AALG_SHA2_384HMAC, SADB_X_AALG_SHA2_512HMAC, SADB_X_AALG_AES_XCBC_MAC,
                                       kSadbXAalgAesCmac96}));
  EXPECT_EQ(auth[2].minKeyBits, 256);
  EXPECT_EQ(auth[2].icvLength, 16);
  EXPECT_EQ(auth[5].icvLength, 12);
}

// A packet as the forwarder frames it: header, IV gap, payload+trailer, ICV.
Bytes framed(const Transform& t, size_t region, uint32_t seqLow) {
  Bytes p(8 + t.ivLength() + region + t.icvLength(), 0);
  p[0] = 0xc0;
  p[3] = 0x01;
  p[7] = static_cast<uint8_t>(seqLow);
  const Bytes body = pattern(region, 3);
  std::copy(body.begin(), body.end(), p.begin() + 8 + t.ivLength());
  return p;
}

void expectRoundTrips(Transform& t) {
  const Bytes iv = pattern(t.ivLength(), 77);
  for (size_t region = t.padAlign(); region <= 1500; region += t.padAlign()) {
    Bytes p = framed(t, region, 9);
    const Bytes original = p;
    ASSERT_EQ(t.sealWithIv(p.data(), p.size(), 0, iv.data()), Status::kOk) << region;
    EXPECT_NE(p, original);
    ASSERT_EQ(t.open(p.data(), p.size(), 0), Status::kOk) << region;
    EXPECT_TRUE(std::equal(original.begin() + 8 + t.ivLength(), original.end() - t.icvLength(),
                           p.begin() + 8 + t.ivLength()))
        << region;
  }
}

TEST(Transform, RoundTripsEveryAlignedLength) {
  for (size_t key : {20u, 28u, 36u}) expectRoundTrips(*make(SADB_X_EALG_AES_GCM_ICV16, key, SADB_AALG_NONE, 0));
  for (size_t key : {16u, 24u, 32u}) expectRoundTrips(*make(SADB_X_EALG_AESCBC, key, SADB_X_AALG_SHA2_256HMAC, 32));
  expectRoundTrips(*make(SADB_X_EALG_AESCBC, 16, SADB_AALG_SHA1HMAC, 20));
  expectRoundTrips(*make(SADB_X_EALG_AESCBC, 16, SADB_X_AALG_SHA2_384HMAC, 48));
  expectRoundTrips(*make(SADB_EALG_NULL, 0, SADB_X_AALG_SHA2_256HMAC, 32));
}

TEST(Transform, RoundTripsEveryAlgorithmAndKeySize) {
  for (size_t key : {20u, 28u, 36u}) {
    for (uint8_t id : std::initializer_list<uint8_t>{SADB_X_EALG_AES_GCM_ICV8, SADB_X_EALG_AES_GCM_ICV12, SADB_X_EALG_NULL_AES_GMAC})
      expectRoundTrips(*make(id, key, SADB_AALG_NONE, 0));
    expectRoundTrips(*make(SADB_X_EALG_AESCTR, key, SADB_X_AALG_SHA2_256HMAC, 32));
    expectRoundTrips(*make(SADB_X_EALG_AESCTR, key, SADB_AALG_NONE, 0));
  }
  for (size_t key : {19u, 27u, 35u})
    for (uint8_t id : std::initializer_list<uint8_t>{SADB_X_EALG_AES_CCM_ICV8, SADB_X_EALG_AES_CCM_ICV12, SADB_X_EALG_AES_CCM_ICV16})
      expectRoundTrips(*make(id, key, SADB_AALG_NONE, 0));
  expectRoundTrips(*make(kSadbXEalgChacha20Poly1305, 36, SADB_AALG_NONE, 0));
  expectRoundTrips(*make(SADB_X_EALG_AESCBC, 16, SADB_X_AALG_AES_XCBC_MAC, 16));
  expectRoundTrips(*make(SADB_X_EALG_AESCBC, 32, kSadbXAalgAesCmac96, 16));
  expectRoundTrips(*make(SADB_EALG_NULL, 0, SADB_X_AALG_AES_XCBC_MAC, 16));
  expectRoundTrips(*make(SADB_EALG_3DESCBC, 24, SADB_AALG_MD5HMAC, 16, false, true));
  expectRoundTrips(*make(SADB_X_EALG_AESCTR, 20, SADB_AALG_MD5HMAC, 16, false, true));
}

TEST(MakeTransform, ReportsLayoutOfCounterModesAndAeads) {
  struct Row {
    uint8_t enc;
    size_t encLen;
    uint8_t auth;
    size_t authLen;
    uint8_t iv, icv, align;
    bool counter;
    std::string_view name;
  };
  const Row rows[] = {
      {SADB_X_EALG_AESCTR, 28, kSadbXAalgAesCmac96, 16, 8, 12, 4, true, "openssl:aes-ctr-192+aes-cmac"},
      {SADB_X_EALG_AES_CCM_ICV12, 35, SADB_AALG_NONE, 0, 8, 12, 4, true, "openssl:aes-ccm-12-256"},
      {SADB_X_EALG_AES_GCM_ICV8, 20, SADB_X_AALG_NULL, 0, 8, 8, 4, true, "openssl:aes-gcm-8-128"},
      {SADB_X_EALG_NULL_AES_GMAC, 28, SADB_AALG_NONE, 0, 8, 16, 4, true, "openssl:aes-gmac-192"},
      {kSadbXEalgChacha20Poly1305, 36, SADB_AALG_NONE, 0, 8, 16, 4, true, "openssl:chacha20-poly1305-256"},
      {SADB_X_EALG_AESCBC, 16, SADB_X_AALG_AES_XCBC_MAC, 16, 16, 12, 16, false, "openssl:aes-cbc-128+aes-xcbc-mac"},
  };
  for (const Row& r : rows) {
    auto t = make(r.enc, r.encLen, r.auth, r.authLen);
    ASSERT_TRUE(t) << r.name;
    EXPECT_EQ(t->name(), r.name);
    EXPECT_EQ(t->ivLength(), r.iv) << r.name;
    EXPECT_EQ(t->icvLength(), r.icv) << r.name;
    EXPECT_EQ(t->padAlign(), r.align) << r.name;
    EXPECT_EQ(t->ivIsCounter(), r.counter) << r.name;
  }
}

TEST(MakeTransform, RefusesBadKeyLengthsOfTheNewAlgorithms) {
  for (size_t bad : {0u, 16u, 20u, 28u, 36u})
    EXPECT_NE(refusal(SADB_X_EALG_AES_CCM_ICV16, bad, SADB_AALG_NONE, 0).find("19, 27 or 35"), std::string::npos) << bad;
  for (size_t bad : {0u, 16u, 32u, 35u})
    EXPECT_NE(refusal(SADB_X_EALG_AESCTR, bad, SADB_AALG_NONE, 0).find("20, 28 or 36"), std::string::npos) << bad;
  for (size_t bad : {0u, 20u, 32u, 37u})
    EXPECT_NE(refusal(kSadbXEalgChacha20Poly1305, bad, SADB_AALG_NONE, 0).find("36"), std::string::npos) << bad;
  for (size_t bad : {0u, 15u, 20u, 32u}) {
    EXPECT_NE(refusal(SADB_X_EALG_AESCBC, 16, SADB_X_AALG_AES_XCBC_MAC, bad).find("aes-xcbc-mac: key must be 16"),
              std::string::npos)
        << bad;
    EXPECT_NE(refusal(SADB_X_EALG_AESCBC, 16, kSadbXAalgAesCmac96, bad).find("aes-cmac: key must be 16"),
              std::string::npos)
        << bad;
  }
}

// AES-GMAC (RFC 4543) authenticates the payload and leaves it readable.
TEST(Transform, GmacLeavesThePayloadInTheClearButCoversIt) {
  auto t = make(SADB_X_EALG_NULL_AES_GMAC, 20, SADB_AALG_NONE, 0);
  Bytes p = framed(*t, 64, 2);
  const Bytes original = p;
  ASSERT_EQ(t->seal(p.data(), p.size(), 0), Status::kOk);
  EXPECT_TRUE(std::equal(original.begin() + 16, original.end() - 16, p.begin() + 16));
  for (size_t i : {size_t{8}, size_t{16}, size_t{40}}) {
    Bytes bad = p;
    bad[i] ^= 1;
    EXPECT_EQ(t->open(bad.data(), bad.size(), 0), Status::kBadIcv) << i;
  }
}

// The ICV of cipher + HMAC is the leading bytes of HMAC over header..
// ciphertext, then seqHigh with ESN (RFC 4303 §2.2.1), checked here with
// OpenSSL's one-shot HMAC() rather than our EVP_MAC wrapper, for every HMAC.
TEST(Transform, HmacIcvCoversHeaderCiphertextAndEsnHighHalf) {
  struct Row {
    uint8_t id;
    const EVP_MD* (*md)();
    size_t key, icv;
  };
  const Row rows[] = {{SADB_AALG_MD5HMAC, EVP_md5, 16, 12},
                      {SADB_AALG_SHA1HMAC, EVP_sha1, 20, 12},
                      {SADB_X_AALG_SHA2_256HMAC, EVP_sha256, 32, 16},
                      {SADB_X_AALG_SHA2_384HMAC, EVP_sha384, 48, 24},
                      {SADB_X_AALG_SHA2_512HMAC, EVP_sha512, 64, 32}};
  for (const Row& r : rows) {
    for (bool esn : {false, true}) {
      for (uint8_t enc : std::initializer_list<uint8_t>{SADB_X_EALG_AESCBC, SADB_X_EALG_AESCTR}) {
        auto t = make(enc, enc == SADB_X_EALG_AESCTR ? 20 : 16, r.id, r.key, esn, true);
        const Bytes authKey = pattern(r.key, 101);
        Bytes p = framed(*t, 64, 5);
        ASSERT_EQ(t->seal(p.data(), p.size(), 0x01020304), Status::kOk);
        Bytes covered(p.begin(), p.end() - static_cast<std::ptrdiff_t>(r.icv));
        if (esn) covered.insert(covered.end(), {1, 2, 3, 4});
        uint8_t mac[64];
        unsigned macLen = 0;
        ASSERT_NE(HMAC(r.md(), authKey.data(), static_cast<int>(r.key), covered.data(), covered.size(), mac, &macLen),
                  nullptr);
        EXPECT_EQ(Bytes(p.end() - static_cast<std::ptrdiff_t>(r.icv), p.end()), Bytes(mac, mac + r.icv))
            << t->name() << " esn " << esn;
      }
    }
  }
}

// The same for AES-CMAC-96, against OpenSSL's older CMAC_* API.
TEST(Transform, CmacIcvIsTheLeading12BytesOfAesCmac) {
  for (bool esn : {false, true}) {
    auto t = make(SADB_EALG_NULL, 0, kSadbXAalgAesCmac96, 16, esn);
    const Bytes authKey = pattern(16, 101);
    Bytes p = framed(*t, 52, 5);
    ASSERT_EQ(t->seal(p.data(), p.size(), 0x0a0b0c0d), Status::kOk);
    Bytes covered(p.begin(), p.end() - 12);
    if (esn) covered.insert(covered.end(), {0x0a, 0x0b, 0x0c, 0x0d});
    CMAC_CTX* ctx = CMAC_CTX_new();
    uint8_t mac[16];
    size_t macLen = 0;
    ASSERT_EQ(CMAC_Init(ctx, authKey.data(), 16, EVP_aes_128_cbc(), nullptr), 1);
    ASSERT_EQ(CMAC_Update(ctx, covered.data(), covered.size()), 1);
    ASSERT_EQ(CMAC_Final(ctx, mac, &macLen), 1);
    CMAC_CTX_free(ctx);
    EXPECT_EQ(Bytes(p.end() - 12, p.end()), Bytes(mac, mac + 12)) << "esn " << esn;
  }
}

TEST(Transform, EsnHighHalfChangesTheIcvOnlyWithEsn) {
  for (bool esn : {false, true}) {
    for (auto& t : {make(SADB_X_EALG_AES_GCM_ICV16, 20, SADB_AALG_NONE, 0, esn),
                    make(SADB_X_EALG_AESCBC, 16, SADB_X_AALG_SHA2_256HMAC, 32, esn),
                    make(SADB_X_EALG_AES_CCM_ICV8, 19, SADB_AALG_NONE, 0, esn),
                    make(SADB_X_EALG_NULL_AES_GMAC, 20, SADB_AALG_NONE, 0, esn),
                    make(kSadbXEalgChacha20Poly1305, 36, SADB_AALG_NONE, 0, esn),
                    make(SADB_X_EALG_AESCTR, 20, SADB_X_AALG_AES_XCBC_MAC, 16, esn),
                    make(SADB_EALG_NULL, 0, kSadbXAalgAesCmac96, 16, esn)}) {
      Bytes a = framed(*t, 32, 1);
      Bytes b = a;
      ASSERT_EQ(t->seal(a.data(), a.size(), 0), Status::kOk);
      ASSERT_EQ(t->seal(b.data(), b.size(), 1), Status::kOk);
      EXPECT_EQ(a != b, esn) << t->name();
      EXPECT_EQ(t->open(b.data(), b.size(), 0), esn ? Status::kBadIcv : Status::kOk) << t->name();
    }
  }
}

TEST(Transform, LeavesPacketUntouchedWhenTheIcvFails) {
  for (auto& t : {make(SADB_X_EALG_AES_GCM_ICV16, 28, SADB_AALG_NONE, 0),
                  make(SADB_X_EALG_AESCBC, 32, SADB_X_AALG_SHA2_512HMAC, 64),
                  make(SADB_X_EALG_AES_CCM_ICV16, 27, SADB_AALG_NONE, 0),
                  make(SADB_X_EALG_AES_GCM_ICV8, 20, SADB_AALG_NONE, 0),
                  make(kSadbXEalgChacha20Poly1305, 36, SADB_AALG_NONE, 0),
                  make(SADB_X_EALG_AESCTR, 36, SADB_X_AALG_AES_XCBC_MAC, 16),
                  make(SADB_EALG_3DESCBC, 24, SADB_AALG_MD5HMAC, 16, false, true)}) {
    Bytes p = framed(*t, 96, 1);
    ASSERT_EQ(t->seal(p.data(), p.size(), 0), Status::kOk);
    for (size_t i : {size_t{0}, size_t{5}, size_t{8}, p.size() / 2, p.size() - 1}) {
      Bytes bad = p;
      bad[i] ^= 0x10;
      const Bytes before = bad;
      EXPECT_EQ(t->open(bad.data(), bad.size(), 0), Status::kBadIcv) << t->name() << " byte " << i;
      EXPECT_EQ(bad, before) << "no unverified plaintext reaches shared memory";
    }
  }
}

TEST(Transform, RejectsLengthsThatCannotBeEsp) {
  auto gcm = make(SADB_X_EALG_AES_GCM_ICV16, 20, SADB_AALG_NONE, 0);
  auto cbc = make(SADB_X_EALG_AESCBC, 16, SADB_X_AALG_SHA2_256HMAC, 32);
  Bytes buf(Transform::kMaxPacketLength + 64, 0);
  buf[3] = 1;
  // Too short for header + IV + one aligned block + ICV.
  EXPECT_EQ(gcm->seal(buf.data(), 8 + 8 + 16, 0), Status::kBadLength);
  EXPECT_EQ(gcm->open(buf.data(), 8 + 8 + 16, 0), Status::kBadLength);
  EXPECT_EQ(cbc->open(buf.data(), 8 + 16 + 15 + 16, 0), Status::kBadLength);
  EXPECT_EQ(gcm->open(buf.data(), 3, 0), Status::kBadLength);
  // Not a block multiple.
  EXPECT_EQ(gcm->open(buf.data(), 8 + 8 + 6 + 16, 0), Status::kBadLength);
  EXPECT_EQ(cbc->seal(buf.data(), 8 + 16 + 20 + 16, 0), Status::kBadLength);
  EXPECT_EQ(cbc->open(buf.data(), 8 + 16 + 20 + 16, 0), Status::kBadLength);
  // Longer than any IP payload.
  EXPECT_EQ(gcm->open(buf.data(), Transform::kMaxPacketLength + 4, 0), Status::kBadLength);
  EXPECT_EQ(gcm->open(nullptr, 64, 0), Status::kBadLength);
  // The largest packet is fine (and verifies as bad, being zeros).
  const size_t largest = 8 + 8 + ((Transform::kMaxPacketLength - 32) / 4) * 4 + 16;
  EXPECT_EQ(gcm->open(buf.data(), largest, 0), Status::kBadIcv);
}

TEST(Transform, SealWithIvWritesTheGivenIvNotTheBuffersOne) {
  auto t = make(SADB_X_EALG_AES_GCM_ICV16, 20, SADB_AALG_NONE, 0);
  const Bytes iv = pattern(8, 200);
  Bytes a = framed(*t, 32, 1);
  Bytes b = a;
  std::fill(b.begin() + 8, b.begin() + 16, 0x55);  // stale bytes in the IV gap
  ASSERT_EQ(t->sealWithIv(a.data(), a.size(), 0, iv.data()), Status::kOk);
  ASSERT_EQ(t->sealWithIv(b.data(), b.size(), 0, iv.data()), Status::kOk);
  EXPECT_EQ(a, b);
  EXPECT_EQ(Bytes(a.begin() + 8, a.begin() + 16), iv);
}

TEST(Status, HasCounterNames) {
  EXPECT_EQ(toString(Status::kOk), "ok");
  EXPECT_EQ(toString(Status::kBadIcv), "bad_icv");
  EXPECT_EQ(toString(Status::kBadLength), "bad_length");
  EXPECT_EQ(toString(Status::kInternal), "internal");
}

TEST(Hmac, RefusesUnknownDigestAndEmptyKey) {
  std::string error;
  const Bytes key = pattern(32, 1);
  EXPECT_FALSE(Hmac::create("NOT-A-DIGEST", key, &error));
  EXPECT_FALSE(error.empty());
  EXPECT_FALSE(Hmac::create("SHA256", {}, &error));
}

}  // namespace
}  // namespace ipsec::cryptodrv
