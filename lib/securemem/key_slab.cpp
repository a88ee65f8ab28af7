// See key_slab.h. Runs in ipsec-keydb and ipsec-crypto.
#include "securemem/key_slab.h"

#include <sodium.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

namespace ipsec::securemem {

KeySlab::KeySlab() : KeySlab(Options{}) {}

KeySlab::KeySlab(Options options) : options_(options) {
  // sodium_malloc (slots above kMaxSlot) needs sodium_init; it is idempotent.
  if (sodium_init() < 0) std::abort();
  const long page = sysconf(_SC_PAGESIZE);
  if (page > 0) page_ = static_cast<std::size_t>(page);
  const std::size_t min = page_ > kMaxSlot ? page_ : kMaxSlot;
  if (options_.chunkBytes < min) options_.chunkBytes = min;
  options_.chunkBytes = (options_.chunkBytes + page_ - 1) / page_ * page_;
}

KeySlab::~KeySlab() {
  std::lock_guard lock(mutex_);
  for (auto& c : chunks_) {
    sodium_memzero(c.usable, c.usableBytes);
    munlock(c.usable, c.usableBytes);
    munmap(c.base, c.mapped);
  }
}

KeySlab& KeySlab::process() {
  // Never destroyed: a static object holding key memory may outlive it. At
  // exit every chunk is wiped; the mappings stay until the process ends.
  static KeySlab* slab = [] {
    auto* s = new KeySlab();
    std::atexit([] { KeySlab::process().wipeAll(); });
    return s;
  }();
  return *slab;
}

std::size_t KeySlab::classOf(std::size_t n) noexcept {
  std::size_t cls = 0;
  for (std::size_t size = kMinSlot; size < n; size <<= 1) ++cls;
  return cls;
}

// One more chunk for size class cls, its slots on the free list. The free
// list's capacity is reserved here so that deallocate never allocates.
bool KeySlab::grow(std::size_t cls) noexcept {
  const std::size_t slot = kMinSlot << cls;
  const std::size_t usable = options_.chunkBytes;
  if (options_.maxBytes != 0 && locked_ + usable > options_.maxBytes) return false;
  const std::size_t mapped = usable + 2 * page_;
  void* m = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) return false;
  Chunk c{static_cast<std::uint8_t*>(m), mapped, static_cast<std::uint8_t*>(m) + page_, usable};
  // Guard pages on both sides; the slots locked (never swapped) and left out
  // of core dumps (the processes are not dumpable either).
  const bool ok = mprotect(c.base, page_, PROT_NONE) == 0 &&
                  mprotect(c.usable + usable, page_, PROT_NONE) == 0 && mlock(c.usable, usable) == 0 &&
                  madvise(c.usable, usable, MADV_DONTDUMP) == 0;
  if (!ok) {
    munmap(m, mapped);
    return false;
  }
  const std::size_t count = usable / slot;
  try {
    free_[cls].reserve(slots_[cls] + count);  // every slot of the class can be free at once
    chunks_.push_back(c);
  } catch (...) {
    munlock(c.usable, usable);
    munmap(m, mapped);
    return false;
  }
  // Highest address first so that allocation hands out ascending slots.
  for (std::size_t i = count; i-- > 0;) free_[cls].push_back(c.usable + i * slot);
  slots_[cls] += count;
  locked_ += usable;
  return true;
}

std::uint8_t* KeySlab::allocate(std::size_t n) noexcept {
  if (n == 0) n = 1;
  if (n > kMaxSlot) {
    auto* p = static_cast<std::uint8_t*>(sodium_malloc(n));
    if (p != nullptr) {
      std::memset(p, 0, n);
      std::lock_guard lock(mutex_);
      ++inUse_;
    }
    return p;
  }
  const std::size_t cls = classOf(n);
  std::lock_guard lock(mutex_);
  if (free_[cls].empty() && !grow(cls)) return nullptr;
  std::uint8_t* p = free_[cls].back();
  free_[cls].pop_back();
  ++inUse_;
  return p;  // zero: fresh from mmap, or wiped when freed
}

void KeySlab::deallocate(std::uint8_t* p, std::size_t n) noexcept {
  if (p == nullptr) return;
  if (n == 0) n = 1;
  if (n > kMaxSlot) {
    sodium_free(p);  // wipes before unmapping
    std::lock_guard lock(mutex_);
    --inUse_;
    return;
  }
  const std::size_t cls = classOf(n);
  sodium_memzero(p, kMinSlot << cls);
  std::lock_guard lock(mutex_);
  free_[cls].push_back(p);  // capacity reserved in grow
  --inUse_;
}

void KeySlab::wipeAll() noexcept {
  std::lock_guard lock(mutex_);
  for (auto& c : chunks_) sodium_memzero(c.usable, c.usableBytes);
}

std::size_t KeySlab::lockedBytes() const {
  std::lock_guard lock(mutex_);
  return locked_;
}

std::size_t KeySlab::slotsInUse() const {
  std::lock_guard lock(mutex_);
  return inUse_;
}

bool KeySlab::isZeroForTest(const std::uint8_t* p, std::size_t n) const {
  std::lock_guard lock(mutex_);
  for (std::size_t i = 0; i < n; ++i)
    if (p[i] != 0) return false;
  return true;
}

}  // namespace ipsec::securemem
