"""Interop of an ESP-inside-AH bundle in transport mode
(`esp/transport//require ah/transport//require`) with scapy.

Host A runs a real ipsecd with ESP and AH transport SAs to B; host B has no
IPsec and the test plays B's side. A's packets, captured on B's veth, must
be IP | AH | ESP: scapy's SecurityAssociation(AH) verifies the ICV first,
then SecurityAssociation(ESP) opens what it covered into A's own echo
request. Echo requests that scapy seals with ESP and then signs with AH, sent
by B with their header as built, must be answered by A's kernel through A's
ipsecd, and A's counters show both SAs used. IPv4 and IPv6, AES-GCM-16 and
HMAC-SHA-256-128. Run as root with /usr/bin/python3; needs ipsecd built.
"""

import os
import socket
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))

from scapy.layers.inet import ICMP, IP  # noqa: E402
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6  # noqa: E402
from scapy.layers.ipsec import AH, ESP, SecurityAssociation, split_for_transport  # noqa: E402
from scapy.layers.l2 import Ether  # noqa: E402
from scapy.packet import Raw  # noqa: E402

import espeer  # noqa: E402
from espeer import Capture  # noqa: E402
from harness import (GCM_KEY_AB, GCM_KEY_BA, HMAC_KEY_AB, HMAC_KEY_BA, OUTER, Testbed, ping,  # noqa: E402
                     wait_for)

ESP_AB, ESP_BA = 0x6401, 0x6402
AH_AB, AH_BA = 0x6501, 0x6502
BPF = "ip proto 51 or ip6 proto 51"

# Whole IP packets (hex) on a header-included raw socket: the AH ICV covers the header.
SENDER = r"""
import socket, sys, time
fam = socket.AF_INET6 if sys.argv[1] == '6' else socket.AF_INET
s = socket.socket(fam, socket.SOCK_RAW, socket.IPPROTO_RAW)
if fam == socket.AF_INET6:
    s.setsockopt(socket.IPPROTO_IPV6, 36, 1)  # IPV6_HDRINCL
for h in sys.argv[3:]:
    s.sendto(bytes.fromhex(h), (sys.argv[2], 0))
    time.sleep(0.05)
"""


def setkey_text():
    out = ["flush;", "spdflush;"]
    for fam in (4, 6):
        a, b = OUTER[fam]
        out += [f"add {a} {b} esp {ESP_AB + fam:#x} -m transport -r 64 -E aes-gcm-16 0x{GCM_KEY_AB.hex()};",
                f"add {b} {a} esp {ESP_BA + fam:#x} -m transport -r 64 -E aes-gcm-16 0x{GCM_KEY_BA.hex()};",
                f"add {a} {b} ah {AH_AB + fam:#x} -m transport -r 64 -A hmac-sha256 0x{HMAC_KEY_AB.hex()};",
                f"add {b} {a} ah {AH_BA + fam:#x} -m transport -r 64 -A hmac-sha256 0x{HMAC_KEY_BA.hex()};",
                f"spdadd {a} {b} any -P out ipsec esp/transport//require ah/transport//require;",
                f"spdadd {b} {a} any -P in ipsec esp/transport//require ah/transport//require;"]
    return "\n".join(out) + "\n"


def esp_sa(fam, direction):
    return SecurityAssociation(ESP, spi=(ESP_AB if direction == "ab" else ESP_BA) + fam, crypt_algo="AES-GCM",
                               crypt_key=GCM_KEY_AB if direction == "ab" else GCM_KEY_BA)


def ah_sa(fam, direction):
    return SecurityAssociation(AH, spi=(AH_AB if direction == "ab" else AH_BA) + fam, auth_algo="SHA2-256-128",
                               auth_key=HMAC_KEY_AB if direction == "ab" else HMAC_KEY_BA)


