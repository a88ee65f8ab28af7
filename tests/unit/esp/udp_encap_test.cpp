// Unit tests of lib/esp/udp_encap: classification of NAT-T payloads (RFC 3948
// §2), sockaddr and control-message handling, and the reuseport steering
// program run by the real kernel on loopback sockets.
#include "esp/udp_encap.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <unistd.h>

#include <cstring>
#include <vector>

namespace ipsec::esp {
namespace {

using Bytes = std::vector<uint8_t>;

UdpPayloadKind classify(const Bytes& b) { return classifyUdpPayload(b); }

TEST(UdpPayload, OneByteFFIsAKeepalive) { EXPECT_EQ(classify({0xff}), UdpPayloadKind::kKeepalive); }

TEST(UdpPayload, OneOtherByteIsBad) { EXPECT_EQ(classify({0x00}), UdpPayloadKind::kBad); }

TEST(UdpPayload, TwoBytesFFAreNotAKeepalive) { EXPECT_EQ(classify({0xff, 0xff}), UdpPayloadKind::kBad); }

TEST(UdpPayload, EmptyIsBad) { EXPECT_EQ(classify({}), UdpPayloadKind::kBad); }

TEST(UdpPayload, NonEspMarkerIsIke) {
  EXPECT_EQ(classify({0, 0, 0, 0}), UdpPayloadKind::kIke);
  Bytes ike(28, 0x11);
  std::memset(ike.data(), 0, 4);
  EXPECT_EQ(classify(ike), UdpPayloadKind::kIke);
}

TEST(UdpPayload, ThreeZeroBytesAreBad) { EXPECT_EQ(classify({0, 0, 0}), UdpPayloadKind::kBad); }

TEST(UdpPayload, NonZeroSpiShorterThanAnEspHeaderIsBad) {
  EXPECT_EQ(classify({0, 0, 1, 0, 0, 0, 0}), UdpPayloadKind::kBad);
}

TEST(UdpPayload, NonZeroSpiWithSequenceIsEsp) {
  EXPECT_EQ(classify({0, 0, 0x10, 0x01, 0, 0, 0, 1}), UdpPayloadKind::kEsp);
  EXPECT_EQ(classify({0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1, 9, 9}), UdpPayloadKind::kEsp);
}

TEST(UdpPayload, SpiWithOnlyTheLastByteSetIsEsp) {
  EXPECT_EQ(classify({0, 0, 0, 1, 0, 0, 0, 0}), UdpPayloadKind::kEsp);
}

TEST(UdpPayload, KindsHaveNames) {
  EXPECT_STREQ(toString(UdpPayloadKind::kIke), "ike");
  EXPECT_STREQ(toString(UdpPayloadKind::kKeepalive), "keepalive");
}

TEST(UdpSockaddr, Ipv4RoundTripsWithItsPort) {
  UdpEndpoint e{*IpAddress::parse("192.0.2.7"), 4500};
  sockaddr_storage ss;
  socklen_t len = toSockaddr(e, ss);
  ASSERT_EQ(len, sizeof(sockaddr_in));
  sockaddr_in sin;
  std::memcpy(&sin, &ss, sizeof sin);
  EXPECT_EQ(sin.sin_family, AF_INET);
  EXPECT_EQ(ntohs(sin.sin_port), 4500);
  EXPECT_EQ(ntohl(sin.sin_addr.s_addr), 0xc0000207u);
  EXPECT_EQ(endpointFrom(ss, len), e);
}

TEST(UdpSockaddr, Ipv6RoundTripsWithItsPort) {
  UdpEndpoint e{*IpAddress::parse("2001:db8:1::2"), 61234};
  sockaddr_storage ss;
  socklen_t len = toSockaddr(e, ss);
  ASSERT_EQ(len, sizeof(sockaddr_in6));
  EXPECT_EQ(ss.ss_family, AF_INET6);
  EXPECT_EQ(endpointFrom(ss, len), e);
}

TEST(UdpSockaddr, ShortLengthIsRejected) {
  sockaddr_storage ss;
  socklen_t len = toSockaddr({*IpAddress::parse("2001:db8::1"), 1}, ss);
  EXPECT_FALSE(endpointFrom(ss, len - 1));
  len = toSockaddr({*IpAddress::parse("192.0.2.1"), 1}, ss);
  EXPECT_FALSE(endpointFrom(ss, len - 1));
}

TEST(UdpSockaddr, OtherFamiliesAreRejected) {
  sockaddr_storage ss{};
  ss.ss_family = AF_UNIX;
  EXPECT_FALSE(endpointFrom(ss, sizeof ss));
}

// Builds a control buffer as the kernel would and checks what parseUdpControl reads.
TEST(UdpControlMessages, Ipv4PktinfoAndOneByteTos) {
  alignas(cmsghdr) char buf[CMSG_SPACE(sizeof(in_pktinfo)) + CMSG_SPACE(1)] = {};
  msghdr m{};
  m.msg_control = buf;
  m.msg_controllen = sizeof buf;
  cmsghdr* c = CMSG_FIRSTHDR(&m);
  c->cmsg_level = IPPROTO_IP;
  c->cmsg_type = IP_PKTINFO;
  c->cmsg_len = CMSG_LEN(sizeof(in_pktinfo));
  in_pktinfo pi{};
  pi.ipi_addr.s_addr = htonl(0xc0000201);
  std::memcpy(CMSG_DATA(c), &pi, sizeof pi);
  c = CMSG_NXTHDR(&m, c);
  ASSERT_NE(c, nullptr);
  c->cmsg_level = IPPROTO_IP;
  c->cmsg_type = IP_TOS;
  c->cmsg_len = CMSG_LEN(1);
  *CMSG_DATA(c) = 0xb9;
  UdpControl u = parseUdpControl(m);
  ASSERT_TRUE(u.dst);
  EXPECT_EQ(*u.dst, *IpAddress::parse("192.0.2.1"));
  EXPECT_EQ(u.tos, 0xb9);
}

TEST(UdpControlMessages, Ipv6PktinfoAndIntTrafficClass) {
  alignas(cmsghdr) char buf[CMSG_SPACE(sizeof(in6_pktinfo)) + CMSG_SPACE(sizeof(int))] = {};
  msghdr m{};
  m.msg_control = buf;
  m.msg_controllen = sizeof buf;
  cmsghdr* c = CMSG_FIRSTHDR(&m);
  c->cmsg_level = IPPROTO_IPV6;
  c->cmsg_type = IPV6_PKTINFO;
  c->cmsg_len = CMSG_LEN(sizeof(in6_pktinfo));
  in6_pktinfo pi{};
  inet_pton(AF_INET6, "2001:db8:1::1", &pi.ipi6_addr);
  std::memcpy(CMSG_DATA(c), &pi, sizeof pi);
  c = CMSG_NXTHDR(&m, c);
  c->cmsg_level = IPPROTO_IPV6;
  c->cmsg_type = IPV6_TCLASS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  int tc = 0x2e << 2 | 1;
  std::memcpy(CMSG_DATA(c), &tc, sizeof tc);
  UdpControl u = parseUdpControl(m);
  ASSERT_TRUE(u.dst);
  EXPECT_EQ(*u.dst, *IpAddress::parse("2001:db8:1::1"));
  EXPECT_EQ(u.tos, 0xb9);
}

TEST(UdpControlMessages, TruncatedPktinfoIsIgnored) {
  alignas(cmsghdr) char buf[CMSG_SPACE(sizeof(in6_pktinfo))] = {};
  msghdr m{};
  m.msg_control = buf;
  m.msg_controllen = sizeof buf;
  cmsghdr* c = CMSG_FIRSTHDR(&m);
  c->cmsg_level = IPPROTO_IPV6;
  c->cmsg_type = IPV6_PKTINFO;
  c->cmsg_len = CMSG_LEN(4);
  EXPECT_FALSE(parseUdpControl(m).dst);
}

TEST(UdpControlMessages, NoControlMeansNoDestination) {
  msghdr m{};
  EXPECT_FALSE(parseUdpControl(m).dst);
}

// ---- the steering program, run by the kernel --------------------------------

class Socket {
 public:
  explicit Socket(int fd) : fd_(fd) {}
  ~Socket() {
    if (fd_ >= 0) close(fd_);
  }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  int fd() const { return fd_; }

