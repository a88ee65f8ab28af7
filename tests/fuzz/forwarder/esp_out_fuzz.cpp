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
// the SA's state alone. ESP transport routes go through their core
// (transport_frame.cpp) and bundle routes through theirs (bundle_frame.cpp:
// AH alone in tunnel and transport mode, ESP+AH transport and tunnel, ESP in
// ESP, an AH shape not run); a crypto request is then answered with bytes of
// the input and a completion whose offset, length and status the last input
// byte may spoil, and goes through the after-seal stage (frameAfterSeal) and
// the after-sign decision (finishAhSigned) — or, for a transport seal with
// nothing after it, the send decision (finishTransportSeal, with or without
// a NAT-T peer): each verdict coherent, nothing read or written outside the
// buffer (ASan), no SA's number moved. An ESP tunnel seal is answered the
// same way and goes through its send decision (finishTunnelSeal, with a
// NAT-T peer from byte 0 whose ports the last byte picks): a send lies in the
// buffer, our header only in front of the ESP packet, nothing else written.
#include <netinet/in.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include <capnp/message.h>

#include "core_tables.h"
#include "esp/esp.h"
#include "bundle_frame.h"
#include "esp_out.h"
#include "transport_frame.h"
#include "tunnel_frame.h"
#include "tunnel_send.h"

namespace {

using namespace ipsec;
using namespace ipsec::forwarder;
using namespace ipsec::forwarder::core_tables;

struct Tables {
  Spd spd;
  SaTable sas;
  IpcompSas ipcomp;
  NattPeers natt;
  TunnelOptionsTable tunnels;
  AhBuffer ah;
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
    bad |= addPolicy(spd, {16, out, IPSEC_POLICY_IPSEC, p("::/0"), p("2001:db8:e::/48"), {transport}}).has_value();
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
    addAhShapes(bad);
    if (bad) __builtin_trap();  // the fixture itself is wrong
  }
  // AH alone and with ESP (dsts in 198.51.100.0/24 and 2001:db8:d::/48,
  // from 198.51.100.1 / 2001:db8:a::1), and the SAs that let each shape reach
  // its crypto request and its after-seal stage.
  void addAhShapes(bool& bad) {
    const auto a = *esp::IpAddress::parse("192.0.2.1"), b = *esp::IpAddress::parse("192.0.2.2");
    const auto c = *esp::IpAddress::parse("192.0.2.3"), d = *esp::IpAddress::parse("192.0.2.4");
    const auto h = *esp::IpAddress::parse("198.51.100.1"), h6 = *esp::IpAddress::parse("2001:db8:a::1");
    auto at = [](const char* s) { return *esp::IpAddress::parse(s); };
    auto p = [](const char* s) { return *esp::Prefix::parse(s); };
    const Request ah{IPPROTO_AH, IPSEC_MODE_TRANSPORT, IPSEC_LEVEL_REQUIRE, 0, {}, {}};
    const Request ahTunnel{IPPROTO_AH, IPSEC_MODE_TUNNEL, IPSEC_LEVEL_REQUIRE, 0, a, b};
    const Request espTunnelCd{IPPROTO_ESP, IPSEC_MODE_TUNNEL, IPSEC_LEVEL_REQUIRE, 0, c, d};
    const Request ipcomp{IPPROTO_COMP, IPSEC_MODE_TRANSPORT, IPSEC_LEVEL_USE, 0, {}, {}};
    const auto out = IPSEC_DIR_OUTBOUND;
    bad |= addPolicy(spd, {11, out, IPSEC_POLICY_IPSEC, p("0.0.0.0/0"), p("198.51.100.128/28"), {ahTunnel}}).has_value();
    bad |= addPolicy(spd, {12, out, IPSEC_POLICY_IPSEC, p("0.0.0.0/0"), p("198.51.100.144/28"), {ah}}).has_value();
    bad |= addPolicy(spd, {13, out, IPSEC_POLICY_IPSEC, p("0.0.0.0/0"), p("198.51.100.160/28"), {espTunnelCd, ah}})
               .has_value();
    bad |= addPolicy(spd, {14, out, IPSEC_POLICY_IPSEC, p("0.0.0.0/0"), p("198.51.100.176/28"), {ah, ipcomp}})
               .has_value();
    bad |= addPolicy(spd, {15, out, IPSEC_POLICY_IPSEC, p("::/0"), p("2001:db8:d::/48"), {ah}}).has_value();
    const esp::EspLayout ahLayout{0, 16, 4};
    // ESP+AH transport (policy 4), ESP in ESP (policy 5, tunnel SA 0), ESP transport (policy 6).
    bad |= installSa(sas, {4, SADB_SATYPE_ESP, 0x104, IPSEC_MODE_TRANSPORT, h, at("203.0.113.65")}).has_value();
    bad |= installSa(sas, {5, SADB_SATYPE_AH, 0x105, IPSEC_MODE_TRANSPORT, h, at("203.0.113.65"), ahLayout})
               .has_value();
    bad |= installSa(sas, {6, SADB_SATYPE_ESP, 0x106, IPSEC_MODE_TRANSPORT, h, at("203.0.113.97")}).has_value();
    bad |= installSa(sas, {7, SADB_SATYPE_AH, 0x107, IPSEC_MODE_TUNNEL, a, b, ahLayout}).has_value();
    bad |= installSa(sas, {8, SADB_SATYPE_AH, 0x108, IPSEC_MODE_TRANSPORT, h, at("198.51.100.145"), ahLayout})
               .has_value();
    bad |= installSa(sas, {9, SADB_SATYPE_AH, 0x109, IPSEC_MODE_TRANSPORT, c, d, ahLayout}).has_value();
    bad |= installSa(sas, {10, SADB_SATYPE_ESP, 0x10a, IPSEC_MODE_TUNNEL, c, d}).has_value();
    bad |= installSa(sas, {11, SADB_SATYPE_ESP, 0x10b, IPSEC_MODE_TRANSPORT, h, at("203.0.113.132")}).has_value();
    bad |= installSa(sas, {12, SADB_SATYPE_AH, 0x10c, IPSEC_MODE_TRANSPORT, h6, at("2001:db8:d::1"), ahLayout})
               .has_value();
    // ESP transport over IPv6 (policy 16), for the send after its seal.
    bad |= installSa(sas, {13, SADB_SATYPE_ESP, 0x10d, IPSEC_MODE_TRANSPORT, h6, at("2001:db8:e::1")}).has_value();
    // The ESP-in-ESP tunnel pads for TFC; the AH tunnel has a small MTU.
    capnp::MallocMessageBuilder m;
    auto params = m.initRoot<proto::SaParams>();
    params.setTfcPad(300);
    params.setMtu(1400);
    tunnels.install({0, 1}, params.asReader());
    params.setTfcPad(0);
    params.setMtu(600);
    tunnels.install({7, 1}, params.asReader());
  }
  bool installIpcompSa(const esp::IpAddress& a, const esp::IpAddress& b) {
    return core_tables::installIpcompSa(ipcomp, 9, 0x4242, a, b);
  }
};

