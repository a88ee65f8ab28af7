"""The peers of the comparison benchmark (bench/compare.py): strongSwan's charon with
kernel-libipsec, and wireguard-go, one instance in each Testbed namespace.

Debian 12's packages, installed by `scripts/setup --bench`. Each instance gets
its own configuration in the Testbed's work directory and is started by the
benchmark with `Host.popen` (so it is stopped by pid, at the latest when the
Testbed closes), never as a service:

- charon runs in a mount namespace of its own (unshare -m) with a tmpfs over
  /run, so that the two instances' pid files do not meet; STRONGSWAN_CONF names
  a generated strongswan.conf that loads only the plugins needed (kernel-libipsec
  for the data path, kernel-netlink for routes and addresses, openssl for
  AES-GCM and the IKE crypto) and puts the vici socket in the work directory,
  where swanctl reaches it. kernel-libipsec sends ESP in UDP on charon's own
  port 4500 (Debian's 5.9.8 has no raw ESP) through a TUN device, and routes the
  remote traffic selector to it from table 220. The inner addresses are on lo.
- wireguard-go runs in the foreground (-f) with an interface name carrying the
  run's tag: its UAPI socket is /var/run/wireguard/<name>.sock on the shared
  file system. The keys are made with `wg genkey` for this run and stay in the
  work directory.

The PSK and the WireGuard keys are throw-away secrets of one benchmark run.
"""

import os
import secrets
import signal
import subprocess

from harness import INNER, OUTER, wait_for

CHARON = "/usr/lib/ipsec/charon"

STRONGSWAN_CONF = """\
charon {{
  load_modular = no
  load = random nonce openssl kdf pem pkcs1 x509 pubkey hmac sha1 sha2 aes gmp kernel-libipsec kernel-netlink socket-default vici
  install_virtual_ip = no
  filelog {{
    stderr {{
      default = 1
      ike = 1
      time_format = %H:%M:%S
    }}
  }}
  plugins {{
    vici {{
      socket = unix://{vici}
    }}
  }}
}}
"""

SWANCTL_CONF = """\
connections {{
  bench {{
    version = 2
    local_addrs = {local}
    remote_addrs = {remote}
    encap = yes
    proposals = aes128gcm16-prfsha256-ecp256
    local {{
      auth = psk
      id = {local_id}
    }}
    remote {{
      auth = psk
      id = {remote_id}
    }}
    children {{
      bench {{
        local_ts = {local_ts}/32
        remote_ts = {remote_ts}/32
        esp_proposals = aes128gcm16
        mode = tunnel
        start_action = none
      }}
    }}
  }}
}}
secrets {{
  ike-bench {{
    id-a = a.bench.example
    id-b = b.bench.example
    secret = 0x{psk}
  }}
}}
"""


def start_daemon(h, argv, sock, what, timeout, log=lambda: "", **popen_kw):
    """Starts a peer daemon in h's namespace and waits until `sock` exists;
    raises with `log()` if it exits first or the socket never comes."""
    p = h.popen(argv, **popen_kw)
    wait_for(lambda: os.path.exists(sock) or p.poll() is not None, timeout,
             lambda: f"{what} in {h.ns} to open {sock}:\n{log()}")
    if p.poll() is not None:
        raise RuntimeError(f"{what} in {h.ns} exited ({p.returncode}):\n{log()}")
    return p


def stop_process(p, timeout=5):
    """SIGTERM, then SIGKILL at the timeout, of a process the benchmark started."""
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout)


class Peer:
    """What the two peers share: one process per host, by side, and the inner
    addresses the benchmark measures between."""

    def __init__(self, tb, tag):
        self.tb, self.tag = tb, tag
        self.src, self.dst = INNER[4]
        self.procs = {}

    def pids(self):
        return [p.pid for p in self.procs.values() if p.poll() is None]

    def stop_daemon(self, h):
        p = self.procs.pop(h.side, None)
        if p:
            stop_process(p)


