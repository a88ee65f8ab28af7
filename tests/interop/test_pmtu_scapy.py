"""Tunnel details against scapy (issue 3 §7).

1. What lib/esp/pmtu builds, parsed by scapy rather than by our own code
   (esp_pmtu_dump prints it): ICMP fragmentation needed and ICMPv6 packet too
   big (types, MTU, addresses, checksums scapy recomputes to the same bytes),
   outer IPv4/IPv6 headers with ESP in UDP (UDP checksum), and IPv4/IPv6
   fragments that scapy's own defragmenters put back into the whole packet.
2. Fragmented inbound ESP is reassembled by the kernel before our raw socket
   sees it: scapy seals a 1300-byte echo request (python3-cryptography, as
   espeer), wraps it in an outer IPv4/IPv6 header, cuts it with scapy's
   fragment()/fragment6() and sends the pieces from B on a header-included
   socket; A delivers the inner packet (esp_in_packets +1, no drop) and its
   echo reply comes back through the tunnel.
Run as root with /usr/bin/python3; needs the build (IPSEC_BUILD_DIR).
"""

import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))

from scapy.layers.inet import ICMP, IP, UDP, defragment, fragment  # noqa: E402
from scapy.layers.inet6 import (ICMPv6PacketTooBig, IPv6, IPv6ExtHdrFragment,  # noqa: E402
                                defragment6, fragment6)
from scapy.packet import Raw  # noqa: E402

import espeer  # noqa: E402
from espeer import Capture, open_esp, split_trailer  # noqa: E402
from harness import INNER, OUTER, Testbed  # noqa: E402

