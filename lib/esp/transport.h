// ESP transport mode (RFC 4303 §3.1.1) in place, without any cryptography.
//
// Runs in ipsec-forwarder. Outbound, a host's own packet read from the TUN
// keeps its IP header (and, for IPv6, the extension headers that must stay
// in front: hop-by-hop, routing, fragment, and destination options that come
// before a routing header); ESP goes around the rest. Inbound, after the
// broker verified and decrypted, the IP header is rebuilt around the payload
// so that the packet can be written to the TUN as the peer's own packet.
// Inbound bytes are untrusted: every check yields an EspError, never a crash.
// All functions are noexcept and allocate nothing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

#include "esp/esp.h"
#include "esp/ip.h"

namespace ipsec::esp {

inline constexpr uint8_t kProtoEsp = 50;
inline constexpr uint8_t kProtoIpcomp = 108;

// Where ESP goes in a packet sent in transport mode.
struct TransportSplit {
  uint8_t version = 0;          // 4 or 6
  size_t headerLength = 0;      // bytes that stay in front of ESP
  size_t nextHeaderOffset = 0;  // the byte naming what follows them (IPv4 protocol, or a next header field)
  uint8_t protocol = 0;         // its value: what ESP will carry
  size_t totalLength = 0;       // the packet's own length (IPv4 total length, IPv6 40 + payload length)
  bool fragment = false;        // an IPv4 fragment, or an IPv6 packet with a fragment header
};

// Reads the headers of an IPv4/IPv6 packet; nullopt for anything malformed
// (as parseInnerPacket rejects it) or an IPv6 chain longer than 8 headers.
std::optional<TransportSplit> transportSplit(std::span<const uint8_t> packet) noexcept;

// Where the parts sit in the buffer after encapsulateTransport().
struct TransportEncapResult {
  EspError error = EspError::kOk;
  size_t headerOffset = 0;  // start of the packet to send (the kept headers)
  size_t headerLength = 0;
  size_t espOffset = 0;     // the ESP packet, header..ICV: what the broker seals
  size_t espLength = 0;
  bool ok() const noexcept { return error == EspError::kOk; }
};

// Outbound. The packet is buf[off, off+len), split as `split` says. Moves the
// kept headers forward by the ESP header and IV, frames ESP around the rest
// (next header = split.protocol), names ESP (50) in the kept headers and sets
// the lengths: IPv4 total length and header checksum, IPv6 payload length.
TransportEncapResult encapsulateTransport(std::span<uint8_t> buf, size_t off, size_t len, uint32_t spi,
                                          uint32_t seqLow, const EspLayout& layout,
                                          const TransportSplit& split) noexcept;

// Inbound, after the broker verified and decrypted in place: the trailer
// checks of decapsulate(), but any next header is a payload in transport mode
// (a TFC dummy, 59, is still kDummyPacket).
DecapResult decapsulateTransport(std::span<const uint8_t> esp, const EspLayout& layout) noexcept;

// Where the rebuilt packet sits in the buffer.
struct RestoreResult {
  EspError error = EspError::kOk;
  size_t offset = 0;
  size_t length = 0;
  bool ok() const noexcept { return error == EspError::kOk; }
};

// Inbound IPv4: buf holds the received datagram with its IP header at 0 and
// the ESP packet at espOffset (the header length, or after a UDP header for
// NAT-T); d is decapsulateTransport()'s result for that ESP packet. Moves the
// IP header (options included) up to the payload, sets protocol = next header,
// total length and checksum.
RestoreResult restoreIpv4(std::span<uint8_t> buf, size_t espOffset, const DecapResult& d) noexcept;

// Inbound IPv6 (the raw socket gave the packet without its header): writes a
// fresh IPv6 header in front of the payload at espOffset + d.offset, moving
// the payload up first if there are fewer than 40 bytes before it.
struct Ipv6HeaderFields {
  IpAddress src, dst;
  uint8_t trafficClass = 0;
  uint8_t hopLimit = 64;
};
RestoreResult restoreIpv6(std::span<uint8_t> buf, size_t espOffset, const DecapResult& d,
                          const Ipv6HeaderFields& fields) noexcept;

// The IPv4 header checksum (RFC 791) over header[0, length), the checksum
// field taken as zero.
uint16_t ipv4HeaderChecksum(std::span<const uint8_t> header) noexcept;

}  // namespace ipsec::esp