class StrongSwan(Peer):
    name, needs = "strongswan", (CHARON, "swanctl")

    def workdir(self, h):
        d = os.path.join(h.workdir, "strongswan")
        os.makedirs(d, exist_ok=True)
        return d

    def configure(self, h, psk):
        d = self.workdir(h)
        idx = 0 if h.side == "a" else 1
        with open(os.path.join(d, "strongswan.conf"), "w") as f:
            f.write(STRONGSWAN_CONF.format(vici=os.path.join(d, "charon.vici")))
        with open(os.path.join(d, "swanctl.conf"), "w") as f:
            f.write(SWANCTL_CONF.format(local=OUTER[4][idx], remote=OUTER[4][1 - idx],
                                        local_id=f"{h.side}.bench.example",
                                        remote_id=f"{'b' if h.side == 'a' else 'a'}.bench.example",
                                        local_ts=INNER[4][idx], remote_ts=INNER[4][1 - idx], psk=psk))
        os.chmod(os.path.join(d, "swanctl.conf"), 0o600)

    def swanctl(self, h, *args, timeout=20):
        uri = "unix://" + os.path.join(self.workdir(h), "charon.vici")
        r = h.exec(["swanctl", *args, "--uri", uri], check=False, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"swanctl {args[0]} in {h.ns}: {(r.stdout + r.stderr).strip()[-400:]}\n"
                               f"{self.log(h)}")
        return r.stdout

    def log(self, h):
        try:
            with open(os.path.join(self.workdir(h), "charon.log")) as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def start(self):
        psk = secrets.token_hex(32)
        for h in self.tb.hosts():
            idx = 0 if h.side == "a" else 1
            h.exec(["ip", "addr", "add", f"{INNER[4][idx]}/32", "dev", "lo"])
            self.configure(h, psk)
            d = self.workdir(h)
            # unshare and sh exec in turn: the Popen pid is charon's own.
            script = ('mount -t tmpfs -o mode=755 tmpfs /run && '
                      f'STRONGSWAN_CONF={d}/strongswan.conf exec {CHARON}')
            with open(os.path.join(d, "charon.log"), "w") as log:
                self.procs[h.side] = start_daemon(
                    h, ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                    os.path.join(d, "charon.vici"), "charon", 20, log=lambda h=h: self.log(h),
                    stdout=log, stderr=subprocess.STDOUT)
            h.remember_children()
            self.swanctl(h, "--load-all", "--noprompt", "--file", os.path.join(d, "swanctl.conf"))
        self.swanctl(self.tb.a, "--initiate", "--child", "bench", "--timeout", "15")

    def stop(self):
        for h in self.tb.hosts():
            self.stop_daemon(h)
            idx = 0 if h.side == "a" else 1
            h.exec(["ip", "addr", "del", f"{INNER[4][idx]}/32", "dev", "lo"], check=False)


class WireguardGo(Peer):
    name, needs = "wireguard-go", ("wireguard-go", "wg")
    PORT = 51820

    def keys(self, h):
        private = h.exec(["wg", "genkey"], timeout=10).stdout.strip()
        public = subprocess.run(["wg", "pubkey"], input=private, capture_output=True, text=True, check=True,
                                timeout=10).stdout.strip()
        path = os.path.join(h.workdir, "wg.key")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(private + "\n")
        return path, public

    def ifname(self, h):
        """wg<tag><side>: the two UAPI sockets share /var/run/wireguard, so the names differ."""
        return f"wg{self.tag[-12:]}{h.side}"

    def start(self):
        keys = {h.side: self.keys(h) for h in self.tb.hosts()}
        for h in self.tb.hosts():
            idx = 0 if h.side == "a" else 1
            ifname = self.ifname(h)
            other = "b" if h.side == "a" else "a"
            self.procs[h.side] = start_daemon(
                h, ["wireguard-go", "-f", ifname], f"/var/run/wireguard/{ifname}.sock", "wireguard-go", 10,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env={**os.environ, "WG_PROCESS_FOREGROUND": "1"})
            h.exec(["wg", "set", ifname, "private-key", keys[h.side][0], "listen-port", str(self.PORT),
                    "peer", keys[other][1], "allowed-ips", f"{INNER[4][1 - idx]}/32",
                    "endpoint", f"{OUTER[4][1 - idx]}:{self.PORT}"], timeout=10)
            h.exec(["ip", "addr", "add", f"{INNER[4][idx]}/32", "dev", ifname])
            h.exec(["ip", "link", "set", ifname, "up"])
            h.exec(["ip", "route", "add", f"{INNER[4][1 - idx]}/32", "dev", ifname])

    def stop(self):
        for h in self.tb.hosts():
            self.stop_daemon(h)
            # wireguard-go removes its interface and socket when it exits; a killed one may not.
            h.exec(["ip", "link", "del", self.ifname(h)], check=False)
            try:
                os.unlink(f"/var/run/wireguard/{self.ifname(h)}.sock")
            except OSError:
                pass
