// ipsec-forwarder: the outbound packet core for ESP in transport mode
// (RFC 4303 §3.1.1) — what happens to a host's packet once its transport SA
// is chosen (esp_out.h routeOutbound, or a bundle's first stage,
// bundle_frame.h): the split behind the host's headers, the path-MTU rule
// behind them, IPComp of the upper-layer payload (RFC 3173) and the ESP
// framing, as a function of the bytes and what it borrows. It returns a
// verdict (outbound_frame.h): drop, too big with the MTU the ICMP quotes, or
// the seal to queue; and once the broker has sealed, the send (TransportSend):
// which socket, to where, which bytes, or a drop. transport.cpp applies both.
// The bytes come from local hosts but are parsed as untrusted, and the
// broker's completion is checked against the kept header
// (tests/fuzz/forwarder/esp_out_fuzz).
#pragma once

#include <cstdint>
#include <span>

#include "esp/transport.h"
#include "esp/udp_encap.h"
#include "outbound_frame.h"

namespace ipsec::forwarder {

struct TransportJudge {
  const TunnelFacts *facts = nullptr;  // the SA that judges the MTU (nullptr:
                                       // judged already, inside an ESP tunnel)
  std::size_t extra = 0;               // bytes added besides ESP: UDP for NAT-T, AH's header in ESP+AH
};

// The ESP transport SA `sa` seals the host's packet at buffer[offset,
// offset+length); `policy` (nullptr: none) may ask for IPComp in transport
// mode, compressed with an IPComp SA between sa's ends.
FrameVerdict frameEspTransport(const OutboundTables &t, Sa &sa, const Policy *policy, const TransportJudge &judge,
                               std::span<std::uint8_t> buffer, std::uint32_t offset, std::uint32_t length) noexcept;

// The MTU rule of transport mode (ESP, AH, ESP+AH): nothing goes in front of
// the host's header, so the sender's MTU is the SA's less what goes behind it
// (`esp`: ESP's layout, nullptr for AH alone; headerLength: the host's kept
// headers; extra: AH, UDP). As a tunnel's inner packet (fitInnerPacket): DF
// or IPv6 above 1280 is too big (false, `limit` set for the ICMP); the rest
// is fragmented once protected, beyond fit.mtu. No TFC, no outer DF.
bool fitTransportPacket(const TunnelFacts &facts, std::span<const std::uint8_t> packet, const esp::EspLayout *esp,
                        std::size_t headerLength, std::size_t extra, TunnelFit &fit, std::size_t &limit) noexcept;

// The broker has sealed a transport-mode packet: how it leaves. The bytes
// are buffer[start, start+length); `to` is where they go.
struct TransportSend {
  enum class Kind : std::uint8_t {
    kDrop,            // counted under `drop`
    kHeaderIncluded,  // an IP packet as it is, on the header-included socket
                      // of to's family (to.port 0): the host's header, or
                      // for ESP in UDP over IPv4 ours with UDP (natT)
    kNatT,            // ESP alone, on the NAT-T UDP socket of to's family,
                      // the kernel writing IP and UDP: TOS / traffic class
                      // `tos`; IPv4 also `ttl` and `dontFragment`, from the
                      // SA's source address
    kFragments,       // an IP packet cut into fragments of at most `mtu`, on
                      // the header-included socket (its own IPv4
                      // Identification kept)
  };
  Kind kind = Kind::kDrop;
  DropReason drop = nullptr;
  std::uint32_t start = 0, length = 0, mtu = 0;
  esp::UdpEndpoint to;
  std::uint8_t tos = 0;
  std::uint8_t ttl = 0;  // kNatT over IPv4: the host's (0: the socket's)
  bool dontFragment = false;
  bool natT = false;  // ESP in UDP: counted under transport_out_natt once sent
                      // (fragments: also natt_out_esp_packets, once cut)
};

// What the shell lends the send decision besides the tables.
struct TransportSendFacts {
  std::uint16_t transportHeader = 0;  // the buffer context's: the host's header kept in front of ESP
  std::uint16_t udp4Port = 0;         // the IPv4 NAT-T socket's port: it sends for an SA whose source
                                      // port this is (else our IPv4 and UDP header, from another port)
};

// c: the broker's completion of sa's seal (any status; the caller found sa
// still installed). Only our own record says where the packet is: the
// completion must leave room for the kept header before it and lie in the
// buffer, and the kept header must be of sa's family and name the sealed
// length (encapsulateTransport set it). Without NAT-T the packet goes as it
// is, to the destination its header names (with an IPv6 routing header, the
// next hop), whole or beyond sa's path MTU in fragments. With NAT-T (RFC 3948
// §3.1.1) it goes as ESP in UDP from the NAT-T peer's source port to its
// destination port, without the host's IP options or extension headers: on
// the NAT-T socket when it fits (IPv4: only if that socket has the SA's
// source port), else our IP and UDP header written in front of ESP here,
// over the host's (its TOS/traffic class, TTL/hop limit, IPv4 Identification
// and DF kept), sent whole (IPv4) or in fragments.
TransportSend finishTransportSeal(const OutboundTables &t, const Sa &sa, const TransportSendFacts &facts,
                                  std::span<std::uint8_t> buffer, const proto::CryptoCompletion &c) noexcept;

}  // namespace ipsec::forwarder
