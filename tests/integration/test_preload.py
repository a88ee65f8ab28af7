"""libipsec-pfkey-preload.so lets an unmodified PF_KEY client use ipsecd.

pfkey_client (pfkey_client.c) stands for such a client: it calls
socket(PF_KEY, SOCK_RAW, PF_KEY_V2), which this kernel refuses, and walks
charon's kernel-pfkey sequence. Under LD_PRELOAD it reaches ipsec-policy in
each namespace; the two clients exchange their GETSPI'd SPIs as IKE would,
install a tunnel, and ping crosses it. Also checked: the socket answers
getsockopt as AF_KEY would and keeps working through dup/poll/MSG_PEEK/
MSG_TRUNC/SO_RCVTIMEO; an unreachable service gives EAFNOSUPPORT; our own
setkey (which speaks to the Unix socket directly) keeps working beside it,
with and without the preload.
"""

import errno
import os
import re
import select
import socket
import subprocess
import time
import unittest

from harness import BUILD, GCM_KEY_AB, GCM_KEY_BA, INNER, INNER_NETS, OUTER, Testbed, binary, ping, run, wait_for

PRELOAD = os.path.join(BUILD, "lib", "libipsec-pfkey-preload.so")
STEPS = ["socket-events", "socket-requests", "REGISTER-ESP", "REGISTER-AH", "GETSPI", "DELETE-larval",
         "ADD-in", "ADD-out", "X_SPDADD-in", "X_SPDADD-fwd", "X_SPDADD-out", "GET-in", "GET-out", "events"]
TEARDOWN = ["GET-in-used", "GET-out-used", "X_SPDDELETE-out", "X_SPDDELETE-in", "X_SPDDELETE-fwd", "DELETE-in", "DELETE-out"]
IDENTITY = f"SO_TYPE={socket.SOCK_RAW} SO_DOMAIN={socket.AF_KEY} SO_PROTOCOL=2"


def preloaded(h, sock=None, debug=False):
    """The command prefix that runs a client in h's namespace through the preload."""
    env = [f"LD_PRELOAD={PRELOAD}", f"IPSEC_PFKEY_SOCKET={sock or os.path.join(h.runtime, 'pfkey')}"]
    if debug:
        env.append("IPSEC_PFKEY_DEBUG=1")
    return ["ip", "netns", "exec", h.ns, "env", *env]


