// libFuzzer target: inbound IPComp on untrusted bytes, as ipsec-forwarder
// runs it: decompressInPlace into a pool-sized buffer with a small limit (so
// that bombs are found quickly), then a plain decompress into a short span.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "ipcomp/ipcomp.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ipsec::ipcomp;
  static Decompressor decompressor(8192);
  static std::vector<uint8_t> buffer(16384);
  if (size > buffer.size() - 64) return 0;
  std::memcpy(buffer.data() + 64, data, size);
  const DecompressResult r = decompressor.decompressInPlace(buffer, 64, size);
  if (r.ok() && (r.offset != 64 || r.length > decompressor.limit())) __builtin_trap();
  if (!r.ok() && std::memcmp(buffer.data() + 64, data, size) != 0) __builtin_trap();  // unchanged on failure
  uint8_t small[100];
  const DecompressResult s = decompressor.decompress({data, size}, small);
  if (s.ok() && s.length > sizeof small) __builtin_trap();
  (void)toString(s.error);
  return 0;
}
