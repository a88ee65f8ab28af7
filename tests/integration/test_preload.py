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

The daemons' own habits, each with a small client of ours that does exactly
what the daemon does (preload_clients.py, /usr/bin/python3 under the
preload): racoon's non-blocking REGISTER-then-read and every other request
type (the answer is queued when send() returns); charon's NAT-T sockets bound
without SO_REUSEPORT before and after ipsecd starts (IKE reaches them, ESP
reaches ipsecd, both ways, IPv4 and IPv6); a bypass IP_IPSEC_POLICY whose
socket's traffic leaves clear while a transport policy covers the peer;
ipsecd stopped and restarted under connected clients that read in charon's
and racoon's loops (no end-of-file, no spinning, a lost socket for good).
"""

import errno
import os
import re
import select
import socket
import subprocess
import time
import unittest

from harness import BUILD, GCM_KEY_AB, GCM_KEY_BA, INNER, INNER_NETS, OUTER, Capture, Testbed, binary, ping, run, wait_for
from test_transport import transport_config, transport_setkey

PRELOAD = os.path.join(BUILD, "lib", "libipsec-pfkey-preload.so")
STEPS = ["socket-events", "socket-requests", "REGISTER-ESP", "REGISTER-AH", "GETSPI", "DELETE-larval",
         "ADD-in", "ADD-out", "X_SPDADD-in", "X_SPDADD-fwd", "X_SPDADD-out", "GET-in", "GET-out", "events"]
TEARDOWN = ["GET-in-used", "GET-out-used", "X_SPDDELETE-out", "X_SPDDELETE-in", "X_SPDDELETE-fwd", "DELETE-in", "DELETE-out"]
IDENTITY = f"SO_TYPE={socket.SOCK_RAW} SO_DOMAIN={socket.AF_KEY} SO_PROTOCOL=2"
CLIENTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "preload_clients.py")
RACOON_STEPS = ["REGISTER-ESP", "REGISTER-AH", "REGISTER-IPCOMP", "GETSPI", "UPDATE", "ADD", "GET", "GET-missing",
                "DUMP", "X_SPDADD", "X_SPDDUMP", "X_SPDDELETE", "X_SPDFLUSH", "DELETE", "FLUSH", "malformed",
                "X_PROMISC"]


# Holds the NAT-T join lock of port 4500 (proto/natt_lock.h: the abstract
# Unix name "ipsecd-natt-join-4500") until killed.
JOIN_LOCK_HOLDER = r"""
import socket, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(b"\0ipsecd-natt-join-4500")
print("held", flush=True)
time.sleep(60)
"""


def preloaded(h, sock=None, debug=False):
    """The command prefix that runs a client in h's namespace through the preload."""
    env = [f"LD_PRELOAD={PRELOAD}", f"IPSEC_PFKEY_SOCKET={sock or os.path.join(h.runtime, 'pfkey')}"]
    if debug:
        env.append("IPSEC_PFKEY_DEBUG=1")
    return ["ip", "netns", "exec", h.ns, "env", *env]


