"""Tunnel details (issue 3 §7) between two ipsecd: PMTU behaviour, the outer DF
bit, outer fragmentation, TFC padding and dummy packets.

SAs carry their options from setkey's add line (-mtu, -df, -tfc, -dummy, our
SA_OPTIONS extension); the defaults come from net.inet.ipsec.default_mtu and
net.inet.ipsec.dfbit. Outer packets are captured on B's veth with tcpdump
and read with scapy. The harness's TUN MTU is 1400, so 1300-byte pings pass
the TUN and meet the SA's 1280.

AH tunnel mode has the same details (captured as `ip proto 51`): ICMP with
the MTU AH leaves (no padding: outer IP + AH), fragments cut after signing
that B reassembles and verifies, the per-SA DF policy; so does the ESP
tunnel inside AH (the tunnel SA's -mtu with AH counted), and the tunnel SA of
ESP transport inside an ESP tunnel pads the inner ESP packet for TFC.

Transport mode (ESP, AH, ESP+AH between the veth addresses) has the same
MTU rule behind the host's own header: ICMP with the MTU left once ESP/AH is
added, otherwise the protected packet leaves in fragments.
"""

import os
import re
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "interop"))

from scapy.layers.inet import IP  # noqa: E402
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment  # noqa: E402

import espeer  # noqa: E402
from espeer import Capture  # noqa: E402
from harness import (HMAC_KEY_AB, HMAC_KEY_BA, INNER, OUTER, Testbed, ping, sa_lines, spd_lines,  # noqa: E402
                     transport_config)
import test_bundles  # noqa: E402

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
            tb.a.sysctl("net.inet.ipsec.default_mtu=1280")
            r = ping(tb.a, INNER[4][1], count=2, extra=("-M", "do", "-s", "1300"))
            self.assertIn(f"mtu = {INNER_LIMIT_4}", r.stdout, r.stdout + r.stderr)
            tb.a.sysctl("net.inet.ipsec.default_mtu=1500")
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
            tb.a.sysctl("net.inet.ipsec.dfbit=0")
            self.assertEqual(outer_df(tb, True, "clear"), {False})
            tb.a.sysctl("net.inet.ipsec.dfbit=1")
            self.assertEqual(outer_df(tb, False, "set"), {True})

    def test_per_sa_policy_wins_over_the_sysctl(self):
        with Testbed() as tb:
            start(tb, 4, "-df clear", "-df set")
            tb.a.sysctl("net.inet.ipsec.dfbit=1")
            self.assertEqual(outer_df(tb, True, "sa-clear"), {False})
            tb.b.sysctl("net.inet.ipsec.dfbit=0")
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
                pkts = cap.wait_for(lambda p: len(from_a(p, 4)) >= 2
                                    and counters(tb.b)["esp_in_dummy"] - b0["esp_in_dummy"] >= 2,
                                    timeout=5, what="two dummies from A, discarded by B")
            a1, b1 = counters(tb.a), counters(tb.b)
            self.assertGreaterEqual(a1["esp_out_dummy"] - a0["esp_out_dummy"], 2)
            self.assertGreaterEqual(b1["esp_in_dummy"] - b0["esp_in_dummy"], 2)
            self.assertEqual(b1["esp_in_packets"], b0["esp_in_packets"], "a dummy was delivered")
            dummies = from_a(pkts, 4)
            self.assertGreaterEqual(len(dummies), 2)
            self.assertTrue(all(len(espeer.esp_payload(p)) >= 1000 for p in dummies), "dummies are TFC-padded")
            self.assertEqual(b1["esp_out_dummy"], 0, "B's SA has no dummy interval")


AH_SPI_AB = 0x5301
AH_SPI_BA = 0x5302
AH_BPF = "ip proto 51"  # IPv4 outer: every fragment too
AH_BPF6 = "ip6"  # fragments have next header 44
# AH with HMAC-SHA-256-128 is 12 + 16 = 28 bytes over IPv4 (32 over IPv6):
# behind an outer IPv4 header an AH tunnel carries 1280 - 20 - 28 bytes.
AH_INNER_LIMIT_4 = 1280 - 20 - 28
# The ESP tunnel inside AH: AES-GCM's ESP and AH in 1280 bytes.
BUNDLE_INNER_LIMIT_4 = (1280 - 20 - 28 - 8 - 8 - 16) // 4 * 4 - 2


