// Known answers typed in from the RFCs for the algorithms that
// ../shared/vectors/esp-kat.json has no vectors for: RFC 3566 §4 (AES-XCBC-
// MAC-96, all seven cases), RFC 4494 §4 (AES-CMAC-96; the RFC 4493 §4
// messages truncated to 96 bits), RFC 3686 §6 (AES-CTR, through an ESP
// Transform). AES-CCM has no published ESP vector (RFC 4309 has none), so
// whole ESP packets made by python3-cryptography (gen_python_vectors.py,
// output in python_vectors.inc) check CCM, CTR+HMAC and 3DES+HMAC-MD5.
#include <gtest/gtest.h>
#include <linux/pfkeyv2.h>

#include <string>
#include <vector>

#include "cryptodrv/driver.h"
#include "cryptodrv/mac.h"

namespace ipsec::cryptodrv {
namespace {

using Bytes = std::vector<uint8_t>;

Bytes fromHex(std::string_view hex) {
  Bytes out(hex.size() / 2);
  for (size_t i = 0; i < out.size(); ++i)
    out[i] = static_cast<uint8_t>(std::stoul(std::string(hex.substr(2 * i, 2)), nullptr, 16));
  return out;
}

Bytes counting(size_t n) {
  Bytes b(n);
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(i);
  return b;
}

// The MAC of `message`, fed in pieces of `chunk` bytes (0: in one piece).
Bytes macOf(Mac& mac, const Bytes& message, size_t chunk = 0) {
  Bytes out(mac.size());
  EXPECT_TRUE(mac.begin());
  if (chunk == 0) chunk = message.size() + 1;
  for (size_t at = 0; at < message.size(); at += chunk)
    EXPECT_TRUE(mac.update(message.data() + at, std::min(chunk, message.size() - at)));
  EXPECT_TRUE(mac.finish(out.data()));
  return out;
}

struct MacCase {
  size_t length;
  const char* mac;
};

// RFC 3566 §4: key 000102..0f; messages 00 01 02 .. of the given length,
// except case 7 (1000 zero bytes).
constexpr MacCase kXcbc[] = {
    {0, "75f0251d528ac01c4573dfd584d79f29"},  {3, "5b376580ae2f19afe7219ceef172756f"},
    {16, "d2a246fa349b68a79998a4394ff7a263"}, {20, "47f51b4564966215b8985c63055ed308"},
    {32, "f54f0ec8d2b9f3d36807734bd5283fd4"}, {34, "becbb3bccdb518a30677d5481fb6b4d8"},
};

TEST(AesXcbcMac, MatchesRfc3566Vectors) {
  std::string error;
  auto mac = makeAesXcbcMac(counting(16), &error);
  ASSERT_TRUE(mac) << error;
  ASSERT_EQ(mac->size(), 16u);
  for (const MacCase& c : kXcbc) {
    const Bytes expected = fromHex(c.mac);
    // Whole, and in every chunk size: the last-block rule must not depend
    // on how the message arrives.
    for (size_t chunk : {0u, 1u, 3u, 15u, 16u, 17u})
      EXPECT_EQ(macOf(*mac, counting(c.length), chunk), expected) << "length " << c.length << " chunk " << chunk;
  }
  const Bytes zeros(1000, 0);
  for (size_t chunk : {0u, 7u, 16u, 512u})
    EXPECT_EQ(macOf(*mac, zeros, chunk), fromHex("f0dafee895db30253761103b5d84528f")) << "case 7 chunk " << chunk;
}

TEST(AesXcbcMac, RefusesKeysOtherThan128Bits) {
  std::string error;
  EXPECT_FALSE(makeAesXcbcMac(counting(24), &error));
  EXPECT_NE(error.find("16 bytes"), std::string::npos);
  EXPECT_FALSE(makeAesXcbcMac({}, &error));
}

// RFC 4494 §4 (= RFC 4493 §4 truncated): key 2b7e1516..., the SP 800-38A
// message prefixes of 0, 16, 40 and 64 bytes.
constexpr char kCmacKey[] = "2b7e151628aed2a6abf7158809cf4f3c";
constexpr char kCmacMessage[] =
    "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e5130c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad"
    "2b417be66c3710";
constexpr MacCase kCmac[] = {
    {0, "bb1d6929e95937287fa37d129b756746"},
    {16, "070a16b46b4d4144f79bdd9dd04a287c"},
    {40, "dfa66747de9ae63030ca32611497c827"},
    {64, "51f0bebf7e3b9d92fc49741779363cfe"},
};

TEST(AesCmac, MatchesRfc4494Vectors) {
  std::string error;
  auto mac = makeAesCmac(fromHex(kCmacKey), &error);
  ASSERT_TRUE(mac) << error;
  const Bytes message = fromHex(kCmacMessage);
  for (const MacCase& c : kCmac) {
    const Bytes m(message.begin(), message.begin() + static_cast<std::ptrdiff_t>(c.length));
    for (size_t chunk : {0u, 5u, 16u}) {
      const Bytes out = macOf(*mac, m, chunk);
      EXPECT_EQ(out, fromHex(c.mac)) << "length " << c.length;
      // AES-CMAC-96 is the leading 96 bits.
      EXPECT_EQ(Bytes(out.begin(), out.begin() + 12), fromHex(std::string_view(c.mac).substr(0, 24)));
    }
  }
}

// ESP over NULL encryption with AES-XCBC-MAC-96 / AES-CMAC-96: the ICV is
// the leading 12 bytes of the MAC of header..payload. Built so that the
// authenticated bytes are an RFC message, the ICV is the RFC's value.
TEST(Transform, XcbcAndCmacIcvsAreTheRfcMacsTruncated) {
  struct Row {
    uint8_t id;
    Bytes key;
    Bytes message;  // what the ICV covers: header || payload
    const char* mac;
  };
  const Bytes cmacMessage = fromHex(kCmacMessage);
  const Row rows[] = {
      {SADB_X_AALG_AES_XCBC_MAC, counting(16), counting(32), "f54f0ec8d2b9f3d36807734b"},
      {SADB_X_AALG_AES_XCBC_MAC, counting(16), counting(20), "47f51b4564966215b8985c63"},
      {kSadbXAalgAesCmac96, fromHex(kCmacKey), Bytes(cmacMessage.begin(), cmacMessage.begin() + 40),
       "dfa66747de9ae63030ca3261"},
      {kSadbXAalgAesCmac96, fromHex(kCmacKey), cmacMessage, "51f0bebf7e3b9d92fc497417"},
  };
  for (const Row& r : rows) {
    std::string error;
    auto t = makeTransform({.encAlg = SADB_EALG_NULL, .authAlg = r.id, .authKey = r.key}, &error);
    ASSERT_TRUE(t) << error;
    Bytes p = r.message;
    p.resize(p.size() + 12);
    ASSERT_EQ(t->seal(p.data(), p.size(), 0), Status::kOk);
    EXPECT_EQ(Bytes(p.end() - 12, p.end()), fromHex(r.mac)) << t->name() << " over " << r.message.size();
    EXPECT_EQ(t->open(p.data(), p.size(), 0), Status::kOk);
    p[9] ^= 1;
    EXPECT_EQ(t->open(p.data(), p.size(), 0), Status::kBadIcv);
  }
}

// RFC 3686 §6 test vectors 1-4 and 7 (128, 192 and 256-bit keys; 16, 32 and
// 36 bytes, each a multiple of ESP's 4-byte alignment): key || nonce is the
// PF_KEY key, the IV goes on the wire, and the payload is the ciphertext.
struct CtrCase {
  const char* key;
  const char* nonce;
  const char* iv;
  const char* plaintext;
  const char* ciphertext;
};

constexpr char kSingleBlock[] = "53696e676c6520626c6f636b206d7367";  // "Single block msg"
constexpr char k32[] = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
constexpr char k36[] = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20212223";

constexpr CtrCase kCtr[] = {
    {"ae6852f8121067cc4bf7a5765577f39e", "00000030", "0000000000000000", kSingleBlock,
     "e4095d4fb7a7b3792d6175a3261311b8"},
    {"7e24067817fae0d743d6ce1f32539163", "006cb6db", "c0543b59da48d90b", k32,
     "5104a106168a72d9790d41ee8edad388eb2e1efc46da57c8fce630df9141be28"},
    {"7691be035e5020a8ac6e618529f9a0dc", "00e0017b", "27777f3f4a1786f0", k36,
     "c1cf48a89f2ffdd9cf4652e9efdb72d74540a42bde6d7836d59a5ceaaef3105325b2072f"},
    {"16af5b145fc9f579c175f93e3bfb0eed863d06ccfdb78515", "00000048", "36733c147d6d93cb", kSingleBlock,
     "4b55384fe259c9c84e7935a003cbe928"},
    {"776beff2851db06f4c8a0542c8696f6c6a81af1eec96b4d37fc1d689e6c1c104", "00000060", "db5672c97aa8f0b2",
     kSingleBlock, "145ad01dbf824ec7560863dc71e3e0c0"},
};

TEST(AesCtr, MatchesRfc3686VectorsThroughTheTransform) {
  for (const CtrCase& c : kCtr) {
    Bytes keymat = fromHex(c.key);
    const Bytes nonce = fromHex(c.nonce);
    keymat.insert(keymat.end(), nonce.begin(), nonce.end());
    std::string error;
    auto t = makeTransform({.encAlg = SADB_X_EALG_AESCTR, .encKey = keymat}, &error);
    ASSERT_TRUE(t) << error;
    const Bytes iv = fromHex(c.iv);
    const Bytes plaintext = fromHex(c.plaintext);
    Bytes p{0, 0, 0x30, 0x00, 0, 0, 0, 1};
    p.resize(16);
    p.insert(p.end(), plaintext.begin(), plaintext.end());
    ASSERT_EQ(t->sealWithIv(p.data(), p.size(), 0, iv.data()), Status::kOk);
    EXPECT_EQ(Bytes(p.begin() + 8, p.begin() + 16), iv);
    EXPECT_EQ(Bytes(p.begin() + 16, p.end()), fromHex(c.ciphertext)) << c.key;
    ASSERT_EQ(t->open(p.data(), p.size(), 0), Status::kOk);
    EXPECT_EQ(Bytes(p.begin() + 16, p.end()), plaintext);
  }
}

struct PythonVector {
  const char* name;
  uint8_t encAlg;
  uint8_t authAlg;
  const char* encKey;
  const char* authKey;
  bool esn;
  uint64_t seq;
  const char* iv;
  const char* plaintext;  // payload with trailer
  const char* esp;
};

constexpr PythonVector kPython[] = {
#include "python_vectors.inc"
};

TEST(PythonCryptographyVectors, SealAndOpenEveryOne) {
  for (const PythonVector& v : kPython) {
    SCOPED_TRACE(v.name);
    const Bytes encKey = fromHex(v.encKey), authKey = fromHex(v.authKey), iv = fromHex(v.iv);
    const Bytes plaintext = fromHex(v.plaintext), expected = fromHex(v.esp);
    std::string error;
    auto t = makeTransform({v.encAlg, v.authAlg, encKey, authKey, v.esn, true}, &error);
    ASSERT_TRUE(t) << error;
    ASSERT_EQ(expected.size(), 8 + t->ivLength() + plaintext.size() + t->icvLength());
    const uint32_t seqHigh = static_cast<uint32_t>(v.seq >> 32);
    Bytes p(expected.size(), 0);
    std::copy(expected.begin(), expected.begin() + 8, p.begin());
    std::copy(plaintext.begin(), plaintext.end(), p.begin() + 8 + t->ivLength());
    ASSERT_EQ(t->sealWithIv(p.data(), p.size(), seqHigh, iv.data()), Status::kOk);
    EXPECT_EQ(p, expected);
    ASSERT_EQ(t->open(p.data(), p.size(), seqHigh), Status::kOk);
    EXPECT_TRUE(std::equal(plaintext.begin(), plaintext.end(), p.begin() + 8 + t->ivLength()));
    Bytes bad = expected;
    bad[8 + t->ivLength()] ^= 4;
    EXPECT_EQ(t->open(bad.data(), bad.size(), seqHigh), Status::kBadIcv);
    if (v.esn) {
      Bytes again = expected;
      EXPECT_EQ(t->open(again.data(), again.size(), seqHigh + 1), Status::kBadIcv);
    }
  }
}

}  // namespace
}  // namespace ipsec::cryptodrv
