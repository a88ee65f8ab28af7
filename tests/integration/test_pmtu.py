"""Tunnel details (issue 3 §7) between two ipsecd: PMTU behaviour, the outer DF
bit, outer fragmentation, TFC padding and dummy packets.

SAs carry their options from setkey's add line (-mtu, -df, -tfc, -dummy, our
SA_OPTIONS extension); the defaults come from net.inet.ipsec.default_mtu and
net.inet.ipsec.dfbit. Outer packets are captured on B's veth with tcpdump
and read with scapy. The harness's TUN MTU is 1400, so 1300-byte pings pass
the TUN and meet the SA's 1280.
"""

import os
import re
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "interop"))

from scapy.layers.inet import IP  # noqa: E402
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment  # noqa: E402

import espeer  # noqa: E402
from espeer import Capture  # noqa: E402
from harness import INNER, OUTER, Testbed, ping, sa_lines, spd_lines  # noqa: E402

ALG = "aes-gcm"
# The largest inner packet an AES-GCM SA (IV 8, ICV 16, 4-byte alignment)
# carries in 1280 bytes behind an outer IPv4 header: the MTU A's ICMP reports.
INNER_LIMIT_4 = (1280 - 20 - 8 - 8 - 16) // 4 * 4 - 2


def sa_text(outer, ab="", ba=""):
    """The harness SAs with extra options on A→B (ab) and B→A (ba)."""
    first, second = sa_lines(ALG, outer).splitlines()
    first = first.replace("-r 64", f"-r 64 {ab}")
    second = second.replace("-r 64", f"-r 64 {ba}")
    return first + "\n" + second + "\n"


def start(tb, outer, ab="", ba=""):
    sas = sa_text(outer, ab, ba)
    for h in tb.hosts():
        tb.start(h, "flush;\nspdflush;\n" + sas + spd_lines(h.side, outer))


def counters(h):
    return h.stats()["ipsec-forwarder"]["counters"]


def from_a(pkts, outer):
    return [p for p in pkts if espeer.outer_of(p)[1] == OUTER[outer][0]]


class PathMtu(unittest.TestCase):
    def test_ipv4_outer_mtu_1280_fragments_or_answers_with_icmp(self):
        with Testbed() as tb:
            start(tb, 4, "-mtu 1280", "-mtu 1280")
            # Without DF the outer packet is fragmented, both ways, and the replies come back.
            with Capture(tb.b, os.path.join(tb.b.workdir, "dont.pcap"), "ip proto 50") as cap:
                r = ping(tb.a, INNER[4][1], count=3, extra=("-M", "dont", "-s", "1300"))
                pkts = cap.wait_for(lambda p: len(p) >= 12, timeout=3)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            mine = from_a(pkts, 4)
            frags = [p for p in mine if p[IP].flags.MF or p[IP].frag > 0]
            self.assertGreaterEqual(len(frags), 6, [p.summary() for p in mine])
            self.assertTrue(all(p[IP].len <= 1280 for p in pkts))
            self.assertFalse(any(p[IP].flags.DF for p in frags), "a fragment with DF")
            self.assertGreaterEqual(counters(tb.a)["pmtu_out_fragmented"], 3)
            self.assertGreaterEqual(counters(tb.b)["pmtu_out_fragmented"], 3)
            self.assertGreaterEqual(counters(tb.b)["esp_in_packets"], 3)

            # With DF the sender hears "fragmentation needed" with the inner MTU.
            before = counters(tb.a)
            r = ping(tb.a, INNER[4][1], count=2, extra=("-M", "do", "-s", "1300"))
            self.assertNotEqual(r.returncode, 0)
            m = re.search(r"Frag needed and DF set \(mtu = (\d+)\)", r.stdout)
            self.assertIsNotNone(m, r.stdout + r.stderr)
            self.assertEqual(int(m.group(1)), INNER_LIMIT_4)
            d = espeer.delta(before, counters(tb.a))
            self.assertGreaterEqual(d.get("pmtu_out_drop_too_big", 0), 1, d)
            self.assertGreaterEqual(d.get("pmtu_icmp_sent", 0), 1, d)
            # The kernel took the MTU: a packet that fits it goes through with DF.
            r = ping(tb.a, INNER[4][1], count=2, extra=("-M", "do", "-s", str(INNER_LIMIT_4 - 28)))
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

            # IPv6 inside: "packet too big" with the IPv6 minimum; then 1280-byte
            # pieces, fragmented outside, get through.
            before = counters(tb.a)
            r = ping(tb.a, INNER[6][1], count=4, extra=("-s", "1300"), timeout=15)
            self.assertRegex(r.stdout, r"Packet too big: mtu=1280", r.stdout + r.stderr)
            self.assertIn("bytes from", r.stdout)
            d = espeer.delta(before, counters(tb.a))
            self.assertGreaterEqual(d.get("pmtu_icmp_sent", 0), 1, d)
            self.assertGreaterEqual(d.get("pmtu_out_fragmented", 0), 1, d)

    def test_ipv6_outer_is_fragmented_by_the_source(self):
        with Testbed() as tb:
            start(tb, 6, "-mtu 1280", "-mtu 1280")
            with Capture(tb.b, os.path.join(tb.b.workdir, "v6.pcap"), "ip6") as cap:
                r = ping(tb.a, INNER[4][1], count=3, extra=("-M", "dont", "-s", "1300"))
                pkts = cap.wait_for(lambda p: len(p) >= 12, timeout=3)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            frags = [p for p in from_a(pkts, 6) if IPv6ExtHdrFragment in p]
            self.assertGreaterEqual(len(frags), 6, [p.summary() for p in pkts])
            self.assertTrue(all(p[IPv6ExtHdrFragment].nh == 50 for p in frags))
            self.assertTrue(all(len(p[IPv6]) <= 1280 for p in frags))
            self.assertGreaterEqual(counters(tb.a)["pmtu_out_fragmented"], 3)

    def test_default_mtu_sysctl_applies_to_sas_without_their_own(self):
        with Testbed() as tb:
            start(tb, 4)
            tb.a.ipsecctl("sysctl", "net.inet.ipsec.default_mtu=1280")
            r = ping(tb.a, INNER[4][1], count=2, extra=("-M", "do", "-s", "1300"))
            self.assertIn(f"mtu = {INNER_LIMIT_4}", r.stdout, r.stdout + r.stderr)
            tb.a.ipsecctl("sysctl", "net.inet.ipsec.default_mtu=1500")
            r = ping(tb.a, INNER[4][1], count=2, extra=("-M", "dont", "-s", "1300"))
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)


