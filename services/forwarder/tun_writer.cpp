// ipsec-forwarder: TUN writes on a TUN with offloads (issue 13 item 1,
// inbound). Every packet for the TUN (decrypted inner packets, our own ICMP)
// is copied into a private queue by writeTun, so its pool buffer is freed at
// once as before; at the end of the burst (flushSends, the end of a TUN read,
// a release of held packets) lib/offload's planCoalesce groups the queue by
// the kernel's GRO rules and each group is written with one writev(): a run of
// one TCP flow's segments (UDP too when the TUN granted USO) as a super-packet
// behind a GSO virtio_net_hdr — the merged headers, then each payload where
// it lies in the queue (sliceCoalesced: a payload byte is copied once, into
// the queue) — anything else alone behind an empty one. Order is kept: groups
// are neighbours, written in queue order.
//
// The packets are authenticated but the peer's bytes: planCoalesce checks
// each before it merges it (checksums included), and what it cannot judge is
// written alone, as it came, for the kernel to judge.
//
// Counting: a caller counts a packet delivered when writeTun took it; a
// packet the TUN then refuses is counted in tun_write_errors and
// tun_write_deferred_errors, so delivered = the callers' counts minus the latter.
// A refused super-packet is written again packet by packet first: only what
// the TUN refuses alone is lost.
#include <sys/uio.h>
#include <unistd.h>

#include <cstring>

#include "forwarder.h"
#include "offload/vnet_header.h"

namespace ipsec::forwarder {

bool Forwarder::queueTunWrite(std::span<const std::uint8_t> packet) noexcept {
  TunWriteQueue& q = tunWrites_;
  if (packet.size() > offload::kMaxPacket) {
    ++counters_.tun_write_errors;
    return false;
  }
  if (q.count == q.packets.size() || q.used + packet.size() > q.bytes.size()) flushTunWrites();
  std::uint8_t* at = q.bytes.data() + q.used;
  std::memcpy(at, packet.data(), packet.size());
  q.packets[q.count++] = {at, packet.size()};
  q.used += packet.size();
  return true;
}

bool Forwarder::writeTunWithHeader(const offload::VnetHeader& header, std::span<const std::uint8_t> packet) noexcept {
  std::array<std::uint8_t, offload::kVnetHeaderSize> bytes;
  offload::writeVnetHeader(header, bytes);
  std::array<iovec, 2> iov{{{bytes.data(), bytes.size()}, {const_cast<std::uint8_t*>(packet.data()), packet.size()}}};
  const ssize_t n = ::writev(fds_.tun.get(), iov.data(), 2);
  return n == static_cast<ssize_t>(bytes.size() + packet.size());
}

// One writev of [virtio_net_hdr, the merged headers, each payload where it
// lies in the queue]: the payloads are not copied again.
bool Forwarder::writeMerged(const offload::CoalesceGroup& group,
                            std::span<const std::span<const std::uint8_t>> burst) noexcept {
  TunWriteQueue& q = tunWrites_;
  const std::size_t n = offload::sliceCoalesced(group, burst, q.mergedHeaders, q.slices);
  if (n == 0) return false;
  std::array<std::uint8_t, offload::kVnetHeaderSize> vnet;
  offload::writeVnetHeader(group.header, vnet);
  q.iov[0] = {vnet.data(), vnet.size()};
  for (std::size_t i = 0; i < n; ++i) {
    q.iov[1 + i] = {const_cast<std::uint8_t*>(q.slices[i].data()), q.slices[i].size()};
  }
  const std::size_t total = vnet.size() + group.length;
  return ::writev(fds_.tun.get(), q.iov.data(), static_cast<int>(n + 1)) == static_cast<ssize_t>(total);
}

void Forwarder::flushTunWrites() noexcept {
  TunWriteQueue& q = tunWrites_;
  if (q.count == 0) return;
  const std::span<const std::span<const std::uint8_t>> burst(q.packets.data(), q.count);
  std::size_t groups = 0;
  if (tunOffload_.tso) {
    groups = offload::planCoalesce(burst, q.groups, {.udp = tunOffload_.uso});
  } else {
    for (std::uint32_t i = 0; i < q.count; ++i) {
      q.groups[i] = {i, 1, static_cast<std::uint32_t>(burst[i].size()), {}};
    }
    groups = q.count;
  }
  for (std::size_t g = 0; g < groups; ++g) {
    const offload::CoalesceGroup& group = q.groups[g];
    if (group.count > 1 && writeMerged(group, burst)) {
      ++counters_.tun_out_super_packets;
      counters_.tun_out_coalesced += group.count;
      continue;
    }
    if (group.count > 1) ++counters_.tun_out_coalesce_refused;  // then each alone, below
    for (std::uint32_t i = group.first; i < group.first + group.count; ++i) {
      if (!writeTunWithHeader({}, burst[i])) {
        ++counters_.tun_write_errors;
        ++counters_.tun_write_deferred_errors;
      }
    }
  }
  q.count = 0;
  q.used = 0;
}

}  // namespace ipsec::forwarder
