"""The test's side of an ESP conversation with a real ipsecd: capture, send, seal, open.

Runs in the test process (root, outside the namespaces) and, for sending and
capturing, in short-lived children inside a Testbed host's namespace. Nothing
here trusts ipsecd: packets it sent are opened with python3-cryptography and
scapy, packets it receives are sealed the same way. Keys and SPIs are the
harness's, so these helpers speak to the SAs that sa_lines() installs.
Used by tests/interop and by tests/integration/test_bad_input.py.
"""

import os
import signal
import struct
import subprocess
import time
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
    """Polls fn() until it returns something true or timeout passes; returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(step)


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


class Capture:
    """tcpdump -w on a host's veth, ESP only; `with Capture(host, path) as cap:`."""

    def __init__(self, host, path, bpf="ip proto 50 or ip6 proto 50"):
        self.host, self.path, self.bpf = host, path, bpf
        self.proc = None

    def __enter__(self):
        # -Z root: Debian's tcpdump otherwise drops to user tcpdump, which cannot
        # write into the root-owned test directory. -U: one write per packet.
        self.proc = self.host.popen(["tcpdump", "-i", VETH[self.host.side], "-n", "-U", "-Z", "root",
                                     "-s", "0", "-w", self.path, self.bpf],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        # tcpdump says "listening on ..." once the filter is attached.
        line = ""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "listening" not in line:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                break
        if "listening" not in line:
            self.stop()
            raise RuntimeError(f"tcpdump did not start: {line}")
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def packets(self):
        """Everything captured so far (a partly written last record is left out)."""
        import scapy.layers.l2  # noqa: F401  (registers Ethernet, the link type of the capture)
        from scapy.utils import PcapReader
        out = []
        try:
            with PcapReader(self.path) as r:
                for p in r:
                    out.append(p)
        except Exception:  # the last record may still be being written
            pass
        return out

    def wait_for(self, pred, timeout=5.0):
        """Packets captured once pred(packets) holds, or at the timeout."""
        got = []

        def check():
            nonlocal got
            got = self.packets()
            return pred(got)
        wait_until(check, timeout)
        return got


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
