// The OpenSSL transforms keep one keyed context per direction for the SA's
// life and give it only a new IV, AAD, data and tag per packet. These tests
// prove that nothing leaks from one packet into the next: one transform
// seals and one opens a long run of packets of different lengths, IVs and
// ESN high halves, and each packet must equal what an independent
// implementation makes of it on its own (a fresh EVP context keyed for that
// one packet, OpenSSL's one-shot HMAC() and EVP_Q_mac(), libsodium for
// ChaCha20-Poly1305).
// Between good packets, tampered ones are refused, and the next good one
// must still open: a failed verification must not leave the context stuck.
#include <gtest/gtest.h>
#include <linux/pfkeyv2.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sodium.h>

#include <random>
#include <string>
#include <vector>

#include "cryptodrv/driver.h"

namespace ipsec::cryptodrv {
namespace {

using Bytes = std::vector<uint8_t>;

constexpr size_t kHeader = 8;

struct EspParts {
  Bytes header;     // SPI || seq-low
  Bytes iv;         // as it goes on the wire
  Bytes plaintext;  // payload .. next header, padded
  uint32_t seqHigh;
};

// AAD of RFC 4106 §5 / RFC 7634 §2.1 from the parts.
Bytes aadOf(const EspParts& p, bool esn) {
  Bytes aad(p.header.begin(), p.header.begin() + 4);
  if (esn)
    for (int shift = 24; shift >= 0; shift -= 8) aad.push_back(static_cast<uint8_t>(p.seqHigh >> shift));
  aad.insert(aad.end(), p.header.begin() + 4, p.header.end());
  return aad;
}

// An AEAD ESP packet made by a context keyed for this one packet, through
// the ordinary EVP calls: header || IV || ciphertext || tag.
Bytes evpAeadPacket(const EVP_CIPHER* cipher, const Bytes& keymat, size_t salt, size_t icv, bool ccm,
                    const EspParts& p, bool esn) {
  Bytes nonce(keymat.end() - static_cast<std::ptrdiff_t>(salt), keymat.end());
  nonce.insert(nonce.end(), p.iv.begin(), p.iv.end());
  const Bytes aad = aadOf(p, esn);
  Bytes out = p.header;
  out.insert(out.end(), p.iv.begin(), p.iv.end());
  Bytes body(p.plaintext.size() + icv);
  EVP_CIPHER_CTX* c = EVP_CIPHER_CTX_new();
  int n = 0;
  bool ok = EVP_EncryptInit_ex(c, cipher, nullptr, nullptr, nullptr) == 1 &&
            EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_IVLEN, static_cast<int>(nonce.size()), nullptr) == 1 &&
            (!ccm || EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_TAG, static_cast<int>(icv), nullptr) == 1) &&
            EVP_EncryptInit_ex(c, nullptr, nullptr, keymat.data(), nonce.data()) == 1 &&
            (!ccm || EVP_EncryptUpdate(c, nullptr, &n, nullptr, static_cast<int>(p.plaintext.size())) == 1) &&
            EVP_EncryptUpdate(c, nullptr, &n, aad.data(), static_cast<int>(aad.size())) == 1 &&
            EVP_EncryptUpdate(c, body.data(), &n, p.plaintext.data(), static_cast<int>(p.plaintext.size())) == 1 &&
            EVP_EncryptFinal_ex(c, body.data() + n, &n) == 1 &&
            EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, static_cast<int>(icv), body.data() + p.plaintext.size()) == 1;
  EVP_CIPHER_CTX_free(c);
  EXPECT_TRUE(ok) << EVP_CIPHER_get0_name(cipher);
  out.insert(out.end(), body.begin(), body.end());
  return out;
}

// ChaCha20-Poly1305 by libsodium (RFC 7634: nonce = salt || IV).
Bytes sodiumChachaPacket(const Bytes& keymat, const EspParts& p, bool esn) {
  Bytes nonce(keymat.begin() + 32, keymat.end());
  nonce.insert(nonce.end(), p.iv.begin(), p.iv.end());
  const Bytes aad = aadOf(p, esn);
  Bytes out = p.header;
  out.insert(out.end(), p.iv.begin(), p.iv.end());
  Bytes body(p.plaintext.size() + 16);
  unsigned long long tagLength = 0;
  EXPECT_EQ(crypto_aead_chacha20poly1305_ietf_encrypt_detached(
                body.data(), body.data() + p.plaintext.size(), &tagLength, p.plaintext.data(), p.plaintext.size(),
                aad.data(), aad.size(), nullptr, nonce.data(), keymat.data()),
            0);
  out.insert(out.end(), body.begin(), body.end());
  return out;
}

enum class Integrity { kHmacSha256, kAesCmac };

