// libFuzzer target: the forwarder's inbound packet core after the broker
// (services/forwarder/inbound_open.cpp) on untrusted bytes, as
// ipsec-forwarder runs it — a random broker answer judged first
// (acceptVerified), then the opened bytes judged (judgeOpened) under an SA of
// a random mode, with or without IPComp SAs and bundle policies, and an inner
// ESP packet it finds opened again as the shell would (checkInboundEsp, then
// judgeOpened with the outer layer peeled); or, for AH, the verified packet
// judged (judgeAhVerified) and the ESP inside it opened next the same way.
// The opened bytes are taken as the broker left them: no key is needed to
// reach every branch after the open.
// Input: byte 0 picks the SA (tunnel v4, transport v4, mode "any" v4, tunnel
// v6, transport v6 in UDP, AH transport v4, transport v4 to a second host,
// tunnel v4 with NULL encryption) and bit 3 whether IPComp SAs
// exist; byte 1 the broker's status; byte 2 the outer TOS and the layer
// already peeled; byte 3 where the ESP packet starts in the buffer; the rest
// is the buffer's content from 0 (an IPv4 transport packet's header sits
// there, as the raw socket leaves it). The SA table is built afresh per
// input, so a finding reproduces from its input.
#include <linux/ipsec.h>
#include <linux/pfkeyv2.h>
#include <linux/udp.h>
#include <netinet/in.h>

#include <capnp/message.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "core_tables.h"
#include "esp/ip.h"
#include "inbound_open.h"

namespace {

using namespace ipsec;
using namespace ipsec::forwarder;
using core_tables::addPolicy;
using core_tables::installSa;

esp::IpAddress ip(const char* s) { return *esp::IpAddress::parse(s); }

const esp::IpAddress kA4 = ip("192.0.2.1"), kB4 = ip("192.0.2.2");
const esp::IpAddress kA6 = ip("2001:db8:1::1"), kB6 = ip("2001:db8:1::2");
const esp::IpAddress kHostA4 = ip("198.51.100.1"), kHostB4 = ip("203.0.113.1"), kHostC4 = ip("203.0.113.2");

// Slots 0..7, SPIs 0x100..0x107 (the seed corpus names them). Layouts: GCM's
// (IV 8, ICV 16), AH's, and NULL with a 16-byte HMAC (slot 7: scapy's seeds).
constexpr esp::EspLayout kGcm{8, 16, 4}, kAh{0, 16, 4}, kNullHmac{0, 16, 4};
struct SaSpec {
  std::uint8_t satype, mode;
  const esp::IpAddress *src, *dst;
  bool natt;
  esp::EspLayout layout = kGcm;
};
const SaSpec kSas[] = {
    {SADB_SATYPE_ESP, IPSEC_MODE_TUNNEL, &kA4, &kB4, false},
    {SADB_SATYPE_ESP, IPSEC_MODE_TRANSPORT, &kHostA4, &kHostB4, false},
    {SADB_SATYPE_ESP, IPSEC_MODE_ANY, &kA4, &kB4, false},
    {SADB_SATYPE_ESP, IPSEC_MODE_TUNNEL, &kA6, &kB6, false},
    {SADB_SATYPE_ESP, IPSEC_MODE_TRANSPORT, &kA6, &kB6, true},
    {SADB_SATYPE_AH, IPSEC_MODE_TRANSPORT, &kHostA4, &kHostC4, false, kAh},
    {SADB_SATYPE_ESP, IPSEC_MODE_TRANSPORT, &kHostA4, &kHostC4, false},
    {SADB_SATYPE_ESP, IPSEC_MODE_TUNNEL, &kA4, &kB4, false, kNullHmac},
};
constexpr std::size_t kSaCount = sizeof kSas / sizeof kSas[0];

void installIpcomp(IpcompSas& ipcomp, std::uint32_t index, std::uint16_t cpi, const esp::IpAddress& src,
                   const esp::IpAddress& dst) {
  if (!core_tables::installIpcompSa(ipcomp, index, cpi, src, dst, 0, IPSEC_MODE_ANY)) __builtin_trap();
}

// The policies every input meets — each bundle shape for the inner hosts
// (IPv4) and a plain tunnel (IPv6) — and the IPComp SAs (or none). Built
// once: the core only reads them (a decompression leaves no state behind).
struct Shared {
  Spd spd;
  IpcompSas ipcomp, noIpcomp;

