"""IPComp + ESP bundle in tunnel mode (`ipcomp/tunnel/A-B/use esp/transport//require`)
between two ipsecd instances: compressible traffic is compressed (counters on
both ends), incompressible traffic goes uncompressed (RFC 3173 §2.2), and a
capture decrypted with scapy shows ESP next header 108, the IPComp header
(next header 4, the SA's CPI) and a payload that python's zlib (wbits=-15)
inflates to the inner packet. net.inet.ipcomp.enable = 0 drops and counts."""

import os
import sys
import unittest
import zlib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "interop"))

from harness import (GCM_KEY_AB, GCM_KEY_BA, INNER, INNER_NETS, OUTER, SPI_AB, SPI_BA, Testbed, assert_no_drops, ping,
                     tcp_transfer)

CPI_AB = 0x3001
CPI_BA = 0x3002


def bundle_setkey(side):
    a, b = OUTER[4]
    na, nb = INNER_NETS[4]
    lines = [
        "flush;", "spdflush;",
        f"add {a} {b} esp {SPI_AB:#x} -m transport -r 64 -E aes-gcm-16 0x{GCM_KEY_AB.hex()};",
        f"add {b} {a} esp {SPI_BA:#x} -m transport -r 64 -E aes-gcm-16 0x{GCM_KEY_BA.hex()};",
        f"add {a} {b} ipcomp {CPI_AB:#x} -C deflate;",
        f"add {b} {a} ipcomp {CPI_BA:#x} -C deflate;",
    ]
    local, remote, lnet, rnet = (a, b, na, nb) if side == "a" else (b, a, nb, na)
    lines.append(f"spdadd {lnet} {rnet} any -P out ipsec ipcomp/tunnel/{local}-{remote}/use esp/transport//require;")
    lines.append(f"spdadd {rnet} {lnet} any -P in ipsec ipcomp/tunnel/{remote}-{local}/use esp/transport//require;")
    return "\n".join(lines) + "\n"


class IpcompBundleTest(unittest.TestCase):
    def test_compressible_traffic_is_compressed_and_zlib_inflates_the_capture(self):
        import espeer
        from espeer import Capture
        from scapy.layers.inet import ICMP, IP
        from scapy.layers.ipsec import ESP, SecurityAssociation

        with Testbed() as tb:
            for h in tb.hosts():
                tb.start(h, bundle_setkey(h.side))
            a_in, b_in = INNER[4]
            path = os.path.join(tb.b.workdir, "bundle.pcap")
            with Capture(tb.b, path) as cap:
                # A repeated pattern: DEFLATE shrinks it a lot.
                r = ping(tb.a, b_in, count=3, extra=("-s", "1000", "-p", "61"))
                self.assertEqual(r.returncode, 0, f"{r.stdout}{r.stderr}\n{tb.log_text(tb.a)}\n{tb.log_text(tb.b)}")
                pkts = cap.wait_for(lambda p: len(p) >= 6, timeout=5)
            ca = tb.a.stats()["ipsec-forwarder"]["counters"]
            cb = tb.b.stats()["ipsec-forwarder"]["counters"]
            self.assertGreaterEqual(ca["ipcomp_out_compressed"], 3, ca)
            self.assertGreaterEqual(cb["ipcomp_in_decompressed"], 3, cb)
            self.assertGreaterEqual(cb["ipcomp_out_compressed"], 3, cb)  # the echo replies
            self.assertGreaterEqual(ca["ipcomp_in_decompressed"], 3, ca)

            # Our wire, read by code we did not write: scapy opens ESP, zlib inflates.
            sa = SecurityAssociation(ESP, spi=SPI_AB, crypt_algo="AES-GCM", crypt_key=GCM_KEY_AB)
            seen = 0
            for p in pkts:
                if p[IP].src != OUTER[4][0] or ESP not in p:
                    continue
                opened = sa.decrypt(p[IP].copy())  # outer header + decrypted payload, ICV checked
                self.assertEqual(opened[IP].proto, 108)
                comp = bytes(opened[IP].payload)
                self.assertEqual(comp[0], 4)  # IPComp next header: IPv4
                self.assertEqual(int.from_bytes(comp[2:4], "big"), CPI_AB)
                inner = IP(zlib.decompress(comp[4:], wbits=-15))
                self.assertEqual((inner.src, inner.dst), (a_in, b_in))
                self.assertEqual(inner[ICMP].type, 8)
                self.assertLess(len(comp), len(bytes(inner)))
                seen += 1
            self.assertGreaterEqual(seen, 3, f"{len(pkts)} packets captured")
            del espeer

            # Random bytes do not shrink: sent without IPComp, still delivered.
            tcp_transfer(tb.a, tb.b, b_in, nbytes=1 << 20)
            ca = tb.a.stats()["ipsec-forwarder"]["counters"]
            self.assertGreater(ca["ipcomp_out_uncompressed"], 50, ca)
            for h in tb.hosts():
                c = h.stats()["ipsec-forwarder"]["counters"]
                assert_no_drops(self, h.side, c)

            # net.inet.ipcomp.enable = 0: dropped and counted.
            tb.a.sysctl("net.inet.ipcomp.enable=0")
            r = ping(tb.a, b_in, count=2, extra=("-s", "1000", "-p", "61", "-w", "2"))
            self.assertNotEqual(r.returncode, 0)
            self.assertGreaterEqual(tb.a.counter("ipcomp_out_drop_disabled"), 2)


if __name__ == "__main__":
    unittest.main()
