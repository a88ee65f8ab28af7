// Unit tests of lib/netlink/rtnetlink: requests the kernel answers, parsed
// back (a route via a gateway and a permanent neighbour set up in a network
// namespace of the test's own, with documentation addresses), and every
// malformed shape counted as bad, never read past.
#include "netlink/rtnetlink.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <linux/neighbour.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <linux/capability.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace ipsec::netlink {
namespace {

struct Seen {
  std::vector<std::pair<Header, Route>> routes;
  std::vector<std::pair<Header, Neighbour>> neighbours;
  std::vector<std::pair<Header, int>> errors;
  void route(const Header& h, const Route& r) { routes.emplace_back(h, r); }
  void neighbour(const Header& h, const Neighbour& n) { neighbours.emplace_back(h, n); }
  void error(const Header& h, int e) { errors.emplace_back(h, e); }
};

Ipv4 v4(const char* text) {
  Ipv4 a{};
  inet_pton(AF_INET, text, a.data());
  return a;
}

// Sends one request on fd and parses what comes back within 2 s (the
// datagram stays alive in `reply` while it is parsed).
ParseCounts ask(int fd, std::span<const std::uint8_t> request, Seen& seen) {
  if (send(fd, request.data(), request.size(), 0) != static_cast<ssize_t>(request.size())) return {};
  pollfd p{fd, POLLIN, 0};
  if (poll(&p, 1, 2000) != 1) return {};
  std::vector<std::uint8_t> reply(32768);
  const ssize_t n = recv(fd, reply.data(), reply.size(), 0);
  if (n <= 0) return {};
  return parseDatagram({reply.data(), static_cast<std::size_t>(n)}, seen);
}

// Runs body in a thread moved into a fresh network namespace (unshare moves
// only the calling thread; `ip` forked from it runs there too; the namespace
// goes with the thread).
template <class Body>
void inOwnNetns(Body&& body) {
  std::thread t([&] {
    if (unshare(CLONE_NEWNET) != 0) {
      ADD_FAILURE() << "unshare(CLONE_NEWNET): " << std::strerror(errno) << " (needs root)";
      return;
    }
    body();
  });
  t.join();
}

TEST(RtnetlinkKernel, ARouteViaAGatewayAndItsPermanentNeighbour) {
  inOwnNetns([] {
    const int rc = std::system(
        "ip link add nlt0 address 02:00:00:00:00:01 type veth peer name nlt1 && "
        "ip addr add 192.0.2.1/24 dev nlt0 && ip link set nlt0 up && ip link set nlt1 up && "
        "ip route add 198.51.100.0/24 via 192.0.2.254 dev nlt0 && "
        "ip neigh add 192.0.2.254 lladdr 02:00:5e:00:53:fe dev nlt0 nud permanent");
    ASSERT_EQ(rc, 0);
    const unsigned nlt0 = if_nametoindex("nlt0");
    ASSERT_NE(nlt0, 0u);
    const int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    ASSERT_GE(fd, 0);
    std::array<std::uint8_t, kRequestBytes> request{};

    Seen seen;
    ParseCounts c = ask(fd, std::span(request).first(routeRequest(request, 7, v4("198.51.100.9"))), seen);
    EXPECT_EQ(c.bad, 0u);
    ASSERT_EQ(seen.routes.size(), 1u);
    EXPECT_EQ(seen.routes[0].first.seq, 7u);
    EXPECT_FALSE(seen.routes[0].second.removed);
    EXPECT_EQ(seen.routes[0].second.type, RTN_UNICAST);
    EXPECT_EQ(seen.routes[0].second.oif, nlt0);
    EXPECT_TRUE(seen.routes[0].second.hasGateway);
    EXPECT_EQ(seen.routes[0].second.gateway, v4("192.0.2.254"));

    // On-link: no gateway, the destination itself is the next hop.
    seen = {};
    ask(fd, std::span(request).first(routeRequest(request, 8, v4("192.0.2.77"))), seen);
    ASSERT_EQ(seen.routes.size(), 1u);
    EXPECT_EQ(seen.routes[0].second.oif, nlt0);
    EXPECT_FALSE(seen.routes[0].second.hasGateway);

    // A local address: type local, never a next hop to send to.
    seen = {};
    ask(fd, std::span(request).first(routeRequest(request, 9, v4("192.0.2.1"))), seen);
    ASSERT_EQ(seen.routes.size(), 1u);
    EXPECT_EQ(seen.routes[0].second.type, RTN_LOCAL);

    seen = {};
    c = ask(fd, std::span(request).first(neighbourRequest(request, 10, nlt0, v4("192.0.2.254"))), seen);
    EXPECT_EQ(c.bad, 0u);
    ASSERT_EQ(seen.neighbours.size(), 1u);
    const Neighbour& n = seen.neighbours[0].second;
    EXPECT_EQ(seen.neighbours[0].first.seq, 10u);
    EXPECT_EQ(n.ifindex, nlt0);
    EXPECT_EQ(n.address, v4("192.0.2.254"));
    EXPECT_EQ(n.state, NUD_PERMANENT);
    EXPECT_TRUE(usableState(n.state));
    ASSERT_TRUE(n.hasMac);
    EXPECT_EQ(n.mac, (Mac{0x02, 0x00, 0x5e, 0x00, 0x53, 0xfe}));

    // With a firewall mark the policy rules route otherwise: the lookup follows them.
    ASSERT_EQ(std::system("ip rule add fwmark 0x4950 lookup 100 && "
                          "ip route add 198.51.100.0/24 via 192.0.2.253 dev nlt0 table 100"),
              0);
    seen = {};
    ask(fd, std::span(request).first(routeRequest(request, 12, v4("198.51.100.9"), 0x4950)), seen);
    ASSERT_EQ(seen.routes.size(), 1u);
    EXPECT_EQ(seen.routes[0].second.gateway, v4("192.0.2.253"));
    seen = {};
    ask(fd, std::span(request).first(routeRequest(request, 13, v4("198.51.100.9"))), seen);
    ASSERT_EQ(seen.routes.size(), 1u);
    EXPECT_EQ(seen.routes[0].second.gateway, v4("192.0.2.254"));

    // No entry: the kernel's ENOENT, as an error for that seq.
    seen = {};
    ask(fd, std::span(request).first(neighbourRequest(request, 11, nlt0, v4("192.0.2.200"))), seen);
    ASSERT_EQ(seen.errors.size(), 1u);
    EXPECT_EQ(seen.errors[0].first.seq, 11u);
    EXPECT_EQ(seen.errors[0].second, ENOENT);
    close(fd);
  });
}

TEST(RtnetlinkKernel, NeighbourNotificationsOfTheSubscribedGroup) {
  inOwnNetns([] {
    ASSERT_EQ(std::system("ip link add nlt0 type veth peer name nlt1 && ip addr add 192.0.2.1/24 dev nlt0 && "
                          "ip link set nlt0 up && ip link set nlt1 up"),
              0);
    const int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    ASSERT_GE(fd, 0);
    sockaddr_nl groups{};
    groups.nl_family = AF_NETLINK;
    groups.nl_groups = RTMGRP_NEIGH;
    ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&groups), sizeof groups), 0);
    ASSERT_EQ(std::system("ip neigh add 192.0.2.9 lladdr 02:00:5e:00:53:09 dev nlt0 nud permanent && "
                          "ip neigh del 192.0.2.9 dev nlt0"),
              0);
    // The add, then the delete (the kernel may announce a state change in between).
    Seen seen;
    std::vector<std::uint8_t> datagram(32768);
    for (int i = 0; i < 8 && (seen.neighbours.empty() || !seen.neighbours.back().second.removed); ++i) {
      pollfd p{fd, POLLIN, 0};
      ASSERT_EQ(poll(&p, 1, 2000), 1);
      const ssize_t n = recv(fd, datagram.data(), datagram.size(), 0);
      ASSERT_GT(n, 0);
      EXPECT_EQ(parseDatagram({datagram.data(), static_cast<std::size_t>(n)}, seen).bad, 0u);
    }
    ASSERT_GE(seen.neighbours.size(), 2u);
    EXPECT_FALSE(seen.neighbours[0].second.removed);
    EXPECT_EQ(seen.neighbours[0].second.state, NUD_PERMANENT);
    EXPECT_EQ(seen.neighbours[0].second.address, v4("192.0.2.9"));
    EXPECT_TRUE(seen.neighbours.back().second.removed);
    EXPECT_EQ(seen.neighbours.back().second.address, v4("192.0.2.9"));
    close(fd);
  });
}

