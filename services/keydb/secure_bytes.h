// ipsec-keydb: key bytes in guarded, locked memory (sodium_malloc: guard
// pages, mlock, canary), wiped and freed on destruction. Move-only.
#pragma once

#include <sodium.h>

#include <cstdint>
#include <cstring>
#include <new>
#include <span>
#include <utility>

namespace ipsec::keydb {

class SecureBytes {
 public:
  SecureBytes() = default;
  explicit SecureBytes(std::span<const std::uint8_t> bytes) : size_(bytes.size()) {
    if (size_ == 0) return;
    data_ = static_cast<std::uint8_t*>(sodium_malloc(size_));
    if (!data_) throw std::bad_alloc();
    std::memcpy(data_, bytes.data(), size_);
  }
  SecureBytes(SecureBytes&& o) noexcept : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  SecureBytes& operator=(SecureBytes&& o) noexcept {
    if (this != &o) {
      reset();
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  SecureBytes(const SecureBytes&) = delete;
  SecureBytes& operator=(const SecureBytes&) = delete;
  ~SecureBytes() { reset(); }

  std::span<const std::uint8_t> bytes() const { return {data_, size_}; }
  std::size_t size() const { return size_; }

  void reset() {
    if (data_) sodium_free(data_);  // sodium_free wipes before unmapping
    data_ = nullptr;
    size_ = 0;
  }

 private:
  std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace ipsec::keydb
