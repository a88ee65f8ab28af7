// See ipcomp.h. zlib in raw-DEFLATE mode (windowBits -15, RFC 2394): the
// streams are initialised once in the constructors and reset per packet;
// deflateReset/inflateReset keep their memory, so the data path allocates
// nothing (inflate allocates its window on the first packet only).
#include "ipcomp/ipcomp.h"

#include <zlib.h>

#include <cstring>
#include <new>
#include <stdexcept>
#include <vector>

namespace ipsec::ipcomp {

std::string_view toString(IpcompError error) noexcept {
  switch (error) {
    case IpcompError::kOk: return "ok";
    case IpcompError::kBelowThreshold: return "below_threshold";
    case IpcompError::kIncompressible: return "incompressible";
    case IpcompError::kNoHeadroom: return "no_headroom";
    case IpcompError::kTooLong: return "too_long";
    case IpcompError::kTruncated: return "truncated";
    case IpcompError::kNestedIpcomp: return "nested_ipcomp";
    case IpcompError::kBadData: return "bad_data";
    case IpcompError::kTrailingData: return "trailing_data";
    case IpcompError::kTooLarge: return "too_large";
    case IpcompError::kInternal: return "internal";
  }
  return "unknown";
}

void writeHeader(std::span<std::uint8_t, kHeaderLength> out, std::uint8_t nextHeader, std::uint16_t cpi) noexcept {
  out[0] = nextHeader;
  out[1] = 0;  // flags: reserved, zero on send (RFC 3173 §3)
  out[2] = static_cast<std::uint8_t>(cpi >> 8);
  out[3] = static_cast<std::uint8_t>(cpi);
}

bool parseHeader(std::span<const std::uint8_t> in, Header& out) noexcept {
  if (in.size() < kHeaderLength) return false;
  out.nextHeader = in[0];
  out.flags = in[1];
  out.cpi = static_cast<std::uint16_t>(in[2] << 8 | in[3]);
  return true;
}

struct Compressor::Impl {
  z_stream stream{};
  std::vector<std::uint8_t> scratch;
  ~Impl() { deflateEnd(&stream); }
};

Compressor::Compressor(int level, std::size_t threshold) : impl_(std::make_unique<Impl>()), threshold_(threshold) {
  // memLevel 8 is zlib's default (what Python's zlib.compressobj uses too).
  if (deflateInit2(&impl_->stream, level, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
    impl_->stream.state = nullptr;  // deflateEnd on a failed init is a no-op, but be explicit
    throw std::runtime_error("ipcomp: deflateInit2 failed");
  }
  impl_->scratch.resize(kMaxPayload);
}

Compressor::~Compressor() = default;

CompressResult Compressor::compress(std::span<std::uint8_t> buf, std::size_t off, std::size_t len,
                                    std::uint8_t nextHeader, std::uint16_t cpi) noexcept {
  CompressResult r;
  r.offset = off;
  r.length = len;
  if (off > buf.size() || len > buf.size() - off) {
    r.error = IpcompError::kTooLong;  // a caller bug; nothing touched
    return r;
  }
  if (len > kMaxPayload) {
    r.error = IpcompError::kTooLong;
    return r;
  }
  if (len < threshold_ || len <= kHeaderLength) {
    r.error = IpcompError::kBelowThreshold;
    return r;
  }
  if (off < kHeaderLength) {
    r.error = IpcompError::kNoHeadroom;
    return r;
  }
  z_stream& z = impl_->stream;
  if (deflateReset(&z) != Z_OK) {
    r.error = IpcompError::kInternal;
    return r;
  }
  // Only output that beats the original by more than the header is useful
  // (RFC 3173 §2.2): give deflate exactly that much room; running out of it
  // means "incompressible", which saves compressing to the end.
  const std::size_t room = len - kHeaderLength - 1;
  z.next_in = buf.data() + off;
  z.avail_in = static_cast<uInt>(len);
  z.next_out = impl_->scratch.data();
  z.avail_out = static_cast<uInt>(room);
  const int rc = deflate(&z, Z_FINISH);
  if (rc == Z_OK || rc == Z_BUF_ERROR) {
    r.error = IpcompError::kIncompressible;  // output did not fit in `room`
    return r;
  }
  if (rc != Z_STREAM_END) {
    r.error = IpcompError::kInternal;
    return r;
  }
  const std::size_t out = room - z.avail_out;
  std::memcpy(buf.data() + off, impl_->scratch.data(), out);
  writeHeader(std::span<std::uint8_t, kHeaderLength>(buf.data() + off - kHeaderLength, kHeaderLength), nextHeader,
              cpi);
  r.offset = off - kHeaderLength;
  r.length = kHeaderLength + out;
  return r;
}

struct Decompressor::Impl {
  z_stream stream{};
  std::vector<std::uint8_t> scratch;
  ~Impl() { inflateEnd(&stream); }
};

Decompressor::Decompressor(std::size_t limit)
    : impl_(std::make_unique<Impl>()), limit_(limit < kMaxPayload ? limit : kMaxPayload) {
  if (inflateInit2(&impl_->stream, -15) != Z_OK) {
    impl_->stream.state = nullptr;
    throw std::runtime_error("ipcomp: inflateInit2 failed");
  }
  impl_->scratch.resize(limit_);
}

Decompressor::~Decompressor() = default;

DecompressResult Decompressor::decompress(std::span<const std::uint8_t> packet, std::span<std::uint8_t> out) noexcept {
  DecompressResult r;
  if (!parseHeader(packet, r.header) || packet.size() == kHeaderLength) {
    r.error = IpcompError::kTruncated;
    return r;
  }
  if (r.header.nextHeader == kProtoIpcomp) {
    r.error = IpcompError::kNestedIpcomp;
    return r;
  }
  if (packet.size() - kHeaderLength > kMaxPayload) {
    r.error = IpcompError::kTooLong;
    return r;
  }
  const std::size_t room = out.size() < limit_ ? out.size() : limit_;
  z_stream& z = impl_->stream;
  if (inflateReset(&z) != Z_OK) {
    r.error = IpcompError::kInternal;
    return r;
  }
  z.next_in = const_cast<Bytef*>(packet.data() + kHeaderLength);  // zlib does not write through next_in
  z.avail_in = static_cast<uInt>(packet.size() - kHeaderLength);
  z.next_out = out.data();
  z.avail_out = static_cast<uInt>(room);
  const int rc = inflate(&z, Z_FINISH);
  switch (rc) {
    case Z_STREAM_END:
      if (z.avail_in != 0) {
        r.error = IpcompError::kTrailingData;
        return r;
      }
      r.length = room - z.avail_out;
      return r;
    case Z_BUF_ERROR:
    case Z_OK:
      // Either the output is full (a bomb, or more than the room given) or
      // the input ended before the stream did.
      r.error = z.avail_out == 0 ? IpcompError::kTooLarge : IpcompError::kBadData;
      return r;
    case Z_DATA_ERROR:
    case Z_NEED_DICT:  // raw DEFLATE has no dictionary id; treat as bad data
      r.error = IpcompError::kBadData;
      return r;
    default:
      r.error = IpcompError::kInternal;
      return r;
  }
}

DecompressResult Decompressor::decompressInPlace(std::span<std::uint8_t> buf, std::size_t off,
                                                 std::size_t len) noexcept {
  DecompressResult r;
  if (off > buf.size() || len > buf.size() - off) {
    r.error = IpcompError::kTruncated;
    return r;
  }
  // Inflate into our scratch first: the output overtakes the input in place.
  const std::size_t room = buf.size() - off;
  r = decompress(buf.subspan(off, len),
                 std::span<std::uint8_t>(impl_->scratch.data(), room < impl_->scratch.size() ? room : impl_->scratch.size()));
  if (!r.ok()) return r;
  std::memcpy(buf.data() + off, impl_->scratch.data(), r.length);
  r.offset = off;
  return r;
}

}  // namespace ipsec::ipcomp
