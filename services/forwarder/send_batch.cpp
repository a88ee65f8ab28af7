// See send_batch.h.
#include "send_batch.h"

#include <netinet/udp.h>

#include <cstring>

namespace ipsec::forwarder {

bool appendControl(msghdr& m, std::span<char> space, int level, int type, const void* data,
                   std::size_t length) noexcept {
  const std::size_t at = m.msg_control ? m.msg_controllen : 0;
  if (at + CMSG_SPACE(length) > space.size()) return false;
  std::memset(space.data() + at, 0, CMSG_SPACE(length));
  auto* cm = reinterpret_cast<cmsghdr*>(space.data() + at);
  cm->cmsg_level = level;
  cm->cmsg_type = type;
  cm->cmsg_len = CMSG_LEN(length);
  std::memcpy(CMSG_DATA(cm), data, length);
  m.msg_control = space.data();
  m.msg_controllen = at + CMSG_SPACE(length);
  return true;
}

bool appendSegmentSize(msghdr& m, std::span<char> space, std::uint16_t size) noexcept {
  return appendControl(m, space, SOL_UDP, UDP_SEGMENT, &size, sizeof size);
}

}  // namespace ipsec::forwarder
