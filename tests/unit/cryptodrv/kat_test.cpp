// Known-answer tests of the OpenSSL driver from ../shared/vectors/esp-kat.json
// (see its `conventions`: expected_esp is SPI, low 32 bits of seq, IV,
// ciphertext, ICV; AEAD keymat is key || 4-byte salt; seq is the full 64-bit
// value for ESN vectors). One test per vector: seal must reproduce
// expected_esp byte for byte from the vector's IV, open must recover the
// plaintext and reject a flipped ICV bit and a flipped ciphertext bit.
// Every vector of the file runs (GCM, GMAC, ChaCha20-Poly1305, CBC, HMAC-MD5,
// -SHA1, -SHA224, -SHA256, -SHA384, -SHA512), on every driver that has the
// algorithm.
#include <gtest/gtest.h>
#include <linux/pfkeyv2.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "cryptodrv/driver.h"
#include "cryptodrv/hmac.h"

namespace ipsec::cryptodrv {
namespace {

using Bytes = std::vector<uint8_t>;
using nlohmann::json;

Bytes fromHex(const std::string& hex) {
  Bytes out(hex.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<uint8_t>(std::stoul(hex.substr(2 * i, 2), nullptr, 16));
  return out;
}

const json& katFile() {
  static const json kat = [] {
    std::ifstream in(IPSEC_ESP_KAT_FILE);
    return in ? json::parse(in) : json::object();
  }();
  return kat;
}

std::vector<json> vectorsOfKind(std::initializer_list<const char*> kinds) {
  std::vector<json> out;
  if (!katFile().contains("vectors")) return out;
  for (const auto& v : katFile()["vectors"])
    for (const char* k : kinds)
      if (v["kind"] == k) out.push_back(v);
  return out;
}

std::string testName(const testing::TestParamInfo<json>& info) {
  std::string name = info.param["id"];
  for (char& c : name)
    if (!isalnum(static_cast<unsigned char>(c))) c = '_';
  return name;
}

TEST(KatFile, HoldsTheVectorsThisSuiteExpects) {
  ASSERT_TRUE(katFile().contains("vectors")) << "cannot read " << IPSEC_ESP_KAT_FILE;
  EXPECT_GE(vectorsOfKind({"esp-packet", "cipher-only"}).size(), 22u);
  EXPECT_GE(vectorsOfKind({"hmac", "hmac-truncated"}).size(), 40u);
}

// Decrypt the packet back and check tampering is caught.
void expectOpenRecoversAndRejectsTampering(Transform& t, const Bytes& sealed, const Bytes& plaintext,
                                           uint32_t seqHigh) {
  const size_t start = 8 + t.ivLength();
  Bytes p = sealed;
  ASSERT_EQ(t.open(p.data(), p.size(), seqHigh), Status::kOk);
  EXPECT_EQ(Bytes(p.begin() + static_cast<std::ptrdiff_t>(start), p.end() - t.icvLength()), plaintext);
  if (t.icvLength() == 0) return;  // nothing to detect tampering with

  Bytes badIcv = sealed;
  badIcv.back() ^= 0x01;
  EXPECT_EQ(t.open(badIcv.data(), badIcv.size(), seqHigh), Status::kBadIcv);
  badIcv.back() ^= 0x01;
  EXPECT_EQ(badIcv, sealed) << "a rejected packet is left as received";

  Bytes badCipher = sealed;
  badCipher[start] ^= 0x80;
  EXPECT_EQ(t.open(badCipher.data(), badCipher.size(), seqHigh), Status::kBadIcv);

  if (t.esn()) {
    Bytes wrongHigh = sealed;
    EXPECT_EQ(t.open(wrongHigh.data(), wrongHigh.size(), seqHigh + 1), Status::kBadIcv);
  }
}

class EspPacketKat : public testing::TestWithParam<json> {};

// The spec a vector describes, with the key bytes kept in `key`; nullopt for
// an algorithm this suite does not know (the test then fails: every vector
// of the file must run).
std::optional<TransformSpec> specFor(const json& v, Bytes& key) {
  const std::string alg = v["algorithm"];
  TransformSpec spec;
  spec.esn = v.value("esn", false);
  if (alg.find("ENCR_AES_GCM_16") != std::string::npos) {
    spec.encAlg = SADB_X_EALG_AES_GCM_ICV16;
    key = fromHex(v["keymat_rfc4106"]);
  } else if (alg.find("ENCR_NULL_AUTH_AES_GMAC") != std::string::npos) {
    spec.encAlg = SADB_X_EALG_NULL_AES_GMAC;
    key = fromHex(v["keymat_rfc4543"]);
  } else if (alg.find("ENCR_CHACHA20_POLY1305") != std::string::npos) {
    spec.encAlg = kSadbXEalgChacha20Poly1305;
    key = fromHex(v["keymat"]);
  } else if (alg.find("ENCR_AES_CBC") != std::string::npos && alg.find("no integrity") != std::string::npos) {
    spec.encAlg = SADB_X_EALG_AESCBC;
    key = fromHex(v["key"]);
  } else {
    return std::nullopt;
  }
  spec.encKey = key;
  return spec;
}

// Seal from the vector's IV must give expected_esp byte for byte (both seal
// forms), open must give the plaintext back and refuse tampering.
void expectVector(Transform& t, const json& v, const Bytes& expected) {
  const Bytes plaintext = fromHex(v["esp_plaintext_with_trailer"]);
  const Bytes iv = fromHex(v["iv"]);
  ASSERT_EQ(iv.size(), t.ivLength());
  ASSERT_EQ(expected.size(), 8 + iv.size() + plaintext.size() + t.icvLength());
  const uint64_t seq = v["seq"];
  const uint32_t seqHigh = static_cast<uint32_t>(seq >> 32);

  // The forwarder's part (header, trailer) and the broker's IV, then seal.
  Bytes p(expected.size(), 0);
  std::copy(expected.begin(), expected.begin() + 8, p.begin());
  std::copy(iv.begin(), iv.end(), p.begin() + 8);
  std::copy(plaintext.begin(), plaintext.end(), p.begin() + 8 + static_cast<std::ptrdiff_t>(iv.size()));
  ASSERT_EQ(t.seal(p.data(), p.size(), seqHigh), Status::kOk);
  EXPECT_EQ(p, expected) << t.name();

  // The broker's preferred form writes the IV itself.
  Bytes q(p.size(), 0);
  std::copy(expected.begin(), expected.begin() + 8, q.begin());
  std::copy(plaintext.begin(), plaintext.end(), q.begin() + 8 + static_cast<std::ptrdiff_t>(iv.size()));
  ASSERT_EQ(t.sealWithIv(q.data(), q.size(), seqHigh, iv.data()), Status::kOk);
  EXPECT_EQ(q, expected) << t.name();
  expectOpenRecoversAndRejectsTampering(t, expected, plaintext, seqHigh);
}

// Every driver that runs the vector's algorithm must reproduce it: the
// ChaCha20-Poly1305 and AES-256-GCM vectors run on OpenSSL and libsodium.
TEST_P(EspPacketKat, SealsToExpectedBytesAndOpensBackOnEveryDriver) {
  const json& v = GetParam();
  Bytes key;
  const auto spec = specFor(v, key);
  ASSERT_TRUE(spec) << v["algorithm"] << ": no spec for this vector";
  const auto registry = DriverRegistry::withDefaultDrivers();
  int drivers = 0;
  for (const auto& d : registry.drivers()) {
    if (!d->supports(*spec)) continue;
    ++drivers;
    std::string error;
    auto t = d->create(*spec, &error);
    ASSERT_TRUE(t) << d->name() << ": " << error;
    SCOPED_TRACE(std::string(t->name()));
    expectVector(*t, v, fromHex(v["expected_esp"]));
  }
  EXPECT_GE(drivers, 1);
  // Where the vector has the whole IP packet, our ESP is its payload.
  if (v.contains("expected_ip_packet") && v["expected_ip_packet"].is_string()) {
    const Bytes ip = fromHex(v["expected_ip_packet"]);
    ASSERT_GT(ip.size(), 20u);
    EXPECT_EQ(Bytes(ip.begin() + 4 * (ip[0] & 0x0f), ip.end()), fromHex(v["expected_esp"]));
  }
}

// The contexts stay keyed for the SA's life and only get a new IV per
// packet: the vector must still come out after the same transform carried
// packets of other lengths and IVs and refused a tampered one, and again
// after expectVector's own refused opens.
TEST_P(EspPacketKat, StillMatchesAfterTheContextCarriedOtherPacketsAndRefusedOne) {
  const json& v = GetParam();
  Bytes key;
  const auto spec = specFor(v, key);
  ASSERT_TRUE(spec) << v["algorithm"] << ": no spec for this vector";
  const auto registry = DriverRegistry::withDefaultDrivers();
  for (const auto& d : registry.drivers()) {
    if (!d->supports(*spec)) continue;
    std::string error;
    auto t = d->create(*spec, &error);
    ASSERT_TRUE(t) << d->name() << ": " << error;
    SCOPED_TRACE(std::string(t->name()));
    for (size_t blocks : {1, 7, 90, 2}) {
      Bytes other(8 + t->ivLength() + blocks * 16 + t->icvLength(), static_cast<uint8_t>(blocks));
      const Bytes iv(t->ivLength(), static_cast<uint8_t>(0xa0 + blocks));
      ASSERT_EQ(t->sealWithIv(other.data(), other.size(), 7, iv.data()), Status::kOk);
      Bytes refused = other;
      refused[8 + t->ivLength()] ^= 4;
      if (t->icvLength() > 0) {
        EXPECT_EQ(t->open(refused.data(), refused.size(), 7), Status::kBadIcv);
      }
      ASSERT_EQ(t->open(other.data(), other.size(), 7), Status::kOk);
    }
    expectVector(*t, v, fromHex(v["expected_esp"]));
    expectVector(*t, v, fromHex(v["expected_esp"]));
  }
}

// RFC 4106 §6: the 8- and 12-byte ICVs are the leading bytes of the same
// GHASH tag, so every AES-GCM-16 vector also checks AES-GCM-8 and -12.
class GcmShortIcvKat : public testing::TestWithParam<json> {};

TEST_P(GcmShortIcvKat, AesGcmWithShortIcvIsTheTruncatedTag) {
  const json& v = GetParam();
  const Bytes full = fromHex(v["expected_esp"]);
  const Bytes key = fromHex(v["keymat_rfc4106"]);
  for (auto [id, icv] : {std::pair{SADB_X_EALG_AES_GCM_ICV8, 8}, std::pair{SADB_X_EALG_AES_GCM_ICV12, 12}}) {
    std::string error;
    auto t = makeTransform({.encAlg = static_cast<uint8_t>(id), .encKey = key, .esn = v.value("esn", false)}, &error);
    ASSERT_TRUE(t) << error;
    ASSERT_EQ(t->icvLength(), icv);
    expectVector(*t, v, Bytes(full.begin(), full.end() - (16 - icv)));
  }
}

INSTANTIATE_TEST_SUITE_P(Vectors, EspPacketKat, testing::ValuesIn(vectorsOfKind({"esp-packet"})), testName);

std::vector<json> gcmVectors() {
  std::vector<json> out;
  for (const json& v : vectorsOfKind({"esp-packet"}))
    if (std::string(v["algorithm"]).find("ENCR_AES_GCM_16") != std::string::npos) out.push_back(v);
  return out;
}

INSTANTIATE_TEST_SUITE_P(Rfc4106, GcmShortIcvKat, testing::ValuesIn(gcmVectors()), testName);

TEST(KatFile, EveryEspVectorHasASpec) {
  for (const json& v : vectorsOfKind({"esp-packet"})) {
    Bytes key;
    EXPECT_TRUE(specFor(v, key)) << v["id"];
  }
}

class CbcCipherKat : public testing::TestWithParam<json> {};

// RFC 3602 cases 1-4 give only key, IV, plaintext and ciphertext: wrap them
// in an ESP header so that they go through the same Transform.
TEST_P(CbcCipherKat, EncryptsAndDecryptsThroughTheTransform) {
  const json& v = GetParam();
  const Bytes key = fromHex(v["key"]);
  const Bytes iv = fromHex(v["iv"]);
  const Bytes plaintext = fromHex(v["plaintext"]);
  const Bytes ciphertext = fromHex(v["ciphertext"]);
  std::string error;
  auto t = makeTransform({.encAlg = SADB_X_EALG_AESCBC, .authAlg = SADB_AALG_NONE, .encKey = key}, &error);
  ASSERT_TRUE(t) << error;
  Bytes p{0, 0, 0x12, 0x34, 0, 0, 0, 1};
  p.insert(p.end(), iv.begin(), iv.end());
  p.insert(p.end(), plaintext.begin(), plaintext.end());
  ASSERT_EQ(t->seal(p.data(), p.size(), 0), Status::kOk);
  EXPECT_EQ(Bytes(p.begin() + 24, p.end()), ciphertext);
  ASSERT_EQ(t->open(p.data(), p.size(), 0), Status::kOk);
  EXPECT_EQ(Bytes(p.begin() + 24, p.end()), plaintext);
}

INSTANTIATE_TEST_SUITE_P(Rfc3602, CbcCipherKat, testing::ValuesIn(vectorsOfKind({"cipher-only"})), testName);

class HmacKat : public testing::TestWithParam<json> {};

const char* digestFor(const std::string& algorithm) {
  if (algorithm == "HMAC-MD5") return "MD5";
  if (algorithm == "HMAC-SHA1") return "SHA1";
  // SHA-224 is no ESP algorithm here; its vectors still check the HMAC class.
  if (algorithm == "HMAC-SHA224") return "SHA224";
  if (algorithm == "HMAC-SHA256" || algorithm.rfind("HMAC-SHA-256", 0) == 0) return "SHA256";
  if (algorithm == "HMAC-SHA384" || algorithm.rfind("HMAC-SHA-384", 0) == 0) return "SHA384";
  if (algorithm == "HMAC-SHA512" || algorithm.rfind("HMAC-SHA-512", 0) == 0) return "SHA512";
  return nullptr;
}

TEST_P(HmacKat, ComputesFullAndTruncatedMac) {
  const json& v = GetParam();
  const char* digest = digestFor(v["algorithm"]);
  ASSERT_NE(digest, nullptr) << v["algorithm"] << ": every HMAC vector of the file must run";
  std::string error;
  auto hmac = Hmac::create(digest, fromHex(v["key"]), &error);
  ASSERT_TRUE(hmac) << error;
  const Bytes data = fromHex(v["data"]);
  // Some RFC 4868 vectors give only the truncated value.
  const bool hasFull = v["mac"].is_string();
  const Bytes mac = hasFull ? fromHex(v["mac"]) : Bytes{};
  Bytes out(hmac->size());
  // Twice: the keyed context must be reusable per packet.
  for (int round = 0; round < 2; ++round) {
    ASSERT_TRUE(hmac->begin());
    ASSERT_TRUE(hmac->update(data.data(), data.size()));
    ASSERT_TRUE(hmac->finish(out.data()));
    if (hasFull) {
      EXPECT_EQ(out, mac) << "round " << round;
    }
  }
  ASSERT_TRUE(hasFull || v.contains("truncated_icv"));
  if (!v.contains("truncated_icv")) return;
  const json& truncated = v["truncated_icv"];
  std::vector<Bytes> icvs;
  if (truncated.is_string()) icvs.push_back(fromHex(truncated));
  else
    for (const auto& [name, hex] : truncated.items()) icvs.push_back(fromHex(hex));
  for (const Bytes& icv : icvs) EXPECT_EQ(Bytes(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(icv.size())), icv);
}

INSTANTIATE_TEST_SUITE_P(Rfc2202Rfc4231Rfc4868, HmacKat, testing::ValuesIn(vectorsOfKind({"hmac", "hmac-truncated"})),
                         testName);

}  // namespace
}  // namespace ipsec::cryptodrv
