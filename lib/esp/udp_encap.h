// ESP in UDP (RFC 3948): what a datagram on the NAT-T port is, and the small
// pieces of socket plumbing the forwarder and ipsecd share for it.
//
// Runs in ipsec-forwarder on untrusted UDP payloads (classifyUdpPayload,
// parseUdpControl, endpointFrom) and in ipsecd when it opens the NAT-T sockets
// (natTSteeringProgram). Pure functions: no I/O, no allocation, noexcept.
//
// A datagram on port 4500 is one of (RFC 3948 §2):
//   - a NAT keepalive: exactly one byte 0xFF (§2.3);
//   - an IKE message: the first four bytes are zero, the non-ESP marker (§2.2);
//   - ESP: an ESP header at offset 0, whose SPI can never be zero (§2.1).
// Anything else (shorter than an ESP header, SPI 0 without being a whole
// marker) is malformed.
#pragma once

#include <linux/filter.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

#include "esp/ip.h"

namespace ipsec::esp {

inline constexpr uint8_t kNatKeepalive = 0xff;
inline constexpr size_t kNonEspMarkerLength = 4;
inline constexpr uint16_t kNatTPort = 4500;

enum class UdpPayloadKind : uint8_t {
  kEsp,        // ESP header at offset 0
  kKeepalive,  // one byte 0xFF
  kIke,        // non-ESP marker: belongs to the IKE daemon
  kBad,        // too short for ESP, or otherwise not one of the above
};

// Classifies a UDP payload received on the NAT-T port.
UdpPayloadKind classifyUdpPayload(std::span<const uint8_t> payload) noexcept;
const char* toString(UdpPayloadKind kind) noexcept;

// An address and a UDP port (host order).
struct UdpEndpoint {
  IpAddress address;
  uint16_t port = 0;
  friend bool operator==(const UdpEndpoint&, const UdpEndpoint&) = default;
};

// The endpoint in a sockaddr a kernel filled in (msg_name of recvmmsg):
// AF_INET or AF_INET6 of the right length, else nullopt. An IPv4-mapped IPv6
// address stays IPv6: the NAT-T sockets are V6ONLY, so none should arrive.
std::optional<UdpEndpoint> endpointFrom(const sockaddr_storage& ss, socklen_t length) noexcept;
// Fills ss and returns its length (sizeof sockaddr_in or sockaddr_in6).
socklen_t toSockaddr(const UdpEndpoint& e, sockaddr_storage& ss) noexcept;

// What the control messages of one received datagram say: the local address
// it was sent to (IP_PKTINFO / IPV6_PKTINFO) and the outer TOS or traffic
// class (IP_TOS / IPV6_TCLASS). dst is nullopt when no pktinfo came.
struct UdpControl {
  std::optional<IpAddress> dst;
  uint8_t tos = 0;
};
UdpControl parseUdpControl(const msghdr& msg) noexcept;

// The classic BPF program for SO_ATTACH_REUSEPORT_CBPF on the NAT-T port:
// the kernel runs it with the UDP payload at offset 0 (sock_reuseport.c
// run_bpf_filter pulls the UDP header first) and takes the result as an
// index into the port's reuseport group. It answers `ikeIndex` (the IKE
// daemon's socket) for a payload of at least 4 bytes starting with the
// non-ESP marker and the other index (ours) for anything else, keepalives
// included. An index with no socket behind it makes the kernel fall back to
// its hash: the only member left gets everything.
// Index order is join order, and either party may come first: the one that
// finds the port free binds alone (index 0) and the one that joins it is
// index 1 and attaches the program for its role (ipsecd's openNatTSocket,
// tools/preload/udp_preload.c, which carries a C copy of this program).
inline constexpr uint32_t kReuseportIndexEsp = 0;
inline constexpr uint32_t kReuseportIndexIke = 1;
std::array<sock_filter, 7> natTSteeringProgram(uint32_t ikeIndex = kReuseportIndexIke) noexcept;

}  // namespace ipsec::esp
