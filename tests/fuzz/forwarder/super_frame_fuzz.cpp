// libFuzzer target: a TUN read framed as one strided multi-segment ESP
// request (services/forwarder/super_frame.cpp) — the virtio_net_hdr and the
// packet are the input, as a TUN with offloads hands them to the forwarder.
// Byte 0 picks the SA (IPv4 or IPv6 outer, how many sequence numbers it has
// left), byte 1 the tunnel facts (path MTU, DF policy, TFC), byte 2 the first
// segment and byte 3 the pool buffer's size; then the 10-byte header, then
// the packet. Whatever is framed must be what the ring ABI and the broker
// accept (lib/ring checkDescriptor), inside the buffer, at most kMaxSegments,
// every segment but the last exactly one stride, each an ESP packet under the
// SA's SPI with consecutive numbers below the SA's limit, nothing of the SA
// changed.
#include <netinet/in.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "core_tables.h"
#include "esp/esp.h"
#include "offload/segment.h"
#include "offload/vnet_header.h"
#include "proto/ring_abi.h"
#include "ring/pool.h"
#include "super_frame.h"

namespace {

using namespace ipsec;
using namespace ipsec::forwarder;

struct Tables {
  SaTable sas;
  Tables() {
    const auto a = *esp::IpAddress::parse("192.0.2.1"), b = *esp::IpAddress::parse("192.0.2.2");
    const auto a6 = *esp::IpAddress::parse("2001:db8:1::1"), b6 = *esp::IpAddress::parse("2001:db8:1::2");
    bool bad = false;
    bad |= core_tables::installSa(sas, {0, SADB_SATYPE_ESP, 0x100, IPSEC_MODE_TUNNEL, a, b, {8, 16, 4}, 1, 1u << 20})
               .has_value();
    bad |= core_tables::installSa(sas, {1, SADB_SATYPE_ESP, 0x101, IPSEC_MODE_TUNNEL, a6, b6, {8, 16, 16},
                                        0xfffffff0ull, 0x100000010ull})
               .has_value();
    if (bad) __builtin_trap();  // the fixture itself is wrong
  }
};

void check(bool ok) {
  if (!ok) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static Tables t;
  constexpr std::size_t kFixed = 4 + offload::kVnetHeaderSize;
  if (size < kFixed) return 0;
  Sa& sa = *t.sas.find({static_cast<std::uint32_t>(data[0] & 1), 1});
  const std::uint64_t seqNext = sa.seqNext, seqLimit = sa.seqLimit;
  // Some numbers left, or a few, or none.
  if (data[0] & 2) sa.seqNext = sa.seqLimit - (data[0] >> 2) % 8;
  TunnelFacts facts;
  facts.pathMtu = 576 + std::size_t{data[1]} * 64;
  facts.outerOverhead = sa.dst.isV4() ? 20 : 40;
  facts.dfbit = static_cast<esp::DfPolicy>(1 + data[1] % 3);  // clear, set or copy
  facts.tfcPad = (data[1] & 0x80) ? 1000 : 0;
  const std::uint32_t first = data[2] % 80;
  std::vector<std::uint8_t> buffer(proto::kMinBufferSize + std::size_t{data[3]} * 256, 0xee);
  const auto header = offload::readVnetHeader(std::span<const std::uint8_t, offload::kVnetHeaderSize>(
      data + 4, offload::kVnetHeaderSize));
  const std::vector<std::uint8_t> packet(data + kFixed, data + size);  // alive while the plan and frame look at it
  const offload::SegmentPlan plan = offload::planSegments(header, packet);
  const std::uint32_t offset = data[2] & 0x80 ? 64 : 0;
  const SuperFrame f = frameSuperPacket(sa, facts, plan, packet, first, buffer, offset);
  check(sa.seqNext == (data[0] & 2 ? sa.seqLimit - (data[0] >> 2) % 8 : seqNext));  // the core takes nothing
  if (f.count != 0) {
    check(plan.ok() && plan.gso() && first + f.count <= plan.count && f.count <= proto::kMaxSegments);
    check(f.firstSeq == sa.seqNext && f.firstSeq + f.count <= sa.seqLimit);
    proto::CryptoRequest req{};
    req.op = proto::CryptoOp::kSeal;
    req.segmentCount = f.count;
    req.offset = f.offset;
    req.length = f.length;
    req.segmentStride = f.stride;
    check(ring::checkDescriptor(req, 1, static_cast<std::uint32_t>(buffer.size())) == ring::DescriptorError::kNone);
    for (std::uint16_t i = 0; i < f.count; ++i) {
      const ring::Segment s = ring::segmentOf(req, i);
      check(s.start == f.segmentStart(i) && s.length == f.segmentLength(i) && s.length <= f.stride);
      const auto h = esp::parseHeader({buffer.data() + s.start, s.length});
      check(h.ok() && h.header.spi == sa.spi && h.header.seqLow == static_cast<std::uint32_t>(f.firstSeq + i));
    }
  }
  sa.seqNext = seqNext;
  sa.seqLimit = seqLimit;
  return 0;
}
