"""Bad ESP from the network: each kind is dropped, counted under its own counter, and the tunnel goes on.

Host A runs a real ipsecd (tunnel mode, harness keys; IPv4 outer, and IPv6 for GCM); host B is
the test, which seals exact bytes with python3-cryptography (espeer.seal:
AES-GCM with AAD = SPI || seq and nonce = salt || 8-byte IV, or AES-CBC with
HMAC-SHA-256-128) and sends them from B's raw ESP socket. After each bad
packet the forwarder's esp_in_* counters must have moved by exactly the
expected amounts, and a valid echo request sealed the same way must still be
answered (the reply is captured on B's veth and opened without our code).
Run as root with /usr/bin/python3; needs ipsecd built (IPSEC_BUILD_DIR).
"""

import os
import struct
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "interop"))

from scapy.layers.inet import ICMP, IP  # noqa: E402
from scapy.packet import Raw  # noqa: E402

import espeer  # noqa: E402
from espeer import Capture, esp_payload, outer_of, seal, send_esp  # noqa: E402
from harness import INNER, OUTER, SPI_BA, Testbed, wait_for  # noqa: E402

A_IN, B_IN = INNER[4]
REPLAY_WINDOW = 64  # sa_lines' -r 64
ICMP_ID = 0x5157


def watched(counters):
    """The counters a bad packet may move: every inbound ESP event, and sends."""
    return {k: v for k, v in counters.items()
            if k.startswith("esp_in_") and k != "esp_in_bytes" or k == "esp_out_packets"}


