#!/usr/bin/env python3
"""SAD benchmarks through a real PF_KEY socket against a real ipsecd (run as
root: the instance lives in a network namespace of its own):

  ADD rate   N ESP (AES-GCM-128) SAs added through one PF_KEY socket with a
             bounded window of requests in flight; each ADD goes
             policy -> keydb -> crypto broker (session) -> forwarder (install)
             and its reply comes back only then. Target >= 50 000 SA/s.
  DUMP       one SADB_DUMP of every SA (one message each, keys included);
             target: 100 000 SAs in < 1 s.
  memory     VmRSS of ipsec-keydb (and the other services) before and after,
             per SA.

  sudo python3 bench/sad/sad_bench.py --build build [--sas 100000] [--window 256]

Not a test: it prints figures, ratios to the targets, and never fails on
timing. The PF_KEY client is the one of tests/integration/test_pfkey_more.py.
"""

import argparse
import os
import select
import socket
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

from test_pfkey_more import (AES_GCM_16, EXT_DST, EXT_KEY_ENC, EXT_SA2, EXT_SRC, KEY, MODE_TUNNEL,  # noqa: E402
                             PF_KEY_V2, SADB_ADD, SADB_DUMP, SADB_FLUSH, SATYPE_ESP, PfkeyClient, address, ext,
                             key, sa)

