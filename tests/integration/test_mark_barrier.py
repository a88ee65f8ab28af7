"""The direction barrier (issue 10): an outbound policy added after its SAs
(setkey files, charon as responder) reaches the forwarder only once the broker
has the SAs' outbound marks, so no packet it sends is refused for the
direction (out_drop_wrong_direction).

Host A starts with both SAs, OTHER_SAS SAs to other peers, and only its
inbound policy; B is complete. A
sender in A's namespace is already streaming UDP to B's inner address (one
datagram every half millisecond, bounded in time) when the test adds A's
outbound policy with setkey — the forwarder gets the policy and seals the
very next packet, with no wait of any kind. Then: A's forwarder refused no
seal for the direction, and B received datagrams sent after the policy.
Before the barrier, the policy reached the forwarder while the mark was still
on its way through keydb to the broker, and the first packets were refused:
with the policy side of this change undone, 2 runs of 3 failed (8 and 28
packets refused); with it, 5 of 5 passed. Without the other SAs (a narrower
window) 10 runs of the old code passed: the race is real but short.
"""

import os
import time
import unittest

from harness import INNER, INNER_NETS, OUTER, Testbed, sa_lines, wait_for

SENDER = r"""
import socket, sys, time
dst, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end = time.monotonic() + seconds
n = 0
while time.monotonic() < end:
    try:
        s.sendto(n.to_bytes(8, "big"), (dst, port))
    except OSError:
        pass  # no route or buffer full while the policy is not there yet
    n += 1
    if n % 8 == 0:
        time.sleep(0.0001)
"""

RECEIVER = r"""
import socket, sys, time
port, seconds, out = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", port))
s.settimeout(0.2)
end = time.monotonic() + seconds
got = 0
while time.monotonic() < end:
    try:
        s.recv(64)
        got += 1
    except socket.timeout:
        pass
with open(out, "w") as f:
    f.write(str(got))
"""

PORT = 5071
# SAs A holds besides the tunnel's (to other peers): keydb walks every SA for
# each outbound mark, so they stretch the walk the policy's push had to race
# (with only two SAs the old race was too narrow to lose here).
OTHER_SAS = 10000


def other_sas(src):
    return "".join(f"add {src} 203.0.113.{1 + i % 250} esp {0x100000 + i:#x} -m tunnel "
                   f"-E aes-gcm-16 0x{(i + 1):040x};\n" for i in range(OTHER_SAS))


class MarkBarrierTest(unittest.TestCase):
    def test_an_outbound_policy_after_its_sas_seals_from_the_first_packet(self):
        a_out, b_out = OUTER[4]
        a_net, b_net = INNER_NETS[4]
        sas = "flush;\nspdflush;\n" + sa_lines("aes-gcm", 4)
        inbound_a = f"spdadd {b_net} {a_net} any -P in ipsec esp/tunnel/{b_out}-{a_out}/require;\n"
        outbound_a = f"spdadd {a_net} {b_net} any -P out ipsec esp/tunnel/{a_out}-{b_out}/require;\n"
        b_policies = (f"spdadd {b_net} {a_net} any -P out ipsec esp/tunnel/{b_out}-{a_out}/require;\n"
                      f"spdadd {a_net} {b_net} any -P in ipsec esp/tunnel/{a_out}-{b_out}/require;\n")
        with Testbed() as tb:
            tb.start(tb.a, sas + other_sas(a_out) + inbound_a)
            tb.start(tb.b, sas + b_policies)
            c = tb.a.stats()["ipsec-crypto"]["counters"]
            self.assertEqual(c["sessions_outbound"], 0, "A's sending SA is outbound before its policy")

            count_path = os.path.join(tb.tmp, "received")
            receiver = tb.b.popen(["/usr/bin/python3", "-c", RECEIVER, str(PORT), "4", count_path])
            sender = tb.a.popen(["/usr/bin/python3", "-c", SENDER, INNER[4][1], str(PORT), "3"])
            try:
                time.sleep(0.5)  # the stream is on before the policy comes
                r = tb.a.setkey(outbound_a)
                self.assertEqual(r.returncode, 0, f"setkey: {r.stdout}{r.stderr}")
                sender.wait(timeout=20)
                receiver.wait(timeout=20)
            finally:
                for p in (sender, receiver):
                    if p.poll() is None:
                        p.kill()
                        p.wait()

            crypto = tb.a.stats()["ipsec-crypto"]["counters"]
            self.assertEqual(crypto["sessions_outbound"], 1, f"{crypto}")
            # With OTHER_SAS SAs the forwarder's answer lists the first 2048
            # SAs' own counters and says how many it left out.
            stats = tb.a.stats()
            fwd = stats["ipsec-forwarder"]["counters"]
            self.assertEqual(fwd["sas_not_listed"], fwd["sas"] - 2048, f"{fwd}")
            self.assertEqual(len(stats["ipsec-forwarder"]["sas"]), 2048)
            self.assertEqual(fwd["out_drop_wrong_direction"], 0,
                             f"A sealed under a session not yet outbound: {fwd}\n{tb.log_text(tb.a)}")
            self.assertEqual(stats["ipsec-crypto"]["counters"]["seal_refused_direction"], 0)
            wait_for(lambda: os.path.exists(count_path), 5, "the receiver's count")
            with open(count_path) as f:
                received = int(f.read())
            self.assertGreater(received, 100, f"B received {received} datagrams\n{tb.log_text(tb.a)}")


if __name__ == "__main__":
    unittest.main()