def ah_text(outer, ab="", ba=""):
    """AH tunnel SAs (HMAC-SHA-256) with extra options, and both sides' policies."""
    a, b = OUTER[outer]
    sas = (f"add {a} {b} ah {AH_SPI_AB:#x} -m tunnel -r 64 {ab} -A hmac-sha256 0x{HMAC_KEY_AB.hex()};\n"
           f"add {b} {a} ah {AH_SPI_BA:#x} -m tunnel -r 64 {ba} -A hmac-sha256 0x{HMAC_KEY_BA.hex()};\n")
    return sas


def start_ah(tb, outer, ab="", ba=""):
    for h in tb.hosts():
        tb.start(h, "flush;\nspdflush;\n" + ah_text(outer, ab, ba) + spd_lines(h.side, outer, proto="ah"))


def is_fragment(p):
    return (IP in p and (p[IP].flags.MF or p[IP].frag > 0)) or IPv6ExtHdrFragment in p


class AhTunnel(unittest.TestCase):
    def test_ipv4_outer_icmp_with_the_mtu_ah_leaves_or_fragments_after_signing(self):
        with Testbed() as tb:
            start_ah(tb, 4, "-mtu 1280", "-mtu 1280")
            # Without DF: fragments both ways, reassembled by the kernel and verified by the forwarder.
            with Capture(tb.b, os.path.join(tb.b.workdir, "ah-dont.pcap"), AH_BPF) as cap:
                r = ping(tb.a, INNER[4][1], count=3, extra=("-M", "dont", "-s", "1300"))
                pkts = cap.wait_for(lambda p: len(p) >= 12, timeout=3)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr + tb.log_text(tb.a))
            mine = from_a(pkts, 4)
            frags = [p for p in mine if is_fragment(p)]
            self.assertGreaterEqual(len(frags), 6, [p.summary() for p in mine])
            self.assertTrue(all(p[IP].proto == 51 for p in frags))
            self.assertTrue(all(p[IP].len <= 1280 for p in pkts))
            self.assertFalse(any(p[IP].flags.DF for p in frags), "a fragment with DF")
            ca, cb = counters(tb.a), counters(tb.b)
            self.assertGreaterEqual(ca["pmtu_out_fragmented"], 3)
            self.assertGreaterEqual(cb["pmtu_out_fragmented"], 3)
            self.assertGreaterEqual(cb["ah_in_packets"], 3)
            self.assertGreaterEqual(ca["ah_in_packets"], 3)
            for c in (ca, cb):
                self.assertEqual(c["ah_in_drop_bad_icv"], 0, c)
                self.assertEqual(c["esp_out_packets"], 0, c)

            # With DF the sender hears "fragmentation needed" with the MTU AH leaves.
            before = counters(tb.a)
            r = ping(tb.a, INNER[4][1], count=2, extra=("-M", "do", "-s", "1300"))
            self.assertNotEqual(r.returncode, 0)
            m = re.search(r"Frag needed and DF set \(mtu = (\d+)\)", r.stdout)
            self.assertIsNotNone(m, r.stdout + r.stderr)
            self.assertEqual(int(m.group(1)), AH_INNER_LIMIT_4)
            d = espeer.delta(before, counters(tb.a))
            self.assertGreaterEqual(d.get("pmtu_out_drop_too_big", 0), 1, d)
            self.assertGreaterEqual(d.get("pmtu_icmp_sent", 0), 1, d)
            # The largest packet that fits goes whole, with DF copied outside (the default policy).
            with Capture(tb.b, os.path.join(tb.b.workdir, "ah-do.pcap"), AH_BPF) as cap:
                r = ping(tb.a, INNER[4][1], count=2, extra=("-M", "do", "-s", str(AH_INNER_LIMIT_4 - 28)))
                pkts = cap.wait_for(lambda p: len(from_a(p, 4)) >= 2, timeout=3)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            whole = from_a(pkts, 4)
            self.assertTrue(all(p[IP].len == 1280 and p[IP].flags.DF and not is_fragment(p) for p in whole),
                            [(p[IP].len, p[IP].flags) for p in whole])

    def test_ipv6_outer_fragments_carry_ah_behind_the_fragment_header(self):
        with Testbed() as tb:
            start_ah(tb, 6, "-mtu 1280", "-mtu 1280")
            with Capture(tb.b, os.path.join(tb.b.workdir, "ah-v6.pcap"), AH_BPF6) as cap:
                r = ping(tb.a, INNER[4][1], count=3, extra=("-M", "dont", "-s", "1300"))
                pkts = cap.wait_for(lambda p: len(p) >= 12, timeout=3)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr + tb.log_text(tb.a))
            frags = [p for p in from_a(pkts, 6) if IPv6ExtHdrFragment in p]
            self.assertGreaterEqual(len(frags), 6, [p.summary() for p in pkts])
            self.assertTrue(all(p[IPv6ExtHdrFragment].nh == 51 for p in frags))
            self.assertTrue(all(len(p[IPv6]) <= 1280 for p in frags))
            self.assertGreaterEqual(counters(tb.b)["ah_in_packets"], 3)
            self.assertEqual(counters(tb.b)["ah_in_drop_bad_icv"], 0)

    def test_per_sa_df_policy_on_an_ah_sa_wins_over_the_sysctl(self):
        with Testbed() as tb:
            start_ah(tb, 4, "-df clear", "-df set")
            tb.a.sysctl("net.inet.ipsec.dfbit=1")
            tb.b.sysctl("net.inet.ipsec.dfbit=0")
            with Capture(tb.b, os.path.join(tb.b.workdir, "ah-df.pcap"), AH_BPF) as cap:
                r = ping(tb.a, INNER[4][1], count=2, extra=("-M", "do", "-s", "100"))
                pkts = cap.wait_for(lambda p: len(p) >= 4, timeout=3)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            from_a_ = from_a(pkts, 4)
            from_b = [p for p in pkts if p[IP].src == OUTER[4][1]]
            self.assertTrue(from_a_ and from_b)
            self.assertFalse(any(p[IP].flags.DF for p in from_a_), "A's SA says clear")
            self.assertTrue(all(p[IP].flags.DF for p in from_b), "B's SA says set")
            self.assertEqual(counters(tb.b)["ah_in_drop_bad_icv"], 0)


