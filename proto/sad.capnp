@0xf5fa224987d38a5a;
# ipsec-policy ↔ ipsec-keydb: the SAD operations PF_KEY asks for.
# Model: policy parses PF_KEY (untrusted client bytes) and turns SA messages into
# these requests; keydb owns the SAD and answers each request exactly once with
# a reply carrying the same requestId. Keys travel policy→keydb in `add` and
# keydb→policy only in replies to `get` (key managers move SAs with GET).
# Senders: PolicyToKeydb only from policy; KeydbToPolicy only from keydb.
#
# Direction (DESIGN §3, nonce safety): an SA is `outbound` on this host when an
# outbound IPsec policy has a request it satisfies (OutboundTemplate says how);
# policy judges each ADD/UPDATE against its SPD (SaAdd.outbound) and tells
# keydb of every outbound policy it stores (markOutbound), so the order of SA
# and policy does not matter. keydb tells the broker (crypto.capnp Direction).
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
  outbound @3 :Bool;        # an outbound policy of the SPD has a request this SA
                            # satisfies (OutboundTemplate's rule) as the SPD is now
}

# What an SA must be to satisfy one request of an outbound IPsec policy (the
# way Linux's xfrm_state_find picks an SA for a template): the same satype,
# the same mode (an SA of mode any satisfies either), the reqid when it is
# nonzero (level unique), and its src and dst inside these prefixes. Tunnel
# mode: the request's endpoints at full length; transport mode: the endpoints
# in force at that request — the policy's selector (the packet's own
# addresses), or the endpoints of the last tunnel request before it (an ESP
# transport SA around an IPComp tunnel), as Linux's xfrm_tmpl_resolve_one.
struct OutboundTemplate {
  satype @0 :UInt8;
  mode @1 :UInt8;           # IPSEC_MODE_TRANSPORT or IPSEC_MODE_TUNNEL
  reqid @2 :UInt32;         # 0: any
  src @3 :Data;             # 4 or 16 bytes, the same family as dst
  srcPrefix @4 :UInt8;
  dst @5 :Data;
  dstPrefix @6 :UInt8;
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
    # An outbound IPsec policy was stored (X_SPDADD, X_SPDUPDATE, X_SPDSETIDX,
    # X_MIGRATE): every SA one of its templates covers becomes outbound for
    # good (keydb sends the broker setDirection for each live session).
    # Nothing in it can fail. With requestId 0 keydb does not answer; with a
    # nonzero requestId it answers KeydbToPolicy.outboundMarked once the
    # broker has applied every mark (a crypto.capnp barrier echoed), or at
    # once when no broker is attached (a new one gets each SA's direction
    # with its session). policy holds the policy's forwarder push and its
    # PF_KEY reply until then, so no packet meets a session not yet outbound.
    markOutbound @8 :List(OutboundTemplate);
    # The SA without its keys (reply: it, or ESRCH): policy checks the
    # forwarder's NAT mapping reports against it before telling key managers.
    lookup @9 :SaName;
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
    # The requestId of a markOutbound that carried one: the broker has every
    # mark it made (or no broker is attached). Answered in request order.
    outboundMarked @2 :UInt64;
  }
}
