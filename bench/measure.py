"""The comparison benchmark's measurements (bench/compare.py), one function each.

Every external process runs inside a Testbed host's namespace (harness.Host.exec
or .popen, so the Testbed stops it by pid at the latest when it closes) and is
bounded by a timeout. Figures are what the receiving end saw.
"""

import glob
import json
import os
import re
import subprocess
import time

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
RTT = re.compile(r"= [\d.]+/([\d.]+)/[\d.]+/[\d.]+ ms")
MAX_LOSS = 0.01


def cpu_by_process(pids):
    """{pid: (name, utime + stime in seconds of all its threads)}; a process gone is left out."""
    out = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                text = f.read()
        except OSError:
            continue
        name = text[text.index("(") + 1:text.rindex(")")]
        fields = text[text.rindex(")") + 2:].split()
        out[pid] = (name, (int(fields[11]) + int(fields[12])) / CLOCK_TICKS)  # fields 14 and 15 of proc(5)
    return out


def sched_by_process(pids):
    """{pid: (name, ns on a CPU, times scheduled in)}, summed over the process's threads
    (/proc/<pid>/task/*/schedstat); a process gone is left out.

    For an idle tunnel: utime + stime count 10 ms ticks, too coarse to tell a few
    wake-ups a second from none; schedstat counts nanoseconds and each run on a CPU."""
    out = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/comm") as f:
                name = f.read().strip()
        except OSError:
            continue
        ns = runs = 0
        for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
            try:
                with open(path) as f:
                    fields = f.read().split()
            except OSError:
                continue
            ns += int(fields[0])
            runs += int(fields[2])
        out[pid] = (name, ns, runs)
    return out


def idle_report(before, after, seconds):
    """(CPU ms per s, wake-ups per s, 'name wake-ups/s, ...') between two sched_by_process() readings."""
    ns = runs = 0
    by_name = {}
    for pid, (name, ns1, runs1) in after.items():
        _, ns0, runs0 = before.get(pid, (name, ns1, runs1))
        ns += ns1 - ns0
        runs += runs1 - runs0
        by_name[name] = by_name.get(name, 0) + runs1 - runs0
    split = ", ".join(f"{n} {r / seconds:.1f}" for n, r in sorted(by_name.items(), key=lambda kv: -kv[1]))
    return ns / 1e6 / seconds, runs / seconds, split


def cpu_spent_by_name(before, after):
    """'name s, ...': the CPU each process name spent between two cpu_by_process() readings
    (summed over both ends), largest first."""
    spent = {}
    for pid, (name, secs) in after.items():
        spent[name] = spent.get(name, 0.0) + secs - before.get(pid, (name, 0.0))[1]
    return ", ".join(f"{n} {s:.2f} s" for n, s in sorted(spent.items(), key=lambda kv: -kv[1]))


def ping_avg(host, dst, count, interval):
    """Average RTT in ms of `count` pings `interval` s apart, None when every one was lost."""
    r = host.exec(["ping", "-4", "-n", "-q", "-c", str(count), "-i", interval, "-W", "2", dst],
                  check=False, timeout=count * float(interval) + 10)
    m = RTT.search(r.stdout)
    return float(m.group(1)) if m else None


def wait_listening(host, port, timeout=10.0):
    """Waits until a TCP socket listens on `port` inside the host's namespace."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = host.exec(["ss", "-Hltn", f"sport = :{port}"], check=False)
        if r.stdout.strip():
            return True
        time.sleep(0.05)
    return False


def iperf_tcp(client, server, addr, port, seconds, streams):
    """One iperf3 TCP run client -> server: (Gbit/s received, bytes received, retransmits)."""
    srv = server.popen(["iperf3", "-s", "-1", "-B", addr, "-p", str(port)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not wait_listening(server, port):
            raise RuntimeError(f"iperf3 server on {addr}:{port} did not start")
        r = client.exec(["iperf3", "-c", addr, "-p", str(port), "-t", str(seconds), "-P", str(streams), "-J",
                         "--connect-timeout", "5000"], check=False, timeout=seconds + 30)
        try:
            result = json.loads(r.stdout)
        except json.JSONDecodeError:
            raise RuntimeError(f"iperf3 to {addr}: no JSON (exit {r.returncode}): {r.stderr.strip()}")
        if "error" in result:
            raise RuntimeError(f"iperf3 to {addr}: {result['error']}")
        got = result["end"]["sum_received"]
        return got["bits_per_second"] / 1e9, got["bytes"], result["end"]["sum_sent"].get("retransmits", 0)
    finally:
        try:
            srv.wait(5)
        except subprocess.TimeoutExpired:
            srv.kill()
            srv.wait(5)


def udp_step(sender, receiver, dst, udpgen, pps, seconds, run, gso=1, port=9000):
    """One offered rate: (datagrams sent, datagrams received, rate sent per s)."""
    rcv = receiver.popen([udpgen, "recv", dst, str(port), "--seconds", str(seconds + 5), "--run", str(run),
                          "--idle-ms", "400"], stdout=subprocess.PIPE, text=True)
    try:
        if not rcv.stdout.readline().startswith("ready"):
            raise RuntimeError(f"udpgen receiver on {dst}:{port} did not start")
        s = sender.exec([udpgen, "send", dst, str(port), "--pps", str(int(pps)), "--seconds", str(seconds),
                         "--size", "64", "--run", str(run), "--gso", str(gso)], check=False, timeout=seconds + 10)
        if s.returncode != 0:
            raise RuntimeError(f"udpgen send: {s.stderr.strip()}")
        sent = json.loads(s.stdout)
        out, _ = rcv.communicate(timeout=seconds + 10)
        got = json.loads(out.strip().splitlines()[-1])
        return sent["sent"], got["received"], sent["pps"]
    finally:
        if rcv.poll() is None:
            rcv.kill()
            rcv.wait(5)
        rcv.stdout.close()


def udp_search(sender, receiver, dst, udpgen, seconds, steps, say, gso=1, start_pps=20000):
    """The highest received rate at <= 1 % loss over `steps` offered rates.

    Doubles the offer from start_pps until the loss passes 1 % (or the
    generator twice in a row sends less than 90 % of the offer: on a loaded
    machine its rate moves, so one short step does not end the search), then
    bisects between the last good and the first bad offer. Returns (best
    received pps at <= 1 % loss, most received pps at any offer, whether the
    generator was the limit)."""
    good, bad = 0.0, None
    best = top = 0.0
    limited = 0
    offer = float(start_pps)
    for run in range(1, steps + 1):
        run_id = int(time.time()) * 100 + run
        sent, received, sent_pps = udp_step(sender, receiver, dst, udpgen, offer, seconds, run_id, gso)
        loss = 1 - received / sent if sent else 1.0
        rate = sent_pps * (1 - loss)  # received per second of sending
        top = max(top, rate)
        say(f"offered {offer / 1e3:.1f} kpps, sent {sent_pps / 1e3:.1f} kpps, received {rate / 1e3:.1f} kpps, "
            f"loss {loss * 100:.2f} %")
        short = sent_pps < 0.9 * offer  # more offered than the generator sent
        limited = limited + 1 if short and loss <= MAX_LOSS else 0
        if loss <= MAX_LOSS:
            best = max(best, rate)
            good = max(good, offer)
            if limited >= 2:
                break
        else:
            bad = offer if bad is None else min(bad, offer)
        offer = offer * 2 if bad is None else (good + bad) / 2 if good else bad / 2
        if bad is not None and good and bad - good < 0.05 * bad:
            break
    return best, top, limited >= 2
