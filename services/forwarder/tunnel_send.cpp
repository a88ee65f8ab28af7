// ipsec-forwarder: the send after an ESP tunnel seal (tunnel_send.h). A pure
// function of the SA, the facts lent and the completion; it writes only our
// outer header in front of the sealed ESP, inside the buffer. noexcept,
// allocation-free.
#include "tunnel_send.h"

#include "esp/pmtu.h"
#include "tunnel_options.h"

namespace ipsec::forwarder {
namespace {

TunnelSend dropSend(DropReason reason) noexcept {
  TunnelSend s;
  s.drop = reason;
  return s;
}

// ESP alone on a socket whose kernel writes the header: IPv6 (raw ESP or
// UDP), or IPv4 in UDP from the NAT-T socket.
TunnelSend kernelWritesHeader(const Sa &sa, const TunnelSendFacts &f, const proto::CryptoCompletion &c) noexcept {
  TunnelSend s;
  s.kind = f.nat ? TunnelSend::Kind::kNatT : TunnelSend::Kind::kRawEsp;
  s.start = c.offset;
  s.length = c.length;
  s.to = {sa.dst, f.nat ? f.nat->dport : std::uint16_t{0}};
  s.tos = f.tos;
  s.dontFragment = sa.dst.isV4() && f.outerDf;
  s.natT = f.nat != nullptr;
  return s;
}

}  // namespace

TunnelSend finishTunnelSeal(const Sa &sa, const TunnelSendFacts &f, std::span<std::uint8_t> buffer,
                            const proto::CryptoCompletion &c) noexcept {
  if (c.status != proto::CryptoStatus::kOk) {
    return dropSend(c.status == proto::CryptoStatus::kWrongDirection ? &Counters::out_drop_wrong_direction
                                                                     : &Counters::out_drop_crypto);
  }
  // The broker only echoes our descriptor: the sealed packet must lie in the buffer.
  if (c.offset > buffer.size() || c.length > buffer.size() - c.offset) return dropSend(&Counters::crypto_bad_completion);
  const NatT *nat = f.nat;
  const bool fits = c.length + TunnelOptionsTable::outerOverhead(sa, nat != nullptr) <= f.pathMtu;
  if (fits && sa.dst.isV6()) {
    // The socket sends from its own port, but to port 0 the kernel refuses:
    // drop by name here, as our header would (below) and transport mode does.
    if (nat && nat->dport == 0) return dropSend(&Counters::pmtu_out_drop_header);
    return kernelWritesHeader(sa, f, c);
  }
  if (fits && nat && sendsOnUdp4Socket(*nat, f.udp4Port)) return kernelWritesHeader(sa, f, c);
  // Our header: IPv4 that fits, or any packet beyond the MTU (then without DF).
  esp::OuterHeader h;
  h.src = sa.src;
  h.dst = sa.dst;
  h.tos = f.tos;
  h.dontFragment = f.outerDf && fits;
  h.id = f.ipv4Id;
  TunnelSend s;
  s.tookIpv4Id = true;
  s.natT = nat != nullptr;
  if (nat) {
    h.udpSport = nat->sport;
    h.udpDport = nat->dport;
  }
  const auto start = nat && !h.udp() ? std::nullopt : esp::writeOuterHeader(buffer, c.offset, c.length, h);
  if (!start) {  // a NAT-T SA without both ports, or no room in front of ESP
    s.drop = &Counters::pmtu_out_drop_header;
    return s;
  }
  s.start = static_cast<std::uint32_t>(*start);
  s.length = c.length + static_cast<std::uint32_t>(esp::outerHeaderLength(h));
  s.to = {sa.dst, 0};
  s.tos = f.tos;
  s.dontFragment = h.dontFragment;
  s.kind = fits ? TunnelSend::Kind::kHeaderIncluded : TunnelSend::Kind::kFragments;
  if (!fits) s.mtu = static_cast<std::uint32_t>(f.pathMtu);
  return s;
}

}  // namespace ipsec::forwarder
