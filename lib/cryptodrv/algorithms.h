// The ESP algorithms the crypto broker knows: one row per PF_KEY id with the
// wire layout (IV, ICV), the key length as PF_KEY carries it (salt or nonce
// included) and whether it is legacy. Drivers announce subsets of this table.
//
// Runs ONLY in ipsec-crypto (ipsec-policy mirrors the ids and key lengths in
// services/policy/algorithms.cpp; a unit test keeps the two equal).
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "cryptodrv/algorithm_ids.h"

namespace ipsec::cryptodrv {

enum class AlgorithmKind : uint8_t { kEncrypt, kAuth };

// One row of a SUPPORTED extension, plus what the broker needs itself.
struct AlgorithmInfo {
  AlgorithmKind kind = AlgorithmKind::kEncrypt;
  uint8_t id = 0;          // PF_KEY id (<linux/pfkeyv2.h>, algorithm_ids.h)
  uint8_t ivLength = 0;    // bytes on the wire (note: Linux reports 8 for AES-CBC)
  uint8_t icvLength = 0;   // bytes; AEADs carry theirs in the encryption row
  uint16_t minKeyBits = 0; // key as carried in PF_KEY, AEAD salt included
  uint16_t maxKeyBits = 0;
  std::string_view name{}; // setkey's name: "aes-gcm-16", "hmac-sha256"
  bool aead = false;       // authenticates itself: needs no authentication algorithm
  // 3DES-CBC, HMAC-MD5-96: refused unless TransformSpec::allowLegacy (the
  // sysctl net.inet.ipsec.allow_legacy).
  bool legacy = false;
};

// Every algorithm of this build, encryption rows first, each kind by id.
std::span<const AlgorithmInfo> knownAlgorithms() noexcept;
// nullptr if the id is unknown for that kind.
const AlgorithmInfo* findAlgorithm(AlgorithmKind kind, uint8_t id) noexcept;

}  // namespace ipsec::cryptodrv
