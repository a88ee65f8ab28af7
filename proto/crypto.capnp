@0xb90f561d4ded9a68;
# ipsec-keydb ↔ ipsec-crypto: crypto sessions and IV reservations.
# Model: keydb creates one session per SA (the session is named by the SA's
# SaRef, so a slot reused by a newer SA cannot be reached through a stale
# descriptor). The broker makes every IV itself; for counter IVs it may use
# only [ivNext, ivLimit) and asks keydb for more before it runs out. keydb
# records each grant before answering, so a restarted broker is given a base
# above anything it could have used: no IV repeats under one key.
# Senders: KeydbToCrypto only from keydb; CryptoToKeydb only from crypto.
using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("ipsec::proto");
using Common = import "common.capnp";

# Which way this host uses an SA (DESIGN §3, nonce safety): an SA is sealed
# only by the host that sends on it. keydb decides from the SPD's outbound
# templates (policy tells it); the broker seals only under `outbound` sessions
# and opens only under the others. `unknown` (no outbound policy names the SA
# yet) opens and refuses to seal until keydb says `outbound`.
enum Direction {
  unknown @0;
  outbound @1;
  inbound @2;
}

struct CreateSession {
  sa @0 :Common.SaRef;
  params @1 :Common.SaParams;
  keys @2 :Common.SaKeys;
  ivNext @3 :UInt64;        # counter IVs: first usable value (starts at a random
                            # 64-bit offset per SA and host, then only grows)
  ivLimit @4 :UInt64;
  direction @5 :Direction;
}

# A live session's direction changed (a policy now names the SA as outbound).
struct SessionDirection {
  sa @0 :Common.SaRef;
  direction @1 :Direction;
}

struct IvGrant {
  sa @0 :Common.SaRef;
  ivLimit @1 :UInt64;       # new exclusive upper bound
}

struct KeydbToCrypto {
  union {
    createSession @0 :CreateSession;
    destroySession @1 :Common.SaRef;
    ivGrant @2 :IvGrant;
    setDirection @3 :SessionDirection;
    # A token the broker echoes (CryptoToKeydb.barrier) once it has applied
    # every message keydb sent before it: keydb answers an outbound policy's
    # markOutbound only then, so the forwarder never gets a policy whose SAs
    # the broker would still refuse to seal under (sad.capnp markOutbound).
    barrier @4 :UInt64;
  }
}

struct SessionResult {
  sa @0 :Common.SaRef;
  ok @1 :Bool;
  error @2 :Text;
  ivLength @3 :UInt8;
  icvLength @4 :UInt8;
  padAlign @5 :UInt8;
  # Why a session was refused, as an errno value for the PF_KEY reply:
  # ENOMEM when no locked key memory is left, 0 (read as EINVAL) otherwise.
  errorCode @6 :UInt16;
}

struct IvRequest {
  sa @0 :Common.SaRef;
  ivNext @1 :UInt64;        # where the broker is now
}

struct CryptoToKeydb {
  union {
    sessionResult @0 :SessionResult;
    ivRequest @1 :IvRequest;
    # The token of KeydbToCrypto.barrier, echoed in order: everything keydb
    # sent before it is applied. A token keydb did not send is a protocol error.
    barrier @2 :UInt64;
  }
}
