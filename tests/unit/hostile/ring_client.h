// The forwarder's side of a crypto ring as the hostile-forwarder tests drive
// it: build a request, enqueue a burst, ring the broker if it sleeps, and wait
// (bounded) for as many completions. Shared by hostile.broker (this folder,
// against a broker it starts itself) and integration.hostile_forwarder
// (tests/integration/hostile_forwarder, a program ipsecd starts in place of
// ipsec-forwarder). Header-only: the two link different libraries.
//
// Trust: none in the broker. A missing completion is reported (false), never
// waited for without a bound.
#pragma once

#include <chrono>
#include <cstdint>
#include <span>
#include <vector>

#include "proto/ring_abi.h"
#include "ring/doorbell.h"
#include "ring/endpoints.h"

namespace ipsec::hostile {

// ESP AES-GCM-16: 8-byte header, 8-byte IV, at least a 4-byte aligned
// trailer, 16-byte ICV.
inline constexpr std::uint32_t kEspMinLength = 8 + 8 + 4 + 16;

// One ESP request of one segment; status kPending, everything else zero.
inline proto::CryptoRequest espRequest(std::uint64_t cookie, std::uint32_t session, std::uint32_t generation,
                                       proto::CryptoOp op, std::uint32_t buffer, std::uint32_t offset,
                                       std::uint32_t length) {
  proto::CryptoRequest r{};
  r.cookie = cookie;
  r.session = session;
  r.sessionGeneration = generation;
  r.op = op;
  r.status = proto::CryptoStatus::kPending;
  r.segmentCount = 1;
  r.bufferIndex = buffer;
  r.offset = offset;
  r.length = length;
  return r;
}

// The forwarder's two ring ends and the two bells of one region.
struct RingClient {
  ring::RequestProducer producer;
  ring::CompletionConsumer consumer;
  ring::Doorbell& requestBell;     // we ring it
  ring::Doorbell& completionBell;  // we wait on it

  // Enqueues `requests` and collects as many completions into `done`, in
  // ring order. False when they did not all come within `timeout`.
  bool submit(std::span<const proto::CryptoRequest> requests, std::vector<proto::CryptoCompletion>& done,
              std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    done.assign(requests.size(), {});
    std::size_t sent = 0, got = 0;
    const auto until = std::chrono::steady_clock::now() + timeout;
    while (got < requests.size()) {
      if (std::chrono::steady_clock::now() > until) return false;
      if (sent < requests.size()) {
        sent += producer.enqueue(requests.subspan(sent));
        ring::notifyPeer(producer, requestBell);
      }
      const std::size_t n =
          consumer.dequeue(std::span<proto::CryptoCompletion>(done.data() + got, done.size() - got));
      got += n;
      if (n == 0 && got < requests.size()) ring::sleepUntilReady(consumer, completionBell, 20);
      completionBell.drain();
    }
    return true;
  }
};

}  // namespace ipsec::hostile
