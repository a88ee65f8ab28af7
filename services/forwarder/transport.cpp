// ipsec-forwarder: ESP transport mode (RFC 4303 §3.1.1), host to host through
// the TUN. ipsecd routes this host's traffic to its transport peers into the
// TUN (a table selected by `not fwmark M`); every socket we send with carries
// M, so our ESP goes out by the main table and never loops back.
//
//   outbound: TUN packet → SPD(out), request mode transport → the SA between
//             the packet's own addresses → the host's header moved in front
//             of ESP (IPv6: with hop-by-hop/routing/fragment headers; the
//             packet core's: transport_frame.cpp) → seal → the send the
//             core decides (finishTransportSeal): as it is on the
//             header-included socket of its family, whole or in fragments,
//             or for an SA with NAT-T as ESP in UDP (queueTransportUdp)
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

// The core decides (transport_frame.cpp finishTransportSeal): which socket,
// to where, which bytes; this queues it on the batch of that socket.
void Forwarder::queueTransportSend(Worker& w, const proto::CryptoCompletion& c, const Sa& sa) noexcept {
  if (NatT* nat = natTOf(sa)) nat->outbound = true;  // keepalives go to this peer
  std::uint8_t* data = bufferData(w, c.bufferIndex);
  const TransportSendFacts facts{w.contexts[c.bufferIndex].transportHeader, udp4Port_};
  const TransportSend s = finishTransportSeal(outboundTables(), sa, facts, {data, w.bufferSize}, c);
  const std::span<std::uint8_t> bytes{data + s.start, s.length};
  const bool v4 = s.to.address.isV4();
  switch (s.kind) {
    case TransportSend::Kind::kDrop: countDrop(counters_, s.drop); break;
    case TransportSend::Kind::kFragments:
      if (sendFragments(bytes, s.mtu, s.to.address) && s.natT) {
        ++counters_.natt_out_esp_packets;
        ++counters_.transport_out_natt;
      }
      break;
    case TransportSend::Kind::kNatT:
      queueTransportUdp(w, c.bufferIndex, s, sa);
      return;
    case TransportSend::Kind::kHeaderIncluded: {
      SendBatch& b = s.natT ? sendUdpOwnHeader4_ : (v4 ? sendHdr4_ : sendHdr6_);
      if (b.fd < 0) b.fd = v4 ? fds_.hdr4.get() : fds_.hdr6.get();
      queueSend(b).add(w, c.bufferIndex, bytes, [&](sockaddr_storage& to) { return esp::toSockaddr(s.to, to); });
      if (s.natT) ++counters_.transport_out_natt;
      return;
    }
  }
  freeBuffer(w, c.bufferIndex);
}

// ESP alone on the NAT-T socket of its family (RFC 3948 §3.1.1), the kernel
// writing IP and UDP. IPv4 (gro.cpp): the host's TOS, TTL and DF bit by
// control message and the socket's DF setting, the kernel's Identification.
// IPv6: the traffic class by control message.
void Forwarder::queueTransportUdp(Worker& w, std::uint32_t buf, const TransportSend& s, const Sa& sa) noexcept {
  const std::span<std::uint8_t> esp{bufferData(w, buf) + s.start, s.length};
  if (s.to.address.isV4()) {
    queueUdp4(w, buf, esp, sa, {.dport = s.to.port, .tos = s.tos, .dontFragment = s.dontFragment, .ttl = s.ttl});
  } else {
    SendBatch& b = queueSend(sendUdp6_);
    const std::size_t i = b.add(w, buf, esp, [&](sockaddr_storage& to) { return esp::toSockaddr(s.to, to); });
    b.setTrafficClass(i, false, s.tos);
  }
  ++counters_.transport_out_natt;
}

}  // namespace ipsec::forwarder