class Client:
    """A running pfkey_client whose stdout is read line by line with a deadline."""

    def __init__(self, h, args, program=None):
        program = program or [binary("pfkey_client")]
        self.proc = subprocess.Popen(preloaded(h) + program + list(args),
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


def py_client(h, *args):
    """A preload_clients.py stand-in running in h's namespace under the preload."""
    return Client(h, args, program=["/usr/bin/python3", CLIENTS])


def cpu_seconds(pid):
    """User + system CPU time of `pid` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


    def test_answers_are_queued_before_send_returns_as_racoon_reads_them(self):
        # racoon: non-blocking socket, REGISTER, read at once ("failed to
        # register" on EAGAIN, 10 of 10 starts before); the same for every
        # other request type, an error reply and a broadcast to the sender.
        with Testbed() as tb:
            tb.start(tb.a, "")
            c = py_client(tb.a, "racoon")
            self.assertEqual(c.finish(timeout=60), 0, "\n".join(c.lines))
            self.assertEqual(c.steps(), RACOON_STEPS, "\n".join(c.lines))

    def test_answers_are_queued_whatever_call_or_process_sends(self):
        # writev, sendmmsg, a descriptor the preload never saw (a raw dup) and
        # a fork sharing the connection: each send's answer is on the socket
        # when it returns, and none waits out the 5 s bound (a count of sends
        # on each side drifted on every one of these).
        with Testbed() as tb:
            tb.start(tb.a, "")
            for case in ("writev", "sendmmsg", "rawdup", "fork"):
                with self.subTest(case=case):
                    c = Client(tb.a, [case], program=[binary("pfkey_sync_client")])
                    self.assertEqual(c.finish(timeout=60), 0, "\n".join(c.lines))
                    self.assertEqual(c.lines, [f"ok {case}"])

    def test_natt_port_is_shared_with_an_ike_daemon_bound_before_or_after_ipsecd(self):
        with Testbed() as tb:
            # A: the IKE daemon binds 4500 first, then ipsecd starts;
            # B: ipsecd first, then the IKE daemon. Neither sets SO_REUSEPORT.
            ike_a = py_client(tb.a, "natt")
            ike_a.read_until("ok bound")
            tb.start(tb.a, "")
            tb.start(tb.b, "")
            ike_b = py_client(tb.b, "natt")
            ike_b.read_until("ok bound")
            ends = {"a": (tb.a, ike_a), "b": (tb.b, ike_b)}
            for fam in (4, 6):
                for src, dst in (("a", "b"), ("b", "a")):
                    (src_host, src_ike), (dst_host, dst_ike) = ends[src], ends[dst]
                    to = OUTER[fam][0 if dst == "a" else 1]
                    frm = OUTER[fam][0 if src == "a" else 1]
                    before = dst_host.counter("natt_in_esp_packets")
                    keepalives = dst_host.counter("natt_in_keepalives")
                    # ESP (SPI 0x1234) and a keepalive go to ipsecd, then IKE
                    # (the non-ESP marker) to the daemon: it must see only that.
                    ike = "00000000" + f"ike{fam}{src}{dst}".encode().hex()
                    for payload in ("00001234000000010102030405060708", "ff", ike):
                        src_ike.say(f"send {fam} {to} {payload}")
                        src_ike.read_until(f"ok sent v{fam}")
                    line = dst_ike.read_until("recv ")
                    self.assertEqual(line.split()[1:], [frm, "4500", ike],
                                     f"v{fam} {src}→{dst}: {line}")
                    wait_for(lambda: dst_host.counter("natt_in_esp_packets") != before, 3,
                             f"v{fam} {src}→{dst}: the ESP datagram counted")
                    self.assertEqual(dst_host.counter("natt_in_esp_packets"), before + 1, f"v{fam} {src}→{dst}")
                    self.assertEqual(dst_host.counter("natt_in_keepalives"), keepalives + 1, f"v{fam} {src}→{dst}")
            self.assertEqual(tb.a.counter("natt_in_ike_no_listener"), 0)
            for c in (ike_a, ike_b):
                c.say("stop")
                self.assertEqual(c.finish(), 0, "\n".join(c.lines))
                self.assertFalse([line for line in c.lines if line.startswith("recv ")][2:],
                                 "the IKE daemon received more than its 2 IKE datagrams")

    def hold_join_lock(self, h):
        """A process in h's namespace holding proto/natt_lock.h's lock for
        port 4500 until it is killed."""
        holder = h.popen(["/usr/bin/python3", "-c", JOIN_LOCK_HOLDER], stdout=subprocess.PIPE, text=True)
        self.assertEqual(holder.stdout.readline().strip(), "held")
        return holder

    def test_the_ike_daemons_natt_bind_waits_for_the_join_lock(self):
        # ipsecd holds the lock across its probe, bind and attach: an IKE
        # daemon binding meanwhile must wait, or both think they came first.
        with Testbed() as tb:
            holder = self.hold_join_lock(tb.a)
            ike = py_client(tb.a, "natt")
            with self.assertRaises(AssertionError):
                ike.read_until("ok bound", timeout=0.4)
            holder.kill()
            holder.wait(5)
            holder.stdout.close()
            ike.read_until("ok bound")
            ike.say("stop")
            self.assertEqual(ike.finish(), 0, "\n".join(ike.lines))

    def test_ipsecd_takes_the_join_lock_and_goes_on_without_it_when_it_stays_taken(self):
        with Testbed() as tb:
            holder = self.hold_join_lock(tb.a)
            try:
                tb.start(tb.a, "")
            finally:
                holder.kill()
                holder.wait(5)
                holder.stdout.close()
            self.assertIn("NAT-T port 4500: join lock not taken", tb.log_text(tb.a))
            ike = py_client(tb.a, "natt")
            ike.read_until("ok bound")
            ike.say("stop")
            self.assertEqual(ike.finish(), 0, "\n".join(ike.lines))

    def test_bypass_policy_socket_leaves_clear_while_a_transport_policy_covers_the_peer(self):
        with Testbed() as tb:
            for h in tb.hosts():
                tb.start(h, transport_setkey(h.side), **transport_config(h.side))
            with Capture(tb.b, os.path.join(tb.tmp, "bypass.pcap"),
                         "udp port 500 or udp port 501 or esp or ip6 proto 50", "veth-ipsec-b") as cap:
                c = py_client(tb.a, "bypass", OUTER[4][1], OUTER[6][1])
                self.assertEqual(c.finish(timeout=30), 0, "\n".join(c.lines))
                self.assertEqual(c.steps(),
                                 ["bypass-v4", "refused-v4", "sent-v4", "bypass-v6", "refused-v6", "sent-v6"],
                                 "\n".join(c.lines))
                clear_to = [f"{OUTER[fam][1]}.500:" for fam in (4, 6)]
                out = wait_for(lambda: (lambda t: t if all(c in t for c in clear_to) and
                                        t.count("ESP(spi=") >= 2 else None)(cap.text()),
                               10, "both clear datagrams and two ESP packets on B's veth")
            for fam in (4, 6):
                a, b = OUTER[fam]
                clear = [line for line in out.splitlines() if f"{a}." in line and f"{b}.500:" in line]
                self.assertEqual(len(clear), 1, f"v{fam}: the bypass socket's datagram, clear:\n{out}")
                self.assertFalse([line for line in out.splitlines() if f"{b}.501:" in line],
                                 f"v{fam}: the plain socket's datagram left clear:\n{out}")
            self.assertGreaterEqual(out.count("ESP(spi="), 2, f"the plain sockets' datagrams as ESP:\n{out}")

    def test_a_stopped_service_is_a_lost_socket_no_end_of_file_and_no_spinning(self):
        with Testbed() as tb:
            tb.start(tb.a, "")
            clients = {style: py_client(tb.a, "loop", style) for style in ("charon", "racoon")}
            for c in clients.values():
                c.read_until("ready")
            self.assertEqual(tb.stop(tb.a), 0, tb.log_text(tb.a))
            time.sleep(0.5)
            used = {style: cpu_seconds(c.proc.pid) for style, c in clients.items()}
            time.sleep(3)
            for style, c in clients.items():
                spent = cpu_seconds(c.proc.pid) - used[style]
                self.assertLess(spent, 0.3, f"{style}'s loop spun for {spent:.2f} s of CPU in 3 s")
            # ipsecd back: the old socket stays lost (its SAD is gone), sends
            # fail with EPIPE; a new socket reaches the new service.
            tb.start(tb.a, "")
            for style, c in clients.items():
                c.say("send")
                self.assertEqual(c.read_until("ok send"), f"ok send errno={errno.EPIPE}", style)
                c.say("reopen")
                self.assertEqual(c.read_until("ok reopen"), "ok reopen answers=1 errno=0", style)
                c.say("stop")
                # REGISTER answers before; one ECONNRESET, never an end-of-file.
                words = c.read_until("ok stop").split(" ", 4)
                self.assertGreaterEqual(int(words[2].split("=")[1]), 1, c.lines)
                self.assertEqual(words[3:], ["eof=0", f"errors={{{errno.ECONNRESET}: 1}}"], style)
                self.assertEqual(c.finish(), 0, "\n".join(c.lines))


if __name__ == "__main__":
    unittest.main()
