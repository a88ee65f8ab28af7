"""Two ipsecd instances carry ping and TCP both ways through ESP-in-UDP SAs
(RFC 3948), IPv4 and IPv6 outer, IPv4 and IPv6 inner. The SAs are added over
PF_KEY with NAT_T_TYPE/SPORT/DPORT (tests/interop/natt_pfkey.py). A listens
on natt_port 4500 and B on 4501, so each SA's ports are exercised as given,
not assumed; every ESP packet must travel in UDP (none on the raw socket).
UDP GRO/GSO (net.inet.ipsec.udp_gro, udp_gso): IPv6 ESP leaves in UDP_SEGMENT
sends and is received coalesced, each datagram opened in place as one
multi-segment crypto request; a coalesced datagram that is not all ESP of
one SA is split and its segments each counted as datagrams of their own
would be (IPv4 and IPv6). IPv4
ESP in UDP leaves on the NAT-T socket too: in UDP_SEGMENT sends, with the
kernel's UDP checksum and each SA's DF bit (verified by scapy on a capture);
with DF clear the kernel fragments what exceeds the link."""

import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "interop"))

import natt_pfkey  # noqa: E402
from harness import (GCM_KEY_AB, GCM_KEY_BA, INNER, OUTER, SPI_AB, SPI_BA, Capture, Testbed,  # noqa: E402
                     assert_no_drops, check_inner_traffic, ping, spd_lines, tcp_transfer, wait_for)

PORT_A, PORT_B = 4500, 4501

# One UDP_SEGMENT send from an ordinary socket in a namespace: argv dst, port,
# segment size, then the segments' payloads in hex (all of the segment size
# but the last). The kernel computes the checksum, so the datagram reaches a
# UDP_GRO socket across the veth whole.
GSO_SEND = r"""
import socket, struct, sys
dst, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = b"".join(bytes.fromhex(x) for x in sys.argv[4:])
fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
n = s.sendmsg([data], [(socket.SOL_UDP, 103, struct.pack("H", size))], 0, (dst, port))
assert n == len(data), n
"""

# The veth's transmit checksum offload on or off (argv: device, 0|1), by the
# ethtool ioctl inside the caller's namespace (no ethtool binary needed).
VETH_TX_CSUM = r"""
import ctypes, fcntl, socket, struct, sys
SIOCETHTOOL, ETHTOOL_STXCSUM = 0x8946, 0x17
value = ctypes.create_string_buffer(struct.pack("II", ETHTOOL_STXCSUM, int(sys.argv[2])))
ifr = struct.pack("16sP", sys.argv[1].encode(), ctypes.addressof(value)).ljust(40, b"\0")
fcntl.ioctl(socket.socket(socket.AF_INET, socket.SOCK_DGRAM), SIOCETHTOOL, ifr)
"""


