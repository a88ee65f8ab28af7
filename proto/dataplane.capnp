@0xfb0180263c6dfaf2;
# Control of the forwarder, which parses the network and holds no key.
# keydb ↔ forwarder: SA metadata (never keys) and sequence-number grants.
#   A new SA may use sequence numbers in [seqNext, seqLimit) only; the
#   forwarder asks for more before it runs out and keydb records each grant
#   first, so a restarted forwarder never reuses a sequence number.
# policy ↔ forwarder: the SPD, and ACQUIRE requests back.
# Senders are fixed per struct: KeydbToForwarder only from keydb, and so on.
using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("ipsec::proto");
using Common = import "common.capnp";

struct SaInstall {
  sa @0 :Common.SaRef;      # also names the crypto session
  params @1 :Common.SaParams;
  seqNext @2 :UInt64;
  seqLimit @3 :UInt64;
  # UPDATE of a live SA: the entry this one replaces (generation 0: none). It
  # kept working until now; the new entry takes over its replay window (what
  # was accepted stays accepted) and the old one goes.
  replaces @4 :Common.SaRef;
}

struct SeqGrant {
  sa @0 :Common.SaRef;
  seqLimit @1 :UInt64;
}

struct KeydbToForwarder {
  union {
    install @0 :SaInstall;  # add or replace (same SaRef)
    remove @1 :Common.SaRef;
    seqGrant @2 :SeqGrant;
  }
}

struct SeqRequest {
  sa @0 :Common.SaRef;
  seqNext @1 :UInt64;
}

struct SaUsage {
  sa @0 :Common.SaRef;
  bytes @1 :UInt64;
  packets @2 :UInt64;
  firstUse @3 :UInt64;      # unix seconds, 0 = unused
}

struct ForwarderToKeydb {
  union {
    seqRequest @0 :SeqRequest;
    usage @1 :List(SaUsage);
  }
}

struct PolicyToForwarder {
  union {
    add @0 :Common.Policy;   # add or replace (same id)
    delete @1 :UInt32;       # policy id
    flush @2 :Void;
  }
}

struct Acquire {
  policyId @0 :UInt32;
  src @1 :Data;
  dst @2 :Data;
  proto @3 :UInt8;
  # Which of the policy's requests has no SA (a bundle may miss its second):
  # its protocol, mode and reqid are what the ACQUIRE asks for.
  requestIndex @4 :UInt8;
}

# An authenticated ESP-in-UDP packet of an SA came from another address or
# port than the SA names (a NAT rebound). The forwarder does not change the
# SA: like Linux, it reports; policy broadcasts SADB_X_NAT_T_NEW_MAPPING and
# the key manager decides (UPDATE or MIGRATE). Rate-limited per SA.
struct NatMapping {
  satype @0 :UInt8;
  spi @1 :UInt32;
  src @2 :Data;             # the SA's source (the peer) as installed
  dst @3 :Data;             # the SA's destination (us)
  sport @4 :UInt16;         # the SA's peer port as installed (host order)
  dport @5 :UInt16;
  newSrc @6 :Data;          # where the packet really came from
  newSport @7 :UInt16;
}

struct ForwarderToPolicy {
  union {
    acquire @0 :Acquire;
    # Reserved so the union can grow (SPD expire, per-policy counters).
    none @1 :Void;
    natMapping @2 :NatMapping;
  }
}