 private:
  int fd_;
};

// A UDP socket on 127.0.0.1:port with SO_REUSEPORT (port 0: any), as ipsecd
// and an IKE daemon open theirs.
int reuseportSocket(uint16_t port) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  int on = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on);
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(port);
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, reinterpret_cast<sockaddr*>(&sin), sizeof sin) < 0) {
    close(fd);
    return -1;
  }
  return fd;
}

uint16_t portOf(int fd) {
  sockaddr_in sin{};
  socklen_t len = sizeof sin;
  getsockname(fd, reinterpret_cast<sockaddr*>(&sin), &len);
  return ntohs(sin.sin_port);
}

void attachSteering(int fd, uint32_t ikeIndex = kReuseportIndexIke) {
  auto prog = natTSteeringProgram(ikeIndex);
  sock_fprog fprog{static_cast<unsigned short>(prog.size()), prog.data()};
  ASSERT_EQ(setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &fprog, sizeof fprog), 0) << strerror(errno);
}

void sendTo(int from, uint16_t port, const Bytes& payload) {
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(port);
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(sendto(from, payload.data(), payload.size(), 0, reinterpret_cast<sockaddr*>(&sin), sizeof sin),
            static_cast<ssize_t>(payload.size()));
}

// The payload waiting on fd within 1 s, with the sender's port; nullopt if none.
std::optional<std::pair<Bytes, uint16_t>> receive(int fd, int timeoutMs = 1000) {
  pollfd p{fd, POLLIN, 0};
  if (poll(&p, 1, timeoutMs) != 1) return std::nullopt;
  Bytes b(2048);
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  ssize_t n = recvfrom(fd, b.data(), b.size(), MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&ss), &len);
  if (n < 0) return std::nullopt;
  b.resize(static_cast<size_t>(n));
  auto e = endpointFrom(ss, len);
  return std::make_pair(b, e ? e->port : uint16_t{0});
}