class Bundles(unittest.TestCase):
    def test_esp_tunnel_inside_ah_takes_the_tunnel_sas_mtu_with_ah_counted(self):
        with Testbed() as tb:
            for h in tb.hosts():
                text = test_bundles.esp_tunnel_ah_setkey(h.side, 4)
                tb.start(h, text.replace("-m tunnel -r 64", "-m tunnel -r 64 -mtu 1280"))
            # First without DF (before A's kernel learns an MTU for the route
            # and fragments the inner packet itself): our fragments of the signed packet.
            with Capture(tb.b, os.path.join(tb.b.workdir, "bundle.pcap"), AH_BPF) as cap:
                r = ping(tb.a, INNER[4][1], count=3, extra=("-M", "dont", "-s", "1300"))
                pkts = cap.wait_for(lambda p: len(p) >= 12, timeout=3)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr + tb.log_text(tb.a))
            frags = [p for p in from_a(pkts, 4) if is_fragment(p)]
            self.assertGreaterEqual(len(frags), 6, [p.summary() for p in pkts])
            self.assertTrue(all(p[IP].len <= 1280 for p in pkts))
            cb = counters(tb.b)
            self.assertGreaterEqual(cb["bundle_in_packets"], 3, cb)
            self.assertEqual(cb["ah_in_drop_bad_icv"], 0, cb)
            before = counters(tb.a)
            r = ping(tb.a, INNER[4][1], count=2, extra=("-M", "do", "-s", "1300"))
            m = re.search(r"Frag needed and DF set \(mtu = (\d+)\)", r.stdout)
            self.assertIsNotNone(m, r.stdout + r.stderr)
            self.assertEqual(int(m.group(1)), BUNDLE_INNER_LIMIT_4)
            self.assertGreaterEqual(espeer.delta(before, counters(tb.a)).get("pmtu_icmp_sent", 0), 1)
            r = ping(tb.a, INNER[4][1], count=2, extra=("-M", "do", "-s", str(BUNDLE_INNER_LIMIT_4 - 28)))
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_tfc_padding_on_esp_transport_inside_an_esp_tunnel(self):
        with Testbed() as tb:
            for h in tb.hosts():
                text = test_bundles.esp_in_esp_setkey(h.side, 4)
                tb.start(h, text.replace("-m tunnel -r 64", "-m tunnel -r 64 -tfc 1000"), tun_mtu="1360")
            with Capture(tb.b, os.path.join(tb.b.workdir, "tfc-esp-in-esp.pcap"), "ip proto 50") as cap:
                r = ping(tb.a, INNER[4][1], count=3)
                pkts = cap.wait_for(lambda p: len(p) >= 6, timeout=3)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr + tb.log_text(tb.a))
            a_out = from_a(pkts, 4)
            b_out = [p for p in pkts if p[IP].src == OUTER[4][1]]
            self.assertTrue(a_out and b_out)
            # A ping is ~100 bytes in its transport ESP: the tunnel's ESP carries at least 1000.
            for p in a_out + b_out:
                self.assertGreaterEqual(len(espeer.esp_payload(p)), 1000, p.summary())
            for h in tb.hosts():
                c = counters(h)
                self.assertGreaterEqual(c["esp_out_tfc_padded"], 3, c)
                self.assertGreaterEqual(c["esp_in_tfc_stripped"], 3, c)
                self.assertGreaterEqual(c["bundle_in_packets"], 3, c)
                self.assertGreaterEqual(c["transport_in_packets"], 3, c)


