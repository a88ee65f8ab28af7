// Tunnel-mode details around ESP (RFC 4301 §8, RFC 4303 §2.7): the outer DF
// bit, the outer IP (and ESP-in-UDP) header written by us, fragmentation of
// the outer packet by the source, the ICMP "fragmentation needed" and ICMPv6
// "packet too big" messages a tunnel sends back to an inner sender, and the
// inner IP length that strips TFC padding.
//
// Runs in ipsec-forwarder. Inner packets come from local applications or the
// network and are trusted for nothing: every reader stays inside its span and
// says "no" (0, nullopt, false) for anything malformed. Everything here is
// noexcept and allocates nothing: the builders write into spans the caller
// owns (pool buffers, a fixed scratch array, a fixed array of fragments).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

#include "esp/esp.h"
#include "esp/ip.h"

namespace ipsec::esp {

// SaParams.dfPolicy: what the outer IPv4 header's DF bit is.
enum class DfPolicy : uint8_t {
  kInherit = 0,  // net.inet.ipsec.dfbit decides
  kClear = 1,
  kSet = 2,
  kCopy = 3,  // copied from the inner IPv4 header (an IPv6 inner packet: set, as Linux does)
};

// net.inet.ipsec.dfbit as FreeBSD numbers it (0 clear, 1 set, 2 copy); any
// other value is taken as copy, our default.
DfPolicy dfPolicyFromSysctl(int64_t value) noexcept;

// The policy an SA runs: its own, or the sysctl's when it says inherit.
DfPolicy effectiveDfPolicy(uint8_t saPolicy, DfPolicy sysctl) noexcept;

// True for an IPv4 packet with DF set. False for IPv6 and malformed bytes.
bool ipv4DontFragment(std::span<const uint8_t> packet) noexcept;

// The outer DF bit of a packet under `policy` (kInherit is resolved by the caller).
bool outerDontFragment(DfPolicy policy, std::span<const uint8_t> inner) noexcept;

// The length the packet's own IP header claims (IPv4 total length, IPv6 40 +
// payload length), or 0 when the header is malformed or claims more than the
// span holds. What is left after it in a decrypted ESP payload is TFC padding.
size_t ipPacketLength(std::span<const uint8_t> packet) noexcept;

// Bytes of an ESP packet (header, IV, payload, padding, trailer, ICV) with an
// inner payload of `innerLength` bytes.
size_t espPacketLength(const EspLayout& layout, size_t innerLength) noexcept;

// The largest inner payload whose ESP packet plus `outerOverhead` (outer IP,
// and UDP for ESP in UDP) fits in `mtu`, or 0 when none does.
size_t maxInnerLength(const EspLayout& layout, size_t mtu, size_t outerOverhead) noexcept;

// Transport mode (RFC 4303 §3.1.1, RFC 4302 §3.1.1): the largest host packet
// (its header included) that still fits `mtu` once protected, when its first
// `headerLength` bytes (IP header and the extension headers that stay in
// front) are kept, ESP with `layout` goes around the rest (no ESP: nullptr)
// and `extra` bytes more are added (an AH header, UDP for NAT-T). 0 when none
// fits. The MTU a local sender must use: what its ICMP says.
size_t maxTransportLength(const EspLayout* layout, size_t mtu, size_t headerLength, size_t extra) noexcept;

// The outer header we write in front of an ESP packet.
struct OuterHeader {
  IpAddress src, dst;   // same family: IPv4 or IPv6 outer
  uint8_t tos = 0;      // IPv4 TOS / IPv6 traffic class (DSCP and ECN)
  bool dontFragment = false;  // IPv4 only
  uint16_t id = 0;      // IPv4 Identification
  uint8_t ttl = 64;     // TTL / hop limit
  uint16_t udpSport = 0, udpDport = 0;  // both non-zero: ESP in UDP (RFC 3948)
  bool udp() const noexcept { return udpSport != 0 && udpDport != 0; }
};

// 20 or 40, plus 8 for ESP in UDP.
size_t outerHeaderLength(const OuterHeader& h) noexcept;

// Writes h in front of the ESP packet buf[espOffset, espOffset + espLength):
// the IPv4 header (checksum included) or IPv6 header, then the UDP header for
// ESP in UDP (checksum 0 over IPv4, RFC 3948 §2.1; computed over IPv6, which
// has no checksum-less UDP by default, RFC 8200 §8.1). Returns where the
// packet now starts, or nullopt when there is no room before espOffset, the
// families disagree, or the packet exceeds what the length fields can say.
std::optional<size_t> writeOuterHeader(std::span<uint8_t> buf, size_t espOffset, size_t espLength,
                                       const OuterHeader& h) noexcept;

// The same IPv4 header (and UDP header) written apart from its packet, at the
// start of `out`, for a packet sent as two iovecs (the header, then the ESP
// packet where it lies: a strided multi-segment buffer has no room in front
// of each segment). IPv4 only: an IPv6 UDP checksum needs the payload.
// Returns the header's length, or nullopt (IPv6, families disagree, `out`
// too short, a packet the length field cannot say).
std::optional<size_t> writeOuterHeaderApart(std::span<uint8_t> out, size_t espLength, const OuterHeader& h) noexcept;

// One fragment: its own header (IPv4: 20 bytes; IPv6: 40 + an 8-byte
// fragment header) followed by `length` bytes of the original packet's
// payload starting at `offset` (from the packet's start). Sent as two iovecs,
// so fragmenting copies no payload.
struct Fragment {
  std::array<uint8_t, 48> header{};
  uint8_t headerLength = 0;
  uint32_t offset = 0;
  uint32_t length = 0;
};

// Splits `packet` (IPv4 with a 20-byte header, or IPv6 with a 40-byte header
// and no extension header in front of what follows it: one we built with
// writeOuterHeader, or a transport-mode packet whose ESP or AH follows the
// host's bare header) into
// fragments of at most `mtu` bytes (RFC 791 §3.2; RFC 8200 §4.5), all with
// Identification `id` (the low 16 bits for IPv4). IPv4 fragments have DF
// clear. Returns how many were written into `out`, or 0 when the packet is
// malformed, `mtu` leaves no room for 8 bytes of payload, `out` is too short,
// or an IPv4 header has options / an IPv6 header is followed by a hop-by-hop,
// routing, fragment or destination options header (those would have to stay
// in front of the fragment header, RFC 8200 §4.5: not done here).
size_t fragmentPacket(std::span<const uint8_t> packet, size_t mtu, uint32_t id, std::span<Fragment> out) noexcept;

// The tunnel's answer to an inner packet it cannot carry whole, to be
// written back to the inner sender (RFC 1191, RFC 8201). The message's source
// is the inner packet's destination: the only address we know routes back
// through the tunnel interface (the host's own addresses are martians when
// they arrive from the TUN), and the sender matches the error by the quoted
// header anyway. Returns the message length, or 0 when none is due: a
// malformed packet, an ICMP error (never an error about an error, RFC 1812
// §4.3.2.7), a non-initial IPv4 fragment, an unspecified or multicast source,
// or `out` too short.
//
// IPv4: type 3 code 4 with next-hop MTU `mtu`, quoting as much of the packet
// as fits in 576 bytes (RFC 1812 §4.3.2.3).
size_t buildFragmentationNeeded(std::span<const uint8_t> inner, uint16_t mtu, std::span<uint8_t> out) noexcept;
// IPv6: type 2 code 0 with MTU max(mtu, 1280), quoting as much of the packet
// as fits in 1280 bytes (RFC 4443 §2.4 (c), §3.2).
size_t buildPacketTooBig(std::span<const uint8_t> inner, uint32_t mtu, std::span<uint8_t> out) noexcept;

// The ICMP error rate limit (a router's icmp_ratelimit, RFC 1812 §4.3.2.8):
// at most `perSecond` messages in each second of a monotonic clock, so that a
// flood of oversized DF packets costs the tunnel a counter each, not an ICMP
// each. A message that turns out not to be due (buildFragmentationNeeded
// returned 0) takes nothing: available() then take() only for one that goes.
class IcmpRateLimit {
 public:
  explicit constexpr IcmpRateLimit(uint32_t perSecond) noexcept : perSecond_(perSecond) {}
  // True when one more message may go at `nowMs`; a new second starts afresh.
  bool available(uint64_t nowMs) noexcept;
  // Counts one message against the current second.
  void take() noexcept { ++thisSecond_; }

 private:
  uint32_t perSecond_;
  uint64_t second_ = 0;
  uint32_t thisSecond_ = 0;
};

// The Internet checksum (RFC 1071) of `data`, folded, not complemented, added to `sum`.
uint32_t checksumAdd(uint32_t sum, std::span<const uint8_t> data) noexcept;
uint16_t checksumFinish(uint32_t sum) noexcept;

}  // namespace ipsec::esp
