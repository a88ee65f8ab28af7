"""Where a ping's time through the tunnel goes, stage by stage (issue 13 item 4).

Run as root with /usr/bin/python3 (namespaces, perf). It brings up the two-end
ipsecd tunnel the way bench/compare.py does ("ipsecd esp gcm": ESP tunnel SAs,
AES-GCM-128, IPv4, on the integration harness's Testbed), then runs 20 pings
10 ms apart and --pause-pings pings 1 s apart from A's inner address to B's
under `perf record -a` of the scheduler's sched_switch and sched_waking
tracepoints and of the syscalls our threads make (raw_syscalls:sys_enter and
sys_exit, filtered to their tids), and rebuilds each round trip from them:

  t0   ping (in A) sends: the first thread of ours it wakes (A's forwarder,
       blocked on the TUN), or ping's going to sleep if none was asleep;
  ...  every wake-up of an ipsecd thread (which thread woke it, how long it
       waited between being woken and running: the wake-up delay) and every run
       of one (on which CPU, for how long, how it ended: slept or preempted,
       and the syscalls it made: a read of the TUN, the doorbell's write, a
       sched_yield of a polling loop), A's and B's forwarder and crypto broker
       threads, named from ipsecd's children's pids;
  t1   ping is woken by the echo reply (A's forwarder writing it into the TUN).

Both sets run once without perf first: their median RTT, beside the traced
one, says what the tracing itself adds. For the typical round trip of each set
(the one with the median t1 - t0) it prints that chain, and for every set the
totals: the sum of wake-up delays, of waits after preemptions and of the
threads' run times (the kernel's work done in a thread's context, the veth and
the TUN, is its run time) and t1 - t0 beside ping's own RTT, plus the hops
(waker -> woken) with their count and delays, and each thread's run time and
syscalls per round trip. --pin CPU first puts every ipsecd thread on one CPU.

Trust: a benchmark run by root on the test bed it makes; it reads only perf's
text, /proc and ping's output. Bounded: every process started here has a
timeout and is stopped by pid (perf with SIGINT); the Testbed removes the
namespaces and stops ipsecd (also on failure or SIGTERM). Never fails on
timing: non-zero only if the tunnel or perf could not be run.
"""

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(os.path.dirname(BENCH), "tests", "integration"))
sys.path.insert(0, BENCH)

from harness import Testbed, descendants, process_table  # noqa: E402
import compare  # noqa: E402

EVENT = re.compile(r"^\s*(?P<comm>.*?)\s+(?P<tid>\d+)\s+\[(?P<cpu>\d+)\]\s+(?P<t>[\d.]+):\s+"
                   r"(?:sched|raw_syscalls):(?P<ev>\w+):\s+(?P<rest>.*)$")
SYSCALL = re.compile(r"NR (?P<nr>\d+) ")
# x86_64 numbers of the syscalls our threads make on the data path; others print as "nrN".
SYSCALL_NAMES = {0: "read", 1: "write", 7: "poll", 16: "ioctl", 19: "readv", 20: "writev", 24: "sched_yield",
                 44: "sendto", 45: "recvfrom", 46: "sendmsg", 47: "recvmsg", 202: "futex", 230: "clock_nanosleep",
                 232: "epoll_wait", 233: "epoll_ctl", 270: "pselect6", 271: "ppoll", 281: "epoll_pwait",
                 299: "recvmmsg", 307: "sendmmsg", 441: "epoll_pwait2"}
SWITCH = re.compile(r"prev_comm=(?P<pc>.*) prev_pid=(?P<pp>\d+) prev_prio=\d+ prev_state=(?P<ps>\S+) ==> "
                    r"next_comm=(?P<nc>.*) next_pid=(?P<np>\d+) next_prio=\d+")
WAKING = re.compile(r"comm=(?P<c>.*) pid=(?P<p>\d+) prio=\d+ target_cpu=(?P<cpu>\d+)")
ENDS = {"S": "then slept", "R": "then preempted", "D": "then blocked"}
PING_TIME = re.compile(r"icmp_seq=(\d+) .*time=([\d.]+) ms")


# --- Threads and events -------------------------------------------------------------

