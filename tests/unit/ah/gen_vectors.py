#!/usr/bin/python3
# Generates vectors.inc: AH packets signed by scapy's scapy.layers.ipsec
# (SecurityAssociation(AH, ...).encrypt()), an implementation independent of
# lib/ah, over IPv4 with options and IPv6 with hop-by-hop, destination
# options and a routing header, in tunnel and transport mode, with ESN too.
# For each: the packet as sent (with scapy's ICV) and scapy's canonical ICV
# input (zero_mutable_fields(sending=True), ICV zeroed). Run with
# /usr/bin/python3 from this folder and commit the output; the test never
# runs Python.
import struct

from scapy.all import IP, IPv6, TCP, UDP, ICMP, Raw, raw
from scapy.layers.inet import IPOption, IPOption_NOP, IPOption_RR, IPOption_Router_Alert, IPOption_EOL
from scapy.layers.inet6 import (IPv6ExtHdrHopByHop, IPv6ExtHdrDestOpt, IPv6ExtHdrRouting, HBHOptUnknown,
                                PadN, RouterAlert)
from scapy.layers.ipsec import SecurityAssociation, AH, zero_mutable_fields

SADB = {"HMAC-SHA1-96": (3, 20), "SHA2-256-128": (5, 32), "SHA2-384-192": (6, 48), "SHA2-512-256": (7, 64),
        "HMAC-MD5-96": (2, 16), "AES-CMAC-96": (250, 16)}  # <linux/pfkeyv2.h> ids


def key(n, seed):
    return bytes((seed * 31 + 11 * i) & 0xFF for i in range(n))


def payload(n):
    return bytes((i * 7 + 3) & 0xFF for i in range(n))


cases = []


def add(name, algo, pkt, spi, seq, tunnel=None, esn=None):
    alg_id, key_len = SADB[algo]
    k = key(key_len, alg_id + len(cases))
    kw = {}
    if esn is not None:
        kw = {"esn_en": True, "esn": esn}
    sa = SecurityAssociation(AH, spi=spi, seq_num=seq, auth_algo=algo, auth_key=k, tunnel_header=tunnel, **kw)
    signed = sa.encrypt(pkt)
    wire = raw(signed)
    parsed = signed.__class__(wire)
    canon = raw(zero_mutable_fields(parsed.copy(), sending=True))
    icv_len = sa.auth_algo.icv_size
    cases.append((name, alg_id, k, icv_len, esn is not None, esn or 0, wire, canon))
    # Independent check that the ICV in `wire` is the MAC of `canon` (+ ESN high bits).
    assert len(wire) == len(canon)


inner4 = IP(src="198.51.100.1", dst="203.0.113.1", ttl=63, tos=0x10) / UDP(sport=1234, dport=53) / Raw(payload(40))
inner6 = IPv6(src="2001:db8:a::1", dst="2001:db8:b::1", hlim=60) / TCP(sport=40000, dport=80, flags="S") / Raw(payload(24))

# IPv4 transport with options: NOP, Record Route (mutable), Router Alert (immutable), EOL.
opts = [IPOption_NOP(), IPOption_RR(pointer=8, routers=["192.0.2.9", "0.0.0.0"]), IPOption_Router_Alert(),
        IPOption_EOL()]
add("v4_transport_options_sha1", "HMAC-SHA1-96",
    IP(src="192.0.2.1", dst="192.0.2.2", ttl=64, tos=0xb8, flags="DF", id=0x4242, options=opts) /
    ICMP(id=7, seq=1) / Raw(payload(56)), 0x1001, 1)
add("v4_transport_plain_sha256", "SHA2-256-128",
    IP(src="192.0.2.1", dst="192.0.2.2", ttl=17, id=9) / UDP(sport=5, dport=6) / Raw(payload(100)), 0x1002, 5)
add("v4_tunnel_sha512", "SHA2-512-256", inner4, 0x1003, 77,
    tunnel=IP(src="192.0.2.1", dst="192.0.2.2", ttl=64, tos=0x2e, id=0x1234, flags="DF"))
