// See next_hop.h.
#include "next_hop.h"

#include <linux/if_ether.h>
#include <linux/rtnetlink.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>

namespace ipsec::forwarder {

NextHops::Destination* NextHops::find(const netlink::Ipv4& to) noexcept {
  if (lastHit_ < destinationCount_ && destinations_[lastHit_].address == to) return &destinations_[lastHit_];
  for (std::size_t i = 0; i < destinationCount_; ++i) {
    if (destinations_[i].address == to) {
      lastHit_ = static_cast<std::uint8_t>(i);
      return &destinations_[i];
    }
  }
  return nullptr;
}

NextHops::NextHop* NextHops::findNextHop(std::uint32_t ifindex, const netlink::Ipv4& address) noexcept {
  for (std::size_t i = 0; i < nextHopCount_; ++i) {
    if (nextHops_[i].ifindex == ifindex && nextHops_[i].address == address) return &nextHops_[i];
  }
  return nullptr;
}

void NextHops::askRoute(Destination& d, std::uint64_t nowMs) noexcept {
  std::array<std::uint8_t, netlink::kRequestBytes> request{};
  d.state = Destination::State::kAsking;
  d.askedSeq = nextSeq();
  d.askedMs = nowMs;
  ++counters_.next_hop_lookups;
  send_(context_, std::span(request).first(netlink::routeRequest(request, d.askedSeq, d.address, mark_)));
}

void NextHops::askNeighbour(NextHop& n) noexcept {
  std::array<std::uint8_t, netlink::kRequestBytes> request{};
  n.askedSeq = nextSeq();
  send_(context_, std::span(request).first(netlink::neighbourRequest(request, n.askedSeq, n.ifindex, n.address)));
}

NextHops::NextHop* NextHops::usableHop(const netlink::Ipv4& to, std::uint64_t nowMs) noexcept {
  Destination* d = find(to);
  if (d == nullptr) {
    if (destinationCount_ == kMaxDestinations) flush();
    d = &destinations_[destinationCount_++];
    *d = Destination{};
    d->address = to;
    askRoute(*d, nowMs);
    ++counters_.next_hop_misses;
    return nullptr;
  }
  if (d->state != Destination::State::kRouted) {
    if (nowMs - d->askedMs >= kAskAgainMs) askRoute(*d, nowMs);
    ++counters_.next_hop_misses;
    return nullptr;
  }
  NextHop& n = nextHops_[d->nextHop];
  if (!n.usable) {
    // The raw send has the kernel resolve it; its notification brings the
    // MAC. Asked again now and then in case that notification was missed.
    if (nowMs - d->askedMs >= kAskAgainMs) {
      d->askedMs = nowMs;
      askNeighbour(n);
    }
    ++counters_.next_hop_misses;
    return nullptr;
  }
  return &n;
}

bool NextHops::takeRefresh(NextHop& n, std::uint64_t nowMs) noexcept {
  if (nowMs - n.lastRawMs < kRefreshMs) return false;
  n.lastRawMs = nowMs;  // one packet goes raw: the kernel's neighbour entry sees traffic
  return true;
}

const sockaddr_ll* NextHops::packetAddress(const netlink::Ipv4& to, std::uint64_t nowMs) noexcept {
  NextHop* n = usableHop(to, nowMs);
  return n == nullptr || takeRefresh(*n, nowMs) ? nullptr : &n->to;
}

const sockaddr_ll* NextHops::packetAddressOfRun(const netlink::Ipv4& to, std::uint64_t nowMs, bool& firstRaw) noexcept {
  NextHop* n = usableHop(to, nowMs);
  // The refresh: the run's first packet raw, the rest by the packet socket.
  firstRaw = n != nullptr && takeRefresh(*n, nowMs);
  return n == nullptr ? nullptr : &n->to;
}

void NextHops::onDatagram(std::span<const std::uint8_t> datagram, std::uint64_t nowMs) noexcept {
  setNow(nowMs);
  counters_.netlink_bad_message += netlink::parseDatagram(datagram, *this).bad;
}

void NextHops::flush() noexcept {
  destinationCount_ = 0;
  nextHopCount_ = 0;
  lastHit_ = 0;
  ++counters_.next_hop_flushes;
}

void NextHops::route(const netlink::Header& h, const netlink::Route& r) noexcept {
  Destination* d = nullptr;
  if (ours(h)) {
    for (std::size_t i = 0; i < destinationCount_ && d == nullptr; ++i) {
      if (destinations_[i].state == Destination::State::kAsking && destinations_[i].askedSeq == h.seq) {
        d = &destinations_[i];
      }
    }
  }
  if (d == nullptr) {
    // Not an answer of ours: a route was added, changed or removed. Any of
    // them may change where some destination goes.
    if (!ours(h) && (destinationCount_ != 0 || nextHopCount_ != 0)) flush();
    return;
  }
  d->askedMs = nowMs_;
  // Only a unicast route out of an interface: a local peer (loopback has no
  // MAC), a multipath route (no single next hop) and the like stay raw.
  if (r.removed || r.type != RTN_UNICAST || r.oif == 0) {
    d->state = Destination::State::kNoPath;
    return;
  }
  const netlink::Ipv4 hop = r.hasGateway ? r.gateway : d->address;
  NextHop* n = findNextHop(r.oif, hop);
  if (n == nullptr) {
    if (nextHopCount_ == kMaxNextHops) {
      d->state = Destination::State::kNoPath;  // asked again later
      return;
    }
    n = &nextHops_[nextHopCount_++];
    *n = NextHop{};
    n->ifindex = r.oif;
    n->address = hop;
    askNeighbour(*n);
  }
  d->state = Destination::State::kRouted;
  d->nextHop = static_cast<std::uint8_t>(n - nextHops_.data());
}

void NextHops::neighbour(const netlink::Header&, const netlink::Neighbour& nb) noexcept {
  // Replies and notifications alike: the kernel's word on an entry we use.
  NextHop* n = findNextHop(nb.ifindex, nb.address);
  if (n == nullptr) return;
  const bool usable = !nb.removed && nb.hasMac && netlink::usableState(nb.state);
  if (usable && !n->usable) n->lastRawMs = nowMs_;  // its resolution was the raw traffic's
  n->usable = usable;
  if (!usable) return;
  n->to = sockaddr_ll{};
  n->to.sll_family = AF_PACKET;
  n->to.sll_protocol = htons(ETH_P_IP);
  n->to.sll_ifindex = static_cast<int>(nb.ifindex);
  n->to.sll_halen = 6;
  std::copy(nb.mac.begin(), nb.mac.end(), n->to.sll_addr);
}

void NextHops::error(const netlink::Header& h, int) noexcept {
  if (!ours(h)) return;
  for (std::size_t i = 0; i < destinationCount_; ++i) {
    Destination& d = destinations_[i];
    if (d.state == Destination::State::kAsking && d.askedSeq == h.seq) {
      d.state = Destination::State::kNoPath;  // no route (ENETUNREACH ...): raw, asked again later
      d.askedMs = nowMs_;
    }
  }
  // A neighbour not there yet (ENOENT): the raw traffic has the kernel resolve it; its notification follows.
}

}  // namespace ipsec::forwarder
