"""cmake --install puts every piece where Debian expects it (issue 14 §1), and the
installed files, without the build tree, run the demo's tunnel.

Layout: ipsecd, setkey and ipsecctl in sbin; the four children in
libexec/ipsecd; the preload library in the lib directory's ipsecd/; the example
/etc/ipsecd/ipsecd.conf, the manual pages, the systemd units, the
sysusers.d file, docs/ike.md and its drop-ins; nothing else (no test
program). Every installed file is writable by its owner only.

Running: the installed ipsecd is started with the installed example
configuration, and two installed instances carry ping both ways. ipsecd must
find its children in libexec/ipsecd for that; until it does (a change pending
in services/ipsecd), those tests are skipped with that reason, judged from what
the installed ipsecd did, not assumed.
"""

import os
import signal
import stat
import subprocess
import unittest

import harness
from install_tree import CHILDREN, PENDING_LIBEXEC, InstallTree, finds_children_in_libexec

MAN_PAGES = ("man8/ipsecd.8", "man5/ipsecd.conf.5", "man8/setkey.8", "man8/ipsecctl.8", "man8/ipsec-pfkey-preload.8")


def expected_files(t):
    def target(*parts):
        return "/" + os.path.relpath(os.path.join(*parts), t.root)
    files = {target(t.sbin, p) for p in ("ipsecd", "setkey", "ipsecctl")}
    files |= {target(t.libexec, c) for c in CHILDREN}
    files.add(target(t.libdir, "ipsecd", "libipsec-pfkey-preload.so"))
    files.add(target(t.etc, "ipsecd.conf"))
    files |= {target(t.mandir, m) for m in MAN_PAGES}
    files |= {target(t.unitdir, u) for u in ("ipsecd.service", "ipsecd@.service")}
    files.add(target(t.sysusersdir, "ipsecd.conf"))
    files.add(target(t.docdir, "ike.md"))
    files |= {target(t.docdir, "examples", f"{d}.service.d-ipsecd.conf") for d in ("strongswan", "racoon")}
    return files


class Layout(unittest.TestCase):
    def test_every_piece_where_debian_expects_it(self):
        with InstallTree() as t:
            self.assertTrue(t.files() >= expected_files(t), sorted(expected_files(t) - t.files()))
            self.assertEqual(t.files() - expected_files(t), set(), "installed but not expected")
            self.assertFalse(os.path.exists(os.path.join(os.path.dirname(t.sbin), "bin")), "nothing belongs in bin")

    def test_files_are_writable_by_their_owner_only(self):
        with InstallTree() as t:
            programs = [os.path.join(t.sbin, p) for p in ("ipsecd", "setkey", "ipsecctl")]
            programs += [os.path.join(t.libexec, c) for c in CHILDREN]
            for p in programs:
                st = os.stat(p)
                self.assertEqual(stat.S_IMODE(st.st_mode), 0o755, p)
                self.assertEqual(st.st_uid, 0, p)
            # Debian's shared libraries are not executable (CMake's CMAKE_INSTALL_SO_NO_EXE there).
            for f in (os.path.join(t.libdir, "ipsecd", "libipsec-pfkey-preload.so"), os.path.join(t.etc, "ipsecd.conf"),
                      os.path.join(t.unitdir, "ipsecd.service")):
                self.assertEqual(stat.S_IMODE(os.stat(f).st_mode), 0o644, f)


def use_installed(t):
    """Points the harness at the installed programs instead of the build tree's."""
    original = harness.binary

    def installed(name):
        return os.path.join(t.sbin, name)

    harness.binary = installed
    return lambda: setattr(harness, "binary", original)


class InstalledFilesRun(unittest.TestCase):
    def test_the_example_configuration_starts_the_service(self):
        with InstallTree() as t, harness.Testbed() as tb:
            if not finds_children_in_libexec():
                self.skipTest(PENDING_LIBEXEC)
            restore = use_installed(t)
            try:
                h = tb.a
                h.runtime = os.path.join(h.workdir, "run")
                h.log = open(os.path.join(h.workdir, "ipsecd.log"), "w")
                h.proc = subprocess.Popen(["ip", "netns", "exec", h.ns, harness.binary("ipsecd"), "--config",
                                           os.path.join(t.etc, "ipsecd.conf"), "--runtime-dir", h.runtime],
                                          stdout=h.log, stderr=subprocess.STDOUT)
                h.remember(h.proc.pid, f"installed ipsecd in {h.ns}")
                pidfile = os.path.join(h.runtime, "ipsecd.pid")
                harness.wait_for(lambda: os.path.exists(pidfile) or h.proc.poll() is not None, 20,
                                 "the installed ipsecd to become ready")
                self.assertIsNone(h.proc.poll(), f"the installed ipsecd exited:\n{tb.log_text(h)}")
                h.remember_children()
                self.assertIn("ipsec0", h.exec(["ip", "link", "show"]).stdout)
                self.assertEqual(h.ipsecctl("sysctl", "net.inet.esp.enable").strip(), "net.inet.esp.enable: 1")
                self.assertEqual(tb.stop(h), 0, tb.log_text(h))
            finally:
                restore()

    def test_two_installed_ends_carry_ping_both_ways(self):
        with InstallTree() as t, harness.Testbed() as tb:
            if not finds_children_in_libexec():
                self.skipTest(PENDING_LIBEXEC)
            restore = use_installed(t)
            try:
                tb.start_pair()
                for src, dst in ((tb.a, harness.INNER[4][1]), (tb.b, harness.INNER[4][0]),
                                 (tb.a, harness.INNER[6][1])):
                    r = harness.ping(src, dst)
                    self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
                self.assertGreaterEqual(tb.a.counter("esp_out_packets"), 6)
            finally:
                restore()


if __name__ == "__main__":
    unittest.main()
