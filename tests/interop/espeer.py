"""The test's side of an ESP conversation with a real ipsecd: capture, send, seal, open.

Runs in the test process (root, outside the namespaces) and, for sending and
capturing, in short-lived children inside a Testbed host's namespace. Nothing
here trusts ipsecd: packets it sent are opened with python3-cryptography and
scapy, packets it receives are sealed the same way. Keys and SPIs are the
harness's, so these helpers speak to the SAs that sa_lines() installs.
Used by tests/interop and by tests/integration/test_bad_input.py.
"""

import hashlib
import os
import struct
from dataclasses import dataclass
from hmac import compare_digest

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import harness
from harness import (CBC_KEY_AB, CBC_KEY_BA, GCM_KEY_AB, GCM_KEY_BA, HMAC_KEY_AB, HMAC_KEY_BA,
                     SPI_AB, SPI_BA)

IPPROTO_ESP = 50
NH_IPV4 = 4
NH_IPV6 = 41
VETH = {"a": "veth-ipsec-a", "b": "veth-ipsec-b"}

# Per algorithm: the sizes the wire format has (RFC 4106 §3, RFC 3602 §2, RFC 4868 §2.3).
IV_LEN = {"aes-gcm": 8, "aes-cbc": 16}
ICV_LEN = {"aes-gcm": 16, "aes-cbc": 16}
BLOCK = {"aes-gcm": 4, "aes-cbc": 16}  # what the payload must align to


def wait_until(fn, timeout=5.0, step=0.05):
    """harness.wait_for that returns fn()'s last value at the timeout instead of raising.

    Kept for tests written against it; new code calls harness.wait_for, which says
    what it waited for."""
    last = None

    def remembered():
        nonlocal last
        last = fn()
        return last
    try:
        return harness.wait_for(remembered, timeout, "a condition", step)
    except AssertionError:
        return last


def keys(alg, direction):
    """(cipher key material, auth key) of the harness SA for direction 'ab' or 'ba'."""
    if alg == "aes-gcm":
        return (GCM_KEY_AB if direction == "ab" else GCM_KEY_BA), None
    if alg == "aes-cbc":
        return ((CBC_KEY_AB, HMAC_KEY_AB) if direction == "ab" else (CBC_KEY_BA, HMAC_KEY_BA))
    raise ValueError(alg)


def spi(direction):
    return SPI_AB if direction == "ab" else SPI_BA


def scapy_sa(alg, direction):
    """scapy's SecurityAssociation for the harness SA (tunnel mode is decided by the caller)."""
    from scapy.layers.ipsec import ESP, SecurityAssociation
    ck, ak = keys(alg, direction)
    if alg == "aes-gcm":
        # scapy takes key || salt and splits off the 4-byte salt itself.
        return SecurityAssociation(ESP, spi=spi(direction), crypt_algo="AES-GCM", crypt_key=ck)
    return SecurityAssociation(ESP, spi=spi(direction), crypt_algo="AES-CBC", crypt_key=ck,
                               auth_algo="SHA2-256-128", auth_key=ak)


def rfc_padding(n):
    """The default padding of RFC 4303 §2.4: 1, 2, 3, ..."""
    return bytes(range(1, n + 1))


def seal(alg, direction, seq, inner, nh=None, padding=None, iv=None, spi_value=None):
    """ESP payload (SPI..ICV) of `inner`, sealed independently of our code.

    padding=None pads the RFC way; any bytes given are used as they are, so a test
    can send wrong padding under a valid ICV. iv defaults to the sequence number
    (GCM) or random bytes (CBC)."""
    if nh is None:
        nh = NH_IPV4 if inner[0] >> 4 == 4 else NH_IPV6
    if padding is None:
        padding = rfc_padding(-(len(inner) + 2) % BLOCK[alg])
    plain = inner + padding + bytes([len(padding), nh])
    s = spi(direction) if spi_value is None else spi_value
    head = struct.pack("!II", s, seq)
    ck, ak = keys(alg, direction)
    if alg == "aes-gcm":
        iv = struct.pack("!Q", seq) if iv is None else iv
        body = AESGCM(ck[:-4]).encrypt(ck[-4:] + iv, plain, head)
        return head + iv + body
    iv = os.urandom(16) if iv is None else iv
    if len(plain) % 16:
        raise ValueError("CBC plaintext must be whole blocks")
    enc = Cipher(algorithms.AES(ck), modes.CBC(iv)).encryptor()
    body = head + iv + enc.update(plain) + enc.finalize()
    mac = hmac.HMAC(ak, hashes.SHA256())
    mac.update(body)
    return body + mac.finalize()[:16]


