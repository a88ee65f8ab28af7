"""ipsecctl sysctl: FAST_IPSEC's names, read and set at run time.
net.inet.esp.enable=0 drops ESP and counts it; net.inet.ipsec.debug=1 turns on
per-packet tracing in the log; unknown names are refused."""

import json
import unittest

from harness import INNER, Testbed, binary, ping, wait_for


class SysctlTest(unittest.TestCase):
    def test_esp_enable_and_debug(self):
        with Testbed() as tb:
            tb.start_pair("aes-gcm", 4)
            all_ = json.loads(tb.a.ipsecctl("sysctl", "--json"))
            for name in ("net.inet.esp.enable", "net.inet.ah.enable", "net.inet.ipcomp.enable",
                         "net.inet.ipsec.debug"):
                self.assertIn(name, all_)
            self.assertEqual(all_["net.inet.esp.enable"], 1)

            self.assertIn("net.inet.esp.enable: 0", tb.a.sysctl("net.inet.esp.enable=0"))
            self.assertNotEqual(ping(tb.a, INNER[4][1], count=2, extra=("-W", "1")).returncode, 0)
            self.assertGreaterEqual(tb.a.counter("esp_out_drop_disabled"), 2)
            tb.a.sysctl("net.inet.esp.enable=1")
            self.assertEqual(ping(tb.a, INNER[4][1], count=2).returncode, 0)

            self.assertNotIn(" D out ", tb.log_text(tb.a))
            tb.a.sysctl("net.inet.ipsec.debug=1")
            self.assertEqual(ping(tb.a, INNER[4][1], count=1).returncode, 0)
            wait_for(lambda: " D out 198.51.100.1 -> 203.0.113.1" in tb.log_text(tb.a), 5,
                     lambda: f"the forwarder's trace of the ping in A's log:\n{tb.log_text(tb.a)}")

            r = tb.a.exec([binary("ipsecctl"), "--runtime-dir", tb.a.runtime, "sysctl", "net.inet.no.such=1"],
                          check=False)
            self.assertEqual(r.returncode, 1)
            self.assertIn("unknown sysctl", r.stderr)


if __name__ == "__main__":
    unittest.main()
