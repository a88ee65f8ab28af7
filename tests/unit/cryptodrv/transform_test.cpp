// Unit tests of the driver registry and the OpenSSL transforms beyond the
// known answers: the factory's refusals, the REGISTER algorithm list, layout
// properties, round trips at many lengths, ESN in the ICV, length checks, and
// that a packet failing verification is left untouched.
#include <gtest/gtest.h>
#include <linux/pfkeyv2.h>
#include <openssl/hmac.h>

#include <numeric>
#include <string>
#include <vector>

#include "cryptodrv/driver.h"
#include "cryptodrv/hmac.h"
#include "cryptodrv/secure_bytes.h"

namespace ipsec::cryptodrv {
namespace {

using Bytes = std::vector<uint8_t>;

Bytes pattern(size_t n, uint8_t seed) {
  Bytes b(n);
  std::iota(b.begin(), b.end(), seed);
  return b;
}

std::unique_ptr<Transform> make(uint8_t enc, size_t encLen, uint8_t auth, size_t authLen, bool esn = false) {
  static Bytes encKey, authKey;
  encKey = pattern(encLen, 1);
  authKey = pattern(authLen, 101);
  std::string error;
  auto t = makeTransform({enc, auth, encKey, authKey, esn}, &error);
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
  EXPECT_NE(refusal(SADB_EALG_3DESCBC, 24, SADB_X_AALG_SHA2_256HMAC, 32).find("no driver"), std::string::npos);
  EXPECT_NE(refusal(SADB_X_EALG_AESCBC, 16, SADB_X_AALG_AES_XCBC_MAC, 16).find("no driver"), std::string::npos);
  EXPECT_NE(refusal(SADB_EALG_NULL, 0, SADB_AALG_NONE, 0).find("no driver"), std::string::npos);
  EXPECT_NE(refusal(SADB_X_EALG_AES_GCM_ICV16, 20, SADB_X_AALG_SHA2_256HMAC, 32).find("no driver"),
            std::string::npos)
      << "an AEAD takes no separate integrity algorithm";
  EXPECT_NE(refusal(SADB_X_EALG_AES_GCM_ICV8, 20, SADB_AALG_NONE, 0).find("no driver"), std::string::npos);
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
  ASSERT_EQ(registry.drivers().size(), 1u);
  EXPECT_EQ(registry.drivers()[0]->name(), "openssl");
  const auto enc = registry.algorithms(AlgorithmKind::kEncrypt);
  ASSERT_EQ(enc.size(), 3u);
  EXPECT_EQ(enc[0].id, SADB_EALG_NULL);
  EXPECT_EQ(enc[1].id, SADB_X_EALG_AESCBC);
  EXPECT_EQ(enc[2].id, SADB_X_EALG_AES_GCM_ICV16);
  EXPECT_EQ(enc[2].minKeyBits, 160);
  EXPECT_EQ(enc[2].maxKeyBits, 288);
  const auto auth = registry.algorithms(AlgorithmKind::kAuth);
  ASSERT_EQ(auth.size(), 4u);
  EXPECT_EQ(auth[1].id, SADB_X_AALG_SHA2_256HMAC);
  EXPECT_EQ(auth[1].minKeyBits, 256);
  EXPECT_EQ(auth[1].icvLength, 16);
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

// The ICV of AES-CBC + HMAC-SHA2-256-128 is the first 16 bytes of HMAC over
// header..ciphertext, then seqHigh with ESN (RFC 4303 §2.2.1), checked here
// with OpenSSL's one-shot HMAC() rather than our EVP_MAC wrapper.
TEST(Transform, CbcHmacIcvCoversHeaderCiphertextAndEsnHighHalf) {
  for (bool esn : {false, true}) {
    auto t = make(SADB_X_EALG_AESCBC, 16, SADB_X_AALG_SHA2_256HMAC, 32, esn);
    const Bytes authKey = pattern(32, 101);
    Bytes p = framed(*t, 64, 5);
    ASSERT_EQ(t->seal(p.data(), p.size(), 0x01020304), Status::kOk);
    Bytes covered(p.begin(), p.end() - 16);
    if (esn) covered.insert(covered.end(), {1, 2, 3, 4});
    uint8_t mac[32];
    unsigned macLen = 0;
    ASSERT_NE(HMAC(EVP_sha256(), authKey.data(), 32, covered.data(), covered.size(), mac, &macLen), nullptr);
    EXPECT_EQ(Bytes(p.end() - 16, p.end()), Bytes(mac, mac + 16)) << "esn " << esn;
  }
}

TEST(Transform, EsnHighHalfChangesTheIcvOnlyWithEsn) {
  for (bool esn : {false, true}) {
    for (auto& t : {make(SADB_X_EALG_AES_GCM_ICV16, 20, SADB_AALG_NONE, 0, esn),
                    make(SADB_X_EALG_AESCBC, 16, SADB_X_AALG_SHA2_256HMAC, 32, esn)}) {
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
                  make(SADB_X_EALG_AESCBC, 32, SADB_X_AALG_SHA2_512HMAC, 64)}) {
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

TEST(SecureBytes, CopiesKeyIntoItsOwnMemory) {
  Bytes key = pattern(36, 9);
  SecureBytes secure(key);
  ASSERT_EQ(secure.size(), 36u);
  EXPECT_NE(secure.data(), key.data());
  EXPECT_TRUE(std::equal(key.begin(), key.end(), secure.data()));
  SecureBytes moved(std::move(secure));
  EXPECT_EQ(secure.data(), nullptr);
  EXPECT_EQ(moved.size(), 36u);
  SecureBytes empty(std::span<const uint8_t>{});
  EXPECT_EQ(empty.size(), 0u);
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
