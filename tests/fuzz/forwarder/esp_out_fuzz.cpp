// libFuzzer target: the forwarder's outbound packet core, first stage
// (services/forwarder/esp_out.cpp), on arbitrary TUN packets against a fixed
// SPD (an ESP tunnel, ESP transport, an IPComp tunnel bundle, ESP+AH, ESP in
// ESP, discard and bypass, IPv4 and IPv6) and SA table (one SA out of
// sequence numbers, one of the wrong mode, some missing). Byte 0 says whether
// ESP is enabled; the rest is the packet. Every route must be coherent: a
// drop names its counter, a hold names an ESP request of the matched policy,
// an ESP route an SA with numbers left and the request's mode. An ESP tunnel
// route then goes through the framing core (tunnel_frame.cpp) with tunnel
// facts taken from byte 0 (MTU, DF policy, TFC) and, for one policy, IPComp:
// a too-big verdict must quote an MTU below the packet's size, a seal request
// must lie inside the buffer, carry the SA's SPI and next number, and leave
// the SA's state alone.
#include <netinet/in.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core_tables.h"
#include "esp/esp.h"
#include "esp_out.h"
#include "tunnel_frame.h"

namespace {

using namespace ipsec;
using namespace ipsec::forwarder;
using namespace ipsec::forwarder::core_tables;

struct Tables {
  Spd spd;
  SaTable sas;
  IpcompSas ipcomp;
  Tables() {
    const auto a = *esp::IpAddress::parse("192.0.2.1"), b = *esp::IpAddress::parse("192.0.2.2");
    const auto a6 = *esp::IpAddress::parse("2001:db8:1::1"), b6 = *esp::IpAddress::parse("2001:db8:1::2");
    const Request tunnel{IPPROTO_ESP, IPSEC_MODE_TUNNEL, IPSEC_LEVEL_REQUIRE, 0, a, b};
    const Request tunnel6{IPPROTO_ESP, IPSEC_MODE_TUNNEL, IPSEC_LEVEL_UNIQUE, 7, a6, b6};
    const Request transport{IPPROTO_ESP, IPSEC_MODE_TRANSPORT, IPSEC_LEVEL_REQUIRE, 0, {}, {}};
    const Request ipcomp{IPPROTO_COMP, IPSEC_MODE_TUNNEL, IPSEC_LEVEL_USE, 0, a, b};
    const Request ah{IPPROTO_AH, IPSEC_MODE_TRANSPORT, IPSEC_LEVEL_REQUIRE, 0, {}, {}};
    const Request espUse{IPPROTO_ESP, IPSEC_MODE_TUNNEL, IPSEC_LEVEL_USE, 0, a, b};
    auto p = [](const char* s) { return *esp::Prefix::parse(s); };
    const auto out = IPSEC_DIR_OUTBOUND;
    bool bad = false;
    bad |= addPolicy(spd, {1, out, IPSEC_POLICY_DISCARD, p("0.0.0.0/0"), p("203.0.113.8/29"), {}}).has_value();
    bad |= addPolicy(spd, {2, out, IPSEC_POLICY_NONE, p("0.0.0.0/0"), p("203.0.113.16/29"), {}}).has_value();
    bad |= addPolicy(spd, {3, out, IPSEC_POLICY_IPSEC, p("0.0.0.0/0"), p("203.0.113.32/28"), {ipcomp, transport}})
               .has_value();
    bad |= addPolicy(spd, {4, out, IPSEC_POLICY_IPSEC, p("0.0.0.0/0"), p("203.0.113.64/27"), {transport, ah}})
               .has_value();
    bad |= addPolicy(spd, {5, out, IPSEC_POLICY_IPSEC, p("0.0.0.0/0"), p("203.0.113.96/27"), {transport, espUse}})
               .has_value();
    bad |= addPolicy(spd, {6, out, IPSEC_POLICY_IPSEC, p("0.0.0.0/0"), p("203.0.113.128/25"), {transport}})
               .has_value();
    // An IPComp tunnel bundle in tunnel mode, framed by one ESP tunnel SA (policy 7's).
    bad |= addPolicy(spd, {10, out, IPSEC_POLICY_IPSEC, p("0.0.0.0/0"), p("203.0.113.0/30"), {ipcomp, tunnel}})
               .has_value();
    bad |= addPolicy(spd, {7, out, IPSEC_POLICY_IPSEC, p("0.0.0.0/0"), p("203.0.113.0/24"), {tunnel}}).has_value();
    bad |= addPolicy(spd, {8, out, IPSEC_POLICY_IPSEC, p("::/0"), p("2001:db8:b::/48"), {tunnel6}}).has_value();
    bad |= addPolicy(spd, {9, out, IPSEC_POLICY_IPSEC, p("::/0"), p("2001:db8:c::/48"), {espUse, tunnel6}})
               .has_value();
    // The v4 tunnel's SA; a transport SA to 203.0.113.130 out of numbers, one to .131 of the wrong mode.
    bad |= installSa(sas, {0, SADB_SATYPE_ESP, 0x100, IPSEC_MODE_TUNNEL, a, b}).has_value();
    bad |= installSa(sas, {1, SADB_SATYPE_ESP, 0x101, IPSEC_MODE_TRANSPORT, *esp::IpAddress::parse("198.51.100.1"),
                           *esp::IpAddress::parse("203.0.113.130"), {8, 16, 4}, 9, 9})
               .has_value();
    bad |= installSa(sas, {2, SADB_SATYPE_ESP, 0x102, IPSEC_MODE_TUNNEL, *esp::IpAddress::parse("198.51.100.1"),
                           *esp::IpAddress::parse("203.0.113.131")})
               .has_value();
    bad |= installSa(sas, {3, SADB_SATYPE_ESP, 0x103, IPSEC_MODE_TUNNEL, a6, b6, {8, 16, 4}, 1, 1000, 7}).has_value();
    bad |= !installIpcompSa(a, b);
    if (bad) __builtin_trap();  // the fixture itself is wrong
  }
  bool installIpcompSa(const esp::IpAddress& a, const esp::IpAddress& b) {
    return core_tables::installIpcompSa(ipcomp, 9, 0x4242, a, b);
  }
};

}  // namespace

