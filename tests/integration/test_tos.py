"""DSCP and ECN across the tunnel (RFC 6040 normal mode): encapsulation copies
the inner TOS into the outer header; decapsulation passes congestion (outer CE)
on to an ECN-capable inner packet and drops a Not-ECT one, counted."""

import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "interop"))

import espeer  # noqa: E402
from harness import INNER, OUTER, Capture, Testbed, ping, wait_for  # noqa: E402
from scapy.all import ICMP, IP, IPv6  # noqa: E402

SEND_WITH_TOS = r"""
import socket, sys
dst, tos, payload = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3])
fam = socket.AF_INET6 if ':' in dst else socket.AF_INET
s = socket.socket(fam, socket.SOCK_RAW, 50)
if fam == socket.AF_INET:
    s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
else:
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, tos)
s.sendto(payload, (dst, 0))
"""


class TosTest(unittest.TestCase):
    def test_outer_header_copies_dscp_and_ecn(self):
        for outer in (4, 6):
            with self.subTest(outer=outer), Testbed() as tb:
                tb.start_pair("aes-gcm", outer)
                pcap = os.path.join(tb.tmp, "wire.pcap")
                src = OUTER[outer][0]

                def from_a(pkts):
                    return [p for p in pkts if (p.haslayer(IP) and p[IP].src == src) or
                            (p.haslayer(IPv6) and p[IPv6].src == src)]
                with espeer.Capture(tb.b, pcap) as cap:
                    r = ping(tb.a, INNER[4][1], count=3, extra=("-Q", "0xba"))
                    self.assertEqual(r.returncode, 0, r.stdout)
                    pkts = from_a(cap.wait_for(lambda got: len(from_a(got)) >= 3, what="3 echo requests from A"))
                seen = []
                for pkt in pkts:
                    if pkt.haslayer(IP) and pkt[IP].src == OUTER[4][0]:
                        seen.append(pkt[IP].tos)
                    elif pkt.haslayer(IPv6) and pkt[IPv6].src == OUTER[6][0]:
                        seen.append(pkt[IPv6].tc)
                self.assertGreaterEqual(len(seen), 3)
                self.assertTrue(all(t == 0xba for t in seen), [hex(t) for t in seen])

    def send_ce(self, tb, seq, inner_tos):
        inner = bytes(IP(src=INNER[4][1], dst=INNER[4][0], tos=inner_tos) / ICMP(id=7, seq=seq) / (b"x" * 32))
        esp = espeer.seal("aes-gcm", "ba", seq, inner)
        tb.b.exec(["/usr/bin/python3", "-c", SEND_WITH_TOS, OUTER[4][0], "3", esp.hex()])

    def test_outer_ce_marks_an_ect_inner_packet_and_drops_a_not_ect_one(self):
        with Testbed() as tb:
            espeer.start_host(tb, tb.a, "aes-gcm", 4)
            pcap = os.path.join(tb.tmp, "tun.pcap")

            def requests(pkts):
                return [p for p in pkts if p.haslayer(ICMP) and p[ICMP].type == 8]
            with Capture(tb.a, pcap, "icmp", "ipsec0") as cap:
                before = tb.a.stats()["ipsec-forwarder"]["counters"]
                self.send_ce(tb, 1, 0x02)  # ECT(0) inside, CE outside → CE inside
                self.send_ce(tb, 2, 0x00)  # Not-ECT inside → dropped
                wait_for(lambda: tb.a.counter("esp_in_drop_ecn") == before["esp_in_drop_ecn"] + 1, 5,
                         "the Not-ECT packet counted in esp_in_drop_ecn")
                self.assertEqual(tb.a.counter("esp_in_packets"), before["esp_in_packets"] + 1)
                cap.wait_for(requests, timeout=5, what="the ECT echo request on A's TUN")
            requests = requests(cap.packets())
            self.assertEqual(len(requests), 1, requests)
            self.assertEqual(requests[0][IP].tos & 3, 3)
            self.assertEqual(requests[0][ICMP].seq, 1)


if __name__ == "__main__":
    unittest.main()
