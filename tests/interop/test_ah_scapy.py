"""Interop of AH (RFC 4302) in tunnel mode with scapy's SecurityAssociation(AH).

Host A runs a real ipsecd with AH tunnel SAs to B; host B has no IPsec and
the test plays B's side. Our AH, captured on B's veth, must verify in scapy
(the ICV over the canonicalised outer header: scapy zeroes the mutable fields
its own way) and hold A's echo request; AH that scapy signs and B sends with
its header as built (header-included raw socket: the ICV covers the header)
must be answered by A's kernel through A's ipsecd. IPv4 outer with
HMAC-SHA1-96, IPv6 outer with HMAC-SHA-256-128 (AH padded from 28 to 32
bytes); on IPv6 also with a hop-by-hop and a destination options header in
front of AH (their options with the change-en-route bit are zeroed for the
ICV), which A's raw socket strips and the forwarder rebuilds from control
messages. One flipped ICV byte is counted as a bad ICV and answered by nothing.
With an SA path MTU of 1280 (setkey -mtu), A's 1300-byte pings leave as
fragments of the signed packet: scapy's defragment()/defragment6() put them
back together and scapy's AH verifies the result (the Identification and the
ICV survive the cut; flags, offset and lengths are mutable).
Run as root with /usr/bin/python3; needs ipsecd built (IPSEC_BUILD_DIR).
"""

import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))

from scapy.layers.inet import ICMP, IP, defragment  # noqa: E402
from scapy.layers.inet6 import (HBHOptUnknown, ICMPv6EchoReply, ICMPv6EchoRequest, IPv6,  # noqa: E402
                                IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, PadN, RouterAlert,
                                defragment6)
from scapy.layers.ipsec import AH, SecurityAssociation  # noqa: E402
from scapy.layers.l2 import Ether  # noqa: E402
from scapy.packet import Raw  # noqa: E402

import espeer  # noqa: E402
from espeer import Capture  # noqa: E402
from harness import HMAC_KEY_AB, HMAC_KEY_BA, INNER, INNER_NETS, OUTER, Testbed, ping, wait_for  # noqa: E402

SPI_AB = 0x5201
SPI_BA = 0x5202
AH_BPF = "ip proto 51 or ip6 proto 51 or (ip6 and ip6[6] == 0)"

# setkey name, scapy name, key length
ALGS = {"sha1": ("hmac-sha1", "HMAC-SHA1-96", 20), "sha256": ("hmac-sha256", "SHA2-256-128", 32)}

# Sends whole IP packets (hex) on a header-included raw socket: the AH ICV
# covers the header, so the kernel must not build it.
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


def key(alg, direction):
    k = HMAC_KEY_AB if direction == "ab" else HMAC_KEY_BA
    return k[:ALGS[alg][2]]


def setkey_text(alg, outer):
    a, b = OUTER[outer]
    name = ALGS[alg][0]
    out = ["flush;", "spdflush;",
           f"add {a} {b} ah {SPI_AB:#x} -m tunnel -r 64 -A {name} 0x{key(alg, 'ab').hex()};",
           f"add {b} {a} ah {SPI_BA:#x} -m tunnel -r 64 -A {name} 0x{key(alg, 'ba').hex()};"]
    for fam in (4, 6):
        na, nb = INNER_NETS[fam]
        out.append(f"spdadd {na} {nb} any -P out ipsec ah/tunnel/{a}-{b}/require;")
        out.append(f"spdadd {nb} {na} any -P in ipsec ah/tunnel/{b}-{a}/require;")
    return "\n".join(out) + "\n"


def scapy_sa(alg, outer, direction, ext=()):
    a, b = OUTER[outer]
    src, dst = (a, b) if direction == "ab" else (b, a)
    header = IP(src=src, dst=dst) if outer == 4 else IPv6(src=src, dst=dst)
    for e in ext:
        header = header / e
    return SecurityAssociation(AH, spi=SPI_AB if direction == "ab" else SPI_BA, auth_algo=ALGS[alg][1],
                               auth_key=key(alg, direction), tunnel_header=header)


