// ipsec-forwarder: the only process that parses packets from the network, and
// so the one that holds no key and can open nothing.
//
// Pipeline, one thread, every stage in bursts:
//   outbound: TUN read → inner parse → SPD(out) → SA → sequence number →
//             ESP header/trailer in place → seal request on a crypto ring
//             → completion → sendmmsg on the raw ESP socket, or for a NAT-T
//             SA on the UDP socket to (dst, natTDport) (RFC 3948)
//   inbound:  recvmmsg on the raw ESP sockets, or on the NAT-T UDP sockets
//             (keepalives counted and dropped, IKE without a daemon dropped)
//             → SPI lookup → the SA must agree on encapsulation → replay
//             pre-check → open request → completion: ICV good → a changed
//             NAT mapping reported → replay update → strip → SPD(in) check
//             of the inner packet → TUN write
// Ordering: sequence numbers are assigned here in TUN order; a crypto worker
// completes its ring in order, so one SA's packets leave in order per worker.
// Buffers live in the shared pool of the worker they were taken from; a
// buffer's context (what it is, for which SA) is kept here, in private memory,
// indexed by buffer: the broker only echoes the descriptor back.
#pragma once

#include <utility>  // before asio (Boost 1.74 with GCC 12)

#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <atomic>
#include <boost/asio.hpp>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

#include "control/channel.h"
#include "control/unique_fd.h"
#include "counters.h"
#include "ah/ah.h"
#include "esp/transport.h"
#include "esp/pmtu.h"
#include "esp/nat_oa.h"
#include "esp/udp_encap.h"
#include "esp/udp_gro.h"
#include "ipcomp/ipcomp.h"
#include "proto/ring_abi.h"
#include "ring/doorbell.h"
#include "ring/endpoints.h"
#include "ring/pool.h"
#include "ring/region.h"
#include "proto/supervisor.capnp.h"
#include "esp_in.h"
#include "esp_out.h"
#include "gro_open.h"
#include "held_packets.h"
#include "inbound_open.h"
#include "ipcomp_sas.h"
#include "natt_peers.h"
#include "offload/coalesce.h"
#include "offload/segment.h"
#include "tables.h"
#include "thread_link.h"
#include "burst.h"
#include "next_hop.h"
#include "crypto_worker.h"
#include "send_batch.h"
#include "super_frame.h"
#include "super_send.h"
#include "tunnel_frame.h"
#include "tunnel_options.h"
#include "outbound_frame.h"
#include "parked_udp.h"
#include "ah_sign.h"
#include "transport_frame.h"

namespace ipsec::forwarder {

using control::UniqueFd;

struct WorkerFds {
  UniqueFd region, requestBell, completionBell;
};

// One member per entry of proto/fd_layout.h's kForwarder (main.cpp takes them by entry).
struct Fds {
  UniqueFd keydb, policy, tun, raw4, raw6;
  UniqueFd ah4, ah6;      // raw AH, read by ah.cpp
  UniqueFd udp4, udp6;  // NAT-T: ESP in UDP on natt_port, received and sent (gro.cpp)
  // Header-included, send-only: our own IPv4/IPv6 headers (plain ESP over
  // IPv4 with its per-SA DF, fragments, transport mode, AH).
  UniqueFd hdr4, hdr6;
  // Plain ESP/IPv4 in through a PACKET_RX_RING (esp_ring_reader.cpp); an
  // idle eventfd, or none, when the ring is off.
  UniqueFd espRing4;
  // esp_send = packet (next_hop.h): plain tunnel ESP/IPv4 sent to the next
  // hop's MAC, and the netlink socket that finds it; idle eventfds when off.
  UniqueFd packet4;
  UniqueFd routeNetlink;
  std::vector<WorkerFds> workers;
};

// One crypto request for a single segment of buffer buf, for the SA's
// session (ESP: the ESP packet; AH: the whole canonicalised IP packet, its
// ICV at icvOffset). The cookie is the buffer index: the completion is
// matched against our private context for that buffer, never trusted on
// its own.
proto::CryptoRequest cryptoRequest(std::uint32_t buf, const Sa& sa, proto::CryptoOp op, std::uint32_t offset,
                                   std::uint32_t length, std::uint64_t seq, std::uint16_t icvOffset = 0) noexcept;

class Forwarder {
 public:
  // SAs whose own counters one stats answer lists (fillStats): ipsecctl's
  // phrase for sas_not_listed names this number too.
  static constexpr std::uint64_t kMaxListedSas = 2048;
  // Room before an inner packet for the largest ESP header + IV; the kernel
  // builds the outer IP header for raw sockets.
  static constexpr std::uint32_t kHeadroom = 128;
  static constexpr std::uint32_t kTailroom = 128;
  // How long after handing a worker requests we poll for their completions
  // before sleeping on the completion bell (control.cpp serviceCompletions).
  static constexpr std::uint64_t kCompletionPollNs = 50000;
  static constexpr std::uint64_t kSeqLowWater = 1u << 14;

