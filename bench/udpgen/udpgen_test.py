"""bench.udpgen: the comparison benchmark's generator and receiver count right
(bench/udpgen/udpgen.cpp). Not a timing test: on loopback, at low rates, the
receiver counts exactly the datagrams of its own run that the sender says it
sent (also when they leave UDP_SEGMENT-cut, --gso), datagrams of another run are counted apart, the sender never offers more
than its pace allows, and bad arguments are refused. Each process is bounded
by a timeout; the receiver binds port 0 on 127.0.0.1, so parallel runs do not meet."""

import json
import os
import subprocess
import unittest

UDPGEN = os.path.join(os.environ.get("IPSEC_BUILD_DIR", "build"), "bin", "udpgen")


def receiver(run, seconds=10, idle_ms=600):
    p = subprocess.Popen([UDPGEN, "recv", "127.0.0.1", "0", "--seconds", str(seconds), "--run", str(run),
                          "--idle-ms", str(idle_ms)], stdout=subprocess.PIPE, text=True)
    ready = p.stdout.readline().split()
    if ready[:1] != ["ready"]:
        p.kill()
        p.wait(5)
        raise AssertionError(f"receiver said {ready}")
    return p, ready[1]


def send(port, run, pps, seconds, gso=1):
    r = subprocess.run([UDPGEN, "send", "127.0.0.1", port, "--pps", str(pps), "--seconds", str(seconds),
                        "--size", "64", "--run", str(run), "--gso", str(gso)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def result(p):
    try:
        out, _ = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)
    return json.loads(out.strip().splitlines()[-1])


class UdpgenTest(unittest.TestCase):
    def test_the_receiver_counts_its_own_run_and_sets_others_apart(self):
        p, port = receiver(run=5)
        other = send(port, run=4, pps=2000, seconds=0.1)
        own = send(port, run=5, pps=3000, seconds=0.1)
        got = result(p)
        self.assertGreater(own["sent"], 0)
        self.assertEqual(got["received"], own["sent"], got)
        self.assertEqual(got["foreign"], other["sent"], got)

    def test_datagrams_sent_with_udp_segment_are_counted_one_by_one(self):
        p, port = receiver(run=6)
        own = send(port, run=6, pps=16000, seconds=0.1, gso=16)
        got = result(p)
        self.assertGreater(own["sent"], 16)
        self.assertEqual(got["received"], own["sent"], got)

    def test_the_sender_never_runs_ahead_of_its_pace(self):
        p, port = receiver(run=9)
        sent = send(port, run=9, pps=1000, seconds=0.5)
        got = result(p)
        # Datagram k is due k/pps s after the start: at most 501 in 0.5 s, plus one burst the last call may hold.
        self.assertLessEqual(sent["sent"], 501 + 32, sent)
        self.assertEqual(got["received"], sent["sent"], got)

    def test_bad_arguments_are_refused(self):
        for args in (["send", "127.0.0.1", "9", "--size", "8"], ["send", "127.0.0.1", "9", "--pps", "x"],
                     ["recv", "127.0.0.1", "9", "--bogus", "1"], ["flood", "127.0.0.1", "9"],
                     ["send", "not-an-address", "9"], ["send", "127.0.0.1", "9", "--gso", "65"],
                     ["send", "127.0.0.1", "9", "--gso", "64", "--size", "1472"]):
            r = subprocess.run([UDPGEN, *args], capture_output=True, text=True, timeout=10)
            self.assertEqual(r.returncode, 2, f"{args}: {r.stderr}")
            self.assertIn("usage:", r.stderr)


if __name__ == "__main__":
    unittest.main()
