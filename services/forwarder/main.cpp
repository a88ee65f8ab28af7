// ipsec-forwarder — parses the network, holds no key, can open nothing.
//
// Descriptors from ipsecd (fixed numbers):
//   3  ipsecd      stop, stats, sysctl (net.inet.esp.enable, net.inet.ipsec.debug,
//                  net.inet.ipsec.natt_keepalive_interval)
//   4  keydb       SA metadata without keys, sequence grants  ← / usage, seq requests →
//   5  policy      SPD entries ←
//   6  TUN         inner packets, both ways
//   7  raw ESP/v4  outer packets in (out: our own IPv4 header, below)
//   8  raw ESP/v6  outer packets, both ways
//   9  raw AH/v4, 10 raw AH/v6  AH in (ah.cpp; IPv6 with the extension
//                  headers before AH as control messages); AH goes out on the
//                  header-included sockets below
//   11 UDP/v4, 12 UDP/v6  NAT-T (RFC 3948): ESP in UDP both ways, keepalives
//                  out, keepalives in; IKE only when no IKE daemon shares the port
//   13+3i, 14+3i, 15+3i  crypto worker i: ring memfd, request bell, completion bell
//   then 2: header-included raw IPv4, IPv6 (send only): transport-mode ESP
//                  with the host's own header (and IPv6 extension headers),
//                  AH in both modes (the ICV covers the header: we write it all),
//                  and every IPv4 tunnel packet, plain or in UDP (DF per SA and
//                  our own outer fragments need our own header: pmtu.cpp)
//
// Sandbox: its own uid, an empty root, no capabilities, no_new_privs, and an
// allow-list without open/openat, socket, connect or execve: a compromised
// forwarder can use only the descriptors above, and none of them leads to a key.
#include <netinet/udp.h>
#include <sys/socket.h>

#include "forwarder.h"
#include "log/log.h"
#include "service/service.h"

using namespace ipsec;

namespace {

sandbox::SandboxProfile profile(const service::Args& args) {
  auto p = service::baseProfile("ipsec-forwarder", args);
  p.nonDumpable = {true, "its memory holds other hosts' traffic"};
  // The baseline and socket-I/O lists hold the rest: read/write on the TUN,
  // recvmmsg/sendmmsg on the raw and UDP sockets, the channels' calls. Its
  // channels are sized before the sandbox; the one option it sets afterwards:
  p.allow({{"setsockopt", "net.inet.ipsec.udp_gro turns UDP GRO on the NAT-T sockets on or off (gro.cpp)",
            {sandbox::argEquals(1, SOL_UDP, "SOL_UDP"), sandbox::argEquals(2, UDP_GRO, "UDP_GRO")}, std::nullopt}});
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  return service::serviceMain("ipsec-forwarder", argc, argv, [](const service::Args& args) {
    if (args.printProfile) return service::printProfile(profile(args)), 0;
    service::Service svc("ipsec-forwarder", args);

    forwarder::Fds fds;
    fds.keydb = service::takeFd(4, "keydb channel");
    fds.policy = service::takeFd(5, "policy channel");
    fds.tun = service::takeFd(6, "TUN");
    fds.raw4 = service::takeFd(7, "raw ESP/IPv4 socket");
    fds.raw6 = service::takeFd(8, "raw ESP/IPv6 socket");
    fds.ah4 = service::takeFd(9, "raw AH/IPv4 socket");
    fds.ah6 = service::takeFd(10, "raw AH/IPv6 socket");
    fds.udp4 = service::takeFd(11, "NAT-T UDP/IPv4 socket");
    fds.udp6 = service::takeFd(12, "NAT-T UDP/IPv6 socket");
    for (unsigned i = 0; i < args.workers; ++i) {
      int base = 13 + 3 * static_cast<int>(i);
      fds.workers.push_back({service::takeFd(base, "ring memfd"), service::takeFd(base + 1, "request bell"),
                             service::takeFd(base + 2, "completion bell")});
    }
    const int afterWorkers = 13 + 3 * static_cast<int>(args.workers);
    fds.hdr4 = service::takeFd(afterWorkers, "header-included IPv4 socket");
    fds.hdr6 = service::takeFd(afterWorkers + 1, "header-included IPv6 socket");
    forwarder::Forwarder fwd(svc.io(), std::move(fds));

    fwd.start();
    return svc.run(profile(args), {
                                .stats = [&](proto::Stats::Builder s) { fwd.fillStats(s); },
                                .sysctl = [&](std::string_view n, std::int64_t v) { fwd.setSysctl(n, v); },
                                .dataPlaneRestarted = nullptr,
                                .stop = [&] { fwd.stop(); },
                                .sandboxed = nullptr,
                            });
  });
}
