// See udp_gro.h.
#include "esp/udp_gro.h"

#include <netinet/in.h>
#include <netinet/udp.h>

#include <cstring>

namespace ipsec::esp {

GroControl parseGroControl(const msghdr& msg) noexcept {
  GroControl out;
  // Control messages cut short may have lost the UDP_GRO one: the datagram
  // cannot be told from a coalesced one.
  if (msg.msg_flags & MSG_CTRUNC) out.bad = true;
  auto& m = const_cast<msghdr&>(msg);  // CMSG_NXTHDR only reads it
  for (cmsghdr* c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
    if (c->cmsg_level != SOL_UDP || c->cmsg_type != UDP_GRO) continue;
    out.present = true;
    const std::size_t dataLen = c->cmsg_len >= CMSG_LEN(0) ? c->cmsg_len - CMSG_LEN(0) : 0;
    int size = 0;
    if (dataLen < sizeof size) {
      out.bad = true;
      continue;
    }
    std::memcpy(&size, CMSG_DATA(c), sizeof size);
    if (size < 0) {
      out.bad = true;
      continue;
    }
    out.segmentSize = static_cast<std::uint32_t>(size);
  }
  return out;
}

const char* toString(GroError error) noexcept {
  switch (error) {
    case GroError::kOk: return "ok";
    case GroError::kBadControl: return "bad control message";
    case GroError::kZeroSegment: return "segment size 0";
    case GroError::kSegmentAboveDatagram: return "segment size above the datagram";
    case GroError::kTooManySegments: return "too many segments";
  }
  return "?";
}

GroSplit splitGro(std::size_t length, const GroControl& control) noexcept {
  GroSplit s;
  if (length > UINT32_MAX) {
    s.error = GroError::kSegmentAboveDatagram;  // no datagram is this long
    return s;
  }
  s.length = static_cast<std::uint32_t>(length);
  if (control.bad) {
    s.error = GroError::kBadControl;
    return s;
  }
  if (!control.present) {
    s.segmentSize = s.length;
    s.count = 1;
    return s;
  }
  if (control.segmentSize == 0) {
    s.error = GroError::kZeroSegment;
    return s;
  }
  if (control.segmentSize > length) {
    s.error = GroError::kSegmentAboveDatagram;
    return s;
  }
  const std::size_t count = (length + control.segmentSize - 1) / control.segmentSize;
  if (count > kMaxGroSegments) {
    s.error = GroError::kTooManySegments;
    return s;
  }
  s.segmentSize = control.segmentSize;
  s.count = static_cast<std::uint32_t>(count);
  return s;
}

}  // namespace ipsec::esp
