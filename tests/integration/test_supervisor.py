"""ipsecd as the README promises it: it fails closed and leaves nothing behind
(a SIGKILL of keydb, of policy, or restart_limit+1 deaths of the data plane
within restart_window_s: exit 1, no child alive, no socket or pid file, no
TUN, no ring memfd, no route or rule of route_table); it trusts its runtime
directory only when root owns it and nobody else can write it, and follows no
symlink planted in it; and each child's output reaches the log through a pipe
of its own, tagged by ipsecd."""

import os
import signal
import subprocess
import unittest

from harness import OUTER, Testbed, binary, sa_lines, spd_lines, wait_for

TABLE = 4977
RESTART_LIMIT = 2


def alive(pid):
    """True for a process that exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def ring_memfds(host, pids):
    """Ring memfds open in any process of the host's namespace or of pids
    (other ipsecd instances on this machine have rings of their own)."""
    found = []
    in_ns = subprocess.run(["ip", "netns", "pids", host.ns], capture_output=True, text=True).stdout.split()
    for pid in set(in_ns) | {str(p) for p in pids}:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("/memfd:ipsec-ring"):
                        found.append(f"{pid}/{fd}")
                except OSError:
                    pass
        except OSError:
            pass
    return found


class FailClosedTest(unittest.TestCase):
    def start(self, tb):
        setkey = "flush;\nspdflush;\n" + sa_lines("aes-gcm", 4) + spd_lines("a", 4)
        # A transport peer, so that ipsecd installs a rule and a route in TABLE.
        tb.start(tb.a, setkey, transport_peers=OUTER[4][1], local_addresses=OUTER[4][0], route_table=TABLE,
                 restart_limit=RESTART_LIMIT, restart_window_s=120)
        self.assertIn(f"lookup {TABLE}", tb.a.exec(["ip", "rule"]).stdout)
        pids = {p["name"]: p["pid"] for p in tb.a.audit()}
        # The probes of assert_nothing_left see what is there while it runs.
        self.assertNotEqual(ring_memfds(tb.a, pids.values()), [])
        self.assertIn("pfkey", os.listdir(tb.a.runtime))
        return pids

    def assert_nothing_left(self, tb, pids):
        h = tb.a
        for name, pid in pids.items():
            wait_for(lambda: not alive(pid), 5, f"{name} pid {pid} gone")
        self.assertEqual(sorted(os.listdir(h.runtime)), [], "files left in the runtime directory")
        self.assertNotEqual(h.exec(["ip", "link", "show", "ipsec0"], check=False).returncode, 0, "TUN left")
        self.assertEqual(ring_memfds(h, pids.values()), [], "ring memfds left open")
        for fam in ("-4", "-6"):
            self.assertNotIn(f"lookup {TABLE}", h.exec(["ip", fam, "rule"]).stdout, f"{fam} rule left")
            self.assertEqual(h.exec(["ip", fam, "route", "show", "table", str(TABLE)], check=False).stdout.strip(), "",
                             f"{fam} route left in table {TABLE}")

    def kill_and_expect_exit_1(self, tb, victim, pids):
        os.kill(pids[victim], signal.SIGKILL)
        try:
            rc = tb.a.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.fail(f"ipsecd still running after SIGKILL of {victim}:\n{tb.log_text(tb.a)}")
        self.assertEqual(rc, 1, tb.log_text(tb.a))
        self.assertIn("failing closed", tb.log_text(tb.a))

    def test_keydb_killed(self):
        with Testbed() as tb:
            pids = self.start(tb)
            self.kill_and_expect_exit_1(tb, "ipsec-keydb", pids)
            self.assert_nothing_left(tb, pids)

    def test_policy_killed(self):
        with Testbed() as tb:
            pids = self.start(tb)
            self.kill_and_expect_exit_1(tb, "ipsec-policy", pids)
            self.assert_nothing_left(tb, pids)

    def test_data_plane_killed_once_more_than_restart_limit(self):
        with Testbed() as tb:
            pids = self.start(tb)
            every = dict(pids)
            for restart in range(RESTART_LIMIT):
                old = tb.a.pid_of("ipsec-forwarder")
                os.kill(old, signal.SIGKILL)
                wait_for(lambda: tb.a.pid_of("ipsec-forwarder") not in (None, old), 15,
                         lambda: f"restart {restart + 1}: a new forwarder\n{tb.log_text(tb.a)}")
                for p in tb.a.audit():
                    every[f"{p['name']}#{p['pid']}"] = p["pid"]
            self.assertIsNone(tb.a.proc.poll(), tb.log_text(tb.a))
            pids = {p["name"]: p["pid"] for p in tb.a.audit()}
            self.kill_and_expect_exit_1(tb, "ipsec-forwarder", pids)
            self.assertIn(f"restarted more than {RESTART_LIMIT} times", tb.log_text(tb.a))
            self.assert_nothing_left(tb, every)


class RuntimeDirTest(unittest.TestCase):
    def run_ipsecd(self, tb, timeout=10, **extra):
        """Runs ipsecd on host A until it exits (or timeout: then stops it)."""
        path = tb.config(tb.a, **extra)
        p = subprocess.Popen(["ip", "netns", "exec", tb.a.ns, binary("ipsecd"), "--config", path],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGTERM)
            out, _ = p.communicate(timeout=10)
            return None, out
        return p.returncode, out

    def make_runtime(self, tb, uid, mode):
        tb.config(tb.a)  # sets tb.a.runtime
        os.makedirs(tb.a.runtime)
        os.chown(tb.a.runtime, uid, 0)
        os.chmod(tb.a.runtime, mode)

    def test_a_runtime_dir_owned_by_another_user_is_refused(self):
        with Testbed() as tb:
            self.make_runtime(tb, 64123, 0o755)
            rc, out = self.run_ipsecd(tb)
            self.assertEqual(rc, 2, out)
            self.assertIn("owned by uid 64123, not root", out)
            self.assertEqual(os.listdir(tb.a.runtime), [], "it was used anyway")
            self.assertEqual(os.stat(tb.a.runtime).st_mode & 0o7777, 0o755)

    def test_a_runtime_dir_others_can_write_is_refused(self):
        with Testbed() as tb:
            self.make_runtime(tb, 0, 0o777)
            rc, out = self.run_ipsecd(tb)
            self.assertEqual(rc, 2, out)
            self.assertIn("mode 0777 is writable by group or others", out)
            self.assertEqual(os.stat(tb.a.runtime).st_mode & 0o7777, 0o777, "its mode was changed")

    def parent_with(self, tb, uid, mode):
        parent = os.path.join(tb.a.workdir, "shared")
        os.makedirs(parent)
        os.chown(parent, uid, 0)
        os.chmod(parent, mode)
        return parent, os.path.join(parent, "run")

    def test_a_runtime_dir_under_another_users_directory_is_refused(self):
        # Its owner could rename run/ away and put a directory of theirs in its place.
        with Testbed() as tb:
            parent, runtime = self.parent_with(tb, 64123, 0o755)
            rc, out = self.run_ipsecd(tb, runtime_dir=runtime)
            self.assertEqual(rc, 2, out)
            self.assertIn(f"its parent {parent} is owned by uid 64123, not root", out)
            self.assertEqual(os.listdir(parent), [], "it was used anyway")

    def test_a_runtime_dir_under_a_directory_others_can_write_is_refused(self):
        with Testbed() as tb:
            parent, runtime = self.parent_with(tb, 0, 0o777)
            rc, out = self.run_ipsecd(tb, runtime_dir=runtime)
            self.assertEqual(rc, 2, out)
            self.assertIn(f"its parent {parent} has mode 0777 (writable by group or others, not sticky)", out)
            self.assertEqual(os.listdir(parent), [], "it was used anyway")

    def test_a_runtime_dir_under_a_sticky_world_writable_directory_is_used(self):
        # As /tmp: others may add names there but not replace ours.
        with Testbed() as tb:
            parent, runtime = self.parent_with(tb, 0, 0o1777)
            rc, out = self.run_ipsecd(tb, timeout=5, runtime_dir=runtime)
            self.assertIsNone(rc, out)  # still running after 5 s: it was stopped, not refused
            self.assertNotIn("refusing", out)

    def test_a_symlink_planted_for_the_pid_file_is_not_followed(self):
        with Testbed() as tb:
            self.make_runtime(tb, 0, 0o755)
            victim = os.path.join(tb.tmp, "victim")
            with open(victim, "w") as f:
                f.write("precious\n")
            os.symlink(victim, os.path.join(tb.a.runtime, "ipsecd.pid.tmp"))
            tb.start(tb.a)
            with open(victim) as f:
                self.assertEqual(f.read(), "precious\n", "ipsecd wrote through the symlink")
            pidfile = os.path.join(tb.a.runtime, "ipsecd.pid")
            self.assertFalse(os.path.islink(pidfile))
            with open(pidfile) as f:
                self.assertEqual(int(f.read()), tb.a.proc.pid)
            self.assertEqual(tb.stop(tb.a), 0, tb.log_text(tb.a))


class ChildOutputTest(unittest.TestCase):
    def test_each_child_writes_to_a_pipe_of_its_own_that_ipsecd_tags(self):
        with Testbed() as tb:
            tb.start(tb.a)
            procs = {p["name"]: p["pid"] for p in tb.a.audit()}
            ipsecd_err = os.readlink(f"/proc/{procs['ipsecd']}/fd/2")
            seen = set()
            for name in ("ipsec-keydb", "ipsec-policy", "ipsec-crypto", "ipsec-forwarder"):
                pid = procs[name[:15]]
                out, err = os.readlink(f"/proc/{pid}/fd/1"), os.readlink(f"/proc/{pid}/fd/2")
                self.assertTrue(err.startswith("pipe:"), f"{name} stderr is {err}")
                self.assertEqual(out, err, name)
                self.assertNotEqual(err, ipsecd_err, f"{name} shares ipsecd's stderr")
                self.assertNotIn(err, seen, f"{name} shares a pipe with another child")
                seen.add(err)
                # Its "ready" line came through ipsecd, with its own role and pid.
                self.assertIn(f" {name}[{pid}] I ready", tb.log_text(tb.a))
            counters = tb.a.stats()["ipsecd"]["counters"]
            self.assertGreaterEqual(counters["child_output_lines"], 4)
            self.assertEqual(counters["child_output_lines_truncated"], 0)
            self.assertEqual(tb.stop(tb.a), 0, tb.log_text(tb.a))


if __name__ == "__main__":
    unittest.main()
