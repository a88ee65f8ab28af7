"""lib/offload's segments and coalesced packets, checked by scapy alone.

offload_dump (argv[1]) prints super-packets, the segments our segmentation
cut from them and what coalescing made of those segments. Scapy parses each
and recomputes every checksum (IPv4 header, TCP, UDP: the fields deleted and
rebuilt must give the same bytes), and the fields GSO rewrites are compared
with what the kernel's tcp_gso_segment / __udp_gso_segment would write: IPv4
id +1, lengths, TCP sequence numbers, FIN/PSH only on the last segment and
CWR only on the first, the payload cut in order. A coalesced packet (TCP or
UDP) must be the super-packet again, with the pseudo-header sum (RFC 793 /
RFC 768 / RFC 8200 §8.1, computed by scapy's in4/in6_pseudoheader) in its
checksum field and a virtio_net_hdr naming it. No root, no network.
"""

import subprocess
import sys
import unittest

from scapy.layers.inet import IP, TCP, UDP, in4_pseudoheader
from scapy.layers.inet6 import IPv6, in6_pseudoheader
from scapy.utils import checksum

DUMP = sys.argv.pop(1) if len(sys.argv) > 1 else "offload_dump"


def load():
    out = subprocess.run([DUMP], check=True, capture_output=True, text=True, timeout=60).stdout
    cases = []
    for line in out.splitlines():
        tag, rest = line.split(" ", 1)
        if tag == "case":
            name, version, proto, mss = rest.split()
            cases.append({"name": name, "version": int(version), "proto": int(proto), "mss": int(mss),
                          "seg": [], "merged": [], "mvnet": []})
        elif tag == "mvnet":
            cases[-1]["mvnet"].append([int(x) for x in rest.split()])
        elif tag == "super":
            cases[-1]["super"] = bytes.fromhex(rest)
        else:
            cases[-1][tag].append(bytes.fromhex(rest))
    return cases


def rebuilt(raw, cls):
    """raw with every checksum scapy knows deleted and recomputed by scapy."""
    p = cls(raw)
    if cls is IP:
        del p.chksum
        del p.len
    else:
        del p.plen
    l4 = p[TCP] if TCP in p else p[UDP]
    del l4.chksum
    if UDP in p:
        del p[UDP].len
    return bytes(p)


class Segments(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.cases = load()

    def test_there_are_cases(self):
        self.assertEqual(len(self.cases), 16)

    def test_checksums_and_lengths_are_scapys(self):
        for c in self.cases:
            cls = IP if c["version"] == 4 else IPv6
            for i, seg in enumerate(c["seg"]):
                with self.subTest(case=c["name"], segment=i):
                    self.assertEqual(seg, rebuilt(seg, cls))

    def test_fields_follow_gso(self):
        for c in self.cases:
            cls = IP if c["version"] == 4 else IPv6
            sup = cls(c["super"])
            l4cls = TCP if c["proto"] == 6 else UDP
            payload = bytes(sup[l4cls].payload)
            segs = [cls(s) for s in c["seg"]]
            gso = c["name"].find("csum_only") < 0
            n = -(-len(payload) // c["mss"]) if gso else 1
            with self.subTest(case=c["name"], size=len(payload)):
                self.assertEqual(len(segs), n)
                self.assertEqual(b"".join(bytes(s[l4cls].payload) for s in segs), payload)
                for i, s in enumerate(segs):
                    last = i == n - 1
                    if gso:
                        self.assertEqual(len(s[l4cls].payload), len(payload) - i * c["mss"] if last else c["mss"])
                    if c["version"] == 4:
                        self.assertEqual(s.id, (sup.id + i) & 0xFFFF)
                        self.assertEqual(s.flags, sup.flags)
                    if l4cls is TCP:
                        t, st = s[TCP], sup[TCP]
                        self.assertEqual(t.seq, (st.seq + i * c["mss"]) & 0xFFFFFFFF)
                        self.assertEqual(t.ack, st.ack)
                        self.assertEqual(t.options, st.options)
                        self.assertEqual("F" in t.flags, last)
                        self.assertEqual("P" in t.flags, last)
                        self.assertEqual("C" in t.flags, i == 0)
                        self.assertIn("A", t.flags)

    def test_coalescing_gives_the_super_packet_back(self):
        for c in self.cases:
            if len(c["seg"]) < 2:
                continue
            with self.subTest(case=c["name"], size=len(c["super"])):
                self.assertEqual(len(c["merged"]), 1)
                merged = c["merged"][0]
                self.assertEqual(merged, c["super"])
                cls = IP if c["version"] == 4 else IPv6
                l4cls = TCP if c["proto"] == 6 else UDP
                p = cls(merged)
                l4_len = len(bytes(p[l4cls]))
                if cls is IP:
                    pseudo = in4_pseudoheader(c["proto"], p, l4_len)
                    self.assertEqual(IP(merged).chksum, IP(rebuilt(merged, IP)).chksum)
                else:
                    pseudo = in6_pseudoheader(c["proto"], p, l4_len)
                self.assertEqual(p[l4cls].chksum, (~checksum(bytes(pseudo))) & 0xFFFF,
                                 "the checksum field holds the pseudo-header sum (NEEDS_CSUM)")
                flags, gso_type, hdr_len, gso_size, csum_start, csum_offset = c["mvnet"][0]
                ip_len = 20 if cls is IP else 40
                self.assertEqual(flags, 1)
                self.assertEqual(gso_size, c["mss"])
                if l4cls is TCP:
                    self.assertEqual(gso_type & 0x7F, 1 if cls is IP else 4)
                    self.assertEqual(gso_type & 0x80, 0x80, "CWR on the first: the ECN bit")
                    self.assertEqual(hdr_len, ip_len + p[TCP].dataofs * 4)
                    self.assertEqual((csum_start, csum_offset), (ip_len, 16))
                else:
                    self.assertEqual(p[UDP].len, l4_len)
                    self.assertEqual(gso_type, 5, "UDP_L4")
                    self.assertEqual(hdr_len, ip_len + 8)
                    self.assertEqual((csum_start, csum_offset), (ip_len, 6))


if __name__ == "__main__":
    unittest.main(verbosity=2)
