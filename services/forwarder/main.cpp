// ipsec-forwarder — parses the network, holds no key, can open nothing.
//
// Descriptors from ipsecd (fixed numbers):
//   3  ipsecd      stop, stats, sysctl (net.inet.esp.enable, net.inet.ipsec.debug)
//   4  keydb       SA metadata without keys, sequence grants  ← / usage, seq requests →
//   5  policy      SPD entries ←
//   6  TUN         inner packets, both ways
//   7  raw ESP/v4  outer packets, both ways
//   8  raw ESP/v6  outer packets, both ways
//   9+3i, 10+3i, 11+3i  crypto worker i: ring memfd, request bell, completion bell
//
// Sandbox: its own uid, an empty root, no capabilities, no_new_privs, and an
// allow-list without open/openat, socket, connect or execve: a compromised
// forwarder can use only the descriptors above, and none of them leads to a key.
#include "forwarder.h"
#include "log/log.h"
#include "service/service.h"

using namespace ipsec;

namespace {

sandbox::SandboxProfile profile(const service::Args& args) {
  auto p = service::baseProfile("ipsec-forwarder", args);
  p.nonDumpable = {true, "its memory holds other hosts' traffic"};
  // The baseline and socket-I/O lists already hold what it needs: read/write
  // on the TUN, recvmmsg/sendmmsg on the raw sockets, the channels' calls.
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
    for (unsigned i = 0; i < args.workers; ++i) {
      int base = 9 + 3 * static_cast<int>(i);
      fds.workers.push_back({service::takeFd(base, "ring memfd"), service::takeFd(base + 1, "request bell"),
                             service::takeFd(base + 2, "completion bell")});
    }
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