  // tunOffloads: the TUN carries a virtio_net_hdr and the kernel granted
  // these TUN_F_* bits (ipsecd's --tun-offloads); nullopt: a plain TUN.
  Forwarder(boost::asio::io_context& io, Fds fds, std::optional<unsigned> tunOffloads = std::nullopt);
  ~Forwarder();

  void start();
  void stop();
  void fillStats(proto::Stats::Builder out);
  void setSysctl(std::string_view name, std::int64_t value);

  // ---- Several forwarder threads (threads.cpp, thread_link.h, thread_group.cpp; issue 13 item 5) ----
  // Where this instance stands among the threads (place.peers: every
  // instance's threadLink()). Called before start().
  void joinThreads(ThreadLink::Place place);
  ThreadLink& threadLink() noexcept { return link_; }

 private:
  using Use = BufferUse;  // crypto_worker.h

  // Data path (outbound.cpp, inbound.cpp, completions.cpp, sends.cpp).
  void readTun() noexcept;
  // Every packet for the TUN (decapsulated inner packets, our own ICMP) goes
  // through here; false (counted in tun_write_errors) when it was not taken.
  // A plain TUN: written now. A TUN with offloads (tun_writer.cpp): copied
  // into the burst's write queue, written at flushTunWrites, coalesced; a
  // packet the TUN refuses then is counted in tun_write_errors and
  // tun_write_deferred_errors (its caller already counted it delivered).
  bool writeTun(std::span<const std::uint8_t> packet) noexcept;

  // TUN super-packets (issue 13 item 1; tun_reader.cpp, tun_writer.cpp).
  struct TunOffload {
    bool vnetHeader = false;  // every read and write carries a virtio_net_hdr
    bool tso = false;         // TUN_F_TSO4 and TUN_F_TSO6: TCP super-packets may be written
    bool uso = false;         // TUN_F_USO4 and TUN_F_USO6: UDP ones too
  };
  TunOffload tunOffload_;
  void setUpTunOffload(std::optional<unsigned> flags);
  // Reads through tunScratch_ (a TUN with offloads, or several workers):
  // each read is placed, segment by segment, in pool buffers of the worker
  // its first step's SA is pinned to, looked up once per read.
  void readTunScratch() noexcept;
  // False when some worker's pool could not take a whole super-packet now.
  bool tunReadRoom() const noexcept;
  void placeTunRead(std::span<std::uint8_t> read) noexcept;
  Worker& outboundWorker(std::span<const std::uint8_t> packet, const OutboundRoute& route) noexcept;
  void countVnetRefusal(offload::VnetError error) noexcept;
  // A read of the TUN: a 64 KiB super-packet behind its header, in private
  // memory (not a pool buffer: its segments go to the SA's worker's pool).
  std::vector<std::uint8_t> tunScratch_;
  // Packets for the TUN gathered over one burst (tun_writer.cpp).
  struct TunWriteQueue {
    static constexpr std::size_t kPackets = 64;
    static constexpr std::size_t kBytes = 4 * 65536;
    std::vector<std::uint8_t> bytes;   // the packets back to back, kBytes
    // A merged packet's pieces for one writev (writeMerged).
    std::array<std::uint8_t, offload::kMaxMergedHeaders> mergedHeaders{};
    std::array<std::span<const std::uint8_t>, kPackets + 1> slices{};
    std::array<iovec, kPackets + 2> iov{};
    std::array<std::span<const std::uint8_t>, kPackets> packets{};
    std::array<offload::CoalesceGroup, kPackets> groups{};
    std::size_t count = 0, used = 0;
  };
  TunWriteQueue tunWrites_;
  bool queueTunWrite(std::span<const std::uint8_t> packet) noexcept;
  // Writes the queue: super-packets of what merges, the rest alone, in order.
  void flushTunWrites() noexcept;
  // One packet behind `header`; false when the TUN refused it.
  bool writeTunWithHeader(const offload::VnetHeader& header, std::span<const std::uint8_t> packet) noexcept;
  bool writeMerged(const offload::CoalesceGroup& group, std::span<const std::span<const std::uint8_t>> burst) noexcept;
  // Takes up to kBurst buffers from w's pool and receives into them at
  // offset `at`. False when the pool had no buffer: the caller counts the
  // stall and pauses that socket.
  bool receiveBurst(Worker& w, int fd, std::uint32_t at, RecvBurst& r) noexcept;
  // Returns the unfilled buffers, sends the burst's requests; true when the
  // burst was full (more may be queued).
  bool finishBurst(Worker& w, RecvBurst& r) noexcept;
  RecvBurst recv_;