class Client:
    """A running pfkey_client whose stdout is read line by line with a deadline."""

    def __init__(self, h, args):
        self.proc = subprocess.Popen(preloaded(h) + [binary("pfkey_client"), *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        h.extra_pids.append(self.proc)
        h.remember(self.proc.pid, f"pfkey_client (preloaded) in {h.ns}")
        self.buf = b""
        self.lines = []

    def read_until(self, prefix, timeout=20):
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                text = line.decode(errors="replace")
                self.lines.append(text)
                if text.startswith("FAIL"):
                    raise AssertionError(f"pfkey_client: {text}\n" + "\n".join(self.lines))
                if text.startswith(prefix):
                    return text
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"pfkey_client: no '{prefix}' line in time\n" + "\n".join(self.lines))
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    raise AssertionError(f"pfkey_client ended before '{prefix}' (status {self.proc.wait(5)})\n"
                                         + "\n".join(self.lines + [self.buf.decode(errors='replace')]))
                self.buf += chunk

    def say(self, text):
        self.proc.stdin.write(text.encode() + b"\n")
        self.proc.stdin.flush()

    def finish(self, timeout=20):
        rest, _ = self.proc.communicate(timeout=timeout)
        self.lines += (self.buf + rest).decode(errors="replace").splitlines()
        return self.proc.returncode

    def steps(self):
        return [line.split()[1] for line in self.lines if line.startswith("ok ")]


def client_args(side):
    a, b = OUTER[4]
    na, nb = INNER_NETS[4]
    if side == "a":
        return ["--local", a, "--remote", b, "--local-net", na, "--remote-net", nb,
                "--key-in", GCM_KEY_BA.hex(), "--key-out", GCM_KEY_AB.hex(), "--teardown"]
    return ["--local", b, "--remote", a, "--local-net", nb, "--remote-net", na,
            "--key-in", GCM_KEY_AB.hex(), "--key-out", GCM_KEY_BA.hex(), "--teardown"]


class PreloadTest(unittest.TestCase):
    def setUp(self):
        if not os.path.exists(PRELOAD):
            self.fail(f"{PRELOAD} not built")

    def setkey(self, h, *flags, preload=False):
        cmd = [binary("setkey"), "--socket", os.path.join(h.runtime, "pfkey"), *flags]
        if preload:
            r = run(preloaded(h) + cmd, check=False, timeout=30)
        else:
            r = h.exec(cmd, check=False)
        self.assertEqual(r.returncode, 0, f"setkey {flags}: {r.stdout}{r.stderr}")
        return r.stdout

    def test_unreachable_service_gives_eafnosupport(self):
        missing = "/nonexistent-ipsec-test/pfkey"
        env = dict(os.environ, LD_PRELOAD=PRELOAD, IPSEC_PFKEY_SOCKET=missing)
        r = run([binary("pfkey_client"), "--probe"], check=False, env=env, timeout=30)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(f"FAIL socket errno={errno.EAFNOSUPPORT} ", r.stdout)
        self.assertEqual(r.stderr, "", "silent unless IPSEC_PFKEY_DEBUG is set")
        env["IPSEC_PFKEY_DEBUG"] = "1"
        r = run([binary("pfkey_client"), "--probe"], check=False, env=env, timeout=30)
        self.assertIn(f"errno={errno.EAFNOSUPPORT} ", r.stdout)
        lines = r.stderr.splitlines()
        self.assertEqual(len(lines), 1, r.stderr)
        self.assertIn(missing, lines[0])
        # Without the preload the kernel itself says the same: no AF_KEY here.
        r = run([binary("pfkey_client"), "--probe"], check=False, timeout=30)
        self.assertIn(f"FAIL socket errno={errno.EAFNOSUPPORT} ", r.stdout)

    def test_socket_behaves_as_af_key(self):
        with Testbed() as tb:
            tb.start(tb.a, "")
            r = run(preloaded(tb.a) + [binary("pfkey_client"), "--probe"], check=False, timeout=60)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            steps = [line.split()[1] for line in r.stdout.splitlines() if line.startswith("ok ")]
            self.assertEqual(steps, ["socket", "getsockname", "dup", "reuse", "write-poll-read", "msg_trunc",
                                     "rcvtimeo", "bad-type", "flags", "threads"], r.stdout)
            self.assertIn(IDENTITY, r.stdout)
            # Other programs run under the preload untouched: our setkey speaks
            # to the Unix socket itself, with or without it.
            self.assertIn("No SAD entries.", self.setkey(tb.a, "-D", preload=True))
            self.assertIn("No SPD entries.", self.setkey(tb.a, "-DP"))

    def test_client_sees_epipe_not_sigpipe_when_the_service_stops(self):
        with Testbed() as tb:
            tb.start(tb.a, "")
            c = Client(tb.a, ["--hold"])
            c.read_until("ready")
            self.assertEqual(tb.stop(tb.a), 0, tb.log_text(tb.a))
            c.say("go")
            self.assertEqual(c.finish(), 0, "\n".join(c.lines))  # -SIGPIPE had it been killed
            self.assertEqual(c.steps(), ["epipe"], "\n".join(c.lines))

    def test_charon_sequence_builds_a_tunnel_that_carries_ping(self):
        with Testbed() as tb:
            tb.start(tb.a, "")
            tb.start(tb.b, "")
            ca, cb = Client(tb.a, client_args("a")), Client(tb.b, client_args("b"))
            # The SPIs each side got from GETSPI travel to the other, as in IKE.
            spi_a = ca.read_until("ok GETSPI").split("spi=")[1]
            spi_b = cb.read_until("ok GETSPI").split("spi=")[1]
            ca.say(spi_b)
            cb.say(spi_a)
            ca.read_until("ready")
            cb.read_until("ready")
            for c in (ca, cb):
                self.assertEqual(c.steps(), STEPS, "\n".join(c.lines))
                self.assertEqual(sum(IDENTITY in line for line in c.lines), 2, "\n".join(c.lines))
                self.assertTrue(any(line.startswith("ok GET-in ") and "lifetime_current" in line
                                    for line in c.lines))

            # Traffic flows through the SAs the clients installed.
            r = ping(tb.a, INNER[4][1], count=3)
            self.assertEqual(r.returncode, 0, f"ping A→B: {r.stdout}{r.stderr}\n{tb.log_text(tb.a)}")
            r = ping(tb.b, INNER[4][0], count=3)
            self.assertEqual(r.returncode, 0, f"ping B→A: {r.stdout}{r.stderr}")
            self.assertGreaterEqual(tb.a.counter("esp_out_packets"), 3)
            self.assertGreaterEqual(tb.a.counter("esp_in_packets"), 3)

            # setkey beside the client, through the normal socket path, sees them.
            dump = self.setkey(tb.a, "-D")
            self.assertIn(f"({spi_a})", dump)
            self.assertIn(f"({spi_b})", dump)
            self.assertIn(f"({spi_a})", self.setkey(tb.a, "-D", preload=True))
            policies = self.setkey(tb.a, "-DP")
            for net in INNER_NETS[4]:
                self.assertIn(net, policies)

            # Closing the child as charon does removes everything it installed;
            # first GET shows the traffic counted in LIFETIME_CURRENT (the
            # forwarder reports usage to keydb every second).
            def usage_reported(h):
                used = [int(n) for n in re.findall(r"current: (\d+)\(bytes\)", self.setkey(h, "-D"))]
                return len(used) >= 2 and all(used)
            wait_for(lambda: all(usage_reported(h) for h in tb.hosts()), 5,
                     "both SAs of each host to show bytes in setkey -D")
            for c in (ca, cb):
                c.say("used")
                self.assertEqual(c.finish(), 0, "\n".join(c.lines))
                self.assertEqual(c.steps(), STEPS + TEARDOWN, "\n".join(c.lines))
            self.assertIn("No SAD entries.", self.setkey(tb.a, "-D"))
            self.assertIn("No SPD entries.", self.setkey(tb.a, "-DP"))
            r = ping(tb.a, INNER[4][1], count=1)
            self.assertNotEqual(r.returncode, 0, "ping crossed after the tunnel was torn down")


if __name__ == "__main__":
    unittest.main()
