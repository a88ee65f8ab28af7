// virtio_net_hdr read, write and checks (see vnet_header.h).
#include "offload/vnet_header.h"

#include <cstring>

#include "offload/packet.h"

namespace ipsec::offload {

const char* toString(VnetError error) noexcept {
  switch (error) {
    case VnetError::kOk: return "ok";
    case VnetError::kUnknownFlags: return "unknown_flags";
    case VnetError::kUnknownGsoType: return "unknown_gso_type";
    case VnetError::kEcnWithoutTcp: return "ecn_without_tcp";
    case VnetError::kGsoWithoutNeedsChecksum: return "gso_without_needs_csum";
    case VnetError::kZeroGsoSize: return "zero_gso_size";
    case VnetError::kChecksumOutsidePacket: return "csum_outside_packet";
    case VnetError::kBadPacket: return "bad_packet";
    case VnetError::kGsoProtocolMismatch: return "gso_protocol_mismatch";
    case VnetError::kChecksumNotAtTransport: return "csum_not_at_transport";
    case VnetError::kTooManySegments: return "too_many_segments";
  }
  return "unknown";
}

namespace {

std::uint16_t hostLoad16(const std::uint8_t* p) noexcept {
  std::uint16_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
void hostStore16(std::uint8_t* p, std::uint16_t v) noexcept { std::memcpy(p, &v, sizeof v); }

// The protocol each GSO type carries, and the IP version (0: either).
bool gsoMatches(std::uint8_t kind, const PacketLayout& layout) noexcept {
  switch (kind) {
    case kGsoTcpV4: return layout.version == 4 && layout.protocol == kProtoTcp;
    case kGsoTcpV6: return layout.version == 6 && layout.protocol == kProtoTcp;
    case kGsoUdpL4: return layout.protocol == kProtoUdp;
    default: return false;
  }
}

VnetError checkGso(const VnetHeader& h, std::span<const std::uint8_t> packet) noexcept {
  if (!h.needsChecksum()) return VnetError::kGsoWithoutNeedsChecksum;
  if (h.gsoSize == 0) return VnetError::kZeroGsoSize;
  const PacketLayout layout = parseLayout(packet);
  if (!layout.ok()) return VnetError::kBadPacket;
  if (!gsoMatches(h.gsoKind(), layout)) return VnetError::kGsoProtocolMismatch;
  const std::uint16_t field = layout.protocol == kProtoTcp ? kTcpChecksumOffset : kUdpChecksumOffset;
  if (h.checksumStart != layout.l4Offset || h.checksumOffset != field) return VnetError::kChecksumNotAtTransport;
  const std::size_t payload = layout.payloadLength();
  if ((payload + h.gsoSize - 1) / h.gsoSize > kMaxSegments) return VnetError::kTooManySegments;
  return VnetError::kOk;
}

}  // namespace

VnetHeader readVnetHeader(std::span<const std::uint8_t, kVnetHeaderSize> b) noexcept {
  VnetHeader h;
  h.flags = b[0];
  h.gsoType = b[1];
  h.headerLength = hostLoad16(&b[2]);
  h.gsoSize = hostLoad16(&b[4]);
  h.checksumStart = hostLoad16(&b[6]);
  h.checksumOffset = hostLoad16(&b[8]);
  return h;
}

void writeVnetHeader(const VnetHeader& h, std::span<std::uint8_t, kVnetHeaderSize> b) noexcept {
  b[0] = h.flags;
  b[1] = h.gsoType;
  hostStore16(&b[2], h.headerLength);
  hostStore16(&b[4], h.gsoSize);
  hostStore16(&b[6], h.checksumStart);
  hostStore16(&b[8], h.checksumOffset);
}

VnetError checkVnetHeader(const VnetHeader& h, std::span<const std::uint8_t> packet) noexcept {
  if ((h.flags & ~(kVnetFlagNeedsChecksum | kVnetFlagDataValid)) != 0) return VnetError::kUnknownFlags;
  const std::uint8_t kind = h.gsoKind();
  if (kind != kGsoNone && kind != kGsoTcpV4 && kind != kGsoTcpV6 && kind != kGsoUdpL4) {
    return VnetError::kUnknownGsoType;
  }
  if ((h.gsoType & kGsoEcn) != 0 && kind != kGsoTcpV4 && kind != kGsoTcpV6) return VnetError::kEcnWithoutTcp;
  if (h.needsChecksum() && std::size_t{h.checksumStart} + h.checksumOffset + 2 > packet.size()) {
    return VnetError::kChecksumOutsidePacket;
  }
  if (kind == kGsoNone) return VnetError::kOk;
  return checkGso(h, packet);
}

}  // namespace ipsec::offload
