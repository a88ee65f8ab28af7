// ipsecd: the supervisor. Opens every privileged resource (TUN, raw sockets,
// the PF_KEY and control listening sockets, memfd rings, socketpairs), starts
// the four children with exactly their descriptors, and watches them:
//  - the data plane (ipsec-forwarder + ipsec-crypto) restarts as a unit when
//    either dies, with fresh rings; keydb then re-issues sessions and SAs with
//    sequence numbers and IVs above anything granted before (no nonce reuse);
//  - keydb or policy dying, a child misbehaving on its channel, or more
//    restarts than restart_limit within restart_window_s stops everything:
//    fail closed, never open.
// It serves ipsecctl on <runtime_dir>/control.
#pragma once

#include <memory>
#include <string>

#include "config/config.h"

namespace ipsec::supervisor {

struct Options {
  config::Config config;
  std::string configPath;
  std::string binDir;    // where ipsecd and setkey live
  std::string childDir;  // where ipsec-keydb & co. live: <prefix>/libexec/ipsecd, or binDir in a build tree
};

// Runs until SIGTERM/SIGINT (exit 0) or a fail-closed stop (exit 1).
// Throws for set-up errors; whatever was created is removed before it does.
int runSupervisor(const Options& options);

}  // namespace ipsec::supervisor
