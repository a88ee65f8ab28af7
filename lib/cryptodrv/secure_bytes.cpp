// Key copies in lib/securemem's slab (see secure_bytes.h). Runs only in ipsec-crypto.
#include "cryptodrv/secure_bytes.h"

#include <sodium.h>

#include <cstring>
#include <mutex>
#include <new>
#include <stdexcept>

#include "securemem/key_slab.h"

namespace ipsec::cryptodrv {

void ensureSodiumInitialized() {
  static std::once_flag once;
  static int result = -1;
  std::call_once(once, [] { result = sodium_init(); });
  if (result < 0) throw std::runtime_error("sodium_init failed");
}

SecureBytes::SecureBytes(std::span<const uint8_t> bytes) : size_(bytes.size()) {
  ensureSodiumInitialized();
  // An empty key still gets a (one-byte) slot: data() is never nullptr.
  data_ = securemem::KeySlab::process().allocate(bytes.size());
  if (data_ == nullptr) {
    size_ = 0;
    throw std::bad_alloc();
  }
  if (!bytes.empty()) std::memcpy(data_, bytes.data(), bytes.size());
}

SecureBytes::SecureBytes(SecureBytes&& other) noexcept : data_(other.data_), size_(other.size_) {
  other.data_ = nullptr;
  other.size_ = 0;
}

SecureBytes::~SecureBytes() {
  // The slab wipes the slot before it is reused.
  if (data_ != nullptr) securemem::KeySlab::process().deallocate(data_, size_);
}

}  // namespace ipsec::cryptodrv
