// The algorithms ipsec-policy advertises in REGISTER replies (SUPPORTED_AUTH,
// SUPPORTED_ENCRYPT) and checks SA adds against.
//
// Runs in ipsec-policy. This table MIRRORS lib/cryptodrv's algorithm table
// (lib/cryptodrv/algorithms.cpp, which the OpenSSL driver runs in full):
// policy does not link crypto code on purpose (it parses client bytes and
// should not carry the drivers), so when the broker learns or loses an
// algorithm, change this table with it. tests/unit/cryptodrv compiles this
// file and fails when the two differ. The ids that Linux lacks (ChaCha20-
// Poly1305, AES-CMAC-96) come from the header-only cryptodrv/algorithm_ids.h.
// setkey decides which algorithms and key sizes it accepts from this reply
// (PFKEY.md), so an entry here that the broker cannot run would only move the
// failure from the client to keydb's session set-up.
#pragma once

#include <linux/pfkeyv2.h>

#include <cstdint>
#include <span>

#include "cryptodrv/algorithm_ids.h"

namespace ipsec::policy {

struct AlgorithmSpec {
  std::uint8_t id;
  std::uint8_t ivLength;  // as Linux reports it in sadb_alg_ivlen
  std::uint16_t minBits;  // key length including any salt or nonce
  std::uint16_t maxBits;
  bool aead = false;    // authenticates itself: takes no authentication algorithm
  bool legacy = false;  // 3DES, HMAC-MD5: only with net.inet.ipsec.allow_legacy
};

// With allowLegacy false (the sysctl's default) the legacy rows are left out,
// so REGISTER does not offer them and an ADD naming one gets ENOSYS, as if
// the broker did not run it (it refuses them too unless told otherwise).
std::span<const AlgorithmSpec> supportedAuth(bool allowLegacy = false) noexcept;
std::span<const AlgorithmSpec> supportedEncrypt(bool allowLegacy = false) noexcept;

// nullptr if the broker does not run the algorithm.
const AlgorithmSpec* findAuth(std::uint8_t id, bool allowLegacy = false) noexcept;
const AlgorithmSpec* findEncrypt(std::uint8_t id, bool allowLegacy = false) noexcept;

}  // namespace ipsec::policy
