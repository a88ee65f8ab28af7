"""Transport mode (RFC 4303 §3.1.1), host to host: two ipsecd instances whose
own addresses (the veth ends) are each other's transport_peers. Ping and TCP
both ways over IPv4 and IPv6 travel as ESP between the hosts' own addresses
(no outer tunnel header); after shutdown no routing rule or route of the
transport table is left behind."""

import os
import signal
import unittest

import harness
from harness import (GCM_KEY_AB, GCM_KEY_BA, OUTER, Capture, Testbed, assert_no_drops, assert_pings_both_ways, ping,
                     tcp_transfer, transport_config, wait_for)

SPI_AB = 0x2001
SPI_BA = 0x2002
TABLE = 4950


def transport_setkey(side):
    return harness.transport_setkey(side, "esp", SPI_AB, SPI_BA, f"-E aes-gcm-16 0x{GCM_KEY_AB.hex()}",
                                    f"-E aes-gcm-16 0x{GCM_KEY_BA.hex()}")


def capture_esp(host, dev):
    """ESP on the veth, listening before traffic flows."""
    return Capture(host, os.path.join(host.workdir, f"esp-{dev}.pcap"), "esp or ip6 proto 50", dev)


class TransportTest(unittest.TestCase):
    def test_ping_and_tcp_both_ways_over_ipv4_and_ipv6(self):
        with Testbed() as tb:
            for h in tb.hosts():
                tb.start(h, transport_setkey(h.side), **transport_config(h.side))
            rules = tb.a.exec(["ip", "rule"]).stdout
            self.assertIn(f"not from all fwmark 0x4950 lookup {TABLE}", rules)
            self.assertIn(f"lookup {TABLE}", tb.a.exec(["ip", "-6", "rule"]).stdout)
            self.assertIn("dev ipsec0", tb.a.exec(["ip", "route", "show", "table", str(TABLE)]).stdout)

            with capture_esp(tb.b, "veth-ipsec-b") as cap:
                assert_pings_both_ways(self, tb, OUTER)
                cap.wait_for(lambda p: len(p) >= 24, what="the 24 packets of 12 pings")
            seen = cap.text()
            # Transport mode: ESP between the hosts' own addresses, no inner header.
            self.assertIn(f"{OUTER[4][0]} > {OUTER[4][1]}: ESP(spi=0x{SPI_AB + 0x40:08x}", seen)

            tcp_transfer(tb.a, tb.b, OUTER[4][1], nbytes=2 << 20)
            tcp_transfer(tb.b, tb.a, OUTER[4][0], nbytes=1 << 20, port=5002)
            tcp_transfer(tb.a, tb.b, OUTER[6][1], nbytes=1 << 20, port=5003)
            tcp_transfer(tb.b, tb.a, OUTER[6][0], nbytes=1 << 20, port=5004)

            for h in tb.hosts():
                c = h.stats()["ipsec-forwarder"]["counters"]
                self.assertGreater(c["transport_out_packets"], 100, c)
                self.assertGreater(c["transport_in_packets"], 100, c)
                assert_no_drops(self, h.side, c)

            for h in tb.hosts():
                self.assertEqual(tb.stop(h), 0, tb.log_text(h))
                self.assertNotIn(f"lookup {TABLE}", h.exec(["ip", "rule"]).stdout)
                self.assertNotIn(f"lookup {TABLE}", h.exec(["ip", "-6", "rule"]).stdout)
                left = h.exec(["ip", "route", "show", "table", str(TABLE)], check=False).stdout
                self.assertEqual(left.strip(), "")

    def test_a_killed_child_still_leaves_nothing_behind_when_ipsecd_stops(self):
        with Testbed() as tb:
            for h in tb.hosts():
                tb.start(h, transport_setkey(h.side), **transport_config(h.side))
            r = ping(tb.a, OUTER[4][1], count=2)
            self.assertEqual(r.returncode, 0, r.stdout + tb.log_text(tb.a))
            os.kill(tb.a.pid_of("ipsec-forwarder"), signal.SIGKILL)
            # Stopped once ipsecd has seen the death (and set about restarting).
            wait_for(lambda: "restarting the data plane" in tb.log_text(tb.a), 10,
                     lambda: f"ipsecd to notice the forwarder's death:\n{tb.log_text(tb.a)}")
            tb.stop(tb.a)
            self.assertNotIn(f"lookup {TABLE}", tb.a.exec(["ip", "rule"]).stdout, tb.log_text(tb.a))
            self.assertNotIn(f"lookup {TABLE}", tb.a.exec(["ip", "-6", "rule"]).stdout)


if __name__ == "__main__":
    unittest.main()
