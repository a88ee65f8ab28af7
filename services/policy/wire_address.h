// ipsec-policy: addresses and protocols between PF_KEY's types and the
// control messages' bytes (proto/*.capnp carry an address as 4 or 16 bytes),
// one definition for the files that translate (sa_requests, spd_requests,
// sa_direction, nat_mapping). The bytes come from keydb or the forwarder: an
// address of any other length is nullopt, never read past.
#pragma once

#include <linux/pfkeyv2.h>
#include <netinet/in.h>

#include <array>
#include <capnp/blob.h>
#include <cstdint>
#include <cstring>
#include <optional>

#include "pfkey/address.h"

namespace ipsec::policy {

inline std::optional<pfkey::SockAddress> addressFrom(capnp::Data::Reader d, std::uint16_t port = 0) {
  if (d.size() == 4) return pfkey::SockAddress::v4({d[0], d[1], d[2], d[3]}, port);
  if (d.size() == 16) {
    std::array<std::uint8_t, 16> b{};
    std::memcpy(b.data(), d.begin(), 16);
    return pfkey::SockAddress::v6(b, port);
  }
  return std::nullopt;
}

// The address's 4 or 16 bytes, borrowed from `a`.
inline capnp::Data::Reader raw(const pfkey::SockAddress& a) {
  return capnp::Data::Reader(a.bytes.data(), a.isV6() ? 16 : 4);
}

// A policy request's IP protocol as the satype of the SA that serves it.
inline std::uint8_t satypeOf(std::uint16_t proto) {
  switch (proto) {
    case IPPROTO_ESP: return SADB_SATYPE_ESP;
    case IPPROTO_AH: return SADB_SATYPE_AH;
    case IPPROTO_COMP: return SADB_X_SATYPE_IPCOMP;
  }
  return SADB_SATYPE_UNSPEC;
}

}  // namespace ipsec::policy
