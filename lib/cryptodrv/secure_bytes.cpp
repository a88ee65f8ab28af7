// sodium_malloc-backed key copies (see secure_bytes.h). Runs only in ipsec-crypto.
#include "cryptodrv/secure_bytes.h"

#include <sodium.h>

#include <cstring>
#include <mutex>
#include <new>
#include <stdexcept>

namespace ipsec::cryptodrv {

void ensureSodiumInitialized() {
  static std::once_flag once;
  static int result = -1;
  std::call_once(once, [] { result = sodium_init(); });
  if (result < 0) throw std::runtime_error("sodium_init failed");
}

SecureBytes::SecureBytes(std::span<const uint8_t> bytes) : size_(bytes.size()) {
  ensureSodiumInitialized();
  // sodium_malloc(0) is allowed but may return nullptr; keep one byte instead.
  data_ = static_cast<uint8_t*>(sodium_malloc(bytes.empty() ? 1 : bytes.size()));
  if (data_ == nullptr) throw std::bad_alloc();
  if (!bytes.empty()) std::memcpy(data_, bytes.data(), bytes.size());
}

SecureBytes::SecureBytes(SecureBytes&& other) noexcept : data_(other.data_), size_(other.size_) {
  other.data_ = nullptr;
  other.size_ = 0;
}

SecureBytes::~SecureBytes() {
  // sodium_free zeroes the region before unmapping it.
  if (data_ != nullptr) sodium_free(data_);
}

}  // namespace ipsec::cryptodrv