def name_threads(tb):
    """{tid: 'A forwarder'}: every thread of ipsecd and its children at both ends."""
    names, table = {}, process_table()
    for h in tb.hosts():
        roots = [h.proc.pid]
        for pid in roots + [p.pid for p in descendants(roots, table)]:
            try:
                with open(f"/proc/{pid}/comm") as f:
                    proc = f.read().strip().removeprefix("ipsec-")
                tids = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
            except OSError:
                continue
            others = [t for t in tids if t != pid]
            names[pid] = f"{h.side.upper()} {proc}"
            for k, tid in enumerate(others):
                role = "worker" if proc == "crypto" else f"thread{k + 1}"
                names[tid] = f"{h.side.upper()} {proc} {role}{'' if len(others) == 1 else k}"
    return names


def parse_events(text, wanted):
    """[(t_us, kind, fields)] of the events touching a wanted tid, in time order.
    kind 'in'/'out' (tid switched in/out on cpu), 'waking' (tid woken by waker),
    'syscall' (tid entered a syscall: its name)."""
    out = []
    for line in text.splitlines():
        m = EVENT.match(line)
        if not m:
            continue
        t, cpu, ctx = float(m["t"]) * 1e6, int(m["cpu"]), int(m["tid"])
        if m["ev"] == "sched_switch":
            s = SWITCH.search(m["rest"])
            if not s:
                continue
            prev, nxt = int(s["pp"]), int(s["np"])
            if prev in wanted:
                out.append((t, "out", {"tid": prev, "cpu": cpu, "state": s["ps"]}))
            if nxt in wanted:
                out.append((t, "in", {"tid": nxt, "cpu": cpu}))
        elif m["ev"] == "sys_enter":
            c = SYSCALL.search(m["rest"])
            if c and ctx in wanted:
                nr = int(c["nr"])
                out.append((t, "syscall", {"tid": ctx, "name": SYSCALL_NAMES.get(nr, f"nr{nr}")}))
        elif m["ev"] == "sys_exit" and ctx in wanted:
            out.append((t, "sysexit", {"tid": ctx}))
        elif m["ev"] == "sched_waking":
            w = WAKING.search(m["rest"])
            if w and int(w["p"]) in wanted:
                out.append((t, "waking", {"tid": int(w["p"]), "waker": ctx, "waker_comm": m["comm"].strip(),
                                          "cpu": cpu}))
    out.sort(key=lambda e: e[0])
    return out


# --- Round trips ------------------------------------------------------------------------

class RoundTrip:
    """One echo request and reply: the chain of wake-ups and runs between t0 and t1."""

    def __init__(self, t0, t1, ping_woken_run):
        self.t0, self.t1 = t0, t1
        self.ping_delay = ping_woken_run - t1 if ping_woken_run else None
        self.wakeups = []  # (t, tid, waker name, delay to running or None)
        self.runs = []  # (start, end, tid, cpu, how it started, how it ended)
        self.preempted_wait = 0.0  # runnable again but waiting for a CPU after a preemption
        self.ping_rtt = None

    def rtt(self):
        return self.t1 - self.t0

    def delays(self):
        return sum(d for _, _, _, d in self.wakeups if d is not None)

    def run_time(self):
        return sum(e - s for s, e, *_ in self.runs)


def round_trips(events, ping_pid, ours):
    """The round trips of one ping process: t1 is each waking of ping by one of our threads."""
    trips = []
    by_ping = [e for e in events if e[2]["tid"] == ping_pid]
    for i, (t, kind, f) in enumerate(by_ping):
        if kind != "waking" or f["waker"] not in ours:
            continue
        ran_in = [before for before in by_ping[:i] if before[1] == "in"]
        ran_out = [before for before in by_ping[:i] if before[1] == "out"]
        if not ran_in or not ran_out:
            continue
        sent_from, slept_at = ran_in[-1][0], ran_out[-1][0]
        woke_ours = [e[0] for e in events if e[1] == "waking" and e[2]["waker"] == ping_pid
                     and e[2]["tid"] in ours and sent_from <= e[0] <= slept_at]
        t0 = woke_ours[0] if woke_ours else slept_at
        back_in = next((e[0] for e in by_ping[i + 1:] if e[1] == "in"), None)
        trips.append(fill_chain(RoundTrip(t0, t, back_in), events, ours))
    return trips


