// Key memory for ipsec-keydb and ipsec-crypto: a slab of fixed-size slots in
// locked (mlock), never-dumped (MADV_DONTDUMP), guard-paged chunks, with a
// free list per size class. Replaces one sodium_malloc per key, which costs
// three or four pages of address space, one locked page and several system
// calls per key: at 100 000 SAs that exceeded RLIMIT_MEMLOCK.
//
// What it keeps of sodium_malloc: keys never reach swap or a core dump, a
// slot is wiped when freed, and every chunk is wiped at exit (atexit). What
// it gives up: the guard pages and canary are per chunk, not per key, so an
// overrun from one key's slot reaches its neighbours (not other memory).
// Slots larger than kMaxSlot bytes still come from sodium_malloc.
//
// Thread-safe (a mutex): ipsec-crypto creates and destroys transforms on its
// control thread, but tests and drivers may not.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

namespace ipsec::securemem {

class KeySlab {
 public:
  static constexpr std::size_t kMinSlot = 16;    // also the least alignment of a slot
  static constexpr std::size_t kMaxSlot = 1024;  // larger requests: sodium_malloc
  static constexpr std::size_t kDefaultChunkBytes = 64 * 1024;

  struct Options {
    std::size_t chunkBytes = kDefaultChunkBytes;  // rounded up to whole pages
    std::size_t maxBytes = 0;  // locked bytes at most (0: only RLIMIT_MEMLOCK bounds it)
  };

  KeySlab();
  explicit KeySlab(Options options);
  // Wipes and unmaps every chunk. Slots still allocated must not be used after.
  ~KeySlab();
  KeySlab(const KeySlab&) = delete;
  KeySlab& operator=(const KeySlab&) = delete;

  // The process-wide slab (never destroyed; its chunks are wiped at exit).
  static KeySlab& process();

  // n bytes (1..), aligned to the slot size up to a page; nullptr when the
  // budget or the locked-memory limit is reached. Never throws. The slot's
  // bytes are zero.
  std::uint8_t* allocate(std::size_t n) noexcept;
  // Wipes the slot and puts it on its free list. n must be the size given
  // to allocate; nullptr is ignored.
  void deallocate(std::uint8_t* p, std::size_t n) noexcept;
  // Wipes every chunk (free and allocated slots alike); what atexit runs.
  void wipeAll() noexcept;

  std::size_t lockedBytes() const;   // chunk bytes mapped and locked
  std::size_t slotsInUse() const;
  // Test hook: reads a slot's bytes back (still mapped after deallocate):
  // true if the first n bytes at p are all zero.
  bool isZeroForTest(const std::uint8_t* p, std::size_t n) const;

 private:
  struct Chunk {
    std::uint8_t* base = nullptr;  // mapping start (a guard page)
    std::size_t mapped = 0;        // guard + usable + guard
    std::uint8_t* usable = nullptr;
    std::size_t usableBytes = 0;
  };
  static constexpr std::size_t kClasses = 7;  // 16, 32, ..., 1024
  static std::size_t classOf(std::size_t n) noexcept;
  bool grow(std::size_t cls) noexcept;

  Options options_;
  std::size_t page_ = 4096;
  mutable std::mutex mutex_;
  std::vector<Chunk> chunks_;
  std::vector<std::uint8_t*> free_[kClasses];
  std::size_t slots_[kClasses] = {};  // slots carved per class, free or not
  std::size_t locked_ = 0;
  std::size_t inUse_ = 0;
};

}  // namespace ipsec::securemem
