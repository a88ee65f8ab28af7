"""Interop with scapy's ESP (python3-scapy 2.5): our tunnel-mode ESP against code nobody here wrote.

Host A runs a real ipsecd; host B has no IPsec at all and the test plays B's
side: it captures A's ESP on B's veth with tcpdump and opens it with scapy's
SecurityAssociation (ICV checked), and it seals ESP with scapy and sends it to
A, whose kernel must answer the ping through A's ipsecd. Every algorithm
(aes-gcm-16, aes-cbc + hmac-sha256) × outer family × inner family.

scapy's known defects (../../../shared/INTEROP.md) are worked around here:
its received padding is sliced wrongly, so padding is checked on the bytes
python3-cryptography decrypts; it does not check the tunnel next header, so
the test does; its first sequence number is 1 (0 cannot be sent anyway).
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
from espeer import Capture, esp_payload, outer_of, scapy_sa, send_esp  # noqa: E402
from harness import INNER, INNER_NETS, OUTER, Testbed, binary, ping, sa_lines, spd_lines, wait_for  # noqa: E402


def decrypt_inner(sa, pkt):
    """(next header, inner scapy packet) of a captured ESP packet; raises if scapy finds the ICV bad."""
    net = pkt[IP] if IP in pkt else pkt[IPv6]  # tcpdump captured Ethernet frames
    res = sa.decrypt(net.copy())  # transport-style: outer header + the decrypted payload
    nh = res[IP].proto if res.version == 4 else res[IPv6].nh
    data = bytes(res.payload)
    if nh == espeer.NH_IPV4:
        return nh, IP(data)
    if nh == espeer.NH_IPV6:
        return nh, IPv6(data)
    return nh, None


class ScapyPeer:
    """One ipsecd in A per (algorithm, outer family); B is the test with scapy."""

    ALG = None
    OUTER_FAMILY = None

    @classmethod
    def setUpClass(cls):
        cls.tb = Testbed.for_class(cls)
        outer = cls.OUTER_FAMILY
        espeer.start_host(cls.tb, cls.tb.a, cls.ALG, outer)
        # B's sender keeps one sequence counter across the tests of the class.
        cls.sa_ba = scapy_sa(cls.ALG, "ba")
        cls.ident = 0x4242

    def capture_path(self, name):
        return os.path.join(self.tb.b.workdir, f"{name}.pcap")

    def check_outer(self, pkt, src, dst):
        v, s, d = outer_of(pkt)
        self.assertEqual((v, s, d), (self.OUTER_FAMILY, src, dst))

    def check_padding_and_iv(self, esp, seen_ivs):
        """Padding by RFC 4303 §2.4 on bytes decrypted without scapy; GCM IVs never repeat."""
        seq, iv, plain = espeer.open_esp(self.ALG, "ab", esp)
        _, pad, _ = espeer.split_trailer(self.ALG, plain)
        self.assertEqual(pad, espeer.rfc_padding(len(pad)), "padding is not 1, 2, 3, ...")
        self.assertEqual(len(plain) % espeer.BLOCK[self.ALG], 0)
        self.assertLess(len(pad), espeer.BLOCK[self.ALG], "more padding than alignment needs")
        self.assertNotIn(iv, seen_ivs, f"IV {iv.hex()} repeated")
        seen_ivs.add(iv)
        return seq

    def ours_to_scapy(self, fam):
        a, b = self.tb.a, self.tb.b
        src, dst = INNER[fam]
        with Capture(b, self.capture_path(f"out{fam}")) as cap:
            # Nobody answers (B has no IPsec), so -w 1 ends ping instead of its 2 s linger.
            ping(a, dst, count=3, interval="0.2", timeout=15, extra=("-w", "1"))
            pkts = cap.wait_for(lambda p: len(p) >= 3, timeout=5)
        self.assertGreaterEqual(len(pkts), 3, "fewer ESP packets than pings reached B")
        sa = scapy_sa(self.ALG, "ab")
        seqs, ivs = [], set()
        for p in pkts:
            self.check_outer(p, OUTER[self.OUTER_FAMILY][0], OUTER[self.OUTER_FAMILY][1])
            self.assertEqual(p[ESP].spi, espeer.SPI_AB)
            nh, inner = decrypt_inner(sa, p)  # IPSecIntegrityError here is a bad ICV
            self.assertEqual(nh, espeer.NH_IPV4 if fam == 4 else espeer.NH_IPV6)
            self.assertEqual((inner.src, inner.dst), (src, dst))
            if fam == 4:
                self.assertEqual(inner[ICMP].type, 8)
            else:
                self.assertIn(ICMPv6EchoRequest, inner)
            seqs.append(self.check_padding_and_iv(esp_payload(p), ivs))
        self.assertEqual(seqs, sorted(set(seqs)), "sequence numbers not strictly increasing")
        self.assertGreater(seqs[0], 0)

    def scapy_to_ours(self, fam):
        a, b = self.tb.a, self.tb.b
        ours, theirs = INNER[fam]
        aout, bout = OUTER[self.OUTER_FAMILY]
        self.sa_ba.tunnel_header = (IP if self.OUTER_FAMILY == 4 else IPv6)(src=bout, dst=aout)
        payload = Raw(b"scapy-interop-" * 4)
        seqs = (1, 2, 3)
        sent = []
        for n in seqs:
            if fam == 4:
                inner = IP(src=theirs, dst=ours) / ICMP(type=8, id=self.ident, seq=n) / payload
            else:
                inner = IPv6(src=theirs, dst=ours) / ICMPv6EchoRequest(id=self.ident, seq=n) / payload
            sent.append(bytes(self.sa_ba.encrypt(inner)[ESP]))
        before = a.stats()["ipsec-forwarder"]["counters"]
        sa_ab = scapy_sa(self.ALG, "ab")

        def from_a(pkts):  # the capture also holds what the test sent
            return [p for p in pkts if outer_of(p)[1] == aout]

        def replies(pkts):
            got = set()
            for p in from_a(pkts):
                try:
                    _, inner = decrypt_inner(sa_ab, p)
                except Exception:  # judged below, once the capture is complete
                    continue
                if inner is None or (inner.src, inner.dst) != (ours, theirs):
                    continue
                seq = espeer.echo_reply_seq(inner, fam, self.ident)
                if seq is not None:
                    got.add(seq)
            return got

        with Capture(b, self.capture_path(f"in{fam}")) as cap:
            send_esp(b, aout, sent, gap=0.05)
            pkts = cap.wait_for(lambda p: replies(p) >= set(seqs), timeout=5)
        self.assertEqual(replies(pkts), set(seqs), "not every echo request sealed by scapy was answered")
        self.assertEqual(len(pkts) - len(from_a(pkts)), len(seqs), "the capture missed what the test sent")
        for p in from_a(pkts):
            self.check_outer(p, aout, bout)
            decrypt_inner(sa_ab, p)  # every packet A sent must open, not just the replies
        after = a.stats()["ipsec-forwarder"]["counters"]
        d = espeer.delta(before, after)
        self.assertEqual(d.get("esp_in_packets"), len(seqs), d)
        # (A's kernel may route other packets, e.g. MLD, into the TUN: out_drop_no_policy.)
        self.assertEqual({k: v for k, v in d.items() if k.startswith("esp_in_drop")}, {}, d)

    def test_ipv4_inner_from_us_opens_in_scapy(self):
        self.ours_to_scapy(4)

    def test_ipv6_inner_from_us_opens_in_scapy(self):
        self.ours_to_scapy(6)

    def test_ipv4_inner_sealed_by_scapy_is_answered(self):
        self.scapy_to_ours(4)

    def test_ipv6_inner_sealed_by_scapy_is_answered(self):
        self.scapy_to_ours(6)


class SetkeyFileWithPolicies(unittest.TestCase):
    """Not interop: a setkey_file with policies loads (policy replies carry the
    refcount in sadb_msg_reserved, which setkey must accept)."""

    def test_ipsecd_loads_a_setkey_file_with_policies(self):
        with Testbed() as tb:
            tb.start(tb.a, "flush;\nspdflush;\n" + sa_lines("aes-gcm", 4) + spd_lines("a", 4))
            # ipsecd fails closed (exits) when its setkey_file does not load: once
            # its policies are in the SPD, it loaded and ipsecd is still there.
            def policies():
                return tb.a.exec([binary("setkey"), "--socket", os.path.join(tb.a.runtime, "pfkey"), "-DP"],
                                 check=False).stdout
            wait_for(lambda: INNER_NETS[4][0] in policies() and INNER_NETS[4][1] in policies(), 8,
                     lambda: f"the setkey_file's policies in A's SPD:\n{tb.log_text(tb.a)}")
            self.assertIsNone(tb.a.proc.poll(), tb.log_text(tb.a))
            self.assertIn("ipsec-forwarder", tb.a.stats())


class GcmOverIpv4(ScapyPeer, unittest.TestCase):
    ALG, OUTER_FAMILY = "aes-gcm", 4


class GcmOverIpv6(ScapyPeer, unittest.TestCase):
    ALG, OUTER_FAMILY = "aes-gcm", 6


class CbcSha256OverIpv4(ScapyPeer, unittest.TestCase):
    ALG, OUTER_FAMILY = "aes-cbc", 4


class CbcSha256OverIpv6(ScapyPeer, unittest.TestCase):
    ALG, OUTER_FAMILY = "aes-cbc", 6


if __name__ == "__main__":
    unittest.main(verbosity=2)
