// One SA's keyed crypto state, as the crypto broker's workers use it.
//
// Runs ONLY in ipsec-crypto. A Transform holds key material (in a slot of
// lib/securemem's locked key slab, wiped on destruction) and is created from keydb's keys by a Driver
// (driver.h). The data-path calls seal() and open() work in place on an ESP
// packet inside the shared packet pool; the forwarder wrote every byte of it,
// so lengths are checked here again and failures are results, not crashes.
//
// A Transform is not thread-safe: a session is pinned to one worker thread.
// seal()/open() are noexcept and allocate nothing after a direction's first
// packet (the OpenSSL transforms key each direction's context on its first
// use: an SA only seals or only opens; a failure there is kInternal).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace ipsec::cryptodrv {

enum class Status : uint8_t {
  kOk = 0,
  kBadIcv,      // open(): the ICV did not verify; nothing was decrypted
  kBadLength,   // too short for header + IV + ICV, or ciphertext not a block multiple
  kInternal,    // the crypto library failed (should not happen; count and drop)
};

// Stable snake_case name for counters (crypto_drop_<name>).
std::string_view toString(Status status) noexcept;

// What keydb hands the broker for one SA: PF_KEY algorithm ids as in
// <linux/pfkeyv2.h> and the keys as they arrived in SADB_EXT_KEY_ENCRYPT /
// SADB_EXT_KEY_AUTH. The spans are only read while the Transform is created.
struct TransformSpec {
  uint8_t encAlg = 0;   // SADB_EALG_* / SADB_X_EALG_* or algorithm_ids.h: NULL, AES-CBC, AES-GCM-16, ...
  uint8_t authAlg = 0;  // SADB_AALG_* / SADB_X_AALG_* or algorithm_ids.h: NONE for AEADs
  // AES-GCM, AES-GMAC, ChaCha20-Poly1305: key || 4-byte salt (RFC 4106 §8.1,
  // RFC 4543 §3.2, RFC 7634 §2); AES-CCM: key || 3-byte salt (RFC 4309 §7.1);
  // AES-CTR: key || 4-byte nonce (RFC 3686 §5.1).
  std::span<const uint8_t> encKey{};
  std::span<const uint8_t> authKey{};
  // Extended sequence numbers (RFC 4303 §2.2.1): fixed per SA, so it is part
  // of the spec; with esn == false seal()/open() ignore their seqHigh.
  bool esn = false;
  // Legacy algorithms (3DES-CBC, HMAC-MD5-96) are refused unless this is set.
  // The broker sets it from the sysctl net.inet.ipsec.allow_legacy.
  bool allowLegacy = false;
};

class Transform {
 public:
  virtual ~Transform() = default;
  Transform(const Transform&) = delete;
  Transform& operator=(const Transform&) = delete;

  // Bytes of IV after the 8-byte ESP header (0 for NULL encryption).
  virtual uint8_t ivLength() const noexcept = 0;
  // Bytes of ICV at the end of the packet (0 without integrity).
  virtual uint8_t icvLength() const noexcept = 0;
  // The encrypted part (payload..next header) is a multiple of this; >= 4.
  virtual uint8_t padAlign() const noexcept = 0;
  // True: the IV must merely never repeat under this key (GCM, CCM, CTR,
  // GMAC, ChaCha20-Poly1305), so the broker
  // takes it from its reserved counter. False: it must be unpredictable (CBC),
  // so the broker fills it from a CSPRNG.
  virtual bool ivIsCounter() const noexcept = 0;
  virtual bool esn() const noexcept = 0;
  // "driver:algorithms", for logs and stats.
  virtual std::string_view name() const noexcept = 0;

  static constexpr size_t kMaxIvLength = 16;
  // The largest ESP packet open() takes (an IP payload cannot be longer).
  static constexpr size_t kMaxPacketLength = 65535;

  // `esp` points at the ESP header and `len` covers header..ICV. Writes `iv`
  // (ivLength() bytes) at esp + 8, encrypts payload..next header in place and
  // writes the ICV. AEAD AAD (RFC 4106 §5): SPI || seq-low, or with ESN
  // SPI || seqHigh || seq-low. Encrypt-then-MAC: the ICV covers header..
  // ciphertext, followed by seqHigh with ESN (RFC 4303 §2.2.1).
  // The broker should use this form: the packet sits in memory the forwarder
  // shares, so an IV read back from there could have been changed under us,
  // and a repeated GCM nonce gives away the authentication key.
  virtual Status sealWithIv(uint8_t* esp, size_t len, uint32_t seqHigh, const uint8_t* iv) noexcept = 0;

  // As sealWithIv() with the IV already written at esp + 8 (read once).
  Status seal(uint8_t* esp, size_t len, uint32_t seqHigh) noexcept;

  // The inverse: verifies the ICV in constant time first and only then
  // writes plaintext. On any failure the packet is left as received. The
  // ciphertext is fetched from shared memory exactly once (copied to a
  // per-thread scratch buffer), so a forwarder changing it meanwhile cannot
  // get unverified ciphertext decrypted (no decryption oracle).
  virtual Status open(uint8_t* esp, size_t len, uint32_t seqHigh) noexcept = 0;

 protected:
  Transform() = default;
};

}  // namespace ipsec::cryptodrv
