// SockAddress: sockaddr_in/in6 encoding and decoding for the PF_KEY codec.
// readSockaddr takes untrusted bytes: it checks the length before each copy and
// never casts the buffer to a struct (the bytes may be unaligned).
#include "pfkey/address.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstring>

namespace ipsec::pfkey {

SockAddress SockAddress::v4(std::array<uint8_t, 4> a, uint16_t port) noexcept {
  SockAddress s;
  s.family = AF_INET;
  std::memcpy(s.bytes.data(), a.data(), 4);
  s.port = port;
  return s;
}

SockAddress SockAddress::v6(const std::array<uint8_t, 16>& a, uint16_t port) noexcept {
  SockAddress s;
  s.family = AF_INET6;
  s.bytes = a;
  s.port = port;
  return s;
}

std::optional<SockAddress> SockAddress::fromString(std::string_view text) {
  if (text.empty() || text.size() > INET6_ADDRSTRLEN) return std::nullopt;
  std::string s(text);
  SockAddress a;
  if (inet_pton(AF_INET, s.c_str(), a.bytes.data()) == 1) {
    a.family = AF_INET;
    return a;
  }
  if (inet_pton(AF_INET6, s.c_str(), a.bytes.data()) == 1) {
    a.family = AF_INET6;
    return a;
  }
  return std::nullopt;
}

size_t SockAddress::sockaddrSize() const noexcept {
  if (family == AF_INET) return sizeof(sockaddr_in);
  if (family == AF_INET6) return sizeof(sockaddr_in6);
  return 0;
}

void SockAddress::writeSockaddr(uint8_t* out) const noexcept {
  if (family == AF_INET) {
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_port = htons(port);
    std::memcpy(&sin.sin_addr, bytes.data(), 4);
    std::memcpy(out, &sin, sizeof sin);
  } else if (family == AF_INET6) {
    sockaddr_in6 sin6{};
    sin6.sin6_family = AF_INET6;
    sin6.sin6_port = htons(port);
    std::memcpy(&sin6.sin6_addr, bytes.data(), 16);
    std::memcpy(out, &sin6, sizeof sin6);
  }
}

std::optional<SockAddress> SockAddress::readSockaddr(std::span<const uint8_t> in) noexcept {
  sa_family_t family;
  if (in.size() < sizeof family) return std::nullopt;
  std::memcpy(&family, in.data(), sizeof family);
  SockAddress a;
  if (family == AF_INET) {
    if (in.size() < sizeof(sockaddr_in)) return std::nullopt;
    sockaddr_in sin;
    std::memcpy(&sin, in.data(), sizeof sin);
    a.family = AF_INET;
    a.port = ntohs(sin.sin_port);
    std::memcpy(a.bytes.data(), &sin.sin_addr, 4);
    return a;
  }
  if (family == AF_INET6) {
    if (in.size() < sizeof(sockaddr_in6)) return std::nullopt;
    sockaddr_in6 sin6;
    std::memcpy(&sin6, in.data(), sizeof sin6);
    a.family = AF_INET6;
    a.port = ntohs(sin6.sin6_port);
    std::memcpy(a.bytes.data(), &sin6.sin6_addr, 16);
    return a;
  }
  return std::nullopt;
}

std::string SockAddress::toString() const {
  char buf[INET6_ADDRSTRLEN] = {};
  if (family != AF_INET && family != AF_INET6) return "?";
  if (!inet_ntop(family, bytes.data(), buf, sizeof buf)) return "?";
  return buf;
}

}  // namespace ipsec::pfkey