  void readRaw(int family) noexcept;
  // Plain ESP/IPv4 from the packet ring (esp_ring_reader.cpp), when ipsecd set one up.
  struct EspRing {
    std::uint8_t* base = nullptr;  // esp::kEspRingBytes, mapped shared with the kernel
    EspRing() = default;
    EspRing(const EspRing&) = delete;
    EspRing& operator=(const EspRing&) = delete;
    ~EspRing();
  };
  EspRing espRing_;
  std::unique_ptr<boost::asio::posix::stream_descriptor> espRingWatch_;
  std::uint32_t espRingHead_ = 0;  // the next frame to read
  bool espRingStalled_ = false;
  void setUpEspRing();
  void armEspRing();
  void readEspRing() noexcept;
  std::uint8_t* espRingFrame(std::uint32_t i) noexcept;
  bool espRingFrameOurs(std::uint32_t i) noexcept;
  void releaseEspRingFrame() noexcept;  // the head frame back to the kernel; the head moves on
  // esp_send = packet (packet_send.cpp): plain tunnel ESP/IPv4 to the next
  // hop's MAC on the packet socket, where the next-hop cache knows it; set up
  // on thread 0 alone, when ipsecd handed a packet socket and a netlink socket.
  std::unique_ptr<NextHops> nextHops_;
  std::unique_ptr<boost::asio::posix::stream_descriptor> netlinkWatch_;
  std::vector<std::uint8_t> netlinkDatagram_;
  void setUpPacketSend();
  void armNetlink();
  void readNetlink() noexcept;
  static bool sendNetlinkRequest(void* self, std::span<const std::uint8_t> request) noexcept;
  // The next hop's address for a plain ESP/IPv4 packet to `to`, or nullptr (the raw socket).
  const sockaddr_ll* packetAddressOf(const esp::IpAddress& to) noexcept;
  // The same for a super-packet's segments; firstRaw: its first segment goes raw (the refresh).
  const sockaddr_ll* packetAddressOfRun(const esp::IpAddress& to, bool& firstRaw) noexcept;
  // A packet the packet socket refused as too big, sent on the header-included socket instead.
  void resendRaw(const mmsghdr& m) noexcept;
  // Whole ESP/IPv4 packets (one each) on the packet socket, counted as a send batch's are.
  void sendOnPacketSocket(std::span<mmsghdr> msgs) noexcept;
  void readUdp(int family) noexcept;
  void drainCompletions(Worker& w) noexcept;
  void onSealed(Worker& w, const proto::CryptoCompletion& c) noexcept;
  void onOpened(Worker& w, const proto::CryptoCompletion& c) noexcept;
  // The tables the inbound core after the broker borrows (inbound_open.h).
  InboundTables inboundTables() noexcept {
    return {sas_, spd_, ipcompSas_, natt_, counters_, ipcompEnabled_};
  }
  // onOpened's shell: applies the core's verdict on an opened ESP packet
  // (judgeOpened) and frees or hands on the buffer.
  void applyOpened(Worker& w, std::uint32_t buf, Sa& sa, const OpenedVerdict& v) noexcept;
  // applyOpened but the buffer kept: true when a kOpenAgain verdict handed it on.
  bool applyOpenedKeep(Worker& w, std::uint32_t buf, Sa& sa, const OpenedVerdict& v) noexcept;
  // The ESP packet inside buf (a verdict's kOpenAgain) goes to the inbound
  // path again, marked as having passed the outer layer `peeled` under
  // `outer`. False when it was dropped there (counted, buffer freed).
  bool openInner(Worker& w, std::uint32_t buf, const InnerEsp& inner, StepKind peeled, SaRef outer) noexcept;
  // The checks every inbound completion (ESP open, AH verify) passes first
  // (the packet core's acceptVerified, esp_in.h). The SA, or nullptr when the
  // buffer was counted under its protocol's drop and freed.
  Sa* acceptVerified(Worker& w, const proto::CryptoCompletion& c, const BufferContext& ctx, bool sane,
                     const VerifyDrops& d) noexcept;
  void flushRequests(Worker& w, bool outbound) noexcept;
  void flushSends() noexcept;
  // Returns false when the caller should free the buffer (dropped), true when
  // it went to a ring or is held for an SA. heldSinceMs: when a held packet
  // was first held (0 for a new packet).
  bool outboundPacket(Worker& w, std::uint32_t buf, std::uint32_t len, std::uint64_t heldSinceMs = 0) noexcept;
  // The same with the packet's route already taken (on these bytes, with the tables unchanged since).
  bool outboundRouted(Worker& w, std::uint32_t buf, std::uint32_t len, const OutboundRoute& route,
                      std::uint64_t heldSinceMs = 0) noexcept;
  // One ESP tunnel SA: the framing core's verdict (tunnel_frame.h) applied.
  bool sealTunnel(Worker& w, std::uint32_t buf, std::uint32_t len, Sa& sa, const Policy& p,
                  const esp::FlowKey& flow) noexcept;
  bool holdForSa(Worker& w, std::uint32_t buf, std::uint32_t len, std::uint64_t sinceMs) noexcept;
  // `r` is one of p.requests: the one without an SA, which the ACQUIRE names.
  void requestAcquire(const Policy& p, const Request& r, const esp::FlowKey& flow) noexcept;
  void releaseHeld() noexcept;
  void expireHeld() noexcept;
  // pin: the packet may move to its SA's worker (worker_pin.cpp); false for
  // a bundle's inner layer, whose caller goes on with the same buffer.
  void inboundPacket(Worker& w, std::uint32_t buf, std::uint32_t len, const Outer& outer, bool pin = false) noexcept;
  NatT* natTOf(const Sa& sa) noexcept;
  void reportNatMapping(Sa& sa, NatT& nat, const esp::UdpEndpoint& from) noexcept;
  void sendKeepalives() noexcept;
  std::uint8_t* bufferData(Worker& w, std::uint32_t buf) noexcept;
  std::optional<std::uint32_t> allocBuffer(Worker& w) noexcept;
  void freeBuffer(Worker& w, std::uint32_t buf) noexcept;
  Worker& nextWorker() noexcept;
  // SAs pinned to crypto workers (worker_pin.cpp).
  Worker& workerFor(const Sa& sa) noexcept;
  // The SA the packet's policy's first step would take now, or nullptr.
  const Sa* firstStepSa(std::span<const std::uint8_t> packet) noexcept;
  // buf[at, at+len) of `from` copied into a fresh buffer of `to`, the original
  // freed; nullopt (counted, nothing freed) when `to` has no free buffer.
  bool pinRoom() const noexcept;  // every worker can take a burst moved to it (worker_pin.cpp)
  std::optional<std::uint32_t> moveToWorker(Worker& from, std::uint32_t buf, std::uint32_t at, std::uint32_t len,
                                            Worker& to, bool outbound) noexcept;
  void flushAllRequests(bool outbound) noexcept;
  void armTun();
  void armRaw(int family);
  void armUdp(int family);
  void armKeepalives();
  // Starts the usage tick if it is not running (control.cpp sendUsage).
  void armUsage() noexcept;
  void armBell(Worker& w);
  void serviceCompletions(Worker& w);
  void pollCompletions(Worker& w);
  void maybeRequestSeq(Sa& sa) noexcept;

