"""Test bed for multi-process tests: real ipsecd instances in network namespaces.

Two hosts, A and B, each a network namespace made by this module and joined
by a veth pair. Addresses are documentation ranges only:

  outer (the veth)      A 192.0.2.1/24, 2001:db8:1::1/64   B 192.0.2.2/24, 2001:db8:1::2/64
  inner (the TUN)       A 198.51.100.1, 2001:db8:a::1      B 203.0.113.1, 2001:db8:b::1

There is no default route anywhere. Everything started here is stopped by
pid, and the namespaces are deleted, also when a test fails or is interrupted.
Used by the integration and interop tests and by the demo (scripts/demo).
"""

import json
import os
import shutil
import signal
import subprocess
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


def spd_lines(side, outer, inner_families=(4, 6)):
    """Tunnel policies for host side 'a' or 'b' protecting both inner families."""
    a, b = OUTER[outer]
    local, remote = (a, b) if side == "a" else (b, a)
    out = []
    for fam in inner_families:
        na, nb = INNER_NETS[fam]
        lnet, rnet = (na, nb) if side == "a" else (nb, na)
        out.append(f"spdadd {lnet} {rnet} any -P out ipsec esp/tunnel/{local}-{remote}/require;")
        out.append(f"spdadd {rnet} {lnet} any -P in ipsec esp/tunnel/{remote}-{local}/require;")
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

    def exec(self, cmd, check=True, timeout=60, **kw):
        return run(["ip", "netns", "exec", self.ns] + cmd, check=check, timeout=timeout, **kw)

    def popen(self, cmd, **kw):
        p = subprocess.Popen(["ip", "netns", "exec", self.ns] + cmd, **kw)
        self.extra_pids.append(p)
        return p

    def ipsecctl(self, *args):
        r = self.exec([binary("ipsecctl"), "--runtime-dir", self.runtime] + list(args))
        return r.stdout

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

    def setkey(self, text, *flags):
        path = os.path.join(self.workdir, f"setkey-{time.monotonic_ns()}.conf")
        with open(path, "w") as f:
            f.write(text)
        return self.exec([binary("setkey"), "--socket", os.path.join(self.runtime, "pfkey"), *flags,
                          "-f", path], check=False)


class Testbed:
    """Two namespaces joined by a veth; `with Testbed() as tb:` cleans up."""

    def __init__(self, tag=None):
        tag = tag or f"{os.getpid() % 100000}"
        self.tmp = tempfile.mkdtemp(prefix="ipsec-test-")
        self.a = Host("a", f"ipsec-{tag}-a", os.path.join(self.tmp, "a"))
        self.b = Host("b", f"ipsec-{tag}-b", os.path.join(self.tmp, "b"))

    def __enter__(self):
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()

    def hosts(self):
        return (self.a, self.b)

    def _create(self):
        for h in self.hosts():
            os.makedirs(h.workdir)
            run(["ip", "netns", "add", h.ns])
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

    def start(self, h, setkey_text="", debug=False, **extra):
        path = self.config(h, setkey_text, **extra)
        h.log = open(os.path.join(h.workdir, "ipsecd.log"), "w")
        cmd = ["ip", "netns", "exec", h.ns, binary("ipsecd"), "--config", path]
        if debug:
            cmd.append("--debug")
        h.proc = subprocess.Popen(cmd, stdout=h.log, stderr=subprocess.STDOUT)
        pidfile = os.path.join(h.runtime, "ipsecd.pid")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if os.path.exists(pidfile):
                return h
            if h.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"ipsecd in {h.ns} did not become ready:\n{self.log_text(h)}")

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
        # `ip netns exec` execs ipsecd, so the Popen pid is ipsecd's own.
        h.proc.send_signal(signal.SIGTERM)
        try:
            return h.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            h.proc.kill()
            return h.proc.wait(5)

    def close(self):
        for h in self.hosts():
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
            except Exception:
                pass
            if h.log:
                h.log.close()
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
