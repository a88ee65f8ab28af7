"""IKE daemons wired in (issue 14 §5, docs/ike.md), checked on the installed tree.

- The systemd drop-ins shipped for strongSwan and racoon name the preload
  library where it is installed and ipsecd's PF_KEY socket; a PF_KEY client
  run with exactly the drop-in's environment (pfkey_client --probe, which
  calls socket(PF_KEY, ...) like charon) reaches the installed ipsecd.
- The PF_KEY exchanges of a charon session (../shared/pfkey-corpus/charon)
  get Linux's replies from the installed ipsecd.
- docs/ike.md's strongswan.conf loads kernel-pfkey before kernel-netlink and
  sets install_routes = no, as the issue asks.
Runs that need the installed ipsecd to find its children are skipped with that
reason until it does (pending in services/ipsecd).
"""

import os
import re
import subprocess
import unittest

import charon_replay
import harness
from install_tree import PENDING_LIBEXEC, ROOT, InstallTree, finds_children_in_libexec

DAEMONS = ("strongswan", "racoon")


def drop_in_environment(path):
    env = {}
    with open(path) as f:
        for line in f:
            m = re.match(r"^Environment=([A-Z_]+)=(.*)$", line.strip())
            if m:
                env[m.group(1)] = m.group(2)
    return env


class DropIns(unittest.TestCase):
    def test_drop_ins_name_the_installed_library_and_order_after_ipsecd(self):
        with InstallTree() as t:
            for d in DAEMONS:
                path = os.path.join(t.docdir, "examples", f"{d}.service.d-ipsecd.conf")
                env = drop_in_environment(path)
                self.assertEqual(set(env), {"LD_PRELOAD", "IPSEC_PFKEY_SOCKET"}, d)
                self.assertTrue(os.path.exists(t.path(env["LD_PRELOAD"])), env["LD_PRELOAD"])
                self.assertEqual(env["IPSEC_PFKEY_SOCKET"], "/run/ipsecd/pfkey")
                with open(path) as f:
                    text = f.read()
                self.assertIn("After=ipsecd.service", text)
                self.assertIn("Requires=ipsecd.service", text)

    def test_a_client_with_the_drop_ins_environment_reaches_the_installed_ipsecd(self):
        with InstallTree() as t, harness.Testbed() as tb:
            original = harness.binary
            harness.binary = lambda name: os.path.join(t.sbin, name)
            if not finds_children_in_libexec():
                harness.binary = original
                self.skipTest(PENDING_LIBEXEC)
            try:
                tb.start(tb.a)
            finally:
                harness.binary = original
            env = drop_in_environment(os.path.join(t.docdir, "examples", "strongswan.service.d-ipsecd.conf"))
            preload = t.path(env["LD_PRELOAD"])
            sock = env["IPSEC_PFKEY_SOCKET"].replace("/run/ipsecd", tb.a.runtime)
            r = tb.a.exec(["env", f"LD_PRELOAD={preload}", f"IPSEC_PFKEY_SOCKET={sock}",
                           os.path.join(harness.BUILD, "bin", "pfkey_client"), "--probe"], check=False)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertIn("ok", r.stdout)
            # Without the preload the same client finds no PF_KEY on this kernel.
            r = tb.a.exec([os.path.join(harness.BUILD, "bin", "pfkey_client"), "--probe"], check=False)
            self.assertNotEqual(r.returncode, 0)


class Charon(unittest.TestCase):
    def test_charons_pfkey_exchanges_get_linuxs_replies_from_the_installed_ipsecd(self):
        with InstallTree() as t:
            original = harness.binary
            harness.binary = lambda name: os.path.join(t.sbin, name)
            try:
                charon_replay.run_charon_replay(self)
            finally:
                harness.binary = original


class Guide(unittest.TestCase):
    def test_strongswan_conf_loads_kernel_pfkey_first_without_routes(self):
        with open(os.path.join(ROOT, "docs", "ike.md")) as f:
            text = f.read()
        load = re.search(r"^\s*load = (.*)$", text, re.M).group(1).split()
        self.assertLess(load.index("kernel-pfkey"), load.index("kernel-netlink"))
        self.assertRegex(text, r"(?m)^\s*install_routes = no$")
        for d in DAEMONS:
            self.assertIn(f"{d}.service.d-ipsecd.conf", text)


if __name__ == "__main__":
    unittest.main()