BUILD = os.environ.get("IPSEC_BUILD_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "build"))


def dump():
    exe = os.path.join(BUILD, "bin", "esp_pmtu_dump")
    out = subprocess.run([exe], check=True, capture_output=True, text=True).stdout
    lines = {}
    for line in out.splitlines():
        name, hexed = line.split(" ", 1)
        lines.setdefault(name, []).append(bytes.fromhex(hexed))
    return lines


def recomputed(pkt, cls):
    """The packet's bytes with scapy's own checksums: the chksum/cksum fields of
    the IP header and of the first upper layer deleted, so scapy computes them
    (the packet an ICMP error quotes is left as it is)."""
    p = cls(bytes(pkt))
    layer = p
    while layer:
        had = False
        for f in ("chksum", "cksum"):
            if f in layer.fields:
                delattr(layer, f)
                had = True
        if had and layer is not p:
            break
        layer = layer.payload if layer.payload else None
    return bytes(p)


class BuildersParsedByScapy(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = dump()

    def test_fragmentation_needed(self):
        raw = self.d["frag_needed"][0]
        p = IP(raw)
        self.assertEqual((p.src, p.dst), ("203.0.113.1", "198.51.100.1"))
        self.assertEqual((p[ICMP].type, p[ICMP].code, p[ICMP].nexthopmtu), (3, 4, 1226))
        self.assertLessEqual(len(raw), 576)
        self.assertEqual(p.len, len(raw))
        self.assertEqual(raw, recomputed(raw, IP), "an IP or ICMP checksum differs from scapy's")
        quoted = bytes(p[ICMP].payload)
        self.assertEqual(quoted[12:20], bytes([198, 51, 100, 1, 203, 0, 113, 1]))

    def test_packet_too_big(self):
        raw = self.d["packet_too_big"][0]
        p = IPv6(raw)
        self.assertEqual((p.src, p.dst), ("2001:db8:b::1", "2001:db8:a::1"))
        self.assertIn(ICMPv6PacketTooBig, p)
        self.assertEqual(p[ICMPv6PacketTooBig].mtu, 1280, "below 1280 is raised to the IPv6 minimum")
        self.assertEqual(len(raw), 1280)
        self.assertEqual(raw, recomputed(raw, IPv6), "the ICMPv6 checksum differs from scapy's")

    def test_outer_headers(self):
        p = IP(self.d["outer4_df"][0])
        self.assertEqual((p.src, p.dst, p.proto, p.flags.DF, p.id, p.tos), ("192.0.2.1", "192.0.2.2", 50, True,
                                                                              0x4242, 2))
        self.assertEqual(bytes(p), recomputed(p, IP))
        u = IP(self.d["outer4_udp"][0])
        self.assertEqual((u[UDP].sport, u[UDP].dport, u[UDP].len, u[UDP].chksum), (4500, 4500, 109, 0))
        self.assertFalse(u.flags.DF)
        v = IPv6(self.d["outer6_udp"][0])
        self.assertEqual((v[UDP].sport, v[UDP].dport, v.plen, v.tc), (4500, 4500, 109, 2))
        self.assertEqual(bytes(v), recomputed(v, IPv6), "the UDP checksum differs from scapy's")

    def test_ipv4_fragments_reassemble_in_scapy(self):
        whole = self.d["esp4_whole"][0]
        frags = [IP(f) for f in self.d["esp4_fragment"]]
        self.assertEqual(len(frags), 3)
        for i, f in enumerate(frags):
            self.assertLessEqual(len(f), 576)
            self.assertEqual(bool(f.flags.MF), i < len(frags) - 1)
            self.assertFalse(f.flags.DF)
            self.assertEqual(f.id, 0xcafe)
            self.assertEqual(bytes(f), recomputed(f, IP))
        back = defragment(frags)
        self.assertEqual(len(back), 1)
        self.assertEqual(bytes(back[0][IP].payload), whole[20:])

    def test_ipv6_fragments_reassemble_in_scapy(self):
        for name in ("esp6", "udp6"):
            whole = self.d[f"{name}_whole"][0]
            frags = [IPv6(f) for f in self.d[f"{name}_fragment"]]
            self.assertEqual(len(frags), 2, name)
            for f in frags:
                self.assertLessEqual(len(f), 1280)
                self.assertEqual(f[IPv6ExtHdrFragment].id, 0x0badcafe)
            back = defragment6(frags)
            self.assertEqual(bytes(back), whole, name)
            if name == "udp6":
                self.assertEqual(bytes(back), recomputed(back, IPv6), "the UDP checksum over the whole datagram")


# Sends whole IP packets (hex) from a namespace on a header-included raw socket.
RAW_SENDER = r"""
import socket, sys
fam = socket.AF_INET6 if sys.argv[1] == '6' else socket.AF_INET
s = socket.socket(fam, socket.SOCK_RAW, socket.IPPROTO_RAW)
for h in sys.argv[3:]:
    s.sendto(bytes.fromhex(h), (sys.argv[2], 0))
"""


class FragmentedInboundEsp(unittest.TestCase):
    ALG = "aes-gcm"

    def check(self, fam):
        with Testbed() as tb:
            espeer.start_host(tb, tb.a, self.ALG, fam)
            a, b = OUTER[fam]
            ia, ib = INNER[4]
            ident = 0x7171
            inner = bytes(IP(src=ib, dst=ia) / ICMP(type=8, id=ident, seq=1) / Raw(b"R" * 1272))
            esp = espeer.seal(self.ALG, "ba", 1, inner)
            if fam == 4:
                frags = fragment(IP(src=b, dst=a, proto=50, id=0x3333) / Raw(esp), fragsize=512)
            else:
                frags = fragment6(IPv6(src=b, dst=a) / IPv6ExtHdrFragment(nh=50, id=0x33333333) / Raw(esp), 600)
            self.assertGreaterEqual(len(frags), 3)
            before = tb.a.stats()["ipsec-forwarder"]["counters"]
            path = os.path.join(tb.b.workdir, f"frag{fam}.pcap")

            def replied(pkts):
                for p in pkts:
                    body = espeer.esp_payload(p)
                    if not body or espeer.outer_of(p)[1] != a:
                        continue
                    try:
                        _, _, plain = open_esp(self.ALG, "ab", body)
                    except espeer.OpenError:
                        continue
                    got, _, nh = split_trailer(self.ALG, plain)
                    r = IP(got)
                    if nh == 4 and ICMP in r and r[ICMP].type == 0 and r[ICMP].id == ident:
                        return r
                return None

            with Capture(tb.b, path) as cap:
                tb.b.exec(["/usr/bin/python3", "-c", RAW_SENDER, str(fam), a] + [bytes(f).hex() for f in frags])
                pkts = cap.wait_for(replied, timeout=5)
            reply = replied(pkts)
            self.assertIsNotNone(reply, "no echo reply for the fragmented ESP packet")
            self.assertEqual(len(reply), len(inner))
            d = espeer.delta(before, tb.a.stats()["ipsec-forwarder"]["counters"])
            self.assertEqual(d.get("esp_in_packets"), 1, d)
            self.assertEqual({k: v for k, v in d.items() if "drop" in k}, {}, d)

    def test_ipv4_fragments_are_reassembled_before_esp(self):
        self.check(4)

    def test_ipv6_fragments_are_reassembled_before_esp(self):
        self.check(6)


if __name__ == "__main__":
    unittest.main(verbosity=2)
