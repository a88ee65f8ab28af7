// AH (RFC 4302) framing and ICV-input canonicalisation, in place, without
// cryptography; and where ESP/AH goes in an IPv6 packet in transport mode.
//
// Runs in ipsec-forwarder, which holds no keys. The ICV covers the whole IP
// packet with its mutable fields zeroed (or set to their value at the
// destination): the forwarder canonicalises the packet in place, the crypto
// broker MACs it (proto/ring_abi.h kAhSign / kAhVerify), then the forwarder
// puts the saved header bytes back (SavedHeaders). Inbound bytes are
// untrusted: every check yields a named AhError that the forwarder counts
// (ah_in_drop_<error>), never a crash. noexcept, no allocation.
//
// AH header (RFC 4302 §2), offsets from its start:
//   0  next header   1  payload length (32-bit words of AH, minus 2)
//   2  reserved (2, zero)   4  SPI   8  sequence number (low 32 bits)
//   12 ICV (icvLength) and padding to a multiple of 4 (IPv4) / 8 (IPv6)
//
// Mutable fields (RFC 4302 §3.3.3.1), as canonicalise() treats them:
//   IPv4: TOS, flags + fragment offset, TTL, checksum zeroed; options of
//     Appendix A's immutable list (EOL 0, NOP 1, Security 130, Extended
//     Security 133, Commercial Security 134, Router Alert 148, SDB 149) kept,
//     every other option (unknown ones too) zeroed whole, type and length
//     included (§3.3.3.1.1.2); with loose/strict source routing the
//     destination is predictable: the route's last address while hops remain.
//   IPv6: traffic class, flow label, hop limit zeroed; hop-by-hop and
//     destination options whose type has the change-en-route bit (0x20) get
//     their data zeroed (type and length kept, §3.3.3.1.2.2); a type 0 or 2
//     routing header is set to how it will look at the final destination
//     (segments left 0, destination and addresses rotated, RFC 8200 §4.4).
//   The ICV field (icvLength bytes, not the padding) is zeroed on request.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>

