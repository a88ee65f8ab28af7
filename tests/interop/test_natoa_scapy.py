"""NAT-OA (RFC 3948 §3.1.2) interop with scapy: transport-mode ESP in UDP from
a peer behind a NAT, whose TCP/UDP checksums were computed over its private
(original) address.

Host A runs ipsecd with transport policies to B and, per outer family, three
inbound ESP-in-UDP transport SAs added over PF_KEY: one whose NAT_T_OA is the
address the peer really used ("right"), one with another address ("wrong"),
and one without an OA ("none"). Host B has no IPsec: scapy builds the inner
TCP/UDP packet with the checksum over OA → A, puts B's own address (the
"NAT's public address") in the IP header without touching that checksum,
seals it in transport mode and sends the ESP from B's UDP port 4500.

  - UDP, right OA: a real socket in A receives the datagram (the forwarder
    updated the checksum incrementally);
  - UDP, wrong OA: the kernel drops it, Udp InCsumErrors goes up: the fix-up
    is what made the right one pass;
  - UDP, no OA: received (IPv4: checksum cleared; IPv6: recomputed);
  - TCP, right OA: A's listening socket answers the SYN with a SYN-ACK (sent
    back over A's own NAT-T transport SA as ESP in UDP from port 4500 to 4500,
    RFC 3948 §3.1.1, never as plain ESP; opened here by scapy), our ACK
    completes the handshake and accept() returns; wrong OA: no SYN-ACK, Tcp
    InCsumErrors up.
Run as root with /usr/bin/python3; needs ipsecd built (IPSEC_BUILD_DIR).
"""

import os
import struct
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))

from scapy.layers.inet import IP, TCP, UDP  # noqa: E402
from scapy.layers.inet6 import IPv6  # noqa: E402
from scapy.layers.ipsec import ESP, SecurityAssociation  # noqa: E402
from scapy.packet import Raw  # noqa: E402

import natt_pfkey  # noqa: E402
from espeer import Capture, delta, outer_of, scapy_sa  # noqa: E402
from harness import GCM_KEY_AB, GCM_KEY_BA, OUTER, SPI_AB, Testbed  # noqa: E402

PORT = 4500
EXT_NAT_T_OA = 23  # SADB_X_EXT_NAT_T_OA, Linux numbering
IPSEC_MODE_TRANSPORT = 1
# Inbound (B → A) SAs per case; the family adds 0x100 for IPv6.
SPIS = {"right": 0x2001, "wrong": 0x2002, "none": 0x2003}
# B's private address behind its NAT (what its checksums name), and a wrong one.
PRIVATE = {4: "10.0.0.5", 6: "fd00::5"}
WRONG = {4: "10.0.0.6", 6: "fd00::6"}

# A UDP socket in A: prints each datagram's payload (hex) and source, until the timeout.
UDP_RECEIVER = r"""
import socket, sys
fam = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print('bound', flush=True)
s.settimeout(float(sys.argv[3]))
try:
    while True:
        data, peer = s.recvfrom(65536)
        print(data.hex(), peer[0], flush=True)
except socket.timeout:
    pass
"""

# A TCP listener in A: prints the peer of each accepted connection, until the timeout.
TCP_LISTENER = r"""
import socket, sys
fam = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(8)
print('listening', flush=True)
s.settimeout(float(sys.argv[3]))
try:
    while True:
        c, peer = s.accept()
        print('accepted', peer[0], peer[1], flush=True)
except socket.timeout:
    pass
"""

UDP_SENDER = r"""
import socket, sys, time
dst, dport, sport = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fam = socket.AF_INET6 if ':' in dst else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('::' if fam == socket.AF_INET6 else '0.0.0.0', sport))
for h in sys.argv[4:]:
    s.sendto(bytes.fromhex(h), (dst, dport))
    time.sleep(0.05)
"""


def spi_of(case, fam):
    return SPIS[case] + (0x100 if fam == 6 else 0)


def add_transport_natt_sa(spi, src, dst, key, oa, seq):
    """SADB_ADD of an AES-GCM-16 transport-mode ESP SA in UDP 4500 ↔ 4500, with NAT_T_OA if given."""
    sa2 = natt_pfkey._plain_ext(natt_pfkey.EXT_X_SA2, struct.pack("=BBHII", IPSEC_MODE_TRANSPORT, 0, 0, 0, 0))
    msg = natt_pfkey.add_natt_sa(spi, src, dst, key, PORT, PORT, seq=seq)
    body = msg[16:]
    # Replace the tunnel-mode SA2 extension (second one) by a transport-mode one.
    first = struct.unpack("=H", body[:2])[0] * 8
    second = struct.unpack("=H", body[first:first + 2])[0] * 8
    body = body[:first] + sa2 + body[first + second:]
    if oa:
        body += natt_pfkey._address(EXT_NAT_T_OA, oa)
    return natt_pfkey._message(natt_pfkey.SADB_ADD, natt_pfkey.SADB_SATYPE_ESP, seq, [body])


