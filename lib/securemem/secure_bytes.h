// Key bytes in locked, never-dumped memory: a copy held in a slot of the
// process-wide KeySlab (guard-paged, mlock'ed chunks, MADV_DONTDUMP), wiped
// when the value is destroyed, reset or assigned over. Move-only: a key has
// one owner. The one type for ipsec-keydb (the SAD's keys) and ipsec-crypto
// (lib/cryptodrv's key copies and key-derived state).
//
// Construction copies and may throw std::bad_alloc when the slab cannot grow
// (RLIMIT_MEMLOCK or its budget): keydb answers that ADD with ENOMEM, the
// broker refuses the session. Slots are aligned to their size class (16
// bytes at least), enough for libsodium's AES-GCM state.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace ipsec::securemem {

// Calls sodium_init() once per process; throws std::runtime_error if it fails.
void ensureSodiumInitialized();

class SecureBytes {
 public:
  // No key: data() is nullptr, size() 0.
  SecureBytes() = default;
  // Copies bytes. An empty key takes no slot, yet its data() is not nullptr:
  // OpenSSL reads a null key as "keep the old one".
  explicit SecureBytes(std::span<const std::uint8_t> bytes);
  SecureBytes(SecureBytes&& other) noexcept;
  // Wipes what this held before taking other's key.
  SecureBytes& operator=(SecureBytes&& other) noexcept;
  SecureBytes(const SecureBytes&) = delete;
  SecureBytes& operator=(const SecureBytes&) = delete;
  ~SecureBytes() { reset(); }

  const std::uint8_t* data() const noexcept { return data_; }
  // For state derived from a key in place (an expanded key schedule).
  std::uint8_t* mutableData() noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  std::span<const std::uint8_t> bytes() const noexcept { return {data_, size_}; }

  // Wipes and frees the key; afterwards as default-constructed.
  void reset() noexcept;

 private:
  bool ownsSlot() const noexcept { return data_ != nullptr && size_ != 0; }

  std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace ipsec::securemem
