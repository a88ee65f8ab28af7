"""net.key.max_sas against one real ipsecd through its PF_KEY socket: with the
maximum set to 3, three ESP ADDs succeed, the fourth (and a GETSPI) is
answered ENOBUFS, keydb and the broker stay up (same pids), and once an SA
is deleted the next ADD fits again. Also: the sysctl is listed, and keydb
counts the refusals (ipsecctl stats).

And the broker's locked key memory: its RLIMIT_MEMLOCK pinned (prlimit) at
what it has locked now, ADDs go on until a session finds no key slot: that ADD
is ENOMEM (not EINVAL), nothing restarts, and once an SA is deleted (its slots
freed) the next ADD fits again."""

import json
import os
import struct
import subprocess
import unittest

from harness import Testbed
from test_pfkey_more import (AES_GCM_16, EXT_DST, EXT_KEY_ENC, EXT_SA2, EXT_SRC, KEY, MODE_TUNNEL, SADB_ADD,
                             SADB_FLUSH, SADB_GETSPI, SATYPE_ESP, PfkeyClient, address, errno_of, ext, key, sa)

SADB_DELETE = 4
ENOBUFS = 105
ENOMEM = 12


def add_sa(client, spi):
    """SADB_ADD of an AES-GCM tunnel SA 192.0.2.2 → 192.0.2.1 with `spi`; the reply's errno."""
    return errno_of(client.call(SADB_ADD, SATYPE_ESP, key(EXT_KEY_ENC, KEY), sa(spi, replay=32, enc=AES_GCM_16),
                                ext(EXT_SA2, struct.pack("=BBHII", MODE_TUNNEL, 0, 0, 0, 0)),
                                address(EXT_SRC, "192.0.2.2"), address(EXT_DST, "192.0.2.1")))


class MaxSasTest(unittest.TestCase):
    def test_an_add_beyond_max_sas_is_enobufs_and_the_services_stay_up(self):
        with Testbed() as tb:
            a = tb.a
            tb.start(a, "")
            self.assertIn("net.key.max_sas", json.loads(a.ipsecctl("sysctl", "--json")))
            pids = {s: a.pid_of(s) for s in ("ipsec-keydb", "ipsec-crypto", "ipsec-policy")}
            a.sysctl("net.key.max_sas=3")
            c = PfkeyClient(os.path.join(a.runtime, "pfkey"))
            c.call(SADB_FLUSH, 0)

            for spi in (0x1001, 0x1002, 0x1003):
                self.assertEqual(add_sa(c, spi), 0, hex(spi))
            self.assertEqual(add_sa(c, 0x1004), ENOBUFS)
            g = c.call(SADB_GETSPI, SATYPE_ESP, address(EXT_SRC, "192.0.2.2"), address(EXT_DST, "192.0.2.1"))
            self.assertEqual(errno_of(g), ENOBUFS)
            self.assertEqual({s: a.pid_of(s) for s in pids}, pids, "a service restarted or died")
            d = c.call(SADB_DELETE, SATYPE_ESP, sa(0x1001), address(EXT_SRC, "192.0.2.2"),
                       address(EXT_DST, "192.0.2.1"))
            self.assertEqual(errno_of(d), 0)
            self.assertEqual(add_sa(c, 0x1004), 0)
            self.assertEqual(a.counter("add_over_max_sas", "ipsec-keydb"), 2)
            c.close()

    def test_an_add_the_broker_has_no_locked_memory_for_is_enomem_and_the_services_stay_up(self):
        with Testbed() as tb:
            a = tb.a
            tb.start(a, "")
            pids = {s: a.pid_of(s) for s in ("ipsec-keydb", "ipsec-crypto", "ipsec-policy")}
            c = PfkeyClient(os.path.join(a.runtime, "pfkey"))
            c.call(SADB_FLUSH, 0)

            self.assertEqual(add_sa(c, 0x1000), 0)  # the broker's slab has a chunk of each size a session takes
            broker = pids["ipsec-crypto"]
            with open(f"/proc/{broker}/status") as f:
                status = {k: v.split() for k, v in (line.split(":", 1) for line in f)}
            locked = int(status["VmLck"][0]) * 1024
            # The broker runs without CAP_IPC_LOCK: from now on its slab cannot
            # grow. Lowered as the broker's own uid and gid (a container may
            # withhold CAP_SYS_RESOURCE, which another uid would need).
            subprocess.run(["setpriv", f"--reuid={status['Uid'][0]}", f"--regid={status['Gid'][0]}", "--clear-groups",
                            "prlimit", "--pid", str(broker), f"--memlock={locked}:"], check=True)
            refused = None
            for spi in range(0x1001, 0x1001 + 20000):
                err = add_sa(c, spi)
                if err != 0:
                    refused = (spi, err)
                    break
            self.assertIsNotNone(refused, "the broker never ran out of key slots")
            self.assertEqual(refused[1], ENOMEM, f"SPI {refused[0]:#x}")
            self.assertEqual({s: a.pid_of(s) for s in pids}, pids, "a service restarted or died")
            self.assertEqual(add_sa(c, refused[0]), ENOMEM, "no slot was freed meanwhile")
            d = c.call(SADB_DELETE, SATYPE_ESP, sa(0x1000), address(EXT_SRC, "192.0.2.2"),
                       address(EXT_DST, "192.0.2.1"))
            self.assertEqual(errno_of(d), 0)
            self.assertEqual(add_sa(c, refused[0]), 0, "the deleted SA's key slots serve the next one")
            self.assertEqual(a.counter("sessions_refused_no_key_memory", "ipsec-crypto"), 2)
            self.assertEqual(a.counter("sessions_refused_no_key_memory", "ipsec-keydb"), 2)
            c.close()


if __name__ == "__main__":
    unittest.main()
