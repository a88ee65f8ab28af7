// Fuzzes lib/offload. The first byte picks one of two oracles:
//  - even: the next kVnetHeaderSize bytes are a virtio_net_hdr and the rest a
//    packet, as a TUN read would hand them; every segment planned is written
//    into a buffer of exactly its planned length (ASan sees any write past
//    it), and the segments, then the packet itself, go through coalescing
//    into buffers of exactly the planned group lengths.
//  - odd: the bytes choose a valid TCP or UDP super-packet (IPv4/IPv6, sizes,
//    MSS, flags, options, ids, sequence numbers); segmenting then coalescing
//    it must give back the same bytes and the same virtio_net_hdr.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "offload/coalesce.h"
#include "offload/segment.h"
#include "packets.h"

namespace {

using namespace ipsec::offload;
using namespace ipsec::offload::testing;

// Reads the fuzz input front to back; zeros once it runs out.
struct Reader {
  const std::uint8_t* data;
  std::size_t size;
  std::uint8_t byte() {
    if (size == 0) return 0;
    --size;
    return *data++;
  }
  std::uint16_t u16() { return static_cast<std::uint16_t>(byte() << 8 | byte()); }
  std::uint32_t u32() { return std::uint32_t{u16()} << 16 | u16(); }
};

void coalesceAll(const std::vector<std::span<const std::uint8_t>>& burst) {
  std::vector<CoalesceGroup> groups(burst.size());
  groups.resize(planCoalesce(burst, groups, CoalesceOptions{.udp = (burst.size() & 1) != 0}));
  std::uint32_t covered = 0;
  for (const auto& g : groups) {
    if (g.first != covered) std::abort();
    covered += g.count;
    std::vector<std::uint8_t> out(g.length);
    if (writeCoalesced(g, burst, out) != g.length) std::abort();
  }
  if (covered != burst.size()) std::abort();
}

void rawInput(Reader r) {
  if (r.size < kVnetHeaderSize) return;
  std::uint8_t raw[kVnetHeaderSize];
  for (auto& b : raw) b = r.byte();
  const VnetHeader header = readVnetHeader(std::span<const std::uint8_t, kVnetHeaderSize>(raw));
  const std::vector<std::uint8_t> packet(r.data, r.data + r.size);
  const SegmentPlan plan = planSegments(header, packet);
  std::vector<std::vector<std::uint8_t>> segments;
  for (std::uint32_t i = 0; i < plan.count; ++i) {
    std::vector<std::uint8_t> seg(plan.segmentLength(i));
    if (writeSegment(plan, packet, i, seg) != seg.size()) std::abort();
    if (!seg.empty() && writeSegment(plan, packet, i, std::span(seg).first(seg.size() - 1)) != 0) std::abort();
    segments.push_back(std::move(seg));
  }
  std::vector<std::uint8_t> copy = packet;
  completeChecksum(header, copy);
  std::vector<std::span<const std::uint8_t>> burst(segments.begin(), segments.end());
  burst.push_back(packet);
  coalesceAll(burst);
}

void roundTrip(Reader r) {
  SuperPacketSpec s;
  const std::uint8_t kind = r.byte();
  s.version = (kind & 1) ? 6 : 4;
  s.protocol = (kind & 2) ? kProtoUdp : kProtoTcp;
  const std::size_t ip = s.version == 4 ? kIpv4MinHeader : kIpv6Header;
  s.tcpOptions.resize(s.protocol == kProtoTcp ? (r.byte() % 11) * 4 : 0);
  for (auto& b : s.tcpOptions) b = r.byte();
  const std::size_t headers = ip + (s.protocol == kProtoTcp ? kTcpMinHeader + s.tcpOptions.size() : kUdpHeader);
  s.payload = 1 + r.u16() % (kMaxPacket - headers);
  s.mss = static_cast<std::uint16_t>(1 + r.u16() % 9000);
  if ((s.payload + s.mss - 1) / s.mss > kMaxSegments) s.mss = static_cast<std::uint16_t>(s.payload / 64 + 1);
  // Any of CWR ECE ACK PSH FIN: SYN, RST and URG never take part in GSO.
  s.tcpFlags = r.byte() & 0xd9;
  s.ipId = r.u16();
  s.dontFragment = (r.byte() & 1) != 0;
  s.tos = r.byte();
  s.ttl = r.byte();
  s.seq = r.u32();
  s.ack = r.u32();
  s.window = r.u16();
  s.payloadSeed = r.byte();
  const auto original = buildSuperPacket(s);
  const VnetHeader header = gsoHeaderFor(s);
  const auto segments = segmentAll(header, original);
  if (segments.empty()) std::abort();
  std::vector<std::span<const std::uint8_t>> burst(segments.begin(), segments.end());
  std::vector<CoalesceGroup> groups(burst.size());
  if (planCoalesce(burst, groups, CoalesceOptions{.udp = true}) != 1 || groups[0].count != segments.size()) {
    // One segment with PSH/FIN stays alone; so does any single segment.
    if (segments.size() != 1) std::abort();
    return;
  }
  std::vector<std::uint8_t> out(groups[0].length);
  if (writeCoalesced(groups[0], burst, out) != out.size()) std::abort();
  if (segments.size() == 1) {
    if (out != segments[0]) std::abort();
    return;
  }
  if (out != original || !(groups[0].header == header)) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  Reader r{data + 1, size - 1};
  if ((data[0] & 1) == 0) {
    rawInput(r);
  } else {
    roundTrip(r);
  }
  return 0;
}
