"""Small stand-ins for racoon and charon, run under libipsec-pfkey-preload.so
by test_preload.py with /usr/bin/python3. Each does exactly what the daemon
does with the kernel, through the ordinary libc calls the preload
interposes (Python's socket module calls socket/send/recv/bind/setsockopt),
and knows nothing of ipsecd. Each step prints "ok STEP ..." or "FAIL STEP ...";
the first failure ends the run with status 1.

  racoon                 racoon's start: a non-blocking PF_KEY socket, REGISTER
                         then read at once; then every other request type the
                         same way: its answer must be there when send() returns.
  loop charon|racoon     a registered socket read in charon's loop (poll, then a
                         non-blocking recv; an end-of-file is "corrupted" and the
                         loop goes on) or racoon's (non-blocking socket, select,
                         recv). On stdin: "stop" (report and exit), "send" (a
                         REGISTER on the old socket), "reopen" (a new socket).
  natt                   charon's NAT-T sockets: UDP 4500 bound on IPv4 and IPv6
                         (V6ONLY) without SO_REUSEPORT; prints what arrives; on
                         stdin "send 4|6 ADDR HEX" sends from them to ADDR:4500.
  bypass PEER4 PEER6     charon's IKE sockets: a bypass IP_IPSEC_POLICY /
                         IPV6_IPSEC_POLICY on one socket per family, one datagram
                         from it to PEER:500 and one from a plain socket to
                         PEER:501; an IPsec policy is EOPNOTSUPP, a short one EINVAL.
"""

import errno
import os
import select
import socket
import struct
import sys
import time

PF_KEY_V2 = 2
SADB_GETSPI, SADB_UPDATE, SADB_ADD, SADB_DELETE, SADB_GET = 1, 2, 3, 4, 5
SADB_REGISTER, SADB_FLUSH, SADB_DUMP, SADB_X_PROMISC = 7, 9, 10, 11
SADB_X_SPDADD, SADB_X_SPDDELETE, SADB_X_SPDGET, SADB_X_SPDDUMP, SADB_X_SPDFLUSH = 14, 15, 16, 18, 19
SATYPE_AH, SATYPE_ESP, SATYPE_IPCOMP = 2, 3, 9
EXT_SA, EXT_LT_HARD, EXT_SRC, EXT_DST, EXT_KEY_ENC, EXT_SPIRANGE, EXT_POLICY, EXT_SA2 = 1, 3, 5, 6, 9, 16, 18, 19
AES_GCM_16 = 20
IP_IPSEC_POLICY, IPV6_IPSEC_POLICY = 16, 34
POLICY_DISCARD, POLICY_NONE, POLICY_IPSEC, POLICY_BYPASS = 0, 1, 2, 4
DIR_IN, DIR_OUT = 1, 2
NATT_PORT = 4500

SRC4, DST4 = "192.0.2.1", "192.0.2.2"


def say(text):
    print(text, flush=True)


def fail(step, text):
    say(f"FAIL {step} {text}")
    sys.exit(1)


# ---- PF_KEY messages ---------------------------------------------------------------

