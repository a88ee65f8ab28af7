"""Comparison benchmark: ipsecd against the plain veth, strongSwan and wireguard-go, in one run.

Run by scripts/bench as root with /usr/bin/python3 (namespaces); issue 13's
"Benchmark" section. One Testbed (tests/integration/harness.py): namespaces A
and B joined by one veth, 192.0.2.1 <-> 192.0.2.2, no default route. The paths
are measured one after the other on that same veth, each tunnel started, measured
and stopped before the next (only one runs at a time):

  veth                 A 192.0.2.1 -> B 192.0.2.2, nothing of ours in the path (the ceiling)
  ipsecd esp gcm       ESP tunnel SAs (setkey), AES-GCM-128          198.51.100.1 -> 203.0.113.1
  ipsecd esp chacha    the same, ChaCha20-Poly1305
  ipsecd udp gcm       ESP in UDP (RFC 3948, port 4500 both ends), AES-GCM-128
  ipsecd udp chacha    the same, ChaCha20-Poly1305
  strongswan           two charon instances with kernel-libipsec (ESP in UDP, encap = yes,
                       aes128gcm16), IKEv2 with a PSK between them
  wireguard-go         Debian's wireguard-go, ChaCha20-Poly1305, configured with wg

Each path is measured with: ping (20 at 10 ms spacing; 5 one second apart), idle CPU
of the tunnel's processes over a few seconds with nothing flowing, iperf3 TCP with
1 and 4 streams A -> B, and the highest rate of 64-byte UDP datagrams B receives at
<= 1 % loss, found by a search over offered rates with bench/udpgen (a paced
sendmmsg sender in A, 16 datagrams a message cut by UDP_SEGMENT unless
--udp-gso says otherwise; a recvmmsg counting receiver in B). CPU seconds per GB: utime +
stime (/proc/<pid>/stat) of every process of the tunnel at both ends (ipsecd and
its four children per host; charon; wireguard-go) over the two TCP runs, divided
by the bytes B received. At the end, one table of figures with each ratio to the
veth, and one of each ipsecd path's ratios to each peer.

Everything started here is bounded by a timeout, stopped by pid, and the
namespaces are removed by the Testbed (also on failure or SIGTERM). Never fails on
timing: the exit status is non-zero only when the veth or an ipsecd path could
not be measured; a peer that is not installed (scripts/setup --bench) is skipped
and said.
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "integration"))
sys.path.insert(0, HERE)

from harness import (INNER, OUTER, SPI_AB, SPI_BA, Testbed, binary, descendants, ping,  # noqa: E402
                     process_table, spd_lines)
import peers  # noqa: E402
from measure import (cpu_by_process, cpu_spent_by_name, idle_report, iperf_tcp, ping_avg,  # noqa: E402
                     sched_by_process, udp_search)

CLAUSES = {  # setkey algorithm clause per direction (two different keys)
    "gcm": ("-E aes-gcm-16 0x" + "5a" * 20, "-E aes-gcm-16 0x" + "a5" * 20),
    "chacha": ("-E chacha20-poly1305 0x" + "5a" * 36, "-E chacha20-poly1305 0x" + "a5" * 36),
}


class Plan:
    """How long each measurement takes; --quick shortens every one of them."""

    def __init__(self, quick, seconds, udp_step, udp_gso):
        self.tcp_seconds = seconds or (2 if quick else 10)
        self.udp_step = udp_step or (0.5 if quick else 1.0)
        self.udp_steps = 6 if quick else 9
        self.pause_pings = 3 if quick else 5
        self.idle_seconds = 2 if quick else 5
        self.udp_gso = udp_gso

    def path_seconds(self, tunnel=True):
        """At most this long: a search that ends early, and most do, takes less."""
        udp = self.udp_steps * (self.udp_step + 0.5)
        pings = 0.3 + self.pause_pings + 0.5
        return 2 * (self.tcp_seconds + 1) + udp + pings + self.idle_seconds + (3 if tunnel else 0)


# --- The paths ------------------------------------------------------------------

class Veth:
    name, needs = "veth", ()

    def __init__(self, tb):
        self.tb = tb
        self.src, self.dst = OUTER[4]

    def start(self):
        pass

    def pids(self):
        return []

    def stop(self):
        pass


class Ipsecd(Veth):
    """Two ipsecd instances from the harness; SAs and policies from a setkey file."""

    def __init__(self, tb, encap, alg):
        super().__init__(tb)
        self.name = f"ipsecd {encap} {alg}"
        self.encap, self.alg = encap, alg
        self.src, self.dst = INNER[4]

    def sa_text(self):
        a, b = OUTER[4]
        ab, ba = CLAUSES[self.alg]
        if self.encap == "udp":
            return (f"add {a}[4500] {b}[4500] esp-udp {SPI_AB:#x} -m tunnel -r 64 {ab};\n"
                    f"add {b}[4500] {a}[4500] esp-udp {SPI_BA:#x} -m tunnel -r 64 {ba};\n")
        return (f"add {a} {b} esp {SPI_AB:#x} -m tunnel -r 64 {ab};\n"
                f"add {b} {a} esp {SPI_BA:#x} -m tunnel -r 64 {ba};\n")

    def start(self):
        # IPSEC_BENCH_CONFIG="key=value,...": extra ipsecd.conf lines for both
        # ends (e.g. tun_offload=no, crypto_workers=2), to compare settings.
        extra = dict(kv.split("=", 1) for kv in os.environ.get("IPSEC_BENCH_CONFIG", "").split(",") if kv)
        for h in self.tb.hosts():
            self.tb.start(h, "flush;\nspdflush;\n" + self.sa_text() + spd_lines(h.side, 4), **extra)

    def pids(self):
        table = process_table()
        roots = [h.proc.pid for h in self.tb.hosts() if h.proc and h.proc.poll() is None]
        return roots + [p.pid for p in descendants(roots, table)]

    def stop(self):
        for h in self.tb.hosts():
            self.tb.stop(h)
            if h.log:
                h.log.close()  # the next ipsecd path opens its own

    def counters(self):
        """A's forwarder counters that tell a drop from a slow path (a bonus, not a figure)."""
        try:
            c = self.tb.a.stats()["ipsec-forwarder"]["counters"]
        except Exception as e:  # noqa: BLE001
            return f"no counters: {e}"
        drops = {k: v for k, v in c.items() if "drop" in k and v}
        return (f"A's forwarder: esp_out_packets {c.get('esp_out_packets')}, of which in UDP "
                f"{c.get('natt_out_esp_packets')}, in {c.get('out_multi_segment_requests')} multi-segment "
                f"requests {c.get('out_multi_segment_segments')}, written to the TUN as "
                f"{c.get('tun_out_super_packets')} super-packets {c.get('tun_out_coalesced')}, on the packet socket "
                f"{c.get('out_packet_socket')} (next-hop misses {c.get('next_hop_misses')}), drops {drops or 'none'}")


