"""Self-test of the test bed (harness.py): its leak check finds what a test
leaves behind and only that, and wait_for reports why it gave up.

Leaks are staged with stand-ins that hold what ipsecd's processes hold: a
python child with a memfd named like a data-plane region (memfd:ipsec-ring), a
child that left the namespace, a file in the runtime directory. Runs as root in
namespaces it creates; every process started here is stopped by pid.
"""

import os
import signal
import subprocess
import sys
import unittest

import harness
from harness import INNER, LeakError, Testbed, ping, wait_for

# Forks a child that holds a memfd named like a ring region and sleeps. With
# "orphan" the parent says the child's pid and exits at once, so only the
# child's namespace ties it to the test. Given a namespace path instead, the
# child first joins that network namespace (the test's own) and the parent
# stays, so only the parent-pid records tie the child to the test.
RING_HOLDER = r"""
import ctypes, os, sys, time
fd = os.memfd_create("ipsec-ring")
child = os.fork()
if child == 0:
    if sys.argv[1] != "orphan":
        ns = os.open(sys.argv[1], os.O_RDONLY)
        if ctypes.CDLL(None, use_errno=True).setns(ns, 0x40000000) != 0:
            sys.exit(1)
    time.sleep(60)
    sys.exit(0)
print(child, flush=True)
if sys.argv[1] != "orphan":
    time.sleep(60)
"""


def holds_ring(pid):
    return bool(harness.ring_memfds(pid))


class LeakCheckTest(unittest.TestCase):
    def start_holder(self, tb, mode):
        """The holder (a Popen) and its child's pid, once the child holds the memfd."""
        parent = tb.a.popen([sys.executable, "-c", RING_HOLDER, mode], stdout=subprocess.PIPE, text=True)
        child = int(parent.stdout.readline())
        wait_for(lambda: holds_ring(child), 5, f"the holder {child} to hold its memfd")
        return parent, child

    def test_a_process_left_in_the_namespace_holding_a_ring_memfd_is_a_leak(self):
        with self.assertRaises(LeakError) as caught:
            with Testbed() as tb:
                parent, child = self.start_holder(tb, "orphan")
                parent.wait(5)
        text = str(caught.exception)
        self.assertIn(f"pid {child} still alive: python3 (uid 0) in namespace {tb.a.ns}", text)
        self.assertIn(f"pid {child} (python3) holds memfd:ipsec-ring as fd", text)
        # The check raised after cleaning up: holder killed, namespaces gone.
        wait_for(lambda: not holds_ring(child), 5, f"pid {child} to be gone")
        self.assertFalse(os.path.exists(f"/run/netns/{tb.a.ns}"))

    def test_a_child_of_a_test_process_is_found_outside_the_namespace(self):
        with self.assertRaises(LeakError) as caught:
            with Testbed() as tb:
                parent, child = self.start_holder(tb, f"/proc/{os.getpid()}/ns/net")
                wait_for(lambda: harness.netns_of(child) == harness.netns_of(os.getpid()), 5,
                         "the holder's child to leave the namespace")
        text = str(caught.exception)
        self.assertIn(f"pid {child} still alive: python3 (uid 0), a child of pid {parent.pid}", text)
        self.assertIn(f"pid {child} (python3) holds memfd:ipsec-ring", text)
        wait_for(lambda: not holds_ring(child), 5, f"pid {child} to be gone")

    def test_a_ring_memfd_held_by_a_process_of_someone_else_is_not_ours(self):
        # Another test on this machine (not started by this testbed, outside its namespaces).
        other = subprocess.Popen([sys.executable, "-c", RING_HOLDER, "orphan"], stdout=subprocess.PIPE, text=True)
        other_child = int(other.stdout.readline())
        try:
            wait_for(lambda: holds_ring(other_child), 5, "the other holder")
            with Testbed() as tb:
                tb.start_pair()
                self.assertEqual(ping(tb.a, INNER[4][1], count=1).returncode, 0, tb.log_text(tb.a))
            self.assertTrue(holds_ring(other_child))
        finally:
            other.wait(5)
            try:
                os.kill(other_child, signal.SIGKILL)
            except ProcessLookupError:
                pass
            other.stdout.close()

    def test_ipsecd_and_its_children_are_recorded_and_gone_after_a_clean_stop(self):
        with Testbed() as tb:
            tb.start_pair()
            self.assertEqual(ping(tb.a, INNER[4][1], count=1).returncode, 0, tb.log_text(tb.a))
            names = {p["name"] for p in tb.a.audit()}
            tb.a.remember_children()
            recorded = " ".join(tb.a.started.values())
            for name in names:
                self.assertIn(name[:15], recorded)
            ring_holders = [pid for (pid, _) in tb.a.started if holds_ring(pid)]
            self.assertTrue(ring_holders, "no process of A holds a ring: the memfd check would look for nothing")
        self.assertEqual(tb.close(), [])  # closing again finds nothing and does nothing

    def test_a_file_left_in_the_runtime_directory_is_a_leak(self):
        with self.assertRaises(LeakError) as caught:
            with Testbed() as tb:
                tb.config(tb.a)
                os.makedirs(tb.a.runtime)
                open(os.path.join(tb.a.runtime, "pfkey"), "w").close()
        self.assertIn(f"runtime directory {tb.a.runtime} not empty: ['pfkey']", str(caught.exception))


class WaitForTest(unittest.TestCase):
    def test_returns_the_first_true_value(self):
        calls = []

        def third_time():
            calls.append(1)
            return len(calls) if len(calls) >= 3 else 0
        self.assertEqual(wait_for(third_time, 5, "three calls", step=0.01), 3)

    def test_raises_the_last_exception_again_with_what_it_waited_for(self):
        calls = []

        def failing():
            calls.append(1)
            raise KeyError(f"attempt {len(calls)}")
        with self.assertRaises(KeyError) as caught:
            wait_for(failing, 0.2, "a key", step=0.01)
        self.assertEqual(caught.exception.args[0], f"attempt {len(calls)}")
        self.assertIn("timed out after 0.2 s waiting for a key", "".join(caught.exception.__notes__))

    def test_names_what_and_the_last_value_on_timeout(self):
        with self.assertRaisesRegex(AssertionError, r"waiting for nothing to happen; last value: \[\]"):
            wait_for(lambda: [], 0.1, lambda: "nothing to happen")


if __name__ == "__main__":
    unittest.main()
