// The messages a sealed TUN super-packet leaves in (services/forwarder/
// super_send.cpp) and the one message filler under them (send_batch.h),
// driven with a frame's layout as super_frame.cpp lays it out: which
// segments go in which message, where each points in the buffer, which
// control messages each carries (read back with CMSG_FIRSTHDR/NXTHDR, as the
// kernel reads them), a failed segment left out, ESP in UDP cut into
// UDP_SEGMENT runs by traffic class, DF bit and size, and our own IPv4
// header beside each segment. No socket: the messages are only read.
#include "super_send.h"

#include <netinet/in.h>
#include <netinet/udp.h>

#include <gtest/gtest.h>

#include <cstring>
#include <optional>
#include <vector>

#include "esp/ip.h"

namespace ipsec::forwarder {
namespace {

esp::IpAddress ip(const char* s) { return *esp::IpAddress::parse(s); }

struct Control {
  int level, type;
  std::vector<std::uint8_t> data;
};

std::vector<Control> controlsOf(const msghdr& m) {
  std::vector<Control> out;
  for (cmsghdr* c = CMSG_FIRSTHDR(&m); c != nullptr; c = CMSG_NXTHDR(const_cast<msghdr*>(&m), c)) {
    const std::size_t length = c->cmsg_len - CMSG_LEN(0);
    out.push_back({c->cmsg_level, c->cmsg_type, {CMSG_DATA(c), CMSG_DATA(c) + length}});
  }
  return out;
}

std::optional<int> intControl(const msghdr& m, int level, int type) {
  for (const Control& c : controlsOf(m)) {
    if (c.level == level && c.type == type && c.data.size() == sizeof(int)) {
      int v;
      std::memcpy(&v, c.data.data(), sizeof v);
      return v;
    }
  }
  return std::nullopt;
}

std::optional<std::uint16_t> segmentSizeOf(const msghdr& m) {
  for (const Control& c : controlsOf(m)) {
    if (c.level == SOL_UDP && c.type == UDP_SEGMENT && c.data.size() == 2) {
      std::uint16_t v;
      std::memcpy(&v, c.data.data(), sizeof v);
      return v;
    }
  }
  return std::nullopt;
}

class SuperSendTest : public ::testing::Test {
 protected:
  static constexpr std::uint32_t kOffset = 64, kStride = 1400, kLast = 600;

  // count segments at kOffset + i * kStride, the last kLast long, TOS 0x10, no DF.
  SuperFrame frame(std::uint16_t count) {
    SuperFrame f;
    f.count = count;
    f.offset = kOffset;
    f.stride = kStride;
    f.length = (count - 1u) * kStride + kLast;
    for (std::uint16_t i = 0; i < count; ++i) f.outerTos[i] = 0x10;
    return f;
  }
  Sa sa(bool v4) {
    Sa s;
    s.src = v4 ? ip("192.0.2.1") : ip("2001:db8:1::1");
    s.dst = v4 ? ip("192.0.2.2") : ip("2001:db8:1::2");
    return s;
  }
  // Message m's bytes: its first iovec, from the buffer.
  std::pair<std::size_t, std::size_t> span(std::size_t m, std::size_t part = 0) const {
    const iovec& v = send_.msgs[m].msg_hdr.msg_iov[part];
    return {static_cast<std::size_t>(static_cast<const std::uint8_t*>(v.iov_base) - buffer_.data()), v.iov_len};
  }

