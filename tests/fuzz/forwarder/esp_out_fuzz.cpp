// libFuzzer target: the forwarder's outbound packet core, first stage
// (services/forwarder/esp_out.cpp), on arbitrary TUN packets against a fixed
// SPD (an ESP tunnel, ESP transport, an IPComp tunnel bundle, ESP+AH, ESP in
// ESP, discard and bypass, IPv4 and IPv6) and SA table (one SA out of
// sequence numbers, one of the wrong mode, some missing). Byte 0 says whether
// ESP is enabled; the rest is the packet. Every route must be coherent: a
// drop names its counter, a hold names an ESP request of the matched policy,
// an ESP route an SA with numbers left and the request's mode.
#include <netinet/in.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "core_tables.h"
#include "esp_out.h"

namespace {

using namespace ipsec;
using namespace ipsec::forwarder;
using namespace ipsec::forwarder::core_tables;

struct Tables {
  Spd spd;
  SaTable sas;
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
    if (bad) __builtin_trap();  // the fixture itself is wrong
  }
};

}  // namespace

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
      break;
  }
  return 0;
}
