// The algorithm names setkey(8) accepts and their Linux PF_KEY ids and key
// sizes. Client side only (the setkey tool); the service decides what it
// really supports through its REGISTER reply, which the tool checks too.
#pragma once

#include <linux/pfkeyv2.h>

#include <array>
#include <cstdint>
#include <span>
#include <string_view>

namespace ipsec::setkey {

// ChaCha20-Poly1305 (RFC 7634) has no Linux PF_KEY id. PROVISIONAL: 28 is its
// IKEv2 transform id (Linux's AES-GCM ids 18-20 follow the IKEv2 ones too);
// a later issue pins the value together with ipsec-policy's SUPPORTED list.
inline constexpr uint8_t kSadbXEalgChacha20Poly1305 = 28;

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