  std::vector<std::uint8_t> buffer_ = std::vector<std::uint8_t>(65536 + 256);
  SuperSend send_;
};

TEST_F(SuperSendTest, UdpWithGsoIsOneMessageCutAtTheStride) {
  const SuperFrame f = frame(5);
  send_.fillUdp(f, buffer_.data(), 0, sa(true), 4500, true);
  ASSERT_EQ(send_.count, 1u);
  EXPECT_EQ(send_.segments[0], 5);
  EXPECT_EQ(span(0), std::make_pair(std::size_t{kOffset}, std::size_t{4 * kStride + kLast}));
  const msghdr& m = send_.msgs[0].msg_hdr;
  EXPECT_EQ(intControl(m, IPPROTO_IP, IP_TOS), 0x10);
  EXPECT_EQ(segmentSizeOf(m), kStride);
  const std::vector<Control> controls = controlsOf(m);
  ASSERT_EQ(controls.size(), 3u);  // TOS, the SA's source address, the segment size last
  EXPECT_EQ(controls[1].type, IP_PKTINFO);
  in_pktinfo source;
  std::memcpy(&source, controls[1].data.data(), sizeof source);
  EXPECT_EQ(std::memcmp(&source.ipi_spec_dst, sa(true).src.bytes().data(), 4), 0);
  EXPECT_EQ(controls[2].type, UDP_SEGMENT);
  // Without its last control message the message is a plain datagram (the fallback).
  msghdr plain = m;
  plain.msg_controllen -= kSegmentControlSpace;
  EXPECT_EQ(segmentSizeOf(plain), std::nullopt);
  EXPECT_EQ(controlsOf(plain).size(), 2u);
  // To the SA's peer at the NAT-T port.
  const auto* to = static_cast<const sockaddr_in*>(m.msg_name);
  EXPECT_EQ(to->sin_family, AF_INET);
  EXPECT_EQ(ntohs(to->sin_port), 4500);
}

TEST_F(SuperSendTest, UdpRunsBreakAtAFailedSegmentTosAndDf) {
  SuperFrame f = frame(8);
  f.outerTos[5] = f.outerTos[6] = f.outerTos[7] = 0x20;  // TOS changes at 5
  f.dontFragment = 1u << 7;                               // DF changes at 7
  send_.fillUdp(f, buffer_.data(), 1u << 2, sa(true), 4500, true);  // segment 2 failed
  ASSERT_EQ(send_.count, 4u);  // [0,1] [3,4] [5,6] [7]
  EXPECT_EQ(send_.segments[0], 2);
  EXPECT_EQ(send_.segments[1], 2);
  EXPECT_EQ(send_.segments[2], 2);
  EXPECT_EQ(send_.segments[3], 1);
  EXPECT_EQ(span(1).first, kOffset + 3 * kStride);
  EXPECT_EQ(intControl(send_.msgs[2].msg_hdr, IPPROTO_IP, IP_TOS), 0x20);
  EXPECT_FALSE(send_.dontFragment[2]);
  EXPECT_TRUE(send_.dontFragment[3]);
  EXPECT_EQ(segmentSizeOf(send_.msgs[3].msg_hdr), std::nullopt);  // one segment: no UDP_SEGMENT
  EXPECT_EQ(send_.segmentSize[3], 0u);
  EXPECT_EQ(span(3), std::make_pair(std::size_t{kOffset + 7 * kStride}, std::size_t{kLast}));
}

TEST_F(SuperSendTest, UdpRunStopsAtTheGsoByteLimit) {
  const SuperFrame f = frame(60);  // 60 * 1400 > 65535 - 28
  send_.fillUdp(f, buffer_.data(), 0, sa(true), 4500, true);
  ASSERT_EQ(send_.count, 2u);
  EXPECT_EQ(send_.segments[0], (65535 - 28) / kStride);
  EXPECT_EQ(send_.segments[0] + send_.segments[1], 60);
}

TEST_F(SuperSendTest, UdpWithoutGsoIsOneMessagePerSegmentIpv6WithoutSourceAddress) {
  const SuperFrame f = frame(3);
  send_.fillUdp(f, buffer_.data(), 0, sa(false), 4500, false);
  ASSERT_EQ(send_.count, 3u);
  for (std::size_t m = 0; m < 3; ++m) {
    EXPECT_EQ(send_.segments[m], 1);
    EXPECT_EQ(controlsOf(send_.msgs[m].msg_hdr).size(), 1u);
    EXPECT_EQ(intControl(send_.msgs[m].msg_hdr, IPPROTO_IPV6, IPV6_TCLASS), 0x10);
  }
}

TEST_F(SuperSendTest, Raw6IsOneMessagePerGoodSegment) {
  const SuperFrame f = frame(4);
  send_.fillRaw6(f, buffer_.data(), 1u << 1, sa(false));
  ASSERT_EQ(send_.count, 3u);
  EXPECT_EQ(span(0), std::make_pair(std::size_t{kOffset}, std::size_t{kStride}));
  EXPECT_EQ(span(1).first, kOffset + 2 * kStride);
  EXPECT_EQ(span(2), std::make_pair(std::size_t{kOffset + 3 * kStride}, std::size_t{kLast}));
  EXPECT_EQ(intControl(send_.msgs[2].msg_hdr, IPPROTO_IPV6, IPV6_TCLASS), 0x10);
  const auto* to = static_cast<const sockaddr_in6*>(send_.msgs[0].msg_hdr.msg_name);
  EXPECT_EQ(to->sin6_family, AF_INET6);
  EXPECT_EQ(to->sin6_port, 0);
}

TEST_F(SuperSendTest, OwnIpv4HeaderBesideEachSegment) {
  SuperFrame f = frame(3);
  f.dontFragment = 1u << 1;
  NatT nat;
  nat.sport = 4501;
  nat.dport = 4500;
  std::uint16_t ipId = 7;
  EXPECT_EQ(send_.fillWithHeaders4(f, buffer_.data(), 0, sa(true), &nat, ipId), 0u);
  EXPECT_EQ(ipId, 10);
  ASSERT_EQ(send_.count, 3u);
  for (std::size_t m = 0; m < 3; ++m) {
    const msghdr& h = send_.msgs[m].msg_hdr;
    ASSERT_EQ(h.msg_iovlen, 2u);
    EXPECT_EQ(h.msg_controllen, 0u);
    EXPECT_EQ(h.msg_iov[0].iov_len, 28u);  // IPv4 + UDP
    const auto* header = static_cast<const std::uint8_t*>(h.msg_iov[0].iov_base);
    EXPECT_EQ(header[0], 0x45);
    EXPECT_EQ((header[4] << 8) | header[5], 7 + static_cast<int>(m));     // Identification
    EXPECT_EQ(bool(header[6] & 0x40), m == 1);                          // DF of segment 1 alone
    EXPECT_EQ((header[22] << 8) | header[23], 4500);                    // UDP destination port
    EXPECT_EQ(((header[2] << 8) | header[3]), 28 + static_cast<int>(span(m, 1).second));  // total length
  }
  EXPECT_EQ(span(2, 1), std::make_pair(std::size_t{kOffset + 2 * kStride}, std::size_t{kLast}));
}

TEST_F(SuperSendTest, NattSaWithoutPortsHasNowhereToGo) {
  const SuperFrame f = frame(3);
  NatT nat;  // no ports
  std::uint16_t ipId = 1;
  EXPECT_EQ(send_.fillWithHeaders4(f, buffer_.data(), 1u << 0, sa(true), &nat, ipId), 2u);
  EXPECT_EQ(send_.count, 0u);
}

TEST(MessageBatch, ControlMessagesAreZeroPaddedAndRefillable) {
  MessageBatch<2, 2 * CMSG_SPACE(sizeof(int)), 1> b;
  b.cmsgs[0].fill('\xee');
  std::uint8_t byte = 0;
  sockaddr_storage to{};
  const std::size_t i = b.addMessage(&byte, 1, &to, sizeof(sockaddr_in));
  b.setTrafficClass(i, true, 0x2e);
  b.setTrafficClass(i, false, 0x2e);
  EXPECT_EQ(b.msgs[i].msg_hdr.msg_controllen, 2 * CMSG_SPACE(sizeof(int)));
  // Padding zeroed: flushGso compares control messages bytewise.
  const auto* first = reinterpret_cast<const cmsghdr*>(b.cmsgs[i].data());
  for (std::size_t k = CMSG_LEN(sizeof(int)); k < CMSG_SPACE(sizeof(int)); ++k) {
    EXPECT_EQ(b.cmsgs[i][k], 0) << k;
  }
  EXPECT_EQ(first->cmsg_level, IPPROTO_IP);
  // The same slot filled again starts afresh.
  b.count = 0;
  EXPECT_EQ(b.addMessage(&byte, 1, &to, sizeof(sockaddr_in)), 0u);
  EXPECT_EQ(b.msgs[0].msg_hdr.msg_controllen, 0u);
  EXPECT_EQ(b.msgs[0].msg_hdr.msg_control, nullptr);
}

}  // namespace
}  // namespace ipsec::forwarder
