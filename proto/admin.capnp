@0xdf077951fda43088;
# ipsecctl ↔ ipsecd on <runtime_dir>/control (SOCK_SEQPACKET, root only).
# One request, one reply, then the tool closes.
using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("ipsec::proto");
using Common = import "common.capnp";

struct AdminRequest {
  union {
    stats @0 :Void;
    audit @1 :Void;
    sysctlGet @2 :Text;      # empty = all
    sysctlSet @3 :Common.Sysctl;
  }
}

struct ServiceStats {
  service @0 :Text;          # ipsec-forwarder, ipsec-crypto, ...
  counters @1 :List(Common.Counter);
  sas @2 :List(Common.SaCounters);
}

struct AdminReply {
  union {
    stats @0 :List(ServiceStats);
    audit @1 :AuditReport;
    sysctl @2 :List(Common.Sysctl);
    error @3 :Text;
  }
}

struct AuditReport {
  json @0 :Text;
  table @1 :Text;
}