// AES-CBC or AES-CTR (RFC 3686 counter block) by a fresh EVP context, then
// HMAC-SHA-256-128 by OpenSSL's one-shot HMAC() (RFC 4868) or AES-CMAC-96
// by its one-shot EVP_Q_mac (RFC 4494).
Bytes evpCipherMacPacket(bool ctr, const Bytes& encKey, const Bytes& authKey, const EspParts& p, bool esn,
                         Integrity integrity) {
  Bytes start = p.iv;
  const EVP_CIPHER* cipher = EVP_aes_128_cbc();
  if (ctr) {
    cipher = EVP_aes_128_ctr();
    start.assign(encKey.begin() + 16, encKey.end());
    start.insert(start.end(), p.iv.begin(), p.iv.end());
    start.insert(start.end(), {0, 0, 0, 1});
  }
  Bytes out = p.header;
  out.insert(out.end(), p.iv.begin(), p.iv.end());
  Bytes body(p.plaintext.size() + 16);
  EVP_CIPHER_CTX* c = EVP_CIPHER_CTX_new();
  int n = 0, m = 0;
  const bool ok = EVP_EncryptInit_ex(c, cipher, nullptr, encKey.data(), start.data()) == 1 &&
                  EVP_CIPHER_CTX_set_padding(c, 0) == 1 &&
                  EVP_EncryptUpdate(c, body.data(), &n, p.plaintext.data(),
                                    static_cast<int>(p.plaintext.size())) == 1 &&
                  EVP_EncryptFinal_ex(c, body.data() + n, &m) == 1;
  EVP_CIPHER_CTX_free(c);
  EXPECT_TRUE(ok);
  out.insert(out.end(), body.begin(), body.begin() + n + m);
  Bytes covered = out;
  if (esn)
    for (int shift = 24; shift >= 0; shift -= 8) covered.push_back(static_cast<uint8_t>(p.seqHigh >> shift));
  uint8_t mac[EVP_MAX_MD_SIZE];
  if (integrity == Integrity::kHmacSha256) {
    unsigned int macLength = 0;
    HMAC(EVP_sha256(), authKey.data(), static_cast<int>(authKey.size()), covered.data(), covered.size(), mac,
         &macLength);
    out.insert(out.end(), mac, mac + 16);
  } else {
    size_t macLength = 0;
    EXPECT_TRUE(EVP_Q_mac(nullptr, "CMAC", nullptr, "AES-128-CBC", nullptr, authKey.data(), authKey.size(),
                          covered.data(), covered.size(), mac, sizeof mac, &macLength));
    out.insert(out.end(), mac, mac + 12);
  }
  return out;
}

struct Case {
  const char* name;
  uint8_t encAlg;
  uint8_t authAlg;
  size_t encKeyLength;
  size_t authKeyLength;
  // The independent implementation of one packet.
  Bytes (*reference)(const Bytes& encKey, const Bytes& authKey, const EspParts& p, bool esn);
};

const Case kCases[] = {
    {"aes-gcm-16-128", SADB_X_EALG_AES_GCM_ICV16, SADB_AALG_NONE, 20, 0,
     [](const Bytes& k, const Bytes&, const EspParts& p, bool esn) {
       return evpAeadPacket(EVP_aes_128_gcm(), k, 4, 16, false, p, esn);
     }},
    {"aes-gcm-8-128", SADB_X_EALG_AES_GCM_ICV8, SADB_AALG_NONE, 20, 0,
     [](const Bytes& k, const Bytes&, const EspParts& p, bool esn) {
       return evpAeadPacket(EVP_aes_128_gcm(), k, 4, 8, false, p, esn);
     }},
    {"aes-gcm-16-256", SADB_X_EALG_AES_GCM_ICV16, SADB_AALG_NONE, 36, 0,
     [](const Bytes& k, const Bytes&, const EspParts& p, bool esn) {
       return evpAeadPacket(EVP_aes_256_gcm(), k, 4, 16, false, p, esn);
     }},
    {"aes-ccm-16-128", SADB_X_EALG_AES_CCM_ICV16, SADB_AALG_NONE, 19, 0,
     [](const Bytes& k, const Bytes&, const EspParts& p, bool esn) {
       return evpAeadPacket(EVP_aes_128_ccm(), k, 3, 16, true, p, esn);
     }},
    {"chacha20-poly1305", kSadbXEalgChacha20Poly1305, SADB_AALG_NONE, 36, 0,
     [](const Bytes& k, const Bytes&, const EspParts& p, bool esn) { return sodiumChachaPacket(k, p, esn); }},
    {"aes-cbc-128+hmac-sha256", SADB_X_EALG_AESCBC, SADB_X_AALG_SHA2_256HMAC, 16, 32,
     [](const Bytes& k, const Bytes& a, const EspParts& p, bool esn) {
       return evpCipherMacPacket(false, k, a, p, esn, Integrity::kHmacSha256);
     }},
    {"aes-ctr-128+hmac-sha256", SADB_X_EALG_AESCTR, SADB_X_AALG_SHA2_256HMAC, 20, 32,
     [](const Bytes& k, const Bytes& a, const EspParts& p, bool esn) {
       return evpCipherMacPacket(true, k, a, p, esn, Integrity::kHmacSha256);
     }},
    {"aes-cbc-128+aes-cmac", SADB_X_EALG_AESCBC, kSadbXAalgAesCmac96, 16, 16,
     [](const Bytes& k, const Bytes& a, const EspParts& p, bool esn) {
       return evpCipherMacPacket(false, k, a, p, esn, Integrity::kAesCmac);
     }},
};