class OpenError(Exception):
    pass


def open_esp(alg, direction, esp):
    """(seq, iv, plaintext) of an ESP payload; raises OpenError if the ICV is wrong."""
    from cryptography.exceptions import InvalidTag
    ivl, icvl = IV_LEN[alg], ICV_LEN[alg]
    if len(esp) < 8 + ivl + icvl:
        raise OpenError("short")
    s, seq = struct.unpack("!II", esp[:8])
    if s != spi(direction):
        raise OpenError(f"SPI {s:#x}")
    iv = esp[8:8 + ivl]
    ck, ak = keys(alg, direction)
    if alg == "aes-gcm":
        try:
            return seq, iv, AESGCM(ck[:-4]).decrypt(ck[-4:] + iv, esp[8 + ivl:], esp[:8])
        except InvalidTag as e:
            raise OpenError("ICV") from e
    mac = hmac.HMAC(ak, hashes.SHA256())
    mac.update(esp[:-icvl])
    if not compare_digest(mac.finalize()[:icvl], esp[-icvl:]):
        raise OpenError("ICV")
    ct = esp[8 + ivl:-icvl]
    if len(ct) % 16:
        raise OpenError("length")
    dec = Cipher(algorithms.AES(ck), modes.CBC(iv)).decryptor()
    return seq, iv, dec.update(ct) + dec.finalize()


def split_trailer(alg, plain):
    """(inner, padding, next header) of a decrypted ESP payload."""
    padlen, nh = plain[-2], plain[-1]
    if padlen + 2 > len(plain):
        raise OpenError("pad length")
    return plain[:-2 - padlen], plain[-2 - padlen:-2], nh


def esp_payload(pkt):
    """The ESP bytes (SPI onwards) of a captured scapy packet, or None."""
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6
    if IP in pkt and pkt[IP].proto == IPPROTO_ESP:
        ip = pkt[IP]
        return bytes(ip.payload)[:ip.len - ip.ihl * 4]
    if IPv6 in pkt and pkt[IPv6].nh == IPPROTO_ESP:
        ip = pkt[IPv6]
        return bytes(ip.payload)[:ip.plen]
    return None


def outer_of(pkt):
    """(version, src, dst) of a captured packet's outer IP header."""
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6
    if IP in pkt:
        return 4, pkt[IP].src, pkt[IP].dst
    return 6, pkt[IPv6].src, pkt[IPv6].dst


def echo_reply_seq(inner, fam, ident):
    """The sequence number of `inner` if it is an echo reply of family `fam` (ICMP or ICMPv6)
    with identifier `ident`, else None: what the tests count as answered."""
    from scapy.layers.inet import ICMP
    from scapy.layers.inet6 import ICMPv6EchoReply
    if fam == 4 and ICMP in inner and inner[ICMP].type == 0 and inner[ICMP].id == ident:
        return inner[ICMP].seq
    if fam == 6 and ICMPv6EchoReply in inner and inner[ICMPv6EchoReply].id == ident:
        return inner[ICMPv6EchoReply].seq
    return None


class Capture(harness.Capture):
    """tcpdump -w on a host's veth, ESP only unless told; `with Capture(host, path) as cap:`."""

    def __init__(self, host, path, bpf="ip proto 50 or ip6 proto 50"):
        super().__init__(host, path, bpf, VETH[host.side])


SENDER = r"""
import socket, sys, time
dst, gap = sys.argv[1], float(sys.argv[2])
fam = socket.AF_INET6 if ':' in dst else socket.AF_INET
s = socket.socket(fam, socket.SOCK_RAW, 50)
for i, h in enumerate(sys.argv[3:]):
    if i and gap: time.sleep(gap)
    s.sendto(bytes.fromhex(h), (dst, 0))
"""


def send_esp(host, dst, payloads, gap=0.0):
    """Sends ESP payloads from `host` to `dst` on a raw ESP socket (the kernel adds the IP header)."""
    host.exec(["/usr/bin/python3", "-c", SENDER, dst, str(gap)] + [p.hex() for p in payloads], timeout=20)


