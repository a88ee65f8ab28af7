// ipsec-forwarder: compiling a policy's requests into its plan (plan.h).
// Runs once per policy install, on the control path; the shapes recognised
// here are the ones the data path runs, in the order it used to test them
// per packet: AH first (alone, or after ESP), then ESP transport inside an
// ESP tunnel, then ESP alone (IPComp maybe inside it).
#include "plan.h"

#include <linux/ipsec.h>
#include <netinet/in.h>

namespace ipsec::forwarder {
namespace {

bool hasEnds(const Request& r) noexcept { return r.tunnelSrc && r.tunnelDst; }

// KAME order: the first request is the innermost. IPComp may come first
// (compressed inside transport-mode ESP); then ESP (transport, or a tunnel
// with its ends), then AH in transport mode (around the tunnel's packet,
// between its ends).
bool isEspAh(std::span<const Request> rs) noexcept {
  std::size_t i = 0;
  if (i < rs.size() && rs[i].proto == IPPROTO_COMP && rs[i].mode == IPSEC_MODE_TRANSPORT) ++i;
  if (rs.size() != i + 2 || rs[i].proto != IPPROTO_ESP || rs[i + 1].proto != IPPROTO_AH ||
      rs[i + 1].mode != IPSEC_MODE_TRANSPORT) {
    return false;
  }
  const Request& e = rs[i];
  return e.mode == IPSEC_MODE_TRANSPORT || (i == 0 && e.mode == IPSEC_MODE_TUNNEL && hasEnds(e));
}

// `esp/transport//... esp/tunnel/A-B/...`: the transport request innermost.
bool isEspInEsp(std::span<const Request> rs) noexcept {
  return rs.size() == 2 && rs[0].proto == IPPROTO_ESP && rs[0].mode == IPSEC_MODE_TRANSPORT &&
         rs[1].proto == IPPROTO_ESP && rs[1].mode == IPSEC_MODE_TUNNEL && hasEnds(rs[1]);
}

StepKind espStep(const Request& r) noexcept {
  return r.mode == IPSEC_MODE_TRANSPORT ? StepKind::kEspTransport : StepKind::kEspTunnel;
}

StepKind ahStep(const Request& r) noexcept {
  return r.mode == IPSEC_MODE_TUNNEL ? StepKind::kAhTunnel : StepKind::kAhTransport;
}

void addStep(Plan& plan, StepKind kind, std::size_t request) noexcept {
  plan.steps[plan.stepCount] = kind;
  plan.stepRequest[plan.stepCount] = request;
  ++plan.stepCount;
}

void findRequests(std::span<const Request> rs, Plan& plan) noexcept {
  bool hasIpcomp = false;
  std::size_t firstTunnel = Plan::kNoRequest;
  for (std::size_t i = 0; i < rs.size(); ++i) {
    const Request& r = rs[i];
    if (r.proto == IPPROTO_COMP) {
      hasIpcomp = true;
      plan.ipcomp = i;
      if (r.mode == IPSEC_MODE_TRANSPORT) plan.ipcompTransport = i;
    }
    if (r.proto == IPPROTO_AH) plan.ah = i;
    if (r.mode == IPSEC_MODE_TUNNEL && hasEnds(r) && firstTunnel == Plan::kNoRequest) firstTunnel = i;
  }
  if (hasIpcomp) plan.ipcompTunnel = firstTunnel;
}

void compileAh(std::span<const Request> rs, Plan& plan) noexcept {
  if (isEspAh(rs)) {
    plan.shape = Shape::kEspAh;
    plan.esp = rs.size() - 2;
    if (plan.esp == 1) addStep(plan, StepKind::kIpcomp, 0);
    addStep(plan, espStep(rs[plan.esp]), plan.esp);
    addStep(plan, StepKind::kAhTransport, plan.ah);
    return;
  }
  for (const auto& r : rs) {
    if (r.proto != IPPROTO_AH) {
      plan.shape = Shape::kAhRefused;
      return;
    }
  }
  plan.shape = Shape::kAh;
  addStep(plan, ahStep(rs[plan.ah]), plan.ah);
}

}  // namespace

Plan compilePlan(std::span<const Request> rs) noexcept {
  Plan plan;
  findRequests(rs, plan);
  if (plan.ah != Plan::kNoRequest) {
    compileAh(rs, plan);
    return plan;
  }
  if (isEspInEsp(rs)) {
    plan.shape = Shape::kEspInEsp;
    plan.esp = 0;
    plan.outer = 1;
    addStep(plan, StepKind::kEspTransport, 0);
    addStep(plan, StepKind::kEspTunnel, 1);
    return plan;
  }
  plan.shape = Shape::kEsp;
  if (plan.ipcomp != Plan::kNoRequest) addStep(plan, StepKind::kIpcomp, plan.ipcomp);
  for (std::size_t i = 0; i < rs.size(); ++i) {
    if (rs[i].proto != IPPROTO_ESP) continue;
    // With an IPComp tunnel the ESP SA runs between its ends: a tunnel, whatever ESP's request says.
    addStep(plan, plan.ipcompTunnel != Plan::kNoRequest ? StepKind::kEspTunnel : espStep(rs[i]), i);
    break;
  }
  return plan;
}

}  // namespace ipsec::forwarder
