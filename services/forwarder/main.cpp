// ipsec-forwarder — parses the network, holds no key, can open nothing.
//
// Descriptors from ipsecd: proto/fd_layout.h's kForwarder, one line of role
// each: the ipsecd, keydb and policy channels; the TUN (with a virtio_net_hdr
// and offloads when --tun-offloads says so); raw ESP and AH, NAT-T
// UDP (IPv4, IPv6); per crypto worker its ring memfd and two bells; then the
// two send-only header-included sockets; the plain ESP/IPv4 packet ring (an
// idle eventfd when esp_ring is off); the ESP/IPv4 packet socket and the
// route netlink socket of esp_send = packet (idle eventfds when it is off); with forwarder_threads N > 1 the TUN's
// queues 1..N-1 after the table. Losing any peer ends the process and
// ipsecd restarts the data plane. The ring is mapped before the sandbox and
// read by loads and stores alone: its profile needs no call for it.
//
// Threads: one per TUN queue (thread_group.h); thread 0 is the service's.
//
// Sandbox: its own uid, an empty root, no capabilities, no_new_privs, and an
// allow-list without open/openat, socket, connect or execve: a compromised
// forwarder can use only the descriptors above, and none of them leads to a key.
#include <netinet/in.h>
#include <netinet/udp.h>
#include <sys/socket.h>

#include "forwarder.h"
#include "thread_group.h"
#include "log/log.h"
#include "service/service.h"

using namespace ipsec;

namespace {

sandbox::SandboxProfile profile(const service::Args& args) {
  auto p = service::baseProfile("ipsec-forwarder", args);
  p.nonDumpable = {true, "its memory holds other hosts' traffic"};
  // The baseline and socket-I/O lists hold the rest: read/write on the TUN,
  // recvmmsg/sendmmsg on the raw and UDP sockets, the channels' calls. Its
  // channels are sized before the sandbox; the two options it sets afterwards:
  p.allow({{"setsockopt", "net.inet.ipsec.udp_gro turns UDP GRO on the NAT-T sockets on or off (gro.cpp)",
            {sandbox::argEquals(1, SOL_UDP, "SOL_UDP"), sandbox::argEquals(2, UDP_GRO, "UDP_GRO")}, std::nullopt},
           {"setsockopt", "the IPv4 NAT-T socket's DF setting follows each run of ESP in UDP (the SA's DF policy, gro.cpp)",
            {sandbox::argEquals(1, IPPROTO_IP, "IPPROTO_IP"), sandbox::argEquals(2, IP_MTU_DISCOVER, "IP_MTU_DISCOVER")},
            std::nullopt}});
  if (args.forwarderThreads > 1) p.allow(sandbox::threadSyscalls());  // one thread per TUN queue (thread_group.h)
  return p;
}

// Every descriptor of the table, by its entry.
forwarder::Fds takeFds(const service::Args& args) {
  using fdlayout::ForwarderFd;
  auto take = [&](ForwarderFd which, unsigned worker = 0) { return service::takeFd(which, args, worker); };
  forwarder::Fds fds;
  fds.keydb = take(ForwarderFd::kKeydb);
  fds.policy = take(ForwarderFd::kPolicy);
  fds.tun = take(ForwarderFd::kTun);
  fds.raw4 = take(ForwarderFd::kEsp4);
  fds.raw6 = take(ForwarderFd::kEsp6);
  fds.ah4 = take(ForwarderFd::kAh4);
  fds.ah6 = take(ForwarderFd::kAh6);
  fds.udp4 = take(ForwarderFd::kUdp4);
  fds.udp6 = take(ForwarderFd::kUdp6);
  for (unsigned i = 0; i < args.workers; ++i) {
    fds.workers.push_back(
        {take(ForwarderFd::kRingMemfd, i), take(ForwarderFd::kRequestBell, i), take(ForwarderFd::kCompletionBell, i)});
  }
  fds.hdr4 = take(ForwarderFd::kHeaderIncluded4);
  fds.hdr6 = take(ForwarderFd::kHeaderIncluded6);
  fds.espRing4 = take(ForwarderFd::kEspRing4);
  fds.packet4 = take(ForwarderFd::kPacket4);
  fds.routeNetlink = take(ForwarderFd::kRouteNetlink);
  return fds;
}

// A multi-queue TUN's queues 1..N-1, after the table.
std::vector<control::UniqueFd> takeTunQueues(const service::Args& args) {
  std::vector<control::UniqueFd> queues;
  for (unsigned q = 1; q < args.forwarderThreads; ++q) {
    queues.push_back(service::takeFd(fdlayout::tunQueueNumber(args.workers, q), "TUN queue " + std::to_string(q)));
  }
  return queues;
}

}  // namespace

int main(int argc, char** argv) {
  return service::serviceMain("ipsec-forwarder", argc, argv, [](const service::Args& args) {
    if (args.printProfile) return service::printProfile(profile(args)), 0;
    service::Service svc("ipsec-forwarder", args);

    forwarder::Fds fds = takeFds(args);
    forwarder::ThreadGroup fwd(svc.io(), std::move(fds), takeTunQueues(args), args.tunOffloads);

    fwd.start();
    return svc.run(profile(args), {
                                .stats = [&](proto::Stats::Builder s) { fwd.fillStats(s); },
                                .sysctl = [&](std::string_view n, std::int64_t v) { fwd.setSysctl(n, v); },
                                .dataPlaneRestarted = nullptr,
                                .stop = [&] { fwd.stop(); },
                                .sandboxed = [&] { fwd.runThreads(); },
                            });
  });
}
