#!/usr/bin/python3
"""Seeds for gro_open_fuzz: coalesced ESP-in-UDP datagrams as the broker
leaves them opened (plaintext behind the ESP header, an ICV of zeros), in
the target's input layout (see gro_open_fuzz.cpp). Run from this folder:
/usr/bin/python3 make_gro_open_seeds.py"""
import os
import struct


def checksum(header):
    total = sum(struct.unpack("!%dH" % (len(header) // 2), header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return (~total) & 0xFFFF


def inner_ipv4(payload, tag):
    body = bytes([8, 0, 0, 0, 0, 7, 0, 1]) + bytes([tag]) * payload
    header = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 1, 0, 64, 1, 0,
                                   bytes([198, 51, 100, 1]), bytes([203, 0, 113, 1])))
    header[10:12] = struct.pack("!H", checksum(bytes(header)))
    return bytes(header) + body


def segment(seq, inner, next_header=4, spi=0x100):
    pad = (-(len(inner) + 2)) % 4
    trailer = bytes(range(1, pad + 1)) + bytes([pad, next_header])
    return struct.pack("!II", spi, seq) + bytes(8) + inner + trailer + bytes(16)


def seed(name, mode, segments, status=1, mask=0, changed_stride=False):
    gso = len(segments[0])
    header = bytes([mode]) + struct.pack("!H", gso) + bytes([status]) + struct.pack("<Q", mask)
    header += bytes([1 if changed_stride else 0])
    os.makedirs("corpus/gro_open", exist_ok=True)
    with open(os.path.join("corpus/gro_open", name), "wb") as f:
        f.write(header + b"".join(segments))


uniform = [segment(i + 1, inner_ipv4(64, i)) for i in range(4)]
seed("uniform_tunnel", 0, uniform)
seed("uniform_any", 1, uniform)
seed("transport_split", 2, uniform)
seed("one_bad_icv", 0, uniform, status=2, mask=0b0100)
seed("refused_whole", 0, uniform, status=9, mask=0b1111)
seed("changed_stride", 0, uniform, changed_stride=True)
seed("short_last", 0, uniform[:3] + [segment(4, inner_ipv4(8, 3))])
seed("dummy_middle", 0, [uniform[0], segment(2, inner_ipv4(64, 1), next_header=59), uniform[2]])
seed("ipcomp_middle", 4, [uniform[0], segment(2, bytes([4, 0, 0x42, 0x42]) + bytes(88), next_header=108), uniform[2]])
seed("duplicate", 0, [uniform[0], uniform[0], uniform[1]])
seed("foreign_spi", 0, [uniform[0], segment(2, inner_ipv4(64, 1), spi=0x200), uniform[2]])
