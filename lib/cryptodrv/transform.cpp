// Status names and the IV-in-buffer form of seal (see transform.h).
// Runs only in ipsec-crypto.
#include "cryptodrv/transform.h"

#include <cstring>

namespace ipsec::cryptodrv {

std::string_view toString(Status status) noexcept {
  switch (status) {
    case Status::kOk: return "ok";
    case Status::kBadIcv: return "bad_icv";
    case Status::kBadLength: return "bad_length";
    case Status::kInternal: return "internal";
  }
  return "unknown";
}

Status Transform::seal(uint8_t* esp, size_t len, uint32_t seqHigh) noexcept {
  const size_t ivLen = ivLength();
  if (esp == nullptr || ivLen > kMaxIvLength || len < 8 + ivLen) return Status::kBadLength;
  // One read of the IV into private memory; sealWithIv uses only this copy.
  uint8_t iv[kMaxIvLength];
  std::memcpy(iv, esp + 8, ivLen);
  return sealWithIv(esp, len, seqHigh, iv);
}

}  // namespace ipsec::cryptodrv
