// ipsecd: the privileged resources the supervisor opens for its children —
// the TUN device with its addresses and routes, raw ESP/AH sockets, the
// NAT-T UDP sockets, and Unix listening sockets. Children never open these themselves (STYLE §2).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "config/config.h"
#include "control/unique_fd.h"
#include "runtime_dir.h"

namespace ipsec::supervisor {

using control::UniqueFd;

struct Tun {
  UniqueFd fd;
  std::string name;
  // With IFF_VNET_HDR: the TUN_F_* offloads the kernel granted (issue 13);
  // the forwarder is told them (--tun-offloads). Absent: a plain TUN.
  std::optional<unsigned> offloads;
  // IFF_MULTI_QUEUE (forwarder_threads > 1): queues 1..N-1 of the device, `fd` being queue 0.
  std::vector<UniqueFd> moreQueues;
};

// Creates (or attaches to) a non-persistent TUN, so the device disappears when
// the last descriptor to it closes — also when ipsecd is killed. offload:
// with IFF_VNET_HDR and the largest set of offloads the kernel grants
// (lib/offload's probe); a kernel that refuses the header gets a plain TUN,
// logged once.
// queues > 1: every queue opened with IFF_MULTI_QUEUE and the same flags
// (the header and offloads are the device's).
Tun createTun(const std::string& name, int mtu, bool offload, unsigned queues = 1);
void configureTun(const Tun& tun, const config::Config& cfg);

// Raw IPPROTO_ESP sockets; the kernel builds outer IP headers on send and
// hands us whole datagrams (IPv4 with its header, IPv6 without) on receive.
UniqueFd openRawSocket(int family, int protocol);

// Plain ESP over IPv4 through a PACKET_RX_RING (esp/esp_ring.h; config
// esp_ring): an AF_PACKET socket for IPv4 on every interface with the ring's
// filter and TPACKET_V2, not yet bound (it needs CAP_NET_RAW: made at
// set-up). An empty descriptor when the kernel refuses a step (`why` says which).
UniqueFd openEspRing4(std::string& why);
// For each data-plane start: a fresh ring on fd (the last forwarder's, which
// died with its mapping, freed: the new one reads from frame 0, where the
// kernel writes first), bound to IPv4 on every interface; then raw4 (the raw ESP/IPv4 socket) gets a filter
// that takes nothing, so that each packet is handed over once. False when
// the kernel refuses (`why`); raw4 then has no filter and takes ESP again.
bool renewEspRing4(int fd, int raw4, std::string& why);

// esp_send = packet: an AF_PACKET SOCK_DGRAM socket on which the forwarder
// sends plain tunnel ESP/IPv4 to a next hop's MAC (sockaddr_ll per message):
// protocol 0, so it takes nothing in; PACKET_QDISC_BYPASS; a 4 MiB send
// buffer as the header-included socket's. Needs CAP_NET_RAW: made at set-up.
// An empty descriptor when the kernel refuses a step (`why` says which).
UniqueFd openPacketSend4(std::string& why);
// esp_send = packet: a NETLINK_ROUTE socket subscribed to neighbour and IPv4
// route changes, on which the forwarder asks for routes and neighbours. It
// needs no privilege, and gives none: the kernel refuses any change asked
// for on it by a sender without CAP_NET_ADMIN. Nonblocking; empty and `why`
// when refused.
UniqueFd openRouteNetlink(std::string& why);

// The ESP-in-UDP socket of one family (RFC 3948) on the wildcard address and
// `port`: nonblocking, IPv6 V6ONLY, SO_REUSEPORT with the steering program of
// esp/udp_encap.h attached, so that IKE packets (non-ESP marker) go to an IKE
// daemon that binds the same port after us, addresses intact, while ESP and
// keepalives stay ours (index 0 of the group). Destination address and
// TOS/traffic class come with every datagram (pktinfo, RECVTOS/RECVTCLASS).
// Kept for ipsecd's lifetime, across data-plane restarts, so the index holds.
UniqueFd openNatTSocket(int family, unsigned port);

// A SOCK_SEQPACKET Unix listening socket `name` in dir, mode and group as
// given: bound through the directory's descriptor, created with its mode
// (no window with a wider one), a stale one replaced.
UniqueFd listenUnix(const RuntimeDir& dir, const std::string& name, unsigned mode, int gid);

// ---- transport mode (RFC 4303 §3.1.1): config transport_peers, fwmark, route_table

// SO_MARK on a socket the forwarder sends with, so that the transport rule
// (`not fwmark M`) skips its packets: ESP never loops back into the TUN.
void markSocket(int fd, std::uint32_t mark);

// A send-only IPPROTO_RAW socket (header included: IP_HDRINCL is implied for
// IPv4, IPV6_HDRINCL set for IPv6) on which the forwarder sends transport-mode
// ESP. Chosen over sending on the raw ESP socket with a pktinfo source
// because the forwarder keeps the host's own header: its source address, and
// for IPv6 the hop-by-hop/routing/fragment headers that stay in front of ESP,
// which the RFC 3542 ancillary data would allow only with CAP_NET_RAW.
UniqueFd openHeaderIncludedSocket(int family);

// The policy routing for transport_peers: a host route per peer into the TUN
// in table route_table (preferred source: the first local_addresses entry of
// the peer's family), and per family with peers the rule
// `not fwmark <fwmark> lookup <route_table>`. remove() undoes what install()
// did, best effort and without throwing; the destructor calls it. Removing
// the rule needs CAP_NET_ADMIN, which ipsecd keeps when peers are configured.
class TransportRouting {
 public:
  TransportRouting() = default;
  TransportRouting(const TransportRouting&) = delete;
  TransportRouting& operator=(const TransportRouting&) = delete;
  ~TransportRouting() { remove(); }

  void install(const config::Config& cfg, const std::string& tunName);
  void remove() noexcept;
  bool active() const noexcept { return !undo_.empty(); }

 private:
  std::vector<std::vector<std::string>> undo_;  // `ip` argument lists, run last first
};

}  // namespace ipsec::supervisor