class NattTunnelTest(unittest.TestCase):
    def check_pair(self, outer):
        with Testbed() as tb:
            self.start_natt(tb, outer)
            check_inner_traffic(self, tb)
            for h in tb.hosts():
                c = h.stats()["ipsec-forwarder"]["counters"]
                self.assertGreater(c["natt_out_esp_packets"], 100)
                self.assertEqual(c["natt_out_esp_packets"], c["esp_out_packets"], "ESP left outside UDP")
                self.assertGreater(c["natt_in_esp_packets"], 100)
                self.assertGreaterEqual(c["natt_in_esp_packets"], c["esp_in_packets"])
                assert_no_drops(self, h.side, c)
                self.assertEqual(c["natt_in_new_mapping"], 0)
            self.assertEqual(tb.stop(tb.a), 0, tb.log_text(tb.a))

    def start_natt(self, tb, outer, df_ab=(), df_ba=()):
        aout, bout = OUTER[outer]
        sas = [(SPI_AB, aout, bout, GCM_KEY_AB, PORT_A, PORT_B, *df_ab),
               (SPI_BA, bout, aout, GCM_KEY_BA, PORT_B, PORT_A, *df_ba)]
        for h, port in ((tb.a, PORT_A), (tb.b, PORT_B)):
            tb.start(h, "flush;\nspdflush;\n" + spd_lines(h.side, outer), natt_port=port)
            natt_pfkey.install(h.runtime, sas)

    def test_gso_sends_reach_a_gro_receiver_and_open(self):
        """IPv6 outer, udp_gso and udp_gro on (the defaults): A's ESP leaves
        in UDP_SEGMENT sends, B receives them coalesced, splits them and
        every segment opens: 4 MiB of TCP arrive intact both ways. With B's GRO off the kernel cuts the same sends into
        datagrams and nothing is coalesced, the transfer as good."""
        with Testbed() as tb:
            self.start_natt(tb, 6)
            r = ping(tb.a, INNER[4][1], count=2)
            self.assertEqual(r.returncode, 0, f"{r.stdout}{r.stderr}\n{tb.log_text(tb.a)}")
            for h in tb.hosts():
                self.assertIn("net.inet.ipsec.udp_gro: 1", h.ipsecctl("sysctl", "net.inet.ipsec.udp_gro"))
                self.assertIn("net.inet.ipsec.udp_gso: 1", h.ipsecctl("sysctl", "net.inet.ipsec.udp_gso"))
            tcp_transfer(tb.a, tb.b, INNER[4][1], nbytes=4 << 20)
            tcp_transfer(tb.b, tb.a, INNER[6][0], nbytes=4 << 20, port=5002)
            for h in tb.hosts():
                c = h.stats()["ipsec-forwarder"]["counters"]
                self.assertGreater(c["natt_out_gso_datagrams"], 10, h.side)
                self.assertGreater(c["natt_out_gso_segments"], 2 * c["natt_out_gso_datagrams"], h.side)
                self.assertGreater(c["natt_in_gro_datagrams"], 10, h.side)
                self.assertGreater(c["natt_in_gro_segments"], 2 * c["natt_in_gro_datagrams"], h.side)
                self.assertEqual(c["natt_out_esp_packets"], c["esp_out_packets"])
                self.assertGreaterEqual(c["natt_in_esp_packets"], c["esp_in_packets"])
                self.assertGreater(c["esp_in_packets"], c["natt_in_gro_datagrams"])
                # Coalesced ESP of one SA: opened as one request each, not split (gro_open.cpp).
                self.assertGreater(c["esp_in_multi_segment_requests"], 10, h.side)
                self.assertGreater(c["esp_in_multi_segment_segments"], 2 * c["esp_in_multi_segment_requests"], h.side)
                self.assertGreaterEqual(c["esp_in_multi_segment_requests"], c["natt_in_gro_datagrams"] // 2, h.side)
                assert_no_drops(self, h.side, c, also=("natt_out_gso_fallback",))
            b0 = tb.b.stats()["ipsec-forwarder"]["counters"]
            tb.b.sysctl("net.inet.ipsec.udp_gro=0")
            tcp_transfer(tb.a, tb.b, INNER[4][1], nbytes=2 << 20, port=5003)
            b1 = tb.b.stats()["ipsec-forwarder"]["counters"]
            self.assertEqual(b1["natt_in_gro_datagrams"], b0["natt_in_gro_datagrams"])
            self.assertGreater(b1["esp_in_packets"] - b0["esp_in_packets"], 1000)
            self.assertEqual(tb.stop(tb.a), 0, tb.log_text(tb.a))

    def test_ipv4_leaves_in_gso_sends_with_a_checksum_and_each_sas_df_bit(self):
        """IPv4 outer, A→B's SA with DF set, B→A's with DF clear (per SA,
        though the inner TCP sets DF). With the veths' offloads on, A's ESP
        leaves in UDP_SEGMENT sends and B's UDP_GRO socket receives them
        whole. With the veths' checksum offload off (a capture then shows the
        checksum the kernel computed rather than a partial one the device
        would complete) and GSO off, every ESP-in-UDP datagram captured on
        the wire has a non-zero UDP checksum that scapy verifies, A's with
        DF, B's without; a ping's DSCP and ECN are in its outer header."""
        from scapy.layers.inet import IP, UDP
        with Testbed() as tb:
            self.start_natt(tb, 4, df_ab=(natt_pfkey.SA_DF_SET,), df_ba=(natt_pfkey.SA_DF_CLEAR,))
            r = ping(tb.a, INNER[4][1], count=2)
            self.assertEqual(r.returncode, 0, f"{r.stdout}{r.stderr}\n{tb.log_text(tb.a)}")
            tcp_transfer(tb.a, tb.b, INNER[4][1], nbytes=4 << 20)
            a = tb.a.stats()["ipsec-forwarder"]["counters"]
            b = tb.b.stats()["ipsec-forwarder"]["counters"]
            self.assertGreater(a["natt_out_gso_datagrams"], 10)
            self.assertGreater(a["natt_out_gso_segments"], 2 * a["natt_out_gso_datagrams"])
            self.assertGreater(b["natt_in_gro_datagrams"], 10)
            self.assertGreater(b["esp_in_multi_segment_requests"], 10)
            for side, c in (("A", a), ("B", b)):
                self.assertEqual(c["natt_out_esp_packets"], c["esp_out_packets"], side)
                self.assertGreaterEqual(c["natt_out_df_switches"], 1, side)
                assert_no_drops(self, side, c, also=("natt_out_gso_fallback",))

            for h, dev in ((tb.a, "veth-ipsec-a"), (tb.b, "veth-ipsec-b")):
                h.exec(["/usr/bin/python3", "-c", VETH_TX_CSUM, dev, "0"])
                h.sysctl("net.inet.ipsec.udp_gso=0")
            path = os.path.join(tb.a.workdir, "natt4.pcap")
            with Capture(tb.a, path, f"udp port {PORT_A} or udp port {PORT_B}", "veth-ipsec-a") as cap:
                tcp_transfer(tb.a, tb.b, INNER[4][1], nbytes=256 << 10, port=5004)
                # DSCP EF and ECT(1): the tunnel copies both into the outer header (RFC 6040).
                r = ping(tb.a, INNER[4][1], count=2, extra=("-Q", "0xb9"))
                self.assertEqual(r.returncode, 0, f"{r.stdout}{r.stderr}")
                aout, bout = OUTER[4]

                def esp_from(pkts, src):
                    return [p[IP] for p in pkts if IP in p and UDP in p and p[IP].src == src and len(p[UDP].payload) > 1]
                pkts = cap.wait_for(lambda got: len(esp_from(got, aout)) > 50 and len(esp_from(got, bout)) > 10 and
                                    sum(p.tos == 0xb9 for p in esp_from(got, aout)) >= 2,
                                    what="ESP in UDP both ways, two pings with TOS 0xb9")
            for src, df in ((aout, True), (bout, False)):
                for p in esp_from(pkts, src):
                    self.assertEqual(p.flags.DF, df, f"{src}: {p.summary()}")
                    sent = p[UDP].chksum
                    self.assertNotEqual(sent, 0, f"{src}: {p.summary()}")
                    again = IP(bytes(p))
                    del again[UDP].chksum
                    self.assertEqual(IP(bytes(again))[UDP].chksum, sent, f"{src}: checksum does not verify")
            self.assertEqual(tb.stop(tb.a), 0, tb.log_text(tb.a))

    def test_ipv4_df_clear_beyond_the_link_mtu_leaves_in_the_kernels_fragments(self):
        """A→B's SA with DF clear and the SA's MTU (1500) above A's link
        (1280): a ping whose ESP in UDP fits the SA but not the link leaves
        in fragments the kernel cut (IP_PMTUDISC_DONT), which B reassembles
        and answers (in fragments too); nothing is refused."""
        from scapy.layers.inet import IP
        with Testbed() as tb:
            self.start_natt(tb, 4, df_ab=(natt_pfkey.SA_DF_CLEAR,))
            r = ping(tb.a, INNER[4][1], count=2)
            self.assertEqual(r.returncode, 0, f"{r.stdout}{r.stderr}")
            # Both ends: a veth drops what exceeds the receiving end's MTU (B's reply copies the request's clear DF).
            for h, dev in ((tb.a, "veth-ipsec-a"), (tb.b, "veth-ipsec-b")):
                h.exec(["ip", "link", "set", dev, "mtu", "1280"])
            path = os.path.join(tb.a.workdir, "frag4.pcap")
            with Capture(tb.a, path, f"src {OUTER[4][0]} and (udp port {PORT_B} or ip[6:2] & 0x1fff != 0)",
                         "veth-ipsec-a") as cap:
                r = ping(tb.a, INNER[4][1], count=2, extra=("-s", "1300", "-M", "dont"))
                self.assertEqual(r.returncode, 0, f"{r.stdout}{r.stderr}\n{tb.log_text(tb.a)}")
                pkts = cap.wait_for(lambda got: sum(1 for p in got if IP in p and p[IP].flags.MF) >= 2,
                                    what="two first fragments of ESP in UDP from A")
            for p in pkts:
                if IP in p and (p[IP].flags.MF or p[IP].frag):
                    self.assertFalse(p[IP].flags.DF, p.summary())
                    self.assertLessEqual(p[IP].len, 1280, p.summary())
            c = tb.a.stats()["ipsec-forwarder"]["counters"]
            self.assertEqual(c["out_drop_send"], 0)
            self.assertEqual(c["pmtu_out_fragmented"], 0, "cut by the kernel, not by us")

    def check_segments_each_counted(self, outer):
        """A coalesced datagram whose segments are an ESP packet of no SA, a
        non-ESP marker, a keepalive-sized run and a cut last one: each segment
        is counted as a datagram of its own would be; the forwarder goes on."""
        with Testbed() as tb:
            self.start_natt(tb, outer)
            # The path first: an IPv6 address still in duplicate address
            # detection drops what is sent to it (the ping waits that out).
            r = ping(tb.a, INNER[4][1], count=2)
            self.assertEqual(r.returncode, 0, f"{r.stdout}{r.stderr}")
            b_addr = OUTER[outer][1]
            esp = "00009999" "00000001"    # SPI 0x9999: no such SA
            marker = "00000000" "01020304"  # non-ESP marker: IKE, no daemon
            cut = "0000"                    # shorter than an ESP header
            before = tb.b.stats()["ipsec-forwarder"]["counters"]
            tb.a.exec(["/usr/bin/python3", "-c", GSO_SEND, b_addr, str(PORT_B), "8", esp, marker, esp, cut])
            tb.a.exec(["/usr/bin/python3", "-c", GSO_SEND, b_addr, str(PORT_B), "1", "ff", "ff", "ff"])

            def deltas():
                c = tb.b.stats()["ipsec-forwarder"]["counters"]
                return {k: c[k] - before[k] for k in c}
            wait_for(lambda: deltas()["natt_in_gro_datagrams"] >= 2, 3,
                     lambda: f"the two coalesced datagrams counted: {deltas()}")
            d = deltas()
            self.assertEqual(d["natt_in_gro_datagrams"], 2, d)
            self.assertEqual(d["natt_in_gro_segments"], 7, d)
            self.assertEqual(d["esp_in_drop_no_sa"], 2, d)
            self.assertEqual(d["natt_in_ike_no_listener"], 1, d)
            self.assertEqual(d["natt_in_drop_bad"], 1, d)
            self.assertEqual(d["natt_in_keepalives"], 3, d)
            self.assertEqual(d["natt_in_gro_drop_bad"], 0, d)
            # Split, never opened as one request: the first's leading ESP has
            # no SA (the pre-check), the second holds no ESP at all.
            self.assertEqual(d["esp_in_multi_split_precheck"], 1, d)
            self.assertEqual(d["esp_in_multi_split_mixed"], 1, d)
            self.assertEqual(d["esp_in_multi_segment_requests"], 0, d)
            r = ping(tb.a, INNER[4][1], count=2)
            self.assertEqual(r.returncode, 0, f"{r.stdout}{r.stderr}")

    def test_coalesced_segments_each_counted_ipv4(self):
        self.check_segments_each_counted(4)

    def test_coalesced_segments_each_counted_ipv6(self):
        self.check_segments_each_counted(6)

    def test_natt_over_ipv4(self):
        self.check_pair(4)

    def test_natt_over_ipv6(self):
        self.check_pair(6)


if __name__ == "__main__":
    unittest.main()
