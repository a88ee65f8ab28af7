// IPComp (RFC 3173) with the DEFLATE algorithm (RFC 2394), in place in a pool
// buffer, without per-packet allocation.
//
// Runs in ipsec-forwarder, which holds no keys: IPComp needs none, so it is
// done there and never reaches the crypto broker. Inbound bytes come from the
// network (or, inside ESP/AH, from a peer that holds the key): nothing is
// trusted, every failure is a named IpcompError that the forwarder counts
// (ipcomp_in_drop_<error>), never a crash. A decompression bomb stops at the
// Decompressor's output limit.
//
// Wire format (RFC 3173 §3), 4 bytes before the compressed payload:
//   0  next header (the protocol of the uncompressed payload)
//   1  flags       (reserved: zero on send, ignored on receive)
//   2  CPI         (16 bits, network order; 2 = DEFLATE, the IANA well-known
//                   CPI, RFC 2394 §4.1; negotiated CPIs are >= 256)
// RFC 2394: the payload is raw DEFLATE (RFC 1951): no zlib header or
// trailer, which zlib gives for windowBits -15. Each datagram is compressed
// on its own ("stateless", RFC 3173 §2.1): deflateReset/inflateReset per
// packet, so one z_stream per direction serves every SA.
//
// Threads: a Compressor or Decompressor is used by one thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

namespace ipsec::ipcomp {

inline constexpr std::size_t kHeaderLength = 4;
inline constexpr std::uint8_t kProtoIpcomp = 108;  // IPPROTO_COMP
inline constexpr std::uint16_t kCpiDeflate = 2;    // RFC 2394 §4.1 (SADB_X_CALG_DEFLATE)
// Payloads shorter than this are not compressed: FreeBSD's DEFLATE transform
// has minlen 90 (xform_deflate.c, counted as ipcomps_threshold), the figure
// RFC 2394 §2 arrives at for typical data; below it DEFLATE rarely saves the
// 4 header bytes.
inline constexpr std::size_t kDefaultThreshold = 90;
// An IPv4/IPv6 datagram payload cannot be longer (no jumbograms).
inline constexpr std::size_t kMaxPayload = 65535;

// Every outcome that is not "compressed" / "decompressed", by name. The
// first two are not errors: RFC 3173 §2.2 sends such a packet as it is,
// without an IPComp header (FreeBSD counts them, ipcomps_threshold and
// ipcomps_uncompr).
enum class IpcompError : std::uint8_t {
  kOk = 0,
  kBelowThreshold,   // outbound: payload shorter than the threshold, sent as is
  kIncompressible,   // outbound: compressed + header not smaller, sent as is
  kNoHeadroom,       // outbound: fewer than 4 bytes before the payload
  kTooLong,          // payload (either way) longer than kMaxPayload
  kTruncated,        // inbound: shorter than the header plus one byte
  kNestedIpcomp,     // inbound: next header is IPComp again (compressing compressed
                     // data gains nothing; no sender does it, a bomb-in-a-bomb might)
  kBadData,          // inbound: not a valid raw DEFLATE stream, or it stops short
  kTrailingData,     // inbound: bytes after the end of the DEFLATE stream
  kTooLarge,         // inbound: output would exceed the limit (a bomb) or the room given
  kInternal,         // zlib failed otherwise (should not happen)
};

// Stable snake_case name, the suffix of the forwarder's counter names.
std::string_view toString(IpcompError error) noexcept;

struct Header {
  std::uint8_t nextHeader = 0;
  std::uint8_t flags = 0;
  std::uint16_t cpi = 0;  // host order
};

// Writes the 4 header bytes (flags zero). `out` must hold kHeaderLength.
void writeHeader(std::span<std::uint8_t, kHeaderLength> out, std::uint8_t nextHeader, std::uint16_t cpi) noexcept;
// Reads them; false if `in` is shorter than kHeaderLength.
bool parseHeader(std::span<const std::uint8_t> in, Header& out) noexcept;

struct CompressResult {
  IpcompError error = IpcompError::kOk;
  // Where the packet to send sits: header + compressed payload when
  // compressed(), otherwise the untouched original payload.
  std::size_t offset = 0;
  std::size_t length = 0;
  bool compressed() const noexcept { return error == IpcompError::kOk; }
  // True when the packet goes out without IPComp (not an error, RFC 3173 §2.2).
  bool sendUncompressed() const noexcept {
    return error == IpcompError::kBelowThreshold || error == IpcompError::kIncompressible;
  }
};

class Compressor {
 public:
  // level: zlib's 1..9 (or -1, its default 6). Allocates the z_stream and a
  // kMaxPayload scratch buffer once; throws std::bad_alloc /
  // std::runtime_error if zlib cannot (control plane).
  explicit Compressor(int level = -1, std::size_t threshold = kDefaultThreshold);
  ~Compressor();
  Compressor(const Compressor&) = delete;
  Compressor& operator=(const Compressor&) = delete;

  std::size_t threshold() const noexcept { return threshold_; }
  void setThreshold(std::size_t threshold) noexcept { threshold_ = threshold; }

  // Outbound. The payload is buf[off, off+len) (in tunnel mode the inner
  // packet, nextHeader 4 or 41; in transport mode the upper-layer payload).
  // On success buf[off-4, off-4+result.length) holds the IPComp header and
  // the compressed payload, which is always shorter than the original: the
  // packet only shrinks, no tailroom is needed. On kBelowThreshold and
  // kIncompressible the buffer is unchanged. noexcept, no allocation.
  CompressResult compress(std::span<std::uint8_t> buf, std::size_t off, std::size_t len, std::uint8_t nextHeader,
                          std::uint16_t cpi) noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::size_t threshold_;
};

struct DecompressResult {
  IpcompError error = IpcompError::kOk;
  Header header{};           // as received (flags ignored, RFC 3173 §3)
  std::size_t offset = 0;    // decompressInPlace: where the payload now starts
  std::size_t length = 0;    // bytes of decompressed payload
  bool ok() const noexcept { return error == IpcompError::kOk; }
};

class Decompressor {
 public:
  // limit: the most bytes one datagram may decompress to (a bomb stops
  // there with kTooLarge); at most kMaxPayload. Allocates the z_stream, its
  // 32 KiB window and a `limit` scratch buffer once.
  explicit Decompressor(std::size_t limit = kMaxPayload);
  ~Decompressor();
  Decompressor(const Decompressor&) = delete;
  Decompressor& operator=(const Decompressor&) = delete;

  std::size_t limit() const noexcept { return limit_; }

  // Inbound. `packet` is the IPComp header plus the compressed payload; the
  // payload is inflated into `out` (at most min(limit, out.size()) bytes).
  DecompressResult decompress(std::span<const std::uint8_t> packet, std::span<std::uint8_t> out) noexcept;

  // Inbound, in a pool buffer: the IPComp packet is buf[off, off+len); the
  // decompressed payload replaces it starting at `off` (over the header) and
  // may grow up to the end of `buf`. On failure the buffer is unchanged.
  DecompressResult decompressInPlace(std::span<std::uint8_t> buf, std::size_t off, std::size_t len) noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::size_t limit_;
};

}  // namespace ipsec::ipcomp
