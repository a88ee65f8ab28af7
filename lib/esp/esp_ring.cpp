// See esp_ring.h.
#include "esp/esp_ring.h"

#include <linux/if_packet.h>
#include <netinet/in.h>

#include <cstring>

#include "checksum/internet.h"

namespace ipsec::esp {

std::array<sock_filter, 10> espRingFilter() noexcept {
  return {{
      // The packet's type: another host's (promiscuous) or our own going out → refuse
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, static_cast<std::uint32_t>(SKF_AD_OFF + SKF_AD_PKTTYPE)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, PACKET_OTHERHOST, 7, 0),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, PACKET_OUTGOING, 6, 0),
      // IPv4 ...
      BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 0),
      BPF_STMT(BPF_ALU | BPF_AND | BPF_K, 0xf0),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0x40, 0, 3),
      // ... protocol 50 → the whole packet (the frame bounds it)
      BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 9),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, IPPROTO_ESP, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, 0xffffffffu),
      BPF_STMT(BPF_RET | BPF_K, 0),
  }};
}

std::array<sock_filter, 1> dropAllFilter() noexcept { return {{BPF_STMT(BPF_RET | BPF_K, 0)}}; }

namespace {

std::uint16_t load16(const std::uint8_t* p) noexcept { return static_cast<std::uint16_t>(p[0] << 8 | p[1]); }

bool ipv4HeaderChecksumGood(std::span<const std::uint8_t> header) noexcept {
  return checksum::fold(checksum::add(0, header)) == 0xffff;
}

RingEsp failed(RingFrameError error) noexcept {
  RingEsp r;
  r.error = error;
  return r;
}

}  // namespace

RingEsp parseRingFrame(std::span<const std::uint8_t> frame) noexcept {
  tpacket2_hdr h;
  if (frame.size() < sizeof h) return failed(RingFrameError::kBadFrame);
  std::memcpy(&h, frame.data(), sizeof h);
  // SOCK_DGRAM: the packet starts at tp_net (tp_mac is the same offset).
  if (h.tp_net < sizeof h || h.tp_net > frame.size() || h.tp_snaplen > frame.size() - h.tp_net) {
    return failed(RingFrameError::kBadFrame);
  }
  if (h.tp_snaplen < h.tp_len) return failed(RingFrameError::kTruncated);
  const std::span<const std::uint8_t> bytes = frame.subspan(h.tp_net, h.tp_snaplen);
  if (bytes.size() < 20 || (bytes[0] >> 4) != 4) return failed(RingFrameError::kBadIp);
  const std::size_t ihl = (bytes[0] & 0x0fu) * 4u;
  const std::size_t total = load16(bytes.data() + 2);
  if (ihl < 20 || total < ihl || total > bytes.size()) return failed(RingFrameError::kBadIp);
  if (!ipv4HeaderChecksumGood(bytes.first(ihl))) return failed(RingFrameError::kBadIp);
  if (bytes[9] != IPPROTO_ESP) return failed(RingFrameError::kNotEsp);
  // More fragments, or an offset: a piece of a packet, not ESP we can open.
  if ((load16(bytes.data() + 6) & 0x3fff) != 0) return failed(RingFrameError::kFragment);
  RingEsp r;
  r.packet = bytes.first(total);  // what follows tot_len is the link layer's padding
  r.espOffset = static_cast<std::uint32_t>(ihl);
  r.dst = IpAddress::v4(std::span<const std::uint8_t, 4>(bytes.data() + 16, 4));
  r.tos = bytes[1];
  return r;
}

}  // namespace ipsec::esp