def delta(before, after):
    """Counters that changed between two forwarder counter dicts, as {name: change}."""
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}



def start_hosts(tb, hosts, alg, outer):
    """Testbed.start for each host with the harness SAs and that side's policies."""
    for h in hosts:
        tb.start(h, "flush;\nspdflush;\n" + harness.sa_lines(alg, outer) + harness.spd_lines(h.side, outer))


def start_host(tb, h, alg, outer):
    start_hosts(tb, [h], alg, outer)
    return h


def start_pair(tb, alg, outer):
    """Testbed.start_pair with both hosts configured alike."""
    start_hosts(tb, [tb.a, tb.b], alg, outer)


# ---------------------------------------------------------------------------
# The algorithm matrix: every ESP transform scapy 2.5 and/or tshark 4.0 can
# check (../../../shared/INTEROP.md), installed all at once in one ipsecd on
# distinct SPIs, reqids and inner addresses, so one daemon per outer family
# serves the whole matrix.

@dataclass(frozen=True)
class MatrixCase:
    """One ESP transform: how setkey, scapy and tshark each name it."""
    name: str
    enc: str                 # setkey -E name
    enc_bytes: int           # key bytes including salt/nonce
    auth: str = None         # setkey -A name, None for AEADs
    auth_bytes: int = 0
    scapy_enc: str = None    # scapy CRYPT_ALGOS name (None: scapy cannot)
    scapy_auth: str = "NULL"
    icv: int = None          # AEAD ICV bytes when not scapy's default 16
    tshark_enc: str = None   # tshark uat:esp_sa names (None: tshark cannot)
    tshark_auth: str = "NULL"
    legacy: bool = False     # needs net.inet.ipsec.allow_legacy=1


_GCM = "AES-GCM with {} octet ICV [RFC4106]"
MATRIX = (
    MatrixCase("null+hmac-sha1", "null", 0, "hmac-sha1", 20, "NULL", "HMAC-SHA1-96",
               tshark_enc="NULL", tshark_auth="HMAC-SHA-1-96 [RFC2404]"),
    MatrixCase("aes-cbc-128+hmac-sha1", "aes-cbc", 16, "hmac-sha1", 20, "AES-CBC", "HMAC-SHA1-96",
               tshark_enc="AES-CBC [RFC3602]", tshark_auth="HMAC-SHA-1-96 [RFC2404]"),
    MatrixCase("aes-cbc-192+hmac-sha256", "aes-cbc", 24, "hmac-sha256", 32, "AES-CBC", "SHA2-256-128",
               tshark_enc="AES-CBC [RFC3602]", tshark_auth="HMAC-SHA-256-128 [RFC4868]"),
    MatrixCase("aes-cbc-256+hmac-sha384", "aes-cbc", 32, "hmac-sha384", 48, "AES-CBC", "SHA2-384-192",
               tshark_enc="AES-CBC [RFC3602]", tshark_auth="HMAC-SHA-384-192 [RFC4868]"),
    MatrixCase("aes-cbc-128+hmac-sha512", "aes-cbc", 16, "hmac-sha512", 64, "AES-CBC", "SHA2-512-256",
               tshark_enc="AES-CBC [RFC3602]", tshark_auth="HMAC-SHA-512-256 [RFC4868]"),
    MatrixCase("aes-ctr-128+hmac-sha256", "aes-ctr", 20, "hmac-sha256", 32, "AES-CTR", "SHA2-256-128",
               tshark_enc="AES-CTR [RFC3686]", tshark_auth="HMAC-SHA-256-128 [RFC4868]"),
    MatrixCase("aes-ctr-256+hmac-sha512", "aes-ctr", 36, "hmac-sha512", 64, "AES-CTR", "SHA2-512-256",
               tshark_enc="AES-CTR [RFC3686]", tshark_auth="HMAC-SHA-512-256 [RFC4868]"),
    MatrixCase("aes-gcm-16-128", "aes-gcm-16", 20, scapy_enc="AES-GCM", tshark_enc=_GCM.format(16)),
    MatrixCase("aes-gcm-16-256", "aes-gcm-16", 36, scapy_enc="AES-GCM", tshark_enc=_GCM.format(16)),
    MatrixCase("aes-gcm-8-128", "aes-gcm-8", 20, scapy_enc="AES-GCM-OLDAPI", icv=8,
               tshark_enc=_GCM.format(8)),
    MatrixCase("aes-gcm-12-256", "aes-gcm-12", 36, scapy_enc="AES-GCM-OLDAPI", icv=12,
               tshark_enc=_GCM.format(12)),
    MatrixCase("aes-gcm-12-192", "aes-gcm-12", 28, scapy_enc="AES-GCM-OLDAPI", icv=12,
               tshark_enc=_GCM.format(12)),
    MatrixCase("aes-ccm-8-128", "aes-ccm-8", 19, scapy_enc="AES-CCM", icv=8),
    MatrixCase("aes-ccm-12-192", "aes-ccm-12", 27, scapy_enc="AES-CCM", icv=12),
    MatrixCase("aes-ccm-16-256", "aes-ccm-16", 35, scapy_enc="AES-CCM", icv=16),
    MatrixCase("chacha20-poly1305", "chacha20-poly1305", 36, scapy_enc="CHACHA20-POLY1305"),
    MatrixCase("aes-cbc-128+aes-cmac", "aes-cbc", 16, "aes-cmac", 16, "AES-CBC", "AES-CMAC-96"),
    MatrixCase("3des-cbc+hmac-md5", "3des-cbc", 24, "hmac-md5", 16, "3DES", "HMAC-MD5-96",
               tshark_enc="TripleDES-CBC [RFC2451]", tshark_auth="HMAC-MD5-96 [RFC2403]", legacy=True),
)
SCAPY_MATRIX = tuple(c for c in MATRIX if c.scapy_enc)
TSHARK_MATRIX = tuple(c for c in MATRIX if c.tshark_enc)


