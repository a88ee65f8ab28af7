@0xb9a730a3faf5c7c9;
# Supervisor (ipsecd) ↔ each child, on the child's fd 3.
# Model: the supervisor starts a child with fork+exec, hands it its descriptors
# at fixed numbers (see services/<name>/main.cpp), and waits for `ready`. After
# that the child answers stats requests, applies sysctls, and accepts new
# data-plane channels when the forwarder/crypto pair is restarted.
# Senders: ToService only from the supervisor; FromService only from the child.
# Anything else closes the channel, and the supervisor treats that child as dead.
using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("ipsec::proto");
using Common = import "common.capnp";

struct ToService {
  union {
    # Finish in-flight work, exit 0.
    stop @0 :Void;
    # Reply with FromService.stats carrying the same id.
    statsRequest @1 :UInt64;
    # A sysctl changed; services ignore names that are not theirs.
    sysctl @2 :Common.Sysctl;
    # The data plane (forwarder + crypto) was restarted. The message carries
    # new channel descriptors via SCM_RIGHTS: to keydb, [crypto, forwarder];
    # to policy, [forwarder]. The old channels are already closed.
    dataPlaneRestarted @3 :Void;
  }
}

struct FromService {
  union {
    # Set-up done, sandbox applied; sent once.
    ready @0 :Void;
    stats @1 :Stats;
    # The child is about to exit because of a condition it cannot recover from.
    fatal @2 :Text;
  }
}

struct Stats {
  requestId @0 :UInt64;
  counters @1 :List(Common.Counter);
  sas @2 :List(Common.SaCounters);
}
