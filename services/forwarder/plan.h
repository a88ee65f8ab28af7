// ipsec-forwarder: a policy's requests compiled once, when ipsec-policy
// installs the policy (Spd::add), into the plan the data path follows: which
// bundle shape it is and the ordered steps that build it (KAME order,
// innermost first, as FreeBSD's ipsec_process_done walks sp->req[idx]).
// The packet path reads the plan instead of re-deriving the shape from the
// requests for every packet. Pure data from a trusted peer's message, checked
// here for shape only; no I/O.
//
// A buffer in flight does not point at its policy (a policy may be replaced
// while the broker holds the buffer): it carries the kind of the step that
// follows its crypto operation and that step's SA, by value (forwarder.h,
// BufferContext::next). Inbound mirrors it: each layer peeled off a packet is
// recorded (BufferContext::peeled) and checked against the plan of the policy
// the inner packet matches once the last layer is open.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

#include "esp/ip.h"

namespace ipsec::forwarder {

struct Request {
  std::uint8_t proto = 0, mode = 0, level = 0;
  std::uint32_t reqid = 0;
  std::optional<esp::IpAddress> tunnelSrc, tunnelDst;
};

// One step of a bundle: what is done to the packet, and for which request.
enum class StepKind : std::uint8_t {
  kNone,          // nothing: send (outbound) or nothing peeled (inbound)
  kIpcomp,        // IPComp (no crypto): compress / decompress
  kEspTransport,  // ESP in transport mode
  kEspTunnel,     // ESP in tunnel mode, between the request's ends
  kAhTransport,   // AH in transport mode
  kAhTunnel,      // AH in tunnel mode
};

// The bundle shapes the data path runs; any other combination with AH is
// refused (a packet with less protection than the policy asks for is worse
// than none).
enum class Shape : std::uint8_t {
  kEsp,       // one ESP SA (the first ESP request with an SA), IPComp maybe inside it
  kEspInEsp,  // ESP transport, then an ESP tunnel around it
  kEspAh,     // [IPComp transport,] ESP (transport, or a tunnel as the first request), then AH transport
  kAh,        // AH alone (only AH requests: the last one)
  kAhRefused, // AH with other requests in a shape not run
};

struct Plan {
  static constexpr std::size_t kNoRequest = static_cast<std::size_t>(-1);
  static constexpr std::size_t kMaxSteps = 3;

  Shape shape = Shape::kEsp;
  // The layers the shape builds, outbound order (innermost first); kEsp
  // names its first ESP request (the packet takes the first with an SA),
  // kAhRefused none.
  std::array<StepKind, kMaxSteps> steps{};
  std::array<std::size_t, kMaxSteps> stepRequest{};
  std::size_t stepCount = 0;

  // Request indices (kNoRequest: none) the data path used to search for per packet.
  std::size_t ipcomp = kNoRequest;           // the last IPComp request (an IPComp tunnel bundle compresses)
  std::size_t ipcompTransport = kNoRequest;  // the last IPComp request in transport mode
  // With IPComp in the policy: the first tunnel request with both ends; the
  // ESP SA runs between them even when ESP's request is transport.
  std::size_t ipcompTunnel = kNoRequest;
  std::size_t ah = kNoRequest;  // the last AH request
  // kEspAh: the ESP and AH requests; kEspInEsp: the transport (esp) and tunnel (outer) requests.
  std::size_t esp = kNoRequest, outer = kNoRequest;

  // The step that follows an outbound ESP seal of this plan's bundle, or kNone (send).
  StepKind afterEspSeal() const noexcept {
    if (shape == Shape::kEspAh) return StepKind::kAhTransport;
    if (shape == Shape::kEspInEsp) return StepKind::kEspTunnel;
    return StepKind::kNone;
  }
};

// Compiles a policy's requests (already parsed, addresses checked). Every
// list compiles: one the data path cannot run is kAhRefused or, with no ESP
// request, a kEsp plan with no steps (dropped as having no SA).
Plan compilePlan(std::span<const Request> requests) noexcept;

}  // namespace ipsec::forwarder
