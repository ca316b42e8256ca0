"""Reading MDP 3.0 packets out of classic pcap files, and decoding a whole capture.

A minimal reader for tests, benchmarks and replay until the capture package's readers take over:
Ethernet (with 802.1Q/QinQ tags) / IPv4 / UDP only.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np


def read_pcap(path: str | Path) -> list[tuple[int, int, bytes]]:
    """[(ts_ns, udp_dst_port, payload)] of the IPv4/UDP packets of a classic pcap (Ethernet/VLAN).

    A minimal reader for tests and benchmarks; the capture package has the real ones.
    """
    d = Path(path).read_bytes()
    magic = d[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        e = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        e = ">"
    else:
        raise ValueError(f"{path}: not a classic pcap file")
    nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    off, out = 24, []
    while off + 16 <= len(d):
        sec, frac, incl, _orig = struct.unpack_from(e + "IIII", d, off)
        off += 16
        fr = d[off : off + incl]
        off += incl
        ts = sec * 1_000_000_000 + (frac if nano else frac * 1000)
        eth, etype = 14, struct.unpack_from(">H", fr, 12)[0]
        while etype in (0x8100, 0x88A8):
            etype = struct.unpack_from(">H", fr, eth + 2)[0]
            eth += 4
        if etype != 0x0800 or fr[eth + 9] != 17:
            continue
        ihl = (fr[eth] & 15) * 4
        udp = eth + ihl
        dport, ulen = struct.unpack_from(">HH", fr, udp + 2)
        out.append((ts, dport, bytes(fr[udp + 8 : udp + ulen])))
    return out


def decode_pcap(path: str | Path, decoder=None, snapshot_ports=(), channels: dict | None = None):
    """Decode every UDP payload of a pcap with one Mdp3Decoder call; returns (records, decoder).

    Packets are sequenced per channel: by default every UDP destination port is its own channel,
    except that A/B pairs must share one: pass ``channels={port: channel}`` (ports not listed get
    channels of their own). The capture's time stamps become ts_recv.
    """
    from feedhandler.protocols.mdp3 import Mdp3Decoder

    pk = read_pcap(path)
    dec = decoder if decoder is not None else Mdp3Decoder()
    chans = dict(channels or {})
    for _, port, _ in pk:
        if port not in chans:
            chans[port] = max(chans.values(), default=-1) + 1
    ticks = dec.decode_packets([p for _, _, p in pk], ts_recv=np.array([t for t, _, _ in pk], dtype=np.uint64),
                               channel=np.array([chans[port] & 0xFF for _, port, _ in pk], dtype=np.uint16))
    return ticks, dec
