"""NAT traversal (RFC 3948) interop with scapy: ESP in UDP between our ipsecd in A
and scapy's SecurityAssociation(..., nat_t_header=UDP(...)) playing B.

Host A runs ipsecd with two ESP-in-UDP SAs (added over PF_KEY with
NAT_T_TYPE/SPORT/DPORT, natt_pfkey.py) and tunnel policies; host B has no
IPsec: the test seals with scapy and sends the ESP as the payload of a UDP
socket bound to B:4500, and opens what A sends, captured on B's veth.
Besides traffic both ways, for IPv4 and IPv6 outer headers:
  - an IKE packet (non-ESP marker) from B reaches a python socket in A bound
    with SO_REUSEPORT on 4500, with B's address and port intact, while ESP
    keeps flowing to ipsecd; with no such socket it is counted and dropped;
  - keepalives: A's are seen on B; B's are counted by A;
  - plain ESP for a NAT-T SA is dropped as an encapsulation mismatch;
  - ESP from another source port is reported (natt_in_new_mapping, and
    SADB_X_NAT_T_NEW_MAPPING on a registered PF_KEY socket).
Run as root with /usr/bin/python3; needs ipsecd built (IPSEC_BUILD_DIR).
"""

import os
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))

from scapy.layers.inet import ICMP, IP, UDP  # noqa: E402
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6  # noqa: E402
from scapy.layers.ipsec import ESP, SecurityAssociation  # noqa: E402
from scapy.packet import Raw  # noqa: E402

import espeer  # noqa: E402
import natt_pfkey  # noqa: E402
from espeer import Capture  # noqa: E402
from harness import (GCM_KEY_AB, GCM_KEY_BA, INNER, OUTER, SPI_AB, SPI_BA, Testbed, ping, spd_lines,  # noqa: E402
                     wait_for)

PORT = 4500

# Sends hex payloads from host B's UDP port `sport` to (dst, dport).
UDP_SENDER = r"""
import socket, sys, time
dst, dport, sport, gap = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
fam = socket.AF_INET6 if ':' in dst else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('::' if fam == socket.AF_INET6 else '0.0.0.0', sport))
for i, h in enumerate(sys.argv[5:]):
    if i and gap: time.sleep(gap)
    s.sendto(bytes.fromhex(h), (dst, dport))
"""

# An "IKE daemon": joins A's NAT-T port with SO_REUSEPORT (after ipsecd, so
# index 1 of the group) and prints what it receives and from where.
IKE_LISTENER = r"""
import socket, sys
fam = socket.AF_INET6 if sys.argv[1] == '6' else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
if fam == socket.AF_INET6:
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
s.bind(('::' if fam == socket.AF_INET6 else '0.0.0.0', int(sys.argv[2])))
print('bound', flush=True)
s.settimeout(15)
while True:
    data, peer = s.recvfrom(65536)
    print(data.hex(), peer[0], peer[1], flush=True)
"""


def send_udp(host, dst, payloads, sport=PORT, dport=PORT, gap=0.0):
    host.exec(["/usr/bin/python3", "-c", UDP_SENDER, dst, str(dport), str(sport), str(gap)] +
              [p.hex() for p in payloads], timeout=20)


def natt_sa(direction, fam, tunnel=True):
    """scapy's SA of the harness SA for 'ab' or 'ba', ESP in UDP 4500 ↔ 4500."""
    a, b = OUTER[fam]
    src, dst = (a, b) if direction == "ab" else (b, a)
    key = GCM_KEY_AB if direction == "ab" else GCM_KEY_BA
    spi = SPI_AB if direction == "ab" else SPI_BA
    hdr = (IP if fam == 4 else IPv6)(src=src, dst=dst)
    return SecurityAssociation(ESP, spi=spi, crypt_algo="AES-GCM", crypt_key=key,
                               nat_t_header=UDP(sport=PORT, dport=PORT), tunnel_header=hdr if tunnel else None)


def inbound_drops(d):
    """Inbound drop counters in a delta (A's kernel may route other packets, e.g.
    MLD, into the TUN: out_drop_no_policy is not ours to judge)."""
    return {k: v for k, v in d.items() if k.startswith(("esp_in_drop", "natt_in_drop"))}


