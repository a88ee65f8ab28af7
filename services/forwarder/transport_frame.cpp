// ipsec-forwarder: the outbound packet core for ESP in transport mode
// (transport_frame.h). Pure function of the bytes and what it borrows;
// noexcept, allocation-free.
#include "transport_frame.h"

#include <linux/ipsec.h>

#include <cstring>

#include "esp/pmtu.h"
#include "ipcomp/ipcomp.h"

namespace ipsec::forwarder {
namespace {

// IPComp in transport mode: the upper-layer payload compressed behind the
// host's kept headers, which move 4 bytes forward first (at most a few dozen
// bytes; the payload stays put). False (v.drop) when the packet must drop.
bool compressTransport(const OutboundTables &t, const Sa &esp, const Policy &p, std::span<std::uint8_t> buffer,
                       std::uint32_t &off, std::uint32_t &len, esp::TransportSplit &split, FrameVerdict &v) noexcept {
  if (p.plan.ipcompTransport == Plan::kNoRequest) return true;
  const Request &req = p.requests[p.plan.ipcompTransport];
  if (!t.ipcompEnabled) {
    v.drop = &Counters::ipcomp_out_drop_disabled;
    return false;
  }
  const IpcompSa *sa = t.ipcomp.select(esp.src, esp.dst, req.level == IPSEC_LEVEL_UNIQUE ? req.reqid : 0);
  ipcomp::Compressor *compressor = t.ipcomp.compressor();
  if (!sa || !compressor) {
    if (req.level == IPSEC_LEVEL_USE) return true;  // optional: without IPComp
    v.drop = &Counters::ipcomp_out_drop_no_sa;
    return false;
  }
  const auto h = static_cast<std::uint32_t>(split.headerLength);
  if (off < ipcomp::kHeaderLength || split.totalLength > len || h > split.totalLength) {
    v.drop = &Counters::ipcomp_out_drop_error;
    return false;
  }
  std::uint8_t *data = buffer.data();
  std::memmove(data + off - ipcomp::kHeaderLength, data + off, h);
  auto r = compressor->compress(buffer, off + h, split.totalLength - h, split.protocol, sa->cpi);
  if (!r.compressed()) {
    std::memmove(data + off, data + off - ipcomp::kHeaderLength,
                 h);  // back where they were
    if (r.sendUncompressed()) {
      v.ipcompEvent = &Counters::ipcomp_out_uncompressed;
      return true;
    }
    v.drop = &Counters::ipcomp_out_drop_error;
    return false;
  }
  v.ipcompEvent = &Counters::ipcomp_out_compressed;
  off -= static_cast<std::uint32_t>(ipcomp::kHeaderLength);
  len = h + static_cast<std::uint32_t>(r.length);
  split.protocol = ipcomp::kProtoIpcomp;
  split.totalLength = len;  // encapsulateTransport sets the length fields from it
  return true;
}

}  // namespace

bool fitTransportPacket(const TunnelFacts &facts, std::span<const std::uint8_t> packet, const esp::EspLayout *esp,
                        std::size_t headerLength, std::size_t extra, TunnelFit &fit, std::size_t &limit) noexcept {
  limit = esp::maxTransportLength(esp, facts.pathMtu, headerLength, extra);
  const bool fits = fitInnerPacket(facts, false, packet, limit, fit);
  fit.padTo = 0;        // TFC is a tunnel's (RFC 4303 §2.7)
  fit.outerDf = false;  // the host's own DF bit stays as it is
  return fits;
}

FrameVerdict frameEspTransport(const OutboundTables &t, Sa &sa, const Policy *policy, const TransportJudge &judge,
                               std::span<std::uint8_t> buffer, std::uint32_t offset, std::uint32_t length) noexcept {
  if (std::size_t{offset} + length > buffer.size()) return dropFrame(&Counters::out_drop_bad_inner);
  const std::span<const std::uint8_t> packet = buffer.subspan(offset, length);
  auto split = esp::transportSplit(packet);
  if (!split) return dropFrame(&Counters::out_drop_bad_inner);
  // ESP in transport mode protects whole datagrams only (RFC 4303 §3.1.1):
  // a local fragment means the TUN MTU is too small for the packet.
  if (split->fragment) return dropFrame(&Counters::transport_out_drop_fragment);
  // Judged on the packet as it came, before IPComp: an ICMP must quote the
  // sender's packet, and one IPComp would shrink is not known to yet.
  if (judge.facts) {
    TunnelFit fit;
    std::size_t limit = 0;
    if (!fitTransportPacket(*judge.facts, packet, &sa.layout, split->headerLength, judge.extra, fit, limit)) {
      return tooBigFrame(limit);
    }
  }
  FrameVerdict v;
  std::uint32_t off = offset, len = length;
  esp::TransportSplit parts = *split;
  if (policy && !compressTransport(t, sa, *policy, buffer, off, len, parts, v)) {
    v.kind = FrameVerdict::Kind::kDrop;
    return v;
  }
  auto r =
      esp::encapsulateTransport(buffer, off, len, sa.spi, static_cast<std::uint32_t>(sa.seqNext), sa.layout, parts);
  if (!r.ok()) {
    v.drop = &Counters::out_drop_no_room;
    return v;
  }
  v.kind = FrameVerdict::Kind::kCrypto;
  v.sa = &sa;
  v.op = proto::CryptoOp::kSeal;
  v.offset = static_cast<std::uint32_t>(r.espOffset);
  v.length = static_cast<std::uint32_t>(r.espLength);
  v.seq = sa.seqNext;
  v.saBytes = length;
  v.transportHeader = static_cast<std::uint16_t>(r.headerLength);
  addQueued(v, &Counters::transport_out_packets);
  return v;
}

}  // namespace ipsec::forwarder
