// ipsec-forwarder: the one way a send's messages are filled (issue 12 item
// 6) — a msghdr per datagram over its iovecs, its destination, and control
// messages in space of its own. The per-burst send batches (SendBatch, below), a super-packet's sends (super_send.h) and a packet's fragments
// (pmtu.cpp) are all a MessageBatch; what they send them with (sendmmsg, the
// UDP_SEGMENT fallback, the counters) stays with the shell that owns the socket.
//
// Trust: only our own bytes and addresses pass through here. No I/O, no
// allocation, noexcept; a control message that does not fit the space a
// batch was sized for is a broken invariant (abort), never a silent loss.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <utility>

#include "burst.h"

namespace ipsec::forwarder {

// Appends one control message to m's, in `space` (its padding zeroed: flushGso
// compares them bytewise); false, nothing written, when space has no room.
bool appendControl(msghdr& m, std::span<char> space, int level, int type, const void* data,
                   std::size_t length) noexcept;

// The room one UDP_SEGMENT control message takes (the segment size).
inline constexpr std::size_t kSegmentControlSpace = CMSG_SPACE(sizeof(std::uint16_t));
// Appends UDP_SEGMENT (the kernel cuts the message into datagrams of `size`)
// as appendControl does. Out of line: <netinet/udp.h> and <linux/udp.h>, which
// some includers take, cannot both be included.
bool appendSegmentSize(msghdr& m, std::span<char> space, std::uint16_t size) noexcept;

// Up to N messages of up to Iovs iovecs each, with ControlSpace bytes of
// control messages each. Message i's iovecs are iovs[i * Iovs, ...): with one
// iovec a message, the batch's iovecs lie back to back (UDP GSO sends a run
// of them as one message, gro.cpp flushGso).
template <std::size_t N, std::size_t ControlSpace, std::size_t Iovs = 1>
struct MessageBatch {
  static constexpr std::size_t kMessages = N;
  static constexpr std::size_t kControlSpace = ControlSpace;
  std::array<mmsghdr, N> msgs{};
  std::array<iovec, N * Iovs> iovs{};
  std::array<std::array<char, ControlSpace>, N> cmsgs{};
  std::size_t count = 0;

