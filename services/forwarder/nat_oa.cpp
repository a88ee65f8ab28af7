// ipsec-forwarder: NAT-OA for transport mode in UDP (RFC 3948 §3.1.2). After
// the broker opened the packet and transport.cpp rebuilt its IP header from
// the outer (NATed) addresses, the TCP/UDP checksum is made to verify against
// them: from the SA's original addresses when the key manager gave them,
// otherwise cleared or recomputed (lib/esp/nat_oa.h says why). Runs on the
// data-path thread: noexcept, no allocation; every outcome counted.
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

bool Forwarder::fixNatOa(const Sa& sa, std::span<std::uint8_t> packet) noexcept {
  const NatT* nat = natTOf(sa);
  switch (esp::fixNatOaChecksum(packet, nat ? nat->oa : esp::NatOriginalAddresses{})) {
    case esp::NatOaFixup::kNotNeeded: ++counters_.natt_in_oa_not_needed; return true;
    case esp::NatOaFixup::kAdjusted: ++counters_.natt_in_oa_adjusted; return true;
    case esp::NatOaFixup::kZeroed: ++counters_.natt_in_oa_zeroed; return true;
    case esp::NatOaFixup::kRecomputed: ++counters_.natt_in_oa_recomputed; return true;
    case esp::NatOaFixup::kMalformed: return false;
  }
  return false;
}

}  // namespace ipsec::forwarder
