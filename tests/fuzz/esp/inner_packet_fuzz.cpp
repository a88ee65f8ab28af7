// libFuzzer target: parseInnerPacket on untrusted bytes (IPv4/IPv6 headers
// and IPv6 extension header chains), as ipsec-forwarder runs it on packets
// from TUN and on decapsulated packets.
#include <cstddef>
#include <cstdint>
#include <span>

#include "esp/ip.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto key = ipsec::esp::parseInnerPacket(std::span<const uint8_t>(data, size));
  if (key) {
    if (key->version != 4 && key->version != 6) __builtin_trap();
    if (key->src.family() != key->dst.family()) __builtin_trap();
    (void)key->src.toString();
  }
  return 0;
}
