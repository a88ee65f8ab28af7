// ipsec-policy: which SAs this host sends on (DESIGN §3, nonce safety). An SA
// is outbound when an outbound IPsec policy of the SPD has a request the SA
// satisfies, the way Linux's xfrm_state_find picks an SA for a template (the
// rule: proto/sad.capnp OutboundTemplate). policy holds the SPD, so it judges
// each SA ADD/UPDATE itself (SaAdd.outbound) and sends keydb the templates of
// each outbound policy it stores (markOutbound) for the SAs already there.
// Runs on policy's event loop; its input is the SPD (already validated).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "pfkey/address.h"
#include "proto/sad.capnp.h"
#include "spd.h"

namespace ipsec::policy {

struct OutboundTemplate {
  std::uint8_t satype = 0;
  std::uint8_t mode = 0;
  std::uint32_t reqid = 0;  // 0: any
  pfkey::SockAddress src, dst;
  std::uint8_t srcPrefix = 0, dstPrefix = 0;
};

// One template per request of an outbound IPsec policy; none for any other.
// A transport request judged by the selector whose source and destination
// prefixes share more than one address (192.0.2.0/24 to 192.0.2.0/24, ::/0
// to ::/0) would also admit the peer's SA to us: its template is narrowed to each of `local`
// inside the source prefix as the SA's source, and with no such address it
// has none (the SA stays unknown: it opens, and sealing waits for
// local_addresses) — a receiving SA judged outbound could not open.
std::vector<OutboundTemplate> outboundTemplates(const Policy& p, std::span<const pfkey::SockAddress> local);

// Does an SA of these parameters satisfy `t`?
bool covers(const OutboundTemplate& t, std::uint8_t satype, std::uint8_t mode, std::uint32_t reqid,
            const pfkey::SockAddress& src, const pfkey::SockAddress& dst);

// Does any outbound policy of `spd` have a request this SA satisfies?
bool saIsOutbound(const Spd& spd, std::span<const pfkey::SockAddress> local, std::uint8_t satype, std::uint8_t mode, std::uint32_t reqid,
                  const pfkey::SockAddress& src, const pfkey::SockAddress& dst);

void toProto(const OutboundTemplate& t, proto::OutboundTemplate::Builder out);

}  // namespace ipsec::policy
