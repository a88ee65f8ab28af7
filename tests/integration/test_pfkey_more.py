"""PF_KEY beyond the corpus, against one real ipsecd through its PF_KEY socket
(<runtime>/pfkey, AF_UNIX SOCK_SEQPACKET): ESN and a replay window above 255
(our SA_REPLAY extension, type 28, and FreeBSD's ESN flag 0x400), per-SA
tunnel options set by setkey (our SA_OPTIONS extension, type 29), NAT-T
type/ports/original address (also from setkey's "esp-udp ADDR"), X_MIGRATE
moving policies and SAs, X_SPDEXPIRE, and the net.key sysctls
through ipsecctl; the default replay window (net.inet.ipsec.replay_window)
against a resent captured packet, and one ACQUIRE for racoon's sequence. The small client below packs <linux/pfkeyv2.h> structs by
hand and trusts nothing it receives beyond parsing it.
"""

import ipaddress
import json
import os
import select
import socket
import struct
import subprocess
import sys
import time
import unittest

from harness import (GCM_KEY_AB, GCM_KEY_BA, INNER, INNER_NETS, OUTER, SPI_AB, SPI_BA, Testbed, binary, ping,
                     sa_lines, spd_lines)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "interop"))
import espeer  # noqa: E402

PF_KEY_V2 = 2
SADB_GETSPI, SADB_UPDATE, SADB_ADD, SADB_GET, SADB_ACQUIRE, SADB_REGISTER, SADB_FLUSH, SADB_DUMP = 1, 2, 3, 5, 6, 7, 9, 10
SADB_X_SPDADD, SADB_X_SPDDUMP, SADB_X_SPDFLUSH, SADB_X_SPDEXPIRE, SADB_X_MIGRATE = 14, 18, 19, 21, 24
SATYPE_ESP = 3
EXT_SA, EXT_LT_HARD, EXT_LT_SOFT, EXT_SRC, EXT_DST, EXT_KEY_ENC = 1, 3, 4, 5, 6, 9
EXT_SPIRANGE, EXT_POLICY, EXT_SA2 = 16, 18, 19
EXT_NAT_T_TYPE, EXT_NAT_T_SPORT, EXT_NAT_T_DPORT, EXT_NAT_T_OA = 20, 21, 22, 23
EXT_SA_REPLAY = 28  # ours (lib/pfkey/message.h), FreeBSD's number and layout
EXT_SA_OPTIONS = 29  # ours alone: df u8, reserved u8, mtu u16, tfc u16, reserved u16, dummy ms u32
SAFLAG_ESN = 0x400
AES_GCM_16 = 20
IPPROTO_ESP, MODE_TUNNEL, LEVEL_REQUIRE, DIR_IN, DIR_OUT, DIR_FWD, POLICY_IPSEC = 50, 2, 2, 1, 2, 3, 2
EINVAL, ENOENT, ESRCH, EEXIST = 22, 2, 3, 17

KEY = bytes(range(20))  # AES-128-GCM key + 4-byte salt


