"""SA bundles between two ipsecd instances (issue 3 §4), set up with setkey:

- IPComp + ESP in transport mode, host to host
  (`ipcomp/transport//use esp/transport//require`), IPv4 and IPv6: a
  compressible ping is compressed on both ends, a TCP transfer both ways
  (random bytes: sent uncompressed, RFC 3173 §2.2) arrives whole;
- IPComp + ESP in tunnel mode with IPv6 outer and inner addresses;
- ESP inside AH in transport mode (`esp/transport//require
  ah/transport//require`), IPv4 and IPv6: on the wire IP | AH | ESP, each
  SA's own counters move, ping and TCP both ways; a receiver whose policy
  asks for both drops ESP that came without AH and counts it (and AH
  without ESP);
- IPComp, ESP and AH in transport mode, all three;
- an ESP tunnel inside AH (`esp/tunnel/A-B/require ah/transport//require`),
  IPv4 and IPv6 outer, IPv4 and IPv6 inner: outer IP | AH | ESP | inner IP;
  ESP alone for that policy is dropped and counted;
- ESP transport inside an ESP tunnel (`esp/transport//require
  esp/tunnel/A-B/require`), IPv4 and IPv6 outer, IPv4 and IPv6 inner: on the
  wire outer IP | ESP (the tunnel SA's SPI) | inner IP | ESP (the inner hosts'
  transport SA); both SAs' counters move on both ends, ping and TCP both ways;
  a tunnel without the transport ESP inside is dropped and counted;
- a `use`-level AH in the bundle (`esp/transport//require ah/transport//use`,
  issue 3 §4): without an AH SA the sender ACQUIREs it (seen by a registered
  PF_KEY socket) and sends ESP alone, the receiver with the same levels
  accepts ESP alone; once the AH SAs are added, traffic carries both; with AH
  `require` and no AH SA the packet is held, not sent.
"""

import ipaddress
import os
import unittest

from harness import (GCM_KEY_AB, GCM_KEY_BA, HMAC_KEY_AB, HMAC_KEY_BA, INNER, INNER_NETS, OUTER, Capture, Testbed,
                     assert_no_drops, ping, tcp_transfer, transport_config)
from test_pfkey_more import EXT_DST, SADB_ACQUIRE, SADB_REGISTER, PfkeyClient

SATYPE_AH = 2

SPI_AB = 0x6101
SPI_BA = 0x6102
AH_AB = 0x6201
AH_BA = 0x6202
CPI_AB = 0x6301
CPI_BA = 0x6302
INNER_SPI_AB = 0x6401  # ESP transport between the inner hosts, inside the tunnel
INNER_SPI_BA = 0x6402


def esp_sas(fam, mode="transport"):
    a, b = OUTER[fam]
    d = 0x10 * fam
    return [f"add {a} {b} esp {SPI_AB + d:#x} -m {mode} -r 64 -E aes-gcm-16 0x{GCM_KEY_AB.hex()};",
            f"add {b} {a} esp {SPI_BA + d:#x} -m {mode} -r 64 -E aes-gcm-16 0x{GCM_KEY_BA.hex()};"]


def ah_sas(fam):
    a, b = OUTER[fam]
    d = 0x10 * fam
    return [f"add {a} {b} ah {AH_AB + d:#x} -m transport -r 64 -A hmac-sha256 0x{HMAC_KEY_AB.hex()};",
            f"add {b} {a} ah {AH_BA + d:#x} -m transport -r 64 -A hmac-sha256 0x{HMAC_KEY_BA.hex()};"]


def ipcomp_sas(fam):
    a, b = OUTER[fam]
    d = 0x10 * fam
    return [f"add {a} {b} ipcomp {CPI_AB + d:#x} -C deflate;", f"add {b} {a} ipcomp {CPI_BA + d:#x} -C deflate;"]


def host_policies(side, fam, request_out, request_in=None):
    a, b = OUTER[fam]
    local, remote = (a, b) if side == "a" else (b, a)
    return [f"spdadd {local} {remote} any -P out ipsec {request_out};",
            f"spdadd {remote} {local} any -P in ipsec {request_in or request_out};"]


