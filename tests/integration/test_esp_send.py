"""Plain tunnel ESP/IPv4 sent on a packet socket to the next hop's MAC
(esp_send = packet; issue 13 item 3; services/forwarder/next_hop.h,
packet_send.cpp, lib/netlink). With esp_send = packet on both ends, pings
both ways and TCP both ways (SHA-256 on both ends) go through, most ESP
leaves by the packet socket (out_packet_socket) and nothing is dropped, also
after the forwarder is killed and restarted; the
next-hop cache follows the kernel's neighbour table: when the peer's MAC
changes and the entry is replaced, and when the entry is deleted, every
packet still arrives. With esp_send = raw (the default) nothing leaves that way."""

import re
import unittest

from harness import INNER, OUTER, Testbed, assert_no_drops, assert_pings_both_ways, ping, tcp_transfer

NEW_MAC_OF_B = "02:00:5e:00:53:02"  # a locally administered address for B's veth


class EspSendTest(unittest.TestCase):
    def counters(self, h):
        return h.stats()["ipsec-forwarder"]["counters"]

    def carry_both_ways(self, tb):
        """Pings both ways, then 2 MiB of TCP each way (SHA-256 checked by tcp_transfer)."""
        assert_pings_both_ways(self, tb, INNER)
        tcp_transfer(tb.a, tb.b, INNER[4][1], nbytes=2 << 20, port=5001)
        tcp_transfer(tb.b, tb.a, INNER[4][0], nbytes=2 << 20, port=5002)

    def all_of(self, src, dst, count=10):
        """count pings src→dst at 0.1 s; all must be answered (a next hop the
        cache failed to follow would lose all but the one raw refresh)."""
        r = ping(src, dst, count=count, interval="0.1")
        got = re.search(r"(\d+) received", r.stdout)
        self.assertTrue(got and int(got.group(1)) == count, f"{r.stdout}{r.stderr}")

    def test_packet_socket_carries_both_ways(self):
        with Testbed() as tb:
            tb.start_pair("aes-gcm", 4, esp_send="packet")
            for h in tb.hosts():
                self.assertIn("plain tunnel ESP/IPv4 sent on a packet socket", tb.log_text(h))
            self.carry_both_ways(tb)
            for side, h in zip("ab", tb.hosts()):
                c = self.counters(h)
                self.assertGreater(c["out_packet_socket"], 500, side)
                # The misses: the first packets, while the kernel answered.
                self.assertLess(c["next_hop_misses"], 50, side)
                self.assertGreater(c["next_hop_lookups"], 0, side)
                self.assertEqual(c["netlink_bad_message"], 0, side)
                self.assertEqual(c["out_packet_socket_too_big"], 0, side)
                assert_no_drops(self, side, c)

            # A restarted forwarder gets the packet socket again and a fresh netlink socket.
            tb.a.kill_forwarder_and_wait_for_its_sas()
            tcp_transfer(tb.a, tb.b, INNER[4][1], nbytes=2 << 20, port=5003)
            c = self.counters(tb.a)
            self.assertGreater(c["out_packet_socket"], 500)
            self.assertEqual(c["netlink_bad_message"], 0)
            assert_no_drops(self, "a", c)

    def test_neighbour_changes_are_followed(self):
        with Testbed() as tb:
            tb.start_pair("aes-gcm", 4, esp_send="packet")
            self.all_of(tb.a, INNER[4][1])
            self.all_of(tb.a, INNER[4][1])  # the next hop known by now
            before = self.counters(tb.a)["out_packet_socket"]
            self.assertGreater(before, 0)

            # B's MAC changes; A's entry is replaced with the new one: the
            # cache must take it, or its packets go to the old MAC and are lost.
            tb.b.exec(["ip", "link", "set", "dev", "veth-ipsec-b", "address", NEW_MAC_OF_B])
            tb.a.exec(["ip", "neigh", "replace", OUTER[4][1], "lladdr", NEW_MAC_OF_B, "dev", "veth-ipsec-a",
                       "nud", "reachable"])
            self.all_of(tb.a, INNER[4][1])
            after_replace = self.counters(tb.a)["out_packet_socket"]
            self.assertGreater(after_replace, before)

            # The entry goes: the cache drops it (raw until the kernel resolves it again).
            tb.a.exec(["ip", "neigh", "del", OUTER[4][1], "dev", "veth-ipsec-a"])
            self.all_of(tb.a, INNER[4][1])
            self.all_of(tb.b, INNER[4][0])
            c = self.counters(tb.a)
            self.assertGreater(c["out_packet_socket"], after_replace)
            assert_no_drops(self, "a", c)

    def test_several_forwarder_threads(self):
        """Thread 0 alone holds the next-hop cache; the other threads send raw:
        traffic is carried either way, nothing is dropped."""
        with Testbed() as tb:
            tb.start_pair("aes-gcm", 4, esp_send="packet", crypto_workers=2, forwarder_threads=2)
            self.carry_both_ways(tb)
            for side, h in zip("ab", tb.hosts()):
                c = self.counters(h)
                self.assertGreater(c["esp_out_packets"], 500, side)
                assert_no_drops(self, side, c)

    def test_raw_by_default(self):
        with Testbed() as tb:
            tb.start_pair("aes-gcm", 4)
            assert_pings_both_ways(self, tb, INNER)
            for side, h in zip("ab", tb.hosts()):
                self.assertNotIn("packet socket", tb.log_text(h))
                c = self.counters(h)
                for name in ("out_packet_socket", "next_hop_lookups", "next_hop_misses"):
                    self.assertEqual(c[name], 0, f"{side}: {name}")


if __name__ == "__main__":
    unittest.main()
