// ipsec-forwarder: the next-hop cache of esp_send = packet (issue 13 item 3).
// For the destination D of plain tunnel ESP/IPv4 it says where the packet
// socket sends it — {interface, next hop's MAC} as a sockaddr_ll — or that
// it goes on the header-included raw socket as before. It learns from the
// kernel, never waits for it: a destination it does not know goes raw (which
// has the kernel resolve its neighbour) while it asks, over netlink, for the
// route to D (interface; gateway or on-link) and then for that next hop's
// neighbour entry. It keeps only neighbours in a usable state (reachable,
// stale, delay, probe, permanent: netlink::usableState); neighbour
// notifications update or drop them, and any route change, or notifications
// lost, empty the whole cache. At most every kRefreshMs per next hop one
// packet goes raw anyway, so that the kernel's neighbour state machine sees
// traffic and confirms or re-probes the entry we rely on.
//
// Trust: the netlink datagrams come from the kernel and are parsed by
// lib/netlink as untrusted (netlink_bad_message); a reply counts only when
// it carries our socket's port id and a sequence number we are waiting on.
// The socket is read-only in effect: the forwarder has no CAP_NET_ADMIN, so
// the kernel refuses any change asked for on it. Pure but for the request
// sink it is given: no allocation (fixed tables), noexcept, one thread.
#pragma once

#include <linux/if_packet.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "counters.h"
#include "netlink/rtnetlink.h"

namespace ipsec::forwarder {

class NextHops {
 public:
  // Sends one netlink request to the kernel; false when it was refused (the
  // lookup is asked again later).
  using SendRequest = bool (*)(void* context, std::span<const std::uint8_t> request) noexcept;

  static constexpr std::size_t kMaxDestinations = 64;  // SA peers; more empties the cache (next_hop_flushes)
  static constexpr std::size_t kMaxNextHops = 64;
  static constexpr std::uint64_t kRefreshMs = 2000;    // one raw packet per next hop this often
  static constexpr std::uint64_t kAskAgainMs = 1000;   // an unanswered or unusable lookup, asked again

  // mark: the firewall mark the forwarder's sockets carry (SO_MARK, config
  // fwmark): routes are looked up as its raw sends are routed, past the
  // transport-mode rule that skips that mark.
  NextHops(Counters& counters, std::uint32_t portId, std::uint32_t mark, SendRequest send, void* context) noexcept
      : counters_(counters), portId_(portId), mark_(mark), send_(send), context_(context) {}
  NextHops(const NextHops&) = delete;
  NextHops& operator=(const NextHops&) = delete;

  // Where a packet for `to` goes on the packet socket, or nullptr: on the raw
  // socket (unknown yet, counted as next_hop_misses, or its refresh is due).
  const sockaddr_ll* packetAddress(const netlink::Ipv4& to, std::uint64_t nowMs) noexcept;
  // The same for a run of packets to `to` (a super-packet's segments): when
  // the refresh is due the address is still given and firstRaw set, so that
  // one packet of the run goes raw, not all of them.
  const sockaddr_ll* packetAddressOfRun(const netlink::Ipv4& to, std::uint64_t nowMs, bool& firstRaw) noexcept;
  // One datagram read from the netlink socket.
  void onDatagram(std::span<const std::uint8_t> datagram, std::uint64_t nowMs) noexcept;
  // Forgets everything (notifications were lost, or a route changed).
  void flush() noexcept;

  // The parser's visitor (lib/netlink parseDatagram), at the time the last
  // onDatagram or setNow gave.
  void setNow(std::uint64_t nowMs) noexcept { nowMs_ = nowMs; }
  void route(const netlink::Header& h, const netlink::Route& r) noexcept;
  void neighbour(const netlink::Header& h, const netlink::Neighbour& n) noexcept;
  void error(const netlink::Header& h, int error) noexcept;

 private:
  struct NextHop {
    std::uint32_t ifindex = 0;
    netlink::Ipv4 address{};
    bool usable = false;
    sockaddr_ll to{};
    std::uint64_t lastRawMs = 0;
    std::uint32_t askedSeq = 0;
  };
  struct Destination {
    enum class State : std::uint8_t { kAsking, kRouted, kNoPath };
    netlink::Ipv4 address{};
    State state = State::kAsking;
    std::uint32_t askedSeq = 0;
    std::uint64_t askedMs = 0;
    std::uint8_t nextHop = 0;  // index into nextHops_ when kRouted
  };

  Destination* find(const netlink::Ipv4& to) noexcept;
  // The usable next hop of `to`, or nullptr (counted as next_hop_misses; the
  // route or neighbour asked for, or asked again, as due).
  NextHop* usableHop(const netlink::Ipv4& to, std::uint64_t nowMs) noexcept;
  // Whether n's refresh is due; if so it is taken now (one packet goes raw).
  static bool takeRefresh(NextHop& n, std::uint64_t nowMs) noexcept;
  NextHop* findNextHop(std::uint32_t ifindex, const netlink::Ipv4& address) noexcept;
  void askRoute(Destination& d, std::uint64_t nowMs) noexcept;
  void askNeighbour(NextHop& n) noexcept;
  std::uint32_t nextSeq() noexcept { return ++seq_ == 0 ? ++seq_ : seq_; }
  bool ours(const netlink::Header& h) const noexcept { return h.portId == portId_ && h.seq != 0; }

  Counters& counters_;
  std::uint32_t portId_;
  std::uint32_t mark_;
  SendRequest send_;
  void* context_;
  std::uint32_t seq_ = 0;
  std::uint64_t nowMs_ = 0;  // of the datagram being parsed
  std::array<Destination, kMaxDestinations> destinations_{};
  std::size_t destinationCount_ = 0;
  std::array<NextHop, kMaxNextHops> nextHops_{};
  std::size_t nextHopCount_ = 0;
  std::uint8_t lastHit_ = 0;  // the destination found last: one SA's burst finds it first
};

}  // namespace ipsec::forwarder