// The framing core on an ESP tunnel route, in a pool-like buffer holding a copy of the packet.
void frame(Tables& t, const OutboundRoute& r, std::span<const std::uint8_t> packet, std::uint8_t knobs) {
  constexpr std::uint32_t kAt = 256;
  static std::vector<std::uint8_t> buffer(4096);
  if (packet.size() + kAt > buffer.size()) return;
  std::copy(packet.begin(), packet.end(), buffer.begin() + kAt);
  TunnelFacts facts;
  facts.pathMtu = (knobs & 2) ? 1280 : 1500;
  facts.outerOverhead = r.sa->dst.isV4() ? ((knobs & 4) ? 28 : 20) : 40;
  facts.dfPolicy = static_cast<std::uint8_t>((knobs >> 3) & 3);
  facts.tfcPad = (knobs & 0x20) ? 1400 : ((knobs & 0x40) ? 100 : 0);
  const Sa before = *r.sa;
  const TunnelFrame f = frameTunnel({*r.sa, *r.policy, facts, t.ipcomp, (knobs & 0x80) == 0}, buffer, kAt,
                                    static_cast<std::uint32_t>(packet.size()));
  if (r.sa->seqNext != before.seqNext) __builtin_trap();  // the shell moves the counter, not the core
  switch (f.kind) {
    case TunnelFrame::Kind::kDrop:
      if (!f.drop) __builtin_trap();
      break;
    case TunnelFrame::Kind::kTooBig:
      if (f.drop != &Counters::pmtu_out_drop_too_big || f.mtu >= packet.size()) __builtin_trap();
      break;
    case TunnelFrame::Kind::kSeal: {
      if (std::size_t{f.offset} + f.length > buffer.size() || f.length < 8 + before.layout.ivLength) __builtin_trap();
      const std::uint8_t* esp = buffer.data() + f.offset;
      const std::uint32_t spi = static_cast<std::uint32_t>(esp[0]) << 24 | esp[1] << 16 | esp[2] << 8 | esp[3];
      if (spi != before.spi || f.seq != before.seqNext) __builtin_trap();
      if (f.outerDf && !r.sa->dst.isV4()) __builtin_trap();  // IPv6 has no DF bit
      break;
    }
  }
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  static Tables t;  // routing moves no state but the SPD's flow cache
  // The core reads a view of these bytes: kept alive while it does.
  const std::vector<std::uint8_t> packet(data + 1, data + size);
  const OutboundRoute r = routeOutbound(t.spd, t.sas, packet, data[0] & 1);
  switch (r.kind) {
    case OutboundRoute::Kind::kDrop:
      if (!r.drop) __builtin_trap();
      if (r.sa && r.sa->seqNext < r.sa->seqLimit) __builtin_trap();  // only a spent SA is named
      break;
    case OutboundRoute::Kind::kHold:
      if (!r.policy || !r.request || r.request->proto != IPPROTO_ESP || r.request < r.policy->requests.data() ||
          r.request >= r.policy->requests.data() + r.policy->requests.size()) {
        __builtin_trap();
      }
      break;
    case OutboundRoute::Kind::kBundle:
      if (!r.policy || r.policy->plan.shape == Shape::kEsp) __builtin_trap();
      break;
    case OutboundRoute::Kind::kEsp:
      if (!r.sa || !r.request || r.sa->seqNext >= r.sa->seqLimit || r.sa->satype != SADB_SATYPE_ESP ||
          (r.sa->mode != IPSEC_MODE_ANY && r.sa->mode != r.request->mode) || !(data[0] & 1)) {
        __builtin_trap();
      }
      if (!r.transport) frame(t, r, packet, data[0]);
      break;
  }
  return 0;
}
