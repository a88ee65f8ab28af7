"""Nonce safety end to end (issue 10, DESIGN §3): two ipsecd instances, an
AES-GCM tunnel, ping and TCP both ways while tcpdump captures ESP on both
veths. From the wire (plain bytes: SPI at 0, sequence at 4, IV at 8..16):

- no (SPI, IV) repeats, in either direction;
- the IVs A's broker emitted under A→B's SA and those B's broker emitted under
  B→A's SA are disjoint sets, and neither SA's counter starts at 0 (each
  starts at a random 64-bit offset per SA and host, so that even a misjudged
  direction could not replay the peer's (key, IV) pair);
- each host's capture shows only its own IVs going out, and the peer's coming
  in, the same on both veths;
- the brokers' direction refusals (seal_refused_direction,
  open_refused_direction) stay 0 under normal traffic: keydb marked each SA
  the way the host uses it.

A forwarder that asks its broker to seal under the peer's SA is refused;
tests/unit/hostile (ctest hostile.broker) proves that against a real
ipsec-crypto process, with the directions set through the same keydb
channel message (CreateSession.direction) that ipsecd's keydb sends, and
integration.hostile_forwarder proves it inside a real ipsecd, with a hostile
program in the forwarder's place that learns the sessions from keydb.
"""

import os
import struct
import unittest

from harness import INNER, OUTER, SPI_AB, SPI_BA, Capture, Testbed, ping, tcp_transfer, wait_for

# Below this an IV counter is taken to start at 0 rather than at a random
# 64-bit offset (a random start is below 2^40 with probability 2^-24).
RANDOM_FLOOR = 1 << 40


def esp_packets(path):
    """(src, spi, seq, iv) of each ESP packet in a pcap of Ethernet frames."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        return []
    magic = struct.unpack_from("<I", data, 0)[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    linktype = struct.unpack_from(endian + "I", data, 20)[0]
    if linktype != 1:
        raise AssertionError(f"unexpected pcap link type {linktype}")
    out, pos = [], 24
    while pos + 16 <= len(data):
        caplen = struct.unpack_from(endian + "I", data, pos + 8)[0]
        frame = data[pos + 16:pos + 16 + caplen]
        pos += 16 + caplen
        ethertype = struct.unpack_from("!H", frame, 12)[0] if len(frame) >= 14 else 0
        ip = frame[14:]
        if ethertype == 0x0800 and len(ip) >= 20 and ip[9] == 50:
            src, esp = ip[12:16].hex(), ip[(ip[0] & 0x0F) * 4:]
        elif ethertype == 0x86DD and len(ip) >= 40 and ip[6] == 50:
            src, esp = ip[8:24].hex(), ip[40:]
        else:
            continue
        if len(esp) >= 16:
            spi, seq = struct.unpack_from("!II", esp, 0)
            out.append((src, spi, seq, esp[8:16]))
    return out


class NonceTest(unittest.TestCase):
    def traffic(self, tb):
        for fam in (4, 6):
            a_in, b_in = INNER[fam]
            r = ping(tb.a, b_in, count=5, interval="0.05")
            self.assertEqual(r.returncode, 0, f"ping A→B v{fam}: {r.stdout}{r.stderr}\n{tb.log_text(tb.a)}")
            r = ping(tb.b, a_in, count=5, interval="0.05")
            self.assertEqual(r.returncode, 0, f"ping B→A v{fam}: {r.stdout}{r.stderr}\n{tb.log_text(tb.b)}")
        tcp_transfer(tb.a, tb.b, INNER[4][1], nbytes=1 << 20, port=5011)
        tcp_transfer(tb.b, tb.a, INNER[4][0], nbytes=1 << 20, port=5012)

    def check_pair(self, outer):
        with Testbed() as tb:
            tb.start_pair("aes-gcm", outer)
            pcaps = {h.side: os.path.join(tb.tmp, f"{h.side}.pcap") for h in tb.hosts()}
            with Capture(tb.a, pcaps["a"], "esp or ip6 proto 50", "veth-ipsec-a") as cap_a, \
                    Capture(tb.b, pcaps["b"], "esp or ip6 proto 50", "veth-ipsec-b") as cap_b:
                self.traffic(tb)
                # Both veths see every packet: wait until B's capture holds as many as A's.
                wait_for(lambda: len(esp_packets(pcaps["b"])) >= len(esp_packets(pcaps["a"])) > 200, 10,
                         "both captures complete")

            a_addr = OUTER[outer][0]
            a_hex = bytes(int(x) for x in a_addr.split(".")).hex() if outer == 4 else None
            by_side = {side: esp_packets(path) for side, path in pcaps.items()}
            for side, pkts in by_side.items():
                self.assertGreater(len(pkts), 200, f"capture on {side} too small")
            # The two veths see the same packets: use A's capture for what A
            # sent and B's for what B sent, and check they agree.
            sent = {"a": set(), "b": set()}
            for side, pkts in by_side.items():
                seen = set()
                for src, spi, seq, iv in pkts:
                    self.assertNotIn((spi, iv), seen, f"{side}: repeated (SPI, IV) {spi:#x} {iv.hex()}")
                    seen.add((spi, iv))
                    sender = "a" if spi == SPI_AB else "b" if spi == SPI_BA else None
                    self.assertIsNotNone(sender, f"unexpected SPI {spi:#x}")
                    if a_hex is not None:
                        self.assertEqual(src == a_hex, sender == "a", f"SPI {spi:#x} from the wrong host")
                    sent[sender].add(int.from_bytes(iv, "big"))
            ab, ba = sent["a"], sent["b"]
            self.assertGreater(len(ab), 100)
            self.assertGreater(len(ba), 100)
            self.assertEqual(len(ab & ba), 0, f"{len(ab & ba)} IVs emitted under both directions, e.g. {sorted(ab & ba)[:5]}")
            self.assertGreaterEqual(min(ab), RANDOM_FLOOR, f"A→B's IVs start at {min(ab)}: not a random offset")
            self.assertGreaterEqual(min(ba), RANDOM_FLOOR, f"B→A's IVs start at {min(ba)}: not a random offset")
            for h in tb.hosts():
                c = h.stats()["ipsec-crypto"]["counters"]
                for name in ("seal_refused_direction", "open_refused_direction"):
                    self.assertIn(name, c, f"{h.side}: the broker has no counter {name}")
                    self.assertEqual(c[name], 0, f"{h.side}: {name}")
                self.assertGreater(c["sealed"], 100)
                self.assertGreater(c["opened"], 100)
                # Two SAs on each host, added before the policies: the outbound
                # policy made this host's sending SA outbound, the other one
                # stays not-outbound (it may only open).
                self.assertEqual((c["sessions"], c["sessions_outbound"]), (2, 1), f"{h.side}: {c}")
                self.assertEqual(c["sessions_inbound"] + c["sessions_unknown_direction"], 1, f"{h.side}: {c}")

    def test_gcm_over_ipv4(self):
        self.check_pair(4)

    def test_gcm_over_ipv6(self):
        self.check_pair(6)


if __name__ == "__main__":
    unittest.main()
