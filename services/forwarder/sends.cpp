// ipsec-forwarder: the sends at the edge — the send batches (sendmmsg, with
// per-packet control messages), their flush by socket (UDP GSO in gro.cpp),
// the TUN write, and the NAT keepalives. Counts what the kernel took and what
// it refused; noexcept and allocation-free.
#include "forwarder.h"

#include <netinet/in.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "esp/esp.h"
#include "esp/ip.h"

namespace ipsec::forwarder {
bool Forwarder::writeTun(std::span<const std::uint8_t> packet) noexcept {
  if (tunOffload_.vnetHeader) return queueTunWrite(packet);  // tun_writer.cpp
  if (::write(fds_.tun.get(), packet.data(), packet.size()) != static_cast<ssize_t>(packet.size())) {
    ++counters_.tun_write_errors;
    return false;
  }
  return true;
}

void Forwarder::flushSends() noexcept {
  flushSendBatch(send4_);
  flushSendBatch(sendPacket4_);
  flushSendBatch(send6_);
  flushSendBatch(sendUdp4_);
  flushSendBatch(sendUdp6_);
  flushSendBatch(sendUdpOwnHeader4_);
  flushSendBatch(sendHdr4_);
  flushSendBatch(sendHdr6_);
  flushSendBatch(sendAh4_);
  flushSendBatch(sendAh6_);
  flushTunWrites();  // the burst's packets for the TUN, coalesced (tun_writer.cpp)
}

void Forwarder::flushSendBatch(SendBatch& b) noexcept {
  if (&b == &sendUdp4_) {
    flushUdp4(b);  // gro.cpp
  } else if (&b == &sendUdp6_ && udpGso_) {
    flushGso(b, 0, b.count);
  } else {
    sendEach(b, 0, b.count);
  }
  for (std::size_t i = 0; i < b.count; ++i) {
    if (b.buffers[i].first) freeBuffer(*b.buffers[i].first, b.buffers[i].second);
  }
  b.count = 0;
}

void Forwarder::sendEach(SendBatch& b, std::size_t first, std::size_t count) noexcept {
  if (b.packet) return sendOnPacketSocket({b.msgs.data() + first, count});  // packet_send.cpp
  std::size_t sent = first;
  const std::size_t end = first + count;
  while (sent < end) {
    int n = sendmmsg(b.fd, b.msgs.data() + sent, static_cast<unsigned>(end - sent), MSG_DONTWAIT);
    if (n <= 0) {
      // Refused (EAGAIN, unreachable, ...): drop this one and go on with the rest.
      ++(b.keepalive ? counters_.natt_out_keepalive_errors : counters_.out_drop_send);
      ++sent;
      continue;
    }
    if (b.keepalive) {
      counters_.natt_out_keepalives += static_cast<std::uint64_t>(n);
      sent += static_cast<std::size_t>(n);
      continue;
    }
    for (std::size_t i = sent; i < sent + static_cast<std::size_t>(n); ++i) {
      ++(b.ah ? counters_.ah_out_packets : counters_.esp_out_packets);
      (b.ah ? counters_.ah_out_bytes : counters_.esp_out_bytes) += b.msgs[i].msg_len;
    }
    if (b.udp) counters_.natt_out_esp_packets += static_cast<std::uint64_t>(n);
    sent += static_cast<std::size_t>(n);
  }
}

std::size_t Forwarder::sendSegmented(int fd, std::span<mmsghdr> msgs, const std::uint8_t* segments, std::size_t first,
                                     bool udp) noexcept {
  for (std::size_t sent = first; sent < msgs.size();) {
    const int n = sendmmsg(fd, msgs.data() + sent, static_cast<unsigned>(msgs.size() - sent), MSG_DONTWAIT);
    if (n <= 0) {
      if (segments[sent] > 1) {
        ++counters_.natt_out_gso_fallback;
        return sent;  // the caller sends its datagrams one at a time
      }
      ++counters_.out_drop_send;
      ++sent;
      continue;
    }
    for (std::size_t k = sent; k < sent + static_cast<std::size_t>(n); ++k) {
      counters_.esp_out_packets += segments[k];
      counters_.esp_out_bytes += msgs[k].msg_len;
      if (udp) counters_.natt_out_esp_packets += segments[k];
      if (segments[k] > 1) {
        ++counters_.natt_out_gso_datagrams;
        counters_.natt_out_gso_segments += segments[k];
      }
    }
    sent += static_cast<std::size_t>(n);
  }
  return msgs.size();
}

// NAT keepalives (RFC 3948 §2.3): one byte 0xFF to the peer of every NAT-T SA
// that has carried outbound traffic, so the NAT keeps its mapping while the
// tunnel is idle. Batched per family in send batches as ESP is; over IPv4
// from the SA's source address, as its ESP (queueUdp4), so that they keep the
// same mapping alive.
void Forwarder::sendKeepalives() noexcept {
  static std::uint8_t keepaliveByte = esp::kNatKeepalive;  // never written: only sent
  keepalive4_.fd = fds_.udp4.get();
  keepalive6_.fd = fds_.udp6.get();
  keepalive4_.keepalive = keepalive6_.keepalive = true;
  sas_.forEach([&](Sa& sa) {
    const NatT* nat = natTOf(sa);
    if (!nat || !nat->outbound) return;
    SendBatch& b = queueSend(sa.dst.isV4() ? keepalive4_ : keepalive6_);
    const std::size_t i = b.addBytes({&keepaliveByte, 1}, [&](sockaddr_storage& to) {
      return esp::toSockaddr({sa.dst, nat->dport}, to);
    });
    if (sa.dst.isV4()) b.setSource4(i, sa.src.bytes().data());
  });
  flushSendBatch(keepalive4_);
  flushSendBatch(keepalive6_);
}

}  // namespace ipsec::forwarder
