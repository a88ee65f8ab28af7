"""TUN offloads (issue 13 item 1; services/forwarder/tun_reader.cpp,
tun_writer.cpp): with tun_offload = yes (the default) the forwarder reads GSO
super-packets from the TUN and cuts them itself, and writes the decrypted
segments of a burst coalesced into super-packets; with tun_offload = no it
reads and writes one plain packet per syscall. Either way TCP and UDP carry
their bytes intact (SHA-256 on both ends), with one crypto worker and with
two (each read placed on its SA's worker), and across a restart of the data
plane (the TUN, its header and its offloads outlive the forwarder). ESP in
UDP with UDP GRO: each coalesced datagram is opened as one multi-segment
request and its decrypted segments still leave coalesced into the TUN."""

import os
import re
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "interop"))

import natt_pfkey  # noqa: E402
from harness import (GCM_KEY_AB, GCM_KEY_BA, INNER, OUTER, SPI_AB, SPI_BA, Testbed, spd_lines,  # noqa: E402
                     tcp_transfer)

# A UDP transfer in rounds: each round is one sendmsg of ROUND datagrams of
# SIZE bytes with UDP_SEGMENT (a UDP super-packet for a TUN with USO), each
# datagram "round, index" then bytes of the round's content; the receiver
# acknowledges a round once it has all of it, the sender resends a round
# not acknowledged within 0.5 s (at most 20 times). At the end both print
# the SHA-256 of everything in order and how many resends it took.
UDP_SERVER = r"""
import hashlib, socket, struct, sys
fam = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET
rounds, per = int(sys.argv[3]), int(sys.argv[4])
s = socket.socket(fam, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(30)
print("listening", flush=True)
got = {}
done = set()
while len(done) < rounds:
    d, peer = s.recvfrom(65535)
    r, i = struct.unpack("!II", d[:8])
    got[(r, i)] = d
    if all((r, j) in got for j in range(per)):
        done.add(r)
        s.sendto(struct.pack("!I", r), peer)
h = hashlib.sha256()
for r in range(rounds):
    for i in range(per):
        h.update(got[(r, i)])
print(h.hexdigest(), flush=True)
"""

UDP_CLIENT = r"""
import hashlib, random, socket, struct, sys
fam = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET
dst = (sys.argv[1], int(sys.argv[2]))
rounds, per, size = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
UDP_SEGMENT = 103
s = socket.socket(fam, socket.SOCK_DGRAM)
s.settimeout(0.5)
rng = random.Random(13)
h = hashlib.sha256()
resends = 0
for r in range(rounds):
    grams = [struct.pack("!II", r, i) + rng.randbytes(size - 8) for i in range(per)]
    for g in grams:
        h.update(g)
    for attempt in range(21):
        s.sendmsg([b"".join(grams)], [(socket.SOL_UDP, UDP_SEGMENT, struct.pack("=H", size))], 0, dst)
        try:
            while struct.unpack("!I", s.recv(16))[0] != r:
                pass
            break
        except socket.timeout:
            resends += 1
    else:
        sys.exit(f"round {r} never acknowledged")
print(h.hexdigest(), resends, flush=True)
"""


def udp_transfer(client, server, server_addr, rounds=64, per=16, size=1200, port=6001):
    """Sends rounds*per datagrams through the tunnel; raises unless the receiver saw exactly them."""
    srv = server.popen(["/usr/bin/python3", "-c", UDP_SERVER, server_addr, str(port), str(rounds), str(per)],
                       stdout=subprocess.PIPE, text=True)
    if "listening" not in srv.stdout.readline():
        raise RuntimeError("UDP server did not start")
    r = client.exec(["/usr/bin/python3", "-c", UDP_CLIENT, server_addr, str(port), str(rounds), str(per),
                     str(size)], timeout=60)
    got = srv.stdout.readline().strip()
    srv.wait(10)
    srv.stdout.close()
    sent, resends = r.stdout.split()
    if got != sent:
        raise AssertionError(f"UDP transfer corrupted: received {got}, sent {sent}")
    return int(resends)


def granted(tb, h):
    """The TUN_F_* flags ipsecd's log says the kernel granted, or None (a plain TUN)."""
    m = re.search(r"virtio_net_hdr on, offloads (0x[0-9a-f]+)", tb.log_text(h))
    return int(m.group(1), 16) if m else None


