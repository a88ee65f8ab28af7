// The forwarder's policy compiler (services/forwarder/plan.cpp): each request
// list as ipsec-policy sends it (KAME order, innermost first) becomes the
// shape and steps the data path runs, decided once at install.
#include <gtest/gtest.h>
#include <linux/ipsec.h>
#include <netinet/in.h>

#include <vector>

#include "plan.h"

namespace ipsec::forwarder {
namespace {

const esp::IpAddress kA = *esp::IpAddress::parse("198.51.100.1");
const esp::IpAddress kB = *esp::IpAddress::parse("198.51.100.2");

Request transport(std::uint8_t proto, std::uint8_t level = IPSEC_LEVEL_REQUIRE) {
  return {proto, IPSEC_MODE_TRANSPORT, level, 0, {}, {}};
}

Request tunnel(std::uint8_t proto, std::uint8_t level = IPSEC_LEVEL_REQUIRE) {
  return {proto, IPSEC_MODE_TUNNEL, level, 0, kA, kB};
}

std::vector<StepKind> stepsOf(const Plan& p) { return {p.steps.begin(), p.steps.begin() + p.stepCount}; }

TEST(Plan, AnEspTunnelIsOneTunnelStep) {
  const std::vector<Request> rs{tunnel(IPPROTO_ESP)};
  const Plan p = compilePlan(rs);
  EXPECT_EQ(p.shape, Shape::kEsp);
  EXPECT_EQ(stepsOf(p), std::vector<StepKind>{StepKind::kEspTunnel});
  EXPECT_EQ(p.afterEspSeal(), StepKind::kNone);
  EXPECT_EQ(p.ipcomp, Plan::kNoRequest);
  EXPECT_EQ(p.ah, Plan::kNoRequest);
  // Without IPComp a tunnel request is no IPComp bundle's ends.
  EXPECT_EQ(p.ipcompTunnel, Plan::kNoRequest);
}

TEST(Plan, EspTransportIsOneTransportStep) {
  const std::vector<Request> rs{transport(IPPROTO_ESP)};
  const Plan p = compilePlan(rs);
  EXPECT_EQ(p.shape, Shape::kEsp);
  EXPECT_EQ(stepsOf(p), std::vector<StepKind>{StepKind::kEspTransport});
  EXPECT_EQ(p.ipcompTunnel, Plan::kNoRequest);
}

TEST(Plan, AnIpcompTunnelMakesItsEspTransportRunBetweenTheTunnelsEnds) {
  // ipcomp/tunnel/A-B/use esp/transport//require
  const std::vector<Request> rs{tunnel(IPPROTO_COMP, IPSEC_LEVEL_USE), transport(IPPROTO_ESP)};
  const Plan p = compilePlan(rs);
  EXPECT_EQ(p.shape, Shape::kEsp);
  EXPECT_EQ(p.ipcomp, 0u);
  EXPECT_EQ(p.ipcompTransport, Plan::kNoRequest);
  EXPECT_EQ(p.ipcompTunnel, 0u);
  EXPECT_EQ(stepsOf(p), (std::vector<StepKind>{StepKind::kIpcomp, StepKind::kEspTunnel}));
}

TEST(Plan, IpcompTransportInsideEspTransportStaysTransport) {
  const std::vector<Request> rs{transport(IPPROTO_COMP, IPSEC_LEVEL_USE), transport(IPPROTO_ESP)};
  const Plan p = compilePlan(rs);
  EXPECT_EQ(p.shape, Shape::kEsp);
  EXPECT_EQ(p.ipcompTransport, 0u);
  EXPECT_EQ(p.ipcompTunnel, Plan::kNoRequest);
  EXPECT_EQ(stepsOf(p), (std::vector<StepKind>{StepKind::kIpcomp, StepKind::kEspTransport}));
}

TEST(Plan, EspTransportThenAhIsTheEspAhBundleSignedAfterTheSeal) {
  const std::vector<Request> rs{transport(IPPROTO_ESP), transport(IPPROTO_AH)};
  const Plan p = compilePlan(rs);
  EXPECT_EQ(p.shape, Shape::kEspAh);
  EXPECT_EQ(p.esp, 0u);
  EXPECT_EQ(p.ah, 1u);
  EXPECT_EQ(stepsOf(p), (std::vector<StepKind>{StepKind::kEspTransport, StepKind::kAhTransport}));
  EXPECT_EQ(p.afterEspSeal(), StepKind::kAhTransport);
}

TEST(Plan, IpcompEspAhIsTheThreeStepBundle) {
  const std::vector<Request> rs{transport(IPPROTO_COMP), transport(IPPROTO_ESP), transport(IPPROTO_AH)};
  const Plan p = compilePlan(rs);
  EXPECT_EQ(p.shape, Shape::kEspAh);
  EXPECT_EQ(p.esp, 1u);
  EXPECT_EQ(p.ah, 2u);
  EXPECT_EQ(stepsOf(p),
            (std::vector<StepKind>{StepKind::kIpcomp, StepKind::kEspTransport, StepKind::kAhTransport}));
}

TEST(Plan, AnEspTunnelInsideAhMustBeTheFirstRequest) {
  const std::vector<Request> alone{tunnel(IPPROTO_ESP), transport(IPPROTO_AH)};
  EXPECT_EQ(compilePlan(alone).shape, Shape::kEspAh);
  EXPECT_EQ(stepsOf(compilePlan(alone)), (std::vector<StepKind>{StepKind::kEspTunnel, StepKind::kAhTransport}));
  // IPComp in transport mode inside an ESP tunnel inside AH: not a shape the data path runs.
  const std::vector<Request> withIpcomp{transport(IPPROTO_COMP), tunnel(IPPROTO_ESP), transport(IPPROTO_AH)};
  EXPECT_EQ(compilePlan(withIpcomp).shape, Shape::kAhRefused);
  EXPECT_EQ(compilePlan(withIpcomp).stepCount, 0u);
}

TEST(Plan, AhAloneTakesItsLastRequest) {
  const std::vector<Request> rs{transport(IPPROTO_AH), tunnel(IPPROTO_AH)};
  const Plan p = compilePlan(rs);
  EXPECT_EQ(p.shape, Shape::kAh);
  EXPECT_EQ(p.ah, 1u);
  EXPECT_EQ(stepsOf(p), std::vector<StepKind>{StepKind::kAhTunnel});
}

TEST(Plan, AhOutsideAnythingButEspIsRefused) {
  EXPECT_EQ(compilePlan(std::vector<Request>{tunnel(IPPROTO_AH), tunnel(IPPROTO_ESP)}).shape, Shape::kAhRefused);
  EXPECT_EQ(compilePlan(std::vector<Request>{transport(IPPROTO_ESP), tunnel(IPPROTO_AH)}).shape, Shape::kAhRefused);
  EXPECT_EQ(compilePlan(std::vector<Request>{transport(IPPROTO_COMP), transport(IPPROTO_AH)}).shape,
            Shape::kAhRefused);
}

TEST(Plan, EspTransportInsideAnEspTunnelSealsTwice) {
  const std::vector<Request> rs{transport(IPPROTO_ESP), tunnel(IPPROTO_ESP, IPSEC_LEVEL_USE)};
  const Plan p = compilePlan(rs);
  EXPECT_EQ(p.shape, Shape::kEspInEsp);
  EXPECT_EQ(p.esp, 0u);
  EXPECT_EQ(p.outer, 1u);
  EXPECT_EQ(stepsOf(p), (std::vector<StepKind>{StepKind::kEspTransport, StepKind::kEspTunnel}));
  EXPECT_EQ(p.afterEspSeal(), StepKind::kEspTunnel);
}

TEST(Plan, ATunnelWithoutEndsIsNoEspInEspBundle) {
  Request outer = tunnel(IPPROTO_ESP);
  outer.tunnelDst.reset();
  const std::vector<Request> rs{transport(IPPROTO_ESP), outer};
  const Plan p = compilePlan(rs);
  EXPECT_EQ(p.shape, Shape::kEsp);
  EXPECT_EQ(stepsOf(p), std::vector<StepKind>{StepKind::kEspTransport});
}

TEST(Plan, NoEspRequestCompilesToNoSteps) {
  EXPECT_EQ(compilePlan(std::vector<Request>{}).stepCount, 0u);
  EXPECT_EQ(compilePlan(std::vector<Request>{tunnel(IPPROTO_COMP)}).stepCount, 1u);  // IPComp alone: no SA to seal
}

}  // namespace
}  // namespace ipsec::forwarder
