// Prints what lib/esp/pmtu builds, one "name hex" line each, for
// tests/interop/test_pmtu_scapy.py to parse with scapy (an independent
// parser): ICMP fragmentation needed, ICMPv6 packet too big, an ESP-in-UDP
// IPv6 outer header, and IPv4/IPv6 packets with their fragments.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "esp/pmtu.h"

using namespace ipsec::esp;

namespace {

void print(const char* name, const std::vector<uint8_t>& bytes) {
  std::printf("%s ", name);
  for (uint8_t b : bytes) std::printf("%02x", b);
  std::printf("\n");
}

// An inner packet of `total` bytes: ICMP echo request or ICMPv6 echo request
// (type only: scapy is not asked to check the inner checksum).
std::vector<uint8_t> inner(int version, size_t total) {
  std::vector<uint8_t> p(total);
  for (size_t i = 0; i < total; ++i) p[i] = static_cast<uint8_t>(i * 13);
  if (version == 4) {
    const uint8_t h[20] = {0x45, 0, static_cast<uint8_t>(total >> 8), static_cast<uint8_t>(total), 0x12, 0x34, 0x40, 0,
                           64,   1, 0, 0, 198, 51, 100, 1, 203, 0, 113, 1};
    std::memcpy(p.data(), h, 20);
    p[20] = 8;
    p[21] = 0;
  } else {
    std::memset(p.data(), 0, 40);
    p[0] = 0x60;
    p[4] = static_cast<uint8_t>((total - 40) >> 8);
    p[5] = static_cast<uint8_t>(total - 40);
    p[6] = 58;
    p[7] = 64;
    const IpAddress s = *IpAddress::parse("2001:db8:a::1"), d = *IpAddress::parse("2001:db8:b::1");
    std::memcpy(p.data() + 8, s.bytes().data(), 16);
    std::memcpy(p.data() + 24, d.bytes().data(), 16);
    p[40] = 128;
    p[41] = 0;
  }
  return p;
}

// An ESP packet (random-looking bytes) behind our outer header.
std::vector<uint8_t> outer(const char* src, const char* dst, size_t espLength, bool df, uint16_t sport, uint16_t dport) {
  std::vector<uint8_t> buf(64 + espLength);
  for (size_t i = 64; i < buf.size(); ++i) buf[i] = static_cast<uint8_t>(i * 31 + 7);
  OuterHeader h;
  h.src = *IpAddress::parse(src);
  h.dst = *IpAddress::parse(dst);
  h.tos = 0x02;
  h.dontFragment = df;
  h.id = 0x4242;
  h.udpSport = sport;
  h.udpDport = dport;
  auto start = writeOuterHeader(buf, 64, espLength, h);
  if (!start) return {};
  return {buf.begin() + static_cast<long>(*start), buf.end()};
}

void fragments(const char* name, const std::vector<uint8_t>& packet, size_t mtu) {
  print((std::string(name) + "_whole").c_str(), packet);
  std::vector<Fragment> frags(64);
  const size_t n = fragmentPacket(packet, mtu, 0x0badcafe, frags);
  for (size_t i = 0; i < n; ++i) {
    std::vector<uint8_t> f(frags[i].header.begin(), frags[i].header.begin() + frags[i].headerLength);
    f.insert(f.end(), packet.begin() + frags[i].offset, packet.begin() + frags[i].offset + frags[i].length);
    print((std::string(name) + "_fragment").c_str(), f);
  }
}

}  // namespace

int main() {
  std::vector<uint8_t> out(1280);
  auto v4 = inner(4, 1400);
  out.resize(buildFragmentationNeeded(v4, 1226, out));
  print("frag_needed", out);
  out.assign(1280, 0);
  auto v6 = inner(6, 1400);
  out.resize(buildPacketTooBig(v6, 1204, out));
  print("packet_too_big", out);
  print("outer4_df", outer("192.0.2.1", "192.0.2.2", 101, true, 0, 0));
  print("outer4_udp", outer("192.0.2.1", "192.0.2.2", 101, false, 4500, 4500));
  print("outer6_udp", outer("2001:db8:1::1", "2001:db8:1::2", 101, false, 4500, 4500));
  fragments("esp4", outer("192.0.2.1", "192.0.2.2", 1500, true, 0, 0), 576);
  fragments("esp6", outer("2001:db8:1::1", "2001:db8:1::2", 1500, false, 0, 0), 1280);
  fragments("udp6", outer("2001:db8:1::1", "2001:db8:1::2", 1400, false, 4500, 4500), 1280);
  return 0;
}
