// ipsec-forwarder: AH framing in a packet buffer, the byte work of ah.cpp
// without its tables, sockets or rings (so that it can be tested alone).
//
// Runs on the forwarder's data path: noexcept, no allocation. Outbound input
// is our own (the TUN's packet, the SA's addresses); inbound input is
// untrusted and arrives here only after lib/ah's locate() has bounds-checked
// the headers, so these functions check only what they add.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "ah/ah.h"
#include "esp/ip.h"

namespace ipsec::forwarder::ahframe {

// Where the framed IP packet lies in the buffer.
struct Framed {
  ah::AhError error = ah::AhError::kOk;
  std::size_t start = 0;
  std::size_t length = 0;
  bool ok() const noexcept { return error == ah::AhError::kOk; }
};

// The outer header tunnel mode writes: addresses of the SA, TOS/traffic
// class copied from the inner packet, an IPv4 Identification of ours (never 0:
// the kernel would choose one, after the ICV covered it).
struct Outer {
  esp::IpAddress src, dst;
  std::uint8_t tos = 0;
  std::uint16_t ipv4Id = 1;
  std::uint8_t hopLimit = 64;
  bool dontFragment = false;  // IPv4: DF (mutable for AH: outside the ICV, RFC 4302 §3.3.3.1.1.1)
};

// Tunnel mode: outer IPv4/IPv6 header and AH (ICV zero) written in front of
// the inner packet at buf[innerOffset, innerOffset + innerLength).
// kNoHeadroom if they do not fit before it, kBadLength if the result exceeds
// the IP length field. nextHeader 0: IP in IP (4 or 41, from the inner
// version); otherwise AH's next header as given (50: a sealed ESP packet of an
// ESP tunnel, AH in transport mode between the tunnel's ends).
Framed frameTunnel(std::span<std::uint8_t> buf, std::size_t innerOffset, std::size_t innerLength, const Outer& outer,
                   std::uint32_t spi, std::uint32_t seqLow, std::size_t icvLength,
                   std::uint8_t nextHeader = 0) noexcept;

// Transport mode: AH inserted into the host's packet at buf[offset, offset +
// length) where ah::findInsertionPoint says, the headers before it moved
// forward into the headroom, the protocol/next header byte set to 51 and the
// IPv4 total length (and checksum) / IPv6 payload length grown. kFragment for
// a fragment (AH protects whole datagrams), kNoHeadroom, kBadLength.
Framed frameTransport(std::span<std::uint8_t> buf, std::size_t offset, std::size_t length, std::uint32_t spi,
                      std::uint32_t seqLow, std::size_t icvLength) noexcept;

// Inbound transport mode, after verification: removes AH from the packet at
// buf[start, start + length) (ahOffset and nextHeaderOffset as locate()
// found them), moving the headers before it up to close the gap, restoring
// the next header and shrinking the length fields. kTruncated if the AH
// header is not wholly inside.
Framed stripTransport(std::span<std::uint8_t> buf, std::size_t start, std::size_t length, std::size_t ahOffset,
                      std::size_t nextHeaderOffset) noexcept;

// Inbound IPv6 from a raw socket, which hands over the packet from AH on:
// writes in front of buf[at, at + payloadLength) the IPv6 header and the
// extension headers the kernel delivered as control messages (`ext`, in
// order, their own next header bytes as received), the IPv6 next header
// being `firstNextHeader` (51 without extension headers). The flow label is
// not delivered: zero (mutable, outside the ICV). kHeadersTooLong if they do
// not fit before `at`, kBadLength if the payload length would not fit 16 bits.
Framed rebuildIpv6(std::span<std::uint8_t> buf, std::size_t at, std::size_t payloadLength, const esp::IpAddress& src,
                   const esp::IpAddress& dst, std::uint8_t trafficClass, std::uint8_t hopLimit,
                   std::span<const std::uint8_t> ext, std::uint8_t firstNextHeader) noexcept;

// The IPv4 header checksum field recomputed in place (ip: the header start).
void fixIpv4Checksum(std::uint8_t* ip) noexcept;

}  // namespace ipsec::forwarder::ahframe
