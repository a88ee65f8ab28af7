"""NAT-T bench: TCP through ESP-in-UDP SAs with UDP GRO/GSO off and on, in one run.

Run as root with /usr/bin/python3 (namespaces). Two ipsecd instances in the
Testbed's namespaces A and B (tests/integration/harness.py: veth 192.0.2.0/24
and 2001:db8:1::/64, inner 198.51.100.1 -> 203.0.113.1), NAT-T SAs added over
PF_KEY as integration.natt does (A on UDP port 4500, B on 4501), AES-GCM.
For each outer family the same tunnel carries `iperf3 -c` A -> B (bounded by
a timeout) once per mode and round, the modes switched on both hosts at run
time with `ipsecctl sysctl net.inet.ipsec.udp_gro=0|1` and `udp_gso=0|1`; the
order of the modes alternates from round to round. Prints Gbit/s, the GRO and
GSO counters each run moved, the median per mode and the ratio to "off".

--veth-gro turns NAPI GRO on for the veth (the ethtool ioctl: without it a
veth hands every packet up on its own and only a GSO send from the other
side can reach a UDP_GRO socket coalesced). Never fails on timing: the exit
status is non-zero only when a measurement could not be made.
"""

import argparse
import ctypes
import fcntl
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MODES = {"off": (0, 0), "gro": (1, 0), "gso": (0, 1), "on": (1, 1)}  # (udp_gro, udp_gso)

# Set inside a namespace by `python3 -c` (the ioctl acts on the caller's namespace).
VETH_GRO = r"""
import ctypes, fcntl, socket, struct, sys
SIOCETHTOOL, ETHTOOL_SGRO = 0x8946, 0x2c
value = ctypes.create_string_buffer(struct.pack("II", ETHTOOL_SGRO, int(sys.argv[2])))
ifr = struct.pack("16sP", sys.argv[1].encode(), ctypes.addressof(value)).ljust(40, b"\0")
fcntl.ioctl(socket.socket(socket.AF_INET, socket.SOCK_DGRAM), SIOCETHTOOL, ifr)
"""

COUNTERS = ("natt_in_esp_packets", "natt_in_gro_datagrams", "natt_in_gro_segments", "natt_out_gso_datagrams",
            "natt_out_gso_segments", "natt_out_gso_fallback", "natt_in_gro_drop_bad", "natt_in_gro_drop_no_buffer", "natt_in_gro_parked")


