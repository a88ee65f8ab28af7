// Plain ESP over IPv4 received through a PACKET_RX_RING (issue 13 item 3):
// the ring's geometry and socket filters, shared by ipsecd (which creates the
// AF_PACKET socket and its ring) and the forwarder (which maps it and reads
// its frames), and the parser of one ring frame.
//
// Trust: a frame's tpacket2_hdr is written by the kernel but lives in memory
// the forwarder shares with it, so its offsets are checked like any input;
// the packet inside is the network's and hostile. The ring sees packets
// before the IP stack does (ip_rcv's checks have not run): the parser checks
// the IPv4 header itself (version, lengths, checksum) and cuts the link
// layer's trailing padding. Pure functions: no I/O, no allocation, noexcept.
#pragma once

#include <linux/filter.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "esp/ip.h"

namespace ipsec::esp {

// TPACKET_V2: the kernel signals every frame (V3 wakes the reader only when a
// block is retired, up to its timeout later: a millisecond added to a ping).
// 4096 frames of 2 KiB (a packet of up to 1968 bytes: an outer MTU of 1500
// and some) in 64 KiB blocks, 8 MiB: as many small packets as the raw
// socket's 4 MiB SO_RCVBUF queues (a frame per packet, whatever its size).
inline constexpr std::uint32_t kEspRingFrameSize = 2048;
inline constexpr std::uint32_t kEspRingBlockSize = 65536;
inline constexpr std::uint32_t kEspRingBlocks = 128;
inline constexpr std::uint32_t kEspRingFrames = kEspRingBlocks * (kEspRingBlockSize / kEspRingFrameSize);
inline constexpr std::size_t kEspRingBytes = std::size_t{kEspRingBlockSize} * kEspRingBlocks;

// The ring socket's filter (SOCK_DGRAM: the packet starts at its IPv4
// header): IPv4 protocol 50 addressed to this host (not another host's seen
// in promiscuous mode, not our own on its way out), whole.
std::array<sock_filter, 10> espRingFilter() noexcept;
// The raw ESP/IPv4 socket's filter while the ring is on: nothing. The socket
// stays so that the kernel has a listener for protocol 50 (no ICMP protocol
// unreachable) but queues and copies nothing.
std::array<sock_filter, 1> dropAllFilter() noexcept;

enum class RingFrameError : std::uint8_t {
  kNone,
  kBadFrame,   // the frame header's offsets or lengths do not fit the frame
  kTruncated,  // the packet was longer than the frame holds
  kBadIp,      // not a well-formed IPv4 header (version, lengths, checksum)
  kNotEsp,     // protocol other than 50 (the filter lets none through)
  kFragment,   // an outer fragment: the kernel reassembles them for raw sockets, not for the ring
};

// What one ring frame holds: on kNone, an IPv4 ESP packet (trailing link
// padding cut), where its ESP header starts, its destination and TOS.
struct RingEsp {
  RingFrameError error = RingFrameError::kNone;
  std::span<const std::uint8_t> packet;
  std::uint32_t espOffset = 0;
  IpAddress dst;
  std::uint8_t tos = 0;
};

// frame: one whole ring frame (kEspRingFrameSize bytes), its tpacket2_hdr
// first. The result's packet points into frame.
RingEsp parseRingFrame(std::span<const std::uint8_t> frame) noexcept;

}  // namespace ipsec::esp
