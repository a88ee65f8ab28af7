"""Two ipsecd instances carry ping and TCP both ways through ESP-in-UDP SAs
(RFC 3948), IPv4 and IPv6 outer, IPv4 and IPv6 inner. The SAs are added over
PF_KEY with NAT_T_TYPE/SPORT/DPORT (tests/interop/natt_pfkey.py). A listens
on natt_port 4500 and B on 4501, so each SA's ports are exercised as given,
not assumed; every ESP packet must travel in UDP (none on the raw socket)."""

import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "interop"))

import natt_pfkey  # noqa: E402
from harness import (GCM_KEY_AB, GCM_KEY_BA, INNER, OUTER, SPI_AB, SPI_BA, Testbed, ping,  # noqa: E402
                     spd_lines, tcp_transfer)

PORT_A, PORT_B = 4500, 4501


class NattTunnelTest(unittest.TestCase):
    def check_pair(self, outer):
        with Testbed() as tb:
            aout, bout = OUTER[outer]
            sas = [(SPI_AB, aout, bout, GCM_KEY_AB, PORT_A, PORT_B),
                   (SPI_BA, bout, aout, GCM_KEY_BA, PORT_B, PORT_A)]
            for h, port in ((tb.a, PORT_A), (tb.b, PORT_B)):
                tb.start(h, "flush;\nspdflush;\n" + spd_lines(h.side, outer), natt_port=port)
                natt_pfkey.install(h.runtime, sas)
            for fam in (4, 6):
                a_in, b_in = INNER[fam]
                r = ping(tb.a, b_in, count=3)
                self.assertEqual(r.returncode, 0, f"ping A→B inner v{fam}: {r.stdout}{r.stderr}\n{tb.log_text(tb.a)}")
                r = ping(tb.b, a_in, count=3)
                self.assertEqual(r.returncode, 0, f"ping B→A inner v{fam}: {r.stdout}{r.stderr}")
            tcp_transfer(tb.a, tb.b, INNER[4][1], nbytes=2 << 20)
            tcp_transfer(tb.b, tb.a, INNER[4][0], nbytes=2 << 20, port=5002)
            tcp_transfer(tb.a, tb.b, INNER[6][1], nbytes=1 << 20, port=5003)
            for h in tb.hosts():
                c = h.stats()["ipsec-forwarder"]["counters"]
                self.assertGreater(c["natt_out_esp_packets"], 100)
                self.assertEqual(c["natt_out_esp_packets"], c["esp_out_packets"], "ESP left outside UDP")
                self.assertGreater(c["natt_in_esp_packets"], 100)
                self.assertGreaterEqual(c["natt_in_esp_packets"], c["esp_in_packets"])
                for k, v in c.items():
                    # The kernel's own IPv6 chatter on the TUN matches no policy.
                    if "drop" in k and k != "out_drop_no_policy":
                        self.assertEqual(v, 0, f"{h.side}: {k} = {v}")
                self.assertEqual(c["natt_in_new_mapping"], 0)
            self.assertEqual(tb.stop(tb.a), 0, tb.log_text(tb.a))

    def test_natt_over_ipv4(self):
        self.check_pair(4)

    def test_natt_over_ipv6(self):
        self.check_pair(6)


if __name__ == "__main__":
    unittest.main()