  // The outbound cores after the route (transport_frame.h, ah_sign.h,
  // bundle_frame.h) return a verdict; applyFrame is their shell (bundle.cpp):
  // a drop or too-big counted (ICMP quoting the MTU to `packet`'s sender), a
  // hold, or the crypto request queued with the buffer's context. True when
  // the buffer went to a ring or was held; false: the caller frees it.
  struct OutboundOrigin {
    const Policy* policy = nullptr;  // with flow: the policy an ACQUIRE names (nullptr: after a seal)
    const esp::FlowKey* flow = nullptr;
    std::uint64_t heldSinceMs = 0;
  };
  bool applyFrame(Worker& w, std::uint32_t buf, const FrameVerdict& v, std::span<const std::uint8_t> packet,
                  const OutboundOrigin& from) noexcept;
  OutboundTables outboundTables() noexcept {
    return {sas_, tunnels_, natt_, ipcompSas_, espEnabled_, ahEnabled_, ipcompEnabled_};
  }
  // ESP transport mode (transport.cpp): p, for an IPComp request in transport mode.
  bool outboundTransport(Worker& w, std::uint32_t buf, std::uint32_t len, Sa& sa, const Policy* p = nullptr) noexcept;
  void queueTransportSend(Worker& w, const proto::CryptoCompletion& c, const Sa& sa) noexcept;
  // ... a kNatT verdict: ESP on the NAT-T socket of its family (transport.cpp).
  void queueTransportUdp(Worker& w, std::uint32_t buf, const TransportSend& s, const Sa& sa) noexcept;
  static esp::NatOriginalAddresses natOriginalAddresses(proto::SaParams::Reader p);
  static std::uint8_t hopLimitOf(const msghdr& m) noexcept;

