"""Interop matrix with scapy's ESP (python3-scapy 2.5): every transform scapy has, tunnel mode.

Host A runs one real ipsecd per outer family with the whole matrix installed
at once (espeer.MATRIX: one SA pair, reqid and inner address of B per
algorithm, bound by unique:<reqid> policies), so the matrix costs two daemon
starts, not one per algorithm. Host B has no IPsec; the test plays B:
- ours → scapy: A sends UDP datagrams to every case's B address (IPv4 and
  IPv6 inner); each ESP packet captured on B's veth must open in scapy with
  its ICV checked, carry the datagram that was sent, and fail to open under a
  key with one bit changed (so the check cannot pass vacuously);
- scapy → ours: scapy seals ICMP echo requests from every case's B address;
  A must accept each (no drop counter moves) and answer, and the answers,
  sealed by A with that case's SA, must open in scapy.

AES-GCM with 8/12-byte ICVs: scapy 2.5's AES-GCM ignores crypt_icv_size (it
uses cryptography's AEAD API, which always emits a 16-byte tag), so those
cases use scapy's own CryptAlgo class over the older modes.GCM API, which
truncates and accepts short tags (espeer._register_scapy_gcm_oldapi); the
ESP framing and checks stay scapy's, and both directions are checked.
3DES + HMAC-MD5 is legacy: net.inet.ipsec.allow_legacy=1 is set first.
Run as root with /usr/bin/python3; needs ipsecd built (IPSEC_BUILD_DIR).
"""

import os
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))

from scapy.layers.inet import ICMP, IP, UDP  # noqa: E402
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6  # noqa: E402
from scapy.layers.ipsec import ESP, IPSecIntegrityError  # noqa: E402
from scapy.packet import Raw  # noqa: E402

import espeer  # noqa: E402
from espeer import SCAPY_MATRIX, Capture, matrix_inner, matrix_scapy_sa, matrix_spi, outer_of  # noqa: E402
from harness import OUTER, Testbed  # noqa: E402

PER_FAMILY = 2  # packets per case, inner family and direction
UDP_PORT = 9
ICMP_ID = 0x4300
ALIGN = {"AES-CBC": 16, "3DES": 8}  # block sizes above ESP's 4-byte alignment

UDP_SENDER = r"""
import socket, sys
for spec in sys.argv[1:]:
    dst, payload = spec.split('=', 1)
    fam = socket.AF_INET6 if ':' in dst else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.sendto(payload.encode(), (dst, %d))
""" % UDP_PORT


def udp_payload(index, fam, n):
    return f"matrix-{index}-{fam}-{n}"


def wrong_key_sa(case, index, direction):
    """The case's SA with one bit of the key that guards integrity flipped."""
    sa = matrix_scapy_sa(case, index, direction)
    if case.auth:
        sa.auth_key = bytes([sa.auth_key[0] ^ 1]) + sa.auth_key[1:]
    else:
        sa.crypt_key = bytes([sa.crypt_key[0] ^ 1]) + sa.crypt_key[1:]
    return sa


