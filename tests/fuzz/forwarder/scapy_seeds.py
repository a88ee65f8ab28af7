#!/usr/bin/python3
"""Seeds for the forwarder's inbound fuzz targets made by scapy, the independent ESP the
interop tests (tests/interop/espeer.py) talk to: real ESP packets, not our own encoder's.

  corpus/esp_in/scapy_*        AES-GCM tunnel packets (SPI 0x100, IPv4; SPI 0x102, IPv6) as
                               they arrive, for esp_in_fuzz (before the broker)
  corpus/inbound_open/scapy_*  ESP with NULL encryption and HMAC-SHA2-256-128 (SPI 0x107, the
                               fuzz fixture's slot 7): NULL leaves the payload and scapy's
                               trailer in clear, which is what the broker hands back after an
                               open, for inbound_open_fuzz

Each seed starts with its target's control bytes (see the target's opening comment); the
SPIs, addresses and layouts are the targets' fixtures. Run with Debian's scapy:
  /usr/bin/python3 tests/fuzz/forwarder/scapy_seeds.py
"""
import os

from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.ipsec import ESP, SecurityAssociation
from scapy.packet import Raw

HERE = os.path.dirname(os.path.abspath(__file__))
GCM_KEY = bytes(range(1, 21))  # key || salt: any key will do, the fuzz target's broker answer is random
HMAC_KEY = bytes(range(32))


def write(corpus, name, data):
    path = os.path.join(HERE, "corpus", corpus)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, name), "wb") as f:
        f.write(data)


def esp_bytes(sa, packet, seq):
    """The ESP header onwards of scapy's tunnel-mode packet (the raw IPv6 socket's view)."""
    sealed = sa.encrypt(packet, seq_num=seq)
    return bytes(sealed[ESP])


def main():
    inner4 = IP(src="198.51.100.1", dst="203.0.113.3") / ICMP(id=7, seq=1) / Raw(b"scapy-seed")
    inner6 = IPv6(src="2001:db8:a::1", dst="2001:db8:b::1") / ICMPv6EchoRequest(id=7, seq=1) / Raw(b"scapy")

    # esp_in_fuzz: flags (0: IPv4 plain, 1: IPv6), broker status kOk (1 % 11), one offer.
    gcm4 = SecurityAssociation(ESP, spi=0x100, crypt_algo="AES-GCM", crypt_key=GCM_KEY,
                               tunnel_header=IP(src="192.0.2.1", dst="192.0.2.2"))
    gcm6 = SecurityAssociation(ESP, spi=0x102, crypt_algo="AES-GCM", crypt_key=GCM_KEY,
                               tunnel_header=IPv6(src="2001:db8:1::1", dst="2001:db8:1::2"))
    write("esp_in", "scapy_gcm_v4_tunnel", bytes([4, 1, 0]) + esp_bytes(gcm4, inner4, 1))
    write("esp_in", "scapy_gcm_v6_tunnel", bytes([5, 1, 0]) + esp_bytes(gcm6, inner6, 1))

    # inbound_open_fuzz: SA slot 7, kOk, TOS 0, ESP at 0.
    null4 = SecurityAssociation(ESP, spi=0x107, crypt_algo="NULL", auth_algo="SHA2-256-128", auth_key=HMAC_KEY,
                                tunnel_header=IP(src="192.0.2.1", dst="192.0.2.2"))
    write("inbound_open", "scapy_null_v4_tunnel", bytes([7, 1, 0, 0]) + esp_bytes(null4, inner4, 1))
    padded = IP(bytes(inner4))
    padded = IP(bytes(padded) + bytes(48))  # TFC padding after the inner packet
    write("inbound_open", "scapy_null_v4_tunnel_tfc", bytes([7, 1, 0, 0]) + esp_bytes(null4, padded, 2))
    udp4 = IP(src="198.51.100.1", dst="203.0.113.3") / UDP(sport=5000, dport=53) / Raw(b"q" * 200)
    write("inbound_open", "scapy_null_v4_tunnel_udp", bytes([7, 1, 3, 0]) + esp_bytes(null4, udp4, 3))


if __name__ == "__main__":
    main()
