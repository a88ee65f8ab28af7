"""A minimal PF_KEY v2 client for the NAT-T tests: ADD of an ESP-in-UDP SA and
REGISTER, spoken on ipsecd's PF_KEY socket (<runtime>/pfkey, AF_UNIX
SOCK_SEQPACKET) with the bytes <linux/pfkeyv2.h> defines, so the tests do
not depend on setkey knowing `esp-udp`.

Used by tests/interop/test_natt_scapy.py and tests/integration/test_natt.py.
"""

import ipaddress
import os
import select
import socket
import struct

PF_KEY_V2 = 2
SADB_ADD, SADB_REGISTER, SADB_X_NAT_T_NEW_MAPPING = 3, 7, 23
SADB_SATYPE_ESP = 3
EXT_SA, EXT_ADDRESS_SRC, EXT_ADDRESS_DST, EXT_KEY_ENCRYPT = 1, 5, 6, 9
EXT_X_SA2, EXT_NAT_T_TYPE, EXT_NAT_T_SPORT, EXT_NAT_T_DPORT = 19, 20, 21, 22
EXT_SA_OPTIONS = 29  # ours (lib/pfkey/message.h kExtSaOptions): df, mtu, tfc pad, dummy interval
SA_DF_CLEAR, SA_DF_SET, SA_DF_COPY = 1, 2, 3
SADB_X_EALG_AES_GCM_ICV16 = 20
IPSEC_MODE_TUNNEL = 2
UDP_ENCAP_ESPINUDP = 2
IPSEC_PROTO_ANY = 255


def _pad8(b):
    return b + bytes(-len(b) % 8)


def _address(ext_type, addr):
    ip = ipaddress.ip_address(addr)
    if ip.version == 4:
        sa = struct.pack("=H", socket.AF_INET) + struct.pack("!H", 0) + ip.packed + bytes(8)
        plen = 32
    else:
        sa = struct.pack("=H", socket.AF_INET6) + struct.pack("!HI", 0, 0) + ip.packed + struct.pack("=I", 0)
        plen = 128
    return _plain_ext(ext_type, struct.pack("=BBH", IPSEC_PROTO_ANY, plen, 0) + sa)


def _plain_ext(ext_type, body):
    """An extension: sadb_ext header (length in 8-byte units, itself included) + body, padded."""
    whole = _pad8(struct.pack("=HH", 0, ext_type) + body)
    return struct.pack("=HH", len(whole) // 8, ext_type) + whole[4:]


def _message(mtype, satype, seq, exts):
    body = b"".join(exts)
    return struct.pack("=BBBBHHII", PF_KEY_V2, mtype, 0, satype, (16 + len(body)) // 8, 0, seq, os.getpid()) + body


def add_natt_sa(spi, src, dst, gcm_key_salt, sport, dport, seq=1, replay=64, df=None):
    """SADB_ADD of an AES-GCM-16 tunnel-mode ESP SA encapsulated in UDP (RFC 3948);
    df (SA_DF_*): the SA's outer DF policy, else net.inet.ipsec.dfbit's."""
    exts = [
        _plain_ext(EXT_SA, struct.pack("!I", spi) + struct.pack("=BBBBI", replay, 0, 0, SADB_X_EALG_AES_GCM_ICV16, 0)),
        _plain_ext(EXT_X_SA2, struct.pack("=BBHII", IPSEC_MODE_TUNNEL, 0, 0, 0, 0)),
        _address(EXT_ADDRESS_SRC, src),
        _address(EXT_ADDRESS_DST, dst),
        _plain_ext(EXT_KEY_ENCRYPT, struct.pack("=HH", len(gcm_key_salt) * 8, 0) + gcm_key_salt),
        _plain_ext(EXT_NAT_T_TYPE, struct.pack("=B3x", UDP_ENCAP_ESPINUDP)),
        _plain_ext(EXT_NAT_T_SPORT, struct.pack("!H", sport) + bytes(2)),
        _plain_ext(EXT_NAT_T_DPORT, struct.pack("!H", dport) + bytes(2)),
    ]
    if df is not None:
        exts.append(_plain_ext(EXT_SA_OPTIONS, struct.pack("=BBHHHI", df, 0, 0, 0, 0, 0)))
    return _message(SADB_ADD, SADB_SATYPE_ESP, seq, exts)


def register_esp(seq=1):
    return _message(SADB_REGISTER, SADB_SATYPE_ESP, seq, [])


def header(msg):
    """(version, type, errno, satype, seq, pid) of a PF_KEY message."""
    v, t, e, st, _, _, seq, pid = struct.unpack("=BBBBHHII", msg[:16])
    return v, t, e, st, seq, pid


def extensions(msg):
    """{ext type: body bytes (after the 4-byte ext header)}."""
    out, off = {}, 16
    while off + 4 <= len(msg):
        ln, et = struct.unpack("=HH", msg[off:off + 4])
        if ln == 0:
            break
        out[et] = msg[off + 4:off + ln * 8]
        off += ln * 8
    return out


def address_of(body):
    """The IP address of an ADDRESS extension body."""
    fam = struct.unpack("=H", body[4:6])[0]
    if fam == socket.AF_INET:
        return str(ipaddress.ip_address(body[8:12]))
    return str(ipaddress.ip_address(body[12:28]))


def port_of(body):
    return struct.unpack("!H", body[:2])[0]


class Client:
    """One PF_KEY client socket on <runtime>/pfkey."""

    def __init__(self, runtime):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.connect(os.path.join(runtime, "pfkey"))

    def close(self):
        self.sock.close()

    def recv(self, timeout):
        r, _, _ = select.select([self.sock], [], [], timeout)
        if not r:
            return None
        return self.sock.recv(65536)

    def request(self, msg, timeout=5.0):
        """Sends msg and returns the reply of the same type and seq (errno checked by the caller)."""
        self.sock.send(msg)
        _, mtype, _, _, seq, _ = header(msg)
        while True:
            reply = self.recv(timeout)
            if reply is None:
                raise TimeoutError(f"no reply to PF_KEY type {mtype}")
            _, t, _, _, s, pid = header(reply)
            if t == mtype and s == seq and pid == os.getpid():
                return reply

    def wait_type(self, mtype, timeout=5.0):
        """The next message of mtype received within timeout, or None."""
        import time
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            m = self.recv(left)
            if m is None:
                return None
            if header(m)[1] == mtype:
                return m


def install(runtime, sas):
    """ADDs each (spi, src, dst, key, sport, dport[, df]); raises if any reply carries an errno."""
    c = Client(runtime)
    try:
        for i, (spi, src, dst, key, sport, dport, *df) in enumerate(sas, 1):
            reply = c.request(add_natt_sa(spi, src, dst, key, sport, dport, seq=i, df=df[0] if df else None))
            err = header(reply)[2]
            if err:
                raise OSError(err, f"PF_KEY ADD of SPI {spi:#x} refused: {os.strerror(err)}")
    finally:
        c.close()
