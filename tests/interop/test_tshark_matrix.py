"""Interop matrix with Wireshark's ESP dissector (tshark 4.0): every transform it decrypts.

Hosts A and B both run ipsecd with the whole tshark-checkable part of
espeer.MATRIX installed at once (NULL, AES-CBC 128/192/256, AES-CTR 128/256,
AES-GCM 8/12/16 with 128/192/256-bit keys, 3DES; HMAC-SHA1-96,
HMAC-SHA2-256/384/512, HMAC-MD5-96), one SA pair, reqid and B inner address
per transform. A pings every case's B address (IPv4 and IPv6 inner) while B's
veth is captured; tshark, given every SA as a `uat:esp_sa` entry, must decrypt
every ESP packet, of both daemons, into ICMP with the ICV reported good, and
see each SA carry exactly the pings sent. Control: with every key changed by
one bit, no packet may show a good ICV. Outer IPv4 and IPv6, one daemon pair
each. tshark cannot do ChaCha20-Poly1305, CCM, GMAC, CMAC or XCBC
(../../../shared/INTEROP.md); test_scapy_matrix covers those scapy has.
Run as root with /usr/bin/python3; needs ipsecd built (IPSEC_BUILD_DIR).
"""

import os
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))

import espeer  # noqa: E402
from espeer import TSHARK_MATRIX, Capture, matrix_inner, matrix_spi, tshark_esp_sa  # noqa: E402
from harness import Testbed, run  # noqa: E402

COUNT = 2  # pings per case and inner family
FIELDS = ["frame.number", "esp.spi", "esp.sequence", "esp.icv_good", "esp.icv_bad", "icmp.type",
          "icmpv6.type"]


def truthy(v):
    return v in ("1", "True", "true")


def tshark_rows(pcap, outer, wrong_key=False):
    """One dict per ESP frame of the capture, as tshark decoded it with the matrix keys."""
    cmd = ["tshark", "-r", pcap, "-n", "-o", "esp.enable_encryption_decode:TRUE",
           "-o", "esp.enable_authentication_check:TRUE"]
    for i, c in enumerate(TSHARK_MATRIX):
        for d in ("ab", "ba"):
            cmd += ["-o", tshark_esp_sa(c, i, outer, d, wrong_key)]
    cmd += ["-Y", "esp", "-T", "fields", "-E", "separator=|", "-E", "occurrence=a"]
    for f in FIELDS:
        cmd += ["-e", f]
    r = run(cmd, timeout=120)
    return [dict(zip(FIELDS, line.split("|"))) for line in r.stdout.splitlines()]


class TsharkMatrix:
    OUTER_FAMILY = None

    @classmethod
    def setUpClass(cls):
        cls.t0 = time.monotonic()
        cls.tb = Testbed.for_class(cls)
        tb = cls.tb
        for h in tb.hosts():
            tb.start(h)
            espeer.load_matrix(h, TSHARK_MATRIX, cls.OUTER_FAMILY)
        for i, _ in enumerate(TSHARK_MATRIX):  # B answers on every case's address
            tb.b.exec(["ip", "addr", "add", f"{matrix_inner(i, 4)[1]}/32", "dev", "ipsec0"])
            tb.b.exec(["ip", "-6", "addr", "add", f"{matrix_inner(i, 6)[1]}/128", "dev", "ipsec0", "nodad"])
        cls.pcap = os.path.join(tb.b.workdir, "wire.pcap")
        expected = len(TSHARK_MATRIX) * 2 * COUNT * 2  # request and reply each
        with Capture(tb.b, cls.pcap) as cap:
            pings = []
            for i, _ in enumerate(TSHARK_MATRIX):
                for fam in (4, 6):
                    pings.append(tb.a.popen(["ping", f"-{fam}", "-n", "-c", str(COUNT), "-i", "0.2", "-W", "3",
                                             matrix_inner(i, fam)[1]], stdout=subprocess.DEVNULL))
            cls.ping_status = [p.wait(30) for p in pings]
            cap.wait_for(lambda p: len(p) >= expected, timeout=5)
        cls.rows = tshark_rows(cls.pcap, cls.OUTER_FAMILY)

    @classmethod
    def tearDownClass(cls):
        print(f"\n[tshark matrix, outer IPv{cls.OUTER_FAMILY}: {len(TSHARK_MATRIX)} transforms "
              f"in {time.monotonic() - cls.t0:.1f} s]", file=sys.stderr)

    def test_every_ping_was_answered(self):
        self.assertEqual(self.ping_status, [0] * len(self.ping_status))

    def test_every_esp_packet_decrypts_to_icmp_with_a_good_icv(self):
        self.assertEqual(len(self.rows), len(TSHARK_MATRIX) * 2 * COUNT * 2)
        for row in self.rows:
            where = f"frame {row['frame.number']} (SPI {row['esp.spi']}, seq {row['esp.sequence']})"
            self.assertTrue(truthy(row["esp.icv_good"]), f"{where}: ICV not good: {row}")
            self.assertFalse(truthy(row["esp.icv_bad"]), f"{where}: ICV bad: {row}")
            self.assertTrue(row["icmp.type"] or row["icmpv6.type"], f"{where}: no ICMP inside: {row}")

    def test_no_packet_is_good_under_wrong_keys(self):
        bad = tshark_rows(self.pcap, self.OUTER_FAMILY, wrong_key=True)
        self.assertEqual(len(bad), len(self.rows))
        self.assertFalse([r for r in bad if truthy(r["esp.icv_good"])], "good ICV under a wrong key")

    def check_case(self, i):
        """The case's two SAs each carried its pings (IPv4 and IPv6 inner), all good."""
        case = TSHARK_MATRIX[i]
        for d in ("ab", "ba"):
            mine = [r for r in self.rows if r["esp.spi"] and int(r["esp.spi"], 0) == matrix_spi(i, d)]
            self.assertEqual(len(mine), 2 * COUNT, f"{case.name} {d}: {mine}")
            self.assertTrue(all(truthy(r["esp.icv_good"]) for r in mine), f"{case.name} {d}: {mine}")
            kinds = sorted(bool(r["icmp.type"]) for r in mine)  # IPv4 ICMP vs ICMPv6 inside
            self.assertEqual(kinds, [False] * COUNT + [True] * COUNT, f"{case.name} {d}: {mine}")


def _add_case_tests(cls):
    for i, case in enumerate(TSHARK_MATRIX):
        slug = case.name.replace("-", "_").replace("+", "_")
        setattr(cls, f"test_{slug}_is_decrypted_with_good_icvs_both_ways", lambda self, i=i: self.check_case(i))
    return cls


@_add_case_tests
class MatrixOverIpv4(TsharkMatrix, unittest.TestCase):
    OUTER_FAMILY = 4


@_add_case_tests
class MatrixOverIpv6(TsharkMatrix, unittest.TestCase):
    OUTER_FAMILY = 6


if __name__ == "__main__":
    unittest.main(verbosity=2)