def ext(etype, body):
    body = body + b"\0" * (-(len(body) + 4) % 8)
    return struct.pack("=HH", (len(body) + 4) // 8, etype) + body


def sockaddr(ip, port=0):
    a = ipaddress.ip_address(ip)
    if a.version == 4:
        return struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + a.packed + b"\0" * 8
    return struct.pack("=H", socket.AF_INET6) + struct.pack("!HI", port, 0) + a.packed + b"\0" * 4


def address(etype, ip, prefix=None, proto=0):
    a = ipaddress.ip_address(ip)
    prefix = (32 if a.version == 4 else 128) if prefix is None else prefix
    return ext(etype, struct.pack("=BBH", proto, prefix, 0) + sockaddr(ip))


def sa(spi, replay=0, state=1, auth=0, enc=0, flags=0):
    return ext(EXT_SA, struct.pack("!I", spi) + struct.pack("=BBBBI", replay, state, auth, enc, flags))


def key(etype, k):
    return ext(etype, struct.pack("=HH", len(k) * 8, 0) + k)


def lifetime(etype, addtime):
    return ext(etype, struct.pack("=IQQQ", 0, 0, addtime, 0))


def request(proto, mode, level, reqid, src, dst):
    addrs = sockaddr(src) + sockaddr(dst)
    return struct.pack("=HHBBHII", 16 + len(addrs), proto, mode, level, 0, reqid, 0) + addrs


def policy(direction, requests, priority=0x80000000):
    return ext(EXT_POLICY, struct.pack("=HBBII", POLICY_IPSEC, direction, 0, 0, priority) + b"".join(requests))


def parse(msg):
    """(header tuple, {ext type: body after the 4-byte ext header})."""
    hdr = struct.unpack_from("=BBBBHHII", msg, 0)
    exts, off = {}, 16
    while off + 4 <= len(msg):
        elen, etype = struct.unpack_from("=HH", msg, off)
        if elen == 0:
            break
        exts[etype] = msg[off + 4:off + elen * 8]
        off += elen * 8
    return hdr, exts


class PfkeyClient:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.s.connect(path)
        self.pid = os.getpid()
        self.seq = 0

    def close(self):
        self.s.close()

    def send(self, mtype, satype, *exts):
        self.seq += 1
        body = b"".join(exts)
        self.s.send(struct.pack("=BBBBHHII", PF_KEY_V2, mtype, 0, satype, 2 + len(body) // 8, 0, self.seq,
                                self.pid) + body)
        return self.seq

    def recv(self, timeout=3.0):
        r, _, _ = select.select([self.s], [], [], timeout)
        return parse(self.s.recv(65536)) if r else None

    def wait_for(self, mtype, timeout=3.0, seq=None):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = self.recv(deadline - time.monotonic())
            if m and m[0][1] == mtype and (seq is None or m[0][6] == seq):
                return m
        return None

    def call(self, mtype, satype, *exts):
        seq = self.send(mtype, satype, *exts)
        return self.wait_for(mtype, seq=seq)


def errno_of(m):
    return m[0][2]


class PfkeyMoreTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tb = Testbed.for_class(cls)
        cls.tb.start(cls.tb.a, "")
        cls.path = os.path.join(cls.tb.a.runtime, "pfkey")

    def setUp(self):
        self.c = PfkeyClient(self.path)
        self.c.call(SADB_FLUSH, 0)
        self.c.call(SADB_X_SPDFLUSH, 0)

    def tearDown(self):
        self.c.close()

    def add_esp(self, spi, *extra, replay=32, flags=0):
        return self.c.call(SADB_ADD, SATYPE_ESP, key(EXT_KEY_ENC, KEY),
                           sa(spi, replay=replay, enc=AES_GCM_16, flags=flags),
                           ext(EXT_SA2, struct.pack("=BBHII", MODE_TUNNEL, 0, 0, 0, 0)),
                           address(EXT_SRC, "192.0.2.2"), address(EXT_DST, "192.0.2.1"), *extra)

    def get(self, spi, src="192.0.2.2", dst="192.0.2.1"):
        return self.c.call(SADB_GET, SATYPE_ESP, sa(spi), address(EXT_SRC, src), address(EXT_DST, dst))

    def add_tunnel_sa(self, spi, src, dst):
        r = self.c.call(SADB_ADD, SATYPE_ESP, key(EXT_KEY_ENC, KEY), sa(spi, replay=32, enc=AES_GCM_16),
                        ext(EXT_SA2, struct.pack("=BBHII", MODE_TUNNEL, 0, 0, 0, 0)),
                        address(EXT_SRC, src), address(EXT_DST, dst))
        self.assertEqual(errno_of(r), 0, r)

    def tunnel_out_policy(self):
        add = self.c.call(SADB_X_SPDADD, 0,
                          policy(DIR_OUT, [request(IPPROTO_ESP, MODE_TUNNEL, LEVEL_REQUIRE, 0,
                                                   "192.0.2.1", "192.0.2.2")]),
                          address(EXT_SRC, "198.51.100.0", 24, 255), address(EXT_DST, "203.0.113.0", 24, 255))
        self.assertEqual(errno_of(add), 0)

    def migrate_to(self, client, new_src, new_dst):
        return client.send(SADB_X_MIGRATE, SATYPE_ESP, address(EXT_SRC, "198.51.100.0", 24, 255),
                           address(EXT_DST, "203.0.113.0", 24, 255),
                           policy(DIR_OUT, [request(IPPROTO_ESP, MODE_TUNNEL, LEVEL_REQUIRE, 0, "192.0.2.1", "192.0.2.2"),
                                            request(IPPROTO_ESP, MODE_TUNNEL, LEVEL_REQUIRE, 0, new_src, new_dst)]))

    def test_esn_and_a_4096_window_round_trip(self):
        r = self.add_esp(0x4001, ext(EXT_SA_REPLAY, struct.pack("=I", 4096)), replay=255, flags=SAFLAG_ESN)
        self.assertIsNotNone(r)
        self.assertEqual(errno_of(r), 0, r)
        g = self.get(0x4001)
        self.assertEqual(errno_of(g), 0)
        spi, replay, _state, _auth, _enc, flags = struct.unpack("!I", g[1][EXT_SA][:4]) + \
            struct.unpack_from("=BBBBI", g[1][EXT_SA], 4)
        self.assertEqual(replay, 255)
        self.assertTrue(flags & SAFLAG_ESN)
        self.assertIn(EXT_SA_REPLAY, g[1])
        self.assertEqual(struct.unpack_from("=I", g[1][EXT_SA_REPLAY])[0], 4096)
        # Never silently clipped: a window the data path cannot keep is refused.
        big = self.add_esp(0x4002, ext(EXT_SA_REPLAY, struct.pack("=I", 65537)), replay=255)
        self.assertEqual(errno_of(big), EINVAL)

    def test_setkey_tunnel_options_come_back_in_get(self):
        r = self.tb.a.setkey("add 192.0.2.2 192.0.2.1 esp 0x4201 -m tunnel -df copy -mtu 1400 -tfc 512 -dummy 250 "
                             "-E aes-gcm-16 0x000102030405060708090a0b0c0d0e0f10111213;\n"
                             "add 192.0.2.2 192.0.2.1 esp 0x4202 -m tunnel "
                             "-E aes-gcm-16 0x000102030405060708090a0b0c0d0e0f10111213;\n")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        g = self.get(0x4201)
        self.assertEqual(errno_of(g), 0)
        self.assertIn(EXT_SA_OPTIONS, g[1])
        self.assertEqual(struct.unpack_from("=BBHHHI", g[1][EXT_SA_OPTIONS]), (3, 0, 1400, 512, 0, 250))
        # Nothing set: nothing sent back, as for a Linux-only client.
        plain = self.get(0x4202)
        self.assertEqual(errno_of(plain), 0)
        self.assertNotIn(EXT_SA_OPTIONS, plain[1])
        # setkey -D prints the set fields on a line of their own, only for that SA.
        d = self.tb.a.exec([binary("setkey"), "--socket", self.path, "-D"], check=False)
        self.assertEqual(d.returncode, 0, d.stderr)
        self.assertIn("\tdf=copy mtu=1400 tfc=512 dummy=250(ms) \n", d.stdout)
        self.assertEqual(d.stdout.count("df="), 1, d.stdout)

    def test_setkey_esp_udp_original_address_comes_back(self):
        r = self.tb.a.setkey("add 192.0.2.2 192.0.2.1[31000] esp-udp 10.9.8.7 0x4501 -m transport "
                             "-E aes-gcm-16 0x000102030405060708090a0b0c0d0e0f10111213;\n")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        g = self.get(0x4501)
        self.assertEqual(errno_of(g), 0)
        self.assertEqual(g[1][EXT_NAT_T_OA][8:12], ipaddress.ip_address("10.9.8.7").packed)
        self.assertEqual(struct.unpack_from("!H", g[1][EXT_NAT_T_DPORT])[0], 31000)
        d = self.tb.a.exec([binary("setkey"), "--socket", self.path, "-D"], check=False)
        self.assertIn("\tnat-oa=10.9.8.7 \n", d.stdout)

    def test_nat_t_fields_round_trip(self):
        r = self.add_esp(0x4101, ext(EXT_NAT_T_TYPE, struct.pack("=B3x", 2)),
                         ext(EXT_NAT_T_SPORT, struct.pack("!H2x", 4500)),
                         ext(EXT_NAT_T_DPORT, struct.pack("!H2x", 31000)),
                         address(EXT_NAT_T_OA, "10.9.8.7"))
        self.assertEqual(errno_of(r), 0, r)
        g = self.get(0x4101)
        self.assertEqual(errno_of(g), 0)
        e = g[1]
        self.assertEqual(e[EXT_NAT_T_TYPE][0], 2)
        self.assertEqual(struct.unpack_from("!H", e[EXT_NAT_T_SPORT])[0], 4500)
        self.assertEqual(struct.unpack_from("!H", e[EXT_NAT_T_DPORT])[0], 31000)
        self.assertEqual(e[EXT_NAT_T_OA][8:12], ipaddress.ip_address("10.9.8.7").packed)

    def test_migrate_moves_a_tunnel_policy_and_its_sas(self):
        watcher = PfkeyClient(self.path)
        try:
            self.tunnel_out_policy()
            self.add_tunnel_sa(0x4301, "192.0.2.1", "192.0.2.2")
            self.add_tunnel_sa(0x4302, "192.0.2.2", "192.0.2.1")  # the other direction: not named, not moved
            while watcher.recv(0.2):  # the SPDADD and ADD broadcasts
                pass
            self.migrate_to(self.c, "192.0.2.9", "192.0.2.10")
            m = watcher.wait_for(SADB_X_MIGRATE)
            self.assertIsNotNone(m, "every socket hears the migration")
            self.assertEqual(errno_of(m), 0)
            self.c.send(SADB_X_SPDDUMP, 0)
            d = self.c.wait_for(SADB_X_SPDDUMP)  # one policy: its seq is 0, as every dump's last
            self.assertIsNotNone(d)
            self.assertIn(ipaddress.ip_address("192.0.2.9").packed, d[1][EXT_POLICY])
            self.assertNotIn(ipaddress.ip_address("192.0.2.1").packed, d[1][EXT_POLICY])
            # The SA is named by its new destination now, with both new addresses.
            g = self.get(0x4301, "192.0.2.9", "192.0.2.10")
            self.assertEqual(errno_of(g), 0)
            self.assertEqual(g[1][EXT_SRC][8:12], ipaddress.ip_address("192.0.2.9").packed)
            self.assertEqual(g[1][EXT_DST][8:12], ipaddress.ip_address("192.0.2.10").packed)
            self.assertEqual(errno_of(self.get(0x4301, "192.0.2.1", "192.0.2.2")), ESRCH)
            self.assertEqual(errno_of(self.get(0x4302, "192.0.2.2", "192.0.2.1")), 0)
        finally:
            watcher.close()

    def test_migrate_onto_a_taken_sa_name_moves_nothing(self):
        self.tunnel_out_policy()
        self.add_tunnel_sa(0x4401, "192.0.2.1", "192.0.2.2")
        self.add_tunnel_sa(0x4402, "192.0.2.1", "192.0.2.2")
        self.add_tunnel_sa(0x4402, "192.0.2.9", "192.0.2.10")  # 0x4402's new name, taken
        seq = self.migrate_to(self.c, "192.0.2.9", "192.0.2.10")
        r = self.c.wait_for(SADB_X_MIGRATE, seq=seq)
        self.assertIsNotNone(r)
        self.assertEqual(errno_of(r), EEXIST)
        # All or nothing: 0x4401 did not move either, nor did the policy.
        self.assertEqual(errno_of(self.get(0x4401, "192.0.2.1", "192.0.2.2")), 0)
        self.assertEqual(errno_of(self.get(0x4401, "192.0.2.9", "192.0.2.10")), ESRCH)
        self.c.send(SADB_X_SPDDUMP, 0)
        d = self.c.wait_for(SADB_X_SPDDUMP)
        self.assertIsNotNone(d)
        self.assertIn(ipaddress.ip_address("192.0.2.1").packed, d[1][EXT_POLICY])

    def test_a_pending_acquire_shows_in_dump_as_a_larval_sa(self):
        self.c.call(SADB_REGISTER, SATYPE_ESP)
        r = self.tb.a.setkey(spd_lines("a", 4, (4,)))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        ping = self.tb.a.popen(["ping", "-n", "-c", "1", "-W", "1", INNER[4][1]],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            acq = self.c.wait_for(SADB_ACQUIRE, timeout=5)
            self.assertIsNotNone(acq, "no ACQUIRE")
            self.c.send(SADB_DUMP, SATYPE_ESP)
            d = self.c.wait_for(SADB_DUMP)  # the only entry: seq 0
            self.assertIsNotNone(d)
            self.assertEqual(errno_of(d), 0)
            spi, _replay, state = struct.unpack("!I", d[1][EXT_SA][:4]) + struct.unpack_from("=BB", d[1][EXT_SA], 4)
            self.assertEqual((spi, state), (0, 0))  # SPI 0, SADB_SASTATE_LARVAL
            self.assertEqual(d[1][EXT_DST][8:12], acq[1][EXT_DST][8:12])
        finally:
            ping.wait(timeout=10)

    def test_a_policy_with_a_hard_lifetime_expires(self):
        self.c.call(SADB_REGISTER, SATYPE_ESP)
        add = self.c.call(SADB_X_SPDADD, 0,
                          policy(DIR_OUT, [request(IPPROTO_ESP, MODE_TUNNEL, LEVEL_REQUIRE, 0,
                                                   "192.0.2.1", "192.0.2.2")]),
                          address(EXT_SRC, "198.51.100.0", 24, 255), address(EXT_DST, "203.0.113.7", 32, 255),
                          lifetime(EXT_LT_HARD, 2), lifetime(EXT_LT_SOFT, 0))
        self.assertEqual(errno_of(add), 0)
        m = self.c.wait_for(SADB_X_SPDEXPIRE, timeout=6)
        self.assertIsNotNone(m, "no X_SPDEXPIRE")
        self.assertEqual(struct.unpack_from("=IQQQ", m[1][EXT_LT_HARD])[2], 2)
        self.assertEqual(errno_of(self.c.call(SADB_X_SPDDUMP, 0)), ENOENT)

    def test_net_key_sysctls(self):
        a = self.tb.a
        all_ = json.loads(a.ipsecctl("sysctl", "--json"))
        for name in ("net.key.larval_lifetime", "net.key.blockacq_count", "net.key.blockacq_lifetime",
                     "net.key.spi_minval", "net.key.spi_maxval", "net.key.debug"):
            self.assertIn(name, all_)
        a.sysctl("net.key.spi_minval=4096")
        a.sysctl("net.key.spi_maxval=8191")
        try:
            for _ in range(5):
                g = self.c.call(SADB_GETSPI, SATYPE_ESP, address(EXT_SRC, "192.0.2.2"), address(EXT_DST, "192.0.2.1"))
                self.assertEqual(errno_of(g), 0)
                spi = struct.unpack("!I", g[1][EXT_SA][:4])[0]
                self.assertTrue(4096 <= spi <= 8191, hex(spi))
            charon = self.c.call(SADB_GETSPI, SATYPE_ESP,
                                 ext(EXT_SPIRANGE, struct.pack("=III", 0xc0000000, 0xcfffffff, 0)),
                                 address(EXT_SRC, "192.0.2.2"), address(EXT_DST, "192.0.2.1"))
            self.assertEqual(errno_of(charon), EINVAL)
        finally:
            a.sysctl("net.key.spi_minval=256")
            a.sysctl("net.key.spi_maxval=4294967295")


class MigrateTrafficTest(unittest.TestCase):
    """Two ipsecd: each side moves its SAs and policies to a second address
    pair on the veth (a MOBIKE-style move), the old addresses go away, and
    the tunnel carries traffic again."""

    NEW = ("192.0.2.11", "192.0.2.12")

    def migrate(self, host, old, new):
        c = PfkeyClient(os.path.join(host.runtime, "pfkey"))
        try:
            lnet, rnet = INNER_NETS[4] if host.side == "a" else reversed(INNER_NETS[4])
            for direction, (sel_src, sel_dst), (o_src, o_dst), (n_src, n_dst) in (
                    (DIR_OUT, (lnet, rnet), old, new),
                    (DIR_IN, (rnet, lnet), old[::-1], new[::-1]),
                    (DIR_FWD, (rnet, lnet), old[::-1], new[::-1])):
                seq = c.send(SADB_X_MIGRATE, SATYPE_ESP,
                             address(EXT_SRC, sel_src.split("/")[0], 24, 255),
                             address(EXT_DST, sel_dst.split("/")[0], 24, 255),
                             policy(direction, [request(IPPROTO_ESP, MODE_TUNNEL, LEVEL_REQUIRE, 0, o_src, o_dst),
                                                request(IPPROTO_ESP, MODE_TUNNEL, LEVEL_REQUIRE, 0, n_src, n_dst)]))
                m = c.wait_for(SADB_X_MIGRATE)
                self.assertIsNotNone(m, f"no answer to migrate {seq} on {host.side}")
                self.assertEqual(errno_of(m), 0, f"{host.side} dir {direction}")
            # The outbound SA answers to its new name only.
            g = c.call(SADB_GET, SATYPE_ESP, sa(0x1001 if host.side == "a" else 0x1002),
                       address(EXT_SRC, new[0]), address(EXT_DST, new[1]))
            self.assertEqual(errno_of(g), 0)
        finally:
            c.close()

    def test_ping_works_again_after_both_sides_move_to_new_addresses(self):
        with Testbed(tag=f"{os.getpid() % 100000}m") as tb:
            tb.start_pair()
            self.assertEqual(ping(tb.a, INNER[4][1]).returncode, 0, tb.log_text(tb.a))
            for h, dev, addr in ((tb.a, "veth-ipsec-a", self.NEW[0]), (tb.b, "veth-ipsec-b", self.NEW[1])):
                # The new address outlives the old (primary) one only if promoted.
                h.exec(["sysctl", "-q", "-w", f"net.ipv4.conf.{dev}.promote_secondaries=1"])
                h.exec(["ip", "addr", "add", f"{addr}/24", "dev", dev])
            self.migrate(tb.a, OUTER[4], self.NEW)
            self.migrate(tb.b, OUTER[4][::-1], self.NEW[::-1])
            # Without the old pair, only the new one can carry the tunnel.
            for h, dev, idx in ((tb.a, "veth-ipsec-a", 0), (tb.b, "veth-ipsec-b", 1)):
                h.exec(["ip", "addr", "del", f"{OUTER[4][idx]}/24", "dev", dev])
            r = ping(tb.a, INNER[4][1])
            self.assertEqual(r.returncode, 0, r.stdout + tb.log_text(tb.a) + tb.log_text(tb.b))


class RefusedUpdateTrafficTest(unittest.TestCase):
    def test_a_refused_update_leaves_both_sas_carrying_traffic(self):
        """An UPDATE policy accepts but the broker refuses (AES-GCM with a
        24-byte key: 20 bytes is no AES key size) is EINVAL and leaves the SA
        as it was, as Linux does: GET shows the old key and ping still flows
        over both SAs (before, the old SA went with the refused one)."""
        with Testbed(tag=f"{os.getpid() % 100000}u") as tb:
            tb.start_pair()
            self.assertEqual(ping(tb.a, INNER[4][1]).returncode, 0, tb.log_text(tb.a))
            c = PfkeyClient(os.path.join(tb.a.runtime, "pfkey"))
            try:
                for spi, src, dst in ((SPI_AB, OUTER[4][0], OUTER[4][1]), (SPI_BA, OUTER[4][1], OUTER[4][0])):
                    r = c.call(SADB_UPDATE, SATYPE_ESP, key(EXT_KEY_ENC, bytes(range(24))),
                               sa(spi, replay=64, enc=AES_GCM_16),
                               ext(EXT_SA2, struct.pack("=BBHII", MODE_TUNNEL, 0, 0, 0, 0)),
                               address(EXT_SRC, src), address(EXT_DST, dst))
                    self.assertIsNotNone(r, f"no answer to the UPDATE of {spi:#x}")
                    self.assertEqual(errno_of(r), EINVAL, f"{spi:#x}")
                g = c.call(SADB_GET, SATYPE_ESP, sa(SPI_AB), address(EXT_SRC, OUTER[4][0]),
                           address(EXT_DST, OUTER[4][1]))
                self.assertEqual(errno_of(g), 0)
                self.assertEqual(g[1][EXT_KEY_ENC][4:4 + len(GCM_KEY_AB)], GCM_KEY_AB)
            finally:
                c.close()
            self.assertEqual(tb.a.counter("sessions_refused", "ipsec-keydb"), 2)
            r = ping(tb.a, INNER[4][1])
            self.assertEqual(r.returncode, 0, r.stdout + tb.log_text(tb.a))


class ReplayWindowSysctlTest(unittest.TestCase):
    """An SA added by setkey without -r gets net.inet.ipsec.replay_window's
    window (64) in the forwarder: a captured ESP packet of A's, sent again
    into B's namespace, is counted esp_in_drop_replay and not delivered. With
    the sysctl 0, an SA installed afterwards delivers it every time. GET still
    shows the 0 the client set."""

    def b_counters(self, tb):
        return tb.b.stats()["ipsec-forwarder"]["counters"]

    def resend(self, tb, esp, expected):
        before = self.b_counters(tb)
        espeer.send_esp(tb.a, OUTER[4][1], [esp])

        def reached():
            now = self.b_counters(tb)
            return all(now[k] - before[k] >= v for k, v in expected.items())
        espeer.wait_until(reached, timeout=5)
        time.sleep(0.3)  # anything counted late shows up now
        after = self.b_counters(tb)
        got = {k: after[k] - before[k] for k in ("esp_in_packets", "esp_in_drop_replay", "esp_out_packets")}
        self.assertEqual(got, expected)

    def test_a_resent_packet_is_a_replay_under_the_default_window_and_delivered_with_0(self):
        with Testbed(tag=f"{os.getpid() % 100000}r") as tb:
            sas = sa_lines("aes-gcm", 4).replace("-r 64 ", "")
            self.assertNotIn("-r", sas)
            for h in (tb.a, tb.b):
                tb.start(h, "flush;\nspdflush;\n" + sas + spd_lines(h.side, 4, (4,)))
            self.assertEqual(json.loads(tb.b.ipsecctl("sysctl", "net.inet.ipsec.replay_window", "--json")),
                             {"net.inet.ipsec.replay_window": 64})
            from scapy.layers.inet import IP  # the capture's packets decode as IP once it is loaded

            def from_a(ps):
                return [p for p in ps if IP in p and p[IP].src == OUTER[4][0]]
            with espeer.Capture(tb.b, os.path.join(tb.b.workdir, "a-to-b.pcap")) as cap:
                r = ping(tb.a, INNER[4][1], count=1)
                self.assertEqual(r.returncode, 0, r.stdout + tb.log_text(tb.a) + tb.log_text(tb.b))
                pkts = from_a(cap.wait_for(from_a))
            self.assertTrue(pkts, "A's ESP packet not captured")
            esp = espeer.esp_payload(pkts[0])
            self.assertEqual(struct.unpack("!I", esp[:4])[0], SPI_AB)
            c = PfkeyClient(os.path.join(tb.b.runtime, "pfkey"))
            try:
                g = c.call(SADB_GET, SATYPE_ESP, sa(SPI_AB), address(EXT_SRC, OUTER[4][0]),
                           address(EXT_DST, OUTER[4][1]))
                self.assertEqual(errno_of(g), 0)
                self.assertEqual(g[1][EXT_SA][4], 0, "GET shows the window the client set")
            finally:
                c.close()
            self.resend(tb, esp, {"esp_in_packets": 0, "esp_in_drop_replay": 1, "esp_out_packets": 0})
            # The sysctl applies to SAs installed afterwards, not to this one.
            tb.b.ipsecctl("sysctl", "net.inet.ipsec.replay_window=0")
            time.sleep(0.2)
            self.resend(tb, esp, {"esp_in_packets": 0, "esp_in_drop_replay": 1, "esp_out_packets": 0})
            add_ab = next(line for line in sas.splitlines() if f"{SPI_AB:#x}" in line)
            r = tb.b.setkey(f"delete {OUTER[4][0]} {OUTER[4][1]} esp {SPI_AB:#x};\n{add_ab}\n")
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            for _ in range(2):  # delivered (and answered) each time: no window
                self.resend(tb, esp, {"esp_in_packets": 1, "esp_in_drop_replay": 0, "esp_out_packets": 1})


class OneAcquireTest(unittest.TestCase):
    """racoon's sequence answers one ACQUIRE: the held ping's, then about a
    second later GETSPI for the inbound SA, UPDATE of it and ADD of the
    outbound SA sent back to back. The inbound SA releases the held packet
    into a forwarder that must not ask again (it used to, once its 1 s
    interval had passed, and that ACQUIRE reached policy after the ADD had
    ended the pending state: seq 2, a second negotiation)."""

    def test_racoons_sequence_gets_exactly_one_acquire_and_the_ping_flows(self):
        with Testbed(tag=f"{os.getpid() % 100000}q") as tb:
            a_out, b_out = OUTER[4]
            tb.start(tb.b, "flush;\nspdflush;\n" + sa_lines("aes-gcm", 4) + spd_lines("b", 4, (4,)))
            tb.start(tb.a, "flush;\nspdflush;\n" + spd_lines("a", 4, (4,)))
            c = PfkeyClient(os.path.join(tb.a.runtime, "pfkey"))
            try:
                self.assertEqual(errno_of(c.call(SADB_REGISTER, SATYPE_ESP)), 0)
                pinger = tb.a.popen(["ping", "-n", "-c", "1", "-W", "8", INNER[4][1]],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                acq = c.wait_for(SADB_ACQUIRE, timeout=5)
                self.assertIsNotNone(acq, "no ACQUIRE for the held ping")
                acq_seq = acq[0][6]
                time.sleep(1.2)  # the negotiation: longer than the forwarder's ACQUIRE interval
                g_seq = c.send(SADB_GETSPI, SATYPE_ESP,
                               ext(EXT_SPIRANGE, struct.pack("=III", SPI_BA, SPI_BA, 0)),
                               address(EXT_SRC, b_out), address(EXT_DST, a_out))
                g = c.wait_for(SADB_GETSPI, timeout=10, seq=g_seq)
                self.assertIsNotNone(g, "no answer to GETSPI")
                self.assertEqual(errno_of(g), 0)
                sa2 = ext(EXT_SA2, struct.pack("=BBHII", MODE_TUNNEL, 0, 0, 0, 0))
                c.seq = acq_seq - 1  # racoon sends its SA messages under the acquire's seq
                upd = c.send(SADB_UPDATE, SATYPE_ESP, key(EXT_KEY_ENC, GCM_KEY_BA),
                             sa(SPI_BA, replay=32, enc=AES_GCM_16), sa2, address(EXT_SRC, b_out),
                             address(EXT_DST, a_out))
                c.seq = acq_seq - 1
                add = c.send(SADB_ADD, SATYPE_ESP, key(EXT_KEY_ENC, GCM_KEY_AB),
                             sa(SPI_AB, replay=32, enc=AES_GCM_16), sa2, address(EXT_SRC, a_out),
                             address(EXT_DST, b_out))
                # Both answers, then 2 s more for a second ACQUIRE to show up.
                replies, acquires = {}, [acq]
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    m = c.recv(deadline - time.monotonic())
                    if m is None:
                        break
                    if m[0][1] == SADB_ACQUIRE:
                        acquires.append(m)
                    elif m[0][1] in (SADB_UPDATE, SADB_ADD) and m[0][7] == c.pid:
                        replies[m[0][1]] = errno_of(m)
                        if len(replies) == 2:
                            deadline = min(deadline, time.monotonic() + 2)
                self.assertEqual(replies, {SADB_UPDATE: 0, SADB_ADD: 0}, f"seq {upd} {add}")
                self.assertEqual([m[0][6] for m in acquires], [acq_seq], "one ACQUIRE, and only one")
                out, _ = pinger.communicate(timeout=15)
                self.assertEqual(pinger.returncode, 0, out + tb.log_text(tb.a))
            finally:
                c.close()


if __name__ == "__main__":
    unittest.main()
