// libFuzzer target: the AH input path on untrusted bytes, as ipsec-forwarder
// runs it: locate() before the SA lookup, then save the headers,
// canonicalise() with each real ICV length, restore; and the transport-mode
// insertion point. The first input byte picks the ICV length.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "ah/ah.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ipsec::ah;
  if (size == 0) return 0;
  static constexpr size_t kIcv[] = {12, 16, 24, 32};
  const size_t icv = kIcv[data[0] % 4];
  std::vector<uint8_t> packet(data + 1, data + size);
  const AhLocation loc = locate(packet);
  if (loc.ok()) {
    if (loc.icvOffset + 0 > loc.packetLength || loc.packetLength > packet.size()) __builtin_trap();
    if (loc.ahOffset + loc.header.length() > loc.packetLength) __builtin_trap();
  }
  SavedHeaders saved;
  const bool didSave = loc.ok() && saved.save(packet, loc.ahOffset);
  const AhLocation c = canonicalise(packet, icv, true);
  if (c.ok()) {
    if (c.icvOffset + icv > c.packetLength) __builtin_trap();
    if (didSave) {
      saved.restore(packet);
      // Everything but the ICV is back as received.
      if (std::memcmp(packet.data(), data + 1, c.icvOffset) != 0) __builtin_trap();
    }
  }
  (void)toString(c.error);
  const InsertionPoint ip = findInsertionPoint({data + 1, size - 1});
  if (ip.ok() && (ip.offset > size - 1 || ip.nextHeaderOffset >= ip.offset)) __builtin_trap();
  return 0;
}