  // IPComp SAs have no session: their own table (ipcomp_sas.h).
  static bool isIpcompInstall(proto::SaInstall::Reader msg) noexcept { return IpcompSas::isInstall(msg); }
  bool installIpcomp(proto::SaInstall::Reader msg) { return ipcompSas_.install(msg); }
  bool removeIpcomp(SaRef ref) noexcept { return ipcompSas_.remove(ref); }
  IpcompSas ipcompSas_;
  bool ipcompEnabled_ = true;
  // A kBundle route (AH alone, ESP+AH, ESP in ESP; bundle.cpp): the core's
  // first stage applied. A seal completed with a next step: runNextStep.
  bool outboundBundle(Worker& w, std::uint32_t buf, std::uint32_t len, const Policy& p, const esp::FlowKey& flow,
                      std::uint64_t heldSinceMs) noexcept;
  void runNextStep(Worker& w, const proto::CryptoCompletion& c) noexcept;

  // AH, RFC 4302 (ah.cpp): tunnel and transport mode, IPv4 and IPv6, on
  // the raw AH sockets (in) and the header-included sockets (out).
  static bool isAhInstall(proto::SaInstall::Reader msg) noexcept;
  std::optional<std::string> installAh(proto::SaInstall::Reader msg);
  void startAh();
  void armAh(int family);
  void readAh(int family) noexcept;
  void restartStalledAh() noexcept;
  void restartStalledReads() noexcept;  // completions.cpp: TUN, outer sockets, ESP ring
  void inboundAh(Worker& w, std::uint32_t buf, std::uint32_t start, std::uint32_t length, std::uint8_t tos) noexcept;
  void onAhDone(Worker& w, const proto::CryptoCompletion& c) noexcept;
  void onAhSigned(Worker& w, const proto::CryptoCompletion& c) noexcept;
  void onAhVerified(Worker& w, const proto::CryptoCompletion& c) noexcept;
  std::uint64_t& ahInDrop(ah::AhError error) noexcept;
  std::unique_ptr<boost::asio::posix::stream_descriptor> ah4Watch_, ah6Watch_;
  bool ah4Stalled_ = false, ah6Stalled_ = false;
  bool ahEnabled_ = true;
  std::uint16_t ahIpId_ = 1;  // outer IPv4 Identification: covered by the ICV, so ours
  std::uint16_t offerAhIpId() const noexcept;  // the next one, offered to the AH core (ah_sign.h AhOut)

