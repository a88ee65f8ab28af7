"""Several crypto workers: each SA is pinned to one (services/forwarder/
worker_pin.cpp), so one SA's packets leave in sequence-number order, as a
single worker's in-order ring keeps them. With the burst's worker chosen round
robin instead, a later burst on an idle worker overtook an earlier one."""

import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "interop"))

import espeer  # noqa: E402
from harness import INNER, OUTER, Testbed, tcp_transfer  # noqa: E402
from scapy.all import ESP, IP  # noqa: E402


class PinnedWorkersTest(unittest.TestCase):
    def test_one_sas_packets_leave_in_sequence_order_with_four_workers(self):
        with Testbed() as tb:
            tb.start_pair("aes-gcm", 4, crypto_workers=4)
            pcap = os.path.join(tb.tmp, "wire.pcap")
            with espeer.Capture(tb.b, pcap) as cap:
                # Several bursts in flight at once: a bulk TCP transfer A → B.
                for port in (5001, 5002):
                    tcp_transfer(tb.a, tb.b, INNER[4][1], nbytes=4 << 20, port=port)
                cap.stop()
                pkts = cap.packets()
            seqs = {}
            for p in pkts:
                if p.haslayer(IP) and p[IP].src == OUTER[4][0] and p.haslayer(ESP):
                    seqs.setdefault(p[ESP].spi, []).append(p[ESP].seq)
            self.assertTrue(seqs, "no ESP from A captured")
            for spi, got in seqs.items():
                self.assertGreater(len(got), 1000, f"SPI {spi:#x}: too few packets captured to judge")
                behind = [(a, b) for a, b in zip(got, got[1:]) if b <= a]
                self.assertEqual(behind, [], f"SPI {spi:#x}: sequence numbers out of order on the wire")
            # The pinning ran: packets read for one worker went to their SA's.
            self.assertGreater(tb.a.counter("worker_pinned_copies"), 0)
            self.assertEqual(tb.a.counter("worker_pin_no_buffer"), 0)


if __name__ == "__main__":
    unittest.main()
