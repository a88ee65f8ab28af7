// ipsec-forwarder: one crypto worker as a forwarder thread drives it — its
// shared ring region (requests out, completions back, doorbells), the buffer
// pool's free list, and, by buffer, our private record of what each buffer
// holds (BufferContext) and the layouts a multi-segment request needs. The
// broker only echoes a buffer's index back: what the buffer is, for which
// SA, is read from here, never from the ring.
//
// Trust: the region is shared with the broker (ring/region.h says what it
// may write); everything here but the region is private to one thread.
#pragma once

#include <utility>  // before asio (Boost 1.74 with GCC 12)

#include <boost/asio.hpp>
#include <cstdint>
#include <memory>
#include <vector>

#include "ah_sign.h"
#include "esp/udp_encap.h"
#include "gro_open.h"
#include "plan.h"
#include "proto/ring_abi.h"
#include "ring/doorbell.h"
#include "ring/endpoints.h"
#include "ring/pool.h"
#include "ring/region.h"
#include "super_frame.h"
#include "tables.h"

namespace ipsec::forwarder {

// What a pool buffer holds now. kInboundGro: a UDP GRO datagram opened as one request (gro_open.h), its segments in Worker::groSegments.
enum class BufferUse : std::uint8_t { kFree, kOutbound, kInbound, kAhOutbound, kAhInbound, kInboundGro };
struct BufferContext {
  BufferUse use = BufferUse::kFree;
  SaRef sa;
  std::uint64_t seq = 0;
  std::uint8_t tos = 0;  // outbound: the inner TOS to copy; inbound: the outer TOS
  bool udp = false;      // inbound: came ESP-in-UDP, from `peer`
  esp::UdpEndpoint peer;  // inbound IPv6 raw: the source address (transport mode rebuilds the header)
  std::uint16_t transportHeader = 0;  // outbound transport mode: the host's header in front of ESP
  std::uint8_t hopLimit = 64;         // inbound IPv6: the outer hop limit
  // SA bundles (bundle.cpp), walked step by step (plan.h). Outbound: the
  // step that follows this seal (the policy's Plan::afterEspSeal: AH signs,
  // or the tunnel's ESP seals again) and its SA; kNone: send. Kept by value:
  // the policy may change while the broker holds the buffer.
  StepKind next = StepKind::kNone;
  SaRef nextSa{};
  // Inbound: the outer layer already peeled off in this buffer (AH
  // transport verified, or an ESP tunnel opened) and its SA, before ESP
  // opens what was inside; the policy's plan must ask for it (inbound_open.cpp).
  StepKind peeled = StepKind::kNone;
  SaRef peeledSa{};
  bool outerDf = false;  // outbound tunnel, IPv4 outer: the DF bit (pmtu.cpp decided it)
  // Outbound: a TUN super-packet's segments sealed as one request (non-zero:
  // how many); their layout is in Worker::superFrames (super_packet.cpp).
  std::uint16_t segments = 0;
};
struct Worker {
  std::unique_ptr<ring::Region> region;
  ring::RequestProducer requests;
  ring::CompletionConsumer completions;
  ring::Doorbell requestBell, completionBell;
  std::unique_ptr<boost::asio::posix::stream_descriptor> bellWatch;
  std::unique_ptr<ring::BufferPool> pool;  // free list in our private memory
  std::vector<BufferContext> contexts;
  std::vector<proto::CryptoRequest> pending;  // built this burst, not yet enqueued
  std::uint32_t bufferSize = 0;
  std::vector<AhBuffer> ah{};  // by buffer: AH's saved headers (ah.cpp)
  std::vector<SuperFrame> superFrames{};  // by buffer: a multi-segment seal's layout (super_packet.cpp)
  // Completion polling (control.cpp, pollCompletions): requests enqueued
  // and not yet completed, until when to poll for them instead of sleeping
  // on the completion bell, whether a poll step is posted, whether the
  // bell's wait is armed.
  std::uint32_t inFlight = 0;
  std::uint64_t pollUntilNs = 0;
  bool pollPosted = false;
  bool bellArmed = false;
  // By buffer, for Use::kInboundGro (gro.cpp): the layout sent and each
  // segment's sequence number. Sized at the first such request.
  std::vector<GroSegments> groSegments{};
};

}  // namespace ipsec::forwarder
