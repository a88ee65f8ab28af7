// Unit tests of lib/esp/udp_gro: the UDP_GRO control message and the split
// of a coalesced datagram (sizes, a short last segment, every refusal), the
// GSO run a send batch makes, and the kernel's own contract on loopback: a
// UDP_SEGMENT send received by a UDP_GRO socket arrives whole with the size.
#include "esp/udp_gro.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <poll.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <vector>

namespace ipsec::esp {
namespace {

// One sendmsg of `payload` to `to` with UDP_SEGMENT `segment`: the kernel
// cuts it into datagrams of that size (the last one may be short).
ssize_t sendSegmented(int fd, void* to, socklen_t toLength, std::vector<std::uint8_t>& payload,
                      std::uint16_t segment, int flags) {
  iovec iov{payload.data(), payload.size()};
  std::array<char, CMSG_SPACE(sizeof(std::uint16_t))> space{};
  msghdr m{};
  m.msg_name = to;
  m.msg_namelen = toLength;
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = space.data();
  m.msg_controllen = space.size();
  cmsghdr* c = CMSG_FIRSTHDR(&m);
  c->cmsg_level = SOL_UDP;
  c->cmsg_type = UDP_SEGMENT;
  c->cmsg_len = CMSG_LEN(sizeof(std::uint16_t));
  std::memcpy(CMSG_DATA(c), &segment, sizeof segment);
  return sendmsg(fd, &m, flags);
}

// A msghdr whose control space holds the given control messages.
struct Control {
  std::array<char, 256> space{};
  msghdr msg{};
  std::size_t used = 0;
  Control() {
    msg.msg_control = space.data();
    msg.msg_controllen = 0;
  }
  void add(int level, int type, const void* data, std::size_t length) {
    msg.msg_controllen = used + CMSG_SPACE(length);
    cmsghdr* c = reinterpret_cast<cmsghdr*>(space.data() + used);
    c->cmsg_level = level;
    c->cmsg_type = type;
    c->cmsg_len = CMSG_LEN(length);
    std::memcpy(CMSG_DATA(c), data, length);
    used += CMSG_SPACE(length);
  }
  void addInt(int level, int type, int value) { add(level, type, &value, sizeof value); }
};

GroControl gro(std::uint32_t size) { return {true, false, size}; }

TEST(GroControl, AbsentWhenNoControlMessage) {
  Control c;
  const GroControl g = parseGroControl(c.msg);
  EXPECT_FALSE(g.present);
  EXPECT_FALSE(g.bad);
}

TEST(GroControl, ReadsTheSegmentSizeBesideOtherMessages) {
  Control c;
  c.addInt(IPPROTO_IPV6, IPV6_TCLASS, 0x2e);
  c.addInt(SOL_UDP, UDP_GRO, 1436);
  const GroControl g = parseGroControl(c.msg);
  EXPECT_TRUE(g.present);
  EXPECT_FALSE(g.bad);
  EXPECT_EQ(g.segmentSize, 1436u);
}

TEST(GroControl, ShortMessageIsBad) {
  Control c;
  const std::uint16_t two = 1400;
  c.add(SOL_UDP, UDP_GRO, &two, sizeof two);
  const GroControl g = parseGroControl(c.msg);
  EXPECT_TRUE(g.present);
  EXPECT_TRUE(g.bad);
}

TEST(GroControl, NegativeSizeIsBad) {
  Control c;
  c.addInt(SOL_UDP, UDP_GRO, -5);
  EXPECT_TRUE(parseGroControl(c.msg).bad);
}

TEST(GroControl, TruncatedControlSpaceIsBad) {
  Control c;
  c.msg.msg_flags = MSG_CTRUNC;
  EXPECT_TRUE(parseGroControl(c.msg).bad);
  EXPECT_EQ(splitGro(3000, parseGroControl(c.msg)).error, GroError::kBadControl);
}

TEST(GroSplit, WithoutControlIsOneSegment) {
  const GroSplit s = splitGro(1500, {});
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s.count, 1u);
  EXPECT_EQ(s.segmentLength(0), 1500u);
}

TEST(GroSplit, EqualSegmentsDivideExactly) {
  const GroSplit s = splitGro(4 * 1400, gro(1400));
  ASSERT_TRUE(s.ok());
  ASSERT_EQ(s.count, 4u);
  for (std::size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(s.offset(i), i * 1400);
    EXPECT_EQ(s.segmentLength(i), 1400u);
  }
}

TEST(GroSplit, LastSegmentMayBeShorter) {
  const GroSplit s = splitGro(2 * 1400 + 77, gro(1400));
  ASSERT_TRUE(s.ok());
  ASSERT_EQ(s.count, 3u);
  EXPECT_EQ(s.segmentLength(0), 1400u);
  EXPECT_EQ(s.segmentLength(1), 1400u);
  EXPECT_EQ(s.offset(2), 2800u);
  EXPECT_EQ(s.segmentLength(2), 77u);
}

TEST(GroSplit, SegmentSizeEqualToTheDatagramIsOneSegment) {
  const GroSplit s = splitGro(900, gro(900));
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s.count, 1u);
  EXPECT_EQ(s.segmentLength(0), 900u);
}

