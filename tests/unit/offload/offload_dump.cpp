// Prints what lib/offload makes of a few super-packets, as hex lines for
// offload_scapy.py (scapy checks them without our code):
//   case <name> <version> <protocol> <mss>
//   super <hex>         the super-packet as a TUN read returns it
//   seg <hex>           each segment planSegments/writeSegment cut
//   merged <hex>        planCoalesce/writeCoalesced of the segments
//   mvnet <flags> <gso_type> <hdr_len> <gso_size> <csum_start> <csum_offset>
#include <cstdio>
#include <vector>

#include "offload/coalesce.h"
#include "packets.h"

namespace {

using namespace ipsec::offload;
using namespace ipsec::offload::testing;

void printHex(const char* tag, std::span<const std::uint8_t> bytes) {
  std::printf("%s ", tag);
  for (const auto b : bytes) std::printf("%02x", b);
  std::printf("\n");
}

void dumpCase(const char* name, const SuperPacketSpec& s, bool gso) {
  const auto packet = buildSuperPacket(s);
  VnetHeader header = gsoHeaderFor(s);
  if (!gso) header.gsoType = kGsoNone;
  std::printf("case %s %d %u %u\n", name, s.version, s.protocol, s.mss);
  printHex("super", packet);
  const auto segments = segmentAll(header, packet);
  for (const auto& seg : segments) printHex("seg", seg);
  std::vector<std::span<const std::uint8_t>> views(segments.begin(), segments.end());
  std::vector<CoalesceGroup> groups(views.size());
  groups.resize(planCoalesce(views, groups, CoalesceOptions{.udp = true}));
  for (const auto& g : groups) {
    std::vector<std::uint8_t> out(g.length);
    writeCoalesced(g, views, out);
    printHex("merged", out);
    const VnetHeader& h = g.header;
    std::printf("mvnet %u %u %u %u %u %u\n", h.flags, h.gsoType, h.headerLength, h.gsoSize, h.checksumStart,
                h.checksumOffset);
  }
}

}  // namespace

int main() {
  SuperPacketSpec s;
  s.tcpFlags = 0x80 | 0x18 | 0x01;  // CWR PSH ACK FIN
  for (const std::size_t payload : {999, 1000, 3000, 3001}) {
    for (const int version : {4, 6}) {
      s.version = version;
      s.payload = payload;
      dumpCase(version == 4 ? "tcp4" : "tcp6", s, true);
    }
  }
  SuperPacketSpec u;
  u.protocol = kProtoUdp;
  u.mss = 1200;
  for (const std::size_t payload : {1199, 2400, 2401}) {
    for (const int version : {4, 6}) {
      u.version = version;
      u.payload = payload;
      dumpCase(version == 4 ? "udp4" : "udp6", u, true);
    }
  }
  u.payload = 555;
  dumpCase("udp4_csum_only", u, false);
  s.payload = 555;
  s.version = 6;
  dumpCase("tcp6_csum_only", s, false);
  return 0;
}
