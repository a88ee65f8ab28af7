"""The systemd units (dist/ipsecd.service.in, dist/ipsecd@.service.in), as installed,
and what they ask of ipsecd (issue 14 §2).

- systemd-analyze verify passes on both units in the installed tree (the
  template as an instance), man pages included.
- The template is the plain unit with the instance's names, nothing else: the
  same sandbox for every instance.
- CapabilityBoundingSet= is enough: two ipsecd ends started under exactly that
  bounding set, with the unit's UMask= and NoNewPrivileges= (setpriv), come up
  and carry ping, ipsecctl audit answers, and they stop cleanly. The limits the unit sets (LimitMEMLOCK) are the ones
  ipsecd's children rely on.
- Type=notify: ipsecd run with a NOTIFY_SOCKET this test listens on sends
  READY=1 (once ready) and STATUS=, and STOPPING=1 on SIGTERM; its log lines
  carry syslog priority prefixes. Until ipsecd does (pending in services/ipsecd)
  these are skipped with that reason, judged from what ipsecd sent.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import unittest

import harness
from install_tree import InstallTree

# The units as this build configured them (dist/*.service.in with its paths).
UNITS = os.path.join(harness.BUILD, "dist")


def unit_lines(path):
    with open(path) as f:
        return [line.rstrip("\n") for line in f if line.strip() and not line.startswith("#")]


def unit_setting(path, key):
    values = [line.split("=", 1)[1] for line in unit_lines(path) if line.startswith(key + "=")]
    return values[-1] if values else None


def capability_names(setting):
    return {c.lower().removeprefix("cap_") for c in setting.split()}


class Verify(unittest.TestCase):
    def test_systemd_analyze_verify_passes(self):
        with InstallTree() as t:
            # The targets the units name (network-pre, multi-user, sysinit...) come from this system.
            targets = t.path("/lib/systemd/system")
            os.makedirs(targets, exist_ok=True)
            for name in os.listdir("/lib/systemd/system"):
                if name.endswith(".target"):
                    shutil.copy(os.path.join("/lib/systemd/system", name), targets)
            for unit, as_name in (("ipsecd.service", "ipsecd.service"), ("ipsecd@.service", "ipsecd@east.service")):
                # The template is verified as an instance, from the installed root, where
                # ExecStart's /usr/sbin/ipsecd and the man pages exist.
                src = os.path.join(t.unitdir, unit)
                work = tempfile.mkdtemp(prefix="ipsec-unit-")
                try:
                    shutil.copy(src, os.path.join(work, as_name))
                    r = subprocess.run(["systemd-analyze", "verify", f"--root={t.root}", "--man=yes",
                                        os.path.join(work, as_name)], capture_output=True, text=True, timeout=60,
                                       env={**os.environ, "MANPATH": t.mandir})
                finally:
                    shutil.rmtree(work)
                self.assertEqual((r.returncode, r.stdout + r.stderr), (0, ""), unit)

    def test_the_template_differs_only_in_the_instance(self):
        plain = unit_lines(os.path.join(UNITS, "ipsecd.service"))
        template = unit_lines(os.path.join(UNITS, "ipsecd@.service"))
        self.assertEqual(len(plain), len(template))
        differ = [(a, b) for a, b in zip(plain, template) if a != b]
        self.assertEqual({a.split("=", 1)[0] for a, _ in differ},
                         {"Description", "ConditionPathExists", "ExecStart", "RuntimeDirectory"})
        for a, b in differ:
            self.assertIn("%i", b, b)

    def test_the_sandbox_directives_are_there(self):
        path = os.path.join(UNITS, "ipsecd.service")
        for key, value in (("Type", "notify"), ("ProtectSystem", "strict"), ("ProtectHome", "yes"),
                           ("PrivateTmp", "yes"), ("NoNewPrivileges", "yes"), ("RuntimeDirectory", "ipsecd"),
                           ("DeviceAllow", "/dev/net/tun rw"), ("LimitMEMLOCK", "infinity")):
            self.assertEqual(unit_setting(path, key), value, key)


# Linux's capability numbers (<linux/capability.h>) of those the unit names.
CAP_NUMBERS = {"chown": 0, "dac_override": 1, "dac_read_search": 2, "fowner": 3, "kill": 5, "setgid": 6,
               "setuid": 7, "setpcap": 8, "net_bind_service": 10, "net_admin": 12, "net_raw": 13,
               "ipc_lock": 14, "sys_chroot": 18, "sys_ptrace": 19, "sys_admin": 21, "sys_resource": 24}
SETUP_ONLY = {"net_admin", "net_raw", "chown"}


def names_of(mask):
    names = {n for n, bit in CAP_NUMBERS.items() if mask & (1 << bit)}
    unknown = mask & ~sum(1 << bit for bit in CAP_NUMBERS.values())
    assert not unknown, f"capabilities beyond the table: {unknown:#x}"
    return names


def setpriv_wrapper(directory, bounding):
    """An `ipsecd` that execs the build's ipsecd under the unit's bounding set, umask and no_new_privs."""
    path = os.path.join(directory, "ipsecd")
    caps = ",".join("+" + c for c in sorted(bounding))
    with open(path, "w") as f:
        # UMask=0077, NoNewPrivileges=yes and the bounding set, as the unit has them.
        f.write(f"#!/bin/sh\numask 077\nexec setpriv --no-new-privs --bounding-set=-all,{caps} --inh-caps=-all "
                f"{harness.BUILD}/bin/ipsecd \"$@\"\n")
    os.chmod(path, 0o755)
    return path


class Capabilities(unittest.TestCase):
    def test_two_ends_run_under_the_units_bounding_set_umask_and_no_new_privs(self):
        bounding = capability_names(unit_setting(os.path.join(UNITS, "ipsecd.service"), "CapabilityBoundingSet"))
        work = tempfile.mkdtemp(prefix="ipsec-caps-")
        original = harness.binary
        wrapper = setpriv_wrapper(work, bounding)
        harness.binary = lambda name: wrapper if name == "ipsecd" else original(name)
        try:
            with harness.Testbed() as tb:
                # pfkey_group makes ipsecd give the PF_KEY socket a group (CAP_CHOWN).
                tb.start_pair(pfkey_group=64702)
                for src, dst in ((tb.a, harness.INNER[4][1]), (tb.b, harness.INNER[6][0])):
                    r = harness.ping(src, dst)
                    self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
                # What ipsecd keeps once it restricted itself is the unit's set less what only
                # its set-up needs (the TUN, raw sockets, the PF_KEY socket's group).
                with open(f"/proc/{tb.a.proc.pid}/status") as f:
                    status = f.read()
                kept = names_of(int(re.search(r"^CapBnd:\s+([0-9a-f]+)", status, re.M).group(1), 16))
                self.assertEqual(kept, bounding - SETUP_ONLY)
                self.assertRegex(status, r"(?m)^NoNewPrivs:\s+1$")
                self.assertEqual({p["name"] for p in tb.a.audit()} >= {"ipsec-keydb", "ipsec-forwarder"}, True)
                for h in tb.hosts():
                    self.assertEqual(tb.stop(h), 0, tb.log_text(h))
        finally:
            harness.binary = original
            shutil.rmtree(work)


class Notify(unittest.TestCase):
    """ipsecd under a NOTIFY_SOCKET, as systemd runs a Type=notify service."""

    def test_ready_status_and_stopping_are_sent(self):
        work = tempfile.mkdtemp(prefix="ipsec-notify-")
        path = os.path.join(work, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(0.1)
        messages = []

        def receive():
            try:
                while True:
                    messages.append(sock.recv(4096).decode())
            except (socket.timeout, BlockingIOError):
                pass
            return "\n".join(messages)

        os.environ["NOTIFY_SOCKET"] = path
        try:
            with harness.Testbed() as tb:
                tb.start_pair()
                try:
                    harness.wait_for(lambda: "READY=1" in receive(), 3, "READY=1 on NOTIFY_SOCKET")
                except AssertionError:
                    if not messages:
                        self.skipTest("ipsecd does not send sd_notify messages yet (READY=1, STATUS=, "
                                      "STOPPING=1): issue 14 §2, pending in services/ipsecd")
                    raise
                self.assertRegex(receive(), r"STATUS=.*SA", "STATUS= names the SAs")
                tb.stop(tb.a)
                harness.wait_for(lambda: "STOPPING=1" in receive(), 3, "STOPPING=1 on NOTIFY_SOCKET")
        finally:
            del os.environ["NOTIFY_SOCKET"]
            sock.close()
            shutil.rmtree(work)

    def test_log_lines_carry_syslog_priorities(self):
        with harness.Testbed() as tb:
            tb.start(tb.a)
            tb.stop(tb.a)
            lines = [line for line in tb.log_text(tb.a).splitlines() if line]
            self.assertTrue(lines)
            if not any(re.match(r"^<[0-7]>", line) for line in lines):
                self.skipTest("ipsecd's log lines have no syslog priority prefix (<3> ...) yet: "
                              "issue 14 §2, pending in lib/log")
            for line in lines:
                self.assertRegex(line, r"^<[0-7]>", "every line, the children's too")


if __name__ == "__main__":
    unittest.main()
