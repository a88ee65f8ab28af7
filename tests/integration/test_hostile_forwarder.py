"""A hostile forwarder inside a real ipsecd (issue 10: the broker trusts no
forwarder). Two hosts with an AES-GCM tunnel both ways; on host A, ipsecd runs
tests/integration/hostile_forwarder (built as bin/hostile-forwarder) IN PLACE
OF ipsec-forwarder, from a root-owned copy of the bin directory (ipsecd starts
its children from beside itself). The program gets the forwarder's real
descriptors, learns each SA's session from keydb's installs, and writes
requests straight into the real broker's ring:

- a seal under the peer's SA (B→A, inbound here) completes kWrongDirection and
  leaves its buffer unchanged;
- a good seal under A→B's own SA completes ok (the attack path works);
- the last buffer's last byte as a one-byte segment completes kBadLength and
  leaves the buffer unchanged;
- an open under A→B's sending SA completes kWrongDirection, buffer unchanged.

The broker's own counters show each refusal once (seal_refused_direction,
open_refused_direction, drop_segment_too_short), nothing else was refused,
and the same broker process is still there and answering afterwards.
tests/unit/hostile (hostile.broker) does the same at volume against a broker
it starts itself; this test proves it inside the real process tree, with the
sessions and directions keydb really gave.

Both ends of a real pair also map their ring between inaccessible pages
(ring::GuardPages::kSurround), so that a bounds slip on either side faults
instead of touching the next mapping: /proc/PID/maps shows a PROT_NONE
mapping right before and right after each ring mapping.
"""

import json
import os
import shutil
import unittest

from harness import RING_MEMFD, OUTER, SPI_AB, SPI_BA, Testbed, binary, sa_lines, spd_lines, wait_for

CHILDREN = ("ipsecd", "setkey", "ipsec-keydb", "ipsec-policy", "ipsec-crypto")
REFUSALS = ("seal_refused_direction", "open_refused_direction", "drop_segment_too_short",
            "ah_sign_refused_direction", "ah_verify_refused_direction", "drop_bad_descriptor",
            "drop_bad_session", "drop_bad_op", "drop_segment_misaligned", "drop_segment_too_long",
            "drop_driver_bad_length", "open_bad_icv", "ring_corrupt")


def hostile_bin_dir(where):
    """A root-owned 0755 copy of the programs ipsecd runs, the hostile one as ipsec-forwarder."""
    os.makedirs(where)
    os.chmod(where, 0o755)
    for name in CHILDREN:
        shutil.copy(binary(name), os.path.join(where, name))
    shutil.copy(binary("hostile-forwarder"), os.path.join(where, "ipsec-forwarder"))
    for name in CHILDREN + ("ipsec-forwarder",):
        os.chown(os.path.join(where, name), 0, 0)
        os.chmod(os.path.join(where, name), 0o755)
    return where


def ring_neighbours(pid):
    """(mapping before, ring mapping, mapping after) of each ring mapping of pid, as maps lines."""
    with open(f"/proc/{pid}/maps") as f:
        lines = f.read().splitlines()
    return [(lines[i - 1] if i > 0 else "", line, lines[i + 1] if i + 1 < len(lines) else "")
            for i, line in enumerate(lines) if RING_MEMFD in line]


def span(line):
    start, end = line.split()[0].split("-")
    return int(start, 16), int(end, 16)


