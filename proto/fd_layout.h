// The privilege-separation table: which descriptor each child of ipsecd
// finds at which number, who is on its other end, and what losing that peer
// means. Defined once, here: ipsecd builds every child's descriptor vector
// from it (services/ipsecd/child_fds.cpp) and each service's main.cpp takes
// its descriptors by the same enum (service::takeFd), so the two cannot
// disagree on a number. The model is iked's procs[] (iked/iked.c).
//
// Numbering: the first entry of every process is its channel to ipsecd at
// descriptor 3; the others follow densely in table order. A process that
// serves crypto rings (crypto, forwarder) has one group of entries repeated
// per worker (ring memfd, request bell, completion bell): worker i's copy of
// the group starts i * groupSize after the group's start, and what follows
// the group moves up by workers * groupSize. The static_asserts at the end
// pin this for every worker count ipsecd accepts.
//
// Trust: this is plain data shared by the supervisor and the children; it
// carries no descriptor, only where one is to be found.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace ipsec::fdlayout {

inline constexpr int kFirstFd = 3;        // 0-2 are stdin, stdout/stderr (ipsecd's pipe)
inline constexpr unsigned kMaxWorkers = 16;  // service::parseArgs refuses more

// Who is on a descriptor's other end.
enum class Peer : std::uint8_t {
  kIpsecd,
  kKeydb,
  kPolicy,
  kCrypto,
  kForwarder,
  kPfkeyClients,  // the PF_KEY listening socket: setkey, key managers, the preload
  kNetwork,       // TUN and raw/UDP sockets: the kernel and whatever the network sends
};

// What the loss of the peer (its channel closing, the process dying) means.
enum class OnClose : std::uint8_t {
  // The holder exits and ipsecd stops everything: the SAD or SPD can no
  // longer be trusted to be whole. Never fail open.
  kFailClosed,
  // The holder (crypto or forwarder) exits; ipsecd restarts crypto and the
  // forwarder as a unit, with fresh rings and channels.
  kRestartDataPlane,
  // The holder (keydb or policy) carries on; when ipsecd has restarted the
  // data plane it sends a DataPlaneRestarted message carrying the
  // replacements of every such entry, in table order.
  kAwaitReplacement,
  // A kernel object the holder keeps for its life: nothing on the other end
  // can close it.
  kHeldForLife,
};

template <class Id>
struct Entry {
  Id id;
  std::string_view name;  // as errors and logs say it: "keydb channel", "ring memfd"
  Peer peer;
  OnClose onClose;
  bool perWorker;         // a member of the group repeated per crypto worker
  std::string_view role;  // one line: what travels on it
};

template <class Id, std::size_t N>
struct Layout {
  std::string_view process;  // the binary's name
  std::array<Entry<Id>, N> entries;  // in the enum's order

  static constexpr std::size_t index(Id id) { return static_cast<std::size_t>(id); }
  constexpr const Entry<Id>& operator[](Id id) const { return entries[index(id)]; }

  constexpr std::size_t groupStart() const {
    for (std::size_t i = 0; i < N; ++i) {
      if (entries[i].perWorker) return i;
    }
    return N;
  }
  constexpr std::size_t groupSize() const {
    std::size_t n = 0;
    for (const auto& e : entries) n += e.perWorker ? 1 : 0;
    return n;
  }

  // How many descriptors the process receives (3 .. 3 + count - 1).
  constexpr int count(unsigned workers) const {
    return static_cast<int>(N - groupSize() + workers * groupSize());
  }

  // The number of entry id (for a group member: of worker `worker`'s copy).
  // The caller keeps worker < workers; a member's number without a worker is
  // worker 0's.
  constexpr int number(Id id, unsigned workers, unsigned worker = 0) const {
    const std::size_t i = index(id);
    const std::size_t start = groupStart(), size = groupSize();
    if (i < start) return kFirstFd + static_cast<int>(i);
    if (entries[i].perWorker) return kFirstFd + static_cast<int>(start + worker * size + (i - start));
    return kFirstFd + static_cast<int>(i - size + workers * size);
  }
};