const Bytes kIke = {0, 0, 0, 0, 0xaa, 0xbb, 0xcc, 0xdd, 1, 2, 3, 4};
const Bytes kEsp = {0x00, 0x00, 0x10, 0x01, 0, 0, 0, 1, 5, 6, 7, 8};
const Bytes kKeepalive = {0xff};

TEST(NatTSteering, IkeGoesToTheSecondSocketWithItsSourcePortAndEspToTheFirst) {
  Socket ours(reuseportSocket(0));
  ASSERT_GE(ours.fd(), 0);
  attachSteering(ours.fd());
  const uint16_t port = portOf(ours.fd());
  Socket ike(reuseportSocket(port));
  ASSERT_GE(ike.fd(), 0) << "a second SO_REUSEPORT bind failed: " << strerror(errno);
  Socket peer(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  sendTo(peer.fd(), port, kIke);
  sendTo(peer.fd(), port, kEsp);
  sendTo(peer.fd(), port, kKeepalive);
  const uint16_t peerPort = portOf(peer.fd());

  auto got = receive(ike.fd());
  ASSERT_TRUE(got);
  EXPECT_EQ(got->first, kIke);
  EXPECT_EQ(got->second, peerPort);
  EXPECT_FALSE(receive(ike.fd(), 100)) << "ESP or a keepalive reached the IKE socket";

  auto esp = receive(ours.fd());
  ASSERT_TRUE(esp);
  EXPECT_EQ(esp->first, kEsp);
  auto ka = receive(ours.fd());
  ASSERT_TRUE(ka);
  EXPECT_EQ(ka->first, kKeepalive);
}

TEST(NatTSteering, WithoutAnIkeSocketTheKernelFallsBackToOurs) {
  Socket ours(reuseportSocket(0));
  ASSERT_GE(ours.fd(), 0);
  attachSteering(ours.fd());
  const uint16_t port = portOf(ours.fd());
  Socket peer(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  sendTo(peer.fd(), port, kIke);
  auto got = receive(ours.fd());
  ASSERT_TRUE(got);
  EXPECT_EQ(classifyUdpPayload(got->first), UdpPayloadKind::kIke);
}

TEST(NatTSteering, ManyEspPacketsNeverReachTheIkeSocket) {
  Socket ours(reuseportSocket(0));
  ASSERT_GE(ours.fd(), 0);
  attachSteering(ours.fd());
  const uint16_t port = portOf(ours.fd());
  Socket ike(reuseportSocket(port));
  ASSERT_GE(ike.fd(), 0);
  // Several source ports, so the kernel's hash would spread them were the
  // program not deciding.
  for (int i = 0; i < 16; ++i) {
    Socket peer(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    sendTo(peer.fd(), port, kEsp);
  }
  int n = 0;
  while (receive(ours.fd(), 200)) ++n;
  EXPECT_EQ(n, 16);
  EXPECT_FALSE(receive(ike.fd(), 50));
}

TEST(NatTSteering, AnIkeSocketBoundFirstGetsIkeAndTheJoinerWithTheReversedProgramGetsEspAndKeepalives) {
  // The IKE daemon's preload found the port free: bound alone, SO_REUSEPORT
  // turned on afterwards (index 0 once ipsecd joins as index 1).
  Socket ike(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(ike.fd(), reinterpret_cast<sockaddr*>(&sin), sizeof sin), 0);
  int on = 1;
  ASSERT_EQ(setsockopt(ike.fd(), SOL_SOCKET, SO_REUSEPORT, &on, sizeof on), 0);
  const uint16_t port = portOf(ike.fd());
  Socket ours(reuseportSocket(port));
  ASSERT_GE(ours.fd(), 0) << "joining a socket that turned SO_REUSEPORT on after bind: " << strerror(errno);
  attachSteering(ours.fd(), /*ikeIndex=*/0);
  for (int i = 0; i < 8; ++i) {
    Socket peer(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    sendTo(peer.fd(), port, kEsp);
    sendTo(peer.fd(), port, kKeepalive);
    sendTo(peer.fd(), port, kIke);
  }
  int esp = 0, keepalives = 0, ikes = 0;
  while (auto got = receive(ours.fd(), 200)) {
    if (got->first == kEsp) ++esp;
    if (got->first == kKeepalive) ++keepalives;
  }
  while (auto got = receive(ike.fd(), 200)) {
    EXPECT_EQ(got->first, kIke);
    ++ikes;
  }
  EXPECT_EQ(esp, 8);
  EXPECT_EQ(keepalives, 8);
  EXPECT_EQ(ikes, 8);
}

}  // namespace
}  // namespace ipsec::esp