TEST(GroSplit, ZeroSegmentSizeIsRefused) {
  const GroSplit s = splitGro(3000, gro(0));
  EXPECT_EQ(s.error, GroError::kZeroSegment);
  EXPECT_EQ(s.count, 0u);
}

TEST(GroSplit, SegmentSizeAboveTheDatagramIsRefused) {
  EXPECT_EQ(splitGro(1000, gro(1001)).error, GroError::kSegmentAboveDatagram);
  EXPECT_EQ(splitGro(0, gro(1)).error, GroError::kSegmentAboveDatagram);
}

TEST(GroSplit, TooManySegmentsAreRefused) {
  EXPECT_TRUE(splitGro(kMaxGroSegments * 10, gro(10)).ok());
  EXPECT_EQ(splitGro(kMaxGroSegments * 10 + 1, gro(10)).error, GroError::kTooManySegments);
}

TEST(GroSplit, ErrorsHaveNames) {
  EXPECT_STREQ(toString(GroError::kZeroSegment), "segment size 0");
  EXPECT_STREQ(toString(GroError::kOk), "ok");
}

std::vector<iovec> lengths(std::initializer_list<std::size_t> l) {
  std::vector<iovec> v;
  for (std::size_t n : l) v.push_back({nullptr, n});
  return v;
}

TEST(GsoRun, SameSizeSamePeerRunsTogether) {
  auto v = lengths({1000, 1000, 1000, 1000});
  EXPECT_EQ(gsoRun(v, 0, [](std::size_t) { return true; }), 4u);
  EXPECT_EQ(gsoRun(v, 2, [](std::size_t) { return true; }), 2u);
}

TEST(GsoRun, AShorterPacketEndsTheRun) {
  auto v = lengths({1000, 1000, 600, 1000});
  EXPECT_EQ(gsoRun(v, 0, [](std::size_t) { return true; }), 3u);
  EXPECT_EQ(gsoRun(v, 3, [](std::size_t) { return true; }), 1u);
}

TEST(GsoRun, ALongerPacketIsNotTaken) {
  auto v = lengths({600, 1000});
  EXPECT_EQ(gsoRun(v, 0, [](std::size_t) { return true; }), 1u);
}

TEST(GsoRun, AnotherPeerEndsTheRun) {
  auto v = lengths({1000, 1000, 1000});
  EXPECT_EQ(gsoRun(v, 0, [](std::size_t i) { return i != 2; }), 2u);
}

TEST(GsoRun, StopsAtTheSegmentAndByteLimits) {
  std::vector<iovec> many(kMaxGsoSegments + 5, iovec{nullptr, 100});
  EXPECT_EQ(gsoRun(many, 0, [](std::size_t) { return true; }), kMaxGsoSegments);
  std::vector<iovec> big(60, iovec{nullptr, 1400});
  EXPECT_EQ(gsoRun(big, 0, [](std::size_t) { return true; }), kMaxGsoBytes / 1400);
}

// 48 x 1365 = 65520 bytes: an IPv6 payload length carries them, an IPv4
// total length (with its 20-byte header) does not; 47 fit both.
TEST(GsoRun, OverIpv4TheIpHeaderCountsAgainstTheByteLimit) {
  std::vector<iovec> v(60, iovec{nullptr, 1365});
  EXPECT_EQ(gsoRun(v, 0, [](std::size_t) { return true; }), 48u);
  EXPECT_EQ(gsoRun(v, 0, [](std::size_t) { return true; }, kMaxGsoBytes4), 47u);
}

