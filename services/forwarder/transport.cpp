// ipsec-forwarder: ESP transport mode (RFC 4303 §3.1.1), host to host through
// the TUN. ipsecd routes this host's traffic to its transport peers into the
// TUN (a table selected by `not fwmark M`); every socket we send with carries
// M, so our ESP goes out by the main table and never loops back.
//
//   outbound: TUN packet → SPD(out), request mode transport → the SA between
//             the packet's own addresses → the host's header moved in front
//             of ESP (IPv6: with hop-by-hop/routing/fragment headers; the
//             packet core's: transport_frame.cpp) → seal →
//             sent as it is on the header-included socket of its family
//             (an SA with NAT-T: as ESP in UDP, queueTransportUdp)
//   inbound:  raw ESP socket → SPI lookup → open → trailer checks → the IP
//             header rebuilt around the payload (IPv4: the received header;
//             IPv6: source from msg_name, destination from pktinfo, hop limit
//             and traffic class from control messages) → SPD(in) check of the
//             rebuilt packet, whose addresses are the outer ones → TUN write
//             (everything after the open is the packet core's: inbound_open.cpp)
//
// Like the shells (outbound.cpp, inbound.cpp): noexcept, allocation-free, every drop counted by reason.
#include <linux/ipsec.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cstring>

#include "esp/pmtu.h"
#include "esp/transport.h"
#include "forwarder.h"
#include "transport_frame.h"

namespace ipsec::forwarder {
namespace {

socklen_t sockaddrOf(std::span<const std::uint8_t> address, int family, sockaddr_storage& ss) noexcept {
  std::memset(&ss, 0, sizeof ss);
  if (family == AF_INET) {
    auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
    sin->sin_family = AF_INET;
    std::memcpy(&sin->sin_addr, address.data(), 4);
    return sizeof(sockaddr_in);
  }
  auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ss);
  sin6->sin6_family = AF_INET6;
  std::memcpy(&sin6->sin6_addr, address.data(), 16);
  return sizeof(sockaddr_in6);
}

}  // namespace

std::uint8_t Forwarder::hopLimitOf(const msghdr& m) noexcept {
  for (const cmsghdr* c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(const_cast<msghdr*>(&m), const_cast<cmsghdr*>(c))) {
    if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_HOPLIMIT && c->cmsg_len >= CMSG_LEN(sizeof(int))) {
      int h = 0;
      std::memcpy(&h, CMSG_DATA(c), sizeof h);
      return static_cast<std::uint8_t>(h);
    }
  }
  return 64;
}

// The core frames (transport_frame.cpp): judged by the SA's own MTU, with
// UDP counted for NAT-T; IPComp in transport mode when the policy asks.
bool Forwarder::outboundTransport(Worker& w, std::uint32_t buf, std::uint32_t len, Sa& sa, const Policy* p) noexcept {
  std::uint8_t* data = bufferData(w, buf);
  const OutboundTables t = outboundTables();
  const TunnelFacts facts = t.facts(sa);
  const FrameVerdict v = frameEspTransport(t, sa, p, {&facts, natTOf(sa) ? std::size_t{8} : 0},
                                           {data, w.bufferSize}, kHeadroom, len);
  return applyFrame(w, buf, v, {data + kHeadroom, len}, OutboundOrigin{});
}

void Forwarder::queueTransportSend(Worker& w, const proto::CryptoCompletion& c, const Sa& sa) noexcept {
  const BufferContext& ctx = w.contexts[c.bufferIndex];
  std::uint8_t* packet = bufferData(w, c.bufferIndex) + c.offset - ctx.transportHeader;
  const bool v4 = (packet[0] >> 4) == 4;
  if (NatT* nat = natTOf(sa)) return queueTransportUdp(w, c, sa, *nat, packet, v4);
  // Beyond the SA's MTU (the sender was allowed to fragment, pmtu.cpp
  // fitTransport): the sealed packet leaves in fragments with its own
  // Identification (IPv4) or a fragment header (IPv6).
  const std::size_t length = c.length + ctx.transportHeader;
  if (const std::size_t mtu = tunnels_.pathMtu(sa); length > mtu) {
    const esp::IpAddress dst = v4 ? esp::IpAddress::v4(std::span<const std::uint8_t, 4>(packet + 16, 4))
                                  : esp::IpAddress::v6(std::span<const std::uint8_t, 16>(packet + 24, 16));
    sendFragments({packet, length}, mtu, dst);
    freeBuffer(w, c.bufferIndex);
    return;
  }
  SendBatch& b = v4 ? sendHdr4_ : sendHdr6_;
  if (b.fd < 0) b.fd = v4 ? fds_.hdr4.get() : fds_.hdr6.get();
  // The destination as the header names it (with a routing header, the next hop).
  queueSend(b).add(w, c.bufferIndex, {packet, length}, [&](sockaddr_storage& to) {
    return v4 ? sockaddrOf({packet + 16, 4}, AF_INET, to) : sockaddrOf({packet + 24, 16}, AF_INET6, to);
  });
}

