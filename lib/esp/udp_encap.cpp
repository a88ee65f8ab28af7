// See udp_encap.h.
#include "esp/udp_encap.h"

#include <cstring>

#include "esp/esp.h"

namespace ipsec::esp {

UdpPayloadKind classifyUdpPayload(std::span<const uint8_t> payload) noexcept {
  if (payload.size() == 1 && payload[0] == kNatKeepalive) return UdpPayloadKind::kKeepalive;
  if (payload.size() >= kNonEspMarkerLength && payload[0] == 0 && payload[1] == 0 && payload[2] == 0 &&
      payload[3] == 0) {
    return UdpPayloadKind::kIke;
  }
  // SPI 0 is reserved (RFC 4303 §2.1), which is what lets the marker exist;
  // with the marker handled above, a zero SPI cannot reach here.
  if (payload.size() < kEspHeaderLength) return UdpPayloadKind::kBad;
  return UdpPayloadKind::kEsp;
}

const char* toString(UdpPayloadKind kind) noexcept {
  switch (kind) {
    case UdpPayloadKind::kEsp: return "esp";
    case UdpPayloadKind::kKeepalive: return "keepalive";
    case UdpPayloadKind::kIke: return "ike";
    case UdpPayloadKind::kBad: return "bad";
  }
  return "?";
}

std::optional<UdpEndpoint> endpointFrom(const sockaddr_storage& ss, socklen_t length) noexcept {
  if (ss.ss_family == AF_INET && length >= static_cast<socklen_t>(sizeof(sockaddr_in))) {
    sockaddr_in sin;
    std::memcpy(&sin, &ss, sizeof sin);
    std::array<uint8_t, 4> a;
    std::memcpy(a.data(), &sin.sin_addr, 4);
    return UdpEndpoint{IpAddress::v4(std::span<const uint8_t, 4>(a)), ntohs(sin.sin_port)};
  }
  if (ss.ss_family == AF_INET6 && length >= static_cast<socklen_t>(sizeof(sockaddr_in6))) {
    sockaddr_in6 sin6;
    std::memcpy(&sin6, &ss, sizeof sin6);
    return UdpEndpoint{IpAddress::v6(std::span<const uint8_t, 16>(sin6.sin6_addr.s6_addr, 16)),
                       ntohs(sin6.sin6_port)};
  }
  return std::nullopt;
}

socklen_t toSockaddr(const UdpEndpoint& e, sockaddr_storage& ss) noexcept {
  std::memset(&ss, 0, sizeof ss);
  if (e.address.isV4()) {
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_port = htons(e.port);
    std::memcpy(&sin.sin_addr, e.address.bytes().data(), 4);
    std::memcpy(&ss, &sin, sizeof sin);
    return sizeof sin;
  }
  sockaddr_in6 sin6{};
  sin6.sin6_family = AF_INET6;
  sin6.sin6_port = htons(e.port);
  std::memcpy(&sin6.sin6_addr, e.address.bytes().data(), 16);
  std::memcpy(&ss, &sin6, sizeof sin6);
  return sizeof sin6;
}

UdpControl parseUdpControl(const msghdr& msg) noexcept {
  UdpControl out;
  // CMSG_NXTHDR takes a non-const msghdr but only reads it.
  auto& m = const_cast<msghdr&>(msg);
  for (cmsghdr* c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
    const size_t dataLen = c->cmsg_len >= CMSG_LEN(0) ? c->cmsg_len - CMSG_LEN(0) : 0;
    if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO && dataLen >= sizeof(in_pktinfo)) {
      in_pktinfo pi;
      std::memcpy(&pi, CMSG_DATA(c), sizeof pi);
      std::array<uint8_t, 4> a;
      std::memcpy(a.data(), &pi.ipi_addr, 4);
      out.dst = IpAddress::v4(std::span<const uint8_t, 4>(a));
    } else if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_TOS && dataLen >= 1) {
      // IP_RECVTOS delivers one byte.
      out.tos = *CMSG_DATA(c);
    } else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO && dataLen >= sizeof(in6_pktinfo)) {
      in6_pktinfo pi;
      std::memcpy(&pi, CMSG_DATA(c), sizeof pi);
      out.dst = IpAddress::v6(std::span<const uint8_t, 16>(pi.ipi6_addr.s6_addr, 16));
    } else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_TCLASS && dataLen >= sizeof(int)) {
      int tc = 0;
      std::memcpy(&tc, CMSG_DATA(c), sizeof tc);
      out.tos = static_cast<uint8_t>(tc);
    }
  }
  return out;
}

std::array<sock_filter, 7> natTSteeringProgram(uint32_t ikeIndex) noexcept {
  const uint32_t espIndex = ikeIndex == 0 ? 1 : 0;
  return {{
      // A = the payload's length: shorter than a marker (a keepalive) → ours
      BPF_STMT(BPF_LD | BPF_W | BPF_LEN, 0),
      BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, kNonEspMarkerLength, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, espIndex),
      // A = the first 32-bit word of the UDP payload
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 0),
      // zero: the non-ESP marker → IKE's socket; else → ours
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, ikeIndex),
      BPF_STMT(BPF_RET | BPF_K, espIndex),
  }};
}

}  // namespace ipsec::esp
