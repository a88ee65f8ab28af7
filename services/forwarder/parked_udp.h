// ipsec-forwarder: NAT-T datagrams received but not yet handled — a
// datagram as read (whole, or coalesced by UDP GRO: its split), and the
// bounded queue of those waiting, in order, for free pool buffers (gro.cpp
// udpDatagram, resumeParked). The socket is not read again until its queue
// is empty, so a short pool puts reads off instead of dropping.
//
// Trust: the bytes in the buffers are the network's, parsed again by the
// handler; the split and control were read by lib/esp from the kernel's
// answer. One thread.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>

#include "burst.h"
#include "esp/udp_encap.h"
#include "esp/udp_gro.h"

namespace ipsec::forwarder {

struct Worker;  // crypto_worker.h

// A received datagram, whole (split.count 1) or coalesced, in buf of w's pool.
struct UdpDatagram {
  Worker* w = nullptr;
  std::uint32_t buf = 0;
  esp::GroSplit split;
  esp::UdpControl ctl;
  std::optional<esp::UdpEndpoint> peer;
};

// Datagrams received but waiting for buffers, in order, for one NAT-T socket.
struct ParkedUdp {
  std::array<UdpDatagram, kBurst> items{};
  std::size_t head = 0, count = 0;
};

}  // namespace ipsec::forwarder
