#!/usr/bin/python3
"""Writes the seed corpus of inbound_open_fuzz (tests/fuzz/forwarder/corpus/inbound_open).

Each seed is what inbound_open_fuzz.cpp reads: byte 0 the SA (slot 0..6, +8 for
the IPComp SAs), byte 1 the broker's status (1 = kOk), byte 2 the outer TOS and
the layer already peeled (top two bits), byte 3 where the ESP packet (or AH's
verified packet) starts, then the buffer from 0. The ESP bytes are as the broker
leaves them after an open: plaintext, the ICV field still there. The SAs,
policies and addresses are the fuzz target's fixture (SPIs 0x100..0x106).
Run from anywhere: /usr/bin/python3 tests/fuzz/forwarder/make_inbound_open_seeds.py
"""
import ipaddress
import os
import struct
import zlib

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "inbound_open")
KOK, KBADICV = 1, 2
ICV, IV, ALIGN = 16, 8, 4


def checksum(header):
    total = sum(struct.unpack("!%dH" % (len(header) // 2), header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return (~total) & 0xFFFF


def ipv4(src, dst, proto, payload, tos=0):
    header = struct.pack("!BBHHHBBH4s4s", 0x45, tos, 20 + len(payload), 1, 0, 64, proto, 0,
                         ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + payload


def ipv6(src, dst, next_header, payload, tclass=0):
    first = (6 << 28) | (tclass << 20)
    return struct.pack("!IHBB16s16s", first, len(payload), next_header, 64, ipaddress.IPv6Address(src).packed,
                       ipaddress.IPv6Address(dst).packed) + payload


ICMP_ECHO = bytes([8, 0, 0, 0, 0, 7, 0, 1]) + b"seedseed"
ICMP6_ECHO = bytes([128, 0, 0, 0, 0, 7, 0, 1]) + b"seedseed"


def opened_esp(spi, payload, next_header, seq=1):
    pad = (-(len(payload) + 2)) % ALIGN
    return (struct.pack("!II", spi, seq) + bytes(IV) + payload + bytes(range(1, pad + 1)) +
            bytes([pad, next_header]) + bytes(ICV))


def ipcomp(cpi, next_header, payload):
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return struct.pack("!BBH", next_header, 0, cpi) + c.compress(payload) + c.flush()


def seed(name, sa, start, buffer, status=KOK, tos=0, peeled=0):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(bytes([sa, status, (peeled << 6) | tos, start]) + buffer)


def main():
    os.makedirs(OUT, exist_ok=True)
    outer = ipv4("192.0.2.1", "192.0.2.2", 50, b"")[:20]  # the raw socket's IPv4 header; ESP at 20
    to3 = ipv4("198.51.100.1", "203.0.113.3", 1, ICMP_ECHO)  # policy 3: IPComp (use) and the ESP tunnel
    seed("tunnel_v4", 0, 20, outer + opened_esp(0x100, to3, 4))
    seed("tunnel_v4_ipcomp", 8, 20, outer + opened_esp(0x100, ipcomp(0x4242, 4, to3 + bytes(300)), 108))
    seed("tunnel_v4_ipcomp_unknown_cpi", 8, 20, outer + opened_esp(0x100, ipcomp(0x9999, 4, to3 * 8), 108))
    seed("tunnel_v4_tfc", 0, 20, outer + opened_esp(0x100, to3 + bytes(64), 4))
    seed("tunnel_v4_ecn_ce", 0, 20, outer + opened_esp(0x100, ipv4("198.51.100.1", "203.0.113.3", 1, ICMP_ECHO, 2), 4),
         tos=3)
    seed("tunnel_v4_dummy", 0, 20, outer + opened_esp(0x100, bytes(24), 59))
    seed("tunnel_v4_bad_icv", 0, 20, outer + opened_esp(0x100, to3, 4), status=KBADICV)
    seed("any_v4_tunnel", 2, 20, outer + opened_esp(0x102, to3, 4))
    # ESP transport (SPI 0x101) inside the tunnel: policy 1 wants both.
    hosts = ipv4("198.51.100.1", "203.0.113.1", 50, opened_esp(0x101, ICMP_ECHO, 1))
    seed("esp_in_esp", 0, 20, outer + opened_esp(0x100, hosts, 4))
    # Transport to .2 (policy 2: IPComp `use`, ESP, AH `use`; SPI 0x106): alone, and after AH.
    to2 = ipv4("198.51.100.1", "203.0.113.2", 50, opened_esp(0x106, ICMP_ECHO, 1))
    seed("transport_v4", 6, 20, to2)
    seed("transport_v4_after_ah", 6, 20, to2, peeled=1)
    seed("ah_then_esp", 5, 0, to2)
    seed("ah_transport_alone", 5, 0, ipv4("198.51.100.1", "203.0.113.2", 1, ICMP_ECHO))
    seed("transport_v4_ipcomp", 6 + 8, 20,
         ipv4("198.51.100.1", "203.0.113.2", 50, opened_esp(0x106, ipcomp(0x4343, 1, ICMP_ECHO * 20), 108)))
    seed("transport_v4_other_host", 1, 20, ipv4("198.51.100.1", "203.0.113.1", 50, opened_esp(0x101, ICMP_ECHO, 1)))
    # IPv6: a tunnel (policy 4), and transport in UDP (no policy: refused).
    inner6 = ipv6("2001:db8:a::1", "2001:db8:b::1", 58, ICMP6_ECHO)
    seed("tunnel_v6", 3, 0, opened_esp(0x103, inner6, 41))
    seed("transport_v6_udp", 4, 40, bytes(40) + opened_esp(0x104, bytes([0, 53, 0, 53, 0, 12, 0, 0]) + b"dnsq", 17))


if __name__ == "__main__":
    main()