  Shared() {
    installIpcomp(ipcomp, 10, 0x4242, kA4, kB4);
    installIpcomp(ipcomp, 11, 0x4343, kHostA4, kHostC4);
    const Request espTunnel{IPPROTO_ESP, IPSEC_MODE_TUNNEL, IPSEC_LEVEL_REQUIRE, 0, kA4, kB4};
    const Request espTransport{IPPROTO_ESP, IPSEC_MODE_TRANSPORT, IPSEC_LEVEL_REQUIRE, 0, {}, {}};
    const Request ahTransport{IPPROTO_AH, IPSEC_MODE_TRANSPORT, IPSEC_LEVEL_USE, 0, {}, {}};
    const Request ipcompTunnel{IPPROTO_COMP, IPSEC_MODE_TUNNEL, IPSEC_LEVEL_USE, 0, kA4, kB4};
    const Request ipcompTransport{IPPROTO_COMP, IPSEC_MODE_TRANSPORT, IPSEC_LEVEL_USE, 0, {}, {}};
    auto add = [&](std::uint32_t id, const esp::IpAddress& src, const esp::IpAddress& dst, std::uint8_t length,
                   std::initializer_list<Request> requests) {
      if (addPolicy(spd, {id, IPSEC_DIR_INBOUND, IPSEC_POLICY_IPSEC, {src, length}, {dst, length}, requests})) {
        __builtin_trap();
      }
    };
    // 198.51.100.1 -> 203.0.113.1: ESP transport inside the tunnel; .2: [IPComp,] ESP inside AH;
    // .3: IPComp in the tunnel; IPv6: a plain tunnel.
    add(1, kHostA4, kHostB4, 32, {espTransport, espTunnel});
    add(2, kHostA4, kHostC4, 32, {ipcompTransport, espTransport, ahTransport});
    add(3, kHostA4, ip("203.0.113.3"), 32, {ipcompTunnel, espTunnel});
    add(4, ip("2001:db8:a::"), ip("2001:db8:b::"), 48,
        {{IPPROTO_ESP, IPSEC_MODE_TUNNEL, IPSEC_LEVEL_REQUIRE, 0, kA6, kB6}});
  }
};

// The SAs above afresh per input (their replay windows move), so that a
// finding reproduces from its input alone.
struct Tables {
  SaTable sas;
  NattPeers natt;
  Counters counters;
  IpcompSas& ipcomp;
  const Spd& spd;

  Tables(Shared& shared, bool withIpcomp) : ipcomp(withIpcomp ? shared.ipcomp : shared.noIpcomp), spd(shared.spd) {
    for (std::uint32_t i = 0; i < kSaCount; ++i) {
      core_tables::SaValues v;
      v.index = i;
      v.satype = kSas[i].satype;
      v.spi = 0x100 + i;
      v.mode = kSas[i].mode;
      v.src = *kSas[i].src;
      v.dst = *kSas[i].dst;
      v.layout = kSas[i].layout;
      if (installSa(sas, v)) __builtin_trap();  // the fixture itself is wrong
      if (kSas[i].natt) natt.set({i, 1}, NatT{true, 1, UDP_ENCAP_ESPINUDP, 4500, 4500, 0, false, {}});
    }
  }

