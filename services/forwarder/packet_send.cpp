// ipsec-forwarder: esp_send = packet (issue 13 item 3) — plain tunnel
// ESP/IPv4 that we framed and that fits leaves by sendmmsg on the AF_PACKET
// socket ipsecd handed us, to the next hop's MAC that the next-hop cache
// (next_hop.h) learnt from the kernel over the route netlink socket, instead
// of on the header-included raw socket: no route lookup, ip_output,
// neighbour or qdisc per packet. What the cache does not know goes raw as
// before. Thread 0 alone (threads.cpp: the others get neither socket).
//
// Trust: the netlink datagrams are the kernel's, parsed as untrusted by
// lib/netlink; the packets are our own. The data path is noexcept.
#include <linux/if_packet.h>
#include <linux/netlink.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <system_error>

#include "clock/clock.h"
#include "forwarder.h"

namespace ipsec::forwarder {

namespace {
bool socketDomainIs(int fd, int domain) {
  int got = -1;
  socklen_t length = sizeof got;
  return fd >= 0 && getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &got, &length) == 0 && got == domain;
}
}  // namespace

// Before the sandbox (getsockname, getsockopt). Idle eventfds (esp_send =
// raw) or no descriptors (threads other than 0): nothing is set up.
void Forwarder::setUpPacketSend() {
  if (!socketDomainIs(fds_.packet4.get(), AF_PACKET) || !socketDomainIs(fds_.routeNetlink.get(), AF_NETLINK)) return;
  sockaddr_nl self{};
  socklen_t length = sizeof self;
  if (getsockname(fds_.routeNetlink.get(), reinterpret_cast<sockaddr*>(&self), &length) != 0) {
    throw std::system_error(errno, std::generic_category(), "getsockname (route netlink socket)");
  }
  // Routes as the raw sends are routed: with the mark every send socket carries (ipsecd's markSocket).
  std::uint32_t mark = 0;
  socklen_t markLength = sizeof mark;
  if (getsockopt(fds_.hdr4.get(), SOL_SOCKET, SO_MARK, &mark, &markLength) != 0) mark = 0;
  nextHops_ = std::make_unique<NextHops>(counters_, self.nl_pid, mark, &Forwarder::sendNetlinkRequest, this);
  netlinkWatch_ = std::make_unique<boost::asio::posix::stream_descriptor>(io_, fds_.routeNetlink.get());
  netlinkDatagram_.resize(64 * 1024);
  sendPacket4_.fd = fds_.packet4.get();
  sendPacket4_.packet = true;
}

bool Forwarder::sendNetlinkRequest(void* self, std::span<const std::uint8_t> request) noexcept {
  auto* f = static_cast<Forwarder*>(self);
  return ::send(f->fds_.routeNetlink.get(), request.data(), request.size(), MSG_DONTWAIT) ==
         static_cast<ssize_t>(request.size());
}

void Forwarder::armNetlink() {
  if (!netlinkWatch_) return;
  netlinkWatch_->async_wait(boost::asio::posix::stream_descriptor::wait_read, [this](boost::system::error_code ec) {
    if (!ec && !stopped_) readNetlink();
  });
}

void Forwarder::readNetlink() noexcept {
  for (int i = 0; i < 64; ++i) {  // bounded: the data path gets its turn
    const ssize_t n = ::recv(fds_.routeNetlink.get(), netlinkDatagram_.data(), netlinkDatagram_.size(), MSG_DONTWAIT);
    if (n < 0) {
      if (errno == ENOBUFS) {  // notifications were lost: what the cache knows may be stale
        nextHops_->flush();
        continue;
      }
      break;  // EAGAIN: read all
    }
    nextHops_->onDatagram({netlinkDatagram_.data(), static_cast<std::size_t>(n)}, clock::monotonicMs());
  }
  armNetlink();
}

const sockaddr_ll* Forwarder::packetAddressOf(const esp::IpAddress& to) noexcept {
  if (!nextHops_ || !to.isV4()) return nullptr;
  netlink::Ipv4 address;
  std::memcpy(address.data(), to.bytes().data(), address.size());
  return nextHops_->packetAddress(address, clock::monotonicMs());
}

const sockaddr_ll* Forwarder::packetAddressOfRun(const esp::IpAddress& to, bool& firstRaw) noexcept {
  firstRaw = false;
  if (!nextHops_ || !to.isV4()) return nullptr;
  netlink::Ipv4 address;
  std::memcpy(address.data(), to.bytes().data(), address.size());
  return nextHops_->packetAddressOfRun(address, clock::monotonicMs(), firstRaw);
}

void Forwarder::resendRaw(const mmsghdr& m) noexcept {
  // The packet's own IPv4 header (in its first iovec) says where it goes: destination at offset 16.
  const iovec& head = m.msg_hdr.msg_iov[0];
  sockaddr_in to{};
  to.sin_family = AF_INET;
  if (head.iov_len < 20) return void(++counters_.out_drop_send);
  std::memcpy(&to.sin_addr, static_cast<const std::uint8_t*>(head.iov_base) + 16, sizeof to.sin_addr);
  msghdr raw = m.msg_hdr;
  raw.msg_name = &to;
  raw.msg_namelen = sizeof to;
  const ssize_t sent = ::sendmsg(fds_.hdr4.get(), &raw, MSG_DONTWAIT);
  if (sent < 0) return void(++counters_.out_drop_send);
  ++counters_.esp_out_packets;
  counters_.esp_out_bytes += static_cast<std::uint64_t>(sent);
}

// EMSGSIZE cannot come for a packet that fits, but if it does: the raw socket.
void Forwarder::sendOnPacketSocket(std::span<mmsghdr> msgs) noexcept {
  for (std::size_t sent = 0; sent < msgs.size();) {
    const int n = sendmmsg(fds_.packet4.get(), msgs.data() + sent, static_cast<unsigned>(msgs.size() - sent),
                           MSG_DONTWAIT);
    if (n <= 0) {
      if (errno == EMSGSIZE) {
        ++counters_.out_packet_socket_too_big;
        resendRaw(msgs[sent]);
      } else {
        ++counters_.out_drop_send;
      }
      ++sent;
      continue;
    }
    for (std::size_t k = sent; k < sent + static_cast<std::size_t>(n); ++k) {
      ++counters_.esp_out_packets;
      counters_.esp_out_bytes += msgs[k].msg_len;
    }
    counters_.out_packet_socket += static_cast<std::uint64_t>(n);
    sent += static_cast<std::size_t>(n);
  }
}

}  // namespace ipsec::forwarder
