"""kill -9 of the forwarder, then of the crypto broker, during a ping flood:
ipsecd restarts the data plane, traffic resumes, and a capture of the wire shows
no repeated (SPI, sequence number) and no repeated (SPI, IV)."""

import os
import signal
import subprocess
import unittest

from harness import INNER, Capture, Testbed, ping, wait_for

from scapy.all import IP, rdpcap  # noqa: E402  (Debian's python3-scapy)
from scapy.layers.ipsec import ESP  # noqa: E402


class ResilienceTest(unittest.TestCase):
    def test_data_plane_restarts_without_nonce_reuse(self):
        with Testbed() as tb:
            tb.start_pair("aes-gcm", 4)
            pcap = os.path.join(tb.tmp, "wire.pcap")

            def flows(packets=100):
                """Waits until `packets` more ESP packets left A (so the capture spans them)."""
                start = tb.a.counter("esp_out_packets")
                wait_for(lambda: tb.a.counter("esp_out_packets") - start >= packets, 15,
                         lambda: f"{packets} ESP packets from A:\n{tb.log_text(tb.a)}")

            with Capture(tb.b, pcap, "ip proto 50", "veth-ipsec-b"):
                flood = tb.a.popen(["ping", "-n", "-q", "-i", "0.005", "-w", "14", INNER[4][1]],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                flows()
                for victim in ("ipsec-forwarder", "ipsec-crypto"):
                    old = tb.a.pid_of(victim)
                    os.kill(old, signal.SIGKILL)
                    wait_for(lambda: tb.a.pid_of(victim) != old, 15,
                             lambda: f"{victim} to be restarted:\n{tb.log_text(tb.a)}")
                    # Traffic resumes through the new data plane.
                    wait_for(lambda: ping(tb.a, INNER[4][1], count=1).returncode == 0, 15,
                             lambda: f"traffic after restarting {victim}:\n{tb.log_text(tb.a)}")
                    flows()
                out, _ = flood.communicate(timeout=30)
            self.assertEqual(ping(tb.a, INNER[4][1], count=3).returncode, 0)
            self.assertIn("restarting the data plane", tb.log_text(tb.a))

            seen_seq, seen_iv = set(), set()
            esp_packets = 0
            for pkt in rdpcap(pcap):
                if not pkt.haslayer(ESP):
                    continue
                esp = pkt[ESP]
                raw = bytes(esp)
                spi, seq, iv = esp.spi, esp.seq, raw[8:16]
                key = (pkt[IP].src, spi, seq)
                self.assertNotIn(key, seen_seq, f"repeated (SPI, seq) {spi:#x} {seq}")
                seen_seq.add(key)
                self.assertNotIn((spi, iv), seen_iv, f"repeated (SPI, IV) {spi:#x} {iv.hex()}")
                seen_iv.add((spi, iv))
                esp_packets += 1
            self.assertGreater(esp_packets, 500, f"capture too small; flood said: {out}")


if __name__ == "__main__":
    unittest.main()