def outer_df(tb, dont_fragment_inner, name):
    """The DF bits of A's outer packets for two small pings with DF (do) or without (dont) inside."""
    with Capture(tb.b, os.path.join(tb.b.workdir, f"{name}.pcap"), "ip proto 50") as cap:
        r = ping(tb.a, INNER[4][1], count=2, extra=("-M", "do" if dont_fragment_inner else "dont", "-s", "100"))
        pkts = cap.wait_for(lambda p: len(from_a(p, 4)) >= 2, timeout=3)
    assert r.returncode == 0, r.stdout
    return {bool(p[IP].flags.DF) for p in from_a(pkts, 4)}


class DfBit(unittest.TestCase):
    def test_dfbit_sysctl_clear_set_copy(self):
        with Testbed() as tb:
            start(tb, 4)
            self.assertEqual(outer_df(tb, True, "copy-do"), {True}, "default: copy")
            self.assertEqual(outer_df(tb, False, "copy-dont"), {False}, "default: copy")
            tb.a.ipsecctl("sysctl", "net.inet.ipsec.dfbit=0")
            self.assertEqual(outer_df(tb, True, "clear"), {False})
            tb.a.ipsecctl("sysctl", "net.inet.ipsec.dfbit=1")
            self.assertEqual(outer_df(tb, False, "set"), {True})

    def test_per_sa_policy_wins_over_the_sysctl(self):
        with Testbed() as tb:
            start(tb, 4, "-df clear", "-df set")
            tb.a.ipsecctl("sysctl", "net.inet.ipsec.dfbit=1")
            self.assertEqual(outer_df(tb, True, "sa-clear"), {False})
            tb.b.ipsecctl("sysctl", "net.inet.ipsec.dfbit=0")
            with Capture(tb.b, os.path.join(tb.b.workdir, "sa-set.pcap"), "ip proto 50") as cap:
                r = ping(tb.a, INNER[4][1], count=2, extra=("-M", "dont", "-s", "100"))
                pkts = cap.wait_for(lambda p: len(p) >= 4, timeout=3)
            self.assertEqual(r.returncode, 0)
            from_b = [p for p in pkts if p[IP].src == OUTER[4][1]]
            self.assertTrue(from_b)
            self.assertTrue(all(p[IP].flags.DF for p in from_b), "B's SA says set")


class TfcAndDummies(unittest.TestCase):
    def test_tfc_padding_and_dummy_packets(self):
        with Testbed() as tb:
            start(tb, 4, "-tfc 1000 -dummy 1000", "-tfc 600")
            with Capture(tb.b, os.path.join(tb.b.workdir, "tfc.pcap"), "ip proto 50") as cap:
                r = ping(tb.a, INNER[4][1], count=3)
                pkts = cap.wait_for(lambda p: len(p) >= 6, timeout=3)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            a_out = from_a(pkts, 4)
            b_out = [p for p in pkts if p[IP].src == OUTER[4][1]]
            self.assertTrue(a_out and b_out)
            self.assertTrue(all(len(espeer.esp_payload(p)) >= 1000 for p in a_out), [len(p) for p in a_out])
            self.assertTrue(all(len(espeer.esp_payload(p)) >= 600 for p in b_out), [len(p) for p in b_out])
            self.assertGreaterEqual(counters(tb.a)["esp_out_tfc_padded"], 3)
            self.assertGreaterEqual(counters(tb.b)["esp_in_tfc_stripped"], 3)
            self.assertGreaterEqual(counters(tb.a)["esp_in_tfc_stripped"], 3)

            # Idle: A's SA sends a dummy each second, B discards them, nothing is delivered.
            a0, b0 = counters(tb.a), counters(tb.b)
            with Capture(tb.b, os.path.join(tb.b.workdir, "dummy.pcap"), "ip proto 50") as cap:
                time.sleep(3.5)
                pkts = cap.packets()
            a1, b1 = counters(tb.a), counters(tb.b)
            self.assertGreaterEqual(a1["esp_out_dummy"] - a0["esp_out_dummy"], 2)
            self.assertGreaterEqual(b1["esp_in_dummy"] - b0["esp_in_dummy"], 2)
            self.assertEqual(b1["esp_in_packets"], b0["esp_in_packets"], "a dummy was delivered")
            dummies = from_a(pkts, 4)
            self.assertGreaterEqual(len(dummies), 2)
            self.assertTrue(all(len(espeer.esp_payload(p)) >= 1000 for p in dummies), "dummies are TFC-padded")
            self.assertEqual(b1["esp_out_dummy"], 0, "B's SA has no dummy interval")


if __name__ == "__main__":
    unittest.main(verbosity=2)
