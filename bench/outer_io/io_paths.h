// outer_io_bench: the ways a packet of plain ESP/IPv4 leaves the sender's
// namespace and reaches the receiver's user space, each run by a thread of
// its own that has entered its namespace (enterNamespace) for a case.
//
// Senders: (a) what the forwarder does today (an IPPROTO_RAW socket, header
// included, sendmmsg of 32); (b) an AF_PACKET PACKET_TX_RING (TPACKET_V2,
// qdisc bypass, one send() per 32 frames); (c) AF_PACKET SOCK_DGRAM with
// sendmmsg of 32 to the next hop's MAC (no ring, qdisc bypass); (d) AF_XDP
// in copy mode (UMEM, TX and completion rings by raw syscalls, one sendto()
// per 32 descriptors).
// Receivers: (1) the raw ESP/IPv4 socket, recvmmsg of 64 (today's default);
// (2) the PACKET_RX_RING as ipsecd's esp_ring sets it up (lib/esp/esp_ring.h),
// the raw socket kept with the filter that takes nothing; (3) AF_XDP in copy
// mode with an XDP program on the receiving veth that redirects plain
// ESP/IPv4 to the socket before the IP stack (xdp_redirect.h).
//
// Trust: the packets are ours, built once; the ring frames are checked with
// the project's own parser (esp::parseRingFrame), the AF_XDP frames'
// Ethernet and IPv4 headers before their numbers are read. Every loop ends at a flag
// the main thread sets, and waits at most 10 ms per poll.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

namespace outer_io {

enum class SendPath { kRawHeaderIncluded, kTxRing, kPacketDgram, kXdpCopy };
enum class ReceivePath { kRawSocket, kRxRing, kXdp };

inline constexpr std::size_t kSendBatch = 32;     // the forwarder's send batch
inline constexpr std::size_t kReceiveBatch = 64;  // the forwarder's receive batch

// IPv4 (192.0.2.1 → 192.0.2.2, protocol 50, checksummed) + an 8-byte ESP
// header + random bytes, `size` bytes in all (at least 32): kSendBatch
// distinct packets. The senders number each packet they send (its ESP
// sequence number and its last 4 bytes), and the receivers check them.
std::vector<std::vector<std::uint8_t>> makePackets(std::size_t size);

// What a thread did between `go` and its stop flag.
struct ThreadResult {
  std::uint64_t packets = 0;  // sent (accepted by the kernel) or received (well-formed, of the size sent)
  std::uint64_t errors = 0;   // refused sends, malformed or unexpected receives (changed and duplicates too)
  std::uint64_t changed = 0;     // receive side: a packet whose bytes changed on the way (two numbers differ)
  std::uint64_t duplicates = 0;  // receive side: a number seen before (a later packet's bytes in an earlier's place)
  std::uint64_t ringDrops = 0;    // receive side: frames the RX ring had no room for (PACKET_STATISTICS)
  std::uint64_t socketDrops = 0;  // receive side: the raw ESP socket's drops (its queue was full), case (1)
  // Receive side (3), the socket's XDP_STATISTICS:
  std::uint64_t xskRingFull = 0;  // frames dropped for a full RX ring (rx_ring_full)
  std::uint64_t xskDropped = 0;   // frames dropped for want of a chunk or too long for one (rx_dropped)
  std::uint64_t xskFillEmpty = 0;  // times the kernel found the fill ring empty (rx_fill_ring_empty_descs)
  std::string note;           // receive side (3): the XDP mode that ran
  double cpuSeconds = 0;      // the thread's user + system time (with the softirq run in its context)
  std::uint64_t sleeps = 0;   // receive side: the thread's voluntary context switches (each a wake-up to pay for)
  std::string error;          // setup failed: the case has no figure
};

// The flags the main thread drives a case with.
struct CaseControl {
  std::atomic<int> ready{0};         // each thread adds 1 once its sockets are open
  std::atomic<bool> go{false};
  std::atomic<bool> stopSending{false};
  std::atomic<bool> stopReceiving{false};
};

struct SendTarget {
  std::string ns;
  int ifindex = 0;                         // the sender's veth end
  std::array<std::uint8_t, 6> sourceMac{};
  std::array<std::uint8_t, 6> nextHopMac{};
  int cpu = -1;                            // pinned there if >= 0
};

void runSender(SendPath path, const SendTarget& target, const std::vector<std::vector<std::uint8_t>>& packets,
               CaseControl& control, ThreadResult& result) noexcept;
struct ReceiveTarget {
  std::string ns;
  int ifindex = 0;  // the receiver's veth end (case (3) binds and attaches there)
  int cpu = -1;     // pinned there if >= 0
  bool xdpGenericOnly = false;  // case (3): attach the program in generic (SKB) mode, not driver mode first
  int xskSpinMicros = 0;  // case (3): how long the receiver polls its empty RX ring before it sleeps in poll()
};

void runReceiver(ReceivePath path, const ReceiveTarget& target, std::size_t size, CaseControl& control,
                 ThreadResult& result) noexcept;

}  // namespace outer_io