def reparse(pkt):
    """The captured packet's outer network layer, parsed afresh. (AH leaves
    the inner packet in clear, so `IP in pkt` may find the inner header.)"""
    net = pkt.payload if isinstance(pkt, Ether) else pkt
    return IP(bytes(net)) if net.version == 4 else IPv6(bytes(net))


def open_tunnel(sa, pkt):
    """The inner packet of a tunnel-mode AH packet (scapy checks the ICV).
    scapy leaves an IPv4 inner packet (next header 4) as raw bytes."""
    inner = sa.decrypt(pkt)
    if not isinstance(inner, (IP, IPv6)):
        raw = bytes(inner)
        inner = IP(raw) if raw[0] >> 4 == 4 else IPv6(raw)
    return inner


def outer_of(pkt):
    net = reparse(pkt)
    return net.version, net.src, net.dst


class AhTunnelPeer:
    ALG = None
    OUTER = None

    @classmethod
    def setUpClass(cls):
        cls.tb = Testbed.for_class(cls)
        cls.tb.start(cls.tb.a, setkey_text(cls.ALG, cls.OUTER))
        cls.sa_ba = scapy_sa(cls.ALG, cls.OUTER, "ba")  # one sequence counter for the class
        cls.ident = 0x5252

    def pcap(self, name):
        return os.path.join(self.tb.b.workdir, f"{name}.pcap")

    def counters(self):
        return self.tb.a.stats()["ipsec-forwarder"]["counters"]

    def send(self, packets):
        self.tb.b.exec(["/usr/bin/python3", "-c", SENDER, str(self.OUTER), OUTER[self.OUTER][0]] +
                       [bytes(p).hex() for p in packets], timeout=20)

    def ours_to_scapy(self, fam):
        a, b = OUTER[self.OUTER]
        with Capture(self.tb.b, self.pcap(f"out{fam}"), AH_BPF) as cap:
            ping(self.tb.a, INNER[fam][1], count=3, interval="0.2", timeout=15, extra=("-w", "1"))
            pkts = cap.wait_for(lambda p: len([q for q in p if outer_of(q)[1] == a]) >= 3, timeout=5)
        pkts = [reparse(p) for p in pkts if outer_of(p)[1] == a]
        self.assertGreaterEqual(len(pkts), 3, "fewer AH packets than pings reached B")
        sa = scapy_sa(self.ALG, self.OUTER, "ab")
        for p in pkts:
            self.assertEqual(outer_of(p), (self.OUTER, a, b))
            self.assertEqual(p[AH].spi, SPI_AB)
            ah_len = len(bytes(p[AH])) - len(bytes(p[AH].payload))
            self.assertEqual(ah_len, (p[AH].payloadlen + 2) * 4)
            self.assertEqual(ah_len % (4 if self.OUTER == 4 else 8), 0)
            inner = open_tunnel(sa, p)  # IPSecIntegrityError here is a bad ICV
            self.assertEqual((inner.src, inner.dst), INNER[fam])
            if fam == 4:
                self.assertEqual(inner[ICMP].type, 8)
            else:
                self.assertIn(ICMPv6EchoRequest, inner)
        # scapy really checks the ICV: another outer source address fails.
        broken = pkts[0].copy()
        broken.src = INNER[4][0] if self.OUTER == 4 else "2001:db8:1::99"
        with self.assertRaises(Exception):
            scapy_sa(self.ALG, self.OUTER, "ab").decrypt(reparse(broken))

    def echo_requests(self, fam, seqs, ext=()):
        payload = Raw(b"scapy-ah-tunnel-" * 4)
        sa = scapy_sa(self.ALG, self.OUTER, "ba", ext) if ext else self.sa_ba
        if ext:
            sa.seq_num = self.sa_ba.seq_num  # one replay window on A's side
        out = []
        for n in seqs:
            src, dst = INNER[fam][1], INNER[fam][0]
            if fam == 4:
                pkt = IP(bytes(IP(src=src, dst=dst) / ICMP(type=8, id=self.ident, seq=n) / payload))
            else:
                pkt = IPv6(bytes(IPv6(src=src, dst=dst) / ICMPv6EchoRequest(id=self.ident, seq=n) / payload))
            out.append(sa.encrypt(pkt))
        if ext:
            self.sa_ba.seq_num = sa.seq_num
        return out

    def replies(self, fam, pkts):
        a = OUTER[self.OUTER][0]
        sa = scapy_sa(self.ALG, self.OUTER, "ab")
        got = set()
        for p in pkts:
            if outer_of(p)[1] != a:
                continue
            try:
                inner = open_tunnel(sa, reparse(p))
            except Exception:
                continue
            seq = espeer.echo_reply_seq(inner, fam, self.ident)
            if seq is not None:
                got.add(seq)
        return got

    def scapy_to_ours(self, fam, seqs, ext=()):
        sent = self.echo_requests(fam, seqs, ext)
        for e in ext:
            self.assertTrue(sent[0].haslayer(type(e)), sent[0].summary())
        before = self.counters()
        with Capture(self.tb.b, self.pcap(f"in{fam}-{seqs[0]}"), AH_BPF) as cap:
            self.send(sent)
            pkts = cap.wait_for(lambda p: self.replies(fam, p) >= set(seqs), timeout=5)
        d = espeer.delta(before, self.counters())
        self.assertEqual(self.replies(fam, pkts), set(seqs), f"not every echo request signed by scapy was answered: {d}")
        self.assertEqual(d.get("ah_in_packets"), len(seqs), d)
        self.assertEqual({k: v for k, v in d.items() if "drop" in k and k != "out_drop_no_policy"}, {}, d)

    def test_ipv4_inner_from_us_verifies_in_scapy(self):
        self.ours_to_scapy(4)

    def test_ipv6_inner_from_us_verifies_in_scapy(self):
        self.ours_to_scapy(6)

    def test_ipv4_inner_signed_by_scapy_is_answered(self):
        self.scapy_to_ours(4, (1, 2, 3))

    def test_ipv6_inner_signed_by_scapy_is_answered(self):
        self.scapy_to_ours(6, (11, 12, 13))

    def test_a_flipped_icv_byte_is_counted_and_not_answered(self):
        pkt = self.echo_requests(4, (21,))[0]
        raw = bytearray(bytes(pkt))
        ah_at = len(raw) - len(bytes(pkt[AH]))
        raw[ah_at + 12] ^= 0x01  # the first ICV byte
        before = self.counters()
        with Capture(self.tb.b, self.pcap("badicv"), AH_BPF) as cap:
            self.send([raw])
            # Counted as dropped: no reply can follow.
            wait_for(lambda: espeer.delta(before, self.counters()).get("ah_in_drop_bad_icv"), 5,
                     lambda: f"the flipped ICV counted: {espeer.delta(before, self.counters())}")
        self.assertEqual(self.replies(4, cap.packets()), set())
        d = espeer.delta(before, self.counters())
        self.assertEqual(d.get("ah_in_drop_bad_icv"), 1, d)
        self.assertIsNone(d.get("ah_in_packets"), d)
        # The next good packet still passes: a bad ICV moves no replay window.
        self.scapy_to_ours(4, (22,))


