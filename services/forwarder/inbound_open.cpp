// ipsec-forwarder: the inbound packet core after the broker (inbound_open.h).
// Pure functions of hostile bytes and borrowed tables; noexcept,
// allocation-free. Every reject is a verdict named by its counter.
#include "inbound_open.h"

#include <linux/ipsec.h>
#include <linux/pfkeyv2.h>
#include <netinet/in.h>

#include <cstring>

#include "esp/ecn.h"
#include "esp/esp.h"
#include "esp/nat_oa.h"
#include "esp/pmtu.h"
#include "esp/transport.h"

namespace ipsec::forwarder {
namespace {

using Kind = OpenedVerdict::Kind;

OpenedVerdict dropped(DropReason reason, const esp::FlowKey* flow = nullptr) noexcept {
  OpenedVerdict v;
  v.kind = Kind::kDrop;
  v.drop = reason;
  if (flow) v.flow = *flow;
  return v;
}

OpenedVerdict delivered(const std::uint8_t* base, const std::uint8_t* packet, std::size_t length, bool transport,
                        const esp::FlowKey& flow) noexcept {
  OpenedVerdict v;
  v.kind = Kind::kDeliver;
  v.offset = static_cast<std::uint32_t>(packet - base);
  v.length = static_cast<std::uint32_t>(length);
  v.transport = transport;
  v.flow = flow;
  return v;
}

OpenedVerdict openAgain(const std::uint8_t* base, const std::uint8_t* packet, std::size_t length,
                        const InnerEsp& again) noexcept {
  OpenedVerdict v;
  v.kind = Kind::kOpenAgain;
  v.offset = static_cast<std::uint32_t>(packet - base);
  v.length = static_cast<std::uint32_t>(length);
  v.again = again;
  return v;
}

// lib/esp's trailer errors by counter. Transport mode takes any next header
// as its payload: no kBadNextHeader there.
DropReason decapDrop(esp::EspError error, bool tunnel) noexcept {
  switch (error) {
    case esp::EspError::kBadLength: return &Counters::esp_in_drop_bad_length;
    case esp::EspError::kBadPadding: return &Counters::esp_in_drop_bad_padding;
    case esp::EspError::kBadNextHeader:
      return tunnel ? &Counters::esp_in_drop_bad_next_header : &Counters::esp_in_drop_truncated;
    case esp::EspError::kInnerMismatch: return &Counters::esp_in_drop_inner_mismatch;
    default: return &Counters::esp_in_drop_truncated;
  }
}

// Does this inbound SA satisfy one of the policy's ESP requests (tunnel path)?
bool tunnelRequestAllows(const Policy& p, const Sa& sa) noexcept {
  for (const auto& r : p.requests) {
    if (r.proto != IPPROTO_ESP) continue;
    if (sa.mode != IPSEC_MODE_ANY && r.mode != sa.mode) continue;  // a transport SA serves no tunnel
    if (r.mode == IPSEC_MODE_TUNNEL && (r.tunnelSrc != sa.src || r.tunnelDst != sa.dst)) continue;
    if (r.level == IPSEC_LEVEL_UNIQUE && r.reqid != 0 && r.reqid != sa.reqid) continue;
    return true;
  }
  return false;
}

bool transportRequestAllows(const Policy& p, const Sa& sa) noexcept {
  for (const auto& r : p.requests) {
    if (r.proto != IPPROTO_ESP || r.mode != IPSEC_MODE_TRANSPORT) continue;
    if (r.level == IPSEC_LEVEL_UNIQUE && r.reqid != 0 && r.reqid != sa.reqid) continue;
    return true;
  }
  return false;
}

bool ahRequestAllows(const Policy& p, const Sa& sa, bool tunnel) noexcept {
  for (const auto& r : p.requests) {
    if (r.proto != IPPROTO_AH) continue;
    if (r.mode != (tunnel ? IPSEC_MODE_TUNNEL : IPSEC_MODE_TRANSPORT)) continue;
    if (sa.mode != IPSEC_MODE_ANY && r.mode != sa.mode) continue;
    if (tunnel && (r.tunnelSrc != sa.src || r.tunnelDst != sa.dst)) continue;
    if (r.level == IPSEC_LEVEL_UNIQUE && r.reqid != 0 && r.reqid != sa.reqid) continue;
    return true;
  }
  return false;
}

// Transport mode takes the packet unless an IP packet is inside: the ESP of
// an IPComp-tunnel bundle (uncompressed packets carry 4/41) or a mode "any"
// SA (setkey's default) used for a tunnel go the tunnel path, and IPComp with
// an IP packet inside. IPComp around an upper-layer payload is a
// transport-mode bundle. Too short to tell: the tunnel path counts it.
bool takenByTransport(const Sa& sa, std::span<const std::uint8_t> esp) noexcept {
  if (sa.mode != IPSEC_MODE_TRANSPORT && sa.mode != IPSEC_MODE_ANY) return false;
  if (esp.size() < 1u + sa.layout.icvLength) return false;
  const std::uint8_t next = esp[esp.size() - sa.layout.icvLength - 1];
  if (next == esp::kNextHeaderIpv4 || next == esp::kNextHeaderIpv6) return false;
  if (next == esp::kProtoIpcomp) {
    const std::size_t at = esp::kEspHeaderLength + sa.layout.ivLength;
    if (esp.size() < at + ipcomp::kHeaderLength + 2u + sa.layout.icvLength) return false;
    if (esp[at] == esp::kNextHeaderIpv4 || esp[at] == esp::kNextHeaderIpv6) return false;
  }
  return true;
}

// ESP's next header was 108: inflate in place (bounded: a bomb stops at the
// limit) and describe the result in `d` (offsets from the ESP header). The
// CPI must be an IPComp SA between the ESP SA's ends. tunnel: an IP packet
// must be inside; otherwise (transport) an upper-layer payload.
DropReason decompress(const InboundTables& t, std::span<std::uint8_t> fromEsp, const Sa& esp, esp::DecapResult& d,
                      bool tunnel) noexcept {
  if (!t.ipcompEnabled) return &Counters::ipcomp_in_drop_disabled;
  ipcomp::Header h;
  if (d.offset > fromEsp.size() || d.length > fromEsp.size() - d.offset ||
      !ipcomp::parseHeader(fromEsp.subspan(d.offset, d.length), h)) {
    return &Counters::ipcomp_in_drop_truncated;
  }
  if (!t.ipcomp.knows(h.cpi, esp.src, esp.dst)) return &Counters::ipcomp_in_drop_no_sa;
  ipcomp::Decompressor* decompressor = t.ipcomp.decompressor();
  if (!decompressor) return &Counters::ipcomp_in_drop_error;
  auto r = decompressor->decompressInPlace(fromEsp, d.offset, d.length);
  if (!r.ok()) {
    switch (r.error) {
      case ipcomp::IpcompError::kTooLarge: return &Counters::ipcomp_in_drop_too_large;
      case ipcomp::IpcompError::kBadData:
      case ipcomp::IpcompError::kTrailingData: return &Counters::ipcomp_in_drop_bad_data;
      case ipcomp::IpcompError::kTruncated: return &Counters::ipcomp_in_drop_truncated;
      default: return &Counters::ipcomp_in_drop_error;
    }
  }
  const std::uint8_t next = r.header.nextHeader;
  const bool innerIp = next == esp::kNextHeaderIpv4 || next == esp::kNextHeaderIpv6;
  // Transport mode carries an upper-layer payload; an IP packet here is a tunnel's.
  if (!tunnel && innerIp) return &Counters::ipcomp_in_drop_bad_next_header;
  const std::uint8_t version = r.length ? fromEsp[r.offset] >> 4 : 0;
  if (tunnel && (!innerIp || (next == esp::kNextHeaderIpv4 && version != 4) ||
                 (next == esp::kNextHeaderIpv6 && version != 6))) {
    return &Counters::ipcomp_in_drop_bad_next_header;
  }
  ++t.counters.ipcomp_in_decompressed;
  d.offset = r.offset;
  d.length = r.length;
  d.nextHeader = next;
  d.error = esp::EspError::kOk;
  return nullptr;
}

// The last inbound check of a packet ESP opened, after the SPD found p: every
// SA the policy asks for was used, and no layer it does not ask for was.
DropReason bundleAllows(const InboundTables& t, const Policy& p, const OpenedFrom& from, bool compressed) noexcept {
  const bool wantsIpcomp = p.plan.ipcomp != Plan::kNoRequest;
  const Request* wantsAh = p.plan.ah != Plan::kNoRequest ? &p.requests[p.plan.ah] : nullptr;
  if (compressed && !wantsIpcomp) return &Counters::bundle_in_drop_ipcomp_policy;
  // ESP transport inside an ESP tunnel: the tunnel must have carried it, and
  // a tunnel may only carry transport ESP the policy asks it to.
  const bool wantsTunnel = p.plan.shape == Shape::kEspInEsp;
  const bool afterTunnel = from.peeled == StepKind::kEspTunnel;
  if (wantsTunnel && !afterTunnel) {
    if (p.requests[p.plan.outer].level != IPSEC_LEVEL_USE) return &Counters::bundle_in_drop_missing_tunnel;
    ++t.counters.bundle_in_without_optional;  // optional: the transport SA alone is enough
  }
  if (afterTunnel) {
    const Sa* tunnel = t.sas.find(from.peeledSa);
    const Request* r = wantsTunnel ? &p.requests[p.plan.outer] : nullptr;
    if (!r || !tunnel || tunnel->src != *r->tunnelSrc || tunnel->dst != *r->tunnelDst ||
        (tunnel->mode != IPSEC_MODE_ANY && tunnel->mode != IPSEC_MODE_TUNNEL) ||
        (r->level == IPSEC_LEVEL_UNIQUE && r->reqid != 0 && r->reqid != tunnel->reqid)) {
      return &Counters::bundle_in_drop_tunnel_policy;
    }
    ++t.counters.bundle_in_packets;
    return nullptr;
  }
  if (!wantsAh) return nullptr;
  if (from.peeled != StepKind::kAhTransport) {
    if (wantsAh->level == IPSEC_LEVEL_USE) {  // optional: ESP alone is enough
      ++t.counters.bundle_in_without_optional;
      return nullptr;
    }
    return &Counters::bundle_in_drop_missing_ah;
  }
  const Sa* ah = t.sas.find(from.peeledSa);
  if (!ah || wantsAh->mode != IPSEC_MODE_TRANSPORT || (ah->mode != IPSEC_MODE_ANY && ah->mode != wantsAh->mode) ||
      (wantsAh->level == IPSEC_LEVEL_UNIQUE && wantsAh->reqid != 0 && wantsAh->reqid != ah->reqid)) {
    return &Counters::bundle_in_drop_ah_policy;
  }
  ++t.counters.bundle_in_packets;
  return nullptr;
}

// NAT-OA (RFC 3948 §3.1.2): the TCP/UDP checksum of a transport packet that
// came in UDP made to verify against the rebuilt header; false: malformed.
bool fixNatOa(const InboundTables& t, const Sa& sa, std::span<std::uint8_t> packet) noexcept {
  const NatT* nat = t.natt.of(sa);
  switch (esp::fixNatOaChecksum(packet, nat ? nat->oa : esp::NatOriginalAddresses{})) {
    case esp::NatOaFixup::kNotNeeded: ++t.counters.natt_in_oa_not_needed; return true;
    case esp::NatOaFixup::kAdjusted: ++t.counters.natt_in_oa_adjusted; return true;
    case esp::NatOaFixup::kZeroed: ++t.counters.natt_in_oa_zeroed; return true;
    case esp::NatOaFixup::kRecomputed: ++t.counters.natt_in_oa_recomputed; return true;
    case esp::NatOaFixup::kMalformed: return false;
  }
  return false;
}

OpenedVerdict openedTransport(const InboundTables& t, std::span<std::uint8_t> buffer, std::uint32_t espOffset,
                              std::uint32_t espLength, Sa& sa, const OpenedFrom& from) noexcept {
  auto d = esp::decapsulateTransport(buffer.subspan(espOffset, espLength), sa.layout);
  if (d.error == esp::EspError::kDummyPacket) return {Kind::kDummy, &Counters::esp_in_dummy};
  if (d.error != esp::EspError::kOk) return dropped(decapDrop(d.error, false));
  const bool compressed = d.nextHeader == esp::kProtoIpcomp;
  if (compressed) {
    if (DropReason r = decompress(t, buffer.subspan(espOffset), sa, d, false)) return dropped(r);
  }
  esp::RestoreResult r;
  if (sa.dst.isV4()) {
    // In UDP (NAT-T) the socket kept no IP header: a fresh one from the outer addresses.
    r = from.udp ? esp::restoreIpv4FromUdp(buffer, espOffset, d, {from.peer.address, sa.dst, from.tos, 64})
                 : esp::restoreIpv4(buffer, espOffset, d);
  } else {
    r = esp::restoreIpv6(buffer, espOffset, d, {from.peer.address, sa.dst, from.tos, from.hopLimit});
  }
  if (!r.ok()) return dropped(&Counters::esp_in_drop_bad_inner);
  const std::span<std::uint8_t> packet = buffer.subspan(r.offset, r.length);
  if (from.udp && !fixNatOa(t, sa, packet)) return dropped(&Counters::transport_in_drop_natt);
  auto flow = esp::parseInnerPacket(packet);
  if (!flow) return dropped(&Counters::esp_in_drop_bad_inner);
  const Policy* p = t.spd.lookup(IPSEC_DIR_INBOUND, *flow);
  if (!p || p->action != IPSEC_POLICY_IPSEC || !transportRequestAllows(*p, sa)) {
    return dropped(&Counters::esp_in_drop_policy, &*flow);
  }
  if (DropReason refused = bundleAllows(t, *p, from, compressed)) return dropped(refused, &*flow);
  return delivered(buffer.data(), packet.data(), packet.size(), true, *flow);
}

// A tunnel's inner packet that is ESP for one of our SAs (a transport SA
// inside the tunnel: `esp/transport// esp/tunnel/A-B/`): where it is and what
// its header says, or nullopt (someone else's ESP through our tunnel is
// delivered as any tunnel payload). IPv4: its header is copied to the
// buffer's start, where ESP transport rebuilds it from (as the raw ESP socket
// leaves it).
std::optional<InnerEsp> innerEspForUs(const InboundTables& t, std::span<std::uint8_t> buffer, std::uint32_t start,
                                      std::uint32_t length) noexcept {
  const std::uint8_t* ip = buffer.data() + start;
  InnerEsp o;
  std::uint32_t headerLength = 0;
  if (length >= 20 && (ip[0] >> 4) == 4) {
    headerLength = (ip[0] & 0x0fu) * 4u;
    if (headerLength < 20 || ip[9] != IPPROTO_ESP) return std::nullopt;
    o.dst = esp::IpAddress::v4(std::span<const std::uint8_t, 4>(ip + 16, 4));
    o.tos = ip[1];
  } else if (length >= 40 && (ip[0] >> 4) == 6) {
    headerLength = 40;
    if (ip[6] != IPPROTO_ESP) return std::nullopt;  // ESP behind extension headers: the tunnel's payload as any other
    o.src = esp::IpAddress::v6(std::span<const std::uint8_t, 16>(ip + 8, 16));
    o.dst = esp::IpAddress::v6(std::span<const std::uint8_t, 16>(ip + 24, 16));
    o.tos = static_cast<std::uint8_t>(((ip[0] & 0x0fu) << 4) | (ip[1] >> 4));
    o.hopLimit = ip[7];
  } else {
    return std::nullopt;
  }
  if (length < headerLength + esp::kEspHeaderLength) return std::nullopt;
  const std::uint32_t spi = (std::uint32_t{ip[headerLength]} << 24) | (std::uint32_t{ip[headerLength + 1]} << 16) |
                            (std::uint32_t{ip[headerLength + 2]} << 8) | ip[headerLength + 3];
  if (!t.sas.findInbound(SADB_SATYPE_ESP, spi, o.dst)) return std::nullopt;
  o.espOffset = start + headerLength;
  o.end = start + length;
  if (o.dst.isV4()) std::memmove(buffer.data(), ip, headerLength);
  return o;
}

OpenedVerdict openedTunnel(const InboundTables& t, std::span<std::uint8_t> buffer, std::uint32_t espOffset,
                           std::uint32_t espLength, Sa& sa, const OpenedFrom& from) noexcept {
  const std::span<std::uint8_t> fromEsp = buffer.subspan(espOffset);
  auto d = esp::decapsulate(fromEsp.first(espLength), sa.layout);
  if (d.error == esp::EspError::kBadNextHeader && d.nextHeader == ipcomp::kProtoIpcomp) {
    if (DropReason r = decompress(t, fromEsp, sa, d, true)) return dropped(r);
  }
  if (d.error == esp::EspError::kDummyPacket) return {Kind::kDummy, &Counters::esp_in_dummy};
  if (d.error != esp::EspError::kOk) return dropped(decapDrop(d.error, true));
  std::uint8_t* inner = fromEsp.data() + d.offset;
  // TFC padding (RFC 4303 §2.7) follows the inner packet: cut at the length
  // its own header gives (a malformed header is parseInnerPacket's to drop).
  if (const std::size_t ipLength = esp::ipPacketLength({inner, d.length}); ipLength != 0 && ipLength < d.length) {
    d.length = ipLength;
    ++t.counters.esp_in_tfc_stripped;
  }
  const std::span<std::uint8_t> packet{inner, d.length};
  auto flow = esp::parseInnerPacket(packet);
  if (!flow) return dropped(&Counters::esp_in_drop_bad_inner);
  switch (esp::ecnDecapsulate(from.tos, esp::trafficClass(packet))) {
    case esp::EcnAction::kKeep: break;
    case esp::EcnAction::kSetCe: esp::markCe(packet); break;
    case esp::EcnAction::kDrop: return dropped(&Counters::esp_in_drop_ecn, &*flow);
  }
  const auto start = static_cast<std::uint32_t>(inner - buffer.data());
  if (flow->proto == IPPROTO_ESP) {
    // Opened again, the SPD asked once that has (bundleAllows).
    if (auto again = innerEspForUs(t, buffer, start, static_cast<std::uint32_t>(d.length))) {
      return openAgain(buffer.data(), inner, d.length, *again);
    }
  }
  const Policy* p = t.spd.lookup(IPSEC_DIR_INBOUND, *flow);
  if (!p) p = t.spd.lookup(IPSEC_DIR_FWD, *flow);
  const bool tunnelAlone = p && p->plan.shape == Shape::kEspInEsp;
  if (tunnelAlone) {
    // The tunnel alone: enough only when the transport ESP inside is `use`
    // (bundleAllows judges from inside the tunnel, so not asked below).
    if (p->requests[0].level != IPSEC_LEVEL_USE) return dropped(&Counters::bundle_in_drop_missing_transport, &*flow);
    ++t.counters.bundle_in_without_optional;
  }
  if (!p || p->action != IPSEC_POLICY_IPSEC || !tunnelRequestAllows(*p, sa)) {
    return dropped(&Counters::esp_in_drop_policy, &*flow);
  }
  if (!tunnelAlone) {  // ESP inside AH asks for both
    if (DropReason refused = bundleAllows(t, *p, from, false)) return dropped(refused, &*flow);
  }
  return delivered(buffer.data(), inner, d.length, false, *flow);
}

// ESP follows the host's headers of a packet AH verified (an ESP+AH bundle):
// opened next in this buffer; the SPD check waits for the packet ESP protects.
OpenedVerdict espAfterAh(std::span<std::uint8_t> buffer, std::uint32_t start, std::uint32_t length, const Sa& ah,
                         std::size_t headerLength, std::uint8_t outerTos) noexcept {
  const std::uint8_t* ip = buffer.data() + start;
  InnerEsp o;
  o.tos = outerTos;
  o.espOffset = start + static_cast<std::uint32_t>(headerLength);
  o.end = start + length;
  if ((ip[0] >> 4) == 4) {
    o.dst = esp::IpAddress::v4(std::span<const std::uint8_t, 4>(ip + 16, 4));
    // ESP transport rebuilds IPv4 from the header at the buffer's start, as
    // the raw ESP socket leaves it.
    std::memmove(buffer.data(), ip, headerLength);
  } else {
    o.src = esp::IpAddress::v6(std::span<const std::uint8_t, 16>(ip + 8, 16));
    o.dst = esp::IpAddress::v6(std::span<const std::uint8_t, 16>(ip + 24, 16));
    o.hopLimit = ip[7];
  }
  if (o.dst != ah.dst) {
    OpenedVerdict v = dropped(&Counters::bundle_in_drop_bad_inner);
    v.saDropOther = false;
    return v;
  }
  return openAgain(buffer.data(), buffer.data() + start, length, o);
}

}  // namespace

OpenedVerdict judgeOpened(const InboundTables& t, std::span<std::uint8_t> buffer, std::uint32_t espOffset,
                          std::uint32_t espLength, Sa& sa, const OpenedFrom& from) noexcept {
  // The descriptor is our own echoed back; one that left the buffer is the broker's fault.
  if (espOffset > buffer.size() || espLength > buffer.size() - espOffset) return dropped(&Counters::esp_in_drop_crypto);
  if (takenByTransport(sa, buffer.subspan(espOffset, espLength))) {
    return openedTransport(t, buffer, espOffset, espLength, sa, from);
  }
  return openedTunnel(t, buffer, espOffset, espLength, sa, from);
}

OpenedVerdict judgeAhVerified(const InboundTables& t, std::span<std::uint8_t> buffer, std::uint32_t start,
                              std::uint32_t length, const Sa& ah, bool tunnel, std::uint8_t outerTos) noexcept {
  if (start > buffer.size() || length > buffer.size() - start) return dropped(&Counters::ah_in_drop_bad_inner);
  const std::span<std::uint8_t> packet = buffer.subspan(start, length);
  if (!tunnel) {
    const auto split = esp::transportSplit(packet);
    if (split && split->protocol == esp::kProtoEsp && !split->fragment) {
      return espAfterAh(buffer, start, length, ah, split->headerLength, outerTos);
    }
  }
  auto flow = esp::parseInnerPacket(packet);
  if (!flow) return dropped(&Counters::ah_in_drop_bad_inner);
  if (tunnel) {
    switch (esp::ecnDecapsulate(outerTos, esp::trafficClass(packet))) {
      case esp::EcnAction::kKeep: break;
      case esp::EcnAction::kSetCe: esp::markCe(packet); break;
      case esp::EcnAction::kDrop: return dropped(&Counters::ah_in_drop_ecn, &*flow);
    }
  }
  const Policy* p = t.spd.lookup(IPSEC_DIR_INBOUND, *flow);
  if (!p && tunnel) p = t.spd.lookup(IPSEC_DIR_FWD, *flow);
  if (!p || p->action != IPSEC_POLICY_IPSEC || !ahRequestAllows(*p, ah, tunnel)) {
    return dropped(&Counters::ah_in_drop_policy, &*flow);
  }
  // The policy asks for ESP inside this AH: AH alone is not enough, unless
  // the ESP is only `use` (what our outbound sends when that SA is missing).
  for (const auto& r : p->requests) {
    if (r.proto != IPPROTO_ESP) continue;
    if (r.level != IPSEC_LEVEL_USE) return dropped(&Counters::bundle_in_drop_missing_esp, &*flow);
    ++t.counters.bundle_in_without_optional;
  }
  return delivered(buffer.data(), packet.data(), packet.size(), false, *flow);
}

}  // namespace ipsec::forwarder
