"""Every algorithm the broker runs carries traffic through a tunnel between two
ipsecd instances (the framing each needs — IV length, ICV length, padding
alignment — comes from the broker's driver; the forwarder holds no key)."""

import unittest

from harness import INNER, OUTER, SPI_AB, SPI_BA, Testbed, ping, spd_lines

# (setkey algorithm clause, key bytes for it) — two different keys per SA pair.
CASES = {
    "aes-gcm-8": "-E aes-gcm-8 0x{k20}",
    "aes-gcm-12": "-E aes-gcm-12 0x{k20}",
    "aes-gcm-16-256": "-E aes-gcm-16 0x{k36}",
    "aes-ccm-16": "-E aes-ccm-16 0x{k19}",
    "aes-gmac": "-E aes-gmac 0x{k20}",
    "chacha20-poly1305": "-E chacha20-poly1305 0x{k36}",
    "aes-ctr+hmac-sha1": "-E aes-ctr 0x{k20} -A hmac-sha1 0x{k20}",
    "aes-cbc-256+hmac-sha512": "-E aes-cbc 0x{k32} -A hmac-sha512 0x{k64}",
    "aes-cbc+aes-xcbc-mac": "-E aes-cbc 0x{k16} -A aes-xcbc-mac 0x{k16}",
    "aes-cbc+aes-cmac": "-E aes-cbc 0x{k16} -A aes-cmac 0x{k16}",
    "null+hmac-sha256": "-E null -A hmac-sha256 0x{k32}",
}


def keys(seed):
    return {f"k{n}": (bytes([seed]) * n).hex() for n in (16, 19, 20, 32, 36, 64)}


class AlgorithmTest(unittest.TestCase):
    def test_each_algorithm_carries_ping_both_ways(self):
        a, b = OUTER[4]
        for name, clause in CASES.items():
            with self.subTest(name), Testbed() as tb:
                sas = (f"add {a} {b} esp {SPI_AB:#x} -m tunnel -r 64 {clause.format(**keys(0x5a))};\n"
                       f"add {b} {a} esp {SPI_BA:#x} -m tunnel -r 64 {clause.format(**keys(0xa5))};\n")
                tb.start(tb.a, "flush;\nspdflush;\n" + sas + spd_lines("a", 4))
                tb.start(tb.b, "flush;\nspdflush;\n" + sas + spd_lines("b", 4))
                r = ping(tb.a, INNER[4][1], count=2, interval="0.1")
                self.assertEqual(r.returncode, 0, f"{name}: {r.stdout}\n{tb.log_text(tb.a)}")
                r = ping(tb.b, INNER[6][0], count=2, interval="0.1")
                self.assertEqual(r.returncode, 0, f"{name} (IPv6 inner): {r.stdout}")
                c = tb.a.stats()["ipsec-forwarder"]["counters"]
                self.assertGreaterEqual(c["esp_in_packets"], 4, name)
                self.assertEqual(c["esp_in_drop_bad_icv"], 0, name)


if __name__ == "__main__":
    unittest.main()
