// ipsec-forwarder: NAT-OA for transport mode in UDP (RFC 3948 §3.1.2): the
// SA's original addresses as keydb's install gives them (control.cpp). After
// the broker opened a packet and its IP header was rebuilt from the outer
// (NATed) addresses, the packet core (inbound_open.cpp) makes the TCP/UDP
// checksum verify against them with these (lib/esp/nat_oa.h says how).
#include "forwarder.h"

namespace ipsec::forwarder {
namespace {

std::optional<esp::IpAddress> addressOf(capnp::Data::Reader d) {
  if (d.size() == 4) return esp::IpAddress::v4(std::span<const std::uint8_t, 4>(d.begin(), 4));
  if (d.size() == 16) return esp::IpAddress::v6(std::span<const std::uint8_t, 16>(d.begin(), 16));
  return std::nullopt;
}

}  // namespace

esp::NatOriginalAddresses Forwarder::natOriginalAddresses(proto::SaParams::Reader p) {
  return {addressOf(p.getNatOaSrc()), addressOf(p.getNatOaDst())};
}

}  // namespace ipsec::forwarder
