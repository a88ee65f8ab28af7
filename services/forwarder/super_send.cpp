// See super_send.h.
#include "super_send.h"

#include <cstring>

#include "esp/pmtu.h"
#include "esp/udp_encap.h"
#include "esp/udp_gro.h"

namespace ipsec::forwarder {
namespace {

constexpr std::uint64_t bit(std::size_t i) noexcept { return std::uint64_t{1} << i; }

}  // namespace

void SuperSend::begin(const esp::IpAddress& to, std::uint16_t port) noexcept {
  count = 0;
  toLength_ = esp::toSockaddr({to, port}, to_);
}

std::size_t SuperSend::addSegments(std::span<const iovec> parts, std::uint8_t carried) noexcept {
  const std::size_t m = addMessage(parts, &to_, toLength_);
  segments[m] = carried;
  segmentSize[m] = 0;
  dontFragment[m] = false;
  return m;
}

std::size_t SuperSend::udpRun(const SuperFrame& f, std::uint64_t failed, std::uint16_t i, std::size_t maxBytes,
                              bool gso) noexcept {
  const bool df = f.dontFragment & bit(i);
  std::size_t run = 1, bytes = f.segmentLength(i);
  while (gso && i + run < f.count && run < esp::kMaxGsoSegments) {
    const auto next = static_cast<std::uint16_t>(i + run);
    if ((failed & bit(next)) || f.outerTos[next] != f.outerTos[i] || bool(f.dontFragment & bit(next)) != df ||
        bytes + f.segmentLength(next) > maxBytes) {
      break;
    }
    bytes += f.segmentLength(next);
    ++run;
  }
  return run;
}

void SuperSend::fillUdp(const SuperFrame& f, std::uint8_t* data, std::uint64_t failed, const Sa& sa,
                        std::uint16_t dport, bool gso) noexcept {
  const bool v4 = sa.dst.isV4();
  begin(sa.dst, dport);
  for (std::uint16_t i = 0; i < f.count;) {
    if (failed & bit(i)) {
      ++i;
      continue;
    }
    const std::size_t run = udpRun(f, failed, i, v4 ? esp::kMaxGsoBytes4 : esp::kMaxGsoBytes, gso);
    const auto last = static_cast<std::uint16_t>(i + run - 1);
    const iovec part{data + f.segmentStart(i), f.segmentStart(last) + f.segmentLength(last) - f.segmentStart(i)};
    const std::size_t m = addSegments({&part, 1}, static_cast<std::uint8_t>(run));
    setTrafficClass(m, v4, f.outerTos[i]);
    if (v4) setSource4(m, sa.src.bytes().data());  // the peer (and its NAT) know the SA by it
    if (run > 1) {
      segmentSize[m] = f.stride;
      setSegmentSize(m, static_cast<std::uint16_t>(f.stride));
    }
    dontFragment[m] = f.dontFragment & bit(i);
    i = static_cast<std::uint16_t>(i + run);
  }
}

void SuperSend::fillRaw6(const SuperFrame& f, std::uint8_t* data, std::uint64_t failed, const Sa& sa) noexcept {
  begin(sa.dst, 0);
  for (std::uint16_t i = 0; i < f.count; ++i) {
    if (failed & bit(i)) continue;
    const iovec part{data + f.segmentStart(i), f.segmentLength(i)};
    setTrafficClass(addSegments({&part, 1}, 1), false, f.outerTos[i]);
  }
}

std::size_t SuperSend::fillWithHeaders4(const SuperFrame& f, std::uint8_t* data, std::uint64_t failed, const Sa& sa,
                                        const NatT* nat, std::uint16_t& ipId) noexcept {
  begin(sa.dst, 0);
  std::size_t nowhere = 0;
  for (std::uint16_t i = 0; i < f.count; ++i) {
    if (failed & bit(i)) continue;
    esp::OuterHeader h;
    h.src = sa.src;
    h.dst = sa.dst;
    h.tos = f.outerTos[i];
    h.dontFragment = f.dontFragment & bit(i);
    h.id = ipId++;
    if (nat) {
      h.udpSport = nat->sport;
      h.udpDport = nat->dport;
    }
    std::optional<std::size_t> head;
    if (!nat || h.udp()) head = esp::writeOuterHeaderApart(headers[count], f.segmentLength(i), h);
    if (!head) {  // a NAT-T SA without ports: nowhere to send it
      ++nowhere;
      continue;
    }
    const std::array<iovec, 2> parts{iovec{headers[count].data(), *head},
                                     iovec{data + f.segmentStart(i), f.segmentLength(i)}};
    addSegments(parts, 1);
  }
  return nowhere;
}

void SuperSend::sendToNextHop(const sockaddr_ll& hop) noexcept {
  std::memcpy(&to_, &hop, sizeof hop);
  toLength_ = sizeof hop;
  for (std::size_t k = 0; k < count; ++k) msgs[k].msg_hdr.msg_namelen = toLength_;
}

}  // namespace ipsec::forwarder