SATYPE_IPCOMP, CALG_DEFLATE = 9, 2
ADD_TARGET = 50_000  # SA/s
DUMP_TARGET = 1.0    # s for 100 000 SAs


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    """User + system CPU time the process has used (a figure the machine's load does not inflate)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def locked_kib(pid):
    """Locked (mlock'ed) KiB of the process: its key memory."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Locked:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def add_many(c, n, window, satype=SATYPE_ESP, max_rate=0, first_spi=0x10000):
    """Pipelines n ADDs (at most `window` unanswered); returns (seconds, errors).
    IPComp SAs (no keys, no broker session) reach sizes that ESP's locked key
    memory does not; their 16-bit CPIs are spread over several destinations."""
    sa2 = ext(EXT_SA2, struct.pack("=BBHII", MODE_TUNNEL, 0, 0, 0, 1))
    src = address(EXT_SRC, "192.0.2.2")
    msgs = []
    for i in range(n):
        if satype == SATYPE_ESP:
            body = key(EXT_KEY_ENC, KEY) + sa(first_spi + i, replay=32, enc=AES_GCM_16) + sa2 + src + \
                address(EXT_DST, "192.0.2.1")
        else:
            body = sa(0x100 + i % 60000, enc=CALG_DEFLATE) + sa2 + src + \
                address(EXT_DST, f"192.0.2.{10 + i // 60000}")
        msgs.append(struct.pack("=BBBBHHII", PF_KEY_V2, SADB_ADD, 0, satype, 2 + len(body) // 8, 0, i + 1,
                                c.pid) + body)
    sent = answered = errors = 0
    start = time.perf_counter()
    cpu = time.process_time()
    while answered < n:
        while sent < n and sent - answered < window:
            if max_rate and sent > (time.perf_counter() - start) * max_rate:
                time.sleep(0.001)
                break
            c.s.send(msgs[sent])
            sent += 1
        paced = max_rate and sent < n
        r, _, _ = select.select([c.s], [], [], 0.01 if paced else 10)
        if not r and paced:
            continue  # held back by max_rate; a stall shows once all are sent
        if not r:
            raise RuntimeError(f"no reply after {answered}/{n} answered")
        while True:
            try:
                m = c.s.recv(65536, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            if m[1] == SADB_ADD:
                answered += 1
                errors += m[2] != 0
    add_many.client_cpu = time.process_time() - cpu  # the client's own share (one core at most)
    return time.perf_counter() - start, errors


def dump_all(c, satype=SATYPE_ESP):
    """One DUMP; returns (seconds, messages)."""
    c.seq += 1
    start = time.perf_counter()
    c.s.send(struct.pack("=BBBBHHII", PF_KEY_V2, SADB_DUMP, 0, satype, 2, 0, c.seq, c.pid))
    count = 0
    while True:
        r, _, _ = select.select([c.s], [], [], 10)
        if not r:
            raise RuntimeError(f"dump stalled after {count} messages")
        m = c.s.recv(65536)
        if m[1] != SADB_DUMP:
            continue
        count += 1
        seq = struct.unpack_from("=I", m, 8)[0]
        if seq == 0 or m[2] != 0:
            return time.perf_counter() - start, count


def dump_drain(c, satype=SATYPE_ESP):
    """One DUMP read as fast as Python can: a large receive buffer, and
    non-blocking recv until EAGAIN before each select (dump_all selects once
    per message). Returns (seconds, messages). Tells how much of dump_all's
    time is the client's."""
    try:
        c.s.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE (root)
    except OSError:
        c.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    c.seq += 1
    start = time.perf_counter()
    c.s.send(struct.pack("=BBBBHHII", PF_KEY_V2, SADB_DUMP, 0, satype, 2, 0, c.seq, c.pid))
    count = 0
    recv = c.s.recv
    c.s.setblocking(False)
    try:
        while True:
            try:
                m = recv(65536)
            except BlockingIOError:
                r, _, _ = select.select([c.s], [], [], 10)
                if not r:
                    raise RuntimeError(f"dump stalled after {count} messages")
                continue
            if m[1] != SADB_DUMP:
                continue
            count += 1
            if m[8:12] == b"\0\0\0\0" or m[2] != 0:
                return time.perf_counter() - start, count
    finally:
        c.s.setblocking(True)


def dump_setkey(build, path):
    """`setkey -D` into /dev/null (a C++ client that also formats every SA)."""
    start = time.perf_counter()
    r = subprocess.run([os.path.join(build, "bin", "setkey"), "--socket", path, "-D"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True, timeout=60)
    if r.returncode != 0:
        raise OSError(f"exit {r.returncode}: {r.stderr.strip()[:200]}")
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--sas", type=int, default=100_000)
    ap.add_argument("--window", type=int, default=256, help="ADDs in flight (policy takes 4096, a client queue 1024)")
    ap.add_argument("--satype", choices=("esp", "ipcomp"), default="esp",
                    help="ipcomp: SAs without keys or sessions, to dump more SAs than ESP's locked memory allows")
    ap.add_argument("--max-rate", type=int, default=0,
                    help="ADDs per second at most (IPComp SAs are answered before the forwarder has them: "
                         "keydb's queue to it is bounded)")
    ap.add_argument("--hold", type=int, default=0, help="seconds to wait after the ADDs (to inspect or profile)")
    args = ap.parse_args()
    satype = SATYPE_ESP if args.satype == "esp" else SATYPE_IPCOMP
    # harness reads the build dir when imported (test_pfkey_more imports
    # it above): set both, or --build would silently run build/bin.
    os.environ["IPSEC_BUILD_DIR"] = os.path.abspath(args.build)
    import harness
    harness.BUILD = os.path.abspath(args.build)
    from harness import Testbed

    with Testbed() as tb:
        tb.start(tb.a, "")
        path = os.path.join(tb.a.runtime, "pfkey")
        services = ("ipsec-keydb", "ipsec-policy", "ipsec-crypto", "ipsec-forwarder")
        pids = {s: tb.a.pid_of(s) for s in services}
        before = {s: rss_kib(p) for s, p in pids.items()}
        c = PfkeyClient(path)
        c.call(SADB_FLUSH, 0)

        cpu_before = {s: cpu_seconds(p) for s, p in pids.items()}
        secs, errors = add_many(c, args.sas, args.window, satype, args.max_rate)
        rate = args.sas / secs
        time.sleep(0.5)
        cpu = {s: cpu_seconds(p) - cpu_before[s] for s, p in pids.items()}
        after = {s: rss_kib(p) for s, p in pids.items()}
        print(f"SA ADD through PF_KEY: {args.sas} {args.satype.upper()} SAs in {secs:.2f} s = {rate:,.0f} SA/s "
              f"(target {ADD_TARGET:,}: ratio {rate / ADD_TARGET:.2f}), {errors} errors, window {args.window}; "
              f"client CPU {add_many.client_cpu:.2f} s")
        total = sum(cpu.values())
        # CPU per SA does not depend on what else the machine runs, as the rate does:
        # 1e6 / (µs per SA) is the rate the services' work alone would allow on one core.
        print(f"CPU per SA: {total * 1e6 / args.sas:.1f} µs in all (one core's worth: "
              f"{args.sas / max(total, 1e-9):,.0f} SA/s) = "
              + ", ".join(f"{s.removeprefix('ipsec-')} {v * 1e6 / args.sas:.1f}" for s, v in cpu.items()))
        for s in services:
            per = (after[s] - before[s]) * 1024 / args.sas
            print(f"RSS {s}: {before[s]:,} KiB -> {after[s]:,} KiB = {per:,.0f} B per SA; "
                  f"locked {locked_kib(pids[s]):,} KiB")
        if args.hold:
            print(f"holding {args.hold} s: pids {pids}")
            sys.stdout.flush()
            time.sleep(args.hold)
        sys.stdout.flush()
        try:
            dsecs, count = dump_all(c, satype)
            scaled = dsecs * 100_000 / max(count, 1)
            print(f"DUMP: {count} SAs in {dsecs:.3f} s ({count / dsecs:,.0f} msg/s; "
                  f"{scaled:.3f} s per 100 000, target < {DUMP_TARGET:.1f} s: ratio {scaled / DUMP_TARGET:.2f})")
        except RuntimeError as e:
            print(f"DUMP of {args.sas} SAs failed: {e}")
        try:
            dsecs, count = dump_drain(c, satype)
            print(f"DUMP, draining reader: {count} SAs in {dsecs:.3f} s ({count / dsecs:,.0f} msg/s; "
                  f"{dsecs * 100_000 / max(count, 1):.3f} s per 100 000)")
        except RuntimeError as e:
            print(f"DUMP (draining reader) of {args.sas} SAs failed: {e}")
        try:
            print(f"DUMP, setkey -D > /dev/null: {dump_setkey(os.path.abspath(args.build), path):.3f} s")
        except (subprocess.SubprocessError, OSError) as e:
            print(f"setkey -D failed: {e}")
        flush = c.call(SADB_FLUSH, 0)
        c.close()
        gone = [s for s, p in pids.items() if not os.path.exists(f"/proc/{p}")]
        print(f"FLUSH: errno {flush[0][2] if flush else 'none'}; "
              f"{'every service still up' if not gone else 'GONE: ' + ', '.join(gone)}")


if __name__ == "__main__":
    main()