def fill_chain(trip, events, ours):
    """Our threads' wake-ups, waits and runs between trip.t0 and trip.t1 (runs clipped to it)."""
    running, woken, preempted = {}, {}, {}  # tid -> (start, cpu, how) / (waking t, waker) / out t
    calls = {}  # tid -> [(t, syscall name)] of its current run
    for t, kind, f in events:
        if t > trip.t1:
            break
        tid = f["tid"]
        if tid not in ours:
            continue
        if kind == "syscall":
            calls.setdefault(tid, []).append([t, f["name"], None])
        elif kind == "sysexit":
            if calls.get(tid) and calls[tid][-1][2] is None:
                calls[tid][-1][2] = t - calls[tid][-1][0]
        elif kind == "waking":
            woken[tid] = (t, ours.get(f["waker"], f"{f['waker_comm']}/{f['waker']}"))
        elif kind == "in":
            how = "running again"
            if tid in woken:
                wt, waker = woken.pop(tid)
                how = f"woken by {waker}, waited {t - wt:.1f}"
                if wt >= trip.t0:
                    trip.wakeups.append((wt, tid, waker, t - wt))
            elif tid in preempted:
                out = preempted.pop(tid)
                how = f"preempted, waited {t - out:.1f}"
                if out >= trip.t0:
                    trip.preempted_wait += t - out
            running[tid] = (t, f["cpu"], how)
            calls[tid] = []
        elif kind == "out":
            if f["state"].startswith("R"):
                preempted[tid] = t
            if tid in running:
                start, cpu, how = running.pop(tid)
                if t >= trip.t0:
                    trip.runs.append((max(start, trip.t0), t, tid, cpu,
                                      how if start >= trip.t0 else "running at t0",
                                      ENDS.get(f["state"][:1], f["state"]),
                                      calls.pop(tid, [])))
    for tid, (start, cpu, how) in running.items():  # still on a CPU at t1
        trip.runs.append((max(start, trip.t0), trip.t1, tid, cpu, how if start >= trip.t0 else "running at t0",
                          "still running at t1", calls.pop(tid, [])))
    for tid, (wt, waker) in woken.items():  # woken but not yet running at t1
        if wt >= trip.t0:
            trip.wakeups.append((wt, tid, waker, None))
    trip.runs.sort()
    trip.wakeups.sort()
    return trip


# --- Report ---------------------------------------------------------------------------------

def print_chain(trip, names):
    print("    t0 = ping sends; times in us from t0")
    for start, end, tid, cpu, how, ended, calls in trip.runs:
        print(f"    {start - trip.t0:8.1f} .. {end - trip.t0:8.1f}  {names[tid]:<18} CPU{cpu}  "
              f"ran {end - start:6.1f}  ({how}; {ended})")
        if calls:
            print(f"{'':30}syscalls, us from the run's start: {syscall_text(calls, start)}")
    print(f"    {trip.rtt():8.1f}              ping woken by the reply (t1)"
          + (f"; it ran {trip.ping_delay:.1f} us later" if trip.ping_delay is not None else ""))


def syscall_text(calls, start):
    """'read@2.1(3.0) write@40.3(1.2) sched_yield x12@41.0..80.2': when each began after the
    run's start (repeats folded) and, in parentheses, how long it took (none: it did not
    return within the run, e.g. the thread slept in it)."""
    groups = []
    for t, name, took in calls:
        if groups and groups[-1][0] == name:
            groups[-1][2].append(t)
        else:
            groups.append((name, took, [t]))
    return " ".join(f"{n}@{ts[0] - start:.1f}" + (f"({took:.1f})" if took is not None else "") if len(ts) == 1 else
                    f"{n} x{len(ts)}@{ts[0] - start:.1f}..{ts[-1] - start:.1f}" for n, took, ts in groups)


