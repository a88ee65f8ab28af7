// ipsec-forwarder: the outbound packet core's first stage (esp_out.h). Pure
// function of the bytes and borrowed tables; noexcept, allocation-free.
#include "esp_out.h"

#include <linux/ipsec.h>
#include <linux/pfkeyv2.h>
#include <netinet/in.h>

namespace ipsec::forwarder {
namespace {

OutboundRoute dropped(DropReason reason, Sa* sa = nullptr) noexcept {
  OutboundRoute r;
  r.drop = reason;
  r.sa = sa;
  return r;
}

}  // namespace

OutboundRoute routeOutbound(const Spd& spd, SaTable& sas, std::span<const std::uint8_t> packet,
                            bool espEnabled) noexcept {
  const auto flow = esp::parseInnerPacket(packet);
  if (!flow) return dropped(&Counters::out_drop_bad_inner);
  const Policy* p = spd.lookup(IPSEC_DIR_OUTBOUND, *flow);
  if (!p) return dropped(&Counters::out_drop_no_policy);
  if (p->action == IPSEC_POLICY_DISCARD) return dropped(&Counters::out_drop_policy_discard);
  if (p->action != IPSEC_POLICY_IPSEC) return dropped(&Counters::out_drop_policy_bypass);
  OutboundRoute route;
  route.policy = p;
  route.flow = *flow;
  // The policy's shape was compiled when it was installed (plan.h).
  const Plan& plan = p->plan;
  if (plan.shape != Shape::kEsp && plan.shape != Shape::kEspInEsp) {
    route.kind = OutboundRoute::Kind::kBundle;  // AH's shapes: ah.cpp judges its own switch
    return route;
  }
  if (!espEnabled) return dropped(&Counters::esp_out_drop_disabled);
  if (plan.shape == Shape::kEspInEsp) {
    route.kind = OutboundRoute::Kind::kBundle;
    return route;
  }
  // Transport mode: the SA between the packet's own addresses; in a bundle
  // with an IPComp tunnel, between the tunnel's ends. The first ESP request
  // with an SA wins; the last one tried is the one an ACQUIRE names.
  const Request* ipcompTunnel = plan.ipcompTunnel != Plan::kNoRequest ? &p->requests[plan.ipcompTunnel] : nullptr;
  Sa* sa = nullptr;
  const Request* wanted = nullptr;
  for (const auto& r : p->requests) {
    const Request& ends = ipcompTunnel ? *ipcompTunnel : r;
    const bool transport = ends.mode == IPSEC_MODE_TRANSPORT;
    if (r.proto != IPPROTO_ESP || (!transport && (!ends.tunnelSrc || !ends.tunnelDst))) continue;
    wanted = &r;
    sa = sas.selectOutbound(SADB_SATYPE_ESP, transport ? flow->src : *ends.tunnelSrc,
                            transport ? flow->dst : *ends.tunnelDst, r.level == IPSEC_LEVEL_UNIQUE ? r.reqid : 0);
    if (sa) break;
  }
  if (!sa) {
    if (!wanted) return dropped(&Counters::out_drop_no_sa);
    route.kind = OutboundRoute::Kind::kHold;
    route.request = wanted;
    return route;
  }
  // Without ESN the counter must never wrap (RFC 4303 §3.3.3); keydb's grants
  // stop at 2^32, so exhausting the grant covers both cases.
  if (sa->seqNext >= sa->seqLimit) return dropped(&Counters::out_drop_seq_wait, sa);
  if (sa->mode != IPSEC_MODE_ANY && sa->mode != wanted->mode) return dropped(&Counters::out_drop_sa_mode);
  route.kind = OutboundRoute::Kind::kEsp;
  route.request = wanted;
  route.sa = sa;
  route.transport = wanted->mode == IPSEC_MODE_TRANSPORT && !ipcompTunnel;
  return route;
}

}  // namespace ipsec::forwarder