// ---- ipsec-keydb ------------------------------------------------------------
enum class KeydbFd : std::uint8_t { kIpsecd, kPolicy, kCrypto, kForwarder };
inline constexpr Layout<KeydbFd, 4> kKeydb{
    "ipsec-keydb",
    {{
        {KeydbFd::kIpsecd, "ipsecd channel", Peer::kIpsecd, OnClose::kFailClosed, false,
         "stop, stats, sysctl; new data-plane channels after a restart"},
        {KeydbFd::kPolicy, "policy channel", Peer::kPolicy, OnClose::kFailClosed, false,
         "SAD requests in, replies and expires out"},
        {KeydbFd::kCrypto, "crypto channel", Peer::kCrypto, OnClose::kAwaitReplacement, false,
         "sessions with keys out, session results and IV requests in"},
        {KeydbFd::kForwarder, "forwarder channel", Peer::kForwarder, OnClose::kAwaitReplacement, false,
         "SA metadata without keys and sequence grants out, sequence requests and usage in"},
    }}};

// ---- ipsec-policy -----------------------------------------------------------
enum class PolicyFd : std::uint8_t { kIpsecd, kKeydb, kForwarder, kPfkeyListen };
inline constexpr Layout<PolicyFd, 4> kPolicy{
    "ipsec-policy",
    {{
        {PolicyFd::kIpsecd, "ipsecd channel", Peer::kIpsecd, OnClose::kFailClosed, false,
         "stop, stats, sysctl; a new forwarder channel after a data-plane restart"},
        {PolicyFd::kKeydb, "keydb channel", Peer::kKeydb, OnClose::kFailClosed, false,
         "SAD requests (PolicyToKeydb) out, replies and expires (KeydbToPolicy) in"},
        {PolicyFd::kForwarder, "forwarder channel", Peer::kForwarder, OnClose::kAwaitReplacement, false,
         "the SPD (PolicyToForwarder) out, ACQUIREs (ForwarderToPolicy) in"},
        {PolicyFd::kPfkeyListen, "PF_KEY listening socket", Peer::kPfkeyClients, OnClose::kHeldForLife, false,
         "SOCK_SEQPACKET at <runtime_dir>/pfkey, bound by ipsecd; clients are accept4'ed from it"},
    }}};

// ---- ipsec-crypto -----------------------------------------------------------
enum class CryptoFd : std::uint8_t { kIpsecd, kKeydb, kRingMemfd, kRequestBell, kCompletionBell };
inline constexpr Layout<CryptoFd, 5> kCrypto{
    "ipsec-crypto",
    {{
        {CryptoFd::kIpsecd, "ipsecd channel", Peer::kIpsecd, OnClose::kRestartDataPlane, false,
         "stop, stats, sysctl"},
        {CryptoFd::kKeydb, "keydb channel", Peer::kKeydb, OnClose::kRestartDataPlane, false,
         "sessions with keys and IV grants in, session results and IV requests out"},
        {CryptoFd::kRingMemfd, "ring memfd", Peer::kForwarder, OnClose::kRestartDataPlane, true,
         "the worker's shared region: request and completion rings, buffer pool"},
        {CryptoFd::kRequestBell, "request bell", Peer::kForwarder, OnClose::kRestartDataPlane, true,
         "eventfd the worker sleeps on; the forwarder rings it"},
        {CryptoFd::kCompletionBell, "completion bell", Peer::kForwarder, OnClose::kRestartDataPlane, true,
         "eventfd the worker rings when the forwarder sleeps"},
    }}};

