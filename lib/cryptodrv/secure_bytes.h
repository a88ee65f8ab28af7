// Key memory for ipsec-crypto: a copy of key bytes in a slot of
// lib/securemem's process-wide KeySlab (locked, guard-paged chunks, left out
// of core dumps), wiped when released. Slots are aligned to their size class
// (16 bytes at least), enough for libsodium's AES-GCM state.
//
// Runs ONLY in ipsec-crypto. Control plane: construction may throw.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace ipsec::cryptodrv {

// Calls sodium_init() once per process; throws std::runtime_error if it fails.
void ensureSodiumInitialized();

class SecureBytes {
 public:
  // Copies `bytes`; throws std::bad_alloc if the slab cannot grow.
  explicit SecureBytes(std::span<const uint8_t> bytes);
  ~SecureBytes();
  SecureBytes(const SecureBytes&) = delete;
  SecureBytes& operator=(const SecureBytes&) = delete;
  SecureBytes(SecureBytes&& other) noexcept;
  SecureBytes& operator=(SecureBytes&&) = delete;

  const uint8_t* data() const noexcept { return data_; }
  // For state derived from a key in place (an expanded key schedule).
  uint8_t* mutableData() noexcept { return data_; }
  size_t size() const noexcept { return size_; }
  std::span<const uint8_t> span() const noexcept { return {data_, size_}; }

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace ipsec::cryptodrv
