// See supervisor.h. Single-threaded: everything runs on one Asio loop.
#include <utility>  // before asio (Boost 1.74 with GCC 12)
#include <tuple>

#include "supervisor.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <boost/asio.hpp>
#include <capnp/message.h>
#include <chrono>
#include <deque>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <vector>

#include "proto/admin.capnp.h"
#include "audit/audit.h"
#include "child_fds.h"
#include "child_output.h"
#include "control/channel.h"
#include "esp/esp_ring.h"
#include "log/log.h"
#include "netsetup.h"
#include "runtime_dir.h"
#include "proto/fd_layout.h"
#include "proto/ring_abi.h"
#include "ring/region.h"
#include "sandbox/apply.h"
#include "sandbox/profile.h"
#include "spawn.h"
#include "proto/supervisor.capnp.h"

namespace ipsec::supervisor {
namespace {

namespace asio = boost::asio;
using control::Channel;
using Clock = std::chrono::steady_clock;

constexpr auto kReadyTimeout = std::chrono::seconds(10);
constexpr auto kStopGrace = std::chrono::seconds(3);
constexpr auto kStatsTimeout = std::chrono::seconds(2);

// Names in the runtime directory.
constexpr const char* kPfkeyName = "pfkey";
constexpr const char* kControlName = "control";
constexpr const char* kPidFileName = "ipsecd.pid";
constexpr const char* kEmptyDirName = "empty";  // the children's root

enum class Role { kKeydb, kPolicy, kCrypto, kForwarder };
constexpr Role kRoles[] = {Role::kKeydb, Role::kPolicy, Role::kCrypto, Role::kForwarder};

const char* roleName(Role r) {
  switch (r) {
    case Role::kKeydb: return "ipsec-keydb";
    case Role::kPolicy: return "ipsec-policy";
    case Role::kCrypto: return "ipsec-crypto";
    case Role::kForwarder: return "ipsec-forwarder";
  }
  return "?";
}

// What the child's loss means, as its table says of its channel to ipsecd:
// keydb and policy fail closed, crypto and the forwarder restart the data plane.
fdlayout::OnClose onLoss(Role r) {
  switch (r) {
    case Role::kKeydb: return fdlayout::kKeydb[fdlayout::KeydbFd::kIpsecd].onClose;
    case Role::kPolicy: return fdlayout::kPolicy[fdlayout::PolicyFd::kIpsecd].onClose;
    case Role::kCrypto: return fdlayout::kCrypto[fdlayout::CryptoFd::kIpsecd].onClose;
    case Role::kForwarder: return fdlayout::kForwarder[fdlayout::ForwarderFd::kIpsecd].onClose;
  }
  return fdlayout::OnClose::kFailClosed;
}

bool isDataPlane(Role r) { return onLoss(r) == fdlayout::OnClose::kRestartDataPlane; }

// One crypto worker's shared region and its two doorbells.
struct WorkerRing {
  ring::Region region;
  UniqueFd requestBell;     // forwarder rings the worker
  UniqueFd completionBell;  // worker rings the forwarder
};

// The descriptors that join the data plane to the control plane; made anew on
// every data-plane (re)start.
struct DataPlaneLinks {
  std::pair<UniqueFd, UniqueFd> keydbCrypto;  // first: keydb's end
  std::pair<UniqueFd, UniqueFd> keydbForwarder;
  std::pair<UniqueFd, UniqueFd> policyForwarder;
  std::vector<WorkerRing> rings;
  UniqueFd espRing4;  // the plain ESP/IPv4 packet ring, or an idle eventfd (openEspRing)
  UniqueFd packet4, routeNetlink;  // esp_send = packet, or idle eventfds (openPacketSend)
};

struct Child {
  Role role;
  pid_t pid = -1;
  bool ready = false;
  std::unique_ptr<Channel> channel;
};

class Supervisor {
 public:
  explicit Supervisor(const Options& o) : opt_(o), cfg_(o.config), signals_(io_) {}

  int run() {
    try {
      setUp();
      startAll();
    } catch (...) {
      abortStart();
      throw;
    }
    signals_.add(SIGTERM);
    signals_.add(SIGINT);
    signals_.add(SIGCHLD);
    // Not a reload signal (README: there is no reload), and its default
    // action would end ipsecd without stopping the children or cleaning up.
    ::signal(SIGHUP, SIG_IGN);
    waitSignal();
    io_.run();
    tearDown();
    return exitCode_;
  }

 private:
  // ---- set-up -------------------------------------------------------------
  // What a forwarder gets in place of a socket that is off: an eventfd that never fires.
  static UniqueFd idleEventfd(const char* what) {
    UniqueFd idle(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!idle) throw std::system_error(errno, std::generic_category(), std::string("eventfd (") + what + " placeholder)");
    return idle;
  }
  // A forwarder's own descriptor of a socket ipsecd keeps across data-plane starts.
  static UniqueFd copyOf(const UniqueFd& fd, const char* what) {
    UniqueFd copy(fcntl(fd.get(), F_DUPFD_CLOEXEC, 0));
    if (!copy) throw std::system_error(errno, std::generic_category(), std::string("dup (") + what + ")");
    return copy;
  }

