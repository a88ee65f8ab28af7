@0xf5fa224987d38a5a;
# ipsec-policy ↔ ipsec-keydb: the SAD operations PF_KEY asks for.
# Model: policy parses PF_KEY (untrusted client bytes) and turns SA messages into
# these requests; keydb owns the SAD and answers each request exactly once with
# a reply carrying the same requestId. Keys travel policy→keydb in `add` and
# keydb→policy only in replies to `get` (key managers move SAs with GET).
# Senders: PolicyToKeydb only from policy; KeydbToPolicy only from keydb.
using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("ipsec::proto");
using Common = import "common.capnp";

# How PF_KEY names an SA: (satype, spi, dst), src optional.
struct SaName {
  satype @0 :UInt8;
  spi @1 :UInt32;
  src @2 :Data;
  dst @3 :Data;
}

struct SaAdd {
  params @0 :Common.SaParams;
  keys @1 :Common.SaKeys;
  update @2 :Bool;          # SADB_UPDATE: the SA must exist (larval or mature)
}

struct GetSpi {
  satype @0 :UInt8;
  src @1 :Data;
  dst @2 :Data;
  min @3 :UInt32;
  max @4 :UInt32;
  mode @5 :UInt8;
  reqid @6 :UInt32;
}

# One SA move of SADB_X_MIGRATE (Linux pfkey_migrate / xfrm_migrate): the SAs of
# `satype` in `mode` with `reqid` (any reqid when 0) between oldSrc and oldDst
# get newSrc and newDst. Keys, sequence numbers and the crypto session stay.
struct SaMigration {
  satype @0 :UInt8;
  mode @1 :UInt8;
  reqid @2 :UInt32;
  oldSrc @3 :Data;
  oldDst @4 :Data;
  newSrc @5 :Data;
  newDst @6 :Data;
}

struct PolicyToKeydb {
  requestId @0 :UInt64;
  union {
    add @1 :SaAdd;
    delete @2 :SaName;
    get @3 :SaName;
    flush @4 :UInt8;        # satype; 0 (SADB_SATYPE_UNSPEC) = all
    dump @5 :UInt8;         # satype; 0 = all
    getSpi @6 :GetSpi;
    migrate @7 :List(SaMigration);  # reply: sas moved (new addresses); errno if none could move
  }
}

struct SaRecord {
  params @0 :Common.SaParams;
  keys @1 :Common.SaKeys;   # filled only in replies to `get`
  current @2 :Common.Lifetime;  # bytes, packets, add time, first-use time (unix s)
}

struct SadReply {
  requestId @0 :UInt64;
  errno @1 :UInt16;         # 0 or the errno PF_KEY answers with
  sas @2 :List(SaRecord);   # add/get/getSpi: the SA; dump: a chunk; delete: the deleted one
  more @3 :Bool;            # dump only: further replies with this requestId follow
                            # (a dump comes in chunks that each fit one control message)
}

struct Expire {
  record @0 :SaRecord;
  hard @1 :Bool;
}

struct KeydbToPolicy {
  union {
    reply @0 :SadReply;
    expire @1 :Expire;      # unsolicited; policy broadcasts SADB_EXPIRE
  }
}