// The forwarder gets a socket ipsecd (root) made, and has no capability:
// the kernel checks the sender's CAP_NET_ADMIN too (netlink_net_capable), so
// a change asked for on that socket is refused. The check can fail: the
// same request from the root parent succeeds.
TEST(RtnetlinkKernel, AChangeAskedWithoutCapNetAdminIsRefused) {
  inOwnNetns([] {
    ASSERT_EQ(std::system("ip link add nlt0 type veth peer name nlt1 && ip link set nlt0 up"), 0);
    const int ifindex = static_cast<int>(if_nametoindex("nlt0"));
    const int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    ASSERT_GE(fd, 0);
    // RTM_NEWNEIGH 192.0.2.44 on nlt0, permanent, with an acknowledgement.
    auto addNeighbour = [&](std::uint32_t seq) {
      std::array<std::uint8_t, 64> m{};
      nlmsghdr h{};
      h.nlmsg_len = NLMSG_LENGTH(sizeof(ndmsg)) + RTA_SPACE(4);
      h.nlmsg_type = RTM_NEWNEIGH;
      h.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
      h.nlmsg_seq = seq;
      ndmsg n{};
      n.ndm_family = AF_INET;
      n.ndm_ifindex = ifindex;
      n.ndm_state = NUD_PERMANENT;
      const rtattr a{static_cast<unsigned short>(RTA_LENGTH(4)), NDA_DST};
      const std::uint8_t address[4] = {192, 0, 2, 44};
      std::memcpy(m.data(), &h, sizeof h);
      std::memcpy(m.data() + NLMSG_HDRLEN, &n, sizeof n);
      std::memcpy(m.data() + NLMSG_LENGTH(sizeof(ndmsg)), &a, sizeof a);
      std::memcpy(m.data() + NLMSG_LENGTH(sizeof(ndmsg)) + RTA_LENGTH(0), address, 4);
      if (send(fd, m.data(), h.nlmsg_len, 0) < 0) return -1;
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 2000) != 1) return -1;
      std::vector<std::uint8_t> reply(4096);
      const ssize_t got = recv(fd, reply.data(), reply.size(), 0);
      if (got < static_cast<ssize_t>(NLMSG_HDRLEN + sizeof(int))) return -1;
      int error = 0;
      std::memcpy(&error, reply.data() + NLMSG_HDRLEN, sizeof error);
      return -error;  // 0: done
    };
    const pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      // No capability left, as the forwarder (effective, permitted, inheritable).
      __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
      __user_cap_data_struct none[2]{};
      if (syscall(SYS_capset, &header, none) != 0) _exit(2);
      _exit(addNeighbour(1) == EPERM ? 0 : 1);
    }
    int status = 0;
    ASSERT_EQ(waitpid(child, &status, 0), child);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
    EXPECT_EQ(addNeighbour(2), 0) << "root may";
    close(fd);
  });
}

