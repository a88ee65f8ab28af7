#!/usr/bin/python3
"""Known answers for the forwarder's outbound cores, made by scapy (scapy.layers.ipsec), an ESP
and AH implementation that shares no code with ours: for a fixed key, SPI, sequence number, IV
and inner packet, the exact outer packet scapy seals. sealed_vectors_test.cpp frames the same
inner packet through our core, seals or signs it with lib/cryptodrv's transform under the same
IV and compares byte for byte. The test reads sealed_vectors.json and does not need scapy.

Outer IPv4 header fields the shell, not the core, chooses are given to scapy as the test gives
them to ours (nothing is normalised after the fact): the Identification (our shell's counter;
here 0x1234), TTL 64. TOS/traffic class and DF are the inner packet's, as our tunnels copy them
(RFC 6040 normal mode, net.inet.ipsec.dfbit = copy), so scapy's tunnel header is told them too.
IPv6 outer: flow label 0, hop limit 64.

Also writes each vector as a fuzz seed (see the targets' opening comments for their first bytes):
  tests/fuzz/esp/corpus/esp_input/scapy_sealed_*        layout 0 (AES-GCM-16), the ESP bytes
  tests/fuzz/forwarder/corpus/esp_in/scapy_sealed_*     IPv4 or IPv6 plain, kOk, one offer, the
                                                        ESP bytes (SPIs 0x100 and 0x102 are the
                                                        target's GCM SAs)
  tests/fuzz/ah/corpus/ah_input/scapy_sealed_*          ICV 16, the whole IP packet

Run from anywhere with Debian's scapy:  /usr/bin/python3 tests/unit/forwarder/vectors/make_sealed_vectors.py
"""
import json
import os

from scapy.layers.inet import ICMP, IP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.ipsec import AH, ESP, SecurityAssociation
from scapy.packet import Raw

HERE = os.path.dirname(os.path.abspath(__file__))
FUZZ = os.path.join(HERE, "..", "..", "..", "fuzz")

GCM_KEY = bytes.fromhex("000102030405060708090a0b0c0d0e0f" "c0ffee11")  # AES-128 key || 4-byte salt
HMAC_KEY = bytes.fromhex("6b" * 16 + "5a" * 16)                          # HMAC-SHA-256, 32 bytes
OUTER_ID = 0x1234
TOS = 0xb8  # DSCP EF, ECN not-ECT: copied to the outer header whatever the ECN mode

# The hosts and gateways of outbound_cores_test.cpp and tunnel_frame_test.cpp.
HOST_A = {4: "198.51.100.1", 6: "2001:db8:a::1"}
HOST_B = {4: "203.0.113.1", 6: "2001:db8:b::1"}
GW_A = {4: "192.0.2.1", 6: "2001:db8:1::1"}
GW_B = {4: "192.0.2.2", 6: "2001:db8:1::2"}


def inner_packet(version, text):
    """A host's ICMP echo as the TUN gives it: TOS/traffic class TOS, IPv4 with DF."""
    if version == 4:
        return IP(src=HOST_A[4], dst=HOST_B[4], tos=TOS, id=0x0bad, flags="DF", ttl=64) / ICMP(id=7, seq=1) / Raw(text)
    return IPv6(src=HOST_A[6], dst=HOST_B[6], tc=TOS, fl=0, hlim=64) / ICMPv6EchoRequest(id=7, seq=1) / Raw(text)


def tunnel_header(version):
    if version == 4:
        return IP(src=GW_A[4], dst=GW_B[4], tos=TOS, id=OUTER_ID, flags="DF", ttl=64)
    return IPv6(src=GW_A[6], dst=GW_B[6], tc=TOS, fl=0, hlim=64)


def vector(name, what, sa_args, spi, seq, iv, inner):
    sa = SecurityAssociation(spi=spi, **sa_args)
    sealed = bytes(sa.encrypt(inner, seq_num=seq, iv=iv) if iv is not None else sa.encrypt(inner, seq_num=seq))
    key = sa_args.get("crypt_key") or sa_args["auth_key"]
    return {"name": name, "what": what, "key": key.hex(), "spi": spi, "seq": seq,
            "iv": iv.hex() if iv is not None else "", "inner": bytes(inner).hex(), "outer": sealed.hex()}


def esp_start(v):
    """Where ESP begins in an outer packet (IPv4 without options, or IPv6 without extensions)."""
    return 20 if v["outer"][0] == "4" else 40


def write_seed(corpus, name, data):
    path = os.path.join(FUZZ, corpus)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, name), "wb") as f:
        f.write(data)


def main():
    gcm = {"crypt_algo": "AES-GCM", "crypt_key": GCM_KEY}
    vectors = [
        vector("esp_tunnel_gcm128_v4", "ESP tunnel, AES-GCM-128 (ICV 16), IPv4 in IPv4",
               dict(proto=ESP, tunnel_header=tunnel_header(4), **gcm), 0x100, 42,
               bytes.fromhex("a1a2a3a4a5a6a7a8"), inner_packet(4, b"known answer: ESP tunnel v4")),
        vector("esp_tunnel_gcm128_v6", "ESP tunnel, AES-GCM-128 (ICV 16), IPv6 in IPv6",
               dict(proto=ESP, tunnel_header=tunnel_header(6), **gcm), 0x102, 7,
               bytes.fromhex("0000000000000001"), inner_packet(6, b"known answer: ESP tunnel v6!")),
        vector("esp_transport_gcm128_v4", "ESP transport, AES-GCM-128 (ICV 16), IPv4",
               dict(proto=ESP, **gcm), 0x100, 43,
               bytes.fromhex("fedcba9876543210"), inner_packet(4, b"known answer: ESP transport")),
        vector("ah_tunnel_sha256_v4", "AH tunnel, HMAC-SHA-256-128, IPv4 in IPv4",
               dict(proto=AH, auth_algo="SHA2-256-128", auth_key=HMAC_KEY, tunnel_header=tunnel_header(4)),
               0x300, 42, None, inner_packet(4, b"known answer: AH tunnel v4")),
    ]
    with open(os.path.join(HERE, "sealed_vectors.json"), "w") as f:
        json.dump({"made_by": "make_sealed_vectors.py (scapy.layers.ipsec)", "vectors": vectors}, f, indent=1)
        f.write("\n")

    for v in vectors:
        outer = bytes.fromhex(v["outer"])
        seed = "scapy_sealed_" + v["name"]
        if v["name"].startswith("ah_"):
            write_seed("ah/corpus/ah_input", seed, bytes([1]) + outer)
            continue
        esp = outer[esp_start(v):]
        write_seed("esp/corpus/esp_input", seed, bytes([0]) + esp)
        write_seed("forwarder/corpus/esp_in", seed, bytes([4 | (1 if "_v6" in v["name"] else 0), 1, 0]) + esp)


if __name__ == "__main__":
    main()
