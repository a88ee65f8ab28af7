// ipsec-forwarder: TUN reads through a private scratch buffer (issue 13 item
// 1, outbound). Used when the TUN carries a virtio_net_hdr (tun_offload, the
// default) or there are several crypto workers; one worker on a plain TUN
// reads straight into pool buffers (outbound.cpp readTun).
//
// What is read is a local application's packet, untrusted like any: with a
// header, checkVnetHeader (via planSegments) judges the header against the
// packet first and a refusal is counted under its reason. A GSO super-packet
// (up to 64 KiB) is cut by lib/offload's writeSegment, segment by segment,
// straight into pool buffers at kHeadroom, each then framed by outboundPacket
// exactly as a packet read alone (bundles, transport mode, PMTU, TFC, held
// packets: per segment) — unless its route is one lone ESP tunnel SA, in
// which case its segments are framed back to back in one buffer and sealed by
// one request (super_packet.cpp), and only what that path leaves (too big,
// sequence numbers used up, ...) goes on here. Order: segments go to the
// worker's requests in order, and all of one read to one worker, so one SA's
// sequence numbers follow TUN order.
//
// Placement: the worker is chosen once per read, as the SA the read's route
// seals with (for a bundle, the SA its first step takes: worker_pin.cpp), so
// the packet is never copied from one worker's pool into another's. The
// route is taken once and handed on: to the super-packet path and to the
// framing of the read's first segment (same bytes, same tables). A read is
// only made when every worker has room for a whole super-packet of ordinary
// MSS (kSuperPacketBuffers); a super-packet of tiny segments that still needs
// more has the segments that fit placed and the rest counted
// (tun_in_drop_no_buffer), never silently lost.
#include <unistd.h>

#include <cstring>

#include "forwarder.h"
#include "offload/tun_probe.h"
#include "offload/vnet_header.h"