def ipcomp_transport_setkey(side):
    out = ["flush;", "spdflush;"]
    for fam in (4, 6):
        out += esp_sas(fam) + ipcomp_sas(fam)
        out += host_policies(side, fam, "ipcomp/transport//use esp/transport//require")
    return "\n".join(out) + "\n"


def ipcomp_tunnel6_setkey(side):
    a, b = OUTER[6]
    na, nb = INNER_NETS[6]
    out = ["flush;", "spdflush;"] + esp_sas(6) + ipcomp_sas(6)
    local, remote, lnet, rnet = (a, b, na, nb) if side == "a" else (b, a, nb, na)
    out.append(f"spdadd {lnet} {rnet} any -P out ipsec ipcomp/tunnel/{local}-{remote}/use esp/transport//require;")
    out.append(f"spdadd {rnet} {lnet} any -P in ipsec ipcomp/tunnel/{remote}-{local}/use esp/transport//require;")
    return "\n".join(out) + "\n"


BOTH = "esp/transport//require ah/transport//require"
AH_USE = "esp/transport//require ah/transport//use"


def esp_ah_setkey(side, out_request=BOTH, in_request=BOTH, with_ah=True):
    out = ["flush;", "spdflush;"]
    for fam in (4, 6):
        out += esp_sas(fam) + (ah_sas(fam) if with_ah else []) + ipcomp_sas(fam)
        out += host_policies(side, fam, out_request, in_request)
    return "\n".join(out) + "\n"


def esp_tunnel_ah_setkey(side, outer, with_ah=True):
    """The ESP tunnel between the outer addresses, AH in transport mode around its packets
    (with_ah False: this side sends and asks for the ESP tunnel alone)."""
    a, b = OUTER[outer]
    d = 0x10 * outer
    out = ["flush;", "spdflush;",
           f"add {a} {b} esp {SPI_AB + d:#x} -m tunnel -r 64 -E aes-gcm-16 0x{GCM_KEY_AB.hex()};",
           f"add {b} {a} esp {SPI_BA + d:#x} -m tunnel -r 64 -E aes-gcm-16 0x{GCM_KEY_BA.hex()};"] + ah_sas(outer)
    local, remote = (a, b) if side == "a" else (b, a)
    for fam in (4, 6):
        na, nb = INNER_NETS[fam]
        lnet, rnet = (na, nb) if side == "a" else (nb, na)
        ah = " ah/transport//require" if with_ah else ""
        out.append(f"spdadd {lnet} {rnet} any -P out ipsec esp/tunnel/{local}-{remote}/require{ah};")
        out.append(f"spdadd {rnet} {lnet} any -P in ipsec esp/tunnel/{remote}-{local}/require{ah};")
    return "\n".join(out) + "\n"


def esp_in_esp_setkey(side, outer, with_transport=True, transport_level="require", transport_sas=True):
    """The ESP tunnel between the outer addresses; ESP transport between the inner hosts inside it
    (with_transport False: this side sends and asks for the tunnel alone; transport_level: that
    request's level; transport_sas False: no SAs for it)."""
    a, b = OUTER[outer]
    d = 0x10 * outer
    out = ["flush;", "spdflush;",
           f"add {a} {b} esp {SPI_AB + d:#x} -m tunnel -r 64 -E aes-gcm-16 0x{GCM_KEY_AB.hex()};",
           f"add {b} {a} esp {SPI_BA + d:#x} -m tunnel -r 64 -E aes-gcm-16 0x{GCM_KEY_BA.hex()};"]
    local, remote = (a, b) if side == "a" else (b, a)
    for fam in (4, 6):
        ia, ib = INNER[fam]
        e = 0x10 * fam
        # Keys of the other direction: the two layers do not share one.
        if transport_sas:
            out += [f"add {ia} {ib} esp {INNER_SPI_AB + e:#x} -m transport -r 64 -E aes-gcm-16 0x{GCM_KEY_BA.hex()};",
                    f"add {ib} {ia} esp {INNER_SPI_BA + e:#x} -m transport -r 64 -E aes-gcm-16 0x{GCM_KEY_AB.hex()};"]
        na, nb = INNER_NETS[fam]
        lnet, rnet = (na, nb) if side == "a" else (nb, na)
        inner = f"esp/transport//{transport_level} " if with_transport else ""
        out.append(f"spdadd {lnet} {rnet} any -P out ipsec {inner}esp/tunnel/{local}-{remote}/require;")
        out.append(f"spdadd {rnet} {lnet} any -P in ipsec {inner}esp/tunnel/{remote}-{local}/require;")
    return "\n".join(out) + "\n"


