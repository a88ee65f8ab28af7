// ipsec-forwarder: the broker's completions — drained from each worker's
// ring, checked against what we have in flight (the broker only echoes our
// descriptors), and sent on by their use: a sealed packet to its send batch or
// its bundle's next step, an opened one to the inbound shell (inbound.cpp), AH
// to ah.cpp. Stalled readers are restarted once buffers come back.
#include "forwarder.h"

#include <netinet/in.h>

#include <cstring>

#include "esp/esp.h"
#include "esp/ip.h"
#include "tunnel_send.h"

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
  queueTunnelSend(w, c, *sa);
}

// The core decides (tunnel_send.cpp finishTunnelSeal): which socket, which
// bytes, to where, TOS and DF; this queues it on that socket's batch, or
// sends its fragments now.
void Forwarder::queueTunnelSend(Worker& w, const proto::CryptoCompletion& c, const Sa& sa) noexcept {
  const BufferContext& ctx = w.contexts[c.bufferIndex];
  std::uint8_t* data = bufferData(w, c.bufferIndex);
  const TunnelSendFacts facts{natTOf(sa), tunnels_.pathMtu(sa), ctx.tos, ctx.outerDf, udp4Port_, outerIpId_};
  const TunnelSend s = finishTunnelSeal(sa, facts, {data, w.bufferSize}, c);
  if (s.tookIpv4Id) ++outerIpId_;
  const std::span<std::uint8_t> bytes{data + s.start, s.length};
  const bool v4 = s.to.address.isV4();
  auto to = [&](sockaddr_storage& addr) { return esp::toSockaddr(s.to, addr); };
  switch (s.kind) {
    case TunnelSend::Kind::kDrop: countDrop(counters_, s.drop); break;
    case TunnelSend::Kind::kFragments:
      if (sendFragments(bytes, s.mtu, s.to.address) && s.natT) ++counters_.natt_out_esp_packets;
      break;
    case TunnelSend::Kind::kNatT:
      if (v4) {  // DF per run of the socket (gro.cpp)
        return queueUdp4(w, c.bufferIndex, bytes, sa, {.dport = s.to.port, .tos = s.tos, .dontFragment = s.dontFragment});
      }
      [[fallthrough]];
    case TunnelSend::Kind::kRawEsp: {
      SendBatch& b = queueSend(s.natT ? sendUdp6_ : send6_);
      b.setTrafficClass(b.add(w, c.bufferIndex, bytes, to), false, s.tos);
      return;
    }
    case TunnelSend::Kind::kHeaderIncluded:
      // esp_send = packet: plain ESP to a next hop the cache knows leaves on the packet socket (packet_send.cpp).
      // Either batch is flushed before the other takes a packet: the SA's order holds across the two.
      if (const sockaddr_ll* hop = s.natT ? nullptr : packetAddressOf(s.to.address)) {
        if (send4_.count != 0) flushSendBatch(send4_);
        queueSend(sendPacket4_).add(w, c.bufferIndex, bytes, [hop](sockaddr_storage& addr) {
          std::memcpy(&addr, hop, sizeof *hop);
          return sizeof *hop;
        });
        return;
      }
      if (nextHops_ && !s.natT && sendPacket4_.count != 0) flushSendBatch(sendPacket4_);
      // Counted as ESP, and as NAT-T in UDP (an SA whose source port is not the NAT-T socket's).
      queueSend(s.natT ? sendUdpOwnHeader4_ : send4_).add(w, c.bufferIndex, bytes, to);
      return;
  }
  freeBuffer(w, c.bufferIndex);
}
}  // namespace ipsec::forwarder
