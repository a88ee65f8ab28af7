"""Interop with Wireshark's ESP dissector (tshark 4.0): two real ipsecd talk, tshark reads the wire.

Hosts A and B both run ipsecd (Testbed.start_pair). The test captures on B's
veth with tcpdump while pings cross the tunnel both ways (IPv4 and IPv6
inner), then gives tshark the harness keys as `uat:esp_sa` entries and
requires every ESP packet to decrypt into an ICMP packet with the ICV
reported good. As a control, the same capture read with a wrong key must show
no good ICV, so the check cannot pass vacuously. tshark cannot do ESN, GMAC or
ChaCha20 (../../../shared/INTEROP.md); the harness SAs use none of them.
Run as root with /usr/bin/python3; needs ipsecd built (IPSEC_BUILD_DIR).
"""

import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))

import espeer  # noqa: E402
from espeer import Capture  # noqa: E402
from harness import INNER, OUTER, SPI_AB, SPI_BA, Testbed, ping, run  # noqa: E402

TSHARK_ENC = {"aes-gcm": "AES-GCM with 16 octet ICV [RFC4106]", "aes-cbc": "AES-CBC [RFC3602]"}
TSHARK_AUTH = {"aes-gcm": "NULL", "aes-cbc": "HMAC-SHA-256-128 [RFC4868]"}
FIELDS = ["frame.number", "esp.spi", "esp.sequence", "esp.icv_good", "esp.icv_bad", "icmp.type",
          "icmpv6.type", "ip.src", "ipv6.src"]


def esp_sa_option(alg, outer, direction, wrong_key=False):
    a, b = OUTER[outer]
    src, dst = (a, b) if direction == "ab" else (b, a)
    spi = SPI_AB if direction == "ab" else SPI_BA
    ck, ak = espeer.keys(alg, direction)
    if wrong_key:
        ck = bytes([ck[0] ^ 1]) + ck[1:]
        ak = bytes([ak[0] ^ 1]) + ak[1:] if ak else ak
    auth_key = f"0x{ak.hex()}" if ak else ""
    return ("uat:esp_sa:" + ",".join(f'"{v}"' for v in (
        f"IPv{outer}", src, dst, f"0x{spi:08x}", TSHARK_ENC[alg], f"0x{ck.hex()}", TSHARK_AUTH[alg], auth_key)))


def tshark_rows(pcap, alg, outer, wrong_key=False):
    """One dict per ESP frame of the capture, as tshark decoded it with the given keys."""
    cmd = ["tshark", "-r", pcap, "-n", "-o", "esp.enable_encryption_decode:TRUE",
           "-o", "esp.enable_authentication_check:TRUE"]
    for d in ("ab", "ba"):
        cmd += ["-o", esp_sa_option(alg, outer, d, wrong_key)]
    cmd += ["-Y", "esp", "-T", "fields", "-E", "separator=|", "-E", "occurrence=a"]
    for f in FIELDS:
        cmd += ["-e", f]
    r = run(cmd, timeout=60)
    rows = []
    for line in r.stdout.splitlines():
        rows.append(dict(zip(FIELDS, line.split("|"))))
    return rows


def truthy(v):
    return v in ("1", "True", "true")


class TsharkReadsOurTunnel:
    ALG = None
    OUTER_FAMILY = None

    def test_every_esp_packet_decrypts_to_icmp_with_a_good_icv(self):
        with Testbed() as tb:
            espeer.start_pair(tb, self.ALG, self.OUTER_FAMILY)
            pcap = os.path.join(tb.b.workdir, "wire.pcap")
            count = 3
            with Capture(tb.b, pcap) as cap:
                for fam in (4, 6):
                    a_in, b_in = INNER[fam]
                    for src, dst in ((tb.a, b_in), (tb.b, a_in)):
                        r = ping(src, dst, count=count, interval="0.2", timeout=15)
                        self.assertEqual(r.returncode, 0, f"ping {dst} through the tunnel:\n{r.stdout}")
                expected = 4 * count * 2  # four pings, request and reply each
                cap.wait_for(lambda p: len(p) >= expected, timeout=5)
            rows = tshark_rows(pcap, self.ALG, self.OUTER_FAMILY)
            self.assertGreaterEqual(len(rows), expected)
            icmp4 = icmp6 = 0
            for row in rows:
                where = f"frame {row['frame.number']} (SPI {row['esp.spi']}, seq {row['esp.sequence']})"
                self.assertTrue(truthy(row["esp.icv_good"]), f"{where}: ICV not good: {row}")
                self.assertFalse(truthy(row["esp.icv_bad"]), f"{where}: ICV bad: {row}")
                self.assertTrue(row["icmp.type"] or row["icmpv6.type"], f"{where}: no ICMP inside: {row}")
                icmp4 += bool(row["icmp.type"])
                icmp6 += bool(row["icmpv6.type"])
            self.assertEqual((icmp4, icmp6), (2 * 2 * count, 2 * 2 * count))
            # Control: with a wrong key tshark must find no packet good.
            bad = tshark_rows(pcap, self.ALG, self.OUTER_FAMILY, wrong_key=True)
            self.assertEqual(len(bad), len(rows))
            self.assertFalse(any(truthy(r["esp.icv_good"]) for r in bad), "good ICV under a wrong key")


class GcmOverIpv4(TsharkReadsOurTunnel, unittest.TestCase):
    ALG, OUTER_FAMILY = "aes-gcm", 4


class GcmOverIpv6(TsharkReadsOurTunnel, unittest.TestCase):
    ALG, OUTER_FAMILY = "aes-gcm", 6


class CbcSha256OverIpv4(TsharkReadsOurTunnel, unittest.TestCase):
    ALG, OUTER_FAMILY = "aes-cbc", 4


class CbcSha256OverIpv6(TsharkReadsOurTunnel, unittest.TestCase):
    ALG, OUTER_FAMILY = "aes-cbc", 6


if __name__ == "__main__":
    unittest.main(verbosity=2)