  bool full() const noexcept { return count == N; }
  // A message over `parts` (at most Iovs; the batch must have room) to the
  // name at `name`; its index.
  std::size_t addMessage(std::span<const iovec> parts, void* name, socklen_t nameLength) noexcept {
    const std::size_t i = count++;
    std::copy(parts.begin(), parts.end(), iovs.begin() + static_cast<std::ptrdiff_t>(i * Iovs));
    msgs[i] = {};
    msgs[i].msg_hdr.msg_name = name;
    msgs[i].msg_hdr.msg_namelen = nameLength;
    msgs[i].msg_hdr.msg_iov = &iovs[i * Iovs];
    msgs[i].msg_hdr.msg_iovlen = parts.size();
    return i;
  }
  // One iovec's worth.
  std::size_t addMessage(void* bytes, std::size_t length, void* name, socklen_t nameLength) noexcept {
    const iovec part{bytes, length};
    return addMessage({&part, 1}, name, nameLength);
  }
  // Appends one control message to message i's (padding zeroed: flushGso compares them bytewise).
  void addControl(std::size_t i, int level, int type, const void* data, std::size_t length) noexcept {
    if (!appendControl(msgs[i].msg_hdr, cmsgs[i], level, type, data, length)) std::abort();  // sized for every caller
  }
  // Message i leaves with this IPv4 TOS / IPv6 traffic class (the outer header's DSCP and ECN).
  void setTrafficClass(std::size_t i, bool v4, int tos) noexcept {
    addControl(i, v4 ? IPPROTO_IP : IPPROTO_IPV6, v4 ? IP_TOS : IPV6_TCLASS, &tos, sizeof tos);
  }
  // IPv4: message i leaves from `source` (IP_PKTINFO), the SA's address the peer and its NAT know.
  void setSource4(std::size_t i, const std::uint8_t* source) noexcept;
  // Message i is cut by the kernel into datagrams of `size` (UDP_SEGMENT; added last,
  // so that taking kSegmentControlSpace off the length sends it without).
  void setSegmentSize(std::size_t i, std::uint16_t size) noexcept {
    if (!appendSegmentSize(msgs[i].msg_hdr, cmsgs[i], size)) std::abort();  // sized for every caller
  }
};

template <std::size_t N, std::size_t ControlSpace, std::size_t Iovs>
void MessageBatch<N, ControlSpace, Iovs>::setSource4(std::size_t i, const std::uint8_t* source) noexcept {
  in_pktinfo info{};
  std::copy(source, source + sizeof info.ipi_spec_dst, reinterpret_cast<std::uint8_t*>(&info.ipi_spec_dst));
  addControl(i, IPPROTO_IP, IP_PKTINFO, &info, sizeof info);
}

struct Worker;  // crypto_worker.h

// The forwarder's outbound sends, gathered per burst and socket (forwarder.h
// send4_ ...): a MessageBatch of one iovec a datagram, each datagram's pool
// buffer freed once sent (sends.cpp flushSendBatch). Per datagram: IP_TOS /
// IPV6_TCLASS (the outer header's DSCP and ECN); ESP in UDP over IPv4 also
// IP_PKTINFO (the SA's source address) and, in transport mode, IP_TTL (the host's).
struct SendBatch : MessageBatch<kBurst, 2 * CMSG_SPACE(sizeof(int)) + CMSG_SPACE(sizeof(in_pktinfo))> {
  std::array<sockaddr_storage, kBurst> addrs{};
  // ESP in UDP over IPv4: the DF bit datagram i must leave with (a
  // setting of the socket, not of the datagram: flushUdp4 in gro.cpp).
  std::array<bool, kBurst> dontFragment{};
  std::array<std::pair<Worker*, std::uint32_t>, kBurst> buffers{};
  int fd = -1;
  bool udp = false;
  bool ah = false;  // counted as AH, not ESP
  bool keepalive = false;  // NAT keepalives: counted as such, no pool buffer behind them
  bool packet = false;  // the packet socket (esp_send = packet): counted in out_packet_socket too
  // Takes one datagram, bytes of w's buffer buf (freed once sent), to the
  // address fillAddress writes into the sockaddr_storage it is given (it
  // returns the length). The batch must have room (queueSend sees to it).
  template <class FillAddress>
  std::size_t add(Worker& w, std::uint32_t buf, std::span<std::uint8_t> bytes, FillAddress&& fillAddress) noexcept {
    const std::size_t i = addBytes(bytes, fillAddress);
    buffers[i] = {&w, buf};
    return i;
  }
  // The same for bytes no pool buffer holds (they outlive the flush: a keepalive's one byte).
  template <class FillAddress>
  std::size_t addBytes(std::span<std::uint8_t> bytes, FillAddress&& fillAddress) noexcept {
    sockaddr_storage& to = addrs[count];
    const auto length = static_cast<socklen_t>(fillAddress(to));
    const std::size_t i = addMessage(bytes.data(), bytes.size(), &to, length);
    buffers[i] = {nullptr, 0};
    return i;
  }
};

// UDP GSO over a SendBatch (gro.cpp flushGso): message k sends the batch's
// datagrams [first[k], first[k] + count[k]) as one UDP_SEGMENT send (their
// iovecs back to back), its control messages the first datagram's and the
// segment size.
struct GsoBatch {
  std::array<mmsghdr, kBurst> msgs{};
  std::array<std::array<char, SendBatch::kControlSpace + kSegmentControlSpace>, kBurst> cmsgs{};
  std::array<std::uint8_t, kBurst> first{}, count{};
};

}  // namespace ipsec::forwarder
