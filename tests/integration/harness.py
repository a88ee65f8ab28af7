"""Test bed for multi-process tests: real ipsecd instances in network namespaces.

Two hosts, A and B, each a network namespace made by this module and joined
by a veth pair. Addresses are documentation ranges only:

  outer (the veth)      A 192.0.2.1/24, 2001:db8:1::1/64   B 192.0.2.2/24, 2001:db8:1::2/64
  inner (the TUN)       A 198.51.100.1, 2001:db8:a::1      B 203.0.113.1, 2001:db8:b::1

There is no default route anywhere. Everything started here is stopped by
pid, and the namespaces are deleted, also when a test fails or is interrupted.
Before that, the testbed checks itself for leaks (Testbed.close): once ipsecd is
stopped, no process the test started (nor any child ipsecd had) may be alive,
no process of the test may hold a data-plane memfd (`memfd:ipsec-ring`), the
runtime directories must be empty and the namespaces gone.

Tests wait for conditions with wait_for() and capture with Capture (tcpdump,
known to be listening before traffic flows), never with a fixed sleep.
Used by the integration and interop tests and by the demo (scripts/demo).
"""

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("IPSEC_BUILD_DIR", os.path.join(ROOT, "build"))

# Keys used by tests; the sandbox test searches the forwarder's memory for them.
GCM_KEY_AB = bytes.fromhex("4c80cdefbb5d10da906ac73c3613a634" "2e443b68")  # key || 4-byte salt
GCM_KEY_BA = bytes.fromhex("feffe9928665731c6d6a8f9467308308" "cafebabe")
CBC_KEY_AB = bytes.fromhex("0123456789abcdef0123456789abcdef")
CBC_KEY_BA = bytes.fromhex("fedcba9876543210fedcba9876543210")
HMAC_KEY_AB = bytes.fromhex("11" * 32)
HMAC_KEY_BA = bytes.fromhex("22" * 32)

SPI_AB = 0x1001  # A → B
SPI_BA = 0x1002  # B → A

OUTER = {4: ("192.0.2.1", "192.0.2.2"), 6: ("2001:db8:1::1", "2001:db8:1::2")}
INNER = {4: ("198.51.100.1", "203.0.113.1"), 6: ("2001:db8:a::1", "2001:db8:b::1")}
INNER_NETS = {4: ("198.51.100.0/24", "203.0.113.0/24"), 6: ("2001:db8:a::/48", "2001:db8:b::/48")}


def binary(name):
    p = os.path.join(BUILD, "bin", name)
    if not os.path.exists(p):
        raise FileNotFoundError(f"{name} not built in {BUILD}/bin")
    return p


def run(cmd, check=True, **kw):
    return subprocess.run(cmd, check=check, capture_output=True, text=True, **kw)


# --- Processes, named by identity -------------------------------------------
# Helpers run tests in parallel on this machine, so a pid alone could name
# another helper's process once ours is gone: (pid, start time) names one
# process for its whole life. A zombie has exited and holds nothing.

RING_MEMFD = "memfd:ipsec-ring"  # the data-plane regions (lib/ring/region.cpp)


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    start: int   # clock ticks after boot (/proc/<pid>/stat field 22)
    state: str
    name: str

    @property
    def identity(self):
        return (self.pid, self.start)