// The kernel's side of that limit, on loopback: an IPv4 UDP_SEGMENT send of
// 48 x 1365 bytes is refused, 47 x 1365 leaves.
TEST(GsoKernel, Ipv4RefusesASendBeyondKMaxGsoBytes4) {
  const int rx = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  const int tx = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(rx, 0);
  ASSERT_GE(tx, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t alen = sizeof a;
  ASSERT_EQ(bind(rx, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(getsockname(rx, reinterpret_cast<sockaddr*>(&a), &alen), 0);
  auto send = [&](std::size_t segments) {
    std::vector<std::uint8_t> payload(segments * 1365, 0xab);
    return sendSegmented(tx, &a, sizeof a, payload, 1365, MSG_DONTWAIT);
  };
  const ssize_t fits = send(47);
  const int fitsErrno = errno;
  const ssize_t over = send(48);
  const int overErrno = errno;
  close(rx);
  close(tx);
  if (fits < 0 && fitsErrno == EIO) GTEST_SKIP() << "UDP_SEGMENT refused on loopback";
  EXPECT_EQ(fits, static_cast<ssize_t>(47 * 1365)) << std::strerror(fitsErrno);
  EXPECT_EQ(47 * 1365, static_cast<int>(kMaxGsoBytes4 / 1365 * 1365));
  EXPECT_LT(over, 0);
  EXPECT_EQ(overErrno, EMSGSIZE);
}

TEST(GsoRun, EmptyOrPastTheEnd) {
  std::vector<iovec> none;
  EXPECT_EQ(gsoRun(none, 0, [](std::size_t) { return true; }), 0u);
  auto zero = lengths({0, 0});
  EXPECT_EQ(gsoRun(zero, 0, [](std::size_t) { return true; }), 1u);
}

// The kernel's side of the contract, on loopback: three segments sent with
// UDP_SEGMENT (the last one short) reach a UDP_GRO socket as one datagram
// whose control message splits it back into the three payloads.
TEST(GroKernel, UdpSegmentSendArrivesCoalescedAndSplitsBack) {
  const int rx = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  const int tx = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(rx, 0);
  ASSERT_GE(tx, 0);
  int on = 1;
  if (setsockopt(rx, SOL_UDP, UDP_GRO, &on, sizeof on) != 0) {
    close(rx);
    close(tx);
    GTEST_SKIP() << "UDP_GRO not supported by this kernel";
  }
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  a.sin6_addr = in6addr_loopback;
  socklen_t alen = sizeof a;
  ASSERT_EQ(bind(rx, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(getsockname(rx, reinterpret_cast<sockaddr*>(&a), &alen), 0);

  std::vector<std::uint8_t> payload(2 * 1000 + 300);
  for (std::size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<std::uint8_t>(i / 1000 + 1);
  if (sendSegmented(tx, &a, sizeof a, payload, 1000, 0) != static_cast<ssize_t>(payload.size())) {
    close(rx);
    close(tx);
    GTEST_SKIP() << "UDP_SEGMENT refused on loopback: " << std::strerror(errno);
  }

  pollfd p{rx, POLLIN, 0};
  ASSERT_EQ(poll(&p, 1, 2000), 1);
  std::vector<std::uint8_t> got(65536);
  iovec riov{got.data(), got.size()};
  std::array<char, 128> rspace{};
  msghdr r{};
  r.msg_iov = &riov;
  r.msg_iovlen = 1;
  r.msg_control = rspace.data();
  r.msg_controllen = rspace.size();
  const ssize_t n = recvmsg(rx, &r, 0);
  close(rx);
  close(tx);
  ASSERT_EQ(n, static_cast<ssize_t>(payload.size()));
  const GroSplit s = splitGro(static_cast<std::size_t>(n), parseGroControl(r));
  ASSERT_TRUE(s.ok()) << toString(s.error);
  ASSERT_EQ(s.count, 3u);
  EXPECT_EQ(s.segmentSize, 1000u);
  EXPECT_EQ(s.segmentLength(2), 300u);
  for (std::size_t i = 0; i < s.count; ++i) EXPECT_EQ(got[s.offset(i)], i + 1) << "segment " << i;
}

}  // namespace
}  // namespace ipsec::esp
