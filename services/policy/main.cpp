// ipsec-policy — the SPD and the PF_KEY v2 front end (DESIGN.md §5).
//
// Descriptors from ipsecd: proto/fd_layout.h's kPolicy (ipsecd, keydb and
// forwarder channels, the PF_KEY listening socket at <runtime_dir>/pfkey;
// losing keydb fails closed, losing the forwarder waits for its successor).
//
// Who may use PF_KEY: SO_PEERCRED uid 0, or a client whose (primary) gid is
// the one in the environment variable IPSEC_PFKEY_GROUP, which ipsecd sets
// from the config's pfkey_group (a numeric gid).
//
// Sandbox: its own uid, an empty root, no capabilities, no_new_privs, not
// dumpable (keys pass through on their way to keydb and are wiped), the
// baseline allow-list plus socket I/O on the descriptors above.
#include <sys/socket.h>

#include <cstdlib>
#include <stdexcept>
#include <string>

#include "log/log.h"
#include "server.h"
#include "service/service.h"

using namespace ipsec;

namespace {

std::optional<gid_t> pfkeyGroupFromEnvironment() {
  const char* v = std::getenv("IPSEC_PFKEY_GROUP");
  if (v == nullptr || *v == '\0') return std::nullopt;
  std::size_t used = 0;
  unsigned long gid = 0;
  try {
    gid = std::stoul(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != std::string(v).size() || gid == 0 || gid > 0xfffffffeUL) {
    throw std::runtime_error(std::string("IPSEC_PFKEY_GROUP=") + v + ": expected a numeric gid other than 0");
  }
  return static_cast<gid_t>(gid);
}

sandbox::SandboxProfile profile(const service::Args& args) {
  auto p = service::baseProfile("ipsec-policy", args);
  p.nonDumpable = {true, "key material of PF_KEY ADD/UPDATE passes through its memory"};
  // baseProfile already carries socketIoSyscalls(): accept4 (PF_KEY clients),
  // getsockopt (SO_PEERCRED), sendto (replies: send(2) is sendto), recvmsg
  // (requests, with MSG_TRUNC to see oversized ones).
  p.allow(sandbox::channelBufferSyscalls());  // the forwarder channel after a data-plane restart
  p.allow({sandbox::SyscallRule{
      "setsockopt",
      "SO_PASSCRED on each PF_KEY client: the kernel then says who sent a preload sync (proto/pfkey_ack.h)",
      {sandbox::argEquals(1, SOL_SOCKET, "SOL_SOCKET"), sandbox::argEquals(2, SO_PASSCRED, "SO_PASSCRED")},
      std::nullopt}});
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  return service::serviceMain("ipsec-policy", argc, argv, [](const service::Args& args) {
    if (args.printProfile) return service::printProfile(profile(args)), 0;
    service::Service svc("ipsec-policy", args);
    policy::ServerOptions options;
    options.pfkeyGroup = pfkeyGroupFromEnvironment();
    options.onPeerLost = [](std::string_view) { std::exit(1); };  // fail closed: ipsecd stops everything
    for (const auto& text : args.localAddresses) {
      auto a = pfkey::SockAddress::fromString(text);
      if (!a) throw std::runtime_error("--local-address " + text + ": not an IP address");
      options.localAddresses.push_back(*a);
    }
    using fdlayout::PolicyFd;
    policy::Server server(svc.io(), service::takeFd(PolicyFd::kPfkeyListen, args),
                          service::takeFd(PolicyFd::kKeydb, args), service::takeFd(PolicyFd::kForwarder, args),
                          std::move(options));

    server.start();
    return svc.run(profile(args), {
                                .stats = [&](proto::Stats::Builder s) { server.fillStats(s); },
                                .sysctl = [&](std::string_view n, std::int64_t v) { server.setSysctl(n, v); },
                                .dataPlaneRestarted = [&](std::vector<control::UniqueFd>& f) {
                                  return server.onDataPlaneRestarted(f);
                                },
                                .stop = [&] { server.stop(); },
                                .sandboxed = nullptr,
                            });
  });
}