  // Plain ESP/IPv4 in through the packet ring (esp_ring), or, when it is off
  // or the kernel refuses it, on the raw socket as before; the forwarder's
  // table entry then holds an eventfd that never fires. A fresh ring for
  // every data-plane start: a new forwarder reads from frame 0, where the
  // kernel writes first (a ring the last one left half read has no such place:
  // frames are filled concurrently, so their order cannot be found by a scan).
  // The socket is made at set-up (it needs CAP_NET_RAW), its ring anew here.
  void openEspRingSocket() {
    if (!cfg_.espRing) return;
    std::string why;
    espRingSocket_ = openEspRing4(why);
    if (!espRingSocket_) {
      log::warn("esp_ring: the kernel refused the packet ring ({}): plain ESP/IPv4 on the raw socket", why);
    }
  }
  UniqueFd openEspRing() {
    if (espRingSocket_) {
      std::string why;
      if (renewEspRing4(espRingSocket_.get(), raw4_.get(), why)) {
        log::info("plain ESP/IPv4 received through a packet ring ({} frames of {} bytes)", esp::kEspRingFrames,
                  esp::kEspRingFrameSize);
        return copyOf(espRingSocket_, "ESP ring");
      }
      log::warn("esp_ring: the kernel refused a new packet ring ({}): plain ESP/IPv4 on the raw socket", why);
      espRingSocket_.reset();
    }
    return idleEventfd("ESP ring");
  }

  // Plain tunnel ESP/IPv4 out on a packet socket to the next hop's MAC
  // (esp_send = packet): the socket made at set-up (CAP_NET_RAW) and lent to
  // every forwarder; the netlink socket that finds next hops made anew for
  // each (no reply meant for the last one reaches the next). Off, or refused
  // by the kernel: two idle eventfds, and ESP on the raw socket as before.
  void openPacketSendSocket() {
    if (cfg_.espSend != config::Config::EspSend::kPacket) return;
    std::string why;
    packetSocket_ = openPacketSend4(why);
    if (!packetSocket_) log::warn("esp_send: the kernel refused the packet socket ({}): ESP/IPv4 on the raw socket", why);
  }
  std::pair<UniqueFd, UniqueFd> openPacketSend() {
    if (packetSocket_) {
      std::string why;
      UniqueFd netlink = openRouteNetlink(why);
      if (netlink) {
        log::info("plain tunnel ESP/IPv4 sent on a packet socket to the next hop (esp_send = packet)");
        return {copyOf(packetSocket_, "ESP packet socket"), std::move(netlink)};
      }
      log::warn("esp_send: the kernel refused the route netlink socket ({}): ESP/IPv4 on the raw socket", why);
    }
    return {idleEventfd("ESP packet socket"), idleEventfd("route netlink")};
  }

  void setUp() {
    runtimeDir_ = RuntimeDir::open(cfg_.runtimeDir);
    emptyDir_ = runtimeDir_.pathOf(kEmptyDirName);
    sandbox::ensureEmptyDirAt(runtimeDir_.fd(), kEmptyDirName, emptyDir_);
    createdEmptyDir_ = true;

    tun_ = createTun(cfg_.tunName, static_cast<int>(cfg_.tunMtu), cfg_.tunOffload, cfg_.forwarderThreads);
    configureTun(tun_, cfg_);
    log::info("TUN {} up, mtu {}", tun_.name, cfg_.tunMtu);
    raw4_ = openRawSocket(AF_INET, IPPROTO_ESP);
    raw6_ = openRawSocket(AF_INET6, IPPROTO_ESP);
    openEspRingSocket();
    openPacketSendSocket();
    rawAh4_ = openRawSocket(AF_INET, IPPROTO_AH);
    rawAh6_ = openRawSocket(AF_INET6, IPPROTO_AH);
    // AH's ICV covers the IPv6 extension headers before AH, which the raw
    // socket strips: the forwarder rebuilds them from these control messages.
    for (int opt : {IPV6_RECVHOPOPTS, IPV6_RECVDSTOPTS, IPV6_RECVRTHDR}) {
      int on = 1;
      if (setsockopt(rawAh6_.get(), IPPROTO_IPV6, opt, &on, sizeof on) < 0) {
        throw std::system_error(errno, std::generic_category(), "raw AH/IPv6 socket: extension header options");
      }
    }
    // No raw IPComp socket: IPComp runs only inside ESP (bundle.cpp), and a
    // socket nobody reads would only be privilege the forwarder holds for nothing.
    // Shared with the IKE daemon's socket, which may have bound first
    // (openNatTSocket: one reuseport group, ESP to us, IKE to it).
    udp4_ = openNatTSocket(AF_INET, cfg_.nattPort);
    udp6_ = openNatTSocket(AF_INET6, cfg_.nattPort);
    log::info("NAT-T on UDP port {} (IPv4 and IPv6)", cfg_.nattPort);
    // Transport mode: the forwarder sends it on header-included sockets; every
    // socket it sends with carries the mark that the transport routing rule
    // skips, so that ESP itself never loops back into the TUN.
    hdr4_ = openHeaderIncludedSocket(AF_INET);
    hdr6_ = openHeaderIncludedSocket(AF_INET6);
    for (const UniqueFd* fd : {&raw4_, &raw6_, &rawAh4_, &rawAh6_, &udp4_, &udp6_, &hdr4_, &hdr6_}) {
      markSocket(fd->get(), cfg_.fwmark);
    }
    transportRouting_.install(cfg_, tun_.name);
    if (transportRouting_.active()) {
      log::info("transport mode: {} peer(s) routed into {} by table {} unless fwmark {:#x}",
                cfg_.transportPeers.size(), tun_.name, cfg_.routeTable, cfg_.fwmark);
    }

    // ipsec-policy checks each PF_KEY client's SO_PEERCRED against this group.
    if (cfg_.pfkeyGroup) {
      setenv("IPSEC_PFKEY_GROUP", std::to_string(*cfg_.pfkeyGroup).c_str(), 1);
    } else {
      unsetenv("IPSEC_PFKEY_GROUP");
    }
    pfkeyPath_ = runtimeDir_.pathOf(kPfkeyName);
    controlPath_ = runtimeDir_.pathOf(kControlName);
    // PF_KEY: root and, if configured, one group (SO_PEERCRED is checked again
    // by ipsec-policy for every client).
    pfkeyListen_ = listenUnix(runtimeDir_, kPfkeyName, cfg_.pfkeyGroup ? 0660 : 0600,
                              cfg_.pfkeyGroup ? static_cast<int>(*cfg_.pfkeyGroup) : -1);
    controlListen_ = listenUnix(runtimeDir_, kControlName, 0600, -1);
    restrictSelf();
  }

