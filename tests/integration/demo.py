"""The README's demo (scripts/demo): a tunnel between two namespaces, traffic
through it both ways, the counters and the audit table, then clean-up."""

import signal
import sys
import time

from harness import INNER, OUTER, Testbed, ping, tcp_transfer


def step(text):
    print(f"\n=== {text}", flush=True)


def main():
    # SIGTERM takes the same clean-up path as Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    with Testbed(tag="demo") as tb:
        step(f"namespaces {tb.a.ns} ({OUTER[4][0]}) and {tb.b.ns} ({OUTER[4][1]}) joined by a veth")
        tb.start_pair("aes-gcm", 4)
        for h in tb.hosts():
            print(f"ipsecd running in {h.ns}, runtime directory {h.runtime}")
        step("SAs and policies on A (setkey -D, setkey -DP)")
        for flag in ("-D", "-DP"):
            r = tb.a.exec([__import__("harness").binary("setkey"), "--socket", f"{tb.a.runtime}/pfkey", flag],
                          check=False)
            print(r.stdout or r.stderr)
        for fam in (4, 6):
            a_in, b_in = INNER[fam]
            step(f"ping A {a_in} -> B {b_in} through the tunnel")
            print(ping(tb.a, b_in, count=3).stdout)
            step(f"ping B {b_in} -> A {a_in} through the tunnel")
            print(ping(tb.b, a_in, count=3).stdout)
        for client, server, addr, name in ((tb.a, tb.b, INNER[4][1], "A -> B"), (tb.b, tb.a, INNER[4][0], "B -> A")):
            step(f"TCP transfer {name}, 8 MiB, checked with SHA-256")
            secs = tcp_transfer(client, server, addr, nbytes=8 << 20, port=5001 if name == "A -> B" else 5002)
            print(f"8 MiB in {secs:.2f} s ({8 * 8 / secs:.0f} Mbit/s), contents verified")
        step("counters on A (ipsecctl stats)")
        print(tb.a.ipsecctl("stats"))
        step("sandbox of each process on A (ipsecctl audit)")
        print(tb.a.ipsecctl("audit"))
        step("stopping")
    print("demo: done; namespaces and processes removed")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("\ndemo: interrupted; cleaned up", file=sys.stderr)
        sys.exit(130)