  InboundTables borrowed() { return {sas, spd, ipcomp, natt, counters, true}; }
};

void checkVerdict(const OpenedVerdict& v, std::size_t bufferSize) {
  switch (v.kind) {
    case OpenedVerdict::Kind::kDrop:
    case OpenedVerdict::Kind::kDummy:
      if (!v.drop) __builtin_trap();  // every refusal names its counter
      break;
    case OpenedVerdict::Kind::kDeliver:
      // Delivered bytes lie in the buffer and are an IP packet the SPD allowed.
      if (v.offset > bufferSize || v.length > bufferSize - v.offset || v.length == 0) __builtin_trap();
      break;
    case OpenedVerdict::Kind::kOpenAgain:
      if (v.again.espOffset >= v.again.end || v.again.end > bufferSize) __builtin_trap();
      break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  const std::uint8_t pick = data[0];
  const auto status = static_cast<proto::CryptoStatus>(data[1] % 11);
  const std::uint8_t tos = data[2];
  static Shared shared;
  Tables t(shared, (pick & 8) != 0);
  const SaRef ref{static_cast<std::uint32_t>((pick & 7) % kSaCount), 1};
  // A pool buffer: room behind the packet for IPComp to inflate into. Kept
  // alive (and writable) while the core reads views of it.
  std::vector<std::uint8_t> buffer(4096);
  const std::size_t have = std::min(size - 4, buffer.size());
  std::copy(data + 4, data + 4 + have, buffer.begin());
  OpenedFrom from;
  from.tos = tos;
  from.udp = kSas[ref.index].natt;
  from.peer = {*kSas[ref.index].src, 4500};
  static constexpr StepKind kPeeled[] = {StepKind::kNone, StepKind::kAhTransport, StepKind::kEspTunnel,
                                         StepKind::kNone};
  from.peeled = kPeeled[(data[2] >> 6) & 3];
  from.peeledSa = {from.peeled == StepKind::kAhTransport ? 5u : 0u, 1};

  const Verified v = acceptVerified(t.sas, ref, status, (pick & 0x10) == 0, 1,
                                    kSas[ref.index].satype == SADB_SATYPE_AH ? kAhVerifyDrops : kEspVerifyDrops);
  if (v.drop) return 0;
  if (status != proto::CryptoStatus::kOk || v.sa == nullptr) __builtin_trap();
  const std::uint32_t start = std::min<std::uint32_t>(data[3], static_cast<std::uint32_t>(have));
  const std::uint32_t length = static_cast<std::uint32_t>(have) - start;
  const bool ah = v.sa->satype == SADB_SATYPE_AH;
  OpenedVerdict verdict = ah ? judgeAhVerified(t.borrowed(), buffer, start, length, *v.sa, (pick & 0x20) != 0, tos)
                             : judgeOpened(t.borrowed(), buffer, start, length, *v.sa, from);
  checkVerdict(verdict, buffer.size());
  // An inner ESP packet for one of our SAs: the shell's next pass, as
  // inboundPacket then onOpened run it (twice at most here: ESP in ESP in ESP).
  for (int depth = 0; depth < 2 && verdict.kind == OpenedVerdict::Kind::kOpenAgain; ++depth) {
    const InnerEsp inner = verdict.again;
    const std::span<const std::uint8_t> esp{buffer.data() + inner.espOffset, inner.end - inner.espOffset};
    const InboundEsp check = checkInboundEsp(t.sas, t.natt, esp, inner.dst, false);
    if (check.drop) return 0;
    OpenedFrom again;
    again.tos = inner.tos;
    again.peer.address = inner.src;
    again.hopLimit = inner.hopLimit;
    again.peeled = ah && depth == 0 ? StepKind::kAhTransport : StepKind::kEspTunnel;
    again.peeledSa = v.sa->ref;
    verdict = judgeOpened(t.borrowed(), buffer, inner.espOffset, inner.end - inner.espOffset, *check.sa, again);
    checkVerdict(verdict, buffer.size());
  }
  return 0;
}