# Transport mode (ESP, AH, ESP+AH): the SA's MTU judged behind the host's own
# header. AES-GCM's ESP behind a 20-byte IPv4 header (40 for IPv6) in 1280.
TRANSPORT_LIMIT_4 = 20 + (1280 - 20 - 8 - 8 - 16) // 4 * 4 - 2
TRANSPORT_LIMIT_6 = 40 + (1280 - 40 - 8 - 8 - 16) // 4 * 4 - 2
AH_TRANSPORT_LIMIT_4 = 1280 - 28  # HMAC-SHA-256-128's AH: 28 bytes over IPv4
# ESP then AH behind the host's IPv4 header.
BUNDLE_TRANSPORT_LIMIT_4 = 20 + (1280 - 20 - 28 - 8 - 8 - 16) // 4 * 4 - 2


def with_mtu(lines, mtu=1280):
    return [line.replace("-r 64", f"-r 64 -mtu {mtu}") for line in lines]


def start_transport(tb, sas, request):
    """Host-to-host SAs (both families) with -mtu 1280 and the transport policies."""
    for h in tb.hosts():
        out = ["flush;", "spdflush;"]
        for fam in (4, 6):
            out += with_mtu(sas(fam)) + test_bundles.host_policies(h.side, fam, request)
        tb.start(h, "\n".join(out) + "\n", **transport_config(h.side))


def ipv4_frag(p):
    return IP in p and (p[IP].flags.MF or p[IP].frag > 0)


