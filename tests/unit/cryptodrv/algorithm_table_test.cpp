// The three algorithm tables must agree with what the drivers run:
// ipsec-policy's REGISTER table (services/policy/algorithms.cpp, compiled
// into this test) lists exactly DriverRegistry::algorithms(), legacy rows
// only when allowed; setkey's name table (lib/setkey/algorithms.cpp) knows
// every algorithm under the driver's name, with the same id and key sizes.
#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "cryptodrv/driver.h"
#include "policy/algorithms.h"
#include "setkey/algorithms.h"

namespace ipsec::cryptodrv {
namespace {

void expectPolicyMirrors(AlgorithmKind kind, std::span<const policy::AlgorithmSpec> (*table)(bool)) {
  const auto drivers = DriverRegistry::withDefaultDrivers().algorithms(kind);
  for (bool allowLegacy : {false, true}) {
    std::vector<policy::AlgorithmSpec> rows(table(allowLegacy).begin(), table(allowLegacy).end());
    // KAME's "null" authentication is a policy-side spelling of "none".
    std::erase_if(rows, [](const policy::AlgorithmSpec& a) { return a.id == SADB_X_AALG_NULL; });
    size_t expected = 0;
    for (const AlgorithmInfo& d : drivers) {
      if (d.legacy && !allowLegacy) {
        EXPECT_TRUE(std::none_of(rows.begin(), rows.end(), [&](const auto& r) { return r.id == d.id; }))
            << d.name << " is legacy: not offered by default";
        continue;
      }
      ++expected;
      auto row = std::find_if(rows.begin(), rows.end(), [&](const auto& r) { return r.id == d.id; });
      ASSERT_NE(row, rows.end()) << d.name << " runs but ipsec-policy does not offer it";
      EXPECT_EQ(row->minBits, d.minKeyBits) << d.name;
      EXPECT_EQ(row->maxBits, d.maxKeyBits) << d.name;
      EXPECT_EQ(row->aead, d.aead) << d.name;
      EXPECT_EQ(row->legacy, d.legacy) << d.name;
      // Linux reports 8 for AES-CBC's IV; every other length is the wire's.
      if (d.id != SADB_X_EALG_AESCBC || kind == AlgorithmKind::kAuth) {
        EXPECT_EQ(row->ivLength, d.ivLength) << d.name;
      }
    }
    EXPECT_EQ(rows.size(), expected) << "ipsec-policy offers an algorithm no driver runs";
  }
}

TEST(AlgorithmTables, PolicyOffersExactlyWhatTheDriversRun) {
  expectPolicyMirrors(AlgorithmKind::kEncrypt, &policy::supportedEncrypt);
  expectPolicyMirrors(AlgorithmKind::kAuth, &policy::supportedAuth);
  EXPECT_EQ(policy::findEncrypt(SADB_EALG_3DESCBC), nullptr);
  EXPECT_NE(policy::findEncrypt(SADB_EALG_3DESCBC, true), nullptr);
  EXPECT_EQ(policy::findAuth(SADB_AALG_MD5HMAC), nullptr);
  EXPECT_NE(policy::findAuth(SADB_AALG_MD5HMAC, true), nullptr);
}

TEST(AlgorithmTables, SetkeyNamesEveryAlgorithmTheDriversRun) {
  const auto registry = DriverRegistry::withDefaultDrivers();
  for (auto [kind, setkeyKind] : {std::pair{AlgorithmKind::kEncrypt, setkey::AlgKind::kEncrypt},
                                  std::pair{AlgorithmKind::kAuth, setkey::AlgKind::kAuth}}) {
    for (const AlgorithmInfo& d : registry.algorithms(kind)) {
      const setkey::Algorithm* s = setkey::findAlgorithm(setkeyKind, d.name);
      ASSERT_NE(s, nullptr) << "setkey has no name " << d.name;
      EXPECT_EQ(s->id, d.id) << d.name;
      EXPECT_EQ(s->aead, d.aead) << d.name;
      EXPECT_EQ(setkey::algorithmById(setkeyKind, d.id), s) << d.name << " is the canonical name of its id";
      if (d.maxKeyBits == 0) {
        EXPECT_FALSE(s->takesKey()) << d.name;
        continue;
      }
      EXPECT_TRUE(s->acceptsKeyBits(d.minKeyBits)) << d.name;
      EXPECT_TRUE(s->acceptsKeyBits(d.maxKeyBits)) << d.name;
      for (uint16_t bits : s->keyBits()) {
        EXPECT_GE(bits, d.minKeyBits) << d.name;
        EXPECT_LE(bits, d.maxKeyBits) << d.name;
      }
    }
  }
}

TEST(AlgorithmTables, ProvisionalIdsAreOneConstant) {
  EXPECT_EQ(setkey::kSadbXEalgChacha20Poly1305, kSadbXEalgChacha20Poly1305);
  EXPECT_EQ(setkey::kSadbXAalgAesCmac96, kSadbXAalgAesCmac96);
  EXPECT_EQ(kSadbXEalgChacha20Poly1305, 28);
  EXPECT_EQ(kSadbXAalgAesCmac96, 250);
}

}  // namespace
}  // namespace ipsec::cryptodrv
