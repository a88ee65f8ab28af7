// ipsec-forwarder: the outbound packet core for SA bundles and AH — every
// route esp_out.h's routeOutbound hands on as kBundle (AH alone, ESP then
// AH, ESP transport inside an ESP tunnel) and the stages that run after the
// first seal, walked by the step the buffer's context carries (plan.h):
//   ESP+AH (transport or tunnel): ESP sealed → AH frames the sealed packet →
//   signed → sent ESP in ESP: the transport SA seals the host's packet → the
//   tunnel SA seals that → sent
// Both SAs of a two-SA bundle are chosen before anything is done: better wait
// for a missing one than seal with the first and find no second afterwards.
// Pure functions of the bytes, the completion and the tables they borrow;
// bundle.cpp applies the verdicts (outbound_frame.h). Tested in
// tests/unit/forwarder/bundle_frame_test.cpp, fuzzed by esp_out_fuzz.
#pragma once

#include <cstdint>
#include <span>

#include "ah_sign.h"
#include "esp/ip.h"
#include "outbound_frame.h"

namespace ipsec::forwarder {

// One leg of a two-SA bundle: which SA type, for which request, between which
// ends.
struct BundleLeg {
  std::uint8_t satype;
  const Request &request;
  const esp::IpAddress &src, &dst;
};

// Both SAs chosen: a required one missing holds the packet with an ACQUIRE
// for it (the inner if both are); a `use` one missing (KAME's level use)
// sends its ACQUIRE and the packet goes with the other leg alone. Each SA
// must then have a number to give and the mode its request names.
struct BundlePair {
  Sa *inner = nullptr;  // both set, or one (the other's request is `use`)
  Sa *outer = nullptr;
  bool go = false;    // false: `stop` says what happens (hold or drop)
  FrameVerdict stop;  // its `acquire` also applies when go is true
};
BundlePair chooseBundlePair(SaTable &sas, const BundleLeg &inner, const BundleLeg &outer) noexcept;

// A kBundle route (policy p, the packet's flow) on the host's packet at
// buffer[offset, offset+length): the first crypto request, a hold, a drop or
// too big. AH's switch (net.inet.ah.enable) is judged here.
FrameVerdict frameBundle(const OutboundTables &t, const Policy &p, const esp::FlowKey &flow,
                         std::span<std::uint8_t> buffer, std::uint32_t offset, std::uint32_t length, AhOut ah) noexcept;

// What the first stage's buffer context says about what follows its seal.
struct SealedStage {
  SaRef sealedBy;                   // the SA that sealed
  StepKind step = StepKind::kNone;  // what follows, under `next`
  SaRef next;
  std::uint16_t transportHeader = 0;  // the host's header kept in front of ESP (transport)
  std::uint8_t tos = 0;               // the outer TOS decided before sealing (tunnels)
  bool outerDf = false;
};

// A seal of a bundle's first stage completed (status OK, its SA there):
// c's bytes in `buffer` go to the next step — the AH sign request around
// them, or the tunnel's seal request — or are dropped (the next SA gone or
// out of numbers, a descriptor outside the buffer, a step no plan makes).
FrameVerdict frameAfterSeal(const OutboundTables &t, const SealedStage &s, std::span<std::uint8_t> buffer,
                            const proto::CryptoCompletion &c, AhOut ah) noexcept;

}  // namespace ipsec::forwarder