void afterTunnelSeal(const Sa& sa, const TunnelFrame& f, std::span<std::uint8_t> buffer,
                     std::span<const std::uint8_t> noise, std::uint8_t spoil, std::uint8_t knobs);

}  // namespace

// The framing core on an ESP tunnel route, in a pool-like buffer holding a copy of the packet.
void frame(Tables& t, const OutboundRoute& r, std::span<const std::uint8_t> packet, std::uint8_t knobs,
           std::uint8_t spoil) {
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
      afterTunnelSeal(before, f, buffer, packet, spoil, knobs);
      break;
    }
  }
}

namespace {

// The cores move no SA's number: the shell does, once it queues a request.
std::vector<std::uint64_t> numbers(SaTable& sas) {
  std::vector<std::uint64_t> n;
  sas.forEach([&](Sa& sa) { n.push_back(sa.seqNext); });
  return n;
}

void checkVerdict(const FrameVerdict& v, const Policy* p, std::span<const std::uint8_t> packet, std::size_t room) {
  switch (v.kind) {
    case FrameVerdict::Kind::kDrop:
      if (!v.drop || (v.spent && v.spent->seqNext < v.spent->seqLimit)) __builtin_trap();
      break;
    case FrameVerdict::Kind::kTooBig:
      if (v.drop != &Counters::pmtu_out_drop_too_big || v.mtu >= packet.size()) __builtin_trap();
      break;
    case FrameVerdict::Kind::kHold:
      if (!p || !v.acquire || v.acquire < p->requests.data() || v.acquire >= p->requests.data() + p->requests.size()) {
        __builtin_trap();
      }
      break;
    case FrameVerdict::Kind::kCrypto:
      if (!v.sa || v.seq != v.sa->seqNext || v.sa->seqNext >= v.sa->seqLimit || v.length == 0 ||
          std::size_t{v.offset} + v.length > room || v.offset < v.transportHeader) {
        __builtin_trap();
      }
      if ((v.op == proto::CryptoOp::kAhSign) != (v.sa->satype == SADB_SATYPE_AH)) __builtin_trap();
      break;
  }
}

// The broker's answer: the request's bytes overwritten with input bytes (a
// broker may write anything there), offset, length and status as asked
// unless `spoil` says otherwise.
proto::CryptoCompletion answer(const FrameVerdict& v, std::span<std::uint8_t> buffer,
                               std::span<const std::uint8_t> noise, std::uint8_t spoil) {
  for (std::size_t i = 0; i < v.length && !noise.empty(); ++i) buffer[v.offset + i] ^= noise[i % noise.size()];
  proto::CryptoCompletion c{};
  c.op = v.op;
  c.status = proto::CryptoStatus::kOk;
  c.offset = v.offset;
  c.length = v.length;
  c.icvOffset = v.icvOffset;
  if (spoil & 1) c.offset += static_cast<std::uint32_t>(static_cast<std::int8_t>(spoil) >> 2);
  if (spoil & 2) c.length += static_cast<std::uint32_t>(static_cast<std::int8_t>(spoil) >> 3);
  if ((spoil & 0xc0) == 0xc0) c.status = static_cast<proto::CryptoStatus>(spoil & 0x0f);
  return c;
}

void afterSign(Tables& t, const FrameVerdict& v, std::span<std::uint8_t> buffer, std::span<const std::uint8_t> noise,
               std::uint8_t spoil) {
  const proto::CryptoCompletion c = answer(v, buffer, noise, spoil);
  const AhSigned s = finishAhSigned(buffer, c, t.ah, (spoil & 0x20) == 0);
  if (s.kind == AhSigned::Kind::kDrop) {
    if (!s.drop) __builtin_trap();
    return;
  }
  if (s.start != t.ah.start || s.length != t.ah.length || std::size_t{s.start} + s.length > buffer.size()) {
    __builtin_trap();
  }
  if (s.kind == AhSigned::Kind::kFragments && (s.mtu == 0 || s.length <= s.mtu)) __builtin_trap();
}

// A transport seal with nothing after it: the send decided on the broker's
// answer, spoiled or not (also far off: spoil bits 5 and 7), for the SA with
// a NAT-T peer (knobs bit 3; its ports from the spoil byte: the NAT-T
// socket's, another, or none) or none.
void afterTransportSeal(Tables& t, const OutboundTables& tables, const FrameVerdict& v, std::span<std::uint8_t> buffer,
                        std::span<const std::uint8_t> noise, std::uint8_t spoil, std::uint8_t knobs) {
  constexpr std::uint16_t kSocketPort = 4500;
  const Sa& sa = *v.sa;
  const bool natT = (knobs & 8) != 0;
  if (natT) {
    NatT nat;
    nat.present = true;
    nat.generation = sa.ref.generation;
    nat.type = 2;  // UDP_ENCAP_ESPINUDP
    nat.sport = (spoil & 4) ? kSocketPort : ((spoil & 8) ? 0 : 4600);
    nat.dport = (spoil & 0x10) ? 0 : 4501;
    t.natt.set(sa.ref, nat);
  }
  proto::CryptoCompletion c = answer(v, buffer, noise, spoil);
  // Beyond answer's small shifts, a descriptor anywhere (a compromised
  // broker's): the kept header's room before the buffer, a length past it.
  if (spoil & 0x20) c.offset = static_cast<std::uint32_t>(noise.size() % 32);
  if ((spoil & 0xe0) == 0xa0) c.length = 0xfffffff0u;
  const TransportSend s = finishTransportSeal(tables, sa, {v.transportHeader, kSocketPort}, buffer, c);
  t.natt.forget(sa.ref);
  if (s.kind == TransportSend::Kind::kDrop) {
    if (!s.drop) __builtin_trap();
    return;
  }
  if (c.status != proto::CryptoStatus::kOk || s.natT != natT || s.length == 0 ||
      std::size_t{s.start} + s.length > buffer.size() || s.to.address.isV4() != sa.dst.isV4()) {
    __builtin_trap();
  }
  switch (s.kind) {
    case TransportSend::Kind::kNatT:
      if (!natT || s.start != c.offset || s.length != c.length || s.to.port == 0 || !(s.to.address == sa.dst)) {
        __builtin_trap();
      }
      break;
    case TransportSend::Kind::kHeaderIncluded:
      if (s.to.port != 0 || std::size_t{s.start} + s.length != std::size_t{c.offset} + c.length) __builtin_trap();
      if (natT ? (!sa.dst.isV4() || s.start + 28 != c.offset) : s.start + v.transportHeader != c.offset) {
        __builtin_trap();
      }
      break;
    case TransportSend::Kind::kFragments:
      if (s.mtu == 0 || s.length <= s.mtu || s.to.port != 0) __builtin_trap();
      break;
    case TransportSend::Kind::kDrop: break;
  }
}

// A tunnel seal: the send decided on the broker's answer (noise over the
// ESP bytes, offset, length and status spoiled or not, also far off or over
// the buffer's end: spoil bits 5 to 7), plain or with a NAT-T peer (knobs
// bit 2) whose ports the spoil byte picks (the NAT-T socket's, another, or
// none), under the MTU the framing was judged by or a smaller one (spoil bit 6).
void afterTunnelSeal(const Sa& sa, const TunnelFrame& f, std::span<std::uint8_t> buffer,
                     std::span<const std::uint8_t> noise, std::uint8_t spoil, std::uint8_t knobs) {
  constexpr std::uint16_t kSocketPort = 4500, kId = 0x4321;
  FrameVerdict v;
  v.op = proto::CryptoOp::kSeal;
  v.offset = f.offset;
  v.length = f.length;
  proto::CryptoCompletion c = answer(v, buffer, noise, spoil);
  if (spoil & 0x20) c.offset = static_cast<std::uint32_t>(noise.size() % 64);
  if ((spoil & 0xe0) == 0xa0) c.length = 0xfffffff0u;
  if ((spoil & 0xe0) == 0x60) c.offset = static_cast<std::uint32_t>(buffer.size() - c.length / 2);  // over the end
  NatT nat;
  nat.present = true;
  nat.sport = (spoil & 4) ? kSocketPort : ((spoil & 8) ? 0 : 4600);
  nat.dport = (spoil & 0x10) ? 0 : 4501;
  const bool natT = (knobs & 4) != 0;
  const std::size_t mtu = (spoil & 0x40) ? 1280 : ((knobs & 2) ? 1280 : 1500);
  const std::vector<std::uint8_t> before(buffer.begin(), buffer.end());
  const TunnelSend s =
      finishTunnelSeal(sa, {natT ? &nat : nullptr, mtu, f.outerTos, f.outerDf, kSocketPort, kId}, buffer, c);
  const bool v4 = sa.dst.isV4();
  const std::size_t ours = (v4 ? 20u : 40u) + (natT ? 8u : 0u);
  if (s.kind == TunnelSend::Kind::kDrop) {
    // A header drop spends the Identification, as the shell always did, but
    // for IPv6 ESP in UDP that fits (it would leave on the NAT-T socket) to
    // no peer port: that is dropped before any header is thought of.
    const bool header = s.drop == &Counters::pmtu_out_drop_header;
    const bool earlyNoPort = natT && !sa.dst.isV4() && nat.dport == 0;
    if (!s.drop || (s.tookIpv4Id && !header) || (header && !s.tookIpv4Id && !earlyNoPort)) __builtin_trap();
    if (s.drop != &Counters::pmtu_out_drop_header && before != std::vector<std::uint8_t>(buffer.begin(), buffer.end())) {
      __builtin_trap();  // nothing written before the verdict to drop
    }
    return;
  }
  if (c.status != proto::CryptoStatus::kOk || s.natT != natT || !(s.to.address == sa.dst) || s.tos != f.outerTos ||
      std::size_t{c.offset} + c.length > buffer.size() || std::size_t{s.start} + s.length > buffer.size()) {
    __builtin_trap();
  }
  const bool kernel = s.kind == TunnelSend::Kind::kRawEsp || s.kind == TunnelSend::Kind::kNatT;
  if (kernel) {
    if (s.start != c.offset || s.length != c.length || s.tookIpv4Id || c.length + ours > mtu) __builtin_trap();
    if (s.kind == TunnelSend::Kind::kRawEsp ? (natT || v4 || s.to.port != 0) : (!natT || s.to.port != nat.dport)) {
      __builtin_trap();
    }
    if (v4 && (nat.sport != kSocketPort || nat.dport == 0 || s.dontFragment != f.outerDf)) __builtin_trap();
  } else {
    if (s.start + ours != c.offset || s.length != c.length + ours || !s.tookIpv4Id || s.to.port != 0) __builtin_trap();
    if (s.kind == TunnelSend::Kind::kHeaderIncluded && (!v4 || s.length > mtu || s.dontFragment != f.outerDf)) {
      __builtin_trap();
    }
    if (s.kind == TunnelSend::Kind::kFragments && (s.mtu != mtu || s.length <= mtu || s.dontFragment)) __builtin_trap();
  }
  // Only our header, in front of the ESP packet, was written.
  const std::size_t from = kernel ? c.offset : s.start;
  for (std::size_t i = 0; i < buffer.size(); ++i) {
    if ((i < from || i >= c.offset) && buffer[i] != before[i]) __builtin_trap();
  }
}

}  // namespace