def counters(host):
    """The GRO/GSO counters, every other drop counter (named 'drop.<name>'),
    and the forwarder's CPU time in seconds ('cpu', from /proc)."""
    c = host.stats()["ipsec-forwarder"]["counters"]
    out = {k: c.get(k, 0) for k in COUNTERS}
    out.update({f"drop.{k}": v for k, v in c.items() if "drop" in k and k not in COUNTERS})
    with open(f"/proc/{host.pid_of('ipsec-forwarder')}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    out["cpu"] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    return out


def delta(after, before):
    return {k: after[k] - before.get(k, 0) for k in after}


def set_mode(tb, mode):
    gro, gso = MODES[mode]
    for h in tb.hosts():
        h.ipsecctl("sysctl", f"net.inet.ipsec.udp_gro={gro}")
        h.ipsecctl("sysctl", f"net.inet.ipsec.udp_gso={gso}")


def start_natt(tb, outer, harness, natt_pfkey):
    aout, bout = harness.OUTER[outer]
    sas = [(harness.SPI_AB, aout, bout, harness.GCM_KEY_AB, 4500, 4501),
           (harness.SPI_BA, bout, aout, harness.GCM_KEY_BA, 4501, 4500)]
    for h, port in ((tb.a, 4500), (tb.b, 4501)):
        tb.start(h, "flush;\nspdflush;\n" + harness.spd_lines(h.side, outer), natt_port=port)
        natt_pfkey.install(h.runtime, sas)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"), help="build directory (default build)")
    ap.add_argument("--seconds", type=int, default=5, help="iperf3 duration of each run (default 5)")
    ap.add_argument("--rounds", type=int, default=3, help="runs per mode (default 3)")
    ap.add_argument("--outer", default="6,4", help="outer families, e.g. 6 or 6,4 (default 6,4)")
    ap.add_argument("--modes", default="off,on", help=f"of {','.join(MODES)} (default off,on)")
    ap.add_argument("--veth-gro", action="store_true", help="NAPI GRO on both veth ends")
    args = ap.parse_args()
    os.environ["IPSEC_BUILD_DIR"] = os.path.abspath(args.build)
    sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
    sys.path.insert(0, os.path.join(ROOT, "tests", "interop"))
    sys.path.insert(0, os.path.dirname(HERE))
    import harness  # noqa: E402 (needs IPSEC_BUILD_DIR first)
    import natt_pfkey  # noqa: E402
    from tunnel_bench import iperf, wait_tunnel  # noqa: E402
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))

    modes = args.modes.split(",")
    for m in modes:
        if m not in MODES:
            raise SystemExit(f"unknown mode {m}")
    results = {}  # (outer, mode) -> [Gbit/s]
    cpus = {}     # (outer, mode) -> [both forwarders' CPU seconds per GB received]
    port = 5300
    for outer in (int(x) for x in args.outer.split(",")):
        with harness.Testbed(tag=f"natt{os.getpid() % 100000}") as tb:
            if args.veth_gro:
                for h, dev in ((tb.a, "veth-ipsec-a"), (tb.b, "veth-ipsec-b")):
                    h.exec(["/usr/bin/python3", "-c", VETH_GRO, dev, "1"])
            start_natt(tb, outer, harness, natt_pfkey)
            dst = harness.INNER[4][1]
            if not wait_tunnel(tb, dst):
                raise RuntimeError(f"NAT-T tunnel does not carry ping:\n{tb.log_text(tb.a)}")
            print(f"outer IPv{outer}, ESP in UDP, AES-GCM, TCP {harness.INNER[4][0]} -> {dst}, "
                  f"{args.seconds} s per run{', veth GRO on' if args.veth_gro else ''}", flush=True)
            for r in range(args.rounds):
                for mode in (modes if r % 2 == 0 else list(reversed(modes))):
                    set_mode(tb, mode)
                    a0, b0 = counters(tb.a), counters(tb.b)
                    port += 1
                    gbps, retr = iperf(tb.a, tb.b, dst, port, args.seconds)
                    da, db = delta(counters(tb.a), a0), delta(counters(tb.b), b0)
                    gbytes = gbps * args.seconds / 8
                    cpu = (da["cpu"] + db["cpu"]) / gbytes if gbytes else float("nan")
                    results.setdefault((outer, mode), []).append(gbps)
                    cpus.setdefault((outer, mode), []).append(cpu)
                    drops = {k[5:]: v for d in (da, db) for k, v in d.items()
                             if k.startswith("drop.") and v and k != "drop.out_drop_no_policy"}
                    print(f"  {mode:>3}: {gbps:6.2f} Gbit/s  retr {retr:5d}  forwarders {cpu:5.2f} CPU s/GB  "
                          f"A gso {da['natt_out_gso_datagrams']} sends / {da['natt_out_gso_segments']} pkts"
                          f" (fallback {da['natt_out_gso_fallback']}), "
                          f"B gro {db['natt_in_gro_datagrams']} dgrams / {db['natt_in_gro_segments']} segs "
                          f"of {db['natt_in_esp_packets']} ESP in, drops {db['natt_in_gro_drop_bad']}"
                          f"+{db['natt_in_gro_drop_no_buffer']}, parked {db['natt_in_gro_parked']}{', other drops ' + str(drops) if drops else ''}",
                          flush=True)
            set_mode(tb, "on")

    print("\nsummary: medians of each mode and their ratio to off (shared 2-core machine: noisy)")
    print("  outer mode  Gbit/s  ratio   forwarders' CPU s/GB  ratio   (runs, Gbit/s)")
    for outer in sorted({o for o, _ in results}, reverse=True):
        has_off = (outer, "off") in results
        base = statistics.median(results[(outer, "off")]) if has_off else None
        base_cpu = statistics.median(cpus[(outer, "off")]) if has_off else None
        for mode in modes:
            med = statistics.median(results[(outer, mode)])
            cpu = statistics.median(cpus[(outer, mode)])
            ratio = f"{med / base:6.3f}" if base else "   n/a"
            cpu_ratio = f"{cpu / base_cpu:6.3f}" if base_cpu else "   n/a"
            runs = " ".join(f"{x:.2f}" for x in results[(outer, mode)])
            print(f"  IPv{outer}  {mode:>3}  {med:6.2f}  x{ratio}   {cpu:6.2f}               x{cpu_ratio}   ({runs})")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("\nnatt_bench: interrupted; cleaned up", file=sys.stderr)
        sys.exit(130)
    except Exception as e:
        print(f"natt_bench: {e}", file=sys.stderr)
        sys.exit(1)