def ext(etype, body):
    body = body + b"\0" * (-(len(body) + 4) % 8)
    return struct.pack("=HH", (len(body) + 4) // 8, etype) + body


def sockaddr4(ip, port=0):
    return struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + socket.inet_aton(ip) + b"\0" * 8


def address(etype, ip, prefix=32):
    return ext(etype, struct.pack("=BBH", 0, prefix, 0) + sockaddr4(ip))


def sa(spi, state=1, enc=0, replay=0):
    return ext(EXT_SA, struct.pack("!I", spi) + struct.pack("=BBBBI", replay, state, 0, enc, 0))


def policy(direction, ptype=POLICY_IPSEC):
    return ext(EXT_POLICY, struct.pack("=HBBII", ptype, direction, 0, 0, 0))


class Seq:
    n = 0


def message(mtype, satype, *exts):
    Seq.n += 1
    body = b"".join(exts)
    return Seq.n, struct.pack("=BBBBHHII", PF_KEY_V2, mtype, 0, satype, 2 + len(body) // 8, 0, Seq.n,
                              os.getpid()) + body


def header(msg):
    return struct.unpack_from("=BBBBHHII", msg, 0)  # version type errno satype len reserved seq pid


def drain(s):
    """Every message already queued on non-blocking `s`: never waits."""
    out = []
    while True:
        try:
            m = s.recv(65536)
        except BlockingIOError:
            return out
        out.append(m)


def pfkey_socket(nonblocking=True):
    s = socket.socket(socket.AF_KEY, socket.SOCK_RAW, PF_KEY_V2)
    s.setblocking(not nonblocking)
    return s


def ask_at_once(s, step, mtype, satype, *exts, want_errno=0):
    """racoon's pattern: send, then read without waiting; the answer must be there."""
    seq, msg = message(mtype, satype, *exts)
    s.send(msg)
    got = drain(s)
    # Dump entries count their seq down to 0 (af_key.c); they are ours by pid.
    dump = mtype in (SADB_DUMP, SADB_X_SPDDUMP)
    mine = [m for m in got if len(m) >= 16 and header(m)[1] == mtype and header(m)[7] == os.getpid()
            and (dump or header(m)[6] == seq)]
    if not mine:
        fail(step, f"no answer queued when send() returned ({len(got)} other messages)")
    if header(mine[0])[2] != want_errno:
        fail(step, f"errno {header(mine[0])[2]}, expected {want_errno}")
    return mine[0], got


def racoon():
    s = pfkey_socket()
    for satype, name in ((SATYPE_ESP, "ESP"), (SATYPE_AH, "AH"), (SATYPE_IPCOMP, "IPCOMP")):
        ask_at_once(s, f"REGISTER-{name}", SADB_REGISTER, satype)
        say(f"ok REGISTER-{name}")
    spirange = ext(EXT_SPIRANGE, struct.pack("=III", 0x1000, 0x1fff, 0))
    reply, _ = ask_at_once(s, "GETSPI", SADB_GETSPI, SATYPE_ESP, address(EXT_SRC, DST4), address(EXT_DST, SRC4),
                           spirange)
    spi = struct.unpack_from("!I", reply, 16 + 4)[0]
    say(f"ok GETSPI spi={spi:#x}")
    key = ext(EXT_KEY_ENC, struct.pack("=HH", 160, 0) + bytes(range(20)))
    sa2 = ext(EXT_SA2, struct.pack("=BBHII", 1, 0, 0, 0, 0))  # transport
    update = (sa(spi, enc=AES_GCM_16), sa2, address(EXT_SRC, DST4), address(EXT_DST, SRC4), key)
    steps = [
        ("UPDATE", SADB_UPDATE, SATYPE_ESP, update, 0),
        ("ADD", SADB_ADD, SATYPE_ESP, (sa(0x2001, enc=AES_GCM_16), sa2, address(EXT_SRC, SRC4),
                                       address(EXT_DST, DST4), key), 0),
        ("GET", SADB_GET, SATYPE_ESP, (sa(spi), address(EXT_SRC, DST4), address(EXT_DST, SRC4)), 0),
        ("GET-missing", SADB_GET, SATYPE_ESP, (sa(0x3333), address(EXT_SRC, DST4), address(EXT_DST, SRC4)),
         errno.ESRCH),
        ("DUMP", SADB_DUMP, SATYPE_ESP, (), 0),
        ("X_SPDADD", SADB_X_SPDADD, 0, (policy(DIR_OUT, POLICY_NONE), address(EXT_SRC, SRC4),
                                        address(EXT_DST, DST4)), 0),
        ("X_SPDDUMP", SADB_X_SPDDUMP, 0, (), 0),
        ("X_SPDDELETE", SADB_X_SPDDELETE, 0, (policy(DIR_OUT, POLICY_NONE), address(EXT_SRC, SRC4),
                                              address(EXT_DST, DST4)), 0),
        ("X_SPDFLUSH", SADB_X_SPDFLUSH, 0, (), 0),
        ("DELETE", SADB_DELETE, SATYPE_ESP, (sa(0x2001), address(EXT_SRC, SRC4), address(EXT_DST, DST4)), 0),
        ("FLUSH", SADB_FLUSH, SATYPE_ESP, (), 0),
        ("malformed", SADB_GET, SATYPE_ESP, (), errno.EINVAL),
        # Last: a promiscuous socket also gets copies of its own requests.
        ("X_PROMISC", SADB_X_PROMISC, 1, (), 0),  # broadcast to all, the sender too
    ]
    for step, mtype, satype, exts, want in steps:
        _, got = ask_at_once(s, step, mtype, satype, *exts, want_errno=want)
        say(f"ok {step} {len(got)} message(s) queued")
    s.close()


# ---- the service going away ----------------------------------------------------------

def register(s):
    _, msg = message(SADB_REGISTER, SATYPE_ESP)
    s.send(msg)


def loop(style):
    s = pfkey_socket(nonblocking=(style == "racoon"))
    register(s)
    seen = {"messages": 0, "eof": 0, "errors": {}}
    poller = select.poll()
    poller.register(s.fileno(), select.POLLIN)
    poller.register(sys.stdin.fileno(), select.POLLIN)
    say("ready")
    while True:
        events = dict(poller.poll(1000))
        if sys.stdin.fileno() in events:
            line = sys.stdin.readline().strip()
            if line in ("stop", ""):
                say(f"ok stop messages={seen['messages']} eof={seen['eof']} errors={seen['errors']}")
                return
            if line == "send":
                try:
                    register(s)
                    say("ok send accepted")
                except OSError as e:
                    say(f"ok send errno={e.errno}")
            if line == "reopen":
                t = pfkey_socket()
                register(t)
                reply = drain(t)
                say(f"ok reopen answers={len(reply)} errno={header(reply[0])[2] if reply else -1}")
                t.close()
        if s.fileno() in events:
            # charon: recv(MSG_DONTWAIT); racoon: recv on its non-blocking socket.
            try:
                m = s.recv(65536, socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue
            except OSError as e:
                seen["errors"][e.errno] = seen["errors"].get(e.errno, 0) + 1
                if style == "charon":
                    time.sleep(1)  # charon: "unable to receive from PF_KEY event socket"
                continue
            if len(m) < 16:
                seen["eof"] += 1  # charon: "received corrupted PF_KEY message", and on
                continue
            seen["messages"] += 1


# ---- UDP sockets ------------------------------------------------------------------------

def natt():
    socks = {}
    for fam, family, any_addr in ((4, socket.AF_INET, "0.0.0.0"), (6, socket.AF_INET6, "::")):
        u = socket.socket(family, socket.SOCK_DGRAM)
        if fam == 6:
            u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            u.bind((any_addr, NATT_PORT))
        except OSError as e:
            fail(f"bind-v{fam}", f"errno={e.errno} ({e.strerror})")
        socks[fam] = u
    say("ok bound")
    while True:
        ready, _, _ = select.select([sys.stdin, *socks.values()], [], [], 30)
        if not ready:
            return
        for r in ready:
            if r is sys.stdin:
                words = sys.stdin.readline().split()
                if not words or words[0] == "stop":
                    return
                fam, addr, payload = int(words[1]), words[2], bytes.fromhex(words[3])
                socks[fam].sendto(payload, (addr, NATT_PORT))
                say(f"ok sent v{fam}")
            else:
                data, peer = r.recvfrom(65536)
                say(f"recv {peer[0]} {peer[1]} {data.hex()}")


def bypass(peer4, peer6):
    for fam, family, level, name, peer in ((4, socket.AF_INET, socket.IPPROTO_IP, IP_IPSEC_POLICY, peer4),
                                            (6, socket.AF_INET6, socket.IPPROTO_IPV6, IPV6_IPSEC_POLICY, peer6)):
        ike = socket.socket(family, socket.SOCK_DGRAM)
        for direction in (DIR_IN, DIR_OUT):
            pol = struct.pack("=HHHBBI", 2, EXT_POLICY, POLICY_BYPASS, direction, 0, 0) + b"\0" * 4
            try:
                ike.setsockopt(level, name, pol)
            except OSError as e:
                fail(f"bypass-v{fam}", f"errno={e.errno} ({e.strerror})")
        say(f"ok bypass-v{fam} accepted")
        for ptype, want, step in ((POLICY_IPSEC, errno.EOPNOTSUPP, "ipsec"), (None, errno.EINVAL, "short")):
            pol = b"\0" * 4 if ptype is None else struct.pack("=HHHBBI", 2, EXT_POLICY, ptype, DIR_OUT, 0, 0) + b"\0" * 4
            try:
                socket.socket(family, socket.SOCK_DGRAM).setsockopt(level, name, pol)
                fail(f"{step}-v{fam}", "accepted")
            except OSError as e:
                if e.errno != want:
                    fail(f"{step}-v{fam}", f"errno={e.errno}, expected {want}")
        say(f"ok refused-v{fam} EOPNOTSUPP and EINVAL")
        ike.sendto(b"ike-bypass", (peer, 500))
        plain = socket.socket(family, socket.SOCK_DGRAM)
        plain.sendto(b"plain-spd", (peer, 501))
        say(f"ok sent-v{fam}")


def main():
    mode = sys.argv[1]
    if mode == "racoon":
        racoon()
    elif mode == "loop":
        loop(sys.argv[2])
    elif mode == "natt":
        natt()
    elif mode == "bypass":
        bypass(sys.argv[2], sys.argv[3])
    else:
        fail("usage", mode)


if __name__ == "__main__":
    main()
