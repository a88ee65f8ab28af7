// ipsec-keydb — the SAD: every SA's keys, lifetimes and nonce grants.
//
// Descriptors from ipsecd: proto/fd_layout.h's kKeydb (ipsecd, policy,
// crypto, forwarder channels; losing policy fails closed, losing crypto or the
// forwarder waits for the restarted data plane's new channels).
//
// Sandbox: its own uid, an empty root, no capabilities, no_new_privs, not
// dumpable, locked memory for keys (lib/securemem's slab), the baseline allow-list.
// It parses nothing from the network.
#include <sodium.h>

#include "keydb.h"
#include "log/log.h"
#include "service/service.h"

using namespace ipsec;

namespace {

sandbox::SandboxProfile profile(const service::Args& args) {
  auto p = service::baseProfile("ipsec-keydb", args);
  p.nonDumpable = {true, "holds every SA's keys"};
  p.lockMemory = {true, "keys live in mlock'ed slab chunks"};
  // Two keys of up to 64 bytes for each of kMaxSasCeiling SAs (128 MiB),
  // with room for the slab's partly used chunks: net.key.max_sas, not this
  // limit, is what refuses an ADD.
  p.memlockBytes = 192u << 20;
  p.allow(sandbox::lockedMemorySyscalls());
  p.allow(sandbox::channelBufferSyscalls());  // crypto and forwarder channels after a data-plane restart
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  return service::serviceMain("ipsec-keydb", argc, argv, [](const service::Args& args) {
    if (args.printProfile) return service::printProfile(profile(args)), 0;
    if (sodium_init() < 0) throw std::runtime_error("libsodium failed to initialise");
    service::Service svc("ipsec-keydb", args);
    using fdlayout::KeydbFd;
    keydb::Keydb db(svc.io(), service::takeFd(KeydbFd::kPolicy, args), service::takeFd(KeydbFd::kCrypto, args),
                    service::takeFd(KeydbFd::kForwarder, args));

    db.start();
    return svc.run(profile(args), {
                                .stats = [&](proto::Stats::Builder s) { db.fillStats(s); },
                                .sysctl = [&](std::string_view n, std::int64_t v) { db.setSysctl(n, v); },
                                .dataPlaneRestarted = [&](std::vector<control::UniqueFd>& f) {
                                  return db.onDataPlaneRestarted(f);
                                },
                                .stop = [&] { db.stop(); },
                                .sandboxed = nullptr,
                            });
  });
}
