// ipsec-crypto — the crypto offload broker: owns the drivers ("devices") and
// the sessions keyed from keydb; workers serve the forwarder's rings in place.
//
// Descriptors from ipsecd: proto/fd_layout.h's kCrypto (ipsecd and keydb
// channels, then per worker its ring memfd, request bell and completion bell;
// losing any peer ends the process and ipsecd restarts the data plane).
//
// Sandbox: its own uid, an empty root, no capabilities, no_new_privs, not
// dumpable, locked memory for keys, the baseline allow-list plus threads. It
// parses no packet header: it seals and opens byte ranges the forwarder names,
// after checking they lie inside this ring's pool.
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <sodium.h>

#include <vector>

#include "broker.h"
#include "log/log.h"
#include "service/service.h"

using namespace ipsec;

namespace {

sandbox::SandboxProfile profile(const service::Args& args) {
  auto p = service::baseProfile("ipsec-crypto", args);
  p.nonDumpable = {true, "holds session keys"};
  p.lockMemory = {true, "keys live in mlock'ed slab chunks"};
  // One key copy (up to 64 bytes) per worker per session: kMaxSessions
  // (2^20) sessions at four workers. Beyond it a session is refused (the ADD
  // fails with ENOMEM), the broker stays up.
  p.memlockBytes = 256u << 20;
  p.allow(sandbox::lockedMemorySyscalls());
  p.allow(sandbox::threadSyscalls());
  p.allow("getrandom", "random CBC IVs and OpenSSL's DRBG");
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  return service::serviceMain("ipsec-crypto", argc, argv, [](const service::Args& args) {
    if (args.printProfile) return service::printProfile(profile(args)), 0;
    if (sodium_init() < 0) throw std::runtime_error("libsodium failed to initialise");
    // Load everything OpenSSL might open lazily while the filesystem is still there.
    OPENSSL_init_crypto(OPENSSL_INIT_LOAD_CONFIG | OPENSSL_INIT_ADD_ALL_CIPHERS | OPENSSL_INIT_ADD_ALL_DIGESTS,
                        nullptr);
    service::Service svc("ipsec-crypto", args);

    using fdlayout::CryptoFd;
    std::vector<crypto::RingFds> rings;
    for (unsigned i = 0; i < args.workers; ++i) {
      rings.push_back({service::takeFd(CryptoFd::kRingMemfd, args, i), service::takeFd(CryptoFd::kRequestBell, args, i),
                       service::takeFd(CryptoFd::kCompletionBell, args, i)});
    }
    crypto::Broker broker(svc.io(), service::takeFd(CryptoFd::kKeydb, args), std::move(rings));

    broker.start();
    return svc.run(profile(args), {
                                .stats = [&](proto::Stats::Builder s) { broker.fillStats(s); },
                                .sysctl = [&](std::string_view n, std::int64_t v) { broker.setSysctl(n, v); },
                                .dataPlaneRestarted = nullptr,
                                .stop = [&] { broker.stop(); },
                                .sandboxed = [&] { broker.startWorkers(); },
                            });
  });
}