  // Everything privileged that needs the network is open now. Keep only what
  // starting, confining, signalling and auditing the children takes; the
  // children, exec'd as root, start with at most this set and drop it all.
  void restrictSelf() {
    sandbox::SandboxProfile p;
    p.name = "ipsecd";
    p.capabilities = {
        {CAP_SETUID, "children switch to their own uid"},
        {CAP_SETGID, "children switch to their own gid"},
        {CAP_SETPCAP, "children drop their bounding set"},
        {CAP_SYS_CHROOT, "children chroot into the empty directory"},
        {CAP_IPC_LOCK, "key-holding children lock their key pages"},
        {CAP_KILL, "stopping and restarting children that run under other uids"},
        {CAP_SYS_PTRACE, "ipsecctl audit reads /proc/PID of non-dumpable children"},
        {CAP_DAC_READ_SEARCH, "ipsecctl audit lists children's descriptors"},
    };
    if (transportRouting_.active()) {
      p.capabilities.push_back({CAP_NET_ADMIN, "removing the transport-mode routing rule at exit"});
    }
    sandbox::keepOnlyCapabilities(p);
  }

  // A set-up error leaves nothing behind: no child, no TUN, no socket file.
  void abortStart() {
    stopping_ = true;
    for (auto& [r, c] : children_) {
      if (c.pid <= 0) continue;
      kill(c.pid, SIGKILL);
      waitpid(c.pid, nullptr, 0);
      c.pid = -1;
    }
    tearDown();
  }

  void tearDown() {
    for (auto& [role, c] : children_) {
      if (c.channel) c.channel->close();
    }
    drainOutputs();  // the children are gone: their last lines are in the pipes
    controlListener_.reset();
    runtimeDir_.remove(kPfkeyName);
    runtimeDir_.remove(kControlName);
    runtimeDir_.remove(kPidFileName);
    if (createdEmptyDir_) runtimeDir_.removeDir(kEmptyDirName);
    transportRouting_.remove();  // before the TUN goes: its routes name the device
    // Closing our TUN descriptor, the last one now that the children are
    // gone, removes the (non-persistent) device and its routes.
    tun_.moreQueues.clear();
    tun_.fd.reset();
    log::info("stopped");
  }