def matrix_key(case, direction, role, n):
    """Deterministic, distinct key bytes per case, direction ('ab'/'ba') and role ('enc'/'auth')."""
    return hashlib.shake_256(f"{case.name}/{direction}/{role}".encode()).digest(n) if n else b""


def matrix_spi(index, direction):
    return 0x2000 + 2 * index + (0 if direction == "ab" else 1)


def matrix_reqid(index):
    return 100 + index


def matrix_inner(index, fam):
    """(A's inner address, B's inner address) of case `index`: A keeps its TUN
    address, B gets one address per case so that policies can tell them apart."""
    a = INNER_A[fam]
    b = f"203.0.113.{10 + index}" if fam == 4 else f"2001:db8:b::{10 + index:x}"
    return a, b


INNER_A = {4: harness.INNER[4][0], 6: harness.INNER[6][0]}


def matrix_sa_lines(cases, outer):
    """setkey ADD statements for both directions of every case (the same on both hosts)."""
    a, b = harness.OUTER[outer]
    out = []
    for i, c in enumerate(cases):
        for d, (src, dst) in (("ab", (a, b)), ("ba", (b, a))):
            clause = f"-E {c.enc}"
            clause += f" 0x{matrix_key(c, d, 'enc', c.enc_bytes).hex()}" if c.enc_bytes else ""
            if c.auth:
                clause += f" -A {c.auth} 0x{matrix_key(c, d, 'auth', c.auth_bytes).hex()}"
            out.append(f"add {src} {dst} esp {matrix_spi(i, d):#x} -m tunnel -u {matrix_reqid(i)} "
                       f"-r 64 {clause};")
    return "\n".join(out) + "\n"


def matrix_spd_lines(cases, side, outer, families=(4, 6)):
    """Per case and inner family, a /32 (/128) policy pair bound to the case's reqid."""
    a, b = harness.OUTER[outer]
    local, remote = (a, b) if side == "a" else (b, a)
    out = []
    for i, _ in enumerate(cases):
        for fam in families:
            ia, ib = matrix_inner(i, fam)
            plen = 32 if fam == 4 else 128
            lnet, rnet = (f"{ia}/{plen}", f"{ib}/{plen}") if side == "a" else (f"{ib}/{plen}", f"{ia}/{plen}")
            lvl = f"unique:{matrix_reqid(i)}"
            out.append(f"spdadd {lnet} {rnet} any -P out ipsec esp/tunnel/{local}-{remote}/{lvl};")
            out.append(f"spdadd {rnet} {lnet} any -P in ipsec esp/tunnel/{remote}-{local}/{lvl};")
    return "\n".join(out) + "\n"


