// libFuzzer target: a UDP payload on the NAT-T port, as ipsec-forwarder
// classifies it (RFC 3948 §2), and then, for ESP, parsed as the ESP header it
// must start with. Checks the classification's promises. The same bytes are
// also taken as a UDP_GRO datagram (lib/esp/udp_gro), with a control message
// made of the first bytes, split as the forwarder splits it: the segments
// must tile the datagram exactly, and each is classified on its own.
#include <sys/socket.h>
#include <netinet/udp.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "esp/esp.h"
#include "esp/udp_encap.h"
#include "esp/udp_gro.h"

namespace {

using namespace ipsec::esp;

void checkKind(std::span<const uint8_t> payload) {
  const UdpPayloadKind kind = classifyUdpPayload(payload);
  const uint8_t* data = payload.data();
  const size_t size = payload.size();
  switch (kind) {
    case UdpPayloadKind::kKeepalive:
      if (size != 1 || data[0] != kNatKeepalive) __builtin_trap();
      break;
    case UdpPayloadKind::kIke:
      if (size < 4 || data[0] || data[1] || data[2] || data[3]) __builtin_trap();
      break;
    case UdpPayloadKind::kEsp: {
      // ESP from UDP always has a header to parse and a non-zero SPI.
      const HeaderResult h = parseHeader(payload);
      if (!h.ok() || h.header.spi == 0) __builtin_trap();
      break;
    }
    case UdpPayloadKind::kBad:
      if (size >= kEspHeaderLength && (data[0] | data[1] | data[2] | data[3]) != 0) __builtin_trap();
      break;
  }
  (void)toString(kind);
}

// The first bytes as the control space recvmmsg filled: a UDP_GRO message
// whose length and value come from the input (possibly cut or negative).
GroControl controlFrom(const uint8_t* data, size_t size) {
  std::array<char, CMSG_SPACE(sizeof(int)) * 2> space{};
  msghdr m{};
  m.msg_control = space.data();
  if (size < 6) return parseGroControl(m);
  const size_t dataLen = data[0] % (sizeof(int) + 1);
  int value = 0;
  std::memcpy(&value, data + 1, sizeof value);
  m.msg_controllen = CMSG_SPACE(dataLen);
  cmsghdr* c = CMSG_FIRSTHDR(&m);
  c->cmsg_level = SOL_UDP;
  c->cmsg_type = UDP_GRO;
  c->cmsg_len = CMSG_LEN(dataLen);
  std::memcpy(CMSG_DATA(c), &value, dataLen);
  if (data[5] & 1) m.msg_flags = MSG_CTRUNC;
  return parseGroControl(m);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> payload(data, size);
  checkKind(payload);

  const GroControl ctl = controlFrom(data, size);
  const GroSplit s = splitGro(size, ctl);
  (void)toString(s.error);
  if (!s.ok()) {
    if (s.count != 0) __builtin_trap();
    return 0;
  }
  if (s.count == 0 || s.count > kMaxGroSegments || s.length != size) __builtin_trap();
  size_t covered = 0;
  for (size_t i = 0; i < s.count; ++i) {
    const uint32_t off = s.offset(i), len = s.segmentLength(i);
    if (off != covered || len > s.segmentSize || (i + 1 < s.count && len != s.segmentSize)) __builtin_trap();
    if (s.count > 1 && len == 0) __builtin_trap();
    checkKind(payload.subspan(off, len));
    covered += len;
  }
  if (covered != size) __builtin_trap();
  return 0;
}
