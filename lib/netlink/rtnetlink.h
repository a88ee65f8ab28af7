// rtnetlink (NETLINK_ROUTE) for the forwarder's next-hop cache (esp_send =
// packet; services/forwarder/next_hop.h): the two requests it sends — the
// route the kernel would take to one IPv4 address, and one neighbour entry —
// and the parser of the kernel's datagrams on that socket: replies, errors
// and the route and neighbour notifications it is subscribed to.
//
// Trust: the datagrams come from the kernel, yet they are parsed as
// untrusted bytes (a length that overruns, an attribute that does not fit):
// a bad message is counted and skipped, or ends the datagram when its own
// length cannot be trusted; nothing here crashes on any input
// (tests/fuzz/netlink). The results are values: nothing points into the
// datagram once parseDatagram returns. Pure: no I/O, no allocation.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

namespace ipsec::netlink {

using Ipv4 = std::array<std::uint8_t, 4>;
using Mac = std::array<std::uint8_t, 6>;

// Room for either request.
inline constexpr std::size_t kRequestBytes = 64;

// RTM_GETROUTE for `to` (a /32 lookup through the policy rules, as ip route
// get does), as a packet with firewall mark `mark` (RTA_MARK; 0: none) would
// be routed: the kernel answers one RTM_NEWROUTE with this seq, or an error.
std::size_t routeRequest(std::span<std::uint8_t, kRequestBytes> out, std::uint32_t seq, const Ipv4& to,
                         std::uint32_t mark = 0) noexcept;
// RTM_GETNEIGH of `address` on interface `ifindex` (not a dump): one
// RTM_NEWNEIGH with this seq, or an error (ENOENT: no entry yet).
std::size_t neighbourRequest(std::span<std::uint8_t, kRequestBytes> out, std::uint32_t seq, std::uint32_t ifindex,
                             const Ipv4& address) noexcept;

// RTM_NEWROUTE / RTM_DELROUTE of IPv4: a reply to routeRequest or a change.
struct Route {
  bool removed = false;        // RTM_DELROUTE
  std::uint8_t type = 0;       // RTN_UNICAST, RTN_LOCAL, ...
  std::uint8_t dstLength = 0;  // the prefix length
  std::uint32_t oif = 0;       // RTA_OIF; 0 when absent
  bool hasGateway = false;
  Ipv4 gateway{};              // RTA_GATEWAY, when hasGateway
};

// RTM_NEWNEIGH / RTM_DELNEIGH of IPv4.
struct Neighbour {
  bool removed = false;  // RTM_DELNEIGH
  std::uint32_t ifindex = 0;
  std::uint16_t state = 0;  // NUD_*
  Ipv4 address{};           // NDA_DST (required)
  bool hasMac = false;      // NDA_LLADDR of exactly 6 bytes
  Mac mac{};
};

// Whether a neighbour in `state` (NUD_*) is one to send to directly:
// reachable, stale, delay, probe or permanent (the kernel still has or is
// confirming its address; incomplete, failed, noarp and none are not).
bool usableState(std::uint16_t state) noexcept;

// What one message of a datagram is, for the visitor.
struct Header {
  std::uint32_t seq = 0;
  std::uint32_t portId = 0;  // nlmsg_pid: our socket's port id on a reply to us
};

// The visitor's calls, one per message (the done and noop messages of a
// dump are skipped; messages of other types or families are ignored).
//   route(const Header&, const Route&)
//   neighbour(const Header&, const Neighbour&)
//   error(const Header&, int error)   // NLMSG_ERROR of a request: a positive errno
// bad counts messages that were refused: one whose header lies about its
// length (the rest of the datagram goes with it), one whose body or
// attributes do not fit, a route or neighbour without what it must carry.
struct ParseCounts {
  unsigned messages = 0;
  unsigned bad = 0;
};

template <class Visitor>
ParseCounts parseDatagram(std::span<const std::uint8_t> datagram, Visitor&& visitor) noexcept;

// ---- the parser's steps (rtnetlink.cpp), exposed for the template above
enum class MessageKind : std::uint8_t { kIgnored, kBad, kRoute, kNeighbour, kError };
struct Message {
  MessageKind kind = MessageKind::kIgnored;
  Header header;
  Route route;
  Neighbour neighbour;
  int error = 0;
};
// One message from the front of `rest`; `length` the bytes it took (0:
// the datagram's rest is unusable and was counted as one bad message).
Message parseMessage(std::span<const std::uint8_t> rest, std::size_t& length) noexcept;

template <class Visitor>
ParseCounts parseDatagram(std::span<const std::uint8_t> datagram, Visitor&& visitor) noexcept {
  ParseCounts counts;
  while (!datagram.empty()) {
    std::size_t length = 0;
    const Message m = parseMessage(datagram, length);
    ++counts.messages;
    switch (m.kind) {
      case MessageKind::kBad: ++counts.bad; break;
      case MessageKind::kRoute: visitor.route(m.header, m.route); break;
      case MessageKind::kNeighbour: visitor.neighbour(m.header, m.neighbour); break;
      case MessageKind::kError: visitor.error(m.header, m.error); break;
      case MessageKind::kIgnored: break;
    }
    if (length == 0) break;
    datagram = datagram.subspan(length);
  }
  return counts;
}

}  // namespace ipsec::netlink
