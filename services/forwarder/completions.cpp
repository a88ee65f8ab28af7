// ipsec-forwarder: the broker's completions — drained from each worker's
// ring, checked against what we have in flight (the broker only echoes our
// descriptors), and sent on by their use: a sealed packet to its send batch or
// its bundle's next step, an opened one to the inbound shell (inbound.cpp), AH
// to ah.cpp. Stalled readers are restarted once buffers come back.
#include "forwarder.h"

#include <netinet/in.h>

#include "esp/esp.h"
#include "esp/ip.h"

namespace ipsec::forwarder {
void Forwarder::drainCompletions(Worker& w) noexcept {
  std::array<proto::CryptoCompletion, kBurst> done;
  std::size_t completed = 0;
  for (;;) {
    std::size_t n = w.completions.dequeue(done);
    completed += n;
    // A broker that answers more than it was asked is caught per completion below.
    w.inFlight -= static_cast<std::uint32_t>(std::min<std::size_t>(n, w.inFlight));
    for (std::size_t i = 0; i < n; ++i) {
      const auto& c = done[i];
      // The broker only echoes our descriptor; trust nothing it did not
      // get from us: the buffer must be one we have in flight.
      if (c.bufferIndex >= w.contexts.size() || c.cookie != c.bufferIndex ||
          w.contexts[c.bufferIndex].use == Use::kFree) {
        ++counters_.crypto_bad_completion;
        continue;
      }
      const Use use = w.contexts[c.bufferIndex].use;
      if (use == Use::kAhOutbound || use == Use::kAhInbound) {
        onAhDone(w, c);  // ah.cpp
      } else if (use == Use::kOutbound) {
        onSealed(w, c);
      } else if (use == Use::kInboundGro) {
        onOpenedSegments(w, c);  // gro.cpp
      } else {
        onOpened(w, c);
      }
    }
    if (n < done.size()) break;
  }
  if (completed != 0) armUsage();  // an SA was used: keydb hears of it within a second
  // Slots freed: a worker that found the completion ring full sleeps on its
  // request bell until we say so (services/crypto/worker.cpp).
  ring::notifyPeer(w.completions, w.requestBell);
  flushRequests(w, true);  // a bundle's second stage (bundle.cpp) queued from a completion
  flushSends();
  restartStalledAh();
  restartStalledReads();
}

// Every reader that stopped for want of buffers or of hand-off room tries
// again (after the other handlers). One still short stalls again; a reader
// that was not stalled is left alone, so a spare restart costs nothing.
void Forwarder::restartStalledReads() noexcept {
  if (tunStalled_) {
    tunStalled_ = false;
    boost::asio::post(io_, [this] { readTun(); });
  }
  if (espRingStalled_) {
    espRingStalled_ = false;
    boost::asio::post(io_, [this] { readEspRing(); });
  }
  for (int family : {AF_INET, AF_INET6}) {
    bool& stalled = family == AF_INET ? raw4Stalled_ : raw6Stalled_;
    if (stalled) {
      stalled = false;
      boost::asio::post(io_, [this, family] { readRaw(family); });
    }
    bool& udpStalled = family == AF_INET ? udp4Stalled_ : udp6Stalled_;
    if (udpStalled) {
      udpStalled = false;
      boost::asio::post(io_, [this, family] { readUdp(family); });
    }
  }
}

void Forwarder::onSealed(Worker& w, const proto::CryptoCompletion& c) noexcept {
  const BufferContext& ctx = w.contexts[c.bufferIndex];
  if (ctx.segments != 0) return onSealedSuper(w, c);  // a super-packet's segments (super_packet.cpp)
  Sa* sa = sas_.find(ctx.sa);
  if (c.status != proto::CryptoStatus::kOk || !sa) {
    ++(c.status == proto::CryptoStatus::kWrongDirection ? counters_.out_drop_wrong_direction
                                                          : counters_.out_drop_crypto);
    freeBuffer(w, c.bufferIndex);
    return;
  }
  // Where the broker says the sealed packet lies must be inside the buffer:
  // the sends below take it as it is (the cores check their own more closely).
  if (c.offset > w.bufferSize || c.length > w.bufferSize - c.offset) {
    ++counters_.crypto_bad_completion;
    freeBuffer(w, c.bufferIndex);
    return;
  }
  if (ctx.next != StepKind::kNone) return runNextStep(w, c);  // a bundle: its next step (bundle.cpp)
  if (ctx.transportHeader != 0) return queueTransportSend(w, c, *sa);
  // A NAT-T SA sends ESP as the payload of UDP to (dst, natTDport).
  const NatT* nat = natTOf(*sa);
  // IPv4 outer, and IPv6 beyond the SA's MTU: our header (pmtu.cpp).
  if (queueTunnelSend(w, c, *sa, nat)) return;
  SendBatch& b = queueSend(nat ? (sa->dst.isV4() ? sendUdp4_ : sendUdp6_) : (sa->dst.isV4() ? send4_ : send6_));
  const std::size_t i = b.add(w, c.bufferIndex, {bufferData(w, c.bufferIndex) + c.offset, c.length},
                              [&](sockaddr_storage& to) {
                                return esp::toSockaddr({sa->dst, nat ? nat->dport : std::uint16_t{0}}, to);
                              });
  b.setTrafficClass(i, sa->dst.isV4(), w.contexts[c.bufferIndex].tos);
}
}  // namespace ipsec::forwarder