class ScapyMatrix:
    """One ipsecd in A carrying every scapy-checkable transform; B is scapy."""

    OUTER_FAMILY = None

    @classmethod
    def setUpClass(cls):
        cls.t0 = time.monotonic()
        cls.tb = Testbed.for_class(cls)
        cls.tb.start(cls.tb.a)
        espeer.load_matrix(cls.tb.a, SCAPY_MATRIX, cls.OUTER_FAMILY)
        cls.by_spi = {}
        for i, c in enumerate(SCAPY_MATRIX):
            for d in ("ab", "ba"):
                cls.by_spi[matrix_spi(i, d)] = (i, d)
        cls.sa_ab = [matrix_scapy_sa(c, i, "ab") for i, c in enumerate(SCAPY_MATRIX)]
        cls.ours = cls.traffic_from_us()
        cls.sent, cls.answered, cls.replies, cls.delta = cls.traffic_from_scapy()

    @classmethod
    def tearDownClass(cls):
        print(f"\n[scapy matrix, outer IPv{cls.OUTER_FAMILY}: {len(SCAPY_MATRIX)} transforms "
              f"in {time.monotonic() - cls.t0:.1f} s]", file=sys.stderr)

    @classmethod
    def capture_path(cls, name):
        return os.path.join(cls.tb.b.workdir, f"{name}.pcap")

    @classmethod
    def traffic_from_us(cls):
        """ESP packets A sealed for UDP datagrams to every case's B address, by case index."""
        a, b = cls.tb.a, cls.tb.b
        specs = []
        for i, _ in enumerate(SCAPY_MATRIX):
            for fam in (4, 6):
                for n in range(PER_FAMILY):
                    specs.append(f"{matrix_inner(i, fam)[1]}={udp_payload(i, fam, n)}")
        want = len(specs)
        with Capture(b, cls.capture_path("ours")) as cap:
            a.exec(["/usr/bin/python3", "-c", UDP_SENDER] + specs, timeout=20)
            pkts = cap.wait_for(lambda p: len(p) >= want, timeout=10)
        out = {}
        for p in pkts:
            spi = p[ESP].spi if ESP in p else None
            i, d = cls.by_spi.get(spi, (None, None))
            if d == "ab":
                out.setdefault(i, []).append(p)
        return out

    @classmethod
    def traffic_from_scapy(cls):
        """Echo requests sealed by scapy for every case; returns what was sent, the
        (case, family, seq) answered, A's packets by case and the counter change."""
        a, b = cls.tb.a, cls.tb.b
        aout, bout = OUTER[cls.OUTER_FAMILY]
        tunnel = (IP if cls.OUTER_FAMILY == 4 else IPv6)(src=bout, dst=aout)
        payload = Raw(b"scapy-matrix-" * 4)
        sent, wire = set(), []
        for i, c in enumerate(SCAPY_MATRIX):
            sa = matrix_scapy_sa(c, i, "ba")
            sa.tunnel_header = tunnel
            for fam in (4, 6):
                ours, theirs = matrix_inner(i, fam)
                for n in range(1, PER_FAMILY + 1):
                    if fam == 4:
                        inner = IP(src=theirs, dst=ours) / ICMP(type=8, id=ICMP_ID + i, seq=n) / payload
                    else:
                        inner = IPv6(src=theirs, dst=ours) / ICMPv6EchoRequest(id=ICMP_ID + i, seq=n) / payload
                    wire.append(bytes(sa.encrypt(inner)[ESP]))
                    sent.add((i, fam, n))

        def from_a(pkts):  # the capture also holds what the test sent
            return [p for p in pkts if outer_of(p)[1] == aout]

        def answered(pkts):
            got, by_case = set(), {}
            for p in from_a(pkts):
                i, d = cls.by_spi.get(p[ESP].spi if ESP in p else None, (None, None))
                if d != "ab":
                    continue
                by_case.setdefault(i, []).append(p)
                try:
                    _, inner = espeer.scapy_open(cls.sa_ab[i], p)
                except Exception:  # judged per case, once the capture is complete
                    continue
                if inner is None:
                    continue
                fam = inner.version
                if (inner.src, inner.dst) != matrix_inner(i, fam):
                    continue
                seq = espeer.echo_reply_seq(inner, fam, ICMP_ID + i)
                if seq is not None:
                    got.add((i, fam, seq))
            return got, by_case

        before = a.stats()["ipsec-forwarder"]["counters"]
        with Capture(b, cls.capture_path("theirs")) as cap:
            espeer.send_esp(b, aout, wire, gap=0.005)
            pkts = cap.wait_for(lambda p: answered(p)[0] >= sent, timeout=10)
        after = a.stats()["ipsec-forwarder"]["counters"]
        got, by_case = answered(pkts)
        return sent, got, by_case, espeer.delta(before, after)

    # -- judged per case -------------------------------------------------

    def check_from_us(self, i):
        case = SCAPY_MATRIX[i]
        pkts = self.ours.get(i, [])
        self.assertEqual(len(pkts), 2 * PER_FAMILY, f"{case.name}: ESP packets from A on SPI {matrix_spi(i, 'ab'):#x}")
        sa = matrix_scapy_sa(case, i, "ab")
        bad = wrong_key_sa(case, i, "ab")
        seqs, got = [], set()
        aout, bout = OUTER[self.OUTER_FAMILY]
        for p in pkts:
            self.assertEqual(outer_of(p), (self.OUTER_FAMILY, aout, bout))
            nh, inner = espeer.scapy_open(sa, p)  # IPSecIntegrityError here is a bad ICV
            fam = 4 if nh == espeer.NH_IPV4 else 6
            self.assertIn(nh, (espeer.NH_IPV4, espeer.NH_IPV6), case.name)
            self.assertEqual(inner.version, fam)
            self.assertEqual((inner.src, inner.dst), matrix_inner(i, fam))
            self.assertIn(UDP, inner)
            self.assertEqual(inner[UDP].dport, UDP_PORT)
            text = bytes(inner[UDP].payload).decode()
            self.assertRegex(text, rf"^matrix-{i}-{fam}-\d$")
            got.add(text)
            seqs.append(p[ESP].seq)
            self.check_padding_length(sa, p)
            with self.assertRaises(IPSecIntegrityError, msg=f"{case.name}: opens under a wrong key"):
                espeer.scapy_open(bad, p)
        self.assertEqual(got, {udp_payload(i, f, n) for f in (4, 6) for n in range(PER_FAMILY)})
        self.assertEqual(seqs, sorted(set(seqs)), "sequence numbers not strictly increasing")
        self.assertGreater(seqs[0], 0)

    def check_padding_length(self, sa, p):
        """RFC 4303 §2.4: the payload aligns to the cipher block (at least 4 bytes)
        with no more padding than that needs. scapy slices the padding bytes
        wrongly (INTEROP.md), so only its pad length and data length are used."""
        esp = p[ESP].copy()
        if sa.auth_algo.icv_size:  # as scapy's _decrypt_esp: the HMAC/CMAC ICV comes off first
            esp.data = esp.data[:-sa.auth_algo.icv_size]
        plain = sa.crypt_algo.decrypt(sa, esp, sa.crypt_key, sa.crypt_icv_size)
        align = ALIGN.get(sa.crypt_algo.name, 4)
        total = len(plain.data) + plain.padlen + 2
        self.assertEqual(total % align, 0, f"payload of {total} bytes not aligned to {align}")
        self.assertLess(plain.padlen, align, "more padding than alignment needs")

    def check_from_scapy(self, i):
        case = SCAPY_MATRIX[i]
        want = {s for s in self.sent if s[0] == i}
        self.assertEqual({s for s in self.answered if s[0] == i}, want,
                         f"{case.name}: not every echo request sealed by scapy was answered")
        sa = matrix_scapy_sa(case, i, "ab")
        for p in self.replies.get(i, []):
            espeer.scapy_open(sa, p)  # every packet A sent on the case's SA must open

    def test_every_sealed_request_was_accepted_without_a_drop(self):
        d = self.delta
        self.assertEqual(d.get("esp_in_packets"), len(self.sent), d)
        self.assertEqual({k: v for k, v in d.items() if k.startswith("esp_in_drop")}, {}, d)


def _add_case_tests(cls):
    for i, case in enumerate(SCAPY_MATRIX):
        slug = case.name.replace("-", "_").replace("+", "_")
        setattr(cls, f"test_{slug}_from_us_opens_in_scapy", lambda self, i=i: self.check_from_us(i))
        setattr(cls, f"test_{slug}_sealed_by_scapy_is_answered", lambda self, i=i: self.check_from_scapy(i))
    return cls


@_add_case_tests
class MatrixOverIpv4(ScapyMatrix, unittest.TestCase):
    OUTER_FAMILY = 4


@_add_case_tests
class MatrixOverIpv6(ScapyMatrix, unittest.TestCase):
    OUTER_FAMILY = 6


if __name__ == "__main__":
    unittest.main(verbosity=2)