// ESP transport and bundle routes through their cores, then their completions.
void frameOther(Tables& t, const OutboundRoute& r, std::span<const std::uint8_t> packet, std::uint8_t knobs,
                std::uint8_t spoil) {
  constexpr std::uint32_t kAt = 256;
  static std::vector<std::uint8_t> buffer(4096);
  if (packet.size() + kAt > buffer.size()) return;
  std::copy(packet.begin(), packet.end(), buffer.begin() + kAt);
  const auto len = static_cast<std::uint32_t>(packet.size());
  const std::vector<std::uint64_t> before = numbers(t.sas);
  const OutboundTables tables{t.sas, t.tunnels, t.natt, t.ipcomp, (knobs & 1) != 0, (knobs & 0x10) == 0,
                              (knobs & 0x80) == 0};
  FrameVerdict v;
  if (r.kind == OutboundRoute::Kind::kBundle) {
    v = frameBundle(tables, *r.policy, r.flow, buffer, kAt, len, {t.ah, 0x1234});
  } else {
    const TunnelFacts facts = tables.facts(*r.sa);
    v = frameEspTransport(tables, *r.sa, r.policy, {(knobs & 2) ? nullptr : &facts, (knobs & 4) ? 8u : 0u}, buffer,
                          kAt, len);
  }
  if (numbers(t.sas) != before) __builtin_trap();
  checkVerdict(v, r.policy, packet, buffer.size());
  if (v.kind != FrameVerdict::Kind::kCrypto) return;
  if (v.op == proto::CryptoOp::kAhSign) return afterSign(t, v, buffer, packet, spoil);
  if (v.next == StepKind::kNone) {
    if (v.transportHeader != 0) afterTransportSeal(t, tables, v, buffer, packet, spoil, knobs);
    return;
  }
  // The seal completed: its SA's number taken (as the shell does), the next step run.
  Sa& first = *v.sa;
  ++first.seqNext;
  const proto::CryptoCompletion c = answer(v, buffer, packet, spoil);
  const SealedStage stage{first.ref, v.next, v.nextSa, v.transportHeader, v.outerTos, v.outerDf};
  const FrameVerdict second = frameAfterSeal(tables, stage, buffer, c, {t.ah, 0x1235});
  const std::vector<std::uint64_t> sealed = numbers(t.sas);
  checkVerdict(second, nullptr, packet, buffer.size());
  if (second.kind == FrameVerdict::Kind::kHold || second.kind == FrameVerdict::Kind::kTooBig) __builtin_trap();
  if (second.kind == FrameVerdict::Kind::kCrypto && second.op == proto::CryptoOp::kAhSign) {
    afterSign(t, second, buffer, packet, static_cast<std::uint8_t>(spoil >> 1));
  }
  if (numbers(t.sas) != sealed) __builtin_trap();
  --first.seqNext;  // the table stays as it was for the next input
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
      if (!r.transport) {
        frame(t, r, packet, data[0], data[size - 1]);
      } else {
        frameOther(t, r, packet, data[0], data[size - 1]);
      }
      break;
  }
  if (r.kind == OutboundRoute::Kind::kBundle) frameOther(t, r, packet, data[0], data[size - 1]);
  return 0;
}
