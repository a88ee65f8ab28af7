"""End-to-end benchmark: iperf3 TCP through the ESP tunnel against the plain veth.

Run by scripts/bench as root with /usr/bin/python3. Two namespaces joined by a
veth (tests/integration/harness.py's Testbed). In one run, first over the plain
veth (A 192.0.2.1 -> B 192.0.2.2, before any ipsecd starts, so nothing of ours
is in the path), then through the tunnel (A's inner 198.51.100.1 -> B's inner
203.0.113.1, two ipsecd instances): `iperf3 -s -1` in B, `iperf3 -c ... -t N -J`
in A, each bounded by a timeout. Prints both Gbit/s figures (what B received)
and their ratio. Everything started here is stopped by pid and the namespaces
are deleted by the Testbed, also on failure or SIGTERM. Never fails on timing:
the exit status is non-zero only when a measurement could not be made.
"""

import argparse
import os
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "integration"))

from harness import INNER, OUTER, Testbed, ping  # noqa: E402
from measure import iperf_tcp  # noqa: E402


def iperf(client, server, addr, port, seconds):
    """One TCP run client -> server; returns (Gbit/s received, retransmits)."""
    gbits, _, retransmits = iperf_tcp(client, server, addr, port, seconds, streams=1)
    return gbits, retransmits


def wait_tunnel(tb, addr, tries=10):
    for _ in range(tries):
        if ping(tb.a, addr, count=1, timeout=5).returncode == 0:
            return True
        time.sleep(0.2)
    return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=10, help="iperf3 duration of each run (default 10)")
    ap.add_argument("--alg", default="aes-gcm", choices=("aes-gcm", "aes-cbc"),
                    help="tunnel SA algorithm (aes-cbc is AES-CBC-128 + HMAC-SHA256)")
    ap.add_argument("--skip-tunnel", action="store_true", help="measure the plain veth only")
    args = ap.parse_args()
    # SIGTERM takes the same clean-up path as Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))

    veth = tunnel = None
    with Testbed(tag=f"bench{os.getpid() % 100000}") as tb:
        print(f"plain veth: {OUTER[4][0]} -> {OUTER[4][1]}, TCP, {args.seconds} s", flush=True)
        veth, retr = iperf(tb.a, tb.b, OUTER[4][1], 5201, args.seconds)
        print(f"  {veth:.2f} Gbit/s ({retr} retransmits)", flush=True)
        if not args.skip_tunnel:
            tb.start_pair(args.alg, 4)
            if not wait_tunnel(tb, INNER[4][1]):
                raise RuntimeError(f"tunnel does not carry ping:\n{tb.log_text(tb.a)}")
            print(f"tunnel ({args.alg}): {INNER[4][0]} -> {INNER[4][1]}, TCP, {args.seconds} s", flush=True)
            tunnel, retr = iperf(tb.a, tb.b, INNER[4][1], 5202, args.seconds)
            print(f"  {tunnel:.2f} Gbit/s ({retr} retransmits)", flush=True)
            try:
                c = tb.a.stats()["ipsec-forwarder"]["counters"]
                drops = {k: v for k, v in c.items() if "drop" in k and v}
                print(f"  A's forwarder: esp_out_packets {c.get('esp_out_packets')}, "
                      f"esp_in_packets {c.get('esp_in_packets')}, drops {drops or 'none'}")
            except Exception as e:  # counters are a bonus, not the measurement
                print(f"  (no counters: {e})")

    print("\nsummary (one run, shared 2-core machine: noisy)")
    print(f"  plain veth   {veth:7.2f} Gbit/s")
    if tunnel is not None:
        print(f"  tunnel       {tunnel:7.2f} Gbit/s   ({args.alg})")
        print(f"  tunnel/veth  {tunnel / veth:7.3f}" if veth else "  tunnel/veth  n/a")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("\ntunnel_bench: interrupted; cleaned up", file=sys.stderr)
        sys.exit(130)
    except Exception as e:
        print(f"tunnel_bench: {e}", file=sys.stderr)
        sys.exit(1)
