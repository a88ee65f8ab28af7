// ipsec-forwarder: the messages a sealed TUN super-packet leaves in (issue 13
// item 1; its send-batch half, issue 12 item 6) — filled from the frame's
// layout (super_frame.h) as a MessageBatch (send_batch.h), the one filler every
// send of the forwarder uses. Three shapes:
//   ESP in UDP on a NAT-T socket: runs of good segments with one traffic
//     class (and IPv4 one DF bit) as one UDP_SEGMENT message each, the kernel
//     cutting it at the stride, when UDP GSO is on; else one message each;
//   plain ESP over IPv6 that fits: the kernel's raw socket writes the header,
//     one message per segment, its traffic class by cmsg;
//   IPv4 with our own outer header (pmtu.cpp's DF policy; ESP in UDP from a
//     port other than the NAT-T socket's): a header of its own beside the
//     buffer per segment, two iovecs.
// No I/O and no counters: super_packet.cpp sends the messages and counts.
//
// Trust: the layout is our own (the frame), the failed mask the broker's
// word, read only to skip segments, so nothing here points outside the
// segments the frame put in the buffer.
#pragma once

#include <netinet/in.h>
#include <linux/if_packet.h>
#include <sys/socket.h>

#include <array>
#include <cstdint>

#include "natt_peers.h"
#include "send_batch.h"
#include "super_frame.h"
#include "tables.h"

namespace ipsec::forwarder {

// The traffic class, IPv4 NAT-T's source address, the segment size.
inline constexpr std::size_t kSuperControlSpace =
    CMSG_SPACE(sizeof(int)) + CMSG_SPACE(sizeof(in_pktinfo)) + kSegmentControlSpace;

// Per message: [our header,] the ESP packet(s).
class SuperSend : public MessageBatch<proto::kMaxSegments, kSuperControlSpace, 2> {
 public:
  std::array<std::array<std::uint8_t, 28>, proto::kMaxSegments> headers{};  // IPv4 (+ UDP)
  std::array<std::uint8_t, proto::kMaxSegments> segments{};      // ESP packets in message i
  std::array<std::uint32_t, proto::kMaxSegments> segmentSize{};  // message i's UDP_SEGMENT size (0: none)
  std::array<bool, proto::kMaxSegments> dontFragment{};          // IPv4 NAT-T: message i's DF bit

  // ESP in UDP to (sa.dst, dport): frame f's good segments (failed: bit i,
  // segment i) in data, with gso in runs (udpRun).
  void fillUdp(const SuperFrame& f, std::uint8_t* data, std::uint64_t failed, const Sa& sa, std::uint16_t dport,
               bool gso) noexcept;
  // Plain ESP over IPv6: one message per good segment.
  void fillRaw6(const SuperFrame& f, std::uint8_t* data, std::uint64_t failed, const Sa& sa) noexcept;
  // IPv4 with our own header (with nat: IPv4 and UDP), each taking the next
  // Identification from ipId. How many good segments had nowhere to go (a
  // NAT-T SA without ports: the caller counts them).
  std::size_t fillWithHeaders4(const SuperFrame& f, std::uint8_t* data, std::uint64_t failed, const Sa& sa,
                               const NatT* nat, std::uint16_t& ipId) noexcept;
  // esp_send = packet: every message filled goes to this next hop on the
  // packet socket instead (plain ESP with our header alone).
  void sendToNextHop(const sockaddr_ll& hop) noexcept;

  // The good segments from i on that one UDP_SEGMENT message carries: same
  // traffic class and DF bit, at most kMaxGsoSegments and maxBytes together
  // (only the frame's last segment is shorter than the stride, so the kernel
  // cuts them where the frame put them). 1 without gso.
  static std::size_t udpRun(const SuperFrame& f, std::uint64_t failed, std::uint16_t i, std::size_t maxBytes,
                            bool gso) noexcept;

 private:
  sockaddr_storage to_{};
  socklen_t toLength_ = 0;
  // Empties the batch; every message goes to `to`.
  void begin(const esp::IpAddress& to, std::uint16_t port) noexcept;
  std::size_t addSegments(std::span<const iovec> parts, std::uint8_t segments) noexcept;
};

}  // namespace ipsec::forwarder
