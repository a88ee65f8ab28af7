// Pieces every driver's transforms share: the ESP header size, the private
// per-thread copy of an inbound packet, AEAD AAD assembly, OpenSSL cipher
// fetches, and the per-driver transform factories.
//
// Internal to lib/cryptodrv; runs ONLY in ipsec-crypto.
#pragma once

#include <openssl/evp.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "cryptodrv/transform.h"

namespace ipsec::cryptodrv::detail {

inline constexpr size_t kEspHeader = 8;

// Private copy of an inbound packet, one per worker thread, so that a packet
// is read from shared memory once (Transform::kMaxPacketLength bytes).
uint8_t* packetScratch() noexcept;

inline void store32(uint8_t* p, uint32_t v) noexcept {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}

// AEAD AAD (RFC 4106 §5, RFC 4309 §5, RFC 7634 §2.1, the first part of
// RFC 4543's): SPI || seq-low, or SPI || seqHigh || seq-low with ESN, from a
// private copy of the header. Returns 8 or 12; `aad` holds 12 bytes.
size_t buildAad(const uint8_t* header, bool esn, uint32_t seqHigh, uint8_t* aad) noexcept;

// The provider's implementation of a built-in cipher (EVP_aes_128_gcm() and
// the like), fetched once per process (a fetch is a name lookup in the
// method store, under locks); provider_cipher.h finds its functions from it.
const EVP_CIPHER* fetchedCipher(const EVP_CIPHER* legacy) noexcept;

// True when the check passed; otherwise sets *error (if non-null).
bool fail(std::string* error, std::string why);

// OpenSSL AEADs: AES-GCM-8/12/16, AES-CCM-8/12/16, AES-GMAC, ChaCha20-Poly1305.
bool openSslRunsAead(uint8_t encAlg) noexcept;
std::unique_ptr<Transform> makeOpenSslAead(const TransformSpec& spec, std::string* error);

}  // namespace ipsec::cryptodrv::detail