class AhTunnelIpv4Sha1(AhTunnelPeer, unittest.TestCase):
    ALG = "sha1"
    OUTER = 4


class AhTunnelIpv6Sha256(AhTunnelPeer, unittest.TestCase):
    ALG = "sha256"
    OUTER = 6

    def test_extension_headers_before_ah_are_rebuilt_and_verified(self):
        # Router alert (immutable) in hop-by-hop; in destination options an
        # option whose type has the change-en-route bit (0x3e: skip, mutable)
        # with data that scapy zeroes for the ICV, and padding.
        ext = (IPv6ExtHdrHopByHop(options=[RouterAlert(value=0), PadN(optdata=b"")]),
               IPv6ExtHdrDestOpt(options=[HBHOptUnknown(otype=0x3e, optdata=b"\x01\x02\x03\x04")]))
        self.scapy_to_ours(6, (31, 32), ext)
        self.scapy_to_ours(4, (33,), ext)


class AhTunnelFragments(unittest.TestCase):
    """A's AH tunnel packets beyond the SA's MTU, cut by A after signing,
    reassembled by scapy (not by the kernel) and verified by scapy's AH."""

    def check(self, alg, outer):
        with Testbed() as tb:
            tb.start(tb.a, setkey_text(alg, outer).replace("-m tunnel -r 64", "-m tunnel -r 64 -mtu 1280"))
            a, b = OUTER[outer]
            with Capture(tb.b, os.path.join(tb.b.workdir, f"frag{outer}.pcap"),
                         "ip proto 51" if outer == 4 else "ip6") as cap:
                # B runs no IPsec: nothing answers, the requests are what we look at.
                ping(tb.a, INNER[4][1], count=2, timeout=15, extra=("-M", "dont", "-s", "1300", "-w", "2"))
                pkts = cap.wait_for(lambda p: len(p) >= 4, timeout=5)
            nets = [reparse(p) for p in pkts if outer_of(p)[1] == a]
            if outer == 4:
                frags = [p for p in nets if p.flags.MF or p.frag > 0]
                self.assertGreaterEqual(len(frags), 4, [p.summary() for p in nets])
                self.assertTrue(all(len(p) <= 1280 and not p.flags.DF for p in frags))
                whole = [IP(bytes(p)) for p in defragment(frags)]
            else:
                frags = [p for p in nets if IPv6ExtHdrFragment in p]
                self.assertGreaterEqual(len(frags), 4, [p.summary() for p in nets])
                self.assertTrue(all(len(p) <= 1280 and p[IPv6ExtHdrFragment].nh == 51 for p in frags))
                ids = sorted({p[IPv6ExtHdrFragment].id for p in frags})
                whole = [IPv6(bytes(defragment6([p for p in frags if p[IPv6ExtHdrFragment].id == i]))) for i in ids]
            self.assertGreaterEqual(len(whole), 2)
            sa = scapy_sa(alg, outer, "ab")
            for p in whole:
                self.assertEqual(p[AH].spi, SPI_AB)
                self.assertGreater(len(p), 1280)
                inner = open_tunnel(sa, p)  # IPSecIntegrityError here: the reassembled packet does not verify
                self.assertEqual((inner.src, inner.dst), INNER[4])
                self.assertEqual(inner[ICMP].type, 8)
                self.assertEqual(len(inner), 1328)
            # scapy's check can fail: one payload byte changed after reassembly.
            broken = bytearray(bytes(whole[0]))
            broken[-1] ^= 0x01
            with self.assertRaises(Exception):
                open_tunnel(sa, IP(bytes(broken)) if outer == 4 else IPv6(bytes(broken)))
            c = tb.a.stats()["ipsec-forwarder"]["counters"]
            self.assertGreaterEqual(c["pmtu_out_fragmented"], 2, c)
            self.assertGreaterEqual(c["ah_out_packets"], 2, c)

    def test_ipv4_outer_fragments_reassembled_by_scapy_verify(self):
        self.check("sha1", 4)

    def test_ipv6_outer_fragments_reassembled_by_scapy_verify(self):
        self.check("sha256", 6)