def udp_of(pkt):
    return pkt[UDP] if UDP in pkt else None


def udp_payload(pkt):
    u = udp_of(pkt)
    return bytes(u.payload)[:u.len - 8] if u is not None else b""


class NattPeer:
    """One ipsecd in A per outer family; B is the test with scapy."""

    FAM = None

    @classmethod
    def setUpClass(cls):
        cls.tb = Testbed.for_class(cls)
        a = cls.tb.a
        cls.tb.start(a, "flush;\nspdflush;\n" + spd_lines("a", cls.FAM))
        aout, bout = OUTER[cls.FAM]
        natt_pfkey.install(a.runtime, [
            (SPI_AB, aout, bout, GCM_KEY_AB, PORT, PORT),
            (SPI_BA, bout, aout, GCM_KEY_BA, PORT, PORT),
        ])
        cls.sa_ba = natt_sa("ba", cls.FAM)
        cls.ident = 0x4b4b

    def capture(self, name, bpf="udp port 4500"):
        return Capture(self.tb.b, os.path.join(self.tb.b.workdir, f"{name}.pcap"), bpf=bpf)

    def counters(self):
        return self.tb.a.stats()["ipsec-forwarder"]["counters"]

    def sealed_requests(self, seqs, inner_fam=4):
        ours, theirs = INNER[inner_fam]
        out = []
        for n in seqs:
            if inner_fam == 4:
                inner = IP(src=theirs, dst=ours) / ICMP(type=8, id=self.ident, seq=n) / Raw(b"natt" * 8)
            else:
                inner = IPv6(src=theirs, dst=ours) / ICMPv6EchoRequest(id=self.ident, seq=n) / Raw(b"natt" * 8)
            pkt = self.sa_ba.encrypt(inner)
            out.append(bytes(pkt[UDP].payload))  # the ESP, as a UDP socket sends it
        return out

    def replies(self, pkts, inner_fam=4):
        """Echo reply seqs in what A sent, each opened by scapy (ICV checked)."""
        aout, bout = OUTER[self.FAM]
        sa = natt_sa("ab", self.FAM)
        got = set()
        for p in pkts:
            u = udp_of(p)
            if u is None or espeer.outer_of(p)[1] != aout or len(udp_payload(p)) < 8:
                continue
            inner = sa.decrypt(p[IP if self.FAM == 4 else IPv6].copy())
            seq = espeer.echo_reply_seq(inner, inner_fam, self.ident)
            if seq is not None:
                got.add(seq)
        return got

    def exchange(self, seqs, inner_fam=4, sport=PORT):
        aout, _ = OUTER[self.FAM]
        with self.capture(f"x{seqs[0]}-{inner_fam}") as cap:
            send_udp(self.tb.b, aout, self.sealed_requests(seqs, inner_fam), sport=sport, gap=0.05)
            pkts = cap.wait_for(lambda p: self.replies(p, inner_fam) >= set(seqs), timeout=5)
        return pkts

    # ---- traffic -------------------------------------------------------------

    def test_scapy_sealed_esp_in_udp_is_answered_in_udp(self):
        before = self.counters()
        seqs = [1, 2, 3]
        pkts = self.exchange(seqs)
        self.assertEqual(self.replies(pkts), set(seqs))
        aout, bout = OUTER[self.FAM]
        for p in pkts:
            if espeer.outer_of(p)[1] != aout:
                continue
            u = udp_of(p)
            self.assertEqual((u.sport, u.dport), (PORT, PORT))
            self.assertEqual(espeer.outer_of(p), (self.FAM, aout, bout))
            # The same bytes opened without scapy: padding and ICV by RFC 4303.
            seq, _, plain = espeer.open_esp("aes-gcm", "ab", udp_payload(p))
            _, pad, nh = espeer.split_trailer("aes-gcm", plain)
            self.assertEqual(pad, espeer.rfc_padding(len(pad)))
            self.assertEqual(nh, espeer.NH_IPV4)
        d = espeer.delta(before, self.counters())
        self.assertEqual(d.get("natt_in_esp_packets"), 3, d)
        self.assertEqual(d.get("esp_in_packets"), 3, d)
        self.assertGreaterEqual(d.get("natt_out_esp_packets", 0), 3, d)
        self.assertEqual(inbound_drops(d), {}, d)

    def test_ipv6_inner_both_ways(self):
        seqs = [101, 102]
        pkts = self.exchange(seqs, inner_fam=6)
        self.assertEqual(self.replies(pkts, inner_fam=6), set(seqs))

    def test_ours_opens_in_scapy(self):
        a = self.tb.a
        src, dst = INNER[4]
        aout, bout = OUTER[self.FAM]
        sa = natt_sa("ab", self.FAM)
        with self.capture("out") as cap:
            ping(a, dst, count=3, interval="0.2", timeout=15, extra=("-w", "1"))
            pkts = cap.wait_for(lambda p: len(p) >= 3, timeout=5)
        mine = [p for p in pkts if espeer.outer_of(p)[1] == aout and len(udp_payload(p)) > 1]
        self.assertGreaterEqual(len(mine), 3)
        for p in mine:
            self.assertEqual(p[ESP].spi, SPI_AB)
            inner = sa.decrypt(p[IP if self.FAM == 4 else IPv6].copy())
            self.assertEqual((inner.src, inner.dst), (src, dst))
            self.assertEqual(inner[ICMP].type, 8)

    # ---- the non-ESP marker -----------------------------------------------------

    def test_ike_reaches_a_reuseport_socket_with_addresses_intact_while_esp_flows(self):
        a, b = self.tb.a, self.tb.b
        aout, bout = OUTER[self.FAM]
        ike = a.popen(["/usr/bin/python3", "-c", IKE_LISTENER, str(self.FAM), str(PORT)],
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            self.assertEqual(ike.stdout.readline().strip(), "bound", ike.stderr.read() if ike.poll() else "")
            before = self.counters()
            ike_msg = bytes(4) + b"IKEv2-like message, non-ESP marker first"
            send_udp(b, aout, [ike_msg], sport=PORT)
            send_udp(b, aout, [ike_msg], sport=50000)
            pkts = self.exchange([11, 12, 13])
            self.assertEqual(self.replies(pkts), {11, 12, 13}, "ESP stopped flowing with an IKE socket bound")
            lines = [ike.stdout.readline().split() for _ in range(2)]
        finally:
            ike.kill()
            ike.wait(5)
            ike.stdout.close()
            ike.stderr.close()
        self.assertEqual(lines, [[ike_msg.hex(), bout, str(PORT)], [ike_msg.hex(), bout, "50000"]])
        d = espeer.delta(before, self.counters())
        self.assertNotIn("natt_in_ike_no_listener", d, d)
        self.assertEqual(d.get("natt_in_esp_packets"), 3, d)

    def test_ike_without_a_listener_is_counted_and_dropped(self):
        aout, _ = OUTER[self.FAM]
        before = self.counters()
        send_udp(self.tb.b, aout, [bytes(4) + b"no IKE daemon here"])
        wait_for(lambda: espeer.delta(before, self.counters()).get("natt_in_ike_no_listener"), 5,
                 lambda: f"natt_in_ike_no_listener to count: {espeer.delta(before, self.counters())}")
        d = espeer.delta(before, self.counters())
        self.assertEqual(d.get("natt_in_ike_no_listener"), 1, d)

    # ---- keepalives ---------------------------------------------------------------

    def test_peer_keepalives_are_counted(self):
        aout, _ = OUTER[self.FAM]
        before = self.counters()
        send_udp(self.tb.b, aout, [b"\xff", b"\xff"], gap=0.05)
        wait_for(lambda: espeer.delta(before, self.counters()).get("natt_in_keepalives", 0) >= 2, 5,
                 lambda: f"natt_in_keepalives to count: {espeer.delta(before, self.counters())}")
        d = espeer.delta(before, self.counters())
        self.assertEqual(d.get("natt_in_keepalives"), 2, d)
        self.assertEqual(inbound_drops(d), {}, d)

    def test_our_keepalives_reach_the_peer(self):
        a = self.tb.a
        aout, bout = OUTER[self.FAM]
        # The outbound SA must have carried traffic to count as outbound.
        self.exchange([21])
        a.sysctl("net.inet.ipsec.natt_keepalive_interval=1")
        try:
            with self.capture("keepalive") as cap:
                def keepalives(pkts):
                    return [p for p in pkts if espeer.outer_of(p)[1:] == (aout, bout) and
                            udp_payload(p) == b"\xff"]
                pkts = cap.wait_for(lambda p: len(keepalives(p)) >= 2, timeout=6)
            ka = keepalives(pkts)
            self.assertGreaterEqual(len(ka), 2, "no keepalives from A within 6 s at an interval of 1 s")
            for p in ka:
                self.assertEqual((udp_of(p).sport, udp_of(p).dport), (PORT, PORT))
            self.assertGreaterEqual(self.counters()["natt_out_keepalives"], 2)
        finally:
            a.sysctl("net.inet.ipsec.natt_keepalive_interval=20")

    # ---- encapsulation must agree ----------------------------------------------

    def test_plain_esp_for_a_natt_sa_is_dropped(self):
        aout, _ = OUTER[self.FAM]
        before = self.counters()
        esp = self.sealed_requests([31])[0]
        espeer.send_esp(self.tb.b, aout, [esp])
        wait_for(lambda: espeer.delta(before, self.counters()).get("esp_in_drop_encap_mismatch"), 5,
                 lambda: f"esp_in_drop_encap_mismatch to count: {espeer.delta(before, self.counters())}")
        d = espeer.delta(before, self.counters())
        self.assertEqual(d.get("esp_in_drop_encap_mismatch"), 1, d)
        self.assertNotIn("esp_in_packets", d, d)

    # ---- a NAT that rebinds -------------------------------------------------------

    def test_a_new_source_port_is_reported_once_authenticated(self):
        a = self.tb.a
        aout, bout = OUTER[self.FAM]
        client = natt_pfkey.Client(a.runtime)
        try:
            reply = client.request(natt_pfkey.register_esp(seq=77))
            self.assertEqual(natt_pfkey.header(reply)[2], 0)
            before = self.counters()
            # A forged packet from the new port must not be reported.
            send_udp(self.tb.b, aout, [natt_pfkey.struct.pack("!II", SPI_BA, 999) + bytes(40)], sport=4600)
            pkts = self.exchange([41, 42], sport=4600)
            self.assertEqual(self.replies(pkts), {41, 42})
            d = espeer.delta(before, self.counters())
            self.assertEqual(d.get("natt_in_new_mapping"), 1, d)  # one per second per SA
            self.assertEqual(d.get("esp_in_drop_bad_icv"), 1, d)
            msg = client.wait_type(natt_pfkey.SADB_X_NAT_T_NEW_MAPPING, timeout=3)
            if msg is None:
                self.skipTest("ipsec-policy does not broadcast SADB_X_NAT_T_NEW_MAPPING (yet)")
            ext = natt_pfkey.extensions(msg)
            self.assertEqual(natt_pfkey.struct.unpack("!I", ext[natt_pfkey.EXT_SA][:4])[0], SPI_BA)
            self.assertEqual(natt_pfkey.address_of(ext[natt_pfkey.EXT_ADDRESS_SRC]), bout)
            self.assertEqual(natt_pfkey.port_of(ext[natt_pfkey.EXT_NAT_T_SPORT]), PORT)
            self.assertEqual(natt_pfkey.address_of(ext[natt_pfkey.EXT_ADDRESS_DST]), bout)
            self.assertEqual(natt_pfkey.port_of(ext[natt_pfkey.EXT_NAT_T_DPORT]), 4600)
        finally:
            client.close()


class NattOverIpv4(NattPeer, unittest.TestCase):
    FAM = 4


class NattOverIpv6(NattPeer, unittest.TestCase):
    FAM = 6


if __name__ == "__main__":
    unittest.main(verbosity=2)