class Transport(unittest.TestCase):
    def check_v4(self, tb, bpf, proto, limit, name):
        """-M dont: fragments of the protected packet both ways; -M do: ICMP with `limit`."""
        b = OUTER[4][1]
        # First without DF (before A's kernel learns an MTU for B and cuts the
        # packet itself: transport mode protects whole datagrams only).
        with Capture(tb.b, os.path.join(tb.b.workdir, f"{name}-dont.pcap"), bpf) as cap:
            r = ping(tb.a, b, count=3, extra=("-M", "dont", "-s", "1300"))
            pkts = cap.wait_for(lambda p: len(p) >= 12, timeout=3)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr + tb.log_text(tb.a))
        mine = from_a(pkts, 4)
        frags = [p for p in mine if ipv4_frag(p)]
        self.assertGreaterEqual(len(frags), 6, [p.summary() for p in mine])
        self.assertTrue(all(p[IP].proto == proto for p in frags))
        self.assertTrue(all(p[IP].len <= 1280 for p in pkts))
        self.assertFalse(any(p[IP].flags.DF for p in frags), "a fragment with DF")
        for h in tb.hosts():
            self.assertGreaterEqual(counters(h)["pmtu_out_fragmented"], 3)

        before = counters(tb.a)
        r = ping(tb.a, b, count=2, extra=("-M", "do", "-s", "1300"))
        self.assertNotEqual(r.returncode, 0)
        m = re.search(r"Frag needed and DF set \(mtu = (\d+)\)", r.stdout)
        self.assertIsNotNone(m, r.stdout + r.stderr)
        self.assertEqual(int(m.group(1)), limit)
        d = espeer.delta(before, counters(tb.a))
        self.assertGreaterEqual(d.get("pmtu_out_drop_too_big", 0), 1, d)
        self.assertGreaterEqual(d.get("pmtu_icmp_sent", 0), 1, d)
        # The largest packet that fits goes whole, DF kept.
        with Capture(tb.b, os.path.join(tb.b.workdir, f"{name}-do.pcap"), bpf) as cap:
            r = ping(tb.a, b, count=2, extra=("-M", "do", "-s", str(limit - 28)))
            pkts = cap.wait_for(lambda p: len(from_a(p, 4)) >= 2, timeout=3)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        whole = from_a(pkts, 4)
        self.assertTrue(whole)
        self.assertTrue(all(p[IP].len == 1280 and p[IP].flags.DF and not ipv4_frag(p) for p in whole),
                        [(p[IP].len, p[IP].flags) for p in whole])

    def test_esp_transport_ipv4_fragments_or_answers_with_icmp(self):
        with Testbed() as tb:
            start_transport(tb, test_bundles.esp_sas, "esp/transport//require")
            self.check_v4(tb, "ip proto 50", 50, TRANSPORT_LIMIT_4, "esp")
            for h in tb.hosts():
                c = counters(h)
                self.assertGreaterEqual(c["transport_in_packets"], 5, c)
                self.assertEqual(c["out_drop_send"], 0, c)

    def test_esp_transport_ipv6_packet_too_big_and_fragments(self):
        with Testbed() as tb:
            start_transport(tb, test_bundles.esp_sas, "esp/transport//require")
            b = OUTER[6][1]
            # 1248 bytes: within IPv6's 1280 but not within the SA's 1246: our fragment headers.
            size = TRANSPORT_LIMIT_6 + 2 - 48
            with Capture(tb.b, os.path.join(tb.b.workdir, "esp6.pcap"), "ip6") as cap:
                r = ping(tb.a, b, count=3, extra=("-s", str(size)))
                pkts = cap.wait_for(lambda p: len([q for q in p if IPv6ExtHdrFragment in q]) >= 12, timeout=3)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr + tb.log_text(tb.a))
            frags = [p for p in from_a(pkts, 6) if IPv6ExtHdrFragment in p]
            self.assertGreaterEqual(len(frags), 6, [p.summary() for p in pkts])
            self.assertTrue(all(p[IPv6ExtHdrFragment].nh == 50 for p in frags))
            self.assertTrue(all(len(p[IPv6]) <= 1280 for p in frags))
            self.assertGreaterEqual(counters(tb.b)["transport_in_packets"], 3)
            # Above 1280: "packet too big" with the IPv6 minimum.
            before = counters(tb.a)
            r = ping(tb.a, b, count=2, extra=("-s", "1300"))
            self.assertRegex(r.stdout, r"Packet too big: mtu=1280", r.stdout + r.stderr)
            d = espeer.delta(before, counters(tb.a))
            self.assertGreaterEqual(d.get("pmtu_icmp_sent", 0), 1, d)
            self.assertGreaterEqual(d.get("pmtu_out_drop_too_big", 0), 1, d)

    def test_ah_transport_ipv4_fragments_the_signed_packet_or_answers_with_icmp(self):
        with Testbed() as tb:
            start_transport(tb, test_bundles.ah_sas, "ah/transport//require")
            self.check_v4(tb, "ip proto 51", 51, AH_TRANSPORT_LIMIT_4, "ah")
            for h in tb.hosts():
                c = counters(h)
                self.assertGreaterEqual(c["ah_in_packets"], 5, c)
                self.assertEqual(c["ah_in_drop_bad_icv"], 0, c)
                self.assertEqual(c["esp_out_packets"], 0, c)

    def test_esp_and_ah_transport_bundle_takes_the_ah_sas_mtu(self):
        with Testbed() as tb:
            start_transport(tb, lambda fam: test_bundles.esp_sas(fam) + test_bundles.ah_sas(fam), test_bundles.BOTH)
            self.check_v4(tb, "ip proto 51", 51, BUNDLE_TRANSPORT_LIMIT_4, "esp-ah")
            for h in tb.hosts():
                c = counters(h)
                self.assertGreaterEqual(c["bundle_in_packets"], 5, c)
                self.assertEqual(c["ah_in_drop_bad_icv"], 0, c)


if __name__ == "__main__":
    unittest.main(verbosity=2)