// ---- ipsec-forwarder --------------------------------------------------------
enum class ForwarderFd : std::uint8_t {
  kIpsecd, kKeydb, kPolicy, kTun, kEsp4, kEsp6, kAh4, kAh6, kUdp4, kUdp6,
  kRingMemfd, kRequestBell, kCompletionBell,
  kHeaderIncluded4, kHeaderIncluded6, kEspRing4, kPacket4, kRouteNetlink,
};
inline constexpr Layout<ForwarderFd, 18> kForwarder{
    "ipsec-forwarder",
    {{
        {ForwarderFd::kIpsecd, "ipsecd channel", Peer::kIpsecd, OnClose::kRestartDataPlane, false,
         "stop, stats, sysctl (net.inet.esp.enable, net.inet.ipsec.debug, natt_keepalive_interval, ...)"},
        {ForwarderFd::kKeydb, "keydb channel", Peer::kKeydb, OnClose::kRestartDataPlane, false,
         "SA metadata without keys and sequence grants in, usage and sequence requests out"},
        {ForwarderFd::kPolicy, "policy channel", Peer::kPolicy, OnClose::kRestartDataPlane, false,
         "SPD entries in, ACQUIREs out"},
        {ForwarderFd::kTun, "TUN", Peer::kNetwork, OnClose::kHeldForLife, false, "inner packets, both ways"},
        {ForwarderFd::kEsp4, "raw ESP/IPv4 socket", Peer::kNetwork, OnClose::kHeldForLife, false,
         "outer ESP in (out: our own IPv4 header, on the header-included socket)"},
        {ForwarderFd::kEsp6, "raw ESP/IPv6 socket", Peer::kNetwork, OnClose::kHeldForLife, false,
         "outer ESP, both ways"},
        {ForwarderFd::kAh4, "raw AH/IPv4 socket", Peer::kNetwork, OnClose::kHeldForLife, false,
         "AH in; AH goes out on the header-included sockets"},
        {ForwarderFd::kAh6, "raw AH/IPv6 socket", Peer::kNetwork, OnClose::kHeldForLife, false,
         "AH in, the extension headers before AH as control messages"},
        {ForwarderFd::kUdp4, "NAT-T UDP/IPv4 socket", Peer::kNetwork, OnClose::kHeldForLife, false,
         "ESP in UDP (RFC 3948) both ways (out: GSO runs, DF per run by IP_MTU_DISCOVER), keepalives; IKE only "
         "when no IKE daemon shares the port"},
        {ForwarderFd::kUdp6, "NAT-T UDP/IPv6 socket", Peer::kNetwork, OnClose::kHeldForLife, false,
         "ESP in UDP (RFC 3948) both ways, keepalives; IKE only when no IKE daemon shares the port"},
        {ForwarderFd::kRingMemfd, "ring memfd", Peer::kCrypto, OnClose::kRestartDataPlane, true,
         "the worker's shared region: request and completion rings, buffer pool"},
        {ForwarderFd::kRequestBell, "request bell", Peer::kCrypto, OnClose::kRestartDataPlane, true,
         "eventfd the forwarder rings when the worker sleeps"},
        {ForwarderFd::kCompletionBell, "completion bell", Peer::kCrypto, OnClose::kRestartDataPlane, true,
         "eventfd the forwarder waits on for completions"},
        {ForwarderFd::kHeaderIncluded4, "header-included IPv4 socket", Peer::kNetwork, OnClose::kHeldForLife, false,
         "send only: transport-mode ESP with the host's header, AH, IPv4 tunnel ESP (DF), fragments (ESP in UDP too)"},
        {ForwarderFd::kHeaderIncluded6, "header-included IPv6 socket", Peer::kNetwork, OnClose::kHeldForLife, false,
         "send only: transport-mode ESP with the host's header and extension headers, AH"},
        {ForwarderFd::kEspRing4, "ESP/IPv4 packet ring", Peer::kNetwork, OnClose::kHeldForLife, false,
         "plain ESP/IPv4 in, mapped TPACKET_V2 frames (esp_ring), its ring renewed for each data-plane start; an "
         "idle eventfd when off"},
        {ForwarderFd::kPacket4, "ESP/IPv4 packet socket", Peer::kNetwork, OnClose::kHeldForLife, false,
         "send only: plain tunnel ESP/IPv4 to the next hop's MAC (esp_send = packet), PACKET_QDISC_BYPASS, protocol 0 "
         "(takes nothing in); an idle eventfd when off"},
        {ForwarderFd::kRouteNetlink, "route netlink socket", Peer::kNetwork, OnClose::kHeldForLife, false,
         "route and neighbour lookups and their change notifications for the next-hop cache (esp_send = packet); "
         "read-only: a change asked for is refused without CAP_NET_ADMIN; made anew for each data-plane start; an "
         "idle eventfd when off"},
    }}};

