// ipsec-forwarder: the inbound packet core after the broker — what the
// forwarder does with a packet once its ESP has been opened (or its AH
// verified) and the replay window moved (esp_in.h acceptVerified), as a pure
// function of the buffer's bytes and the tables it borrows. No I/O, no rings,
// no clock: the shell (inbound.cpp onOpened, ah.cpp onAhVerified) applies the
// verdict — a drop counted under its reason (and the SA's in_drop_other), a
// TFC dummy counted, the packet at {offset, length} written to the TUN, or an
// inner ESP packet opened again in the same buffer.
//
// Stages, ESP: transport or tunnel by the SA's mode and the next header →
// trailer checks → IPComp inflated in place → (tunnel) TFC padding cut at
// the inner IP length, ECN (RFC 6040) → (transport) the IP header rebuilt,
// NAT-OA checksum fix → inner packet parsed → ESP for one of our transport
// SAs inside a tunnel: open again → SPD(in) lookup, the SA and the bundle's
// other layers (BufferContext::peeled, plan.h) judged against the policy →
// deliver. The bytes are hostile (decrypted by a peer's key, which proves
// only who sent them); every reject has its counter. Events that are no
// verdict (TFC cut, IPComp inflated, NAT-OA fix-ups, a bundle's optional leg
// missing) are counted in the borrowed Counters as they happen.
#pragma once

#include <cstdint>
#include <span>

#include "counters.h"
#include "esp/ip.h"
#include "esp/udp_encap.h"
#include "esp_in.h"
#include "ipcomp_sas.h"
#include "natt_peers.h"
#include "plan.h"
#include "tables.h"

namespace ipsec::forwarder {

// What the shell recorded about the packet before the broker opened it.
struct OpenedFrom {
  std::uint8_t tos = 0;        // the outer TOS / traffic class (ECN; transport mode's rebuilt header)
  bool udp = false;            // came ESP-in-UDP (NAT-T)
  esp::UdpEndpoint peer;       // the sender: UDP's peer, or an IPv6 raw socket's msg_name (address only)
  std::uint8_t hopLimit = 64;  // IPv6 raw: the outer hop limit (transport mode's rebuilt header)
  // The outer layer already peeled off this buffer (AH transport, an ESP tunnel), and its SA.
  StepKind peeled = StepKind::kNone;
  SaRef peeledSa{};
};

// What the core borrows: the tables, the IPComp switch, and the counters of
// events on the way (drops are the verdict's, the shell counts them).
struct InboundTables {
  SaTable& sas;
  const Spd& spd;
  IpcompSas& ipcomp;
  const NattPeers& natt;
  Counters& counters;
  bool ipcompEnabled = true;  // net.inet.ipcomp.enable
};

// An ESP packet inside the one just opened, for one of our SAs: the shell
// hands it to the inbound path again (inboundPacket) as if it had come so.
struct InnerEsp {
  std::uint32_t espOffset = 0;  // its ESP header in the buffer
  std::uint32_t end = 0;        // the end of its IP packet in the buffer
  esp::IpAddress src, dst;      // src: IPv6 only (transport mode rebuilds the header from it)
  std::uint8_t tos = 0;
  std::uint8_t hopLimit = 64;
};

struct OpenedVerdict {
  enum class Kind : std::uint8_t {
    kDrop,       // counted under `drop` (and the SA's in_drop_other, saDropOther)
    kDummy,      // a TFC dummy packet (next header 59): counted under `drop` (esp_in_dummy), not the SA's
    kDeliver,    // buffer[offset, offset + length) to the TUN
    kOpenAgain,  // `again` to open; buffer[offset, offset + length) is the packet that carried it (the outer SA's)
  };
  Kind kind = Kind::kDrop;
  DropReason drop = nullptr;
  // kDrop: the SA's own in_drop_other moves too (all but an ESP+AH bundle
  // whose ESP is not where AH's SA says, counted as the bundle's alone).
  bool saDropOther = true;
  std::uint32_t offset = 0, length = 0;
  bool transport = false;  // kDeliver: a transport-mode packet
  InnerEsp again{};
  esp::FlowKey flow{};  // the inner packet's, once parsed (debug logs of a policy refusal)
};

// ESP: the SA opened buffer[espOffset, espOffset + espLength) (header..ICV).
// The buffer is writable to its end: IPComp inflates into it, ECN marks CE,
// transport mode rebuilds the IP header in front of the payload (IPv4 raw:
// from the received header at the buffer's start).
OpenedVerdict judgeOpened(const InboundTables& t, std::span<std::uint8_t> buffer, std::uint32_t espOffset,
                          std::uint32_t espLength, Sa& sa, const OpenedFrom& from) noexcept;

// AH: the SA verified the packet and ah.cpp restored its mutable headers and
// took AH out; buffer[start, start + length) is the inner IP packet (tunnel)
// or the host's packet (transport), which may carry ESP to open next (an
// ESP+AH bundle). outerTos: the AH packet's TOS / traffic class.
OpenedVerdict judgeAhVerified(const InboundTables& t, std::span<std::uint8_t> buffer, std::uint32_t start,
                              std::uint32_t length, const Sa& ah, bool tunnel, std::uint8_t outerTos) noexcept;

}  // namespace ipsec::forwarder