# --- Measuring one path ------------------------------------------------------------

def wait_path(path, tries=20):
    """The path carries a ping A -> B within `tries` seconds (IKE and ARP included)."""
    for _ in range(tries):
        if ping(path.tb.a, path.dst, count=1, timeout=5).returncode == 0:
            return True
        time.sleep(0.3)
    return False


def measure(path, plan, udpgen):
    """Every figure of one path, printed as it comes; returns {figure: value}."""
    tb, fig = path.tb, {}
    say = lambda text: print(f"  {path.name}: {text}", flush=True)  # noqa: E731
    fig["ping"] = ping_avg(tb.a, path.dst, 20, "0.01")
    fig["ping_pause"] = ping_avg(tb.a, path.dst, plan.pause_pings, "1")
    say(f"ping avg {fig['ping']} ms (10 ms apart), {fig['ping_pause']} ms (1 s apart)")
    pids = path.pids()
    if pids:
        time.sleep(0.5)  # the last echo's completions and timers settle
        before = sched_by_process(pids)
        time.sleep(plan.idle_seconds)
        fig["idle_cpu_ms"], fig["idle_wakeups"], split = idle_report(before, sched_by_process(pids),
                                                                     plan.idle_seconds)
        say(f"idle: {fig['idle_cpu_ms']:.3f} ms of CPU and {fig['idle_wakeups']:.1f} wake-ups per s "
            f"({len(pids)} processes, every thread; wake-ups/s by process: {split})")
    cpu0, received = cpu_by_process(pids), 0
    for streams in (1, 4):
        gbps, nbytes, retr = iperf_tcp(tb.a, tb.b, path.dst, 5201, plan.tcp_seconds, streams)
        fig[f"tcp{streams}"] = gbps
        received += nbytes
        say(f"TCP {streams} stream{'s' if streams > 1 else ''} {gbps:.2f} Gbit/s ({retr} retransmits)")
    if pids and received:
        cpu1 = cpu_by_process(pids)
        spent = sum(secs for _, secs in cpu1.values()) - sum(secs for _, secs in cpu0.values())
        fig["cpu_per_gb"] = spent / (received / 1e9)
        say(f"CPU {fig['cpu_per_gb']:.2f} s per GB received (both ends, {len(pids)} processes: "
            f"{cpu_spent_by_name(cpu0, cpu1)})")
    best, top, limited = udp_search(tb.a, tb.b, path.dst, udpgen, plan.udp_step, plan.udp_steps,
                                    lambda text: say("  " + text), plan.udp_gso)
    fig["udp_kpps"], fig["udp_top_kpps"], fig["udp_generator_limit"] = best / 1e3, top / 1e3, limited
    say(f"UDP 64 B: {best / 1e3:.1f} kpps at <= 1 % loss (most received at any rate {top / 1e3:.1f} kpps"
        f"{'; the generator could not offer more' if limited else ''})")
    if isinstance(path, Ipsecd):
        say(path.counters())
    return fig


