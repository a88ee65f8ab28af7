"""Extended sequence numbers and a 4096-packet replay window, end to end against scapy.

Host A runs a real ipsecd whose SAs are loaded with the setkey tool (AES-GCM-16,
tunnel mode, outer and inner IPv4); host B has no IPsec and the test plays B:
scapy 2.5 seals every ESP packet (AES-GCM-16, the AEAD whose ESN handling in
scapy is right: ../../../shared/INTEROP.md says its ESN with ESP+HMAC leaves
the high half out of the ICV) and a small sender in B's namespace puts them on
the veth. Nothing of ours decides what is expected: a plain model of RFC 4303
§3.4.3 (a set of seen numbers and a top) says what each packet must meet, and
the forwarder's counters (`ipsecctl stats --json`, global and per SA) must
agree exactly.

- A 4096 window under reordering (`-r 4096 -esn`): seq 1..6000 sent shuffled
  within aligned blocks of 4096 (so a packet may arrive 4095 behind the top,
  the window's last slot), with exact duplicates (replays) and numbers held
  back until they are just left of the window (one held back just inside it
  must pass). With ESN, App. A2 reads a number left of the window as one of
  the next 2^32 subspace, so those fail the ICV instead of counting as replays.
- ESN across 2^32 (RFC 4303 Appendix A2): 1, 0x80000000, 0xFFFFFFF0..0xFFFFFFFF,
  then 1..10 of the next subspace sealed with high half 1: all accepted; the
  same low numbers sealed with high half 0 fail the ICV (A infers high half 1)
  or, once accepted, are replays; a number of the old subspace still inside
  the window is accepted with high half 0. Without -esn the post-wrap packets
  are left of the window: replays, never reaching the ICV check.
- A window above the maximum (65536) is refused by setkey and no SA appears;
  65536 itself is kept as given.

The sender paces its bursts and the test waits, between phases, until A has
counted every packet sent so far: the window's pre-check runs before crypto
and its final check after, so a phase must not overtake the previous one.
Run as root with /usr/bin/python3; needs ipsecd and setkey built (IPSEC_BUILD_DIR).
"""

import hashlib
import os
import random
import re
import struct
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))

from scapy.layers.inet import IP, UDP  # noqa: E402
from scapy.layers.ipsec import ESP, SecurityAssociation, _ESPPlain  # noqa: E402
from scapy.packet import Raw  # noqa: E402

import espeer  # noqa: E402
from harness import INNER, OUTER, Testbed, spd_lines, wait_for  # noqa: E402

WINDOW = 4096
N_REORDER = 6000
SPI_REORDER = 0x3001   # B → A, -r 4096 -esn
SPI_WRAP_ESN = 0x3002  # B → A, -r 4096 -esn
SPI_WRAP_32 = 0x3003   # B → A, -r 4096, 32-bit sequence numbers
SPI_OUT = 0x3000       # A → B, carries whatever A's kernel answers
SPI_UPDATE = 0x3004    # B → A, -r 64, replaced by an UPDATE mid-stream
KEY_BYTES = 20         # AES-128 key || 4-byte salt (RFC 4106)
MAX_WINDOW = 65536     # lib/pfkey/message.h kMaxReplayWindow
UDP_PORT = 9           # discard: nothing listens, A's kernel answers rarely (rate-limited ICMP)

SENDER = r"""
import socket, struct, sys, time
path, dst, burst, gap = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
data = open(path, 'rb').read()
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 50)
off = n = 0
while off < len(data):
    (size,) = struct.unpack_from('!H', data, off)
    s.sendto(data[off + 2:off + 2 + size], (dst, 0))
    off += 2 + size
    n += 1
    if n % burst == 0:
        time.sleep(gap)
print(n)
"""


def key_of(spi):
    return hashlib.shake_256(f"esn-replay/{spi:#x}".encode()).digest(KEY_BYTES)


def infer(window, top, low):
    """RFC 4303 Appendix A2.1: the full number a receiver whose highest accepted
    number is `top` gives the low half `low`; None below sequence number 1."""
    tl, th = top & 0xFFFFFFFF, top >> 32
    bl = (tl - window + 1) & 0xFFFFFFFF
    if tl >= window - 1:
        high = th if low >= bl else th + 1
    else:
        high = th - 1 if low >= bl else th
    return None if high < 0 else high << 32 | low