def snmp(host, table, field):
    """A counter of A's netns from /proc/net/snmp (Udp, Tcp) or /proc/net/snmp6 (Udp6...)."""
    if table.endswith("6"):
        for line in host.exec(["cat", "/proc/net/snmp6"]).stdout.splitlines():
            name, _, value = line.partition(" ")
            if name == table + field:
                return int(value.split()[-1])
        return 0
    lines = [l.split() for l in host.exec(["cat", "/proc/net/snmp"]).stdout.splitlines() if l.startswith(table + ":")]
    names, values = lines[0], lines[1]
    return int(values[names.index(field)])


class NatOaPeer:
    FAM = None

    @classmethod
    def setUpClass(cls):
        cls.tb = Testbed.for_class(cls)
        a, b = OUTER[cls.FAM]
        # Outbound (A → B): transport ESP in UDP, for the SYN-ACK; inbound: the NAT-T SAs.
        text = (f"flush;\nspdflush;\n"
                f"spdadd {a} {b} any -P out ipsec esp/transport//require;\n"
                f"spdadd {b} {a} any -P in ipsec esp/transport//require;\n")
        cls.tb.start(cls.tb.a, text, transport_peers=b, local_addresses=a)
        c = natt_pfkey.Client(cls.tb.a.runtime)
        try:
            reply = c.request(add_transport_natt_sa(SPI_AB, a, b, GCM_KEY_AB, None, 10))
            err = natt_pfkey.header(reply)[2]
            if err:
                raise OSError(err, f"PF_KEY ADD (outbound) refused: {os.strerror(err)}")
            for i, (case, oa) in enumerate((("right", PRIVATE[cls.FAM]), ("wrong", WRONG[cls.FAM]), ("none", None)), 1):
                reply = c.request(add_transport_natt_sa(spi_of(case, cls.FAM), b, a, GCM_KEY_BA, oa, i))
                err = natt_pfkey.header(reply)[2]
                if err:
                    raise OSError(err, f"PF_KEY ADD ({case}) refused: {os.strerror(err)}")
        finally:
            c.close()
        cls.sas = {case: SecurityAssociation(ESP, spi=spi_of(case, cls.FAM), crypt_algo="AES-GCM",
                                             crypt_key=GCM_KEY_BA, nat_t_header=UDP(sport=PORT, dport=PORT))
                   for case in SPIS}

    def counters(self):
        return self.tb.a.stats()["ipsec-forwarder"]["counters"]

    def natted(self, l4, checksum_src):
        """The inner packet as B's stack behind the NAT made it (checksum over
        checksum_src → A), with the NAT's public address (B's own) as source."""
        a, b = OUTER[self.FAM]
        L3 = IP if self.FAM == 4 else IPv6
        made = L3(bytes(L3(src=checksum_src, dst=a) / l4))
        made.src = b
        if self.FAM == 4:
            del made.chksum  # the IP header's own checksum: the NAT fixes it
        return L3(bytes(made))

    def seal_and_send(self, case, pkts):
        """ESP-in-UDP from B:4500 to A:4500, as a NAT would forward it."""
        a, _ = OUTER[self.FAM]
        payloads = [bytes(self.sas[case].encrypt(p)[UDP].payload) for p in pkts]
        self.tb.b.exec(["/usr/bin/python3", "-c", UDP_SENDER, a, str(PORT), str(PORT)] + [p.hex() for p in payloads],
                       timeout=20)

    def udp_case(self, case, checksum_src, port):
        a, b = OUTER[self.FAM]
        rx = self.tb.a.popen(["/usr/bin/python3", "-c", UDP_RECEIVER, a, str(port), "2"], stdout=-1, text=True)
        self.assertEqual(rx.stdout.readline().strip(), "bound")
        before = self.counters()
        table = "Udp6" if self.FAM == 6 else "Udp"
        errs = snmp(self.tb.a, table, "InCsumErrors")
        payload = f"nat-oa {case}".encode()
        self.seal_and_send(case, [self.natted(UDP(sport=40000, dport=port) / Raw(payload), checksum_src)])
        out, _ = rx.communicate(timeout=10)
        got = [l.split() for l in out.splitlines() if l.strip()]
        return got, delta(before, self.counters()), snmp(self.tb.a, table, "InCsumErrors") - errs, payload

    def test_udp_with_the_right_oa_reaches_the_socket(self):
        got, d, csum_errors, payload = self.udp_case("right", PRIVATE[self.FAM], 7001)
        self.assertEqual(got, [[payload.hex(), OUTER[self.FAM][1]]], d)
        self.assertEqual(d.get("natt_in_oa_adjusted"), 1, d)
        self.assertEqual(d.get("transport_in_packets"), 1, d)
        self.assertEqual(csum_errors, 0)

    def test_udp_with_a_wrong_oa_is_dropped_by_the_kernel_checksum(self):
        got, d, csum_errors, _ = self.udp_case("wrong", PRIVATE[self.FAM], 7002)
        self.assertEqual(got, [], d)
        self.assertEqual(d.get("natt_in_oa_adjusted"), 1, d)  # we delivered it; the kernel refused it
        self.assertEqual(d.get("transport_in_packets"), 1, d)
        self.assertEqual(csum_errors, 1)

    def test_udp_without_an_oa_is_received(self):
        got, d, csum_errors, payload = self.udp_case("none", PRIVATE[self.FAM], 7003)
        self.assertEqual(got, [[payload.hex(), OUTER[self.FAM][1]]], d)
        self.assertEqual(d.get("natt_in_oa_zeroed" if self.FAM == 4 else "natt_in_oa_recomputed"), 1, d)
        self.assertEqual(csum_errors, 0)

    def syn_acks(self, pkts, sport):
        """TCP segments A sent back to B (transport ESP in UDP 4500 → 4500, opened by scapy with
        the A → B key); A's plain ESP is collected in self.plain_esp."""
        a, b = OUTER[self.FAM]
        sa = scapy_sa("aes-gcm", "ab")
        out = []
        self.plain_esp = []
        for p in pkts:
            if outer_of(p)[1] != a:
                continue
            if UDP not in p:
                self.plain_esp.append(p)
                continue
            if (p[UDP].sport, p[UDP].dport) != (PORT, PORT) or len(p[UDP].payload) <= 8:
                continue
            L3 = IP if self.FAM == 4 else IPv6
            header = L3(src=a, dst=b, proto=50) if self.FAM == 4 else L3(src=a, dst=b, nh=50)
            inner = sa.decrypt(L3(bytes(header / Raw(bytes(p[UDP].payload)))))
            if TCP in inner and inner[TCP].dport == sport:
                out.append(inner[TCP])
        return out

    def tcp_case(self, case, port, sport):
        a, b = OUTER[self.FAM]
        srv = self.tb.a.popen(["/usr/bin/python3", "-c", TCP_LISTENER, a, str(port), "3"], stdout=-1, text=True)
        self.assertEqual(srv.stdout.readline().strip(), "listening")
        errs = snmp(self.tb.a, "Tcp", "InCsumErrors")
        isn = 0x01020304
        cap = Capture(self.tb.b, os.path.join(self.tb.b.workdir, f"tcp-{case}.pcap"),
                      bpf="udp port 4500 or ip proto 50 or ip6 proto 50")
        with cap:
            syn = TCP(sport=sport, dport=port, flags="S", seq=isn, window=65535)
            self.seal_and_send(case, [self.natted(syn, PRIVATE[self.FAM])])
            # Either A answers, or its kernel counts the bad checksum (and nothing can follow).
            pkts = cap.wait_for(lambda p: self.syn_acks(p, sport) or snmp(self.tb.a, "Tcp", "InCsumErrors") > errs,
                                timeout=3, what="A's SYN-ACK or a TCP checksum error on A")
            answers = self.syn_acks(pkts, sport)
            if answers:
                sa_ = answers[0]
                ack = TCP(sport=sport, dport=port, flags="A", seq=isn + 1, ack=sa_.seq + 1, window=65535)
                self.seal_and_send(case, [self.natted(ack, PRIVATE[self.FAM])])
        out, _ = srv.communicate(timeout=10)
        return answers, out, snmp(self.tb.a, "Tcp", "InCsumErrors") - errs, isn

    def test_tcp_handshake_with_the_right_oa_completes(self):
        answers, out, csum_errors, isn = self.tcp_case("right", 7101, 41001)
        self.assertTrue(answers, "no SYN-ACK from A")
        self.assertEqual(str(answers[0].flags), "SA")
        self.assertEqual(answers[0].ack, isn + 1)
        self.assertIn(f"accepted {OUTER[self.FAM][1]} 41001", out)
        self.assertEqual(csum_errors, 0)
        self.assertEqual(self.plain_esp, [], "A sent plain ESP over a NAT-T SA")
        self.assertGreaterEqual(self.counters()["transport_out_natt"], 1)

    def test_tcp_syn_with_a_wrong_oa_is_dropped_by_the_kernel_checksum(self):
        answers, out, csum_errors, _ = self.tcp_case("wrong", 7102, 41002)
        self.assertEqual(answers, [])
        self.assertNotIn("accepted", out)
        self.assertEqual(csum_errors, 1)


class NatOaIpv4(NatOaPeer, unittest.TestCase):
    FAM = 4


class NatOaIpv6(NatOaPeer, unittest.TestCase):
    FAM = 6


if __name__ == "__main__":
    if os.geteuid() != 0:
        print("needs root (network namespaces)")
        sys.exit(77)
    unittest.main()