def run_path(path, plan, udpgen):
    path.start()
    try:
        if not wait_path(path):
            raise RuntimeError(f"{path.name} does not carry ping {path.src} -> {path.dst}")
        return measure(path, plan, udpgen)
    finally:
        path.stop()


# --- Report ---------------------------------------------------------------------------

COLUMNS = [("tcp1", "TCP 1 Gbit/s", "{:.2f}"), ("tcp4", "TCP 4 Gbit/s", "{:.2f}"),
           ("udp_kpps", "64 B kpps", "{:.1f}"), ("ping", "ping ms", "{:.3f}"),
           ("ping_pause", "ping 1 s ms", "{:.3f}"), ("cpu_per_gb", "CPU s/GB", "{:.2f}"),
           ("idle_cpu_ms", "idle ms/s", "{:.3f}"), ("idle_wakeups", "idle wakeups/s", "{:.1f}")]
HIGHER_IS_BETTER = {"tcp1", "tcp4", "udp_kpps"}


def cell(fig, key, fmt, base=None):
    v = fig.get(key)
    if v is None:
        return "n/a"
    text = fmt.format(v)
    if key == "udp_kpps" and fig.get("udp_generator_limit"):
        text += "g"
    if base is not None and base.get(key) and key in ("tcp1", "tcp4", "udp_kpps"):
        text += f" ({v / base[key]:.2f})"
    elif base is not None and base.get(key) is not None and key in ("ping", "ping_pause"):
        text += f" ({v - base[key]:+.3f})"
    return text


def print_table(rows, errors):
    base = rows.get("veth", {})
    print("\nfigures (in parentheses: throughput as a share of the veth's, ping as ms above the veth's)")
    widths = [20] + [max(16, len(c[1]) + 2) for c in COLUMNS]
    print("".join(h.ljust(w) for h, w in zip(["path"] + [c[1] for c in COLUMNS], widths)))
    for name, fig in rows.items():
        cells = [name] + [cell(fig, k, f, None if name == "veth" else base) for k, f in
                          ((c[0], c[2]) for c in COLUMNS)]
        print("".join(c.ljust(w) for c, w in zip(cells, widths)))
    for name, why in errors.items():
        print(f"{name.ljust(20)}no figures: {why}")
    if any(fig.get("udp_generator_limit") for fig in rows.values()):
        print("g: udpgen could not offer more; the path carried all it sent (the generator's limit, not the path's)")
    peer_rows = [n for n in ("strongswan", "wireguard-go") if n in rows]
    if not peer_rows or not any(n.startswith("ipsecd") for n in rows):
        return
    print("\nipsecd / peer (> 1 is ipsecd ahead for throughput; < 1 is ipsecd ahead for ping and CPU)")
    keys = ["tcp1", "tcp4", "udp_kpps", "ping", "ping_pause", "cpu_per_gb"]
    print("".join(h.ljust(w) for h, w in zip(["path", "peer"] + keys, [20, 14] + [12] * len(keys))))
    for name, fig in rows.items():
        if not name.startswith("ipsecd"):
            continue
        for peer in peer_rows:
            cells = [name, peer]
            for k in keys:
                a, b = fig.get(k), rows[peer].get(k)
                cells.append(f"{a / b:.2f}" if a is not None and b else "n/a")
            print("".join(c.ljust(w) for c, w in zip(cells, [20, 14] + [12] * len(keys))))


