// UDP GRO and GSO for ESP in UDP (RFC 3948) on the NAT-T sockets: the pure
// parts, no I/O, no allocation, noexcept.
//
// Receive (UDP_GRO): with the socket option on, the kernel may hand one
// datagram that holds several UDP payloads of the same flow back to back,
// with a control message (SOL_UDP, UDP_GRO, int) giving the segment size:
// every segment but the last is that long, the last may be shorter. Runs in
// ipsec-forwarder on what recvmmsg filled in: the length, the control
// messages and their int are untrusted (a short or truncated control message,
// a size of 0 or one above the datagram are refused, never split).
//
// Send (UDP_SEGMENT): consecutive ESP packets to the same peer, all of one
// length but the last, may leave as one send that the kernel (or the NIC)
// cuts into datagrams again (gsoRun says how many).
#pragma once

#include <sys/socket.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <span>

namespace ipsec::esp {

// The kernel coalesces at most 64 segments (UDP_GRO_CNT_MAX) and a sender's
// UDP_SEGMENT carries at most 64 or 128 (UDP_MAX_SEGMENTS, by kernel version):
// a datagram claiming more segments than this is refused.
inline constexpr std::size_t kMaxGroSegments = 128;
// What we put in one UDP_SEGMENT send: 64 segments (the older kernels'
// UDP_MAX_SEGMENTS) and a UDP payload that an IPv6 payload length can carry.
inline constexpr std::size_t kMaxGsoSegments = 64;
inline constexpr std::size_t kMaxGsoBytes = 65535 - 8;
// ... and one that an IPv4 total length can carry (its header counts).
inline constexpr std::size_t kMaxGsoBytes4 = 65535 - 20 - 8;

// The UDP_GRO control message of one received datagram.
struct GroControl {
  bool present = false;  // a UDP_GRO control message came
  bool bad = false;      // ... cut short, negative, or the control space was truncated (MSG_CTRUNC)
  std::uint32_t segmentSize = 0;
};
GroControl parseGroControl(const msghdr& msg) noexcept;

enum class GroError : std::uint8_t {
  kOk,
  kBadControl,             // GroControl::bad
  kZeroSegment,            // a segment size of 0
  kSegmentAboveDatagram,   // a segment size larger than the datagram
  kTooManySegments,        // more than kMaxGroSegments
};
const char* toString(GroError error) noexcept;

// How one received datagram of `length` bytes divides into segments: one
// (not coalesced: no control message) or ceil(length / segmentSize).
struct GroSplit {
  GroError error = GroError::kOk;
  std::uint32_t length = 0;       // the whole datagram
  std::uint32_t segmentSize = 0;  // every segment's but the last
  std::uint32_t count = 0;        // segments; 0 when error != kOk
  bool ok() const noexcept { return error == GroError::kOk; }
  std::uint32_t offset(std::size_t i) const noexcept { return static_cast<std::uint32_t>(i) * segmentSize; }
  std::uint32_t segmentLength(std::size_t i) const noexcept {
    return i + 1 < count ? segmentSize : length - offset(i);
  }
};
GroSplit splitGro(std::size_t length, const GroControl& control) noexcept;

// Send side: how many datagrams from `first` on may leave as one UDP_SEGMENT
// send (at least 1): `sameAs(i)` says datagram i goes to datagram first's
// peer with its traffic class; each is as long as the first except the last
// of the run, which may be shorter (and ends it); at most kMaxGsoSegments and
// maxBytes (kMaxGsoBytes, or kMaxGsoBytes4 over IPv4) together.
template <class SameAs>
std::size_t gsoRun(std::span<const iovec> datagrams, std::size_t first, SameAs&& sameAs,
                   std::size_t maxBytes = kMaxGsoBytes) noexcept {
  if (first >= datagrams.size()) return 0;
  const std::size_t size = datagrams[first].iov_len;
  std::size_t total = size;
  std::size_t n = 1;
  while (first + n < datagrams.size() && n < kMaxGsoSegments && size != 0) {
    const std::size_t next = datagrams[first + n].iov_len;
    if (next == 0 || next > size || total + next > maxBytes || !sameAs(first + n)) break;
    total += next;
    ++n;
    if (next < size) break;  // a shorter one ends the run
  }
  return n;
}

}  // namespace ipsec::esp
