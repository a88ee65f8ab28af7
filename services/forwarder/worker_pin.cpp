// ipsec-forwarder: SAs pinned to crypto workers. A worker completes its ring
// in order, so one SA's packets leave in sequence-number order only if they
// all go through one worker; with several workers the burst's worker (round
// robin) is not enough. The worker is fixed by the SA's slot index (stable for
// the SA's life). An inbound packet received into another worker's pool is
// copied into a buffer of its SA's worker before anything is framed (the
// broker only sees buffers of its own region). With one worker (the default)
// nothing here runs.
//
// Outbound the SA is the one the read's route seals with, or for a bundle
// the one the policy's first step will take (plan.h, firstStepSa), looked up
// once per TUN read, before any pool buffer is taken, and the read is placed
// in that worker's pool (tun_reader.cpp): no copy between pools.
// A placement choice only — if it differs from the SA the packet then takes
// (an SA arrived in between), that packet's order is all that suffers.
// Inbound the SA is the one the SPI names; an inner layer of a bundle
// (bundle.cpp) stays on its outer layer's worker.
#include <linux/ipsec.h>
#include <linux/pfkeyv2.h>
#include <netinet/in.h>

#include <cstring>

#include "forwarder.h"

namespace ipsec::forwarder {

// With several forwarder threads workers_ holds this thread's workers only
// (global worker g is local g / threads, thread_link.h localWorkerOf). Another thread's SA
// (it cannot seal here, threads.cpp) still gets one of ours, never an index
// beyond them.
Worker& Forwarder::workerFor(const Sa& sa) noexcept {
  return *workers_[link_.localWorkerOf(sa.ref.index)];
}

const Sa* Forwarder::firstStepSa(std::span<const std::uint8_t> packet) noexcept {
  const auto flow = esp::parseInnerPacket(packet);
  if (!flow) return nullptr;
  const Policy* p = spd_.lookup(IPSEC_DIR_OUTBOUND, *flow);
  if (!p || p->action != IPSEC_POLICY_IPSEC) return nullptr;
  const Plan& plan = p->plan;
  const Request* ends = plan.ipcompTunnel != Plan::kNoRequest ? &p->requests[plan.ipcompTunnel] : nullptr;
  for (std::size_t i = 0; i < plan.stepCount; ++i) {
    const StepKind kind = plan.steps[i];
    if (kind == StepKind::kIpcomp) continue;
    const Request& r = p->requests[plan.stepRequest[i]];
    const Request& between = ends ? *ends : r;
    const bool tunnel = between.mode == IPSEC_MODE_TUNNEL && between.tunnelSrc && between.tunnelDst;
    const std::uint8_t satype =
        kind == StepKind::kAhTransport || kind == StepKind::kAhTunnel ? SADB_SATYPE_AH : SADB_SATYPE_ESP;
    return sas_.selectOutbound(satype, tunnel ? *between.tunnelSrc : flow->src, tunnel ? *between.tunnelDst : flow->dst,
                               r.level == IPSEC_LEVEL_UNIQUE ? r.reqid : 0);
  }
  return nullptr;
}

// An inbound burst is received into one worker's pool and each packet then
// moved to its SA's worker: each must have a burst's worth free first. A
// packet whose worker had none would be opened on the burst's worker, out of
// order with its SA's others (beyond the replay window: dropped as a replay).
bool Forwarder::pinRoom() const noexcept {
  if (workers_.size() < 2) return true;
  for (const auto& w : workers_) {
    if (w->pool->available() < kBurst) return false;
  }
  return true;
}

std::optional<std::uint32_t> Forwarder::moveToWorker(Worker& from, std::uint32_t buf, std::uint32_t at,
                                                     std::uint32_t len, Worker& to, bool outbound) noexcept {
  if (at > to.bufferSize || len > to.bufferSize - at) {
    ++counters_.worker_pin_no_buffer;
    return std::nullopt;
  }
  auto moved = allocBuffer(to);
  if (!moved) {
    ++counters_.worker_pin_no_buffer;
    return std::nullopt;
  }
  // Requests for `to` queued this burst: keep its pending list within what it reserved.
  if (to.pending.size() >= kBurst) flushRequests(to, outbound);
  std::memcpy(bufferData(to, *moved) + at, bufferData(from, buf) + at, len);
  freeBuffer(from, buf);
  ++counters_.worker_pinned_copies;
  return moved;
}

void Forwarder::flushAllRequests(bool outbound) noexcept {
  for (auto& w : workers_) flushRequests(*w, outbound);
}

}  // namespace ipsec::forwarder
