"""AH (RFC 4302) between two of our ipsecd instances, set up with setkey
(`add ... ah SPI -A hmac-sha256 ...`, `ah/tunnel/...` and `ah/transport//`
policies): ping and TCP through tunnel mode over IPv4 and IPv6 outer headers
and through transport mode over both families; on the wire only AH (never
ESP); a wrong key on one side is counted as a bad ICV and delivers nothing;
net.inet.ah.enable = 0 drops and counts."""

import os
import unittest

from harness import (HMAC_KEY_AB, HMAC_KEY_BA, INNER, OUTER, Capture, Testbed, assert_no_drops,
                     assert_pings_both_ways, ping, spd_lines, tcp_transfer, transport_config, transport_setkey)

SPI_AB = 0x5101
SPI_BA = 0x5102


def ah_tunnel_setkey(side, outer, key_ab=HMAC_KEY_AB):
    a, b = OUTER[outer]
    return ("flush;\nspdflush;\n"
            f"add {a} {b} ah {SPI_AB:#x} -m tunnel -r 64 -A hmac-sha256 0x{key_ab.hex()};\n"
            f"add {b} {a} ah {SPI_BA:#x} -m tunnel -r 64 -A hmac-sha256 0x{HMAC_KEY_BA.hex()};\n"
            + spd_lines(side, outer, proto="ah"))


def ah_transport_setkey(side):
    return transport_setkey(side, "ah", SPI_AB, SPI_BA, f"-A hmac-sha1 0x{HMAC_KEY_AB[:20].hex()}",
                            f"-A hmac-sha1 0x{HMAC_KEY_BA[:20].hex()}")


def capture(host, name):
    """AH and ESP on B's veth, listening before traffic flows."""
    return Capture(host, os.path.join(host.workdir, f"{name}.pcap"), "ah or esp or ip6 proto 51 or ip6 proto 50",
                   "veth-ipsec-b")


def counters(h):
    return h.stats()["ipsec-forwarder"]["counters"]


class AhTest(unittest.TestCase):
    def assert_no_drops(self, tb):
        for h in tb.hosts():
            assert_no_drops(self, h.side, counters(h))

    def tunnel(self, outer):
        with Testbed() as tb:
            for h in tb.hosts():
                tb.start(h, ah_tunnel_setkey(h.side, outer))
            with capture(tb.b, f"tunnel{outer}") as cap:
                assert_pings_both_ways(self, tb, INNER)
                cap.wait_for(lambda p: len(p) >= 24, what="the 24 packets of 12 pings")
            seen = cap.text()
            a, b = OUTER[outer]
            self.assertIn(f"{a} > {b}: AH(spi=0x{SPI_AB:08x}", seen)
            self.assertNotIn("ESP(", seen)

            tcp_transfer(tb.a, tb.b, INNER[4][1], nbytes=2 << 20)
            tcp_transfer(tb.b, tb.a, INNER[6][0], nbytes=1 << 20, port=5002)

            for h in tb.hosts():
                c = counters(h)
                self.assertGreater(c["ah_out_packets"], 100, c)
                self.assertGreater(c["ah_in_packets"], 100, c)
                self.assertEqual(c["esp_out_packets"], 0, c)
                self.assertEqual(c["esp_in_packets"], 0, c)
            self.assert_no_drops(tb)
            for h in tb.hosts():
                self.assertEqual(tb.stop(h), 0, tb.log_text(h))

    def test_tunnel_ping_and_tcp_over_ipv4_outer(self):
        self.tunnel(4)

    def test_tunnel_ping_and_tcp_over_ipv6_outer(self):
        self.tunnel(6)

    def test_transport_ping_and_tcp_over_ipv4_and_ipv6(self):
        with Testbed() as tb:
            for h in tb.hosts():
                tb.start(h, ah_transport_setkey(h.side), **transport_config(h.side))
            with capture(tb.b, "transport") as cap:
                assert_pings_both_ways(self, tb, OUTER)
                cap.wait_for(lambda p: len(p) >= 24, what="the 24 packets of 12 pings")
            seen = cap.text()
            self.assertIn(f"{OUTER[4][0]} > {OUTER[4][1]}: AH(spi=0x{SPI_AB + 0x40:08x}", seen)
            tcp_transfer(tb.a, tb.b, OUTER[4][1], nbytes=1 << 20)
            tcp_transfer(tb.b, tb.a, OUTER[6][0], nbytes=1 << 20, port=5002)
            for h in tb.hosts():
                c = counters(h)
                self.assertGreater(c["ah_out_packets"], 50, c)
                self.assertGreater(c["ah_in_packets"], 50, c)
            self.assert_no_drops(tb)

    def test_a_wrong_key_is_counted_as_a_bad_icv_and_delivers_nothing(self):
        with Testbed() as tb:
            tb.start(tb.a, ah_tunnel_setkey("a", 4))
            tb.start(tb.b, ah_tunnel_setkey("b", 4, key_ab=bytes(32)))
            r = ping(tb.a, INNER[4][1], count=3)
            self.assertNotEqual(r.returncode, 0, r.stdout)
            c = counters(tb.b)
            self.assertGreaterEqual(c["ah_in_drop_bad_icv"], 3, c)
            self.assertEqual(c["ah_in_packets"], 0, c)
            sas = tb.b.stats()["ipsec-forwarder"]["sas"]
            bad = [s for s in sas if s["spi"] == SPI_AB]
            self.assertTrue(bad and bad[0]["counters"]["in_drop_bad_icv"] >= 3, sas)

    def test_ah_disabled_drops_and_counts_both_ways(self):
        with Testbed() as tb:
            for h in tb.hosts():
                tb.start(h, ah_tunnel_setkey(h.side, 4))
            self.assertEqual(ping(tb.a, INNER[4][1], count=1).returncode, 0, tb.log_text(tb.a))
            tb.b.sysctl("net.inet.ah.enable=0")
            self.assertNotEqual(ping(tb.a, INNER[4][1], count=2).returncode, 0)
            self.assertGreaterEqual(counters(tb.b)["ah_in_drop_disabled"], 2)
            self.assertNotEqual(ping(tb.b, INNER[4][0], count=2).returncode, 0)
            self.assertGreaterEqual(counters(tb.b)["ah_out_drop_disabled"], 2)
            tb.b.sysctl("net.inet.ah.enable=1")
            self.assertEqual(ping(tb.a, INNER[4][1], count=1).returncode, 0)


if __name__ == "__main__":
    unittest.main()