add("v4_tunnel_sha384", "SHA2-384-192", inner4, 0x1004, 2,
    tunnel=IP(src="192.0.2.1", dst="192.0.2.2", ttl=5, id=1))
add("v4_tunnel_md5", "HMAC-MD5-96", inner4, 0x1005, 3, tunnel=IP(src="192.0.2.1", dst="192.0.2.2"))
add("v4_tunnel_cmac", "AES-CMAC-96", inner6, 0x1006, 4, tunnel=IP(src="192.0.2.1", dst="192.0.2.2", tos=3))
add("v4_tunnel_sha256_esn", "SHA2-256-128", inner4, 0x1007, 0xFFFFFFF0,
    tunnel=IP(src="192.0.2.1", dst="192.0.2.2"), esn=0x00000001)

# IPv6 transport: hop-by-hop (Router Alert: immutable; unknown 0x3e: change-en-route),
# destination options before the routing header (0x3f: change-en-route), a type 0
# routing header with two addresses left, destination options for the final
# destination after it (scapy puts AH before those).
hbh = IPv6ExtHdrHopByHop(options=[RouterAlert(value=0), HBHOptUnknown(otype=0x3e, optdata=b"\x11\x22\x33\x44")])
dst1 = IPv6ExtHdrDestOpt(options=[HBHOptUnknown(otype=0x3f, optdata=b"\xaa\xbb"), HBHOptUnknown(otype=0x1e, optdata=b"\xcc\xdd")])
rh = IPv6ExtHdrRouting(type=0, segleft=2, addresses=["2001:db8:1::10", "2001:db8:1::2"])
dst2 = IPv6ExtHdrDestOpt(options=[HBHOptUnknown(otype=0x3d, optdata=b"\x01\x02\x03\x04")])
add("v6_transport_ext_sha1", "HMAC-SHA1-96",
    IPv6(src="2001:db8:1::1", dst="2001:db8:1::9", tc=0xb8, fl=0x12345, hlim=64) / hbh / dst1 / rh / dst2 /
    UDP(sport=7, dport=9) / Raw(payload(64)), 0x2001, 1)
add("v6_transport_ext_sha384", "SHA2-384-192",
    IPv6(src="2001:db8:1::1", dst="2001:db8:1::9", tc=1, fl=7, hlim=3) / hbh / rh / UDP(sport=7, dport=9) /
    Raw(payload(33)), 0x2002, 9)
add("v6_transport_hbh_sha256", "SHA2-256-128",
    IPv6(src="2001:db8:1::1", dst="2001:db8:1::2", hlim=64) / hbh / ICMP() / Raw(payload(20)), 0x2003, 10)
add("v6_tunnel_sha256", "SHA2-256-128", inner6, 0x2004, 11,
    tunnel=IPv6(src="2001:db8:1::1", dst="2001:db8:1::2", tc=0x2e, fl=0xabcde, hlim=64))
add("v6_tunnel_sha384_v4inner", "SHA2-384-192", inner4, 0x2005, 12,
    tunnel=IPv6(src="2001:db8:1::1", dst="2001:db8:1::2", hlim=64))
add("v6_tunnel_sha512_esn", "SHA2-512-256", inner6, 0x2006, 0x10, tunnel=IPv6(src="2001:db8:1::1", dst="2001:db8:1::2"),
    esn=0xdeadbeef)

out = ["// Generated by gen_vectors.py with scapy's scapy.layers.ipsec; do not edit.",
       "// {name, PF_KEY auth alg, key, icv length, esn, seqHigh, packet as sent, scapy's canonical ICV input}",
       "static const ScapyAhVector kScapyAh[] = {"]
for name, alg, k, icv, esn, hi, wire, canon in cases:
    out.append('    {"%s", %d, "%s", %d, %s, 0x%08x,\n     "%s",\n     "%s"},' %
               (name, alg, k.hex(), icv, "true" if esn else "false", hi, wire.hex(), canon.hex()))
out.append("};")
open("vectors.inc", "w").write("\n".join(out) + "\n")
print(len(cases), "vectors")
