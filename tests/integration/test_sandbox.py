"""ipsecctl audit shows five processes, four of them sandboxed (own uid, no
capabilities, no_new_privs, seccomp filter, empty root, not dumpable); and the
forwarder's memory holds none of the keys."""

import os
import re
import unittest

from harness import (CBC_KEY_AB, CBC_KEY_BA, GCM_KEY_AB, GCM_KEY_BA, HMAC_KEY_AB, HMAC_KEY_BA, INNER, Testbed,
                     binary, ping, run)

CHILDREN = {"ipsec-keydb": 64701, "ipsec-policy": 64702, "ipsec-crypto": 64703, "ipsec-forwarder": 64704}


def process_memory(pid):
    """Every readable private mapping of pid, as one bytes object."""
    chunks = []
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            m = re.match(r"([0-9a-f]+)-([0-9a-f]+) (\S+)", line)
            start, end, perms = int(m.group(1), 16), int(m.group(2), 16), m.group(3)
            if perms[0] != "r" or "[vvar]" in line or "[vsyscall]" in line:
                continue
            try:
                mem.seek(start)
                chunks.append(mem.read(end - start))
            except (OSError, ValueError, OverflowError):
                pass
    return b"".join(chunks)


class SandboxTest(unittest.TestCase):
    def test_forwarder_may_not_open_create_sockets_or_exec(self):
        out = run([binary("ipsec-forwarder"), "--print-profile"]).stdout
        allowed = {line.split()[0] for line in out.splitlines() if line.startswith("    ")}
        self.assertIn("recvmmsg", allowed)
        for forbidden in ("open", "openat", "openat2", "creat", "socket", "socketpair", "connect", "bind",
                          "execve", "execveat", "ptrace", "fork", "vfork"):
            self.assertNotIn(forbidden, allowed)
        for name in CHILDREN:
            self.assertEqual(run([binary(name), "--print-profile"]).returncode, 0, name)

    def test_profiles_show_argument_conditions(self):
        """No child may make memory executable; the forwarder sets two socket
        options (UDP_GRO; IP_MTU_DISCOVER for the IPv4 NAT-T socket's DF),
        keydb and policy only channel buffer sizes."""
        for name in CHILDREN:
            rules = [line.split(None, 1) for line in run([binary(name), "--print-profile"]).stdout.splitlines()
                     if line.startswith("    ")]
            for call, text in rules:
                if call in ("mmap", "mprotect"):
                    self.assertIn("[only if arg2 & 0x4 == 0x0 (prot without PROT_EXEC)]", text, name)
                self.assertNotIn(call, ("pkey_mprotect", "mmap2"), name)
            setsockopt = [text for call, text in rules if call == "setsockopt"]
            if name == "ipsec-forwarder":
                self.assertEqual(len(setsockopt), 2, setsockopt)
                self.assertIn("[only if arg1 == 0x11 (SOL_UDP) and arg2 == 0x68 (UDP_GRO)]", setsockopt[0])
                self.assertIn("[only if arg1 == 0x0 (IPPROTO_IP) and arg2 == 0xa (IP_MTU_DISCOVER)]", setsockopt[1])
            for text in setsockopt:
                self.assertIn("[only if arg1 == ", text, name)

    def test_audit_shows_every_child_confined(self):
        with Testbed() as tb:
            tb.start_pair("aes-gcm", 4)
            procs = {p["name"]: p for p in tb.a.audit()}
            self.assertIn("ipsecd", procs)
            for name, uid in CHILDREN.items():
                p = procs[name[:15]]
                self.assertEqual(p["uid"]["effective"], uid, name)
                self.assertEqual(p["uid"]["real"], uid, name)
                self.assertEqual(p["gid"]["effective"], uid, name)
                caps = p["capabilities"]
                for kind in ("effective", "permitted", "bounding", "ambient"):
                    self.assertEqual(caps[kind], [], f"{name} {kind}")
                self.assertTrue(p["no_new_privs"], name)
                self.assertEqual(p["seccomp"], 2, name)
                self.assertIs(p["dumpable"], False, name)
                self.assertTrue(p["root"].endswith("/empty"), f"{name} root {p['root']}")
                # The argument conditions of its allow-list, which /proc does not show.
                self.assertIn("mmap: arg2 & 0x4 == 0x0 (prot without PROT_EXEC)", p["seccomp_conditions"], name)
            fwd_fds = " ".join(f["target"] for f in procs["ipsec-forwarder"]["fds"])
            self.assertIn("tun", fwd_fds)
            self.assertIn("setsockopt: arg1 == 0x11 (SOL_UDP) and arg2 == 0x68 (UDP_GRO)",
                          procs["ipsec-forwarder"]["seccomp_conditions"])
            self.assertNotIn("seccomp_conditions", procs["ipsecd"])
            # The table form names every process too.
            table = tb.a.ipsecctl("audit")
            for name in CHILDREN:
                self.assertIn(name[:15], table)
            self.assertIn("ipsec-forwarder  setsockopt: arg1 == 0x11 (SOL_UDP) and arg2 == 0x68 (UDP_GRO)", table)

    def test_forwarder_holds_raw_sockets_only_for_the_protocols_it_reads(self):
        """ESP (50) and AH (51) raw sockets, and no IPComp (108) one: IPComp
        travels only inside ESP, so such a socket would be unread privilege."""
        with Testbed() as tb:
            tb.start_pair("aes-gcm", 4)
            fwd = tb.a.pid_of("ipsec-forwarder")
            held = set()
            for fd in os.listdir(f"/proc/{fwd}/fd"):
                m = re.match(r"socket:\[(\d+)\]", os.readlink(f"/proc/{fwd}/fd/{fd}"))
                if m:
                    held.add(int(m.group(1)))
            protocols = set()
            for table in ("raw", "raw6"):
                # The forwarder's network namespace, seen through its pid.
                with open(f"/proc/{fwd}/net/{table}") as f:
                    for line in f.readlines()[1:]:
                        cols = line.split()
                        if int(cols[9]) in held:
                            protocols.add((table, int(cols[1].split(":")[1], 16)))
            self.assertIn(("raw", 50), protocols)
            self.assertIn(("raw6", 51), protocols)
            self.assertEqual({p for p in protocols if p[1] == 108}, set(), f"forwarder raw sockets: {protocols}")

    def test_forwarder_memory_holds_no_key(self):
        with Testbed() as tb:
            tb.start_pair("aes-gcm", 4)
            self.assertEqual(ping(tb.a, INNER[4][1], count=3).returncode, 0)
            fwd = tb.a.pid_of("ipsec-forwarder")
            crypto = tb.a.pid_of("ipsec-crypto")
            mem = process_memory(fwd)
            self.assertGreater(len(mem), 1 << 20)
            for key in (GCM_KEY_AB, GCM_KEY_BA):
                self.assertNotIn(key[:16], mem, "a key in the forwarder's memory")
            # The check can fail: the broker does hold the key (in locked memory).
            self.assertIn(GCM_KEY_AB[:16], process_memory(crypto))

    def test_forwarder_memory_holds_no_cbc_or_hmac_key(self):
        with Testbed() as tb:
            tb.start_pair("aes-cbc", 4)
            self.assertEqual(ping(tb.a, INNER[4][1], count=3).returncode, 0)
            mem = process_memory(tb.a.pid_of("ipsec-forwarder"))
            for key in (CBC_KEY_AB, CBC_KEY_BA, HMAC_KEY_AB, HMAC_KEY_BA):
                self.assertNotIn(key, mem)


if __name__ == "__main__":
    unittest.main()