def sign_ah_over_esp(sa, sealed):
    """scapy's own AH transport framing and signing (SecurityAssociation
    _encrypt_ah, step by step) around an ESP packet. encrypt() itself cannot
    be used: its HMAC authenticates the first ESP layer it finds, which here
    is the one inside AH, so the ESP is handed over as opaque bytes."""
    ip_header, nh, payload = split_for_transport(sealed, socket.IPPROTO_AH)
    payload = Raw(bytes(payload))
    ah = AH(spi=sa.spi, seq=sa.seq_num, nh=nh, icv=b"\x00" * sa.auth_algo.icv_size)
    ah.padding = b"\x00" * (-len(ah) % (8 if ip_header.version == 6 else 4))
    ah.payloadlen = len(ah) // 4 - 2
    if ip_header.version == 4:
        ip_header.len = len(ip_header) + len(ah) + len(payload)
        del ip_header.chksum
        ip_header = ip_header.__class__(bytes(ip_header))
    else:
        ip_header.plen = len(ip_header.payload) + len(ah) + len(payload)
    sa.seq_num += 1
    return sa.auth_algo.sign(ip_header / ah / payload, sa.auth_key)


def network(pkt):
    """The captured packet's IP/IPv6 layer, parsed afresh."""
    net = pkt.payload if isinstance(pkt, Ether) else pkt
    return IP(bytes(net)) if net.version == 4 else IPv6(bytes(net))


def reparse(pkt):
    raw = bytes(pkt)
    return IP(raw) if raw[0] >> 4 == 4 else IPv6(raw)


def unwrap(fam, pkt, direction):
    """AH verified, then ESP opened, by scapy: the host's own packet (raises on a bad ICV either way)."""
    after_ah = reparse(ah_sa(fam, direction).decrypt(pkt))
    nh = after_ah.proto if fam == 4 else after_ah.nh
    assert nh == 50, f"AH does not carry ESP: {after_ah.summary()}"
    assert after_ah[ESP].spi == (ESP_AB if direction == "ab" else ESP_BA) + fam
    return reparse(esp_sa(fam, direction).decrypt(after_ah))