# --- Main -------------------------------------------------------------------------------

def make_paths(tb, wanted, tag):
    paths = [Veth(tb)]
    for encap in ("esp", "udp"):
        for alg in ("gcm", "chacha"):
            paths.append(Ipsecd(tb, encap, alg))
    paths += [peers.StrongSwan(tb, tag), peers.WireguardGo(tb, tag)]
    return [p for p in paths if not wanted or p.name in wanted or p.name.split()[0] in wanted]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short measurements: the whole run in about 2 minutes")
    ap.add_argument("--seconds", type=float, help="iperf3 duration of each TCP run (default 10, --quick 2)")
    ap.add_argument("--udp-step", type=float,
                    help="seconds per offered rate of the UDP search (default 1, --quick 0.5)")
    ap.add_argument("--udp-gso", type=int, default=16, metavar="N",
                    help="udpgen sends N datagrams per message with UDP_SEGMENT (default 16; 1: plain sendmmsg, "
                    "about a third of the rate the veth then carries here)")
    ap.add_argument("--only", default="", help="comma-separated paths (veth, ipsecd, 'ipsecd esp gcm', strongswan, "
                    "wireguard-go); the veth is always measured")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    plan = Plan(args.quick, args.seconds, args.udp_step, args.udp_gso)
    wanted = {w.strip() for w in args.only.split(",") if w.strip()}
    wanted = wanted | {"veth"} if wanted else wanted
    udpgen = binary("udpgen")
    tag = f"cmp{os.getpid() % 100000}"
    rows, errors, failed = {}, {}, False
    started = time.monotonic()
    with Testbed(tag=tag) as tb:
        paths = make_paths(tb, wanted, tag)
        estimate = sum(plan.path_seconds(p.name != "veth") for p in paths)
        print(f"comparison: {len(paths)} path{'s' if len(paths) != 1 else ''}, at most about {estimate / 60:.1f} minutes "
              f"(TCP {plan.tcp_seconds} s x 2, UDP search {plan.udp_steps} x {plan.udp_step} s, "
              f"{plan.pause_pings} pings 1 s apart, idle {plan.idle_seconds} s"
              f", udpgen --gso {plan.udp_gso})", flush=True)
        for path in paths:
            missing = [n for n in path.needs if not shutil.which(n) and not os.path.exists(n)]
            if missing:
                errors[path.name] = f"not installed ({', '.join(missing)}): run scripts/setup --bench"
                print(f"{path.name}: skipped, {errors[path.name]}", flush=True)
                continue
            print(f"{path.name}: {path.src} -> {path.dst}", flush=True)
            try:
                rows[path.name] = run_path(path, plan, udpgen)
            except (RuntimeError, OSError, ValueError, subprocess.SubprocessError, AssertionError) as e:
                why = f"{e} {getattr(e, 'stderr', '') or ''}".strip()
                errors[path.name] = why.splitlines()[0] if why else type(e).__name__
                print(f"{path.name}: no figures: {why}", flush=True)
                failed |= path.name.split()[0] in ("veth", "ipsecd")
    print_table(rows, errors)
    print(f"\none run on a shared machine: read ratios, not absolute figures "
          f"(took {(time.monotonic() - started) / 60:.1f} minutes)")
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ncompare: interrupted; cleaned up", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # noqa: BLE001
        print(f"compare: {e}", file=sys.stderr)
        sys.exit(1)
