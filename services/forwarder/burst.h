// ipsec-forwarder: its unit of I/O — the burst one read, one flush of
// requests and one send batch hold — and the receiving side's messages
// (RecvBurst). The send side's are in send_batch.h.
//
// Trust: the kernel fills a RecvBurst from the network; its readers
// (inbound.cpp, ah.cpp) parse every byte and control message as untrusted.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>

#include "ah/ah.h"
#include "esp/ip.h"

namespace ipsec::forwarder {

inline constexpr std::size_t kBurst = 32;

// One recvmmsg burst straight into pool buffers, shared by every reading
// socket (raw ESP, ESP in UDP, raw AH). Kept as a member: its control
// space is large and a burst must not pay for zeroing it.
struct RecvBurst {
  // pktinfo, traffic class, hop limit, and (raw AH/IPv6) up to three
  // extension headers whose bytes together fit ah::kMaxSavedHeaders.
  static constexpr std::size_t kControlSpace = CMSG_SPACE(sizeof(in6_pktinfo)) + 2 * CMSG_SPACE(sizeof(int)) +
                                               CMSG_SPACE(ah::kMaxSavedHeaders) + 2 * CMSG_SPACE(0);
  std::array<mmsghdr, kBurst> msgs;
  std::array<iovec, kBurst> iovs;
  std::array<std::uint32_t, kBurst> bufs;
  std::array<sockaddr_storage, kBurst> names;
  std::array<std::array<char, kControlSpace>, kBurst> cmsgs;
  std::size_t have = 0;  // buffers taken from the pool
  std::size_t got = 0;   // of them, filled by the kernel
  // The sender of packet i when the socket named an IPv6 one.
  std::optional<esp::IpAddress> source6(std::size_t i) const noexcept;
};

}  // namespace ipsec::forwarder