// A multi-queue TUN (forwarder_threads > 1): queue 0 is kTun; queues 1..N-1
// follow the whole table, one each, so they move with it and no entry moves
// for them (N = 1 passes none).
constexpr int tunQueueNumber(unsigned workers, unsigned queue) {
  return kFirstFd + kForwarder.count(workers) + static_cast<int>(queue) - 1;
}

// The layout of the process whose descriptors an enum names (service::takeFd).
constexpr const auto& layoutOf(KeydbFd) { return kKeydb; }
constexpr const auto& layoutOf(PolicyFd) { return kPolicy; }
constexpr const auto& layoutOf(CryptoFd) { return kCrypto; }
constexpr const auto& layoutOf(ForwarderFd) { return kForwarder; }

// ---- what the layouts promise -------------------------------------------------
namespace check {

// Entries in enum order, the ipsecd channel first, the group (if any) in one run.
template <class Id, std::size_t N>
constexpr bool wellFormed(const Layout<Id, N>& l) {
  for (std::size_t i = 0; i < N; ++i) {
    if (Layout<Id, N>::index(l.entries[i].id) != i || l.entries[i].name.empty()) return false;
  }
  if (l.entries[0].peer != Peer::kIpsecd || l.entries[0].perWorker) return false;
  const std::size_t start = l.groupStart();
  for (std::size_t i = start; i < start + l.groupSize(); ++i) {
    if (i >= N || !l.entries[i].perWorker) return false;
  }
  return true;
}

// Every number from 3 to 3 + count - 1 taken exactly once.
template <class Id, std::size_t N>
constexpr bool dense(const Layout<Id, N>& l, unsigned workers) {
  constexpr int kMaxCount = 3 * static_cast<int>(kMaxWorkers) + static_cast<int>(N);
  std::array<int, kMaxCount> seen{};
  const int count = l.count(workers);
  if (count > kMaxCount) return false;
  for (const auto& e : l.entries) {
    for (unsigned w = 0; w < (e.perWorker ? workers : 1u); ++w) {
      const int slot = l.number(e.id, workers, w) - kFirstFd;
      if (slot < 0 || slot >= count || seen[static_cast<std::size_t>(slot)]++ != 0) return false;
    }
  }
  for (int i = 0; i < count; ++i) {
    if (seen[static_cast<std::size_t>(i)] != 1) return false;
  }
  return true;
}

template <class Id, std::size_t N>
constexpr bool denseForEveryWorkerCount(const Layout<Id, N>& l) {
  for (unsigned w = 1; w <= kMaxWorkers; ++w) {
    if (!dense(l, w)) return false;
  }
  return true;
}

}  // namespace check

static_assert(check::wellFormed(kKeydb) && check::denseForEveryWorkerCount(kKeydb));
static_assert(check::wellFormed(kPolicy) && check::denseForEveryWorkerCount(kPolicy));
static_assert(check::wellFormed(kCrypto) && check::denseForEveryWorkerCount(kCrypto));
static_assert(check::wellFormed(kForwarder) && check::denseForEveryWorkerCount(kForwarder));
static_assert(kForwarder.groupSize() == 3 && kCrypto.groupSize() == 3, "ring memfd, request bell, completion bell");
// The numbers clients outside this table rely on (the hostile-forwarder test
// hands a forwarder its descriptors by hand): they must not move.
static_assert(kForwarder.number(ForwarderFd::kTun, 1) == 6 && kForwarder.number(ForwarderFd::kRingMemfd, 2, 1) == 16 &&
              kForwarder.number(ForwarderFd::kHeaderIncluded4, 2) == 19);

}  // namespace ipsec::fdlayout
