// One AH SA's keyed integrity state (RFC 4302), as the crypto broker's
// workers use it for the ring ops kAhSign and kAhVerify.
//
// Runs ONLY in ipsec-crypto. Holds the MAC key (OpenSSL's own cleansed copy;
// the MAC contexts are keyed once at creation). The packet lives in memory
// the forwarder shares: sign() may read it as it goes (the forwarder can
// only spoil its own packet), verify() reads it exactly once into private
// memory and never writes it. The forwarder has canonicalised the packet
// (lib/ah) before either call: the broker takes the mutable fields as given
// and itself treats the ICV field as zero.
//
// Algorithms: HMAC-SHA1-96 (RFC 2404), HMAC-SHA2-256-128/-384-192/-512-256
// (RFC 4868), AES-XCBC-MAC-96 (RFC 3566), AES-CMAC-96 (RFC 4494), and
// HMAC-MD5-96 (RFC 2403, legacy: refused unless allowLegacy). With ESN the
// high 32 bits of the sequence number follow the packet in the MAC input
// (RFC 4302 §2.5.1 and Appendix B). Not thread-safe: one per worker.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "cryptodrv/mac.h"
#include "cryptodrv/transform.h"

namespace ipsec::cryptodrv {

class AhTransform {
 public:
  // spec.authAlg and spec.authKey; spec.encAlg must be 0 (SADB_EALG_NONE)
  // with no encryption key; spec.esn; spec.allowLegacy. nullptr and *error
  // (if non-null) on an unknown algorithm, a bad key length, or a legacy
  // algorithm that is not allowed. Control plane: may allocate.
  static std::unique_ptr<AhTransform> create(const TransformSpec& spec, std::string* error);

  AhTransform(const AhTransform&) = delete;
  AhTransform& operator=(const AhTransform&) = delete;

  uint8_t icvLength() const noexcept { return icvLength_; }
  bool esn() const noexcept { return esn_; }
  // "openssl:ah-hmac-sha256", for logs.
  std::string_view name() const noexcept { return name_; }

  // packet[0, len) is the canonicalised IP packet; the ICV field is
  // [icvOffset, icvOffset + icvLength()). MACs the packet with that field
  // as zeros (whatever it holds), then the ESN high bits, and writes the
  // truncated ICV there. kBadLength if the field does not fit or len is
  // above Transform::kMaxPacketLength.
  Status sign(uint8_t* packet, size_t len, size_t icvOffset, uint32_t seqHigh) noexcept;

  // Copies packet[0, len) once, takes the received ICV from the copy, zeroes
  // it there, MACs, and compares in constant time. kBadIcv on mismatch. The
  // packet is not modified.
  Status verify(const uint8_t* packet, size_t len, size_t icvOffset, uint32_t seqHigh) noexcept;

 private:
  AhTransform(std::unique_ptr<Mac> mac, uint8_t icvLength, bool esn, std::string name)
      : mac_(std::move(mac)), icvLength_(icvLength), esn_(esn), name_(std::move(name)) {}
  bool fits(size_t len, size_t icvOffset) const noexcept;
  bool macOf(const uint8_t* packet, size_t len, size_t icvOffset, uint32_t seqHigh, uint8_t* out) noexcept;

  std::unique_ptr<Mac> mac_;
  uint8_t icvLength_;
  bool esn_;
  std::string name_;
};

}  // namespace ipsec::cryptodrv
