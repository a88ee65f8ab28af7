// libFuzzer target: the inbound core for a UDP GRO datagram
// (services/forwarder/gro_open.cpp) on untrusted bytes, as ipsec-forwarder
// runs it — a random coalesced datagram with a random GRO segment size is
// planned (one multi-segment request or split), and when it is one request,
// a random broker answer (status, segment fail mask, an echoed layout that
// may have changed) is walked segment by segment in order, a segment judged
// on a copy as the shell does. The opened bytes are taken as the broker left
// them: no key is needed to reach every branch after the open.
// Properties checked beyond "no crash": a plan's sequence numbers and layout
// describe the datagram; every refusal names its counter; a verdict lies in
// its segment; judging a segment in place never changes a byte of the
// segments after it (they are still to be judged).
// Input: byte 0 picks the SA mode (tunnel, "any", transport) and bit 2
// whether IPComp SAs exist; bytes 1-2 the GRO segment size (big-endian);
// byte 3 the broker's status; bytes 4-11 its fail mask; byte 12 bit 0 a
// changed stride in the echo; the rest is the datagram. The SA table is
// built afresh per input, so a finding reproduces from its input.
#include <linux/ipsec.h>
#include <linux/pfkeyv2.h>
#include <linux/udp.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "core_tables.h"
#include "esp/ip.h"
#include "gro_open.h"

namespace {

using namespace ipsec;
using namespace ipsec::forwarder;

esp::IpAddress ip(const char* s) { return *esp::IpAddress::parse(s); }

const esp::IpAddress kA4 = ip("192.0.2.1"), kB4 = ip("192.0.2.2");
constexpr std::uint8_t kModes[] = {IPSEC_MODE_TUNNEL, IPSEC_MODE_ANY, IPSEC_MODE_TRANSPORT, IPSEC_MODE_TUNNEL};
constexpr std::size_t kHeader = 13;

// The policies and IPComp SAs every input meets (the core only reads them).
struct Shared {
  Spd spd;
  IpcompSas ipcomp, noIpcomp;
  Shared() {
    if (!core_tables::installIpcompSa(ipcomp, 10, 0x4242, kA4, kB4, 0, IPSEC_MODE_ANY)) __builtin_trap();
    const Request tunnel{IPPROTO_ESP, IPSEC_MODE_TUNNEL, IPSEC_LEVEL_REQUIRE, 0, kA4, kB4};
    const Request ipcompTunnel{IPPROTO_COMP, IPSEC_MODE_TUNNEL, IPSEC_LEVEL_USE, 0, kA4, kB4};
    if (core_tables::addPolicy(spd, {1, IPSEC_DIR_INBOUND, IPSEC_POLICY_IPSEC, {ip("198.51.100.0"), 24},
                                     {ip("203.0.113.0"), 24}, {ipcompTunnel, tunnel}})) {
      __builtin_trap();
    }
  }
};

void checkVerdict(const OpenedVerdict& v, std::size_t start, std::size_t end) {
  switch (v.kind) {
    case OpenedVerdict::Kind::kDrop:
    case OpenedVerdict::Kind::kDummy:
      if (!v.drop) __builtin_trap();
      break;
    case OpenedVerdict::Kind::kDeliver:
      if (v.offset < start || v.offset > end || v.length == 0 || v.length > end - v.offset) __builtin_trap();
      break;
    case OpenedVerdict::Kind::kOpenAgain:
      if (v.again.espOffset >= v.again.end || v.again.end > end) __builtin_trap();
      break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < kHeader) return 0;
  static Shared shared;
  const std::uint8_t mode = kModes[data[0] & 3];
  SaTable sas;
  NattPeers natt;
  Counters counters;
  core_tables::SaValues values;
  values.spi = 0x100;
  values.mode = mode;
  values.src = kA4;
  values.dst = kB4;
  if (core_tables::installSa(sas, values)) __builtin_trap();
  natt.set({0, 1}, NatT{true, 1, UDP_ENCAP_ESPINUDP, 4500, 4500, 0, false, {}});
  const InboundTables t{sas, shared.spd, (data[0] & 4) ? shared.ipcomp : shared.noIpcomp, natt, counters, true};

  // A pool buffer, the datagram at its start; kept alive while views point into it.
  std::vector<std::uint8_t> buffer(proto::kDefaultBufferSize);
  const std::size_t length = std::min(size - kHeader, std::size_t{65507});
  std::memcpy(buffer.data(), data + kHeader, length);
  const std::uint32_t gso = (std::uint32_t{data[1]} << 8) | data[2];
  const esp::GroSplit split = esp::splitGro(length, {true, false, gso});

  GroSegments sent;
  const GroOpenPlan plan = planGroOpen(sas, natt, {buffer.data(), length}, split, kB4, sent);
  if (!plan.sa) return 0;
  if (!split.ok() || sent.count != split.count || sent.count > proto::kMaxSegments || sent.count < 2 ||
      sent.length != length || sent.stride != split.segmentSize || plan.splitWhy) {
    __builtin_trap();
  }

  proto::CryptoCompletion c{};
  c.op = proto::CryptoOp::kOpen;
  c.status = static_cast<proto::CryptoStatus>(data[3] % 10);
  std::memcpy(&c.segmentFailMask, data + 4, sizeof c.segmentFailMask);
  c.length = sent.length;
  c.segmentCount = sent.count;
  c.segmentStride = sent.stride + (data[12] & 1);
  const bool sane = echoesLayout(c, sent);
  const OpenedFrom from{0, true, {kA4, 4500}};
  std::vector<std::uint8_t> after, copy;
  for (std::uint16_t i = 0; i < sent.count; ++i) {
    const std::size_t start = std::size_t{i} * sent.stride;
    const std::size_t end = i + 1u == sent.count ? sent.length : start + sent.stride;
    after.assign(buffer.begin() + end, buffer.begin() + sent.length);
    const GroSegmentVerdict s = judgeGroSegment(t, buffer, c, sent, {0, 1}, sane, i, from);
    if (s.start != start || s.start + s.length != end) __builtin_trap();
    if (!std::equal(after.begin(), after.end(), buffer.begin() + end)) __builtin_trap();  // a neighbour written
    switch (s.kind) {
      case GroSegmentVerdict::Kind::kRefused:
        if (!s.drop) __builtin_trap();
        break;
      case GroSegmentVerdict::Kind::kJudged:
        if (s.verdict.kind == OpenedVerdict::Kind::kOpenAgain) __builtin_trap();
        checkVerdict(s.verdict, start, end);
        break;
      case GroSegmentVerdict::Kind::kOnACopy: {
        // As the shell does: the segment alone at the start of a buffer of its own.
        copy.assign(proto::kDefaultBufferSize, 0);
        std::copy(buffer.begin() + start, buffer.begin() + end, copy.begin());
        const OpenedVerdict v = judgeOpened(t, copy, 0, s.length, *s.sa, from);
        checkVerdict(v, 0, copy.size());
        break;
      }
    }
  }
  return 0;
}