namespace ipsec::ah {

inline constexpr std::uint8_t kProtoAh = 51;
inline constexpr std::uint8_t kProtoEsp = 50;
inline constexpr std::size_t kFixedLength = 12;   // next header .. sequence number
inline constexpr std::size_t kIcvOffset = 12;     // from the AH header's start
inline constexpr std::size_t kMaxIcvLength = 32;  // HMAC-SHA2-512-256
inline constexpr unsigned kMaxExtensionHeaders = 8;
// SavedHeaders' capacity: the IP header and every extension header before AH.
inline constexpr std::size_t kMaxSavedHeaders = 512;

enum class AhError : std::uint8_t {
  kOk = 0,
  kTruncated,            // packet, AH header or an extension header cut short
  kBadLength,            // AH payload length inconsistent with the SA's ICV length / family
  kReservedSpi,          // SPI 0 (RFC 4302 §2.4)
  kBadIpHeader,          // not IPv4/IPv6, IHL < 5, total/payload length beyond the buffer
  kBadIpv4Options,       // an option's length is 0, 1 or runs past the header
  kBadExtensionHeader,   // an IPv6 option TLV runs past its header
  kTooManyExtHeaders,    // more than kMaxExtensionHeaders before AH
  kBadRoutingHeader,     // routing header with a length that does not fit its addresses
  kUnsupportedRouting,   // routing type other than 0/2 with segments left > 0
  kFragment,             // a fragment: AH applies to whole packets (RFC 4302 §3.4.1)
  kNoAh,                 // no AH header where expected (protocol/next header not 51)
  kHeadersTooLong,       // headers before AH exceed kMaxSavedHeaders
  kNoHeadroom,           // outbound: no room for the header
  kBadIcvLength,         // icvLength 0 or above kMaxIcvLength (a caller bug)
};

// Stable snake_case name, the suffix of the forwarder's counter names.
std::string_view toString(AhError error) noexcept;

// Bytes of the AH header for an ICV of icvLength: 12 + ICV, padded to a
// multiple of 4 (IPv4) or 8 (IPv6), RFC 4302 §2.2 and §3.3.3.2.1.
constexpr std::size_t headerLength(std::size_t icvLength, bool ipv6) noexcept {
  const std::size_t align = ipv6 ? 8 : 4;
  return (kFixedLength + icvLength + align - 1) / align * align;
}

struct AhHeader {
  std::uint8_t nextHeader = 0;
  std::uint8_t payloadLength = 0;  // as on the wire
  std::uint32_t spi = 0;           // host order
  std::uint32_t seqLow = 0;        // host order
  std::size_t length() const noexcept { return (std::size_t{payloadLength} + 2) * 4; }
};

// Outbound: writes an AH header at out[0, headerLength(icvLength, ipv6)):
// fixed fields, reserved 0, ICV and padding zeroed. kNoHeadroom if `out` is
// shorter, kBadIcvLength. Returns the header's length in *written.
AhError writeHeader(std::span<std::uint8_t> out, std::uint8_t nextHeader, std::uint32_t spi, std::uint32_t seqLow,
                    std::size_t icvLength, bool ipv6, std::size_t* written) noexcept;

// Reads the fixed part of an AH header (no SA known yet). kTruncated if the
// span is shorter than 12 bytes or than the payload length says;
// kReservedSpi. The length is only checked against the SA by checkLength().
AhError parseHeader(std::span<const std::uint8_t> ah, AhHeader& out) noexcept;

// After the SA lookup: the header's length must be headerLength(icvLength,
// ipv6) exactly (RFC 4302 §2.2; §3.4.3 drops anything else). kBadLength.
AhError checkLength(const AhHeader& header, std::size_t icvLength, bool ipv6) noexcept;

// Where AH sits in an IP packet, and what the ICV covers.
struct AhLocation {
  AhError error = AhError::kOk;
  bool ipv6 = false;
  std::size_t ahOffset = 0;        // from the packet's start; == headers before AH
  std::size_t icvOffset = 0;       // ahOffset + 12: what kAhSign/kAhVerify take
  std::size_t packetLength = 0;    // IPv4 total length / 40 + IPv6 payload length
  std::size_t nextHeaderOffset = 0;  // the byte that says 51 (IPv4 protocol or the previous next header)
  AhHeader header{};
  bool ok() const noexcept { return error == AhError::kOk; }
};

// Inbound, before the SA lookup: walks the IP header (and IPv6 extension
// headers: hop-by-hop, destination options, routing; a fragment header is
// kFragment) to the AH header and parses it. Read only.
AhLocation locate(std::span<const std::uint8_t> packet) noexcept;

// Canonicalises the packet in place for the ICV (see the top of this file):
// locate(), checkLength(icvLength), then zero or predict every mutable
// field, and zero the ICV field if zeroIcv (outbound; for kAhVerify the
// broker copies the received ICV and zeroes it itself, so the forwarder
// passes false). The caller saves the headers first (SavedHeaders) if it
// needs them back. On error the packet may be partly canonicalised only if
// the error comes from a bad option or routing header after earlier fields
// were zeroed: callers drop it anyway (inbound) or restore it (outbound).
AhLocation canonicalise(std::span<std::uint8_t> packet, std::size_t icvLength, bool zeroIcv) noexcept;

// A private copy of the headers before AH (IP header, options, extension
// headers: every byte canonicalise() may change except the ICV), to put the
// real values back after the MAC: TTL/hop limit, TOS/traffic class (ECN,
// RFC 6040), the routing header as sent.
class SavedHeaders {
 public:
  // False (nothing saved) if length > kMaxSavedHeaders or the span is shorter.
  bool save(std::span<const std::uint8_t> packet, std::size_t length) noexcept {
    if (length > kMaxSavedHeaders || length > packet.size()) return false;
    std::memcpy(bytes_.data(), packet.data(), length);
    length_ = length;
    return true;
  }
  void restore(std::span<std::uint8_t> packet) const noexcept {
    if (length_ <= packet.size()) std::memcpy(packet.data(), bytes_.data(), length_);
  }
  std::span<const std::uint8_t> bytes() const noexcept { return {bytes_.data(), length_}; }

 private:
  std::array<std::uint8_t, kMaxSavedHeaders> bytes_{};
  std::size_t length_ = 0;
};

// Transport mode: where ESP or AH goes in an IP packet (RFC 4302 §3.1.1,
// RFC 4303 §3.1.1, order of RFC 8200 §4.1). IPv4: after the header and its
// options. IPv6: after hop-by-hop, routing and fragment headers, and after
// destination options that precede a routing header (they are for the
// intermediate destinations); before destination options that are for the
// final destination only and before the upper-layer header. (Linux and
// scapy put ESP/AH after a destination-options header that has no routing
// header behind it; RFC 4303 §3.1.1 allows either place; this follows
// RFC 8200's order.)
struct InsertionPoint {
  AhError error = AhError::kOk;
  std::size_t offset = 0;            // where the new header goes (bytes of headers before it)
  std::size_t nextHeaderOffset = 0;  // the byte to patch to 50/51 (IPv4 protocol at 9)
  std::uint8_t nextHeader = 0;       // its old value: the ESP/AH header's next header
  bool ok() const noexcept { return error == AhError::kOk; }
};
InsertionPoint findInsertionPoint(std::span<const std::uint8_t> packet) noexcept;

}  // namespace ipsec::ah