def proc_info(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    rest = text[text.rindex(")") + 2:].split()
    return ProcInfo(pid, int(rest[1]), int(rest[19]), rest[0], text[text.index("(") + 1:text.rindex(")")])


def is_alive(identity):
    info = proc_info(identity[0])
    return info is not None and info.start == identity[1] and info.state not in ("Z", "X")


def process_table():
    """{pid: ProcInfo} of every live process on the machine."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = proc_info(int(entry))
            if info and info.state not in ("Z", "X"):
                table[info.pid] = info
    return table


def descendants(pids, table):
    children = {}
    for info in table.values():
        children.setdefault(info.ppid, []).append(info)
    found, todo = [], list(pids)
    while todo:
        for child in children.get(todo.pop(), ()):
            found.append(child)
            todo.append(child.pid)
    return found


def ring_memfds(pid):
    """The fd numbers and mappings of pid that are data-plane regions."""
    held = []
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        fds = []
    for fd in fds:
        try:
            if RING_MEMFD in os.readlink(f"/proc/{pid}/fd/{fd}"):
                held.append(f"fd {fd}")
        except OSError:
            pass
    try:
        with open(f"/proc/{pid}/maps") as f:
            if any(RING_MEMFD in line for line in f):
                held.append("a mapping")
    except OSError:
        pass
    return held


def netns_of(pid):
    try:
        st = os.stat(f"/proc/{pid}/ns/net")
        return (st.st_dev, st.st_ino)
    except OSError:
        return None


def uid_of(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class LeakError(AssertionError):
    """The testbed found something the test left behind after stopping it."""


# --- Waiting and capturing -----------------------------------------------------

def _what_text(what):
    return what() if callable(what) else what


def _short_repr(value, limit=400):
    shown = repr(value)
    return shown if len(shown) <= limit else shown[:limit] + "..."


def wait_for(condition, timeout, what, step=0.05):
    """Calls condition() until it returns something true, and returns that.

    At the timeout, the exception condition() raised on its last call is raised
    again (with a note naming `what`), or else an AssertionError naming `what` and
    the last value. `what` may be a callable, evaluated only then (a log, say)."""
    deadline = time.monotonic() + timeout
    while True:
        error = None
        try:
            value = condition()
            if value:
                return value
        except Exception as e:  # noqa: BLE001  (kept to re-raise at the deadline)
            error, value = e, None
        if time.monotonic() >= deadline:
            if error is not None:
                error.add_note(f"wait_for: timed out after {timeout} s waiting for {_what_text(what)}")
                raise error
            raise AssertionError(f"timed out after {timeout} s waiting for {_what_text(what)}; "
                                 f"last value: {_short_repr(value)}")
        time.sleep(min(step, max(0.0, deadline - time.monotonic())))


class Capture:
    """tcpdump -w in a host's namespace: `with Capture(host, path, bpf, iface) as cap:`.

    Entering returns once tcpdump says "listening on" (its filter is attached, so
    whatever is sent afterwards is captured); leaving stops it by pid. packets()
    reads the pcap with scapy, text() prints it the way tcpdump -n prints live."""

    LISTEN_TIMEOUT = 10

    def __init__(self, host, path, bpf, iface):
        self.host, self.path, self.bpf, self.iface = host, path, bpf, iface
        self.proc = None

    def __enter__(self):
        # -Z root: Debian's tcpdump otherwise drops to user tcpdump, which cannot
        # write into the root-owned test directory. -U: one write per packet.
        self.proc = self.host.popen(["tcpdump", "-i", self.iface, "-n", "-U", "-Z", "root", "-s", "0",
                                     "-w", self.path, self.bpf],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            self._wait_until_listening()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()

    def _wait_until_listening(self):
        said = b""

        def listening_or_gone():
            nonlocal said
            readable, _, _ = select.select([self.proc.stderr], [], [], 0.1)
            chunk = os.read(self.proc.stderr.fileno(), 4096) if readable else b""
            said += chunk
            return b"listening on" in said or (readable and not chunk) or self.proc.poll() is not None

        wait_for(listening_or_gone, self.LISTEN_TIMEOUT,
                 lambda: f"tcpdump on {self.iface} in {self.host.ns} to say 'listening on'; it said {said!r}")
        if b"listening on" not in said:
            raise RuntimeError(f"tcpdump on {self.iface} in {self.host.ns} did not start: {said!r}")

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc.stderr.close()

    def packets(self):
        """Everything captured so far, as scapy packets (a partly written last record is left out)."""
        import scapy.layers.l2  # noqa: F401  (registers Ethernet, the link type of the capture)
        from scapy.utils import PcapReader
        out = []
        try:
            with PcapReader(self.path) as r:
                for p in r:
                    out.append(p)
        except Exception:  # noqa: BLE001  (the last record may still be being written)
            pass
        return out

    def text(self, *flags):
        """The capture as tcpdump -n prints it (flags such as -v added)."""
        return run(["tcpdump", "-r", self.path, "-n", *flags]).stdout

    def wait_for(self, pred, timeout=5.0, what="the packets expected"):
        """The packets captured once pred(packets) holds; AssertionError at the timeout."""
        got = []

        def holds():
            nonlocal got
            got = self.packets()
            return pred(got)
        wait_for(holds, timeout, lambda: f"{_what_text(what)} on {self.iface} in {self.host.ns} "
                                         f"({len(got)} packets captured)")
        return got


def sa_lines(alg, outer):
    """setkey SA statements for both directions (the same on both hosts)."""
    a, b = OUTER[outer]
    if alg == "aes-gcm":
        e_ab = f"-E aes-gcm-16 0x{GCM_KEY_AB.hex()}"
        e_ba = f"-E aes-gcm-16 0x{GCM_KEY_BA.hex()}"
    elif alg == "aes-cbc":
        e_ab = f"-E aes-cbc 0x{CBC_KEY_AB.hex()} -A hmac-sha256 0x{HMAC_KEY_AB.hex()}"
        e_ba = f"-E aes-cbc 0x{CBC_KEY_BA.hex()} -A hmac-sha256 0x{HMAC_KEY_BA.hex()}"
    else:
        raise ValueError(alg)
    return (f"add {a} {b} esp {SPI_AB:#x} -m tunnel -r 64 {e_ab};\n"
            f"add {b} {a} esp {SPI_BA:#x} -m tunnel -r 64 {e_ba};\n")


def spd_lines(side, outer, inner_families=(4, 6), proto="esp"):
    """Tunnel policies (ESP, or AH with proto="ah") for host side 'a' or 'b' protecting both inner families."""
    a, b = OUTER[outer]
    local, remote = (a, b) if side == "a" else (b, a)
    out = []
    for fam in inner_families:
        na, nb = INNER_NETS[fam]
        lnet, rnet = (na, nb) if side == "a" else (nb, na)
        out.append(f"spdadd {lnet} {rnet} any -P out ipsec {proto}/tunnel/{local}-{remote}/require;")
        out.append(f"spdadd {rnet} {lnet} any -P in ipsec {proto}/tunnel/{remote}-{local}/require;")
    return "\n".join(out) + "\n"


@dataclass
class Host:
    side: str
    ns: str
    workdir: str
    proc: subprocess.Popen = None
    log: object = None
    runtime: str = ""
    extra_pids: list = field(default_factory=list)
    # Every process this host's test started or saw ipsecd start: identity → what it was.
    started: dict = field(default_factory=dict)

    def exec(self, cmd, check=True, timeout=60, **kw):
        return run(["ip", "netns", "exec", self.ns] + cmd, check=check, timeout=timeout, **kw)

    def popen(self, cmd, **kw):
        p = subprocess.Popen(["ip", "netns", "exec", self.ns] + cmd, **kw)
        self.extra_pids.append(p)
        self.remember(p.pid, f"{os.path.basename(cmd[0])} started by the test in {self.ns}")
        return p

    def remember(self, pid, what):
        info = proc_info(pid)
        if info:
            self.started.setdefault(info.identity, what)

    def remember_children(self, table=None):
        """Records the descendants of every process started here (ipsecd's run under other uids)."""
        table = table or process_table()
        roots = [pid for (pid, start) in self.started if pid in table and table[pid].start == start]
        for child in descendants(roots, table):
            self.started.setdefault(child.identity, f"{child.name} (uid {uid_of(child.pid)}), "
                                                    f"a child of pid {child.ppid} in {self.ns}")

    def ipsecctl(self, *args):
        r = self.exec([binary("ipsecctl"), "--runtime-dir", self.runtime] + list(args))
        return r.stdout

    def sysctl(self, assignment):
        """Sets a sysctl (NAME=VALUE) and returns once every service applied it.

        ipsecd replies before its services have read the new value; a stats request
        goes down the same control channels after it, so its answer is the barrier."""
        out = self.ipsecctl("sysctl", assignment)
        self.stats()
        return out

    def stats(self):
        """{service: {counter: value}} plus {service + '/sas': [...]}."""
        return json.loads(self.ipsecctl("stats", "--json"))

    def counter(self, name, service="ipsec-forwarder"):
        return self.stats()[service]["counters"][name]

    def audit(self):
        return json.loads(self.ipsecctl("audit", "--json"))

    def pid_of(self, name):
        for p in self.audit():
            if p["name"] == name[:15]:
                return p["pid"]
        raise KeyError(name)

    def wait_for_forwarder_sas(self, count=2, timeout=15, what="the forwarder to have its SAs"):
        """Waits until the forwarder counts `count` SAs (until then it may not answer at all)."""
        wait_for(lambda: self.counter("sas") >= count, timeout, what)

    def kill_forwarder_and_wait_for_its_sas(self, timeout=15):
        """SIGKILLs the forwarder, waits for ipsecd's new one and until that one holds its SAs.

        The new forwarder's pid and children are recorded, so leak checks see them."""
        old = self.pid_of("ipsec-forwarder")
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: self.pid_of("ipsec-forwarder") != old, timeout, f"a new forwarder on {self.side.upper()}")
        self.remember_children()
        self.wait_for_forwarder_sas(timeout=timeout, what="the restarted forwarder to have its SAs")

    def setkey(self, text, *flags):
        path = os.path.join(self.workdir, f"setkey-{time.monotonic_ns()}.conf")
        with open(path, "w") as f:
            f.write(text)
        return self.exec([binary("setkey"), "--socket", os.path.join(self.runtime, "pfkey"), *flags,
                          "-f", path], check=False)


class Testbed:
    """Two namespaces joined by a veth; `with Testbed() as tb:` cleans up and checks for leaks."""

    # How long processes get to exit after ipsecd stopped before they count as leaked.
    LEAK_GRACE = 5

    def __init__(self, tag=None):
        tag = tag or f"{os.getpid() % 100000}"
        self.tmp = tempfile.mkdtemp(prefix="ipsec-test-")
        self.a = Host("a", f"ipsec-{tag}-a", os.path.join(self.tmp, "a"))
        self.b = Host("b", f"ipsec-{tag}-b", os.path.join(self.tmp, "b"))
        self.netns_ids = {}  # (st_dev, st_ino) of each namespace made here → its name
        self.closed = False

    def __enter__(self):
        try:
            self._create()
        except BaseException:
            self.close(raise_leaks=False)
            raise
        return self

    def __exit__(self, exc_type, *_):
        # A test that already failed keeps its own error; its leaks are printed.
        self.close(raise_leaks=exc_type is None)

    @classmethod
    def for_class(cls, test_class, tag=None):
        """A testbed the tests of a unittest class share: made now, closed (and checked for
        leaks) by the class's cleanup, which also runs when setUpClass fails after this."""
        tb = cls(tag)
        tb.__enter__()
        test_class.addClassCleanup(tb.close)
        return tb

    def hosts(self):
        return (self.a, self.b)

    def _create(self):
        for h in self.hosts():
            os.makedirs(h.workdir)
            run(["ip", "netns", "add", h.ns])
            st = os.stat(f"/run/netns/{h.ns}")
            self.netns_ids[(st.st_dev, st.st_ino)] = h.ns
            h.exec(["ip", "link", "set", "lo", "up"])
        run(["ip", "link", "add", "veth-ipsec-a", "netns", self.a.ns, "type", "veth",
             "peer", "name", "veth-ipsec-b", "netns", self.b.ns])
        for h, dev, idx in ((self.a, "veth-ipsec-a", 0), (self.b, "veth-ipsec-b", 1)):
            h.exec(["ip", "addr", "add", f"{OUTER[4][idx]}/24", "dev", dev])
            h.exec(["ip", "-6", "addr", "add", f"{OUTER[6][idx]}/64", "dev", dev, "nodad"])
            h.exec(["ip", "link", "set", dev, "up"])

    def config(self, h, setkey_text="", **extra):
        idx = 0 if h.side == "a" else 1
        h.runtime = os.path.join(h.workdir, "run")
        routes = [INNER_NETS[4][1 - idx], INNER_NETS[6][1 - idx]]
        cfg = {
            "tun_name": "ipsec0",
            "tun_mtu": "1400",
            "tun_addresses": f"{INNER[4][idx]}/32, {INNER[6][idx]}/128",
            "tun_routes": ", ".join(routes),
            "runtime_dir": h.runtime,
        }
        if setkey_text:
            path = os.path.join(h.workdir, "setkey.conf")
            with open(path, "w") as f:
                f.write(setkey_text)
            cfg["setkey_file"] = path
        cfg.update({k: str(v) for k, v in extra.items()})
        path = os.path.join(h.workdir, "ipsecd.conf")
        with open(path, "w") as f:
            for k, v in cfg.items():
                f.write(f"{k} = {v}\n")
        return path

    def start(self, h, setkey_text="", debug=False, ipsecd=None, env=None, **extra):
        """`ipsecd`: another ipsecd binary (its children are beside it); `env`: ipsecd's environment."""
        path = self.config(h, setkey_text, **extra)
        h.log = open(os.path.join(h.workdir, "ipsecd.log"), "w")
        cmd = ["ip", "netns", "exec", h.ns, ipsecd or binary("ipsecd"), "--config", path]
        if debug:
            cmd.append("--debug")
        h.proc = subprocess.Popen(cmd, stdout=h.log, stderr=subprocess.STDOUT, env=env)
        h.remember(h.proc.pid, f"ipsecd in {h.ns}")
        pidfile = os.path.join(h.runtime, "ipsecd.pid")
        # ipsecd writes its pid file once every service said it is ready.
        wait_for(lambda: os.path.exists(pidfile) or h.proc.poll() is not None, 20,
                 lambda: f"ipsecd in {h.ns} to become ready:\n{self.log_text(h)}")
        if h.proc.poll() is not None:
            raise RuntimeError(f"ipsecd in {h.ns} exited ({h.proc.returncode}) before it was ready:\n"
                               f"{self.log_text(h)}")
        h.remember_children()
        return h

    def start_pair(self, alg="aes-gcm", outer=4, **extra):
        sas = sa_lines(alg, outer)
        self.start(self.a, "flush;\nspdflush;\n" + sas + spd_lines("a", outer), **extra)
        self.start(self.b, "flush;\nspdflush;\n" + sas + spd_lines("b", outer), **extra)

    def log_text(self, h):
        try:
            with open(os.path.join(h.workdir, "ipsecd.log")) as f:
                return f.read()
        except OSError:
            return ""

    def stop(self, h, timeout=10):
        """SIGTERM ipsecd and wait; returns its exit status."""
        if not h.proc or h.proc.poll() is not None:
            return h.proc.returncode if h.proc else None
        # `ip netns exec` execs ipsecd, so the Popen pid is ipsecd's own. Its
        # children are recorded first: once it is gone they have no parent to find them by.
        h.remember_children()
        h.proc.send_signal(signal.SIGTERM)
        try:
            return h.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            h.proc.kill()
            return h.proc.wait(5)

    def close(self, raise_leaks=True):
        """Stops everything, checks for leaks, then removes what is left.

        Raises LeakError (after the clean-up) if raise_leaks and something leaked;
        otherwise prints the leaks. Returns the list of leaks."""
        if self.closed:
            return []
        self.closed = True
        leaks = []
        try:
            self._stop_everything()
            leaks = self.leaks_after_stop()
        finally:
            self._remove_everything()
        leaks += [f"namespace {h.ns} still exists" for h in self.hosts() if os.path.exists(f"/run/netns/{h.ns}")]
        if leaks and raise_leaks:
            raise LeakError("the testbed leaked:\n  " + "\n  ".join(leaks))
        if leaks:
            print("the testbed leaked:\n  " + "\n  ".join(leaks), file=sys.stderr)
        return leaks

    def _stop_everything(self):
        for h in self.hosts():
            h.remember_children()
            for p in h.extra_pids:
                if p.poll() is None:
                    p.kill()
                    try:
                        p.wait(5)
                    except subprocess.TimeoutExpired:
                        pass
                for stream in (p.stdin, p.stdout, p.stderr):
                    if stream:
                        stream.close()
            try:
                self.stop(h)
            except Exception:  # noqa: BLE001  (the leak check says what is left)
                pass
            if h.log:
                h.log.close()

    def leaks_after_stop(self):
        """What is left once ipsecd is stopped and the test's own processes killed.

        Ours are the processes recorded while they ran (ipsecd, its children, what the
        test started) and anything in a namespace made here; other tests on this
        machine may hold ring memfds of their own, and are none of these."""
        leaks = []

        def clean():
            nonlocal leaks
            leaks = self._find_leaks()
            return not leaks
        try:
            wait_for(clean, self.LEAK_GRACE, "the testbed's processes to exit")
        except AssertionError:
            pass
        return leaks

    def _find_leaks(self):
        table = process_table()
        started = {ident: what for h in self.hosts() for ident, what in h.started.items()}
        leaks = []
        for info in table.values():
            why = started.get(info.identity)
            ns = self.netns_ids.get(netns_of(info.pid))
            if why is None and ns is None:
                continue
            what = why or f"{info.name} (uid {uid_of(info.pid)}) in namespace {ns}"
            leaks.append(f"pid {info.pid} still alive: {what}")
            held = ring_memfds(info.pid)
            if held:
                leaks.append(f"pid {info.pid} ({info.name}) holds {RING_MEMFD} as {', '.join(held)}")
        held = ring_memfds(os.getpid())
        if held:
            leaks.append(f"the test process holds {RING_MEMFD} as {', '.join(held)}")
        for h in self.hosts():
            if h.runtime and os.path.isdir(h.runtime) and os.listdir(h.runtime):
                leaks.append(f"runtime directory {h.runtime} not empty: {sorted(os.listdir(h.runtime))}")
        return leaks

    def _remove_everything(self):
        for h in self.hosts():
            for ident in h.started:
                if is_alive(ident):
                    try:
                        os.kill(ident[0], signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        for h in self.hosts():
            # Anything still inside the namespace was started by us: by pid.
            r = run(["ip", "netns", "pids", h.ns], check=False)
            for pid in r.stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            run(["ip", "netns", "del", h.ns], check=False)
        if os.environ.get("IPSEC_KEEP_LOGS"):
            print(f"logs kept in {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def ping(src_host, dst_addr, count=3, interval="0.2", timeout=10, extra=()):
    fam = "-6" if ":" in dst_addr else "-4"
    r = src_host.exec(["ping", fam, "-n", "-c", str(count), "-i", interval, "-W", "2", *extra, dst_addr],
                      check=False, timeout=timeout)
    return r


TCP_SERVER = r"""
import hashlib, socket, sys
fam = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1)
print("listening", flush=True)
s.settimeout(30)
c, _ = s.accept(); c.settimeout(30)
h = hashlib.sha256(); n = 0
while True:
    d = c.recv(65536)
    if not d: break
    h.update(d); n += len(d)
c.sendall(f"{n} {h.hexdigest()}".encode()); c.close()
"""

TCP_CLIENT = r"""
import hashlib, os, socket, sys, time
fam = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET
n = int(sys.argv[3]); data = os.urandom(n)
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
t = time.monotonic(); s.sendall(data); s.shutdown(socket.SHUT_WR)
reply = s.recv(200).decode(); dt = time.monotonic() - t
print(reply, hashlib.sha256(data).hexdigest(), n, f"{dt:.3f}")
"""


def transport_config(side):
    """ipsecd settings for transport mode between the veth ends: the peer's
    addresses are transport peers, our own are local addresses."""
    idx = 0 if side == "a" else 1
    return {
        "transport_peers": f"{OUTER[4][1 - idx]}, {OUTER[6][1 - idx]}",
        "local_addresses": f"{OUTER[4][idx]}, {OUTER[6][idx]}",
    }


def transport_setkey(side, proto, spi_ab, spi_ba, keys_ab, keys_ba):
    """setkey text for one transport-mode SA pair per family between the veth
    ends (SPI + 0x10 * family) and the policies that require them; keys_ab and
    keys_ba are the SAs' algorithm arguments, e.g. "-E aes-gcm-16 0x..."."""
    out = ["flush;", "spdflush;"]
    for fam in (4, 6):
        a, b = OUTER[fam]
        out.append(f"add {a} {b} {proto} {spi_ab + 0x10 * fam:#x} -m transport -r 64 {keys_ab};")
        out.append(f"add {b} {a} {proto} {spi_ba + 0x10 * fam:#x} -m transport -r 64 {keys_ba};")
        local, remote = (a, b) if side == "a" else (b, a)
        out.append(f"spdadd {local} {remote} any -P out ipsec {proto}/transport//require;")
        out.append(f"spdadd {remote} {local} any -P in ipsec {proto}/transport//require;")
    return "\n".join(out) + "\n"


def assert_pings_both_ways(test, tb, addresses):
    """Three pings A→B, then B→A, for each family; addresses: INNER (through a
    tunnel) or OUTER (transport mode between the veth ends)."""
    for fam in (4, 6):
        a, b = addresses[fam]
        r = ping(tb.a, b, count=3)
        test.assertEqual(r.returncode, 0, f"ping A→B v{fam}: {r.stdout}{r.stderr}\n{tb.log_text(tb.a)}")
        r = ping(tb.b, a, count=3)
        test.assertEqual(r.returncode, 0, f"ping B→A v{fam}: {r.stdout}{r.stderr}\n{tb.log_text(tb.b)}")


def assert_no_drops(test, side, counters, allowed=(), also=()):
    """No drop counter in a forwarder's `counters` ({name: value}) moved, but those `allowed`
    and out_drop_no_policy: the kernel's own IPv6 link-local chatter on the TUN (router
    solicitations, MLD) matches no policy. The counters named in `also` stay 0 too."""
    for k, v in counters.items():
        if "drop" in k and k != "out_drop_no_policy" and k not in allowed or k in also:
            test.assertEqual(v, 0, f"{side}: {k} = {v}")


def check_inner_traffic(test, tb):
    """Ping both ways over both inner families, then TCP both ways (IPv4) and
    A to B (IPv6), contents checked: what every tunnel pair must carry."""
    assert_pings_both_ways(test, tb, INNER)
    tcp_transfer(tb.a, tb.b, INNER[4][1], nbytes=2 << 20)
    tcp_transfer(tb.b, tb.a, INNER[4][0], nbytes=2 << 20, port=5002)
    tcp_transfer(tb.a, tb.b, INNER[6][1], nbytes=1 << 20, port=5003)


def tcp_transfer(client, server, server_addr, nbytes=4 << 20, port=5001):
    """Sends nbytes over TCP through the tunnel; returns seconds taken. Raises if corrupted."""
    srv = server.popen(["/usr/bin/python3", "-c", TCP_SERVER, server_addr, str(port)],
                       stdout=subprocess.PIPE, text=True)
    line = srv.stdout.readline()
    if "listening" not in line:
        raise RuntimeError("TCP server did not start")
    r = client.exec(["/usr/bin/python3", "-c", TCP_CLIENT, server_addr, str(port), str(nbytes)], timeout=60)
    srv.wait(10)
    srv.stdout.close()
    got, got_hash, sent_hash, n, secs = r.stdout.split()
    if int(got) != nbytes or got_hash != sent_hash:
        raise AssertionError(f"TCP transfer corrupted: {r.stdout}")
    return float(secs)