def transport_setkey_text(alg):
    name = ALGS[alg][0]
    out = ["flush;", "spdflush;"]
    for fam in (4, 6):
        a, b = OUTER[fam]
        out.append(f"add {a} {b} ah {SPI_AB + fam:#x} -m transport -r 64 -A {name} 0x{key(alg, 'ab').hex()};")
        out.append(f"add {b} {a} ah {SPI_BA + fam:#x} -m transport -r 64 -A {name} 0x{key(alg, 'ba').hex()};")
        out.append(f"spdadd {a} {b} any -P out ipsec ah/transport//require;")
        out.append(f"spdadd {b} {a} any -P in ipsec ah/transport//require;")
    return "\n".join(out) + "\n"


class AhTransportSha256(unittest.TestCase):
    """Transport mode: AH between the hosts' own addresses, inserted into
    A's own packets (after the IP header) and removed from B's."""
    ALG = "sha256"

    @classmethod
    def setUpClass(cls):
        cls.tb = Testbed.for_class(cls)
        cls.tb.start(cls.tb.a, transport_setkey_text(cls.ALG), transport_peers=f"{OUTER[4][1]}, {OUTER[6][1]}",
                     local_addresses=f"{OUTER[4][0]}, {OUTER[6][0]}")
        cls.sas_ba = {fam: cls.sa(fam, "ba") for fam in (4, 6)}
        cls.ident = 0x5353

    @classmethod
    def sa(cls, fam, direction):
        return SecurityAssociation(AH, spi=(SPI_AB if direction == "ab" else SPI_BA) + fam,
                                   auth_algo=ALGS[cls.ALG][1], auth_key=key(cls.ALG, direction))

    def counters(self):
        return self.tb.a.stats()["ipsec-forwarder"]["counters"]

    def test_ours_verify_in_scapy_and_scapys_are_answered(self):
        for fam in (4, 6):
            a, b = OUTER[fam]
            with self.subTest(fam=fam):
                with Capture(self.tb.b, os.path.join(self.tb.b.workdir, f"t-out{fam}.pcap"), AH_BPF) as cap:
                    # B has no AH and answers with ICMP errors, which end a
                    # ping -c N early: one ping per echo request.
                    for _ in range(3):
                        ping(self.tb.a, b, count=1, timeout=15, extra=("-w", "2"))
                    pkts = cap.wait_for(lambda p: len([q for q in p if outer_of(q)[1] == a]) >= 3, timeout=5)
                pkts = [reparse(p) for p in pkts if outer_of(p)[1] == a]
                self.assertGreaterEqual(len(pkts), 3, (self.counters(), [q.summary() for q in pkts]))
                for p in pkts:
                    self.assertEqual(p[AH].spi, SPI_AB + fam)
                    plain = self.sa(fam, "ab").decrypt(p)  # IPSecIntegrityError here is a bad ICV
                    plain = IP(bytes(plain)) if fam == 4 else IPv6(bytes(plain))
                    self.assertEqual((plain.src, plain.dst), (a, b))
                    self.assertTrue(plain.haslayer(ICMP) if fam == 4 else plain.haslayer(ICMPv6EchoRequest))

                seqs = (41, 42, 43)
                sent = []
                for n in seqs:
                    if fam == 4:
                        pkt = IP(bytes(IP(src=b, dst=a) / ICMP(type=8, id=self.ident, seq=n) / Raw(b"t" * 48)))
                    else:
                        pkt = IPv6(bytes(IPv6(src=b, dst=a) / ICMPv6EchoRequest(id=self.ident, seq=n) /
                                         Raw(b"t" * 48)))
                    sent.append(self.sas_ba[fam].encrypt(pkt))

                def replies(got):
                    seen = set()
                    for p in got:
                        if outer_of(p)[1] != a:
                            continue
                        try:
                            plain = self.sa(fam, "ab").decrypt(reparse(p))
                            plain = IP(bytes(plain)) if fam == 4 else IPv6(bytes(plain))
                        except Exception:
                            continue
                        if fam == 4 and ICMP in plain and plain[ICMP].type == 0 and plain[ICMP].id == self.ident:
                            seen.add(plain[ICMP].seq)
                        if fam == 6 and ICMPv6EchoReply in plain and plain[ICMPv6EchoReply].id == self.ident:
                            seen.add(plain[ICMPv6EchoReply].seq)
                    return seen

                before = self.counters()
                with Capture(self.tb.b, os.path.join(self.tb.b.workdir, f"t-in{fam}.pcap"), AH_BPF) as cap:
                    self.tb.b.exec(["/usr/bin/python3", "-c", SENDER, str(fam), a] + [bytes(p).hex() for p in sent],
                                   timeout=20)
                    got = cap.wait_for(lambda p: replies(p) >= set(seqs), timeout=5)
                d = espeer.delta(before, self.counters())
                self.assertEqual(replies(got), set(seqs), d)
                self.assertEqual(d.get("ah_in_packets"), len(seqs), d)
                self.assertEqual({k: v for k, v in d.items() if "drop" in k and k != "out_drop_no_policy"}, {}, d)


if __name__ == "__main__":
    unittest.main(verbosity=2)
