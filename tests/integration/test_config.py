"""A bad configuration or a bad setkey_file stops ipsecd with a clear message
and a non-zero exit, and leaves nothing behind: no TUN, no process, no socket."""

import os
import unittest

from harness import Testbed, binary, run


class ConfigTest(unittest.TestCase):
    def run_ipsecd(self, tb, text):
        h = tb.a
        path = os.path.join(h.workdir, "bad.conf")
        with open(path, "w") as f:
            f.write(text)
        r = h.exec([binary("ipsecd"), "--config", path], check=False, timeout=30)
        return path, r

    def assert_nothing_left(self, tb, runtime):
        self.assertNotIn("ipsec0", tb.a.exec(["ip", "-o", "link"]).stdout)
        self.assertEqual(run(["ip", "netns", "pids", tb.a.ns]).stdout.strip(), "")
        if os.path.isdir(runtime):
            self.assertEqual(os.listdir(runtime), [])

    def test_bad_value_names_file_and_line(self):
        with Testbed() as tb:
            runtime = os.path.join(tb.a.workdir, "run")
            path, r = self.run_ipsecd(tb, f"tun_name = ipsec0\nruntime_dir = {runtime}\ntun_mtu = 99999\n")
            self.assertEqual(r.returncode, 2)
            self.assertIn(f"{path}:3:", r.stderr)
            self.assertIn("tun_mtu", r.stderr)
            self.assert_nothing_left(tb, runtime)

    def test_unknown_key_is_refused(self):
        with Testbed() as tb:
            path, r = self.run_ipsecd(tb, "tun_nmae = ipsec0\n")
            self.assertEqual(r.returncode, 2)
            self.assertIn(f"{path}:1:", r.stderr)

    def test_bad_setkey_file_fails_closed_and_cleans_up(self):
        with Testbed() as tb:
            runtime = os.path.join(tb.a.workdir, "run")
            sk = os.path.join(tb.a.workdir, "bad.setkey")
            with open(sk, "w") as f:
                f.write("add 192.0.2.1 192.0.2.2 esp 0x1001 -E no-such-algorithm 0x00;\n")
            _, r = self.run_ipsecd(tb, f"runtime_dir = {runtime}\ntun_addresses = 198.51.100.1/32\n"
                                       f"setkey_file = {sk}\n")
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("setkey_file", r.stderr)
            self.assert_nothing_left(tb, runtime)

    def test_help_documents_every_option(self):
        r = run([binary("ipsecd"), "--help"])
        for opt in ("--config", "--runtime-dir", "--debug"):
            self.assertIn(opt, r.stdout)


if __name__ == "__main__":
    unittest.main()