  // Tunnel details (tunnel_options.h: per-SA DF policy, path MTU, TFC,
  // dummies, the sysctls, the ICMP rate limit; pmtu.cpp sends).
  TunnelOptionsTable tunnels_;
  TunnelOptions* tunnelOf(const Sa& sa) noexcept { return tunnels_.of(sa); }
  void installTunnelOptions(SaRef ref, proto::SaInstall::Reader msg) { tunnels_.install(ref, msg.getParams()); }
  void removeTunnelOptions(SaRef ref) noexcept { tunnels_.remove(ref); }
  // What the framing core (tunnel_frame.h) is lent of an SA's tunnel.
  TunnelFacts tunnelFacts(const Sa& sa, const TunnelOptions*) noexcept {
    return tunnels_.facts(sa, natTOf(sa) != nullptr);
  }
  // ICMP too-big to the TUN, quoting mtu, rate-limited.
  void sendTooBig(std::span<const std::uint8_t> inner, std::size_t mtu) noexcept;
  // After an ESP tunnel seal: the send the core decides (tunnel_send.h
  // finishTunnelSeal), queued on its socket's batch or sent in fragments (completions.cpp).
  void queueTunnelSend(Worker& w, const proto::CryptoCompletion& c, const Sa& sa) noexcept;
  // ah: counted as AH (its packet signed before it was cut, ah.cpp).
  bool sendFragments(std::span<const std::uint8_t> packet, std::size_t mtu, const esp::IpAddress& dst,
                     bool ah = false) noexcept;
  void sendDummies() noexcept;
  std::uint16_t outerIpId_ = 1;
  std::uint32_t fragmentId_ = 1;
  static constexpr std::uint32_t kIcmpPerSecond = 100;
  esp::IcmpRateLimit icmpLimit_{kIcmpPerSecond};
  std::array<std::uint8_t, 1280> icmpScratch_{};
  // One packet's fragments, sent with one sendmmsg (two iovecs each: the
  // fragment's header, then its slice of the packet in the pool buffer).
  static constexpr std::size_t kMaxFragments = 48;
  std::array<esp::Fragment, kMaxFragments> fragments_{};
  MessageBatch<kMaxFragments, 0, 2> fragmentSend_;  // no control messages: our own headers

  // Control (control.cpp).
  bool onKeydb(capnp::MessageReader& m, std::vector<UniqueFd>& fds);
  void removeSaEntry(SaRef ref);
  bool onPolicy(capnp::MessageReader& m, std::vector<UniqueFd>& fds);
  void sendUsage();

  boost::asio::io_context& io_;
  Fds fds_;
  std::unique_ptr<control::Channel> keydb_, policy_;
  boost::asio::posix::stream_descriptor tunWatch_, raw4Watch_, raw6Watch_, udp4Watch_, udp6Watch_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::size_t nextWorker_ = 0;
  boost::asio::steady_timer usageTimer_;
  boost::asio::steady_timer keepaliveTimer_;
  std::int64_t keepaliveIntervalS_ = 20;  // net.inet.ipsec.natt_keepalive_interval, 0 = off
  std::uint64_t lastKeepaliveMs_ = 0;
  bool usageArmed_ = false;          // usageTimer_ waits (control.cpp armUsage)
  std::uint64_t lastUsageTotal_ = 0;  // what the last usage tick saw (sendUsage)
  NattPeers natt_;  // NAT-T facts by SA slot (natt_peers.h)

  SaTable sas_;
  Spd spd_;
  Counters counters_;
  bool espEnabled_ = true;
  bool stopped_ = false;
  // Reading stopped for want of a buffer; completions restart it.
  bool tunStalled_ = false;
  bool raw4Stalled_ = false;
  bool raw6Stalled_ = false;
  bool udp4Stalled_ = false;
  bool udp6Stalled_ = false;

  // Packets that matched an ipsec policy before its SA existed (an ACQUIRE
  // is out for them): held a few seconds, then dropped and counted (held_packets.h).
  using Held = HeldPackets<Worker>;
  static constexpr std::uint64_t kHoldMs = Held::kHoldMs;
  Held held_;
  // Per (policy, request, addresses): when it was last asked for (tables.h).
  AcquireTimes acquireTimes_;
  // Set while releaseHeld() gives the held packets another pass.
  bool rerunningHeld_ = false;

