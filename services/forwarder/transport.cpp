// ipsec-forwarder: ESP transport mode (RFC 4303 §3.1.1), host to host through
// the TUN. ipsecd routes this host's traffic to its transport peers into the
// TUN (a table selected by `not fwmark M`); every socket we send with carries
// M, so our ESP goes out by the main table and never loops back.
//
//   outbound: TUN packet → SPD(out), request mode transport → the SA between
//             the packet's own addresses → the host's header moved in front
//             of ESP (IPv6: with hop-by-hop/routing/fragment headers) → seal →
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

#include "clock/clock.h"
#include "esp/pmtu.h"
#include "esp/transport.h"
#include "forwarder.h"
#include "log/log.h"

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

bool Forwarder::outboundTransport(Worker& w, std::uint32_t buf, std::uint32_t len, Sa& sa, const Policy* p,
                                  const Sa* signer) noexcept {
  std::uint8_t* data = bufferData(w, buf);
  auto split = esp::transportSplit({data + kHeadroom, len});
  if (!split) {
    ++counters_.out_drop_bad_inner;
    return false;
  }
  // ESP in transport mode protects whole datagrams only (RFC 4303 §3.1.1);
  // a local fragment means the TUN MTU is too small for the packet.
  if (split->fragment) {
    ++counters_.transport_out_drop_fragment;
    return false;
  }
  // The SA's path MTU (pmtu.cpp): ICMP to the sender, or fragments once
  // sealed. With AH after ESP, the AH SA's MTU and header; inside an ESP
  // tunnel, the tunnel's MTU has judged the packet already (bundle.cpp).
  if (!p || p->plan.shape != Shape::kEspInEsp) {
    const std::size_t extra = signer ? ah::headerLength(signer->layout.icvLength, split->version == 6)
                                     : (natTOf(sa) ? std::size_t{8} : 0);
    TunnelFit fit;
    if (!fitTransport(signer ? *signer : sa, {data + kHeadroom, len}, &sa.layout, split->headerLength, extra, fit)) {
      return false;
    }
  }
  // IPComp in transport mode (bundle.cpp): the upper-layer payload compressed first.
  std::uint32_t off = kHeadroom;
  esp::TransportSplit parts = *split;
  if (p && !compressTransport(*p, sa, w, buf, off, len, parts)) return false;
  const std::uint64_t seq = sa.seqNext;
  auto r = esp::encapsulateTransport({data, w.bufferSize}, off, len, sa.spi, static_cast<std::uint32_t>(seq),
                                     sa.layout, parts);
  if (!r.ok()) {
    ++counters_.out_drop_no_room;
    return false;
  }
  ++sa.seqNext;
  maybeRequestSeq(sa);
  if (sa.firstUse == 0) sa.firstUse = clock::unixSeconds();

  proto::CryptoRequest req{};
  req.cookie = buf;
  req.session = sa.ref.index;
  req.sessionGeneration = sa.ref.generation;
  req.op = proto::CryptoOp::kSeal;
  req.status = proto::CryptoStatus::kPending;
  req.segmentCount = 1;
  req.bufferIndex = buf;
  req.offset = static_cast<std::uint32_t>(r.espOffset);
  req.length = static_cast<std::uint32_t>(r.espLength);
  req.segmentStride = req.length;
  req.seqHigh = static_cast<std::uint32_t>(seq >> 32);
  w.pending.push_back(req);
  BufferContext ctx;
  ctx.use = Use::kOutbound;
  ctx.sa = sa.ref;
  ctx.seq = seq;
  ctx.transportHeader = static_cast<std::uint16_t>(r.headerLength);
  w.contexts[buf] = ctx;
  sa.counters.out_packets++;
  sa.counters.out_bytes += len;
  ++counters_.transport_out_packets;
  if (log::debugEnabled()) {
    log::debug("out transport proto {} len {}: SPI {:#x} seq {}", split->protocol, len, sa.spi, seq);
  }
  return true;
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
  if (const std::size_t mtu = pathMtu(sa, tunnelOf(sa)); length > mtu) {
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
  const std::size_t mtu = pathMtu(sa, tunnelOf(sa));
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