// Transport mode behind a NAT (RFC 3948 §3.1.1): the ESP packet goes as the
// payload of UDP from natTSport to natTDport, on the NAT-T UDP socket, the
// kernel writing IP and UDP (extension headers and IP options are not
// carried). IPv4: the host's TOS, TTL and DF bit by control message and the
// socket's DF setting (gro.cpp), the kernel's Identification; fragments, or
// a source port other than the socket's, get our header with UDP in place of
// the host's on the header-included socket (the host's Identification kept).
// IPv6: the traffic class by cmsg.
void Forwarder::queueTransportUdp(Worker& w, const proto::CryptoCompletion& c, const Sa& sa, NatT& nat,
                                  const std::uint8_t* packet, bool v4) noexcept {
  nat.outbound = true;  // keepalives go to this peer
  std::uint8_t* data = bufferData(w, c.bufferIndex);
  std::uint32_t start = c.offset, length = c.length;
  // Our IP and UDP header in front of the ESP (the host's TOS/traffic class and TTL kept).
  esp::OuterHeader h;
  h.src = sa.src;
  h.dst = sa.dst;
  h.udpSport = nat.sport;
  h.udpDport = nat.dport;
  auto writeOuter = [&]() noexcept {
    const auto at = h.udp() ? esp::writeOuterHeader({data, w.bufferSize}, c.offset, c.length, h) : std::nullopt;
    if (!at) {
      ++counters_.transport_out_drop_natt;
      freeBuffer(w, c.bufferIndex);
      return false;
    }
    start = static_cast<std::uint32_t>(*at);
    length = c.length + static_cast<std::uint32_t>(esp::outerHeaderLength(h));
    return true;
  };
  std::uint8_t tos = 0;
  const std::size_t mtu = tunnels_.pathMtu(sa);
  if (v4) {
    h.tos = packet[1];
    h.id = static_cast<std::uint16_t>((packet[4] << 8) | packet[5]);
    h.dontFragment = (packet[6] & 0x40) != 0;
    h.ttl = packet[8];
    if (c.length + esp::outerHeaderLength(h) <= mtu && udp4Sends(nat)) {
      // The NAT-T socket (gro.cpp): the host's TOS, TTL and DF bit, the kernel's Identification.
      queueUdp4(w, c.bufferIndex, {data + c.offset, c.length}, sa,
                {.dport = nat.dport, .tos = h.tos, .dontFragment = h.dontFragment, .ttl = h.ttl});
      ++counters_.transport_out_natt;
      return;
    }
    if (!writeOuter()) return;
  } else {
    if (nat.dport == 0) {
      ++counters_.transport_out_drop_natt;
      freeBuffer(w, c.bufferIndex);
      return;
    }
    tos = static_cast<std::uint8_t>(((packet[0] & 0x0fu) << 4) | (packet[1] >> 4));
  }
  // Beyond the SA's MTU: fragments of the UDP datagram, cut by us on the
  // header-included socket (IPv6: with our IPv6 and UDP header written here,
  // as the tunnel path does, pmtu.cpp).
  if (length + (v4 ? 0u : 48u) > mtu) {
    if (!v4) {
      h.tos = tos;
      h.ttl = packet[7];
      if (!writeOuter()) return;
    }
    if (sendFragments({data + start, length}, mtu, sa.dst)) {
      ++counters_.natt_out_esp_packets;
      ++counters_.transport_out_natt;
    }
    freeBuffer(w, c.bufferIndex);
    return;
  }
  // IPv4 here: our header, from a source port that is not the NAT-T socket's.
  SendBatch& b = queueSend(v4 ? sendUdpOwnHeader4_ : sendUdp6_);
  const std::size_t i = b.add(w, c.bufferIndex, {data + start, length}, [&](sockaddr_storage& to) {
    return esp::toSockaddr({sa.dst, v4 ? std::uint16_t{0} : nat.dport}, to);
  });
  if (!v4) b.setTrafficClass(i, false, tos);
  ++counters_.transport_out_natt;
}

}  // namespace ipsec::forwarder