  DataPlaneLinks makeLinks() {
    DataPlaneLinks l;
    l.keydbCrypto = control::makeSeqpacketPair();
    l.keydbForwarder = control::makeSeqpacketPair();
    l.policyForwarder = control::makeSeqpacketPair();
    for (unsigned i = 0; i < cfg_.cryptoWorkers; ++i) {
      WorkerRing w{ring::Region::create(ring::RegionConfig{}), UniqueFd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)),
                   UniqueFd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK))};
      if (!w.requestBell || !w.completionBell) throw std::system_error(errno, std::generic_category(), "eventfd");
      l.rings.push_back(std::move(w));
    }
    l.espRing4 = openEspRing();
    std::tie(l.packet4, l.routeNetlink) = openPacketSend();
    return l;
  }

  // ---- starting children --------------------------------------------------
  // The descriptors ipsecd holds for the children, by what they are; the
  // links' ends are made anew for every data-plane start.
  ChildEnds endsOf(DataPlaneLinks& links) const {
    ChildEnds e;
    e.keydbOfCrypto = links.keydbCrypto.first.get();
    e.cryptoOfKeydb = links.keydbCrypto.second.get();
    e.keydbOfForwarder = links.keydbForwarder.first.get();
    e.forwarderOfKeydb = links.keydbForwarder.second.get();
    e.policyOfForwarder = links.policyForwarder.first.get();
    e.forwarderOfPolicy = links.policyForwarder.second.get();
    e.pfkeyListen = pfkeyListen_.get();
    e.tun = tun_.fd.get();
    for (const auto& q : tun_.moreQueues) e.tunQueues.push_back(q.get());
    e.esp4 = raw4_.get();
    e.esp6 = raw6_.get();
    e.espRing4 = links.espRing4.get();
    e.packet4 = links.packet4.get();
    e.routeNetlink = links.routeNetlink.get();
    e.ah4 = rawAh4_.get();
    e.ah6 = rawAh6_.get();
    e.udp4 = udp4_.get();
    e.udp6 = udp6_.get();
    e.headerIncluded4 = hdr4_.get();
    e.headerIncluded6 = hdr6_.get();
    for (auto& w : links.rings) e.workers.push_back({w.region.fd(), w.requestBell.get(), w.completionBell.get()});
    return e;
  }

  void startAll() {
    auto links = makeLinks();
    auto policyKeydb = control::makeSeqpacketPair();  // first: policy's end
    ChildEnds ends = endsOf(links);
    ends.policyOfKeydb = policyKeydb.first.get();
    ends.keydbOfPolicy = policyKeydb.second.get();

    spawn(Role::kKeydb, ends, {});
    std::vector<std::string> local;  // policy judges SA directions with them (sa_direction.h)
    for (const auto& a : cfg_.localAddresses) local.insert(local.end(), {"--local-address", a.addressString()});
    spawn(Role::kPolicy, ends, local);
    spawnDataPlane(ends);
    startedAt_ = Clock::now();

    armReadyTimer("");
  }

  // Every child must say ready within kReadyTimeout, or everything stops.
  void armReadyTimer(std::string when) {
    readyTimer_ = std::make_unique<asio::steady_timer>(io_, kReadyTimeout);
    readyTimer_->async_wait([this, when](boost::system::error_code ec) {
      if (ec) return;
      for (auto& [r, c] : children_) {
        if (!c.ready) failClosed(std::string(roleName(r)) + " did not become ready" + when);
      }
    });
  }

  void spawnDataPlane(const ChildEnds& ends) {
    std::vector<std::string> workers{"--workers", std::to_string(cfg_.cryptoWorkers)};
    spawn(Role::kCrypto, ends, workers);
    // The forwarder is told what the TUN carries: the device outlives a
    // data-plane restart, and so do its header and offloads.
    if (tun_.offloads) workers.insert(workers.end(), {"--tun-offloads", std::to_string(*tun_.offloads)});
    if (cfg_.forwarderThreads > 1) {
      workers.insert(workers.end(), {"--forwarder-threads", std::to_string(cfg_.forwarderThreads)});
    }
    spawn(Role::kForwarder, ends, workers);
  }

  static std::vector<int> fdsFor(Role role, const ChildEnds& ends) {
    switch (role) {
      case Role::kKeydb: return keydbFds(ends);
      case Role::kPolicy: return policyFds(ends);
      case Role::kCrypto: return cryptoFds(ends);
      case Role::kForwarder: return forwarderFds(ends);
    }
    return {};
  }

  void spawn(Role role, ChildEnds ends, std::vector<std::string> args) {
    auto [mine, theirs] = control::makeSeqpacketPair();
    ends.ipsecd = theirs.get();
    const std::vector<int> fds = fdsFor(role, ends);
    const config::ServiceIds& ids = idsFor(role);
    args.insert(args.end(), {"--uid", std::to_string(ids.uid), "--gid", std::to_string(ids.gid), "--root", emptyDir_});
    if (cfg_.debug || debugSysctl_) args.push_back("--debug");
    auto [outRead, outWrite] = makeOutputPipe();
    ChildSpec spec{roleName(role), opt_.childDir + "/" + roleName(role), args, fds, outWrite.get()};
    Child& c = children_[role];
    c.role = role;
    c.ready = false;
    c.pid = spawnChild(spec);
    outWrite.reset();  // the child holds the only write end: its exit is the pipe's end
    relayOutput(role, c.pid, std::move(outRead));
    log::info("started {} pid {}", roleName(role), c.pid);
    c.channel = std::make_unique<Channel>(io_, std::move(mine), roleName(role));
    c.channel->start(
        [this, role](capnp::MessageReader& m, std::vector<UniqueFd>& fds) { return onChildMessage(role, m, fds); },
        [this, role](std::string_view why) { onChildChannelClosed(role, why); });
  }

  // ---- children's output (child_output.h) -----------------------------------
  // The read end non-blocking (ipsecd's loop reads it), the write end
  // blocking as stderr was: a child waits for ipsecd rather than lose lines.
  static std::pair<UniqueFd, UniqueFd> makeOutputPipe() {
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) throw std::system_error(errno, std::generic_category(), "pipe2");
    std::pair<UniqueFd, UniqueFd> ends{UniqueFd(p[0]), UniqueFd(p[1])};
    if (fcntl(p[0], F_SETFL, O_NONBLOCK) != 0) throw std::system_error(errno, std::generic_category(), "fcntl");
    return ends;
  }

  void relayOutput(Role role, pid_t pid, UniqueFd readEnd) {
    auto relay = std::make_unique<OutputRelay>(roleName(role), pid, outputCounters_, [](std::string_view line) {
      const ssize_t ignored = ::write(STDERR_FILENO, line.data(), line.size());
      (void)ignored;
    });
    auto pipe = std::make_unique<ChildOutputPipe>(io_, std::move(readEnd), std::move(relay));
    ChildOutputPipe* raw = pipe.get();
    outputs_[pid] = std::move(pipe);
    // Erased from the loop, not from inside the pipe's own handler.
    raw->start([this, pid] { asio::post(io_, [this, pid] { outputs_.erase(pid); }); });
  }

  void drainOutputs() {
    for (auto& [pid, pipe] : outputs_) pipe->drain();
    outputs_.clear();
  }

  const config::ServiceIds& idsFor(Role r) const {
    switch (r) {
      case Role::kKeydb: return cfg_.keydb;
      case Role::kPolicy: return cfg_.policy;
      case Role::kCrypto: return cfg_.crypto;
      case Role::kForwarder: return cfg_.forwarder;
    }
    return cfg_.keydb;
  }

  // ---- messages from children ---------------------------------------------
  bool onChildMessage(Role role, capnp::MessageReader& m, std::vector<UniqueFd>& fds) {
    if (!fds.empty()) return false;  // children never send us descriptors
    auto msg = m.getRoot<proto::FromService>();
    switch (msg.which()) {
      case proto::FromService::READY:
        if (children_[role].ready) return false;
        children_[role].ready = true;
        sendSysctls(role);  // a restarted child starts from the current settings, not the defaults
        onReady();
        return true;
      case proto::FromService::STATS:
        onStatsReply(role, msg.getStats());
        return true;
      case proto::FromService::FATAL:
        log::error("{} reports: {}", roleName(role), std::string(msg.getFatal()));
        return true;
    }
    return false;
  }

  void onChildChannelClosed(Role role, std::string_view why) {
    if (stopping_) return;
    Child& c = children_[role];
    log::warn("channel to {} closed: {}", roleName(role), why);
    if (c.pid > 0) kill(c.pid, SIGKILL);  // a child that breaks protocol is dead to us
  }

  void onReady() {
    for (auto& [r, c] : children_) {
      if (!c.ready) return;
    }
    readyTimer_.reset();
    if (!firstReadyDone_) {
      firstReadyDone_ = true;
      loadSetkeyFile();
      if (stopping_) return;
      writePidFile();
      if (stopping_) return;
      log::info("ready: pfkey {}, control {}", pfkeyPath_, controlPath_);
      acceptAdmin();
      notifySystemd("READY=1\nSTATUS=ready: 0 data-plane restarts, counting SAs and policies");
      statusTimer_ = std::make_unique<asio::steady_timer>(io_);
      refreshStatus();
    } else {
      log::info("data plane restarted and ready");
      startStats(kStatusRequest);
    }
  }

  // systemd's Type=notify (sd_notify(3)); nothing without NOTIFY_SOCKET. The
  // children's environment leaves the variable out (spawn.cpp).
  static void notifySystemd(const std::string& state) { sd_notify(0, state.c_str()); }

  // STATUS= with the SAs, policies and recent restarts, every 30 s and after
  // each data-plane restart, from the same stats requests ipsecctl makes.
  void refreshStatus() {
    if (stopping_ || !statusTimer_) return;
    startStats(kStatusRequest);
    statusTimer_->expires_after(std::chrono::seconds(30));
    statusTimer_->async_wait([this](boost::system::error_code ec) {
      if (!ec) refreshStatus();
    });
  }

  void sendStatus(uint64_t reqId) {
    const auto& p = stats_.at(reqId);
    std::optional<uint64_t> sas, policies;
    for (const auto& [role, part] : p.parts) {
      for (auto c : part->getRoot<proto::Stats>().getCounters()) {
        if (role == Role::kKeydb && c.getName() == "sas") sas = c.getValue();
        if (role == Role::kPolicy && c.getName() == "spd_policies") policies = c.getValue();
      }
    }
    auto count = [](const std::optional<uint64_t>& v) { return v ? std::to_string(*v) : std::string("?"); };
    notifySystemd("STATUS=" + count(sas) + " SAs, " + count(policies) + " policies, " +
                  std::to_string(restarts_.size()) + " data-plane restarts in the last " +
                  std::to_string(cfg_.restartWindowSeconds) + " s");
  }

  void loadSetkeyFile() {
    if (!cfg_.setkeyFile) return;
    int rc = runCommand({opt_.binDir + "/setkey", "--socket", pfkeyPath_, "-f", *cfg_.setkeyFile});
    if (rc != 0) failClosed("setkey_file " + *cfg_.setkeyFile + " failed to load (setkey exit " + std::to_string(rc) + ")");
  }

  // Written last: it says "ready" to whoever waits for it.
  void writePidFile() {
    try {
      runtimeDir_.writeFileAtomically(kPidFileName, std::to_string(getpid()) + "\n");
    } catch (const std::exception& e) {
      failClosed(std::string("pid file: ") + e.what());
    }
  }

  // ---- child exits ----------------------------------------------------------
  void waitSignal() {
    signals_.async_wait([this](boost::system::error_code ec, int sig) {
      if (ec) return;
      if (sig == SIGCHLD) {
        reap();
      } else {
        log::info("signal {}: stopping", sig);
        stopAll(0);
      }
      waitSignal();
    });
  }

  void reap() {
    for (auto& [role, c] : children_) {
      if (c.pid <= 0) continue;
      int status = 0;
      pid_t r = waitpid(c.pid, &status, WNOHANG);
      if (r != c.pid) continue;
      c.pid = -1;
      c.ready = false;
      if (c.channel) c.channel->close();
      c.channel.reset();
      if (stopping_) continue;
      std::string how = WIFSIGNALED(status) ? "signal " + std::to_string(WTERMSIG(status))
                                            : "exit " + std::to_string(WEXITSTATUS(status));
      log::warn("{} died ({})", roleName(role), how);
      onChildDied(role);
    }
    if (stopping_ && allDead()) {
      stopTimer_.reset();
      io_.stop();
    }
  }

  bool allDead() const {
    for (auto& [r, c] : children_) {
      if (c.pid > 0) return false;
    }
    return true;
  }

  void onChildDied(Role role) {
    if (!isDataPlane(role)) {
      failClosed(std::string(roleName(role)) + " died; the SAD/SPD cannot be trusted to have survived");
      return;
    }
    // The data plane restarts as a unit: kill the partner, restart when both are gone.
    Role other = role == Role::kCrypto ? Role::kForwarder : Role::kCrypto;
    if (children_[other].pid > 0) {
      kill(children_[other].pid, SIGKILL);
      return;  // its SIGCHLD brings us back here
    }
    auto now = Clock::now();
    restarts_.push_back(now);
    while (!restarts_.empty() && now - restarts_.front() > std::chrono::seconds(cfg_.restartWindowSeconds)) {
      restarts_.pop_front();
    }
    if (restarts_.size() > cfg_.restartLimit) {
      failClosed("data plane restarted more than " + std::to_string(cfg_.restartLimit) + " times in " +
                 std::to_string(cfg_.restartWindowSeconds) + " s");
      return;
    }
    // Backoff doubles with each recent restart: 100 ms, 200 ms, ... capped at 5 s.
    auto delay = std::chrono::milliseconds(std::min<long>(5000, 100L << (restarts_.size() - 1)));
    log::info("restarting the data plane in {} ms", delay.count());
    restartTimer_ = std::make_unique<asio::steady_timer>(io_, delay);
    restartTimer_->async_wait([this](boost::system::error_code ec) {
      if (!ec && !stopping_) restartDataPlane();
    });
  }

  void restartDataPlane() {
    try {
      auto links = makeLinks();
      const ChildEnds ends = endsOf(links);
      sendRestarted(Role::kKeydb, keydbReplacementFds(ends));
      sendRestarted(Role::kPolicy, policyReplacementFds(ends));
      spawnDataPlane(ends);
      armReadyTimer(" after restart");
    } catch (const std::exception& e) {
      failClosed(std::string("data plane restart failed: ") + e.what());
    }
  }

  void sendRestarted(Role role, std::vector<int> fds) {
    capnp::MallocMessageBuilder b;
    b.initRoot<proto::ToService>().setDataPlaneRestarted();
    children_[role].channel->send(b, fds);
  }

  void failClosed(const std::string& why) {
    if (stopping_) return;
    log::error("failing closed: {}", why);
    stopAll(1);
  }

  void stopAll(int code) {
    if (stopping_) return;
    stopping_ = true;
    exitCode_ = code;
    notifySystemd("STOPPING=1");
    statusTimer_.reset();
    restartTimer_.reset();
    readyTimer_.reset();
    for (auto& [r, c] : children_) {
      if (c.pid <= 0) continue;
      if (c.channel) {
        capnp::MallocMessageBuilder b;
        b.initRoot<proto::ToService>().setStop();
        c.channel->send(b);
      }
      kill(c.pid, SIGTERM);
    }
    if (allDead()) {
      io_.stop();
      return;
    }
    stopTimer_ = std::make_unique<asio::steady_timer>(io_, kStopGrace);
    stopTimer_->async_wait([this](boost::system::error_code ec) {
      if (ec) return;
      for (auto& [r, c] : children_) {
        if (c.pid > 0) {
          log::warn("{} did not stop; killing", roleName(r));
          kill(c.pid, SIGKILL);
        }
      }
    });
  }

  // ---- ipsecctl -------------------------------------------------------------
  void acceptAdmin() {
    controlListener_ = std::make_unique<asio::posix::stream_descriptor>(io_, dup(controlListen_.get()));
    waitAdmin();
  }

  void waitAdmin() {
    controlListener_->async_wait(asio::posix::stream_descriptor::wait_read, [this](boost::system::error_code ec) {
      if (ec || stopping_) return;
      for (;;) {
        int fd = accept4(controlListen_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) break;
        startAdminClient(UniqueFd(fd));
      }
      waitAdmin();
    });
  }

  void startAdminClient(UniqueFd fd) {
    ucred cred{};
    socklen_t len = sizeof cred;
    if (getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 || cred.uid != 0) return;
    auto id = nextAdmin_++;
    Channel::Options oneMessagePerDatagram;
    oneMessagePerDatagram.coalesce = false;  // ipsecctl reads with receiveMessage
    auto ch = std::make_unique<Channel>(io_, std::move(fd), "ipsecctl", oneMessagePerDatagram);
    Channel* raw = ch.get();
    admins_[id] = std::move(ch);
    raw->start([this, id](capnp::MessageReader& m, std::vector<UniqueFd>& fds) { return onAdmin(id, m, fds); },
               [this, id](std::string_view) { asio::post(io_, [this, id] { admins_.erase(id); }); });
  }

  bool onAdmin(uint64_t id, capnp::MessageReader& m, std::vector<UniqueFd>& fds) {
    if (!fds.empty()) return false;
    auto req = m.getRoot<proto::AdminRequest>();
    switch (req.which()) {
      case proto::AdminRequest::STATS:
        startStats(id);
        return true;
      case proto::AdminRequest::AUDIT:
        replyAudit(id);
        return true;
      case proto::AdminRequest::SYSCTL_GET:
        replySysctl(id, std::string(req.getSysctlGet()));
        return true;
      case proto::AdminRequest::SYSCTL_SET:
        setSysctl(id, std::string(req.getSysctlSet().getName()), req.getSysctlSet().getValue());
        return true;
    }
    return false;
  }

  void replyAudit(uint64_t id) {
    std::vector<audit::ProcessAudit> procs;
    procs.push_back(audit::auditProcess(getpid()));
    for (Role r : kRoles) {
      if (children_[r].pid > 0) procs.push_back(audit::auditProcess(children_[r].pid));
    }
    auto json = audit::toJson(procs);
    std::string table = audit::formatTable(procs);
    table += "\nseccomp argument conditions (from each child's --print-profile; the kernel does not show them):\n";
    for (Role r : kRoles) {
      const pid_t pid = children_[r].pid;
      if (pid <= 0) continue;
      const auto conditions = seccompConditions(r);
      for (auto& p : json) {
        if (p.at("pid") == pid) p["seccomp_conditions"] = conditions;
      }
      for (const auto& c : conditions) table += std::string("  ") + roleName(r) + "  " + c + "\n";
    }
    capnp::MallocMessageBuilder b;
    auto rep = b.initRoot<proto::AdminReply>().initAudit();
    rep.setJson(json.dump(2));
    rep.setTable(table);
    sendAdmin(id, b);
  }

  // The allow-list entries with argument conditions, as "call: conditions",
  // from the profile compiled into the child's binary (the kernel shows a
  // process's filter only to CAP_SYS_ADMIN, which ipsecd does not keep).
  // Read once per role: the conditions do not depend on the command line.
  // Bounded in time (ipsecd's loop waits for it): a binary that hangs is
  // killed, the audit says the conditions are unavailable and why, and the
  // next audit asks again.
  std::vector<std::string> seccompConditions(Role r) {
    if (auto known = seccompConditions_.find(r); known != seccompConditions_.end()) return known->second;
    constexpr std::chrono::milliseconds kPrintProfileTimeout{2000};
    const Captured got =
        captureCommand({opt_.childDir + "/" + roleName(r), "--print-profile"}, 1 << 20, kPrintProfileTimeout);
    if (!got.ok) {
      log::warn("{} --print-profile: {}", roleName(r), got.error);
      return {"(unavailable: --print-profile " + got.error + ")"};
    }
    auto it = seccompConditions_.try_emplace(r).first;
    const std::string& text = got.text;
    constexpr std::string_view kOnlyIf = "[only if ";
    std::size_t start = 0;
    while (start < text.size()) {
      std::size_t end = text.find('\n', start);
      if (end == std::string::npos) end = text.size();
      const std::string_view line(text.data() + start, end - start);
      start = end + 1;
      const auto cond = line.find(kOnlyIf);
      if (!line.starts_with("    ") || cond == std::string_view::npos) continue;
      const auto close = line.find(']', cond);
      const auto name = line.substr(4, line.find(' ', 4) - 4);
      it->second.push_back(std::string(name) + ": " +
                           std::string(line.substr(cond + kOnlyIf.size(), close - cond - kOnlyIf.size())));
    }
    return it->second;
  }

  // The FAST_IPSEC sysctl names this service knows, with their values.
  std::map<std::string, int64_t>& sysctls() {
    if (sysctls_.empty()) {
      sysctls_ = {{"net.inet.esp.enable", 1},
                  {"net.inet.ah.enable", 1},
                  {"net.inet.ipcomp.enable", 1},
                  {"net.inet.ipsec.debug", cfg_.debug ? 1 : 0},
                  {"net.inet.ipsec.allow_legacy", 0},
                  {"net.inet.ipsec.replay_window", cfg_.replayWindow},
                  {"net.inet.ipsec.natt_keepalive_interval", 20},
                  // Tunnels: the outer DF bit of SAs without their own policy
                  // (FreeBSD's numbers: 0 clear, 1 set, 2 copy; copy as Linux
                  // does with PMTU discovery) and their path MTU (the
                  // forwarder cannot ask the kernel for the route's).
                  {"net.inet.ipsec.dfbit", 2},
                  {"net.inet.ipsec.default_mtu", 1500},
                  // ESP in UDP (forwarder gro.cpp): UDP GRO on the NAT-T
                  // sockets, UDP GSO sends on the IPv6 one: less forwarder
                  // CPU per byte, nothing lost when nothing coalesces
                  // (bench/natt).
                  {"net.inet.ipsec.udp_gro", 1},
                  {"net.inet.ipsec.udp_gso", 1},
                  // PF_KEY (policy and keydb): larval/ACQUIRE lifetime, ACQUIRE
                  // rate limit, GETSPI range clamp, message tracing.
                  {"net.key.larval_lifetime", 30},
                  {"net.key.blockacq_count", 32},
                  {"net.key.blockacq_lifetime", 20},
                  {"net.key.spi_minval", 0x100},
                  {"net.key.spi_maxval", 0xffffffff},
                  {"net.key.debug", 0},
                  {"net.key.max_sas", 262144}};  // keydb: SAD bound (ADD beyond: ENOBUFS)
    }
    return sysctls_;
  }

  void replySysctl(uint64_t id, const std::string& name) {
    capnp::MallocMessageBuilder b;
    auto& all = sysctls();
    if (!name.empty() && !all.contains(name)) {
      b.initRoot<proto::AdminReply>().setError("unknown sysctl: " + name);
      sendAdmin(id, b);
      return;
    }
    auto list = b.initRoot<proto::AdminReply>().initSysctl(name.empty() ? all.size() : 1);
    unsigned i = 0;
    for (auto& [n, v] : all) {
      if (!name.empty() && n != name) continue;
      list[i].setName(n);
      list[i].setValue(v);
      ++i;
    }
    sendAdmin(id, b);
  }

  void sendSysctls(Role role) {
    Child& c = children_[role];
    if (!c.channel) return;
    for (const auto& [name, value] : sysctls()) {
      capnp::MallocMessageBuilder m;
      auto s = m.initRoot<proto::ToService>().initSysctl();
      s.setName(name);
      s.setValue(value);
      c.channel->send(m);
    }
  }

  void setSysctl(uint64_t id, const std::string& name, int64_t value) {
    auto& all = sysctls();
    if (!all.contains(name)) {
      capnp::MallocMessageBuilder b;
      b.initRoot<proto::AdminReply>().setError("unknown sysctl: " + name);
      sendAdmin(id, b);
      return;
    }
    all[name] = value;
    if (name == "net.inet.ipsec.debug") {
      debugSysctl_ = value != 0;
      log::setDebug(debugSysctl_ || cfg_.debug);
    }
    for (auto& [r, c] : children_) {
      if (!c.channel) continue;
      capnp::MallocMessageBuilder m;
      auto s = m.initRoot<proto::ToService>().initSysctl();
      s.setName(name);
      s.setValue(value);
      c.channel->send(m);
    }
    replySysctl(id, name);
  }

  void startStats(uint64_t id) {
    auto reqId = nextStats_++;
    auto& p = stats_[reqId];
    p.adminId = id;
    for (auto& [r, c] : children_) {
      if (!c.channel || !c.ready) continue;
      capnp::MallocMessageBuilder m;
      m.initRoot<proto::ToService>().setStatsRequest(reqId);
      c.channel->send(m);
      p.waiting.insert(r);
    }
    p.timer = std::make_unique<asio::steady_timer>(io_, kStatsTimeout);
    p.timer->async_wait([this, reqId](boost::system::error_code ec) {
      if (!ec) finishStats(reqId);
    });
    if (p.waiting.empty()) finishStats(reqId);
  }

  void onStatsReply(Role role, proto::Stats::Reader s) {
    auto it = stats_.find(s.getRequestId());
    if (it == stats_.end() || !it->second.waiting.erase(role)) return;  // late reply
    auto part = std::make_unique<capnp::MallocMessageBuilder>();
    part->setRoot(s);
    it->second.parts.emplace_back(role, std::move(part));
    if (it->second.waiting.empty()) finishStats(it->first);
  }

  void finishStats(uint64_t reqId) {
    auto it = stats_.find(reqId);
    if (it == stats_.end()) return;
    auto& p = it->second;
    if (p.adminId == kStatusRequest) {
      sendStatus(reqId);
      stats_.erase(it);
      return;
    }
    capnp::MallocMessageBuilder b;
    auto list = b.initRoot<proto::AdminReply>().initStats(p.parts.size() + 1);
    for (size_t i = 0; i < p.parts.size(); ++i) {
      auto s = p.parts[i].second->getRoot<proto::Stats>().asReader();
      list[i].setService(roleName(p.parts[i].first));
      list[i].setCounters(s.getCounters());
      list[i].setSas(s.getSas());
    }
    fillOwnStats(list[p.parts.size()]);
    sendAdmin(p.adminId, b);
    stats_.erase(it);
  }

  // ipsecd's own counters: the children's output it relayed or cut.
  void fillOwnStats(proto::ServiceStats::Builder s) {
    s.setService("ipsecd");
    stats::fillCounters(s, outputCounters_);
  }

  void sendAdmin(uint64_t id, capnp::MessageBuilder& b) {
    auto it = admins_.find(id);
    if (it != admins_.end()) it->second->send(b);
  }

  struct StatsGather {
    uint64_t adminId = 0;
    std::set<Role> waiting;
    std::vector<std::pair<Role, std::unique_ptr<capnp::MallocMessageBuilder>>> parts;
    std::unique_ptr<asio::steady_timer> timer;
  };

  const Options& opt_;
  const config::Config& cfg_;
  asio::io_context io_;
  asio::signal_set signals_;
  RuntimeDir runtimeDir_;
  Tun tun_;
  UniqueFd raw4_, raw6_, rawAh4_, rawAh6_, udp4_, udp6_, pfkeyListen_, controlListen_;
  UniqueFd hdr4_, hdr6_;  // transport mode: header-included, send-only
  UniqueFd espRingSocket_;  // esp_ring: the AF_PACKET socket whose ring each data-plane start renews
  UniqueFd packetSocket_;   // esp_send = packet: the send-only AF_PACKET socket each forwarder gets a copy of
  TransportRouting transportRouting_;
  std::unique_ptr<asio::posix::stream_descriptor> controlListener_;
  std::string emptyDir_, pfkeyPath_, controlPath_;
  bool createdEmptyDir_ = false;
  std::map<Role, Child> children_;
  std::unique_ptr<asio::steady_timer> readyTimer_, restartTimer_, stopTimer_;
  std::deque<Clock::time_point> restarts_;
  std::unique_ptr<asio::steady_timer> statusTimer_;
  // A stats gather for systemd's STATUS= line, not for an admin client.
  static constexpr uint64_t kStatusRequest = ~uint64_t{0};
  Clock::time_point startedAt_;
  bool firstReadyDone_ = false;
  bool stopping_ = false;
  bool debugSysctl_ = false;
  int exitCode_ = 0;
  std::map<uint64_t, std::unique_ptr<Channel>> admins_;
  uint64_t nextAdmin_ = 1;
  std::map<uint64_t, StatsGather> stats_;
  uint64_t nextStats_ = 1;
  std::map<std::string, int64_t> sysctls_;
  std::map<Role, std::vector<std::string>> seccompConditions_;
  OutputCounters outputCounters_;
  std::map<pid_t, std::unique_ptr<ChildOutputPipe>> outputs_;  // by the child's pid; outlive the child until EOF
};

}  // namespace

int runSupervisor(const Options& options) {
  Supervisor s(options);
  return s.run();
}

}  // namespace ipsec::supervisor