class BadInput:
    """One ipsecd in A per algorithm; B seals and sends with the test's own sequence counter."""

    ALG = None
    OUTER_FAMILY = 4

    @classmethod
    def setUpClass(cls):
        cls.tb = Testbed.for_class(cls)
        espeer.start_host(cls.tb, cls.tb.a, cls.ALG, cls.OUTER_FAMILY)
        cls.a_out = OUTER[cls.OUTER_FAMILY][0]
        cls.seq = 0
        cls.icmp_seq = 0

    @classmethod
    def next_seq(cls, skip=0):
        cls.seq += 1 + skip
        return cls.seq

    def echo_request(self, src=B_IN, dst=A_IN):
        type(self).icmp_seq += 1
        pkt = IP(src=src, dst=dst) / ICMP(type=8, id=ICMP_ID, seq=self.icmp_seq) / Raw(b"bad-input-test" * 3)
        return bytes(pkt), self.icmp_seq

    def counters(self):
        return watched(self.tb.a.stats()["ipsec-forwarder"]["counters"])

    def send(self, payloads, expected, gap=0.0):
        """Sends ESP payloads to A and requires the watched counters to move by exactly `expected`."""
        before = self.counters()
        send_esp(self.tb.b, self.a_out, payloads, gap=gap)

        def reached():
            now = self.counters()
            return all(now[k] - before[k] >= v for k, v in expected.items())
        wait_for(reached, 5, lambda: f"counter deltas {espeer.delta(before, self.counters())} to reach {expected}")
        # Not a wait but a window: a packet counted twice, or under a second
        # counter, would show up within it (no counter says "all read").
        time.sleep(0.2)
        d = espeer.delta(before, self.counters())
        self.assertEqual(d, expected, f"counter deltas {d}, expected {expected}")

    def replies(self, pkts):
        """ICMP sequence numbers of the echo replies A sent, opened with the harness key."""
        got = set()
        for p in pkts:
            if outer_of(p)[1] != self.a_out:
                continue
            try:
                _, _, plain = espeer.open_esp(self.ALG, "ab", esp_payload(p))
                inner, _, nh = espeer.split_trailer(self.ALG, plain)
            except espeer.OpenError:
                continue
            ip = IP(inner)
            if nh == espeer.NH_IPV4 and ICMP in ip and ip[ICMP].type == 0 and ip[ICMP].id == ICMP_ID:
                got.add(ip[ICMP].seq)
        return got

    def assert_tunnel_works(self):
        """A valid echo request through the tunnel is decrypted by A and answered through it."""
        inner, icmp_seq = self.echo_request()
        with Capture(self.tb.b, os.path.join(self.tb.b.workdir, f"ping{icmp_seq}.pcap")) as cap:
            self.send([seal(self.ALG, "ba", self.next_seq(), inner)], {"esp_in_packets": 1, "esp_out_packets": 1})
            cap.wait_for(lambda p: icmp_seq in self.replies(p), timeout=5, what="an echo reply through the tunnel")

    def valid(self, seq=None):
        return seal(self.ALG, "ba", self.next_seq() if seq is None else seq, self.echo_request()[0])

    # Each test: the bad input, its exact count, then traffic still flows.

    def test_truncated_esp_is_counted_as_truncated(self):
        iv, icv = espeer.IV_LEN[self.ALG], espeer.ICV_LEN[self.ALG]
        short = struct.pack("!II", SPI_BA, self.next_seq()) + bytes(iv + icv - 1)
        self.send([short], {"esp_in_drop_truncated": 1})
        self.send([struct.pack("!I", SPI_BA)], {"esp_in_drop_truncated": 1})  # not even a header
        self.assert_tunnel_works()

    def test_unknown_spi_is_counted_as_no_sa(self):
        pkt = seal(self.ALG, "ba", self.next_seq(), self.echo_request()[0], spi_value=0xdead0001)
        self.send([pkt], {"esp_in_drop_no_sa": 1})
        self.assert_tunnel_works()

    def test_flipped_icv_bit_is_counted_as_bad_icv(self):
        pkt = bytearray(self.valid())
        pkt[-1] ^= 0x01
        self.send([bytes(pkt)], {"esp_in_drop_bad_icv": 1})
        self.assert_tunnel_works()

    def test_flipped_ciphertext_bit_is_counted_as_bad_icv(self):
        pkt = bytearray(self.valid())
        pkt[8 + espeer.IV_LEN[self.ALG] + 3] ^= 0x80
        self.send([bytes(pkt)], {"esp_in_drop_bad_icv": 1})
        self.assert_tunnel_works()

    def test_bad_icv_does_not_move_the_replay_window(self):
        # RFC 4303 §3.4.3: only an authenticated packet updates the window, so a
        # forgery cannot burn a sequence number the real peer will use.
        seq = self.next_seq(skip=REPLAY_WINDOW * 2)
        forged = bytearray(self.valid(seq))
        forged[-1] ^= 0x01
        self.send([bytes(forged)], {"esp_in_drop_bad_icv": 1})
        self.send([self.valid(seq)], {"esp_in_packets": 1, "esp_out_packets": 1})

    def test_wrong_padding_under_a_valid_icv_is_counted_as_bad_padding(self):
        inner = self.echo_request()[0]
        n = -(len(inner) + 2) % espeer.BLOCK[self.ALG]
        n = n if n >= 2 else n + espeer.BLOCK[self.ALG]
        wrong = bytes(reversed(espeer.rfc_padding(n)))  # n, ..., 1 instead of 1, ..., n
        pkt = seal(self.ALG, "ba", self.next_seq(), inner, padding=wrong)
        self.send([pkt], {"esp_in_drop_bad_padding": 1})
        self.assert_tunnel_works()

    def test_replayed_packet_is_delivered_once_and_counted_as_replay(self):
        pkt = self.valid()
        self.send([pkt, pkt], {"esp_in_packets": 1, "esp_out_packets": 1, "esp_in_drop_replay": 1})
        self.send([pkt], {"esp_in_drop_replay": 1})  # also later, once the window has moved
        self.assert_tunnel_works()

    def test_packet_left_of_the_replay_window_is_counted_as_replay(self):
        high = self.next_seq(skip=REPLAY_WINDOW + 10)
        self.send([self.valid(high)], {"esp_in_packets": 1, "esp_out_packets": 1})
        self.send([self.valid(high - REPLAY_WINDOW - 5)], {"esp_in_drop_replay": 1})  # never seen, too old
        self.assert_tunnel_works()

    def test_transport_next_header_in_tunnel_mode_is_counted_as_bad_next_header(self):
        pkt = seal(self.ALG, "ba", self.next_seq(), self.echo_request()[0], nh=6)
        self.send([pkt], {"esp_in_drop_bad_next_header": 1})
        self.assert_tunnel_works()

    def test_inner_packet_outside_the_inbound_policy_is_counted_as_policy(self):
        inner = self.echo_request(src="198.51.100.77")[0]  # A's own net, not B's: no `in` policy
        self.send([seal(self.ALG, "ba", self.next_seq(), inner)], {"esp_in_drop_policy": 1})
        self.assert_tunnel_works()

    def test_dummy_packet_is_discarded_and_counted(self):
        pkt = seal(self.ALG, "ba", self.next_seq(), b"\x00" * 16, nh=59)  # RFC 4303 §2.6 TFC dummy
        self.send([pkt], {"esp_in_dummy": 1})
        self.assert_tunnel_works()


class BadInputGcm(BadInput, unittest.TestCase):
    ALG = "aes-gcm"


class BadInputCbcSha256(BadInput, unittest.TestCase):
    ALG = "aes-cbc"


class BadInputGcmOverIpv6(BadInput, unittest.TestCase):
    """IPv6 outer: the forwarder takes the destination from IPV6_PKTINFO, not a header."""
    ALG, OUTER_FAMILY = "aes-gcm", 6


if __name__ == "__main__":
    unittest.main(verbosity=2)