// ---- malformed input, by hand

// A message of `type` with body `body` (nlmsg_len as given, or the true one).
std::vector<std::uint8_t> message(std::uint16_t type, std::vector<std::uint8_t> body, std::uint32_t claimedLength = 0) {
  nlmsghdr h{};
  h.nlmsg_len = claimedLength != 0 ? claimedLength : static_cast<std::uint32_t>(NLMSG_HDRLEN + body.size());
  h.nlmsg_type = type;
  std::vector<std::uint8_t> m(NLMSG_HDRLEN);
  std::memcpy(m.data(), &h, sizeof h);
  m.insert(m.end(), body.begin(), body.end());
  while (m.size() % 4 != 0) m.push_back(0);
  return m;
}

template <class T>
std::vector<std::uint8_t> bytesOf(const T& t) {
  std::vector<std::uint8_t> b(sizeof t);
  std::memcpy(b.data(), &t, sizeof t);
  return b;
}

std::vector<std::uint8_t> attribute(std::uint16_t type, std::vector<std::uint8_t> value, std::uint16_t claimed = 0) {
  rtattr a{static_cast<unsigned short>(claimed != 0 ? claimed : RTA_LENGTH(value.size())), type};
  std::vector<std::uint8_t> b = bytesOf(a);
  b.insert(b.end(), value.begin(), value.end());
  while (b.size() % 4 != 0) b.push_back(0);
  return b;
}

std::vector<std::uint8_t> neighbourBody(std::vector<std::uint8_t> attributes) {
  ndmsg n{};
  n.ndm_family = AF_INET;
  n.ndm_ifindex = 2;
  n.ndm_state = NUD_REACHABLE;
  std::vector<std::uint8_t> b = bytesOf(n);
  b.insert(b.end(), attributes.begin(), attributes.end());
  return b;
}

ParseCounts parse(const std::vector<std::uint8_t>& datagram, Seen& seen) {
  return parseDatagram({datagram.data(), datagram.size()}, seen);
}

