// ipsec-forwarder: the send after an ESP tunnel seal (RFC 4303 §3.1.2), the
// most common send of all, as a verdict of the packet core: which socket,
// which bytes, to where, with which TOS and DF bit, or a drop under its
// counter. A pure function of the SA, its NAT-T peer, what the buffer's
// context remembers, the SA's path MTU and the broker's completion; the
// shell (completions.cpp queueTunnelSend) only queues or sends what it says.
// The completion is the broker's echo of our descriptor and is checked
// against the buffer before any byte is written (tests/fuzz/forwarder/
// esp_out_fuzz). Why our own outer header for IPv4, and DF per run on the
// NAT-T socket: pmtu.cpp's opening comment.
#pragma once

#include <cstdint>
#include <span>

#include "esp/udp_encap.h"
#include "esp_in.h"  // DropReason
#include "natt_peers.h"
#include "proto/ring_abi.h"
#include "tables.h"

namespace ipsec::forwarder {

// The bytes buffer[start, start+length) leave for `to`.
struct TunnelSend {
  enum class Kind : std::uint8_t {
    kDrop,            // counted under `drop`
    kRawEsp,          // IPv6 ESP alone on the raw ESP socket, the kernel writing
                      // the header: traffic class `tos`
    kNatT,            // ESP alone on the NAT-T UDP socket of to's family, the
                      // kernel writing IP and UDP: TOS / traffic class `tos`;
                      // IPv4 also `dontFragment` (the socket's DF, per run)
    kHeaderIncluded,  // IPv4: our outer header (with UDP for natT) in front of
                      // ESP, on the header-included socket (to.port 0)
    kFragments,       // our outer header's packet cut into fragments of at
                      // most `mtu` on the header-included socket of to's family
  };
  Kind kind = Kind::kDrop;
  DropReason drop = nullptr;
  std::uint32_t start = 0, length = 0, mtu = 0;
  esp::UdpEndpoint to;
  std::uint8_t tos = 0;
  bool dontFragment = false;
  bool natT = false;          // ESP in UDP (fragments: natt_out_esp_packets once cut)
  bool tookIpv4Id = false;    // the offered outer Identification was used: the
                              // shell moves to the next (also on a drop after it)
};

// What the shell lends the decision besides the SA.
struct TunnelSendFacts {
  const NatT *nat = nullptr;   // the SA's NAT-T peer (nullptr: plain ESP)
  std::size_t pathMtu = 1500;  // TunnelOptionsTable::pathMtu
  std::uint8_t tos = 0;        // the buffer context's: outer TOS / traffic class (RFC 6040)
  bool outerDf = false;        // the buffer context's: the SA's DF policy said set
  std::uint16_t udp4Port = 0;  // the IPv4 NAT-T socket's port: it sends only an SA's with this source port
  std::uint16_t ipv4Id = 0;    // the outer Identification the header would take
};

// c: the broker's completion of sa's tunnel seal (the caller found sa still
// installed). Outside the buffer: crypto_bad_completion; failed: the broker's
// reason. A packet that fits the path MTU with its outer header (and UDP for
// NAT-T) leaves IPv6 on the kernel's socket (raw ESP, or UDP), IPv4 in UDP on
// the NAT-T socket when that socket has the SA's source port and a peer port,
// else IPv4 with our header (DF as the context says) on the header-included
// socket. One beyond the MTU is given our header without DF and cut into
// fragments. A NAT-T SA without both ports, or no room for our header in
// front of ESP: pmtu_out_drop_header.
TunnelSend finishTunnelSeal(const Sa &sa, const TunnelSendFacts &facts, std::span<std::uint8_t> buffer,
                            const proto::CryptoCompletion &c) noexcept;

}  // namespace ipsec::forwarder