def capture(host, name):
    """AH and ESP on B's veth, listening before traffic flows."""
    return Capture(host, os.path.join(host.workdir, f"{name}.pcap"), "ah or esp or ip6 proto 51 or ip6 proto 50",
                   "veth-ipsec-b")


def counters(h):
    return h.stats()["ipsec-forwarder"]["counters"]


def sa_counters(h, spi):
    sas = h.stats()["ipsec-forwarder"]["sas"]
    found = [s["counters"] for s in sas if s["spi"] == spi]
    assert found, sas
    return found[0]


class BundleTest(unittest.TestCase):
    def assert_no_drops(self, tb, allowed=()):
        for h in tb.hosts():
            assert_no_drops(self, h.side, counters(h), allowed)

    def ping_both_ways(self, tb, fam, addrs, extra=()):
        a, b = addrs
        r = ping(tb.a, b, count=3, extra=extra)
        self.assertEqual(r.returncode, 0, f"ping A→B v{fam}: {r.stdout}{r.stderr}\n{tb.log_text(tb.a)}\n"
                                          f"{tb.log_text(tb.b)}")
        r = ping(tb.b, a, count=3, extra=extra)
        self.assertEqual(r.returncode, 0, f"ping B→A v{fam}: {r.stdout}{r.stderr}\n{tb.log_text(tb.b)}")

    def captured_pings(self, tb, name, addresses):
        """What tcpdump -v prints of B's veth (AH and ESP) while pings cross both ways between
        `addresses` (OUTER or INNER), IPv4 and IPv6."""
        with capture(tb.b, name) as cap:
            for fam in (4, 6):
                self.ping_both_ways(tb, fam, addresses[fam])
            cap.wait_for(lambda p: len(p) >= 24, what="the 24 packets of 12 pings")
        return cap.text("-v")

    def ping_with_ah_around_esp(self, tb, name):
        """Pings both ways over IPv4 and IPv6: AH outside, ESP inside it, between the hosts' own addresses."""
        seen = self.captured_pings(tb, name, OUTER)
        self.assertRegex(seen, rf"{OUTER[4][0]} > {OUTER[4][1]}: AH\([^\n]*spi=0x{AH_AB + 0x40:08x}[^\n]*\): "
                               rf"ESP\(spi=0x{SPI_AB + 0x40:08x}")

    def test_ipcomp_and_esp_in_transport_mode_over_ipv4_and_ipv6(self):
        with Testbed() as tb:
            for h in tb.hosts():
                tb.start(h, ipcomp_transport_setkey(h.side), **transport_config(h.side))
            for fam in (4, 6):
                before = counters(tb.b)["ipcomp_in_decompressed"]
                # A repeated pattern: DEFLATE shrinks it a lot.
                self.ping_both_ways(tb, fam, OUTER[fam], extra=("-s", "1000", "-p", "61"))
                self.assertGreaterEqual(counters(tb.b)["ipcomp_in_decompressed"] - before, 3)
            for h in tb.hosts():
                c = counters(h)
                self.assertGreaterEqual(c["ipcomp_out_compressed"], 6, c)
                self.assertGreaterEqual(c["ipcomp_in_decompressed"], 6, c)
                self.assertGreaterEqual(c["transport_in_packets"], 6, c)
            tcp_transfer(tb.a, tb.b, OUTER[4][1], nbytes=1 << 20)
            tcp_transfer(tb.b, tb.a, OUTER[4][0], nbytes=1 << 20, port=5002)
            tcp_transfer(tb.a, tb.b, OUTER[6][1], nbytes=1 << 20, port=5003)
            tcp_transfer(tb.b, tb.a, OUTER[6][0], nbytes=1 << 20, port=5004)
            self.assertGreater(counters(tb.a)["ipcomp_out_uncompressed"], 50)
            self.assert_no_drops(tb)
            for h in tb.hosts():
                self.assertEqual(tb.stop(h), 0, tb.log_text(h))

    def test_ipcomp_and_esp_tunnel_with_ipv6_outer_and_inner(self):
        with Testbed() as tb:
            for h in tb.hosts():
                tb.start(h, ipcomp_tunnel6_setkey(h.side))
            self.ping_both_ways(tb, 6, INNER[6], extra=("-s", "1000", "-p", "61"))
            for h in tb.hosts():
                c = counters(h)
                self.assertGreaterEqual(c["ipcomp_out_compressed"], 3, c)
                self.assertGreaterEqual(c["ipcomp_in_decompressed"], 3, c)
            tcp_transfer(tb.a, tb.b, INNER[6][1], nbytes=1 << 20)
            tcp_transfer(tb.b, tb.a, INNER[6][0], nbytes=1 << 20, port=5002)
            self.assert_no_drops(tb)

    def test_esp_inside_ah_in_transport_mode_over_ipv4_and_ipv6(self):
        with Testbed() as tb:
            for h in tb.hosts():
                tb.start(h, esp_ah_setkey(h.side), **transport_config(h.side))
            self.ping_with_ah_around_esp(tb, "esp-in-ah")
            tcp_transfer(tb.a, tb.b, OUTER[4][1], nbytes=1 << 20)
            tcp_transfer(tb.b, tb.a, OUTER[4][0], nbytes=1 << 20, port=5002)
            tcp_transfer(tb.a, tb.b, OUTER[6][1], nbytes=1 << 20, port=5003)
            tcp_transfer(tb.b, tb.a, OUTER[6][0], nbytes=1 << 20, port=5004)
            for h in tb.hosts():
                c = counters(h)
                self.assertGreater(c["bundle_out_packets"], 100, c)
                self.assertGreater(c["bundle_in_packets"], 100, c)
                self.assertEqual(c["bundle_out_packets"], c["ah_out_packets"], c)
                self.assertEqual(c["esp_out_packets"], 0, c)  # nothing left without AH
            # Each SA of the bundle used, both families, both directions.
            for fam in (4, 6):
                d = 0x10 * fam
                for spi in (SPI_AB + d, AH_AB + d):
                    self.assertGreater(sa_counters(tb.a, spi)["out_packets"], 0, hex(spi))
                    self.assertGreater(sa_counters(tb.b, spi)["in_packets"], 0, hex(spi))
                for spi in (SPI_BA + d, AH_BA + d):
                    self.assertGreater(sa_counters(tb.b, spi)["out_packets"], 0, hex(spi))
                    self.assertGreater(sa_counters(tb.a, spi)["in_packets"], 0, hex(spi))
            self.assert_no_drops(tb)
            for h in tb.hosts():
                self.assertEqual(tb.stop(h), 0, tb.log_text(h))

    def esp_tunnel_inside_ah(self, outer):
        with Testbed() as tb:
            # With an IPv6 outer header, AH and ESP around a 1400-byte inner
            # packet exceed the veth's 1500 bytes: a smaller TUN MTU keeps
            # this test about the bundle (its path MTU is test_pmtu.py's).
            extra = {"tun_mtu": "1360"} if outer == 6 else {}
            for h in tb.hosts():
                tb.start(h, esp_tunnel_ah_setkey(h.side, outer), **extra)
            seen = self.captured_pings(tb, f"tunnel{outer}", INNER)
            d = 0x10 * outer
            a, b = OUTER[outer]
            # Outer header between the tunnel's ends, AH, then the tunnel's ESP.
            self.assertRegex(seen, rf"{a} > {b}: AH\([^\n]*spi=0x{AH_AB + d:08x}[^\n]*\): ESP\(spi=0x{SPI_AB + d:08x}")
            tcp_transfer(tb.a, tb.b, INNER[4][1], nbytes=1 << 20)
            tcp_transfer(tb.b, tb.a, INNER[6][0], nbytes=1 << 20, port=5002)
            for h in tb.hosts():
                c = counters(h)
                self.assertGreater(c["bundle_out_packets"], 100, c)
                self.assertGreater(c["bundle_in_packets"], 100, c)
                self.assertEqual(c["esp_out_packets"], 0, c)
            for spi in (SPI_AB + d, AH_AB + d):
                self.assertGreater(sa_counters(tb.a, spi)["out_packets"], 0, hex(spi))
                self.assertGreater(sa_counters(tb.b, spi)["in_packets"], 0, hex(spi))
            self.assert_no_drops(tb)

    def test_esp_tunnel_inside_ah_over_ipv4_outer(self):
        self.esp_tunnel_inside_ah(4)

    def test_esp_tunnel_inside_ah_over_ipv6_outer(self):
        self.esp_tunnel_inside_ah(6)

    def test_an_esp_tunnel_without_its_ah_is_dropped_and_counted(self):
        with Testbed() as tb:
            tb.start(tb.a, esp_tunnel_ah_setkey("a", 4, with_ah=False))
            tb.start(tb.b, esp_tunnel_ah_setkey("b", 4))
            r = ping(tb.a, INNER[4][1], count=3, extra=("-w", "3"))
            self.assertNotEqual(r.returncode, 0, r.stdout)
            c = counters(tb.b)
            self.assertGreaterEqual(c["bundle_in_drop_missing_ah"], 3, c)
            self.assertEqual(c["esp_in_packets"], 0, c)

    def esp_transport_inside_esp_tunnel(self, outer):
        with Testbed() as tb:
            # Two ESP layers and an IPv6 outer header around a 1400-byte inner
            # packet exceed the veth's 1500 bytes: a smaller TUN MTU keeps
            # this test about the bundle, not about path MTU discovery.
            for h in tb.hosts():
                tb.start(h, esp_in_esp_setkey(h.side, outer), tun_mtu="1360")
            seen = self.captured_pings(tb, f"tunnel{outer}", INNER)
            d = 0x10 * outer
            a, b = OUTER[outer]
            # Between the tunnel's ends, the tunnel SA's ESP outside.
            self.assertRegex(seen, rf"{a} > {b}: ESP\(spi=0x{SPI_AB + d:08x}")
            self.assertNotRegex(seen, rf"spi=0x{INNER_SPI_AB + 0x40:08x}|spi=0x{INNER_SPI_AB + 0x60:08x}")
            tcp_transfer(tb.a, tb.b, INNER[4][1], nbytes=1 << 20)
            tcp_transfer(tb.b, tb.a, INNER[4][0], nbytes=1 << 20, port=5002)
            tcp_transfer(tb.a, tb.b, INNER[6][1], nbytes=1 << 20, port=5003)
            tcp_transfer(tb.b, tb.a, INNER[6][0], nbytes=1 << 20, port=5004)
            for h in tb.hosts():
                c = counters(h)
                self.assertGreater(c["bundle_out_packets"], 100, c)
                self.assertGreater(c["bundle_in_packets"], 100, c)
                self.assertGreater(c["transport_in_packets"], 100, c)
            # Both layers' SAs used, both directions, both inner families:
            # the tunnel SA's and the transport SA's in-counters rise on the receiver.
            for fam in (4, 6):
                e = 0x10 * fam
                for spi in (SPI_AB + d, INNER_SPI_AB + e):
                    self.assertGreater(sa_counters(tb.a, spi)["out_packets"], 0, hex(spi))
                    self.assertGreater(sa_counters(tb.b, spi)["in_packets"], 0, hex(spi))
                for spi in (SPI_BA + d, INNER_SPI_BA + e):
                    self.assertGreater(sa_counters(tb.b, spi)["out_packets"], 0, hex(spi))
                    self.assertGreater(sa_counters(tb.a, spi)["in_packets"], 0, hex(spi))
            # Every tunnel packet carried one transport packet.
            tunnel_in = sa_counters(tb.b, SPI_AB + d)["in_packets"]
            transport_in = sum(sa_counters(tb.b, INNER_SPI_AB + 0x10 * fam)["in_packets"] for fam in (4, 6))
            self.assertEqual(tunnel_in, transport_in)
            self.assert_no_drops(tb)
            for h in tb.hosts():
                self.assertEqual(tb.stop(h), 0, tb.log_text(h))

    def test_esp_transport_inside_esp_tunnel_over_ipv4_outer(self):
        self.esp_transport_inside_esp_tunnel(4)

    def test_esp_transport_inside_esp_tunnel_over_ipv6_outer(self):
        self.esp_transport_inside_esp_tunnel(6)

    def test_a_tunnel_without_the_esp_inside_is_dropped_and_counted(self):
        with Testbed() as tb:
            # A sends the tunnel alone; B's policy asks for ESP inside it.
            tb.start(tb.a, esp_in_esp_setkey("a", 4, with_transport=False))
            tb.start(tb.b, esp_in_esp_setkey("b", 4))
            r = ping(tb.a, INNER[4][1], count=3, extra=("-w", "3"))
            self.assertNotEqual(r.returncode, 0, r.stdout)
            c = counters(tb.b)
            self.assertGreaterEqual(c["bundle_in_drop_missing_transport"], 3, c)
            self.assertEqual(c["esp_in_packets"], 0, c)

    def test_a_use_level_esp_transport_without_its_sa_leaves_the_tunnel_alone(self):
        with Testbed() as tb:
            # Both ask for ESP transport at level use inside the tunnel and have no SA for it:
            # each sends the tunnel alone (and ACQUIREs), each accepts the tunnel alone.
            for h in tb.hosts():
                tb.start(h, esp_in_esp_setkey(h.side, 4, transport_level="use", transport_sas=False))
            self.ping_both_ways(tb, 4, INNER[4])
            for h in tb.hosts():
                c = counters(h)
                self.assertGreaterEqual(c["bundle_out_without_optional"], 3, c)
                self.assertGreaterEqual(c["bundle_in_without_optional"], 3, c)
                self.assertEqual(c["bundle_in_drop_missing_transport"], 0, c)

    def test_ipcomp_esp_and_ah_in_transport_mode(self):
        three = "ipcomp/transport//use " + BOTH
        with Testbed() as tb:
            for h in tb.hosts():
                tb.start(h, esp_ah_setkey(h.side, three, three), **transport_config(h.side))
            for fam in (4, 6):
                self.ping_both_ways(tb, fam, OUTER[fam], extra=("-s", "1000", "-p", "61"))
            tcp_transfer(tb.a, tb.b, OUTER[6][1], nbytes=1 << 20)
            for h in tb.hosts():
                c = counters(h)
                self.assertGreaterEqual(c["ipcomp_out_compressed"], 6, c)
                self.assertGreaterEqual(c["ipcomp_in_decompressed"], 6, c)
                self.assertGreaterEqual(c["bundle_in_packets"], 6, c)
            self.assert_no_drops(tb)

    def test_esp_without_its_ah_is_dropped_and_counted(self):
        with Testbed() as tb:
            # A sends ESP only; B's policy asks for ESP inside AH.
            tb.start(tb.a, esp_ah_setkey("a", out_request="esp/transport//require"), **transport_config("a"))
            tb.start(tb.b, esp_ah_setkey("b"), **transport_config("b"))
            r = ping(tb.a, OUTER[4][1], count=3, extra=("-w", "3"))
            self.assertNotEqual(r.returncode, 0, r.stdout)
            c = counters(tb.b)
            self.assertGreaterEqual(c["bundle_in_drop_missing_ah"], 3, c)
            self.assertEqual(c["transport_in_packets"], 0, c)

    def test_ah_without_its_esp_is_dropped_and_counted(self):
        with Testbed() as tb:
            # A sends AH only; B's policy asks for ESP inside AH.
            tb.start(tb.a, esp_ah_setkey("a", out_request="ah/transport//require"), **transport_config("a"))
            tb.start(tb.b, esp_ah_setkey("b"), **transport_config("b"))
            r = ping(tb.a, OUTER[6][1], count=3, extra=("-w", "3"))
            self.assertNotEqual(r.returncode, 0, r.stdout)
            c = counters(tb.b)
            self.assertGreaterEqual(c["bundle_in_drop_missing_esp"], 3, c)
            self.assertEqual(c["ah_in_packets"], 0, c)

    def test_ah_without_a_use_level_esp_is_accepted(self):
        with Testbed() as tb:
            # A sends AH only; B asks for ESP (use) inside AH (require) and answers with both.
            tb.start(tb.a, esp_ah_setkey("a", out_request="ah/transport//require"), **transport_config("a"))
            tb.start(tb.b, esp_ah_setkey("b", in_request="esp/transport//use ah/transport//require"),
                     **transport_config("b"))
            self.ping_both_ways(tb, 6, OUTER[6])
            c = counters(tb.b)
            self.assertGreaterEqual(c["bundle_in_without_optional"], 3, c)
            self.assertEqual(c["bundle_in_drop_missing_esp"], 0, c)

    def test_a_use_level_ah_without_its_sa_is_acquired_and_esp_goes_alone(self):
        with Testbed() as tb:
            for h in tb.hosts():
                tb.start(h, esp_ah_setkey(h.side, AH_USE, AH_USE, with_ah=False), **transport_config(h.side))
            key_manager = PfkeyClient(os.path.join(tb.a.runtime, "pfkey"))
            try:
                self.assertIsNotNone(key_manager.call(SADB_REGISTER, SATYPE_AH))
                seen = self.captured_pings(tb, "esp-alone", OUTER)
                # ESP alone between the hosts, no AH around it.
                self.assertRegex(seen, rf"{OUTER[4][0]} > {OUTER[4][1]}: ESP\(spi=0x{SPI_AB + 0x40:08x}")
                self.assertNotIn("AH(", seen)
                acquire = key_manager.wait_for(SADB_ACQUIRE, timeout=5)
                self.assertIsNotNone(acquire, "no ACQUIRE for the missing AH SA")
                # Between the hosts, for the request without an SA: AH (not the bundle's first, ESP).
                self.assertEqual(acquire[0][3], SATYPE_AH, acquire)
                self.assertTrue(any(ipaddress.ip_address(OUTER[fam][1]).packed in acquire[1][EXT_DST]
                                    for fam in (4, 6)), acquire)
            finally:
                key_manager.close()
            for h in tb.hosts():
                c = counters(h)
                self.assertGreaterEqual(c["bundle_out_without_optional"], 6, c)
                self.assertGreaterEqual(c["bundle_in_without_optional"], 6, c)
                self.assertEqual(c["bundle_out_packets"], 0, c)
                self.assertEqual(c["out_held_no_sa"], 0, c)
            # The AH SAs arrive: the same policies now put AH around ESP.
            for h in tb.hosts():
                r = h.setkey("\n".join(ah_sas(4) + ah_sas(6)) + "\n")
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.ping_with_ah_around_esp(tb, "ah-added")
            tcp_transfer(tb.a, tb.b, OUTER[6][1], nbytes=1 << 20)
            for h in tb.hosts():
                self.assertGreater(counters(h)["bundle_out_packets"], 6, counters(h))
                self.assertGreater(counters(h)["bundle_in_packets"], 6, counters(h))
            self.assert_no_drops(tb)
            for h in tb.hosts():
                self.assertEqual(tb.stop(h), 0, tb.log_text(h))

    def test_a_required_ah_without_its_sa_holds_the_packet(self):
        with Testbed() as tb:
            # Both ask for AH at level require; neither has an AH SA.
            for h in tb.hosts():
                tb.start(h, esp_ah_setkey(h.side, with_ah=False), **transport_config(h.side))
            r = ping(tb.a, OUTER[4][1], count=3, extra=("-w", "3"))
            self.assertNotEqual(r.returncode, 0, r.stdout)
            c = counters(tb.a)
            self.assertGreaterEqual(c["out_held_no_sa"], 3, c)
            self.assertGreaterEqual(c["out_acquires"], 1, c)
            self.assertEqual(c["bundle_out_without_optional"], 0, c)
            self.assertEqual(c["transport_out_packets"], 0, c)
            self.assertEqual(counters(tb.b)["transport_in_packets"], 0, counters(tb.b))


if __name__ == "__main__":
    unittest.main()
