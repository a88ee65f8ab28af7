// See rtnetlink.h. Every read of the datagram is a bounds-checked copy:
// netlink's own alignment promises are not assumed of the bytes.
#include "netlink/rtnetlink.h"

#include <linux/neighbour.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>

#include <cstring>

namespace ipsec::netlink {
namespace {

constexpr std::size_t align4(std::size_t n) { return (n + 3) & ~std::size_t{3}; }

template <class T>
T load(std::span<const std::uint8_t> bytes, std::size_t at) noexcept {
  T value;
  std::memcpy(&value, bytes.data() + at, sizeof value);
  return value;
}

// A request: nlmsghdr, a fixed body of `bodyLength`, then attributes added by addAttribute.
struct RequestWriter {
  std::span<std::uint8_t, kRequestBytes> out;
  std::size_t length = 0;

  void header(std::uint16_t type, std::uint32_t seq, std::size_t bodyLength) noexcept {
    std::memset(out.data(), 0, out.size());
    nlmsghdr h{};
    h.nlmsg_type = type;
    h.nlmsg_flags = NLM_F_REQUEST;
    h.nlmsg_seq = seq;
    std::memcpy(out.data(), &h, sizeof h);
    length = NLMSG_HDRLEN + align4(bodyLength);
  }
  template <class Body>
  void body(const Body& b) noexcept {
    std::memcpy(out.data() + NLMSG_HDRLEN, &b, sizeof b);
  }
  void addAttribute(std::uint16_t type, const void* data, std::size_t size) noexcept {
    const rtattr a{static_cast<unsigned short>(RTA_LENGTH(size)), type};
    std::memcpy(out.data() + length, &a, sizeof a);
    std::memcpy(out.data() + length + RTA_LENGTH(0), data, size);
    length += RTA_SPACE(size);
  }
  std::size_t finish() noexcept {
    const auto total = static_cast<std::uint32_t>(length);
    std::memcpy(out.data(), &total, sizeof total);  // nlmsg_len leads the header
    return length;
  }
};

// Calls onAttribute(type, value bytes) for each attribute of `attributes`;
// false when one does not fit (its length short of its header or past the end).
template <class OnAttribute>
bool forEachAttribute(std::span<const std::uint8_t> attributes, OnAttribute&& onAttribute) noexcept {
  while (attributes.size() >= sizeof(rtattr)) {
    const auto a = load<rtattr>(attributes, 0);
    if (a.rta_len < sizeof(rtattr) || a.rta_len > attributes.size()) return false;
    onAttribute(static_cast<std::uint16_t>(a.rta_type & NLA_TYPE_MASK),
                attributes.subspan(RTA_LENGTH(0), a.rta_len - RTA_LENGTH(0)));
    attributes = attributes.subspan(std::min<std::size_t>(RTA_ALIGN(a.rta_len), attributes.size()));
  }
  return attributes.empty();
}

Message parseRoute(Message m, std::uint16_t type, std::span<const std::uint8_t> body) noexcept {
  if (body.size() < sizeof(rtmsg)) return m.kind = MessageKind::kBad, m;
  const auto r = load<rtmsg>(body, 0);
  if (r.rtm_family != AF_INET) return m;  // ignored
  m.route.removed = type == RTM_DELROUTE;
  m.route.type = r.rtm_type;
  m.route.dstLength = r.rtm_dst_len;
  bool wellFormed = true;
  const bool fits = forEachAttribute(body.subspan(std::min(body.size(), align4(sizeof(rtmsg)))),
                                     [&](std::uint16_t t, std::span<const std::uint8_t> v) {
                                       if (t == RTA_OIF) {
                                         if (v.size() != 4) wellFormed = false;
                                         else m.route.oif = load<std::uint32_t>(v, 0);
                                       } else if (t == RTA_GATEWAY) {
                                         if (v.size() != 4) wellFormed = false;
                                         else std::memcpy(m.route.gateway.data(), v.data(), 4), m.route.hasGateway = true;
                                       }
                                     });
  m.kind = fits && wellFormed ? MessageKind::kRoute : MessageKind::kBad;
  return m;
}

Message parseNeighbour(Message m, std::uint16_t type, std::span<const std::uint8_t> body) noexcept {
  if (body.size() < sizeof(ndmsg)) return m.kind = MessageKind::kBad, m;
  const auto n = load<ndmsg>(body, 0);
  if (n.ndm_family != AF_INET) return m;  // ignored
  if (n.ndm_ifindex <= 0) return m.kind = MessageKind::kBad, m;
  m.neighbour.removed = type == RTM_DELNEIGH;
  m.neighbour.ifindex = static_cast<std::uint32_t>(n.ndm_ifindex);
  m.neighbour.state = n.ndm_state;
  bool hasAddress = false, wellFormed = true;
  const bool fits = forEachAttribute(body.subspan(std::min(body.size(), align4(sizeof(ndmsg)))),
                                     [&](std::uint16_t t, std::span<const std::uint8_t> v) {
                                       if (t == NDA_DST) {
                                         if (v.size() != 4) wellFormed = false;
                                         else std::memcpy(m.neighbour.address.data(), v.data(), 4), hasAddress = true;
                                       } else if (t == NDA_LLADDR && v.size() == 6) {  // other link layers: no MAC to use
                                         std::memcpy(m.neighbour.mac.data(), v.data(), 6);
                                         m.neighbour.hasMac = true;
                                       }
                                     });
  m.kind = fits && wellFormed && hasAddress ? MessageKind::kNeighbour : MessageKind::kBad;
  return m;
}

Message parseError(Message m, std::span<const std::uint8_t> body) noexcept {
  if (body.size() < sizeof(int)) return m.kind = MessageKind::kBad, m;
  const int error = load<int>(body, 0);
  if (error > 0) return m.kind = MessageKind::kBad, m;
  if (error == 0) return m;  // an acknowledgement: ignored
  m.kind = MessageKind::kError;
  m.error = error == INT32_MIN ? INT32_MAX : -error;
  return m;
}

}  // namespace

std::size_t routeRequest(std::span<std::uint8_t, kRequestBytes> out, std::uint32_t seq, const Ipv4& to,
                         std::uint32_t mark) noexcept {
  RequestWriter w{out};
  w.header(RTM_GETROUTE, seq, sizeof(rtmsg));
  rtmsg r{};
  r.rtm_family = AF_INET;
  r.rtm_dst_len = 32;
  w.body(r);
  w.addAttribute(RTA_DST, to.data(), to.size());
  if (mark != 0) w.addAttribute(RTA_MARK, &mark, sizeof mark);
  return w.finish();
}

std::size_t neighbourRequest(std::span<std::uint8_t, kRequestBytes> out, std::uint32_t seq, std::uint32_t ifindex,
                             const Ipv4& address) noexcept {
  RequestWriter w{out};
  w.header(RTM_GETNEIGH, seq, sizeof(ndmsg));
  ndmsg n{};
  n.ndm_family = AF_INET;
  n.ndm_ifindex = static_cast<int>(ifindex);
  w.body(n);
  w.addAttribute(NDA_DST, address.data(), address.size());
  return w.finish();
}

bool usableState(std::uint16_t state) noexcept {
  return (state & (NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_PERMANENT)) != 0;
}

Message parseMessage(std::span<const std::uint8_t> rest, std::size_t& length) noexcept {
  Message m;
  length = 0;
  if (rest.size() < sizeof(nlmsghdr)) return m.kind = MessageKind::kBad, m;
  const auto h = load<nlmsghdr>(rest, 0);
  if (h.nlmsg_len < sizeof(nlmsghdr) || h.nlmsg_len > rest.size()) return m.kind = MessageKind::kBad, m;
  length = std::min<std::size_t>(NLMSG_ALIGN(h.nlmsg_len), rest.size());
  m.header = {h.nlmsg_seq, h.nlmsg_pid};
  const auto body = rest.subspan(NLMSG_HDRLEN, h.nlmsg_len - NLMSG_HDRLEN);
  switch (h.nlmsg_type) {
    case NLMSG_ERROR: return parseError(m, body);
    case RTM_NEWROUTE:
    case RTM_DELROUTE: return parseRoute(m, h.nlmsg_type, body);
    case RTM_NEWNEIGH:
    case RTM_DELNEIGH: return parseNeighbour(m, h.nlmsg_type, body);
    default: return m;  // NLMSG_DONE, NLMSG_NOOP, other families' types: nothing for us
  }
}

}  // namespace ipsec::netlink
