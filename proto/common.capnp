@0xf511f69d21173ce9;
# Value types carried by several control channels (DESIGN.md §2).
# Addresses are raw network-order bytes: 4 for IPv4, 16 for IPv6; a receiver
# treats any other length as a protocol error and closes the channel.
# Numbering of algorithms, modes, directions, levels and SA types is Linux
# PF_KEY's (<linux/pfkeyv2.h>, <linux/ipsec.h>), so no translation table exists.
using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("ipsec::proto");

# One SA's slot in keydb's table. The generation changes whenever the slot is
# reused, so a stale reference (in the forwarder, or in a crypto session) is
# detected instead of silently addressing a newer SA.
struct SaRef {
  index @0 :UInt32;
  generation @1 :UInt32;
}

# PF_KEY lifetime triple (RFC 2367 §2.3.4). Zero means unlimited.
struct Lifetime {
  allocations @0 :UInt32;   # packets (Linux counts packets as allocations)
  bytes @1 :UInt64;
  addTime @2 :UInt64;       # seconds after the SA was added
  useTime @3 :UInt64;       # seconds after the SA was first used
}

# Everything about an SA except its keys: what the forwarder may know.
struct SaParams {
  satype @0 :UInt8;         # SADB_SATYPE_ESP, _AH, _X_IPCOMP
  spi @1 :UInt32;           # host order
  src @2 :Data;             # outer source (tunnel endpoint)
  dst @3 :Data;             # outer destination
  mode @4 :UInt8;           # IPSEC_MODE_ANY/TRANSPORT/TUNNEL
  reqid @5 :UInt32;
  encAlg @6 :UInt8;         # SADB_EALG_* / SADB_X_EALG_*
  authAlg @7 :UInt8;        # SADB_AALG_* / SADB_X_AALG_*
  encKeyBits @8 :UInt16;
  authKeyBits @9 :UInt16;
  replayWindow @10 :UInt32; # packets; 0 disables anti-replay
  flags @11 :UInt32;        # sadb_sa_flags as the client gave them
  state @12 :UInt8;         # SADB_SASTATE_*
  esn @13 :Bool;            # 64-bit sequence numbers (RFC 4303 §2.2.1)
  soft @14 :Lifetime;
  hard @15 :Lifetime;
  # Non-secret framing facts the broker's driver reported for this SA, so the
  # forwarder can lay out packets without knowing the algorithm's keys.
  ivLength @16 :UInt8;
  icvLength @17 :UInt8;
  padAlign @18 :UInt8;
  # NAT traversal (RFC 3948), from SADB_X_EXT_NAT_T_TYPE/SPORT/DPORT/OA.
  # natTType 0: plain ESP; UDP_ENCAP_ESPINUDP (2): ESP in UDP with these ports.
  natTType @19 :UInt8;
  natTSport @20 :UInt16;    # host order
  natTDport @21 :UInt16;    # host order
  natOaSrc @22 :Data;       # original source address (NAT-OAi), empty if none
  natOaDst @23 :Data;       # original destination address (NAT-OAr), empty if none
  # Per-SA tunnel options (our PF_KEY extension SADB_X_EXT_SA_OPTIONS, lib/pfkey
  # kExtSaOptions; setkey -df/-mtu/-tfc/-dummy). Zero everywhere = defaults.
  dfPolicy @24 :UInt8;      # outer DF bit: 0 inherit net.inet.ipsec.dfbit, 1 clear, 2 set, 3 copy inner
  mtu @25 :UInt16;          # outer path MTU for this SA in bytes; 0 = the default path MTU
  tfcPad @26 :UInt16;       # ESP tunnel: pad inner packets to this many bytes (RFC 4303 §2.7); 0 = off
  dummyInterval @27 :UInt32;  # ms between dummy packets (next header 59) on an idle SA; 0 = off
}

# Key material. Travels only policy→keydb and keydb→crypto; never to the
# forwarder. Receivers copy it into locked memory and wipe the message buffer.
struct SaKeys {
  encrypt @0 :Data;
  auth @1 :Data;
}

struct Selector {
  src @0 :Data;
  srcPrefix @1 :UInt8;
  dst @2 :Data;
  dstPrefix @3 :UInt8;
  proto @4 :UInt8;          # upper-layer protocol; 255 = any
  srcPort @5 :UInt16;       # 0 = any; for ICMP the type
  dstPort @6 :UInt16;       # 0 = any; for ICMP the code
}

# One element of a policy's SA bundle (sadb_x_ipsecrequest).
struct IpsecRequest {
  proto @0 :UInt8;          # IPPROTO_ESP / IPPROTO_AH / IPPROTO_COMP
  mode @1 :UInt8;
  level @2 :UInt8;          # IPSEC_LEVEL_*
  reqid @3 :UInt32;
  tunnelSrc @4 :Data;       # empty unless tunnel mode
  tunnelDst @5 :Data;
}

struct Policy {
  id @0 :UInt32;            # sadb_x_policy_id; low 3 bits carry the direction
  dir @1 :UInt8;            # IPSEC_DIR_INBOUND/OUTBOUND/FWD
  action @2 :UInt8;         # IPSEC_POLICY_DISCARD/NONE/IPSEC
  priority @3 :UInt32;
  selector @4 :Selector;
  requests @5 :List(IpsecRequest);
}

struct Counter {
  name @0 :Text;            # e.g. esp_in_drop_replay (one per drop reason)
  value @1 :UInt64;
}

# Counters of one SA, keyed the way PF_KEY names an SA.
struct SaCounters {
  satype @0 :UInt8;
  spi @1 :UInt32;
  dst @2 :Data;
  counters @3 :List(Counter);
  src @4 :Data;             # the SA's source address (empty from a forwarder that does not send it)
}

struct Sysctl {
  name @0 :Text;            # FAST_IPSEC name, e.g. net.inet.esp.enable
  value @1 :Int64;
}
