// ipsec-forwarder: plain ESP over IPv4 read from the packet ring ipsecd set
// up (esp_ring; lib/esp/esp_ring.h), instead of recvmmsg on the raw socket:
// frames the kernel marked TP_STATUS_USER are parsed (esp::parseRingFrame:
// the frame header checked, the IPv4 header checked as ip_rcv would), copied
// into a pool buffer and handed back to the kernel, with no system call per
// packet; the socket's readiness wakes us when the ring runs dry. Frames are
// the network's bytes: noexcept, allocation-free, every drop counted.
#include <linux/if_packet.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include <cstring>

#include "esp/esp_ring.h"
#include "forwarder.h"
#include "log/log.h"

namespace ipsec::forwarder {

Forwarder::EspRing::~EspRing() {
  if (base) munmap(base, esp::kEspRingBytes);
}

// Before the sandbox (the constructor): the ring is mapped once, for life.
void Forwarder::setUpEspRing() {
  const int fd = fds_.espRing4.get();
  if (fd < 0) return;
  void* mapped = mmap(nullptr, esp::kEspRingBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (mapped != MAP_FAILED) {
    espRing_.base = static_cast<std::uint8_t*>(mapped);
    espRingWatch_ = std::make_unique<boost::asio::posix::stream_descriptor>(io_, fd);
    log::info("plain ESP/IPv4 in through the packet ring");
    return;
  }
  int domain = 0;
  socklen_t length = sizeof domain;
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &length) != 0 || domain != AF_PACKET) return;  // ring off
  // ipsecd set a ring up and silenced the raw socket, but it cannot be
  // mapped here: give the raw socket its ESP back rather than lose it.
  log::error("the packet ring could not be mapped ({}): plain ESP/IPv4 on the raw socket", std::strerror(errno));
  int unused = 0;
  if (setsockopt(fds_.raw4.get(), SOL_SOCKET, SO_DETACH_FILTER, &unused, sizeof unused) != 0) {
    throw std::runtime_error("packet ring unmapped and the raw ESP/IPv4 socket's filter kept");
  }
}

void Forwarder::armEspRing() {
  if (!espRingWatch_) return;
  espRingWatch_->async_wait(boost::asio::posix::stream_descriptor::wait_read, [this](boost::system::error_code ec) {
    if (!ec && !stopped_) readEspRing();
  });
}

std::uint8_t* Forwarder::espRingFrame(std::uint32_t i) noexcept {
  return espRing_.base + std::size_t{i} * esp::kEspRingFrameSize;
}

bool Forwarder::espRingFrameOurs(std::uint32_t i) noexcept {
  auto* status = reinterpret_cast<std::uint32_t*>(espRingFrame(i));  // tp_status leads the tpacket2_hdr
  return (__atomic_load_n(status, __ATOMIC_ACQUIRE) & TP_STATUS_USER) != 0;
}

void Forwarder::releaseEspRingFrame() noexcept {
  auto* status = reinterpret_cast<std::uint32_t*>(espRingFrame(espRingHead_));
  __atomic_store_n(status, static_cast<std::uint32_t>(TP_STATUS_KERNEL), __ATOMIC_RELEASE);
  espRingHead_ = (espRingHead_ + 1) % esp::kEspRingFrames;
}

// Frames in the kernel's order, from frame 0 of a ring made for this
// forwarder. The kernel may finish frame i + 1 before frame i (two CPUs
// filling): we stop at i and are woken when it is done, never skip it.
void Forwarder::readEspRing() noexcept {
  if (!handoffRoom(kBurst) || !pinRoom()) {  // as readRaw (inbound.cpp)
    espRingStalled_ = true;
    return;
  }
  Worker& w = nextWorker();
  std::size_t taken = 0;
  for (; taken < kBurst && espRingFrameOurs(espRingHead_); ++taken) {
    const esp::RingEsp p = esp::parseRingFrame({espRingFrame(espRingHead_), esp::kEspRingFrameSize});
    if (p.error != esp::RingFrameError::kNone || p.packet.size() > w.bufferSize) {
      switch (p.error) {
        case esp::RingFrameError::kBadFrame: ++counters_.esp_ring_drop_bad_frame; break;
        case esp::RingFrameError::kFragment: ++counters_.esp_ring_drop_fragment; break;
        case esp::RingFrameError::kBadIp:
        case esp::RingFrameError::kNotEsp: ++counters_.esp_in_drop_bad_ip; break;
        case esp::RingFrameError::kTruncated:
        case esp::RingFrameError::kNone: ++counters_.esp_ring_drop_truncated; break;
      }
      releaseEspRingFrame();
      continue;
    }
    const auto b = allocBuffer(w);
    if (!b) {
      // The frame stays ours, unread: a completion restarts the reading.
      ++counters_.esp_in_stall_no_buffer;
      espRingStalled_ = true;
      flushAllRequests(false);
      return;
    }
    const auto length = static_cast<std::uint32_t>(p.packet.size());
    std::memcpy(bufferData(w, *b), p.packet.data(), length);
    Outer outer;
    outer.espOffset = p.espOffset;
    outer.dst = p.dst;
    outer.tos = p.tos;
    releaseEspRingFrame();  // p's bytes are copied: the kernel may have the frame back
    ++counters_.esp_ring_in_packets;
    inboundPacket(w, *b, length, outer, true);
  }
  flushAllRequests(false);
  if (taken == kBurst) {
    boost::asio::post(io_, [this] { readEspRing(); });
  } else {
    armEspRing();
  }
}

}  // namespace ipsec::forwarder
