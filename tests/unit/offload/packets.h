// Test packets for lib/offload: TUN-style super-packets (headers as the
// kernel's TCP/UDP stack leaves them for TSO/USO: lengths of the whole,
// NEEDS_CSUM with the pseudo-header sum over the whole transport length in
// the checksum field) and their virtio_net_hdr. Shared by the unit tests,
// offload_dump and the fuzz target.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <span>
#include <vector>

#include "offload/packet.h"
#include "offload/segment.h"
#include "offload/vnet_header.h"

namespace ipsec::offload::testing {

// NOP NOP timestamps, as Linux sends them on an established connection.
inline std::vector<std::uint8_t> timestampOptions() {
  static const std::uint8_t kOptions[] = {1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2};
  return std::vector<std::uint8_t>(std::begin(kOptions), std::end(kOptions));
}

struct SuperPacketSpec {
  int version = 4;
  std::uint8_t protocol = kProtoTcp;
  std::size_t payload = 4000;
  std::uint16_t mss = 1000;
  std::uint8_t tcpFlags = 0x18;  // PSH|ACK, as a send() of a whole buffer leaves it
  std::vector<std::uint8_t> tcpOptions = timestampOptions();
  std::uint16_t ipId = 0xfffe;  // wraps within a few segments
  bool dontFragment = true;
  std::uint8_t tos = 0x02;  // ECT(0)
  std::uint8_t ttl = 64;
  std::uint32_t seq = 0xfffff000u;  // wraps too
  std::uint32_t ack = 0x01020304u;
  std::uint16_t window = 502;
  std::uint8_t payloadSeed = 3;
};

inline std::vector<std::uint8_t> buildSuperPacket(const SuperPacketSpec& s) {
  const std::size_t ip = s.version == 4 ? kIpv4MinHeader : kIpv6Header;
  const std::size_t l4 = s.protocol == kProtoTcp ? kTcpMinHeader + s.tcpOptions.size() : kUdpHeader;
  std::vector<std::uint8_t> p(ip + l4 + s.payload);
  std::uint8_t* h = p.data();
  if (s.version == 4) {
    h[0] = 0x45;
    h[1] = s.tos;
    store16(h + 2, static_cast<std::uint16_t>(p.size()));
    store16(h + 4, s.ipId);
    store16(h + 6, s.dontFragment ? 0x4000 : 0);
    h[8] = s.ttl;
    h[9] = s.protocol;
    const std::uint8_t addrs[] = {192, 0, 2, 1, 198, 51, 100, 7};
    std::copy(addrs, addrs + 8, h + 12);
    store16(h + 10, ipv4HeaderChecksum(p));
  } else {
    store32(h, 0x60000000u | std::uint32_t{s.tos} << 20 | 0x12345);
    store16(h + 4, static_cast<std::uint16_t>(p.size() - ip));
    h[6] = s.protocol;
    h[7] = s.ttl;
    const std::uint8_t src[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    const std::uint8_t dst[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2};
    std::copy(src, src + 16, h + 8);
    std::copy(dst, dst + 16, h + 24);
  }
  std::uint8_t* t = h + ip;
  store16(t, 40000);
  store16(t + 2, s.protocol == kProtoTcp ? 5201 : 4789);
  if (s.protocol == kProtoTcp) {
    store32(t + 4, s.seq);
    store32(t + 8, s.ack);
    t[12] = static_cast<std::uint8_t>(l4 / 4 << 4);
    t[13] = s.tcpFlags;
    store16(t + 14, s.window);
    std::copy(s.tcpOptions.begin(), s.tcpOptions.end(), t + kTcpMinHeader);
  } else {
    store16(t + 4, static_cast<std::uint16_t>(p.size() - ip));
  }
  for (std::size_t i = 0; i < s.payload; ++i) p[ip + l4 + i] = static_cast<std::uint8_t>(i * 7 + s.payloadSeed);
  PacketLayout layout;
  layout.version = static_cast<std::uint8_t>(s.version);
  layout.protocol = s.protocol;
  const std::size_t field = s.protocol == kProtoTcp ? kTcpChecksumOffset : kUdpChecksumOffset;
  store16(t + field, checksumFold(pseudoHeaderSum(p, layout, static_cast<std::uint32_t>(p.size() - ip))));
  return p;
}

inline VnetHeader gsoHeaderFor(const SuperPacketSpec& s) {
  VnetHeader h;
  h.flags = kVnetFlagNeedsChecksum;
  h.gsoType = s.protocol == kProtoUdp ? kGsoUdpL4 : s.version == 4 ? kGsoTcpV4 : kGsoTcpV6;
  if (s.protocol == kProtoTcp && (s.tcpFlags & 0x80) != 0) h.gsoType |= kGsoEcn;
  const std::size_t ip = s.version == 4 ? kIpv4MinHeader : kIpv6Header;
  const std::size_t l4 = s.protocol == kProtoTcp ? kTcpMinHeader + s.tcpOptions.size() : kUdpHeader;
  h.headerLength = static_cast<std::uint16_t>(ip + l4);
  h.gsoSize = s.mss;
  h.checksumStart = static_cast<std::uint16_t>(ip);
  h.checksumOffset = static_cast<std::uint16_t>(s.protocol == kProtoTcp ? kTcpChecksumOffset : kUdpChecksumOffset);
  return h;
}

}  // namespace ipsec::offload::testing

namespace ipsec::offload::testing {

// Every segment of `packet` behind `header`, each in its own vector (none if
// the plan or a write fails).
inline std::vector<std::vector<std::uint8_t>> segmentAll(const VnetHeader& header,
                                                         std::span<const std::uint8_t> packet) {
  std::vector<std::vector<std::uint8_t>> out;
  const SegmentPlan plan = planSegments(header, packet);
  for (std::uint32_t i = 0; i < plan.count; ++i) {
    std::vector<std::uint8_t> seg(plan.segmentLength(i));
    if (writeSegment(plan, packet, i, seg) != seg.size()) return {};
    out.push_back(std::move(seg));
  }
  return out;
}

}  // namespace ipsec::offload::testing