def print_set(label, trips, names):
    if not trips:
        print(f"\n{label}: no round trip found in the trace")
        return
    print(f"\n{label}: {len(trips)} round trips")
    med = lambda xs: statistics.median(xs) if xs else float("nan")  # noqa: E731
    print(f"  median over round trips: ping's RTT {med([t.ping_rtt for t in trips if t.ping_rtt]) * 1e3:.1f} us, "
          f"t1 - t0 {med([t.rtt() for t in trips]):.1f} us, wake-ups {med([len(t.wakeups) for t in trips]):.0f}, "
          f"sum of wake-up delays {med([t.delays() for t in trips]):.1f} us, "
          f"sum of waits after preemption {med([t.preempted_wait for t in trips]):.1f} us, "
          f"sum of run times {med([t.run_time() for t in trips]):.1f} us, "
          f"ping's own wake-up {med([t.ping_delay for t in trips if t.ping_delay is not None]):.1f} us")
    hops = {}
    for t in trips:
        for _, tid, waker, delay in t.wakeups:
            hops.setdefault((waker, names[tid]), []).append(delay)
    print("  hops (waker -> woken): count per round trip, median and max delay to running, us")
    for (waker, woken), delays in sorted(hops.items(), key=lambda kv: -len(kv[1])):
        known = [d for d in delays if d is not None]
        print(f"    {waker:<22} -> {woken:<22} {len(delays) / len(trips):4.1f}  "
              f"{med(known):7.1f} {max(known, default=float('nan')):7.1f}")
    runs = {}
    for t in trips:
        for s, e, tid, *_ in t.runs:
            runs.setdefault(names[tid], []).append(e - s)
    print("  run time per thread per round trip, us (median of the per-round sums)")
    for name in sorted(runs):
        per_trip = [sum(e - s for s, e, tid, *_ in t.runs if names[tid] == name) for t in trips]
        print(f"    {name:<22} {med(per_trip):7.1f}  in {len(runs[name]) / len(trips):.1f} runs")
    print("  syscalls per thread per round trip (mean)")
    for name in sorted(runs):
        counts = {}
        for t in trips:
            for *_, tid, _, _, _, calls in t.runs:
                if names[tid] == name:
                    for _, call, _ in calls:
                        counts[call] = counts.get(call, 0) + 1
        print(f"    {name:<22} " + ", ".join(f"{c} {n / len(trips):.1f}" for c, n in
                                            sorted(counts.items(), key=lambda kv: -kv[1])))
    typical = sorted(trips, key=lambda t: t.rtt())[len(trips) // 2]
    print(f"  the typical round trip (median t1 - t0 = {typical.rtt():.1f} us; ping said "
          f"{(typical.ping_rtt or 0) * 1e3:.1f} us): {len(typical.wakeups)} wake-ups, "
          f"{typical.delays():.1f} us waiting for a CPU after them, {typical.preempted_wait:.1f} us waiting "
          f"after preemptions, {typical.run_time():.1f} us running")
    print_chain(typical, names)


# --- Running it ------------------------------------------------------------------------------

def ping_times(out):
    return {int(s): float(ms) for s, ms in PING_TIME.findall(out)}


def run_ping(host, dst, count, interval, out_path):
    """Runs ping in A; returns (pid, {icmp_seq: ms}). Its output goes to a file, not
    a pipe: a reader woken by every line would be one more thread on the CPUs."""
    with open(out_path, "w") as out:
        p = host.popen(["ping", "-4", "-n", "-c", str(count), "-i", interval, "-W", "2", dst],
                       stdout=out, stderr=subprocess.STDOUT)
        p.wait(timeout=count * float(interval) + 10)
    with open(out_path) as f:
        return p.pid, ping_times(f.read())


def untraced_rtts(tb, dst, pause_pings, tmp):
    """The same two ping sets without perf: what tracing adds is the difference."""
    fast = run_ping(tb.a, dst, 20, "0.01", os.path.join(tmp, "ping-fast-untraced"))[1]
    time.sleep(1.0)
    pause = run_ping(tb.a, dst, pause_pings, "1", os.path.join(tmp, "ping-pause-untraced"))[1]
    return [statistics.median(r.values()) * 1e3 if r else None for r in (fast, pause)]


def record(tb, dst, pause_pings, tmp, tids):
    """perf record around the two ping sets; returns [(label, ping pid, {seq: ms})].
    Syscall entries are recorded for our threads only (a filter on their tids)."""
    only_ours = " || ".join(f"common_pid == {tid}" for tid in sorted(tids))
    perf = subprocess.Popen(["perf", "record", "-q", "-o", os.path.join(tmp, "perf.data"), "-m", "1024", "-a",
                             "-e", "sched:sched_switch", "-e", "sched:sched_waking",
                             "-e", "raw_syscalls:sys_enter", "--filter", only_ours,
                             "-e", "raw_syscalls:sys_exit", "--filter", only_ours],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)  # perf has opened its events on every CPU
        if perf.poll() is not None:
            raise RuntimeError(f"perf record exited: {perf.stderr.read().strip()}")
        sets = [("20 pings 10 ms apart",) + run_ping(tb.a, dst, 20, "0.01", os.path.join(tmp, "ping-fast"))]
        time.sleep(1.0)
        sets.append((f"{pause_pings} pings 1 s apart",) + run_ping(tb.a, dst, pause_pings, "1",
                                                                     os.path.join(tmp, "ping-pause")))
    finally:
        if perf.poll() is None:
            perf.send_signal(signal.SIGINT)
        try:
            perf.wait(timeout=30)
        except subprocess.TimeoutExpired:
            perf.kill()
            perf.wait(timeout=10)
    return sets


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pause-pings", type=int, default=5, help="pings 1 s apart (default 5)")
    ap.add_argument("--keep-trace", metavar="FILE", help="also write perf script's text here")
    ap.add_argument("--pin", type=int, metavar="CPU",
                    help="pin every ipsecd thread at both ends to this CPU first (taskset): every hand-off "
                    "between them is then a same-CPU wake-up, none an IPI to another CPU")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    with open("/proc/loadavg") as f:
        print(f"load average before: {' '.join(f.read().split()[:3])}", flush=True)
    tag = f"lat{os.getpid() % 100000}"
    with tempfile.TemporaryDirectory(prefix="ipsec-lat-") as tmp, Testbed(tag=tag) as tb:
        path = compare.Ipsecd(tb, "esp", "gcm")
        path.start()
        try:
            if not compare.wait_path(path):
                raise RuntimeError(f"the tunnel does not carry ping {path.src} -> {path.dst}")
            names = name_threads(tb)
            if args.pin is not None:
                for tid in names:
                    subprocess.run(["taskset", "-p", "-c", str(args.pin), str(tid)], check=True,
                                   capture_output=True, timeout=10)
                print(f"every ipsecd thread pinned to CPU {args.pin}")
            time.sleep(1.0)  # the first pings' polling windows lapse: every thread asleep
            untraced = untraced_rtts(tb, path.dst, args.pause_pings, tmp)
            time.sleep(1.0)
            sets = record(tb, path.dst, args.pause_pings, tmp, names)
        finally:
            path.stop()
        text = subprocess.run(["perf", "script", "-i", os.path.join(tmp, "perf.data"), "--ns",
                               "-F", "comm,tid,cpu,time,event,trace"],
                              capture_output=True, text=True, timeout=120, check=True).stdout
        if args.keep_trace:
            with open(args.keep_trace, "w") as f:
                f.write(text)
    with open("/proc/loadavg") as f:
        print(f"load average after: {' '.join(f.read().split()[:3])}")
    print("threads: " + ", ".join(f"{n} {tid}" for tid, n in sorted(names.items(), key=lambda kv: kv[1])))
    for (label, pid, rtts), plain in zip(sets, untraced):
        if plain is not None:
            print(f"\n{label}, the same set just before without perf: median RTT {plain:.1f} us")
        wanted = set(names) | {pid}
        events = parse_events(text, wanted)
        trips = round_trips(events, pid, names)
        # ping's own RTTs belong to the trips in order when every reply was seen once.
        if len(trips) == len(rtts):
            for trip, seq in zip(trips, sorted(rtts)):
                trip.ping_rtt = rtts[seq]
        print_set(label, trips, {**names, pid: "ping"})
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\nping_stages: interrupted; cleaned up", file=sys.stderr)
        sys.exit(130)
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        print(f"ping_stages: {e}", file=sys.stderr)
        sys.exit(1)