TUN_F_USO4, TUN_F_USO6 = 0x20, 0x40
REFUSALS = ("tun_in_drop_short", "tun_in_drop_unknown_flags", "tun_in_drop_unknown_gso_type",
            "tun_in_drop_ecn_without_tcp", "tun_in_drop_gso_without_needs_checksum", "tun_in_drop_zero_gso_size",
            "tun_in_drop_checksum_outside_packet", "tun_in_drop_bad_packet", "tun_in_drop_gso_protocol_mismatch",
            "tun_in_drop_checksum_not_at_transport", "tun_in_drop_too_many_segments", "tun_in_drop_no_buffer",
            "tun_write_errors", "tun_out_coalesce_refused")


class TunOffloadTest(unittest.TestCase):
    def counters(self, h):
        return h.stats()["ipsec-forwarder"]["counters"]

    def assert_clean(self, tb):
        for h in tb.hosts():
            c = self.counters(h)
            for name in REFUSALS:
                self.assertEqual(c[name], 0, f"{h.side}: {name}")

    def check_offloaded_tcp(self, tb, family=4):
        """TCP A → B: A cuts super-packets, B coalesces what it delivers."""
        before_a, before_b = self.counters(tb.a), self.counters(tb.b)
        tcp_transfer(tb.a, tb.b, INNER[family][1], nbytes=4 << 20, port=5001 + family)
        a, b = self.counters(tb.a), self.counters(tb.b)
        supers = a["tun_in_super_packets"] - before_a["tun_in_super_packets"]
        segments = a["tun_in_segments"] - before_a["tun_in_segments"]
        self.assertGreater(supers, 0, "A read no super-packet from its TUN")
        self.assertGreater(segments, supers, "A's super-packets were not cut into several segments")
        # The common case, a lone ESP tunnel SA, seals each super-packet's
        # segments as one request (super_packet.cpp), not one request each.
        requests = a["out_multi_segment_requests"] - before_a["out_multi_segment_requests"]
        framed = a["out_multi_segment_segments"] - before_a["out_multi_segment_segments"]
        self.assertGreater(requests, 0, "A sealed no super-packet as one multi-segment request")
        self.assertGreater(framed, 2 * requests, "A's multi-segment requests carry few segments")
        self.assertGreater(framed, segments // 2, "most segments did not go the multi-segment way")
        written = b["tun_out_super_packets"] - before_b["tun_out_super_packets"]
        merged = b["tun_out_coalesced"] - before_b["tun_out_coalesced"]
        self.assertGreater(written, 0, "B wrote no coalesced super-packet")
        self.assertGreater(merged, written, "B's super-packets hold one packet each")

    def test_tcp_and_udp_with_offloads(self):
        with Testbed() as tb:
            tb.start_pair("aes-gcm", 4)
            flags = granted(tb, tb.a)
            self.assertIsNotNone(flags, f"ipsecd did not open the TUN with offloads:\n{tb.log_text(tb.a)}")
            self.check_offloaded_tcp(tb, 4)
            self.check_offloaded_tcp(tb, 6)
            tcp_transfer(tb.b, tb.a, INNER[4][0], nbytes=2 << 20, port=5010)  # the other way
            before = self.counters(tb.a)["tun_in_super_packets"]
            udp_transfer(tb.a, tb.b, INNER[4][1])
            udp_transfer(tb.a, tb.b, INNER[6][1], port=6002)
            if flags & TUN_F_USO4 and flags & TUN_F_USO6:
                # UDP_SEGMENT sends reach the TUN as UDP_L4 super-packets.
                self.assertGreater(self.counters(tb.a)["tun_in_super_packets"], before)
            self.assert_clean(tb)

    def test_plain_esp_over_ipv6_super_packets_leave_as_one_request(self):
        """Plain ESP with an IPv6 outer header (the kernel's raw socket writes
        it): each multi-segment request's segments leave as one sendmmsg."""
        with Testbed() as tb:
            tb.start_pair("aes-gcm", 6)
            self.check_offloaded_tcp(tb, 4)
            a = self.counters(tb.a)
            self.assertEqual(a["out_drop_crypto"] + a["out_drop_send"], 0)
            self.assert_clean(tb)

    def test_esp_in_udp_super_packets_leave_as_one_request_and_one_gso_send(self):
        """ESP in UDP (RFC 3948) over IPv4 (the NAT-T socket) and IPv6: A's
        super-packets are sealed as multi-segment requests and leave in
        UDP_SEGMENT sends; TCP and UDP arrive intact."""
        for outer in (4, 6):
            with self.subTest(outer=outer), Testbed() as tb:
                aout, bout = OUTER[outer]
                sas = [(SPI_AB, aout, bout, GCM_KEY_AB, 4500, 4501), (SPI_BA, bout, aout, GCM_KEY_BA, 4501, 4500)]
                for h, port in ((tb.a, 4500), (tb.b, 4501)):
                    tb.start(h, "flush;\nspdflush;\n" + spd_lines(h.side, outer), natt_port=port)
                    natt_pfkey.install(h.runtime, sas)
                self.check_offloaded_tcp(tb, 4)
                udp_transfer(tb.a, tb.b, INNER[6][1])
                a = self.counters(tb.a)
                self.assertGreater(a["natt_out_gso_datagrams"], 0)
                self.assertGreater(a["natt_out_gso_segments"], 2 * a["natt_out_gso_datagrams"])
                self.assertEqual(a["natt_out_esp_packets"], a["esp_out_packets"], "ESP left outside UDP")
                self.assertEqual(a["out_drop_crypto"] + a["out_drop_send"] + a["natt_out_gso_fallback"], 0)
                self.assert_clean(tb)

    def test_tcp_and_udp_without_offloads(self):
        with Testbed() as tb:
            tb.start_pair("aes-gcm", 4, tun_offload="no")
            self.assertIsNone(granted(tb, tb.a))
            tcp_transfer(tb.a, tb.b, INNER[4][1], nbytes=4 << 20)
            tcp_transfer(tb.b, tb.a, INNER[6][0], nbytes=2 << 20, port=5002)
            udp_transfer(tb.a, tb.b, INNER[4][1])
            for h in tb.hosts():
                c = self.counters(h)
                for name in ("tun_in_super_packets", "tun_in_segments", "tun_out_super_packets",
                             "tun_out_coalesced", "out_multi_segment_requests"):
                    self.assertEqual(c[name], 0, f"{h.side}: {name} on a plain TUN")
            self.assertGreater(self.counters(tb.a)["tun_in_packets"], 1000)
            self.assert_clean(tb)

    def test_esp_in_udp_with_gro_opens_each_coalesced_datagram_as_one_request(self):
        with Testbed() as tb:
            aout, bout = OUTER[6]
            sas = [(SPI_AB, aout, bout, GCM_KEY_AB, 4500, 4501), (SPI_BA, bout, aout, GCM_KEY_BA, 4501, 4500)]
            for h, port in ((tb.a, 4500), (tb.b, 4501)):
                tb.start(h, "flush;\nspdflush;\n" + spd_lines(h.side, 6), natt_port=port)
                natt_pfkey.install(h.runtime, sas)
            before = self.counters(tb.b)
            self.check_offloaded_tcp(tb, 4)
            self.check_offloaded_tcp(tb, 6)
            b = self.counters(tb.b)
            requests = b["esp_in_multi_segment_requests"] - before["esp_in_multi_segment_requests"]
            segments = b["esp_in_multi_segment_segments"] - before["esp_in_multi_segment_segments"]
            self.assertGreater(requests, 10, "B opened no coalesced datagram as one request")
            self.assertGreater(segments, 2 * requests)
            self.assertEqual(b["esp_in_multi_drop_no_buffer"], 0)
            self.assert_clean(tb)

    def test_two_workers_and_a_data_plane_restart(self):
        with Testbed() as tb:
            tb.start_pair("aes-gcm", 4, crypto_workers=2)
            self.check_offloaded_tcp(tb, 4)
            udp_transfer(tb.b, tb.a, INNER[4][0])
            # Reads are placed on their SA's worker: nothing copied between pools outbound.
            self.assert_clean(tb)
            # A restarted data plane gets the same TUN and is told the same offloads.
            tb.a.kill_forwarder_and_wait_for_its_sas()
            self.check_offloaded_tcp(tb, 4)
            self.assert_clean(tb)


if __name__ == "__main__":
    unittest.main()
