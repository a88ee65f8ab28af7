// ipsec-forwarder: the outbound packet core for ESP in transport mode
// (RFC 4303 §3.1.1) — what happens to a host's packet once its transport SA
// is chosen (esp_out.h routeOutbound, or a bundle's first stage,
// bundle_frame.h): the split behind the host's headers, the path-MTU rule
// behind them, IPComp of the upper-layer payload (RFC 3173) and the ESP
// framing, as a function of the bytes and what it borrows. It returns a
// verdict (outbound_frame.h): drop, too big with the MTU the ICMP quotes, or
// the seal to queue; transport.cpp applies it. The bytes come from local
// hosts but are parsed as untrusted (tests/fuzz/forwarder/esp_out_fuzz).
#pragma once

#include <cstdint>
#include <span>

#include "esp/transport.h"
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

}  // namespace ipsec::forwarder