namespace ipsec::forwarder {
namespace {

// Free buffers every worker must have before the TUN is read: a 64 KiB TCP
// super-packet at an MSS of 1024 or more, the segments of any read at the
// common MTUs. Smaller segments beyond this are counted if the pool runs dry.
constexpr std::uint32_t kSuperPacketBuffers = 64;

// The longest read: a GSO skb is at most 64 KiB (the TUN's gso_max_size), behind its header.
constexpr std::size_t kMaxTunRead = offload::kVnetHeaderSize + 65536;

}  // namespace

void Forwarder::setUpTunOffload(std::optional<unsigned> flags) {
  if (flags) {
    const offload::TunOffloads g = offload::grantedOffloads(*flags);
    tunOffload_.vnetHeader = true;
    tunOffload_.tso = g.tso4 && g.tso6;
    tunOffload_.uso = g.uso4 && g.uso6;
    tunWrites_.bytes.resize(TunWriteQueue::kBytes);
  }
  if (tunOffload_.vnetHeader || workers_.size() > 1) tunScratch_.resize(kMaxTunRead);
}

bool Forwarder::tunReadRoom() const noexcept {
  const std::uint32_t need = tunOffload_.vnetHeader ? kSuperPacketBuffers : 1;
  for (const auto& w : workers_) {
    if (w->pool->available() < need) return false;
  }
  return true;
}

void Forwarder::readTunScratch() noexcept {
  std::size_t n = 0;
  bool stalled = false;
  for (; n < kBurst; ++n) {
    if (!tunReadRoom()) {
      // Leave the packets in the TUN queue; the next completion restarts us.
      ++counters_.out_stall_no_buffer;
      stalled = tunStalled_ = true;
      break;
    }
    if (!handoffRoom(1)) {  // the read may be another thread's: its owner restarts us (threads.cpp)
      stalled = tunStalled_ = true;
      break;
    }
    const ssize_t got = ::read(fds_.tun.get(), tunScratch_.data(), tunScratch_.size());
    if (got <= 0) break;
    placeTunRead({tunScratch_.data(), static_cast<std::size_t>(got)});
  }
  flushAllRequests(true);
  flushTunWrites();  // ICMP too-big written while framing (pmtu.cpp)
  if (stalled) return;
  if (n == kBurst) {
    boost::asio::post(io_, [this] { readTunScratch(); });  // more may be queued: yield, then go on
  } else {
    armTun();
  }
}

// The worker of the SA the read's route seals with; for a bundle, its first
// step's (worker_pin.cpp); for a held or dropped read, any.
Worker& Forwarder::outboundWorker(std::span<const std::uint8_t> packet, const OutboundRoute& route) noexcept {
  if (workers_.size() < 2) return *workers_[0];
  if (route.kind == OutboundRoute::Kind::kEsp) return workerFor(*route.sa);
  if (route.kind == OutboundRoute::Kind::kBundle) {
    if (const Sa* sa = firstStepSa(packet)) return workerFor(*sa);
  }
  return nextWorker();
}

void Forwarder::placeTunRead(std::span<std::uint8_t> read) noexcept {
  if (handOffTunRead(read)) return;  // its SA is another forwarder thread's (threads.cpp)
  offload::SegmentPlan plan;
  std::span<std::uint8_t> packet = read;
  if (tunOffload_.vnetHeader) {
    if (read.size() < offload::kVnetHeaderSize) {
      ++counters_.tun_in_drop_short;
      return;
    }
    const auto header = offload::readVnetHeader(read.first<offload::kVnetHeaderSize>());
    packet = read.subspan(offload::kVnetHeaderSize);
    plan = offload::planSegments(header, packet);
    if (!plan.ok()) return countVnetRefusal(plan.error);
    if (plan.gso()) {
      ++counters_.tun_in_super_packets;
    } else if (header.needsChecksum()) {
      ++counters_.tun_in_checksum_completed;  // by writeSegment, as it copies
    }
  }
  const std::uint32_t count = tunOffload_.vnetHeader ? plan.count : 1;
  const bool superPacket = plan.gso() && count > 1;
  // Routed once where the route decides something before the first segment
  // is framed (the worker, the super-packet path); that first segment is
  // then framed on the same route. Later segments route themselves: the
  // ones before them took sequence numbers.
  const bool routed = superPacket || workers_.size() > 1;
  const OutboundRoute route = routed ? routeOutbound(spd_, sas_, packet, espEnabled_) : OutboundRoute{};
  Worker& w = outboundWorker(packet, route);
  const std::size_t room = w.bufferSize - kHeadroom - kTailroom;
  // A lone ESP tunnel SA takes the segments as one request (super_packet.cpp);
  // whatever it leaves goes on segment by segment.
  const std::uint32_t first = superPacket ? placeSuperPacket(w, plan, packet, route) : 0;
  for (std::uint32_t i = first; i < count; ++i) {
    // Keep the worker's pending list within what it reserved (kBurst).
    if (w.pending.size() >= kBurst) flushRequests(w, true);
    const auto buf = allocBuffer(w);
    if (!buf) {
      counters_.tun_in_drop_no_buffer += count - i;
      return;
    }
    std::uint8_t* data = bufferData(w, *buf) + kHeadroom;
    std::size_t len = 0;
    if (tunOffload_.vnetHeader) {
      len = offload::writeSegment(plan, packet, i, {data, room});
    } else if (packet.size() <= room) {
      std::memcpy(data, packet.data(), packet.size());
      len = packet.size();
    }
    if (len == 0) {
      ++counters_.out_drop_no_room;
      freeBuffer(w, *buf);
      continue;
    }
    ++counters_.tun_in_packets;
    if (plan.gso()) ++counters_.tun_in_segments;
    const bool framed = routed && i == 0 ? outboundRouted(w, *buf, static_cast<std::uint32_t>(len), route)
                                         : outboundPacket(w, *buf, static_cast<std::uint32_t>(len));
    if (!framed) freeBuffer(w, *buf);
  }
}

void Forwarder::countVnetRefusal(offload::VnetError error) noexcept {
  using offload::VnetError;
  switch (error) {
    case VnetError::kOk: return;
    case VnetError::kUnknownFlags: ++counters_.tun_in_drop_unknown_flags; return;
    case VnetError::kUnknownGsoType: ++counters_.tun_in_drop_unknown_gso_type; return;
    case VnetError::kEcnWithoutTcp: ++counters_.tun_in_drop_ecn_without_tcp; return;
    case VnetError::kGsoWithoutNeedsChecksum: ++counters_.tun_in_drop_gso_without_needs_checksum; return;
    case VnetError::kZeroGsoSize: ++counters_.tun_in_drop_zero_gso_size; return;
    case VnetError::kChecksumOutsidePacket: ++counters_.tun_in_drop_checksum_outside_packet; return;
    case VnetError::kBadPacket: ++counters_.tun_in_drop_bad_packet; return;
    case VnetError::kGsoProtocolMismatch: ++counters_.tun_in_drop_gso_protocol_mismatch; return;
    case VnetError::kChecksumNotAtTransport: ++counters_.tun_in_drop_checksum_not_at_transport; return;
    case VnetError::kTooManySegments: ++counters_.tun_in_drop_too_many_segments; return;
  }
}

}  // namespace ipsec::forwarder