TEST(RtnetlinkMalformed, AWellFormedNeighbourParses) {
  Seen seen;
  const auto c = parse(message(RTM_NEWNEIGH, neighbourBody(attribute(NDA_DST, {192, 0, 2, 5}))), seen);
  EXPECT_EQ(c.bad, 0u);
  ASSERT_EQ(seen.neighbours.size(), 1u);
  EXPECT_FALSE(seen.neighbours[0].second.hasMac);
}

TEST(RtnetlinkMalformed, EachBadShapeIsCountedAndNothingIsReported) {
  const std::vector<std::vector<std::uint8_t>> bad = {
      {1, 2, 3},                                                  // shorter than a header
      message(RTM_NEWNEIGH, neighbourBody({}), 4),                // length shorter than the header
      message(RTM_NEWNEIGH, neighbourBody({}), 4096),             // length past the datagram
      message(RTM_NEWNEIGH, {AF_INET, 0, 0}),                     // body shorter than ndmsg
      message(RTM_NEWNEIGH, neighbourBody({})),                   // no NDA_DST
      message(RTM_NEWNEIGH, neighbourBody(attribute(NDA_DST, {192, 0, 2}))),              // a 3-byte address
      message(RTM_NEWNEIGH, neighbourBody(attribute(NDA_DST, {192, 0, 2, 5}, 200))),      // attribute past the end
      message(RTM_NEWNEIGH, neighbourBody(attribute(NDA_DST, {192, 0, 2, 5}, 2))),        // attribute shorter than its header
      message(RTM_NEWNEIGH, neighbourBody([] {  // a sound address, then an attribute of no interest past the end
        auto b = attribute(NDA_DST, {192, 0, 2, 5});
        auto past = attribute(NDA_CACHEINFO, {1, 2, 3, 4}, 200);
        b.insert(b.end(), past.begin(), past.end());
        return b;
      }())),
      message(RTM_NEWROUTE, {AF_INET, 32}),                                              // body shorter than rtmsg
      message(RTM_NEWROUTE, [] {
        rtmsg r{};
        r.rtm_family = AF_INET;
        auto b = bytesOf(r);
        auto a = attribute(RTA_OIF, {1, 0});  // a 2-byte interface index
        b.insert(b.end(), a.begin(), a.end());
        return b;
      }()),
      message(NLMSG_ERROR, {1, 0}),              // an error shorter than its code
      message(NLMSG_ERROR, {5, 0, 0, 0}),        // a positive error
  };
  for (std::size_t i = 0; i < bad.size(); ++i) {
    Seen seen;
    const auto c = parse(bad[i], seen);
    EXPECT_EQ(c.bad, 1u) << "case " << i;
    EXPECT_TRUE(seen.routes.empty() && seen.neighbours.empty() && seen.errors.empty()) << "case " << i;
  }
}

TEST(RtnetlinkMalformed, ABadMessageDoesNotHideTheNextOne) {
  auto datagram = message(RTM_NEWNEIGH, neighbourBody({}));  // no address: bad, but its length is sound
  const auto good = message(RTM_NEWNEIGH, neighbourBody(attribute(NDA_DST, {192, 0, 2, 5})));
  datagram.insert(datagram.end(), good.begin(), good.end());
  Seen seen;
  const auto c = parse(datagram, seen);
  EXPECT_EQ(c.messages, 2u);
  EXPECT_EQ(c.bad, 1u);
  EXPECT_EQ(seen.neighbours.size(), 1u);
}

TEST(RtnetlinkMalformed, OtherFamiliesAndTypesAreIgnoredNotBad) {
  ndmsg n6{};
  n6.ndm_family = AF_INET6;
  n6.ndm_ifindex = 2;
  Seen seen;
  auto datagram = message(RTM_NEWNEIGH, bytesOf(n6));
  const auto link = message(RTM_NEWLINK, std::vector<std::uint8_t>(16));
  datagram.insert(datagram.end(), link.begin(), link.end());
  const auto c = parse(datagram, seen);
  EXPECT_EQ(c.messages, 2u);
  EXPECT_EQ(c.bad, 0u);
  EXPECT_TRUE(seen.neighbours.empty());
}

TEST(RtnetlinkState, OnlyEntriesTheKernelHasOrIsConfirmingAreUsable) {
  for (std::uint16_t s : {NUD_REACHABLE, NUD_STALE, NUD_DELAY, NUD_PROBE, NUD_PERMANENT}) EXPECT_TRUE(usableState(s));
  for (std::uint16_t s : {NUD_INCOMPLETE, NUD_FAILED, NUD_NOARP, NUD_NONE}) EXPECT_FALSE(usableState(s));
}

}  // namespace
}  // namespace ipsec::netlink
