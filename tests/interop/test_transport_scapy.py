"""Interop of transport-mode ESP (RFC 4303 §3.1.1) with scapy and tshark.

Host A runs a real ipsecd with transport SAs to B and B's addresses as its
transport_peers; host B has no IPsec and the test plays B's side. Our ESP,
captured on B's veth, must open in scapy's SecurityAssociation in transport
mode (ICV checked) into A's own ICMP echo request between the hosts' own
addresses, and tshark must find every ICV good (and none with a wrong key);
ESP that scapy seals in transport mode and sends to A must be answered by
A's kernel through A's ipsecd. GCM and CBC+SHA-256, IPv4 and IPv6.
Run as root with /usr/bin/python3; needs ipsecd built (IPSEC_BUILD_DIR).
"""

import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))

from scapy.layers.inet import ICMP, IP  # noqa: E402
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6  # noqa: E402
from scapy.layers.ipsec import ESP  # noqa: E402
from scapy.packet import Raw  # noqa: E402

import espeer  # noqa: E402
import test_tshark  # noqa: E402  (its tshark_rows; its test class is not imported by name)
from espeer import Capture, outer_of, scapy_sa, send_esp  # noqa: E402
from harness import OUTER, SPI_AB, SPI_BA, Testbed, ping  # noqa: E402


def setkey_text(alg):
    out = ["flush;", "spdflush;"]
    for fam in (4, 6):
        a, b = OUTER[fam]
        for direction, src, dst, spi in (("ab", a, b, SPI_AB), ("ba", b, a, SPI_BA)):
            ck, ak = espeer.keys(alg, direction)
            if alg == "aes-gcm":
                e = f"-E aes-gcm-16 0x{ck.hex()}"
            else:
                e = f"-E aes-cbc 0x{ck.hex()} -A hmac-sha256 0x{ak.hex()}"
            out.append(f"add {src} {dst} esp {spi:#x} -m transport -r 64 {e};")
        out.append(f"spdadd {a} {b} any -P out ipsec esp/transport//require;")
        out.append(f"spdadd {b} {a} any -P in ipsec esp/transport//require;")
    return "\n".join(out) + "\n"


def open_transport(sa, pkt):
    """The host's own packet inside a captured transport-mode ESP packet (scapy checks the ICV)."""
    net = pkt[IP] if IP in pkt else pkt[IPv6]
    return sa.decrypt(net.copy())


class TransportPeer:
    ALG = None

    @classmethod
    def setUpClass(cls):
        cls.tb = Testbed.for_class(cls)
        cls.tb.start(cls.tb.a, setkey_text(cls.ALG), transport_peers=f"{OUTER[4][1]}, {OUTER[6][1]}",
                     local_addresses=f"{OUTER[4][0]}, {OUTER[6][0]}")
        cls.sa_ba = scapy_sa(cls.ALG, "ba")  # one sequence counter for the class
        cls.ident = 0x5151

    def pcap(self, name):
        return os.path.join(self.tb.b.workdir, f"{name}.pcap")

    def ours_to_scapy(self, fam):
        a, b = OUTER[fam]
        path = self.pcap(f"out{fam}")
        with Capture(self.tb.b, path) as cap:
            ping(self.tb.a, b, count=3, interval="0.2", timeout=15, extra=("-w", "1"))
            pkts = cap.wait_for(lambda p: len([q for q in p if outer_of(q)[1] == a]) >= 3, timeout=5)
        pkts = [p for p in pkts if outer_of(p)[1] == a]
        self.assertGreaterEqual(len(pkts), 3, "fewer ESP packets than pings reached B")
        sa = scapy_sa(self.ALG, "ab")
        for p in pkts:
            self.assertEqual(outer_of(p), (fam, a, b))
            self.assertEqual(p[ESP].spi, SPI_AB)
            inner = open_transport(sa, p)  # IPSecIntegrityError here is a bad ICV
            self.assertEqual((inner.src, inner.dst), (a, b))
            if fam == 4:
                self.assertEqual(inner.proto, 1)
                self.assertEqual(inner[ICMP].type, 8)
            else:
                self.assertEqual(inner.nh, 58)
                self.assertIn(ICMPv6EchoRequest, inner)
        rows = test_tshark.tshark_rows(path, self.ALG, fam)
        ours = [r for r in rows if r["esp.spi"] and int(r["esp.spi"], 0) == SPI_AB]
        self.assertGreaterEqual(len(ours), 3, rows)
        for r in ours:
            self.assertTrue(test_tshark.truthy(r["esp.icv_good"]), r)
            self.assertIn("8" if fam == 4 else "128", (r["icmp.type"] + r["icmpv6.type"]).split(","), r)
        bad = test_tshark.tshark_rows(path, self.ALG, fam, wrong_key=True)
        self.assertFalse([r for r in bad if test_tshark.truthy(r["esp.icv_good"])], "a wrong key gave good ICVs")

    def scapy_to_ours(self, fam):
        a, b = OUTER[fam]
        payload = Raw(b"scapy-transport-" * 4)
        seqs = (1, 2, 3)
        sent = []
        for n in seqs:
            if fam == 4:
                pkt = IP(bytes(IP(src=b, dst=a) / ICMP(type=8, id=self.ident, seq=n) / payload))
            else:
                pkt = IPv6(bytes(IPv6(src=b, dst=a) / ICMPv6EchoRequest(id=self.ident, seq=n) / payload))
            sent.append(bytes(self.sa_ba.encrypt(pkt)[ESP]))
        before = self.tb.a.stats()["ipsec-forwarder"]["counters"]
        sa_ab = scapy_sa(self.ALG, "ab")

        def replies(pkts):
            got = set()
            for p in pkts:
                if outer_of(p)[1] != a:
                    continue
                try:
                    inner = open_transport(sa_ab, p)
                except Exception:
                    continue
                seq = espeer.echo_reply_seq(inner, fam, self.ident)
                if seq is not None:
                    got.add(seq)
            return got

        with Capture(self.tb.b, self.pcap(f"in{fam}")) as cap:
            send_esp(self.tb.b, a, sent, gap=0.05)
            pkts = cap.wait_for(lambda p: replies(p) >= set(seqs), timeout=5)
        self.assertEqual(replies(pkts), set(seqs), "not every echo request sealed by scapy was answered")
        d = espeer.delta(before, self.tb.a.stats()["ipsec-forwarder"]["counters"])
        self.assertEqual(d.get("transport_in_packets"), len(seqs), d)
        self.assertEqual({k: v for k, v in d.items() if k.startswith("esp_in_drop")}, {}, d)

    def test_ipv4_from_us_opens_in_scapy_and_tshark(self):
        self.ours_to_scapy(4)

    def test_ipv6_from_us_opens_in_scapy_and_tshark(self):
        self.ours_to_scapy(6)

    def test_ipv4_sealed_by_scapy_is_answered(self):
        self.scapy_to_ours(4)

    def test_ipv6_sealed_by_scapy_is_answered(self):
        self.scapy_to_ours(6)


class GcmTransport(TransportPeer, unittest.TestCase):
    ALG = "aes-gcm"


class CbcSha256Transport(TransportPeer, unittest.TestCase):
    ALG = "aes-cbc"


if __name__ == "__main__":
    unittest.main(verbosity=2)
