// The algorithm names setkey(8) accepts and their Linux PF_KEY ids and key
// sizes: the algorithms the crypto broker's drivers run (lib/cryptodrv/
// algorithms.cpp), plus camellia-cbc for Linux-like services. Client side
// only (the setkey tool); the service
// decides what it really offers through its REGISTER reply, which the tool
// checks too (3des-cbc and hmac-md5 only appear there when the service has
// net.inet.ipsec.allow_legacy set).
#pragma once

#include <linux/pfkeyv2.h>

#include <array>
#include <cstdint>
#include <span>
#include <string_view>

#include "cryptodrv/algorithm_ids.h"

namespace ipsec::setkey {

// The ids Linux lacks are defined once, for setkey, ipsec-policy and the
// crypto drivers alike, in the header-only cryptodrv/algorithm_ids.h:
// ChaCha20-Poly1305 is 28 (its IKEv2 transform id), AES-CMAC-96 is 250.
using cryptodrv::kSadbXAalgAesCmac96;
using cryptodrv::kSadbXEalgChacha20Poly1305;

enum class AlgKind : uint8_t { kEncrypt, kAuth, kCompress };

struct Algorithm {
  std::string_view name;
  AlgKind kind;
  uint8_t id;
  // Accepted key sizes in bits; empty for algorithms that take no key.
  std::array<uint16_t, 3> keyBitsStore;
  uint8_t keyBitsCount;
  bool aead;  // integrity included: -A must not be given with it

  std::span<const uint16_t> keyBits() const noexcept { return {keyBitsStore.data(), keyBitsCount}; }
  bool takesKey() const noexcept { return keyBitsCount != 0; }
  bool acceptsKeyBits(uint32_t bits) const noexcept;
};

// Looks a name up (e.g. "aes-gcm-16", "rijndael-cbc"); nullptr if unknown.
const Algorithm* findAlgorithm(AlgKind kind, std::string_view name) noexcept;
// The canonical name of an id, for dumps ("aes-cbc"); nullptr if unknown.
const Algorithm* algorithmById(AlgKind kind, uint8_t id) noexcept;

}  // namespace ipsec::setkey
