// ESP tunnel-mode framing in place (RFC 4303 §2), without any cryptography.
//
// Runs in ipsec-forwarder, which holds no keys: outbound it builds the ESP
// header and trailer around an inner packet in a pool buffer, leaving the IV
// gap and the ICV space for ipsec-crypto to fill; inbound, after the broker
// has verified the ICV and decrypted in place, it checks the trailer and finds
// the inner packet. Inbound bytes are untrusted even after the ICV verified
// (a peer with the key can still send nonsense): every check yields a named
// EspError that the forwarder counts (esp_in_drop_<error>), never a crash.
// All functions are noexcept and allocate nothing.
//
// Packet layout (offsets from the ESP header):
//   0      SPI (4, network order)
//   4      sequence number, low 32 bits (4, network order)
//   8      IV (ivLength)
//   8+iv   payload | padding 1,2,3,... | pad length | next header   <- encrypted,
//          a multiple of padAlign
//   ...    ICV (icvLength)
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace ipsec::esp {

inline constexpr size_t kEspHeaderLength = 8;
inline constexpr size_t kEspTrailerLength = 2;  // pad length, next header
inline constexpr uint8_t kNextHeaderIpv4 = 4;
inline constexpr uint8_t kNextHeaderIpv6 = 41;
inline constexpr uint8_t kNextHeaderDummy = 59;  // RFC 4303 §2.6 (TFC dummy packet)

// What the SA's transform needs around the payload; the broker reports it when
// it creates the session (crypto.capnp SessionResult).
struct EspLayout {
  uint8_t ivLength = 0;
  uint8_t icvLength = 0;
  uint8_t padAlign = 4;  // cipher block size, at least 4 and a multiple of 4

  // True if padAlign is a multiple of 4 (the trailer must end on a 32-bit
  // boundary, RFC 4303 §2.4) and non-zero.
  constexpr bool valid() const noexcept { return padAlign >= 4 && padAlign % 4 == 0; }
  // Bytes ESP adds before the inner packet.
  constexpr size_t headroom() const noexcept { return kEspHeaderLength + ivLength; }
  // The most bytes ESP adds after the inner packet (largest padding).
  constexpr size_t maxTailroom() const noexcept {
    return size_t{padAlign} - 1 + kEspTrailerLength + icvLength;
  }
};

// Why framing failed. Inbound kinds map one to one to drop counters.
enum class EspError : uint8_t {
  kOk = 0,
  kTruncated,          // shorter than header + IV + trailer + ICV
  kBadLength,          // encrypted part not a multiple of padAlign
  kBadPadding,         // pad length too large, or pad bytes not 1,2,3,...
  kBadNextHeader,      // not 4 (IPv4) or 41 (IPv6) in tunnel mode
  kInnerMismatch,      // next header disagrees with the inner packet's IP version
  kDummyPacket,        // next header 59: a TFC dummy, drop silently
  kReservedSpi,        // SPI 0 (RFC 4303 §2.1 reserves it for local use)
  kNoHeadroom,         // outbound: not enough room before the inner packet
  kNoTailroom,         // outbound: not enough room after it
  kBadInnerPacket,     // outbound: empty or not IPv4/IPv6
  kBadLayout,          // EspLayout::valid() is false (a caller bug)
};

// Stable snake_case name, the suffix of the forwarder's counter names.
std::string_view toString(EspError error) noexcept;

// Where the whole ESP packet (header..ICV) sits in the buffer after encapsulate().
struct EncapResult {
  EspError error = EspError::kOk;
  size_t offset = 0;
  size_t length = 0;
  bool ok() const noexcept { return error == EspError::kOk; }
};

// Outbound tunnel mode. The inner packet is buf[off, off+len). Writes the ESP
// header at off - 8 - ivLength, zeroes the IV gap, appends padding 1,2,3,...,
// pad length and next header (4 or 41 from the inner packet's version nibble),
// and reserves icvLength bytes (left as they were) for the ICV.
EncapResult encapsulate(std::span<uint8_t> buf, size_t off, size_t len, uint32_t spi, uint32_t seqLow,
                        const EspLayout& layout) noexcept;

// As above with an explicit next header (transport mode, or tests).
EncapResult encapsulate(std::span<uint8_t> buf, size_t off, size_t len, uint32_t spi, uint32_t seqLow,
                        const EspLayout& layout, uint8_t nextHeader) noexcept;

struct EspHeader {
  uint32_t spi = 0;     // host order
  uint32_t seqLow = 0;  // host order
};

struct HeaderResult {
  EspError error = EspError::kOk;
  EspHeader header{};
  bool ok() const noexcept { return error == EspError::kOk; }
};

// Inbound, before SA lookup: the first 8 bytes. kTruncated, kReservedSpi.
HeaderResult parseHeader(std::span<const uint8_t> packet) noexcept;

// Where the inner packet sits inside the ESP packet after decapsulate().
struct DecapResult {
  EspError error = EspError::kOk;
  size_t offset = 0;  // from the start of the ESP header
  size_t length = 0;
  uint8_t nextHeader = 0;
  bool ok() const noexcept { return error == EspError::kOk; }
};

// Inbound tunnel mode, after the broker verified the ICV and decrypted in
// place. `esp` is the whole ESP packet, header..ICV.
DecapResult decapsulate(std::span<const uint8_t> esp, const EspLayout& layout) noexcept;

}  // namespace ipsec::esp
