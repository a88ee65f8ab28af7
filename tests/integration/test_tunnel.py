"""Two ipsecd instances carry ping and TCP both ways through an ESP tunnel:
both algorithms, IPv4 and IPv6 outer, IPv4 and IPv6 inner; after shutdown no
process, TUN device, socket file or shared memory is left (the TUN device
checked here, the rest by the testbed's leak check)."""

import unittest

from harness import Testbed, assert_no_drops, check_inner_traffic


class TunnelTest(unittest.TestCase):
    def check_pair(self, alg, outer):
        with Testbed() as tb:
            tb.start_pair(alg, outer)
            check_inner_traffic(self, tb)
            sa = tb.a.stats()["ipsec-forwarder"]
            c = sa["counters"]
            self.assertGreater(c["esp_out_packets"], 100)
            self.assertGreater(c["esp_in_packets"], 100)
            assert_no_drops(self, "a", c)
            # Shut down: the TUN device goes with ipsecd. Processes, ring memfds
            # and the runtime directory are the testbed's leak check, at close.
            self.assertEqual(tb.stop(tb.a), 0, tb.log_text(tb.a))
            links = tb.a.exec(["ip", "-o", "link"]).stdout
            self.assertNotIn("ipsec0", links)

    def test_gcm_over_ipv4(self):
        self.check_pair("aes-gcm", 4)

    def test_gcm_over_ipv6(self):
        self.check_pair("aes-gcm", 6)

    def test_cbc_sha256_over_ipv4(self):
        self.check_pair("aes-cbc", 4)

    def test_cbc_sha256_over_ipv6(self):
        self.check_pair("aes-cbc", 6)


if __name__ == "__main__":
    unittest.main()