class HostileForwarderTest(unittest.TestCase):
    def test_both_ends_map_their_ring_between_guard_pages(self):
        with Testbed() as tb:
            tb.start_pair("aes-gcm", 4)
            for name in ("ipsec-forwarder", "ipsec-crypto"):
                found = ring_neighbours(tb.a.pid_of(name))
                self.assertGreaterEqual(len(found), 1, f"{name} maps no ring")
                for before, ring, after in found:
                    self.assertTrue(before and after, f"{name}: {found}")
                    self.assertEqual(span(before)[1], span(ring)[0], f"{name}: nothing mapped right before: {found}")
                    self.assertEqual(span(after)[0], span(ring)[1], f"{name}: nothing mapped right after: {found}")
                    for guard in (before, after):
                        self.assertEqual(guard.split()[1], "---p", f"{name}: not a guard page: {guard}")

    def test_a_forwarder_cannot_seal_or_open_against_the_sas_direction(self):
        with Testbed() as tb:
            bindir = hostile_bin_dir(os.path.join(tb.tmp, "bin"))
            report = os.path.join(tb.tmp, "hostile-report.json")
            go = os.path.join(tb.tmp, "hostile-go")
            env = dict(os.environ, IPSEC_HOSTILE_REPORT=report, IPSEC_HOSTILE_GO=go,
                       IPSEC_HOSTILE_LOCAL=OUTER[4][0])
            sas = sa_lines("aes-gcm", 4)
            tb.start(tb.a, "flush;\nspdflush;\n" + sas + spd_lines("a", 4),
                     ipsecd=os.path.join(bindir, "ipsecd"), env=env)
            tb.start(tb.b, "flush;\nspdflush;\n" + sas + spd_lines("b", 4))

            def crypto():
                return tb.a.stats()["ipsec-crypto"]["counters"]

            # keydb marks A→B outbound a moment after the policy is stored.
            wait_for(lambda: crypto()["sessions_outbound"] == 1, 10,
                     lambda: f"A's broker to hold A→B outbound: {crypto()}\n{tb.log_text(tb.a)}")
            self.assertIn("hostile_attacks_run", tb.a.stats()["ipsec-forwarder"]["counters"],
                          "ipsecd did not run the hostile program as ipsec-forwarder")
            broker_pid = tb.a.pid_of("ipsec-crypto")
            before = crypto()

            open(go, "w").close()
            wait_for(lambda: os.path.exists(report), 15,
                     lambda: f"the hostile forwarder's report:\n{tb.log_text(tb.a)}")
            with open(report) as f:
                got = json.load(f)
            self.assertNotIn("error", got, got)
            self.assertEqual(got["sessions"]["outbound"]["spi"], SPI_AB, got)
            self.assertEqual(got["sessions"]["inbound"]["spi"], SPI_BA, got)
            cases = got["cases"]
            expected = {
                "seal_under_inbound": "wrong_direction",
                "seal_under_outbound": "ok",
                "last_buffer_overrun": "bad_length",
                "open_under_outbound": "wrong_direction",
            }
            for name, status in expected.items():
                c = cases[name]
                self.assertEqual(c["status"], status, f"{name}: {c}")
                self.assertTrue(c["outside_unchanged"], f"{name} wrote outside its range: {c}")
                if status != "ok":
                    self.assertTrue(c["inside_unchanged"], f"refused {name} changed its buffer: {c}")
            self.assertFalse(cases["seal_under_outbound"]["inside_unchanged"], "the good seal wrote nothing")
            self.assertEqual(cases["last_buffer_overrun"]["buffer"], got["buffer_count"] - 1)

            # The broker counted each refusal once, under its own name, and
            # sealed the one good request; nothing else was refused.
            after = crypto()
            delta = {k: after[k] - before[k] for k in REFUSALS + ("sealed", "requests")}
            want = {k: 0 for k in REFUSALS}
            want.update(seal_refused_direction=1, open_refused_direction=1, drop_segment_too_short=1,
                        sealed=1, requests=4)
            self.assertEqual(delta, want, f"broker counters moved by {delta}")

            # The same broker is alive and answers; ipsecd restarted nothing.
            self.assertEqual(tb.a.pid_of("ipsec-crypto"), broker_pid)
            self.assertEqual(crypto()["sessions"], 2)
            self.assertEqual(tb.a.proc.poll(), None, tb.log_text(tb.a))
            self.assertNotIn("restarting the data plane", tb.log_text(tb.a))


if __name__ == "__main__":
    unittest.main()
