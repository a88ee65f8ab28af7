// ipsec-keydb: key bytes in locked, never-dumped memory (a slot of
// lib/securemem's process-wide KeySlab: guard-paged, mlock'ed chunks), wiped
// and freed on destruction. Move-only. Throws std::bad_alloc when the slab
// cannot grow (RLIMIT_MEMLOCK): keydb answers that ADD with ENOMEM.
#pragma once

#include "securemem/key_slab.h"

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
    data_ = securemem::KeySlab::process().allocate(size_);
    if (!data_) {
      size_ = 0;
      throw std::bad_alloc();
    }
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
    if (data_) securemem::KeySlab::process().deallocate(data_, size_);  // wipes the slot
    data_ = nullptr;
    size_ = 0;
  }

 private:
  std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace ipsec::keydb
