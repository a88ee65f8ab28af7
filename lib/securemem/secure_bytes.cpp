// See secure_bytes.h. Runs in ipsec-keydb and ipsec-crypto.
#include "securemem/secure_bytes.h"

#include <sodium.h>

#include <cstring>
#include <mutex>
#include <new>
#include <stdexcept>
#include <utility>

#include "securemem/key_slab.h"

namespace ipsec::securemem {
namespace {

// What an empty key points at: never read (its size is 0), never written.
std::uint8_t gNoBytes[1];

}  // namespace

void ensureSodiumInitialized() {
  static std::once_flag once;
  static int result = -1;
  std::call_once(once, [] { result = sodium_init(); });
  if (result < 0) throw std::runtime_error("sodium_init failed");
}

SecureBytes::SecureBytes(std::span<const std::uint8_t> bytes) : size_(bytes.size()) {
  if (size_ == 0) {
    data_ = gNoBytes;
    return;
  }
  data_ = KeySlab::process().allocate(size_);
  if (data_ == nullptr) {
    size_ = 0;
    throw std::bad_alloc();
  }
  std::memcpy(data_, bytes.data(), size_);
}

SecureBytes::SecureBytes(SecureBytes&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

SecureBytes& SecureBytes::operator=(SecureBytes&& other) noexcept {
  if (this != &other) {
    reset();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

void SecureBytes::reset() noexcept {
  if (ownsSlot()) KeySlab::process().deallocate(data_, size_);  // wipes the slot
  data_ = nullptr;
  size_ = 0;
}

}  // namespace ipsec::securemem
