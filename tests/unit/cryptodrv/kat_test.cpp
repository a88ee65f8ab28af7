// Known-answer tests of the OpenSSL driver from ../shared/vectors/esp-kat.json
// (see its `conventions`: expected_esp is SPI, low 32 bits of seq, IV,
// ciphertext, ICV; AEAD keymat is key || 4-byte salt; seq is the full 64-bit
// value for ESN vectors). One test per vector: seal must reproduce
// expected_esp byte for byte from the vector's IV, open must recover the
// plaintext and reject a flipped ICV bit and a flipped ciphertext bit.
// Vectors for algorithms out of scope are skipped with the reason.
#include <gtest/gtest.h>
#include <linux/pfkeyv2.h>
#include <nlohmann/json.hpp>

#include <fstream>
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

TEST_P(EspPacketKat, SealsToExpectedBytesAndOpensBack) {
  const json& v = GetParam();
  const std::string alg = v["algorithm"];
  TransformSpec spec;
  Bytes key;
  if (alg.find("ENCR_AES_GCM_16") != std::string::npos) {
    spec.encAlg = SADB_X_EALG_AES_GCM_ICV16;
    key = fromHex(v["keymat_rfc4106"]);
    spec.esn = v.value("esn", false);
  } else if (alg.find("ENCR_AES_GCM") != std::string::npos) {
    GTEST_SKIP() << "AES-GCM with an ICV other than 16 bytes: only SADB_X_EALG_AES_GCM_ICV16 is in scope";
  } else if (alg.find("ENCR_AES_CBC") != std::string::npos && alg.find("no integrity") != std::string::npos) {
    spec.encAlg = SADB_X_EALG_AESCBC;
    key = fromHex(v["key"]);
  } else {
    GTEST_SKIP() << alg << ": no driver for it yet (AES-GMAC and ChaCha20-Poly1305 are for later drivers)";
  }
  spec.encKey = key;
  std::string error;
  auto t = makeTransform(spec, &error);
  ASSERT_TRUE(t) << error;

  const Bytes expected = fromHex(v["expected_esp"]);
  const Bytes plaintext = fromHex(v["esp_plaintext_with_trailer"]);
  const Bytes iv = fromHex(v["iv"]);
  ASSERT_EQ(iv.size(), t->ivLength());
  ASSERT_EQ(expected.size(), 8 + iv.size() + plaintext.size() + t->icvLength());
  const uint64_t seq = v["seq"];
  const uint32_t seqHigh = static_cast<uint32_t>(seq >> 32);

  // The forwarder's part (header, trailer) and the broker's IV, then seal.
  Bytes p(expected.size(), 0);
  std::copy(expected.begin(), expected.begin() + 8, p.begin());
  std::copy(iv.begin(), iv.end(), p.begin() + 8);
  std::copy(plaintext.begin(), plaintext.end(), p.begin() + 8 + static_cast<std::ptrdiff_t>(iv.size()));
  ASSERT_EQ(t->seal(p.data(), p.size(), seqHigh), Status::kOk);
  EXPECT_EQ(p, expected);

  // The broker's preferred form writes the IV itself.
  Bytes q(p.size(), 0);
  std::copy(expected.begin(), expected.begin() + 8, q.begin());
  std::copy(plaintext.begin(), plaintext.end(), q.begin() + 8 + static_cast<std::ptrdiff_t>(iv.size()));
  ASSERT_EQ(t->sealWithIv(q.data(), q.size(), seqHigh, iv.data()), Status::kOk);
  EXPECT_EQ(q, expected);

  // Where the vector has the whole IP packet, our ESP is its payload.
  if (v.contains("expected_ip_packet") && v["expected_ip_packet"].is_string()) {
    const Bytes ip = fromHex(v["expected_ip_packet"]);
    ASSERT_GT(ip.size(), 20u);
    EXPECT_EQ(Bytes(ip.begin() + 4 * (ip[0] & 0x0f), ip.end()), p);
  }
  expectOpenRecoversAndRejectsTampering(*t, expected, plaintext, seqHigh);
}

INSTANTIATE_TEST_SUITE_P(Vectors, EspPacketKat, testing::ValuesIn(vectorsOfKind({"esp-packet"})), testName);

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
  if (algorithm == "HMAC-SHA1") return "SHA1";
  if (algorithm == "HMAC-SHA256" || algorithm.rfind("HMAC-SHA-256", 0) == 0) return "SHA256";
  if (algorithm == "HMAC-SHA384" || algorithm.rfind("HMAC-SHA-384", 0) == 0) return "SHA384";
  if (algorithm == "HMAC-SHA512" || algorithm.rfind("HMAC-SHA-512", 0) == 0) return "SHA512";
  return nullptr;
}

TEST_P(HmacKat, ComputesFullAndTruncatedMac) {
  const json& v = GetParam();
  const char* digest = digestFor(v["algorithm"]);
  if (digest == nullptr) GTEST_SKIP() << v["algorithm"] << " is not an ESP integrity algorithm of this driver";
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