class ContextReuse : public testing::TestWithParam<Case> {};

// 200 packets through one sealing and one opening transform, each checked
// against the reference; every third packet is first offered tampered (tag,
// ciphertext or ESN high half), which must fail and leave the packet as it
// was, and the good packet right after must open.
TEST_P(ContextReuse, EachPacketOfALongRunMatchesAFreshIndependentImplementation) {
  ASSERT_GE(sodium_init(), 0);
  const Case& c = GetParam();
  std::mt19937_64 rng(0x5eed + c.encAlg + c.authAlg);
  auto bytes = [&](size_t n) {
    Bytes b(n);
    for (auto& x : b) x = static_cast<uint8_t>(rng());
    return b;
  };
  for (const bool esn : {false, true}) {
    SCOPED_TRACE(std::string(c.name) + (esn ? " esn" : ""));
    const Bytes encKey = bytes(c.encKeyLength), authKey = bytes(c.authKeyLength);
    const TransformSpec spec{c.encAlg, c.authAlg, encKey, authKey, esn};
    const auto registry = DriverRegistry::withDefaultDrivers();
    const Driver* openssl = registry.driver("openssl");
    ASSERT_NE(openssl, nullptr);
    std::string error;
    auto sealer = openssl->create(spec, &error);
    auto opener = openssl->create(spec, &error);
    ASSERT_TRUE(sealer && opener) << error;
    for (int packet = 0; packet < 200; ++packet) {
      // Lengths from one block to a jumbo frame, the largest now and then.
      const size_t blocks = packet % 50 == 49 ? 4000 : 1 + rng() % 600;
      const EspParts parts{bytes(kHeader), bytes(sealer->ivLength()), bytes(blocks * sealer->padAlign()),
                           static_cast<uint32_t>(rng())};
      const Bytes expected = c.reference(encKey, authKey, parts, esn);
      Bytes p = parts.header;
      p.insert(p.end(), parts.iv.size(), 0);
      p.insert(p.end(), parts.plaintext.begin(), parts.plaintext.end());
      p.insert(p.end(), sealer->icvLength(), 0);
      ASSERT_EQ(sealer->sealWithIv(p.data(), p.size(), parts.seqHigh, parts.iv.data()), Status::kOk);
      ASSERT_EQ(p, expected) << "packet " << packet << ", " << parts.plaintext.size() << " bytes";

      if (packet % 3 == 0) {
        Bytes bad = expected;
        uint32_t badHigh = parts.seqHigh;
        switch (packet % 9) {
          case 0: bad.back() ^= 0x40; break;                                   // the ICV
          case 3: bad[kHeader + parts.iv.size() + rng() % parts.plaintext.size()] ^= 1; break;  // ciphertext
          default: esn ? void(badHigh ^= 0x100) : void(bad[kHeader] ^= 2); break;  // ESN high half or IV
        }
        const Bytes asOffered = bad;
        ASSERT_EQ(opener->open(bad.data(), bad.size(), badHigh), Status::kBadIcv) << "packet " << packet;
        ASSERT_EQ(bad, asOffered) << "a refused packet is left as received";
      }
      ASSERT_EQ(opener->open(p.data(), p.size(), parts.seqHigh), Status::kOk) << "packet " << packet;
      const auto at = static_cast<std::ptrdiff_t>(kHeader + parts.iv.size());
      ASSERT_EQ(Bytes(p.begin() + at, p.begin() + at + static_cast<std::ptrdiff_t>(parts.plaintext.size())),
                parts.plaintext)
          << "packet " << packet;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(OpenSsl, ContextReuse, testing::ValuesIn(kCases), [](const auto& info) {
  std::string name = info.param.name;
  for (char& ch : name)
    if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return name;
});

}  // namespace
}  // namespace ipsec::cryptodrv