def load_matrix(host, cases, outer):
    """Installs the matrix's SAs and this host's policies through setkey on a running
    ipsecd, allowing legacy algorithms first when a case needs them."""
    if any(c.legacy for c in cases):
        host.sysctl("net.inet.ipsec.allow_legacy=1")
    text = ("flush;\nspdflush;\n" + matrix_sa_lines(cases, outer)
            + matrix_spd_lines(cases, host.side, outer))
    r = host.setkey(text)
    if r.returncode != 0:
        raise RuntimeError(f"setkey refused the matrix:\n{r.stdout}\n{r.stderr}")
    # The SAs come before their policies, so each SA this host sends on becomes
    # outbound when policy's markOutbound has gone through keydb to the broker,
    # a moment after setkey's last reply: until then a seal is refused
    # (out_drop_wrong_direction). One outbound ESP session per case.
    harness.wait_for(lambda: host.stats()["ipsec-crypto"]["counters"]["sessions_outbound"] >= len(cases), 10,
                     f"{len(cases)} outbound sessions in {host.side}'s broker")


def _register_scapy_gcm_oldapi():
    """scapy 2.5's AES-GCM uses cryptography's AEAD API, which always emits and
    expects a 16-byte tag, so crypt_icv_size=8/12 is ignored (INTEROP.md). scapy's
    own CryptAlgo class also drives the older Cipher/modes.GCM API, where it
    truncates the tag on sealing and accepts a short tag on opening: register that
    variant (in memory only) so GCM-8/12 are framed and checked by scapy's code."""
    from scapy.layers import ipsec
    if "AES-GCM-OLDAPI" in ipsec.CRYPT_ALGOS:
        return
    ipsec.CRYPT_ALGOS["AES-GCM-OLDAPI"] = ipsec.CryptAlgo(
        "AES-GCM-OLDAPI", cipher=algorithms.AES, mode=modes.GCM, key_size=(16, 24, 32),
        salt_size=4, block_size=1, iv_size=8, icv_size=16,
        format_mode_iv=lambda sa, iv, **kw: sa.crypt_salt + iv)


def matrix_scapy_sa(case, index, direction):
    """scapy's SecurityAssociation for one direction of a matrix case."""
    from scapy.layers.ipsec import ESP, SecurityAssociation
    _register_scapy_gcm_oldapi()
    kw = {}
    if case.icv:
        kw["crypt_icv_size"] = case.icv
    if case.auth:
        kw.update(auth_algo=case.scapy_auth, auth_key=matrix_key(case, direction, "auth", case.auth_bytes))
    return SecurityAssociation(ESP, spi=matrix_spi(index, direction), crypt_algo=case.scapy_enc,
                               crypt_key=matrix_key(case, direction, "enc", case.enc_bytes) or None, **kw)


def scapy_open(sa, pkt):
    """(next header, inner scapy packet or None) of a captured ESP packet, opened by
    scapy with the ICV checked (raises scapy's IPSecIntegrityError if it is bad)."""
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6
    net = pkt[IP] if IP in pkt else pkt[IPv6]  # tcpdump captured Ethernet frames
    res = sa.decrypt(net.copy())  # transport-style: outer header + the decrypted payload
    nh = res[IP].proto if res.version == 4 else res[IPv6].nh
    data = bytes(res.payload)
    if nh == NH_IPV4:
        return nh, IP(data)
    if nh == NH_IPV6:
        return nh, IPv6(data)
    return nh, None


def tshark_esp_sa(case, index, outer, direction, wrong_key=False):
    """A tshark `uat:esp_sa` option for one direction of a matrix case."""
    a, b = harness.OUTER[outer]
    src, dst = (a, b) if direction == "ab" else (b, a)
    ck = matrix_key(case, direction, "enc", case.enc_bytes)
    ak = matrix_key(case, direction, "auth", case.auth_bytes) if case.auth else b""
    if wrong_key:
        ck = bytes([ck[0] ^ 1]) + ck[1:] if ck else ck
        ak = bytes([ak[0] ^ 1]) + ak[1:] if ak else ak
    fields = (f"IPv{outer}", src, dst, f"0x{matrix_spi(index, direction):08x}", case.tshark_enc,
              f"0x{ck.hex()}" if ck else "", case.tshark_auth, f"0x{ak.hex()}" if ak else "")
    return "uat:esp_sa:" + ",".join(f'"{v}"' for v in fields)