  // The batch, flushed first when full: room for one more datagram.
  SendBatch& queueSend(SendBatch& b) noexcept {
    if (b.count == kBurst) flushSendBatch(b);
    return b;
  }
  SendBatch send4_, send6_;        // raw ESP
  SendBatch sendUdp4_, sendUdp6_;  // ESP in UDP, on the NAT-T sockets
  // ESP in UDP over IPv4 from a source port other than the NAT-T socket's:
  // our own IPv4 and UDP header on the header-included socket (queueTunnelSend).
  SendBatch sendUdpOwnHeader4_;
  SendBatch sendHdr4_, sendHdr6_;  // transport mode, header included
  SendBatch sendAh4_, sendAh6_;    // AH, header included (ah.cpp)
  SendBatch sendPacket4_;          // plain tunnel ESP/IPv4 on the packet socket (esp_send = packet)
  SendBatch keepalive4_, keepalive6_;  // NAT keepalives, on the NAT-T sockets (sendKeepalives)
  void flushSendBatch(SendBatch& b) noexcept;
  // Sends b's datagrams [first, first + count) one each (refused ones counted in out_drop_send,
  // or natt_out_keepalive_errors for keepalives).
  void sendEach(SendBatch& b, std::size_t first, std::size_t count) noexcept;
  // Sends msgs [first, end) on fd, message k carrying segments[k] ESP packets
  // (more than one: a UDP_SEGMENT message), counting what left and what was
  // refused. Stops at a refused UDP_SEGMENT message, returned (counted in
  // natt_out_gso_fallback) for its caller to send one datagram at a time;
  // msgs.size() when every message was dealt with.
  std::size_t sendSegmented(int fd, std::span<mmsghdr> msgs, const std::uint8_t* segments, std::size_t first,
                            bool udp) noexcept;

  // UDP GRO/GSO on the NAT-T sockets (gro.cpp; net.inet.ipsec.udp_gro, udp_gso).
  // One datagram of the UDP sockets, or one segment of a coalesced one: what
  // readUdp did for every datagram before GRO.
  void udpSegment(Worker& w, std::uint32_t buf, std::uint32_t len, const esp::UdpControl& ctl,
                  const std::optional<esp::UdpEndpoint>& peer) noexcept;
  // Handles d; false (nothing done) when a coalesced d needs more free
  // buffers than there are now. A uniform d is opened in place as one
  // request (openGroAsOne); otherwise segment 0 stays in d.buf, the others are
  // copied into buffers of their own first, then all are handled in order.
  bool udpDatagram(const UdpDatagram& d) noexcept;
  // A GRO datagram opened in place as one multi-segment request (gro_open.h);
  // false (nothing done, the split reason counted) when it must be split.
  bool openGroAsOne(const UdpDatagram& d) noexcept;
  GroSegments groPlan_{};  // planGroOpen's scratch, copied to the buffer's worker
  // The completion of such a request: each segment judged in order, applied
  // as onOpened applies one packet's verdict.
  void onOpenedSegments(Worker& w, const proto::CryptoCompletion& c) noexcept;
  // An opened segment judged in a buffer of its own (GroSegmentVerdict::kOnACopy).
  void judgeOnACopy(Worker& w, std::span<const std::uint8_t> segment, Sa& sa, const OpenedFrom& from) noexcept;
  ParkedUdp parked4_, parked6_;  // per NAT-T socket (parked_udp.h)
  // True once nothing is parked.
  bool resumeParked(ParkedUdp& parked) noexcept;
  void setUdpGro(bool on) noexcept;
  // b's datagrams [first, first + count) with udp_gso on: runs of same-size
  // packets to one peer (same control messages) leave as one UDP_SEGMENT send.
  void flushGso(SendBatch& b, std::size_t first, std::size_t count) noexcept;
  // ESP in UDP over IPv4 on the NAT-T socket (gro.cpp): ESP packet `esp` of
  // w's buffer buf to the SA's peer, from the SA's source address, with this
  // TOS, DF bit and (transport mode) TTL.
  struct Udp4Send {
    std::uint16_t dport = 0;
    std::uint8_t tos = 0;
    bool dontFragment = false;
    std::uint8_t ttl = 0;  // 0: the socket's
  };
  void queueUdp4(Worker& w, std::uint32_t buf, std::span<std::uint8_t> esp, const Sa& sa, const Udp4Send& s) noexcept;
  // Whether the NAT-T socket can send for this SA: its port is the SA's source port, and the SA has a peer port.
  bool udp4Sends(const NatT& nat) const noexcept { return sendsOnUdp4Socket(nat, udp4Port_); }
  // sendUdp4_ in runs of one DF bit, each after setting the socket's
  // IP_MTU_DISCOVER (only when it changes); through flushGso with udp_gso on.
  void flushUdp4(SendBatch& b) noexcept;
  bool setUdp4DontFragment(bool on) noexcept;
  std::uint16_t udp4Port_ = 0;           // the IPv4 NAT-T socket's port (natt_port)
  std::optional<bool> udp4DontFragment_;  // its IP_MTU_DISCOVER as last set by us: DF or not
  bool udpGro_ = false, udpGso_ = false;
  std::array<std::uint32_t, esp::kMaxGroSegments> groBufs_{};
  GsoBatch gso_;  // flushGso's messages (send_batch.h)

