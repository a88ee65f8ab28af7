"""Plain ESP/IPv4 received through the packet ring (esp_ring; issue 13 item 3;
lib/esp/esp_ring.h, services/forwarder/esp_ring_reader.cpp). With esp_ring =
yes ipsecd hands the forwarder a PACKET_RX_RING and silences the raw ESP/IPv4
socket: every plain ESP packet over IPv4 arrives once, through the ring
(esp_ring_in_packets), none twice (no replay drops), and TCP carries its
bytes intact (SHA-256 on both ends), IPv4 and IPv6 inside; also after the
forwarder is killed and restarted on the same ring. IPv6 outer stays on the
raw socket. With esp_ring = no (the default) nothing comes through a ring."""

import unittest

from harness import INNER, Testbed, tcp_transfer

RING_DROPS = ("esp_ring_drop_bad_frame", "esp_ring_drop_truncated", "esp_ring_drop_fragment", "esp_in_drop_bad_ip",
              "esp_in_drop_replay", "esp_in_drop_no_sa", "esp_in_drop_bad_icv")


class EspRingTest(unittest.TestCase):
    def counters(self, h):
        return h.stats()["ipsec-forwarder"]["counters"]

    def carry(self, tb):
        """TCP both ways, IPv4 and IPv6 inside; the inbound ESP counters of both ends after."""
        tcp_transfer(tb.a, tb.b, INNER[4][1], nbytes=2 << 20, port=5001)
        tcp_transfer(tb.b, tb.a, INNER[6][0], nbytes=2 << 20, port=5002)
        return [self.counters(h) for h in tb.hosts()]

    def assert_no_drops(self, counters):
        for side, c in zip("ab", counters):
            for name in RING_DROPS:
                self.assertEqual(c[name], 0, f"{side}: {name}")

    def test_ipv4_outer_through_the_ring(self):
        with Testbed() as tb:
            tb.start_pair("aes-gcm", 4, esp_ring="yes")
            for h in tb.hosts():
                self.assertIn("plain ESP/IPv4 received through a packet ring", tb.log_text(h))
            counters = self.carry(tb)
            for side, c in zip("ab", counters):
                self.assertGreater(c["esp_in_packets"], 500, side)
                # Every delivered packet came through the ring (the raw socket takes nothing).
                self.assertGreaterEqual(c["esp_ring_in_packets"], c["esp_in_packets"], side)
            self.assert_no_drops(counters)

            # A new forwarder gets a fresh ring and reads it from its first frame.
            tb.a.kill_forwarder_and_wait_for_its_sas()
            tcp_transfer(tb.b, tb.a, INNER[4][0], nbytes=2 << 20, port=5003)
            a = self.counters(tb.a)
            self.assertGreater(a["esp_ring_in_packets"], 500)
            for name in ("esp_ring_drop_bad_frame", "esp_ring_drop_truncated", "esp_ring_drop_fragment"):
                self.assertEqual(a[name], 0, name)

    def test_ipv6_outer_stays_on_the_raw_socket(self):
        with Testbed() as tb:
            tb.start_pair("aes-gcm", 6, esp_ring="yes")
            counters = self.carry(tb)
            for side, c in zip("ab", counters):
                self.assertGreater(c["esp_in_packets"], 500, side)
                self.assertEqual(c["esp_ring_in_packets"], 0, side)
            self.assert_no_drops(counters)

    def test_off_by_default(self):
        with Testbed() as tb:
            tb.start_pair("aes-gcm", 4)
            self.assertNotIn("packet ring", tb.log_text(tb.a))
            counters = self.carry(tb)
            for side, c in zip("ab", counters):
                self.assertGreater(c["esp_in_packets"], 500, side)
                self.assertEqual(c["esp_ring_in_packets"], 0, side)
            self.assert_no_drops(counters)


if __name__ == "__main__":
    unittest.main()