def model(window, seqs, esn):
    """What a receiver following RFC 4303 §3.4.3 (and App. A2 with ESN) does with
    each full sequence number a sender sealed, one packet after another:
    'accept', 'replay' (duplicate or left of the window) or 'bad_icv' when the
    high half it infers (0 without ESN) is not the one the ICV was made with."""
    seen, top, out = set(), 0, []
    for s in seqs:
        full = infer(window, top, s & 0xFFFFFFFF) if esn else s & 0xFFFFFFFF
        if full is None or full == 0 or full in seen or (full <= top and top - full >= window):
            out.append("replay")
        elif full != s:
            out.append("bad_icv")
        else:
            seen.add(full)
            top = max(top, full)
            out.append("accept")
    return out


class EsnAndLargeWindow(unittest.TestCase):
    """One ipsecd in A with three inbound SAs (one per scenario); B is scapy."""

    @classmethod
    def setUpClass(cls):
        cls.t0 = time.monotonic()
        cls.tb = Testbed.for_class(cls)
        cls.a, cls.b = cls.tb.a, cls.tb.b
        cls.tb.start(cls.a)
        a, b = OUTER[4]
        gcm = "-E aes-gcm-16 0x{}"
        text = ("flush;\nspdflush;\n"
                f"add {b} {a} esp {SPI_REORDER:#x} -m tunnel -r {WINDOW} -esn {gcm.format(key_of(SPI_REORDER).hex())};\n"
                f"add {b} {a} esp {SPI_WRAP_ESN:#x} -m tunnel -r {WINDOW} -esn "
                f"{gcm.format(key_of(SPI_WRAP_ESN).hex())};\n"
                f"add {b} {a} esp {SPI_WRAP_32:#x} -m tunnel -r {WINDOW} {gcm.format(key_of(SPI_WRAP_32).hex())};\n"
                f"add {a} {b} esp {SPI_OUT:#x} -m tunnel -r 64 {gcm.format(key_of(SPI_OUT).hex())};\n"
                + spd_lines("a", 4, (4,)))
        r = cls.a.setkey(text)
        if r.returncode != 0:
            raise RuntimeError(f"setkey refused the SAs:\n{r.stdout}\n{r.stderr}")
        cls.sent = {SPI_REORDER: 0, SPI_WRAP_ESN: 0, SPI_WRAP_32: 0}
        cls.batch = 0
        wait_for(lambda: cls.sa_counters(SPI_WRAP_32) is not None, 10, "the wrap SA in A's forwarder")

    @classmethod
    def tearDownClass(cls):
        print(f"\n[esn/replay: {time.monotonic() - cls.t0:.1f} s]", file=sys.stderr)

    # -- B's side ---------------------------------------------------------

    @staticmethod
    def scapy_sa(spi, esn_high=None):
        """scapy's SA sealing B → A on `spi`; esn_high=None seals 32-bit numbers.
        A separate SA per high half: scapy takes `esn or self.esn`, so 0 cannot
        be passed per packet to an SA made with another high half."""
        kw = {} if esn_high is None else {"esn_en": True, "esn": esn_high}
        sa = SecurityAssociation(ESP, spi=spi, crypt_algo="AES-GCM", crypt_key=key_of(spi), **kw)
        sa.tunnel_header = IP(src=OUTER[4][1], dst=OUTER[4][0])
        return sa

    @staticmethod
    def inner(tag):
        return IP(src=INNER[4][1], dst=INNER[4][0]) / UDP(sport=40000, dport=UDP_PORT) / Raw(f"esn-replay {tag}".encode())

    @classmethod
    def seal(cls, sa, low, tag, iv=None):
        """The ESP payload scapy's SecurityAssociation.encrypt makes (tunnel mode)."""
        return bytes(sa.encrypt(cls.inner(f"{tag} {low:#x}"), seq_num=low, iv=iv)[ESP])

    @staticmethod
    def seal_quickly(sa, low, inner, iv=None):
        """The same through scapy's ESP layer one level down (its _ESPPlain,
        padding and AES-GCM CryptAlgo with the ESN AAD), skipping the tunnel
        header the kernel adds anyway: the thousands of packets of the reorder
        test cost seconds instead of a minute. Checked against seal()."""
        iv = iv or sa.crypt_algo.generate_iv()
        esp = sa.crypt_algo.pad(_ESPPlain(spi=sa.spi, seq=low, iv=iv, data=Raw(inner), nh=espeer.NH_IPV4))
        return bytes(sa.crypt_algo.encrypt(sa, esp, sa.crypt_key, sa.crypt_icv_size,
                                           esn_en=sa.esn_en, esn=sa.esn))

    @classmethod
    def send(cls, spi, payloads, burst=16, gap=0.002):
        """Sends ESP payloads (in order, paced) from B to A and waits until A has
        counted every packet sent on `spi` so far."""
        cls.batch += 1
        path = os.path.join(cls.b.workdir, f"batch-{cls.batch}.bin")
        with open(path, "wb") as f:
            for p in payloads:
                f.write(struct.pack("!H", len(p)) + p)
        cls.b.exec(["/usr/bin/python3", "-c", SENDER, path, OUTER[4][0], str(burst), str(gap)], timeout=60)
        cls.sent[spi] += len(payloads)
        want = cls.sent[spi]
        wait_for(lambda: cls.handled(spi) >= want, 20,
                 lambda: f"A to handle the {want} packets sent to SPI {spi:#x}: {cls.sa_counters(spi)}", step=0.1)

    # -- A's counters -----------------------------------------------------

    @classmethod
    def sa_counters(cls, spi):
        for sa in cls.a.stats()["ipsec-forwarder"].get("sas", []):
            if sa["spi"] == spi and sa["dst"] == OUTER[4][0]:
                return sa["counters"]
        return None

    @classmethod
    def handled(cls, spi):
        c = cls.sa_counters(spi) or {}
        return sum(c.get(k, 0) for k in ("in_packets", "in_drop_replay", "in_drop_bad_icv", "in_drop_other"))

    def raw_drops(self):
        """Packets A's kernel dropped on its raw ESP sockets (a full receive
        buffer: the pacing was too fast for this machine, not a window fault)."""
        r = self.a.exec(["cat", "/proc/net/raw"])
        drops = 0
        for line in r.stdout.splitlines()[1:]:
            f = line.split()
            if len(f) >= 13 and int(f[1].split(":")[1], 16) == 50:
                drops += int(f[-1])
        return drops

    def assert_sa(self, spi, before, want):
        after = self.sa_counters(spi)
        got = {k: after.get(k, 0) - before.get(k, 0)
               for k in ("in_packets", "in_drop_replay", "in_drop_bad_icv", "in_drop_other")}
        self.assertEqual(self.raw_drops(), 0, "A's kernel dropped ESP before the forwarder read it")
        self.assertEqual(got, want, f"SA {spi:#x}")
        return got

    def dump_entry(self, spi):
        """(replay, flags) that `setkey -D` shows for the SA with this SPI, or None."""
        r = self.a.exec([espeer.harness.binary("setkey"), "--socket", os.path.join(self.a.runtime, "pfkey"), "-D"],
                        check=False)
        m = re.search(rf"spi=\d+\(0x{spi:08x}\).*?replay=(\d+) flags=0x([0-9a-f]+)", r.stdout, re.S)
        return (int(m.group(1)), int(m.group(2), 16)) if m else None

    # -- the tests --------------------------------------------------------

    def test_1_setkey_dump_shows_the_window_and_esn(self):
        self.assertEqual(self.dump_entry(SPI_REORDER), (WINDOW, 0x400))
        self.assertEqual(self.dump_entry(SPI_WRAP_ESN), (WINDOW, 0x400))
        self.assertEqual(self.dump_entry(SPI_WRAP_32), (WINDOW, 0))

    def test_2_window_of_4096_under_reordering(self):
        rng = random.Random(4303)
        top = N_REORDER
        # Held back, sent at the end when the top is N: the oldest number still
        # inside the window (accepted) and three just left of it (too old).
        inside = top - WINDOW + 1
        too_old = [top - WINDOW, top - WINDOW - 1, 7]
        held = set(too_old) | {inside}
        order = []
        for lo in range(1, top + 1, WINDOW):
            block = [s for s in range(lo, min(lo + WINDOW, top + 1)) if s not in held]
            rng.shuffle(block)
            order += block
        # Exact duplicates, each sent again some packets after its first copy.
        dups = 0
        for at in sorted(rng.sample(range(100, len(order)), 40), reverse=True):
            back = rng.randrange(1, 60)
            order.insert(at, order[at - back])
            dups += 1
        order += [inside] + too_old + [order[-1]]  # and one more duplicate
        dups += 1
        expect = model(WINDOW, order, esn=True)
        # With ESN a number left of the window is not a replay: App. A2 takes it
        # for the next 2^32 subspace (high half 1), so its ICV, made with high
        # half 0, fails. Without ESN it would be a replay.
        self.assertEqual(expect.count("accept"), top - len(too_old))
        self.assertEqual(expect.count("replay"), dups)
        self.assertEqual(expect.count("bad_icv"), len(too_old))
        self.assertEqual(model(WINDOW, order, esn=False).count("replay"), dups + len(too_old))

        sa = self.scapy_sa(SPI_REORDER, esn_high=0)
        inner = bytes(self.inner("reorder"))
        iv = bytes(range(8))
        self.assertEqual(self.seal_quickly(sa, 0xFFFFFFF0, inner, iv),
                         bytes(sa.encrypt(IP(inner), seq_num=0xFFFFFFF0, iv=iv)[ESP]))
        sealed = {s: self.seal_quickly(sa, s, inner) for s in set(order)}
        before_sa = self.sa_counters(SPI_REORDER)
        before = self.a.stats()["ipsec-forwarder"]["counters"]
        for i in range(0, len(order), 1024):  # chunks: A catches up between them
            self.send(SPI_REORDER, [sealed[s] for s in order[i:i + 1024]])
        got = self.assert_sa(SPI_REORDER, before_sa, {
            "in_packets": expect.count("accept"), "in_drop_replay": expect.count("replay"),
            "in_drop_bad_icv": expect.count("bad_icv"), "in_drop_other": 0})
        d = espeer.delta(before, self.a.stats()["ipsec-forwarder"]["counters"])
        self.assertEqual(d.get("esp_in_packets"), got["in_packets"], d)
        self.assertEqual(d.get("esp_in_drop_replay"), got["in_drop_replay"], d)
        self.assertEqual(d.get("esp_in_drop_bad_icv"), got["in_drop_bad_icv"], d)
        print(f"\n[reorder: {len(order)} sent, {got['in_packets']} delivered, {got['in_drop_replay']} replay "
              f"(duplicates), {got['in_drop_bad_icv']} bad ICV (left of the window)]", file=sys.stderr)

    def run_phases(self, spi, esn, phases):
        """Sends each phase (full sequence numbers as sealed; high half 1 means
        sealed with ESN) and waits for A between phases; checks every phase's
        exact per-SA change, and that the model agrees with each expectation."""
        sas = {}

        def seal(full):
            high = full >> 32
            key = None if not esn and high == 0 else high
            if key not in sas:
                sas[key] = self.scapy_sa(spi, esn_high=key)
            return self.seal(sas[key], full & 0xFFFFFFFF, f"{high}")

        zero = {"in_packets": 0, "in_drop_replay": 0, "in_drop_bad_icv": 0, "in_drop_other": 0}
        names = {"accept": "in_packets", "replay": "in_drop_replay", "bad_icv": "in_drop_bad_icv"}
        before = self.a.stats()["ipsec-forwarder"]["counters"]
        c0 = self.sa_counters(spi)
        done, total = [], dict(zero)
        for name, seqs, want in phases:
            want = {**zero, **want}
            outcome = model(WINDOW, done + seqs, esn)[len(done):]
            self.assertEqual({**zero, **{names[o]: outcome.count(o) for o in set(outcome)}}, want,
                             f"the test's expectation for {name!r} is not RFC 4303's")
            done += seqs
            total = {k: total[k] + want[k] for k in zero}
            with self.subTest(phase=name):
                c = self.sa_counters(spi)
                self.send(spi, [seal(x) for x in seqs])
                self.assert_sa(spi, c, want)
        got = self.assert_sa(spi, c0, total)
        d = espeer.delta(before, self.a.stats()["ipsec-forwarder"]["counters"])
        for k in ("esp_in_packets", "esp_in_drop_replay", "esp_in_drop_bad_icv"):
            self.assertEqual(d.get(k, 0), got[k.replace("esp_", "")], d)
        print(f"\n[SA {spi:#x}: {got}]", file=sys.stderr)
        return got

    def test_3_esn_across_the_32_bit_boundary(self):
        hi1 = 1 << 32
        # Phases with a quiet A in between; each expects exact per-SA changes.
        got = self.run_phases(SPI_WRAP_ESN, True, [
            # One phase per jump: within one receive burst the pre-check infers
            # the high half from the top before the packets ahead are accepted,
            # and from a top of 1, 2^32-16 lies in a subspace before the first.
            ("1 (high 0)", [1], {"in_packets": 1}),
            ("2^31 (high 0)", [0x80000000], {"in_packets": 1}),
            ("2^32-16..2^32-1 (high 0)", list(range(0xFFFFFFF0, 0x100000000)), {"in_packets": 16}),
            ("1..4 of the next subspace (high 1)", [hi1 + s for s in range(1, 5)], {"in_packets": 4}),
            # A infers high half 1 for low 5 (case A of App. A2): the ICV made
            # with high half 0 fails, and the window must not have moved.
            ("low 5 sealed with high 0", [5], {"in_drop_bad_icv": 1}),
            ("5..10 (high 1)", [hi1 + s for s in range(5, 11)], {"in_packets": 6}),
            # Now 2^32 + 5 is seen: the pre-check drops the copy before crypto.
            ("low 5 again, high 0", [5], {"in_drop_replay": 1}),
            # Case B of App. A2: the window straddles 2^32; a low number above the
            # window's bottom belongs to the old subspace (high 0).
            ("2^32-2048 (high 0, fresh, in the window)", [0xFFFFF800], {"in_packets": 1}),
            ("2^32-8 (high 0, seen)", [0xFFFFFFF8], {"in_drop_replay": 1}),
            # Below the window's bottom a low number means the next subspace
            # (high 1 is inferred): sealed with high 0, its ICV fails.
            ("2^32-4096 (high 0, left of the window)", [0xFFFFF000], {"in_drop_bad_icv": 1}),
        ])
        self.assertEqual(got, {"in_packets": 29, "in_drop_replay": 2, "in_drop_bad_icv": 2, "in_drop_other": 0})

    def test_4_without_esn_the_wrapped_numbers_are_replays(self):
        hi1 = 1 << 32
        got = self.run_phases(SPI_WRAP_32, False, [
            ("1, 2^31, 2^32-16..2^32-1", [1, 0x80000000] + list(range(0xFFFFFFF0, 0x100000000)),
             {"in_packets": 18}),
            # What an ESN sender sends after the wrap, then the same numbers sealed
            # as 32-bit ones: 1..10 are 2^32-11.. behind the top, so the window
            # drops them all before the ICV is ever checked.
            ("1..10 sealed with high 1 (ESN)", [hi1 + s for s in range(1, 11)], {"in_drop_replay": 10}),
            ("1..10 sealed as 32-bit numbers", list(range(1, 11)), {"in_drop_replay": 10}),
        ])
        self.assertEqual(got, {"in_packets": 18, "in_drop_replay": 20, "in_drop_bad_icv": 0, "in_drop_other": 0})

    def test_5_a_window_above_the_maximum_is_refused_not_clipped(self):
        a, b = OUTER[4]
        key = key_of(0x3100).hex()
        for spi, size in ((0x3101, 70000), (0x3102, MAX_WINDOW + 1)):
            r = self.a.setkey(f"add {b} {a} esp {spi:#x} -m tunnel -r {size} -E aes-gcm-16 0x{key};\n")
            self.assertNotEqual(r.returncode, 0, f"-r {size} accepted:\n{r.stdout}{r.stderr}")
            self.assertIn("The result of line 1: Invalid argument.", r.stderr)
            self.assertIsNone(self.dump_entry(spi), f"an SA with -r {size} exists")
        r = self.a.setkey(f"add {b} {a} esp 0x3103 -m tunnel -r {MAX_WINDOW} -esn -E aes-gcm-16 0x{key};\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.dump_entry(0x3103), (MAX_WINDOW, 0x400))

    def test_6_an_update_keeps_what_the_sa_had_accepted(self):
        """UPDATE of a live SA (same SPI and key, as a key manager refreshing
        lifetimes does): packets captured before it are replays after it."""
        a, b = OUTER[4]
        spi = SPI_UPDATE
        line = f"{b} {a} esp {spi:#x} -m tunnel -r 64 -E aes-gcm-16 0x{key_of(spi).hex()};\n"
        r = self.a.setkey("add " + line)
        self.assertEqual(r.returncode, 0, r.stderr)
        wait_for(lambda: self.sa_counters(spi) is not None, 10, f"SA {spi:#x} in A's forwarder")
        zero = {"in_packets": 0, "in_drop_replay": 0, "in_drop_bad_icv": 0, "in_drop_other": 0}
        sa = self.scapy_sa(spi)
        captured = [self.seal(sa, seq, "before the update") for seq in range(1, 11)]
        self.sent[spi] = 0
        self.send(spi, captured)
        self.assert_sa(spi, zero, {**zero, "in_packets": 10})

        r = self.a.setkey("update " + line)
        self.assertEqual(r.returncode, 0, r.stderr)
        # The successor's entry counts from zero (keydb carries the usage).
        wait_for(lambda: (c := self.sa_counters(spi)) is not None and c.get("in_packets", 0) == 0, 10,
                 lambda: f"the successor of SA {spi:#x} counting from zero: {self.sa_counters(spi)}")
        self.sent[spi] = 0
        self.send(spi, captured)
        self.assert_sa(spi, zero, {**zero, "in_drop_replay": 10})
        self.send(spi, [self.seal(sa, 11, "after the update")])
        self.assert_sa(spi, zero, {**zero, "in_packets": 1, "in_drop_replay": 10})


if __name__ == "__main__":
    unittest.main(verbosity=2)
