"""Two ipsecd instances carry ping and TCP both ways through an ESP tunnel:
both algorithms, IPv4 and IPv6 outer, IPv4 and IPv6 inner; after shutdown no
process, TUN device, socket file or shared memory is left (the TUN device
checked here, the rest by the testbed's leak check)."""

import unittest

from harness import INNER, Testbed, ping, tcp_transfer


class TunnelTest(unittest.TestCase):
    def check_pair(self, alg, outer):
        with Testbed() as tb:
            tb.start_pair(alg, outer)
            for fam in (4, 6):
                a_in, b_in = INNER[fam]
                r = ping(tb.a, b_in, count=3)
                self.assertEqual(r.returncode, 0, f"ping A→B inner v{fam}: {r.stdout}{r.stderr}\n{tb.log_text(tb.a)}")
                r = ping(tb.b, a_in, count=3)
                self.assertEqual(r.returncode, 0, f"ping B→A inner v{fam}: {r.stdout}{r.stderr}")
            tcp_transfer(tb.a, tb.b, INNER[4][1], nbytes=2 << 20)
            tcp_transfer(tb.b, tb.a, INNER[4][0], nbytes=2 << 20, port=5002)
            tcp_transfer(tb.a, tb.b, INNER[6][1], nbytes=1 << 20, port=5003)
            sa = tb.a.stats()["ipsec-forwarder"]
            c = sa["counters"]
            self.assertGreater(c["esp_out_packets"], 100)
            self.assertGreater(c["esp_in_packets"], 100)
            for k, v in c.items():
                # The kernel's own IPv6 link-local chatter (router solicitations,
                # MLD) on the TUN matches no policy: that drop is expected.
                if "drop" in k and k != "out_drop_no_policy":
                    self.assertEqual(v, 0, f"{k} = {v}")
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