class EspInsideAhTransport(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tb = Testbed.for_class(cls)
        cls.tb.start(cls.tb.a, setkey_text(), transport_peers=f"{OUTER[4][1]}, {OUTER[6][1]}",
                     local_addresses=f"{OUTER[4][0]}, {OUTER[6][0]}")
        cls.ident = 0x5454
        # B's SAs, one sequence counter each for the class (A keeps replay windows).
        cls.sas_ba = {fam: (esp_sa(fam, "ba"), ah_sa(fam, "ba")) for fam in (4, 6)}

    def counters(self):
        return self.tb.a.stats()["ipsec-forwarder"]["counters"]

    def ours_to_scapy(self, fam):
        a, b = OUTER[fam]
        with Capture(self.tb.b, os.path.join(self.tb.b.workdir, f"out{fam}.pcap"), BPF) as cap:
            # B has no IPsec and answers with ICMP errors, which end a ping -c N early.
            for _ in range(3):
                ping(self.tb.a, b, count=1, timeout=15, extra=("-w", "2"))
            pkts = cap.wait_for(lambda p: len([q for q in p if network(q).src == a]) >= 3, timeout=5)
        pkts = [network(p) for p in pkts if network(p).src == a]
        self.assertGreaterEqual(len(pkts), 3, (self.counters(), [q.summary() for q in pkts]))
        for p in pkts:
            self.assertEqual(p[AH].spi, AH_AB + fam)
            self.assertEqual(p[AH].nh, 50)
            plain = unwrap(fam, p, "ab")
            self.assertEqual((plain.src, plain.dst), (a, b))
            self.assertTrue(plain.haslayer(ICMP) if fam == 4 else plain.haslayer(ICMPv6EchoRequest))
        # scapy really checks AH's ICV: one flipped byte of the ESP it covers fails.
        broken = bytearray(bytes(pkts[0]))
        broken[-1] ^= 1
        with self.assertRaises(Exception):
            ah_sa(fam, "ab").decrypt(reparse(bytes(broken)))

    def replies(self, fam, pkts):
        a = OUTER[fam][0]
        got = set()
        for p in pkts:
            net = network(p)
            if net.src != a:
                continue
            try:
                plain = unwrap(fam, net, "ab")
            except Exception:
                continue
            if fam == 4 and ICMP in plain and plain[ICMP].type == 0 and plain[ICMP].id == self.ident:
                got.add(plain[ICMP].seq)
            if fam == 6 and ICMPv6EchoReply in plain and plain[ICMPv6EchoReply].id == self.ident:
                got.add(plain[ICMPv6EchoReply].seq)
        return got

    def scapy_to_ours(self, fam, seqs):
        a, b = OUTER[fam]
        esp, ah = self.sas_ba[fam]
        sent = []
        for n in seqs:
            if fam == 4:
                pkt = IP(bytes(IP(src=b, dst=a) / ICMP(type=8, id=self.ident, seq=n) / Raw(b"bundle" * 8)))
            else:
                pkt = IPv6(bytes(IPv6(src=b, dst=a) / ICMPv6EchoRequest(id=self.ident, seq=n) / Raw(b"bundle" * 8)))
            # KAME order: ESP first (inner), AH around it.
            signed = sign_ah_over_esp(ah, reparse(esp.encrypt(pkt)))
            self.assertEqual(signed[AH].nh, 50)
            sent.append(signed)
        before = self.counters()
        with Capture(self.tb.b, os.path.join(self.tb.b.workdir, f"in{fam}.pcap"), BPF) as cap:
            self.tb.b.exec(["/usr/bin/python3", "-c", SENDER, str(fam), a] + [bytes(p).hex() for p in sent],
                           timeout=20)
            got = cap.wait_for(lambda p: self.replies(fam, p) >= set(seqs), timeout=5)
        d = espeer.delta(before, self.counters())
        self.assertEqual(self.replies(fam, got), set(seqs), d)
        self.assertEqual(d.get("bundle_in_packets"), len(seqs), d)
        self.assertEqual(d.get("ah_in_packets"), len(seqs), d)
        self.assertGreaterEqual(d.get("bundle_out_packets", 0), len(seqs), d)
        self.assertEqual({k: v for k, v in d.items() if "drop" in k and k != "out_drop_no_policy"}, {}, d)

    def test_ipv4_ours_verify_and_open_in_scapy_in_order(self):
        self.ours_to_scapy(4)

    def test_ipv6_ours_verify_and_open_in_scapy_in_order(self):
        self.ours_to_scapy(6)

    def test_ipv4_sealed_then_signed_by_scapy_is_answered(self):
        self.scapy_to_ours(4, (1, 2, 3))

    def test_ipv6_sealed_then_signed_by_scapy_is_answered(self):
        self.scapy_to_ours(6, (11, 12, 13))

    def test_esp_alone_is_dropped_as_missing_its_ah(self):
        a, b = OUTER[4]
        pkt = IP(bytes(IP(src=b, dst=a) / ICMP(type=8, id=self.ident, seq=99) / Raw(b"x" * 32)))
        sealed = reparse(self.sas_ba[4][0].encrypt(pkt))
        before = self.counters()
        self.tb.b.exec(["/usr/bin/python3", "-c", SENDER, "4", a, bytes(sealed).hex()], timeout=20)
        wait_for(lambda: espeer.delta(before, self.counters()).get("bundle_in_drop_missing_ah"), 3,
                 lambda: f"bundle_in_drop_missing_ah to count: {espeer.delta(before, self.counters())}")
        d = espeer.delta(before, self.counters())
        self.assertEqual(d.get("bundle_in_drop_missing_ah"), 1, d)


if __name__ == "__main__":
    unittest.main(verbosity=2)