  // ---- Several forwarder threads: the shell around link_ (threads.cpp) ----
  ThreadLink link_;
  // True when the read belongs to another thread's SA and was handed to it
  // (or dropped, counted, when its queue was full); tun_reader.cpp placeTunRead.
  bool handOffTunRead(std::span<const std::uint8_t> read) noexcept;
  // The same for an inbound packet of w's buffer buf whose SA is `sa` (inbound.cpp inboundPacket); frees buf when true.
  bool handOffInbound(Worker& w, std::uint32_t buf, std::uint32_t len, const Outer& outer, const Sa& sa) noexcept;
  // Reads are made only when the queues they may hand to have room (ThreadLink::room).
  bool handoffRoom(std::size_t need) noexcept { return link_.room(need); }
  void drainHandoffs() noexcept;
  // One slot handled; false when it must wait for buffers (left in the queue).
  bool takeHandoff(HandoffSlot& slot) noexcept;
  // Control: after a keydb message is applied here, an SA of another thread
  // gets no sequence numbers on this one (it can never seal here), and
  // thread 0 passes the message on to the other threads.
  bool afterKeydb(capnp::MessageReader& m);
  bool afterPolicy(capnp::MessageReader& m);
  void startRelays();
  bool stopping() const noexcept { return stopped_ || link_.stopping(); }
  // What this thread counted (ThreadLink::Hooks::share).
  StatsShare statsShare();

  // A TUN super-packet end to end as one multi-segment request (issue 13
  // item 1; super_packet.cpp, framed by super_frame.h): routed once, its
  // segments framed back to back in one pool buffer, sealed by one request,
  // sent by one UDP_SEGMENT send (ESP in UDP) or one sendmmsg (plain ESP).
  // Segments [0, returned) of the read went this way; the caller runs the
  // rest through the per-segment path (outboundPacket).
  // `route` is the read's, taken by placeTunRead on the same bytes and tables.
  std::uint32_t placeSuperPacket(Worker& w, const offload::SegmentPlan& plan, std::span<const std::uint8_t> packet,
                                 const OutboundRoute& route) noexcept;
  void queueSuperFrame(Worker& w, std::uint32_t buf, Sa& sa, TunnelOptions* t) noexcept;
  // onSealed for a buffer whose context has segments: each segment judged by
  // the completion's fail mask, the good ones sent, the buffer freed.
  void onSealedSuper(Worker& w, const proto::CryptoCompletion& c) noexcept;
  // The good segments' messages, filled by superSend_ (super_send.h), sent on the SA's socket.
  void sendSuperUdp(Worker& w, std::uint32_t buf, const Sa& sa, const NatT& nat, std::uint64_t failed) noexcept;
  void sendSuperRaw6(Worker& w, std::uint32_t buf, const Sa& sa, std::uint64_t failed) noexcept;
  void sendSuperWithHeaders4(Worker& w, std::uint32_t buf, const Sa& sa, const NatT* nat,
                             std::uint64_t failed) noexcept;
  // Sends messages [first, first + count) of superSend_ on fd; a refused
  // UDP_SEGMENT message is sent again one segment at a time.
  void sendSuperMessages(int fd, std::size_t first, std::size_t count, bool udp) noexcept;
  SuperSend superSend_;  // a super-packet's messages (super_send.h)
};

}  // namespace ipsec::forwarder
