// ipsec-forwarder: the NAT-T facts of each SA (SaParams natT*, RFC 3948), kept
// by SA slot beside the SA table rather than in it: whether the SA runs ESP
// in UDP and between which ports, when its NAT mapping was last reported, and
// whether it carried outbound traffic (keepalives go to its peer). Written on
// keydb's installs (control.cpp), read by the packet paths; one thread.
#pragma once

#include <cstdint>
#include <vector>

#include "esp/nat_oa.h"
#include "tables.h"

namespace ipsec::forwarder {

struct NatT {
  bool present = false;
  std::uint32_t generation = 0;
  std::uint8_t type = 0;  // 0 or UDP_ENCAP_ESPINUDP
  std::uint16_t sport = 0, dport = 0;
  std::uint64_t lastMappingMs = 0;  // NAT mapping reports, at most one per second
  bool outbound = false;            // carried outbound traffic: keepalives go to its peer
  esp::NatOriginalAddresses oa;     // SaParams natOaSrc/natOaDst: transport mode's checksum fix-up
};

// True when the SA's IPv4 ESP in UDP can leave on the NAT-T socket bound to
// udp4Port (the kernel then writes IP and UDP): its source port is the
// socket's and it has a peer port. Otherwise we write the headers.
inline bool sendsOnUdp4Socket(const NatT& nat, std::uint16_t udp4Port) noexcept {
  return nat.sport == udp4Port && nat.dport != 0;
}

class NattPeers {
 public:
  // The SA's NAT-T facts when it runs ESP in UDP, else nullptr.
  NatT* of(const Sa& sa) noexcept {
    if (sa.ref.index >= bySlot_.size()) return nullptr;
    NatT& n = bySlot_[sa.ref.index];
    return n.present && n.generation == sa.ref.generation && n.type != 0 ? &n : nullptr;
  }
  const NatT* of(const Sa& sa) const noexcept { return const_cast<NattPeers*>(this)->of(sa); }
  void set(SaRef ref, const NatT& facts) {
    if (ref.index >= bySlot_.size()) bySlot_.resize(ref.index + 1);
    bySlot_[ref.index] = facts;
  }
  void forget(SaRef ref) noexcept {
    if (ref.index < bySlot_.size() && bySlot_[ref.index].generation == ref.generation) bySlot_[ref.index] = NatT{};
  }

 private:
  std::vector<NatT> bySlot_;
};

}  // namespace ipsec::forwarder
