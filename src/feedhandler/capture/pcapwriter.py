"""Pure-Python writers for test and synthetic captures: pcap, pcapng, BinaryFILE, and the frames inside.

Nothing here is on a hot path: it exists so that tests and the synthetic-data generator can build
captures whose every byte they control (and so that the native readers are checked against an
independent writer). The native readers live in ``feedhandler.capture._filesrc``.

Frames are built bottom up::

    payload = build_moldudp64(b"000010059B", seq, [msg1, msg2])
    frame = build_udp_frame(payload, "10.0.0.1", "233.54.12.1", 5000, 26477, vlan=100)
    write_pcap("x.pcap", [(ts_ns, frame)], nanosecond=True)
"""
from __future__ import annotations

import gzip
import ipaddress
import os
import struct
from typing import Iterable, Sequence

__all__ = [
    "LINKTYPE_ETHERNET",
    "LINKTYPE_LINUX_SLL",
    "LINKTYPE_RAW",
    "MOLD_HEARTBEAT",
    "MOLD_END_OF_SESSION",
    "write_pcap",
    "write_pcapng",
    "write_binaryfile",
    "pcap_bytes",
    "pcapng_bytes",
    "binaryfile_bytes",
    "build_ipv4_udp",
    "build_udp_frame",
    "build_sll_frame",
    "build_moldudp64",
    "ipv4_checksum",
]

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101        # raw IPv4/IPv6, no link header
LINKTYPE_LINUX_SLL = 113  # Linux "cooked" capture v1

MOLD_HEARTBEAT = 0           # message count of a heartbeat packet
MOLD_END_OF_SESSION = 0xFFFF  # message count of an end-of-session packet

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D

Packet = tuple  # (ts_ns: int, frame: bytes)


def _mac(m: bytes | str) -> bytes:
    if isinstance(m, str):
        m = bytes(int(x, 16) for x in m.split(":"))
    if len(m) != 6:
        raise ValueError("a MAC address is 6 bytes")
    return m


def ipv4_checksum(header: bytes) -> int:
    """RFC 1071 ones' complement sum of a header whose checksum field is zero."""
    if len(header) % 2:
        header += b"\0"
    s = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def build_ipv4_udp(payload: bytes, src: str = "10.0.0.1", dst: str = "233.54.12.111", sport: int = 5000,
                   dport: int = 26477, *, ttl: int = 32, ident: int = 0, flags_frag: int = 0x4000,
                   ip_options: bytes = b"", udp_length: int | None = None,
                   total_length: int | None = None, proto: int = 17) -> bytes:
    """An IPv4 header (+ optional options) and UDP header around ``payload``.

    ``udp_length``/``total_length``/``flags_frag``/``proto`` can be overridden to build malformed or
    fragmented packets for fault-injection tests.
    """
    if len(ip_options) % 4:
        raise ValueError("IPv4 options must be a multiple of 4 bytes")
    udp_len = 8 + len(payload) if udp_length is None else udp_length
    udp = struct.pack("!HHHH", sport, dport, udp_len & 0xFFFF, 0) + payload
    ihl = 5 + len(ip_options) // 4
    tot = ihl * 4 + len(udp) if total_length is None else total_length
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, tot & 0xFFFF, ident, flags_frag, ttl, proto, 0,
                      ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed) + ip_options
    csum = ipv4_checksum(hdr)
    hdr = hdr[:10] + struct.pack("!H", csum) + hdr[12:]
    return hdr + udp


def build_udp_frame(payload: bytes, src: str = "10.0.0.1", dst: str = "233.54.12.111", sport: int = 5000,
                    dport: int = 26477, vlan: int | Sequence[int] | None = None, *,
                    src_mac: bytes | str = b"\x00\x11\x22\x33\x44\x55",
                    dst_mac: bytes | str | None = None, **ip_kw) -> bytes:
    """An Ethernet II frame carrying IPv4/UDP ``payload``.

    ``vlan`` is one 802.1Q VLAN id, or a sequence of ids for stacked tags (QinQ: the first is the
    outer tag, written with TPID 0x88A8, the others with 0x8100). ``dst_mac`` defaults to the IPv4
    multicast MAC of ``dst`` when it is a multicast group. Extra keywords go to ``build_ipv4_udp``.
    """
    ip = build_ipv4_udp(payload, src, dst, sport, dport, **ip_kw)
    if dst_mac is None:
        a = ipaddress.IPv4Address(dst)
        if a.is_multicast:
            p = a.packed
            dst_mac = bytes([0x01, 0x00, 0x5E, p[1] & 0x7F, p[2], p[3]])
        else:
            dst_mac = b"\x02\x00\x00\x00\x00\x01"
    tags = b""
    if vlan is not None:
        ids = [vlan] if isinstance(vlan, int) else list(vlan)
        for i, vid in enumerate(ids):
            tpid = 0x88A8 if (i == 0 and len(ids) > 1) else 0x8100
            tags += struct.pack("!HH", tpid, vid & 0x0FFF)
    return _mac(dst_mac) + _mac(src_mac) + tags + struct.pack("!H", 0x0800) + ip


def build_sll_frame(ip_packet: bytes, *, ethertype: int = 0x0800, pkttype: int = 0) -> bytes:
    """A Linux cooked (SLL v1, LINKTYPE_LINUX_SLL) header around an IP packet."""
    return struct.pack("!HHH8sH", pkttype, 1, 6, b"\x00\x11\x22\x33\x44\x55\x00\x00", ethertype) + ip_packet


def build_moldudp64(session: bytes | str, seq: int, messages: Iterable[bytes],
                    count: int | None = None) -> bytes:
    """A MoldUDP64 downstream packet: 10-byte session, u64 sequence, u16 count, then each message
    prefixed with its u16 length (all big-endian).

    ``count`` overrides the message count field (MOLD_HEARTBEAT / MOLD_END_OF_SESSION, or a wrong
    count for fault injection); by default it is ``len(messages)``.
    """
    if isinstance(session, str):
        session = session.encode("ascii")
    if len(session) > 10:
        raise ValueError("a MoldUDP64 session is 10 bytes")
    session = session.ljust(10, b" ")
    msgs = list(messages)
    n = len(msgs) if count is None else count
    body = b"".join(struct.pack("!H", len(m)) + m for m in msgs)
    return session + struct.pack("!QH", seq, n) + body


# ---- files ------------------------------------------------------------------------------------------
def pcap_bytes(packets: Iterable[Packet], nanosecond: bool = True, *, big_endian: bool = False,
               linktype: int = LINKTYPE_ETHERNET, snaplen: int = 65535) -> bytes:
    """A classic pcap file image. ``packets`` are (ts_ns, frame) pairs; frames longer than
    ``snaplen`` are cut (caplen < origlen), as a real capture would."""
    e = ">" if big_endian else "<"
    magic = PCAP_MAGIC_NS if nanosecond else PCAP_MAGIC_US
    out = [struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    div = 1 if nanosecond else 1000
    for ts_ns, frame in packets:
        sec, frac = divmod(int(ts_ns), 1_000_000_000)
        cap = frame[:snaplen]
        out.append(struct.pack(e + "IIII", sec, frac // div, len(cap), len(frame)))
        out.append(cap)
    return b"".join(out)


def _pad4(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


def _opt(e: str, code: int, value: bytes) -> bytes:
    return struct.pack(e + "HH", code, len(value)) + _pad4(value)


def _block(e: str, btype: int, body: bytes) -> bytes:
    body = _pad4(body)
    n = 12 + len(body)
    return struct.pack(e + "II", btype, n) + body + struct.pack(e + "I", n)


def pcapng_bytes(packets: Iterable[Packet], *, big_endian: bool = False, tsresol: int = 9,
                 linktype: int = LINKTYPE_ETHERNET, interfaces: Sequence[dict] | None = None,
                 simple: bool = False, extra_blocks: bool = True, snaplen: int = 0) -> bytes:
    """A pcapng file image: one SHB, IDBs, then one EPB per packet (or SPB with ``simple=True``).

    ``tsresol`` is the if_tsresol option byte of the (single default) interface: 0..127 means
    10**-tsresol s, with the top bit set 2**-(tsresol & 0x7f) s; 6 (microseconds) is pcapng's default and
    is then written as no option at all. ``interfaces`` overrides the interface list with dicts of
    ``linktype``/``tsresol``; packets may then be (ts_ns, frame, interface_id) triples.
    ``extra_blocks`` adds an unknown custom block and a name-resolution block that readers must skip.
    """
    e = ">" if big_endian else "<"
    if interfaces is None:
        interfaces = [{"linktype": linktype, "tsresol": tsresol}]
    shb_body = struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1) + _opt(e, 4, b"feedhandler pcapwriter") + _opt(e, 0, b"")
    out = [_block(e, 0x0A0D0D0A, shb_body)]
    if extra_blocks:
        # Name resolution block (type 4) with one end-of-records record, and a custom block (0x00000BAD).
        out.append(_block(e, 0x00000004, struct.pack(e + "HH", 0, 0)))
        out.append(_block(e, 0x00000BAD, struct.pack(e + "I", 32473) + b"unknown custom data"))
    units = []
    for itf in interfaces:
        res = itf.get("tsresol", 6)
        opts = b""
        if res != 6:
            opts += _opt(e, 9, bytes([res]))
        if opts:
            opts += _opt(e, 0, b"")
        out.append(_block(e, 0x00000001, struct.pack(e + "HHI", itf.get("linktype", LINKTYPE_ETHERNET), 0, snaplen) + opts))
        units.append(10 ** (res & 0x7F) if not res & 0x80 else 2 ** (res & 0x7F))
        units[-1] = (units[-1], bool(res & 0x80))
    for p in packets:
        ts_ns, frame = p[0], p[1]
        ifid = p[2] if len(p) > 2 else 0
        if simple:
            out.append(_block(e, 0x00000003, struct.pack(e + "I", len(frame)) + frame))
            continue
        per_s, binary = units[ifid] if ifid < len(units) else units[0]  # (undeclared ids: fault injection)
        ts = (int(ts_ns) * per_s) // 1_000_000_000
        body = struct.pack(e + "IIIII", ifid, ts >> 32, ts & 0xFFFFFFFF, len(frame), len(frame)) + _pad4(frame)
        out.append(_block(e, 0x00000006, body))
    return b"".join(out)


def binaryfile_bytes(messages: Iterable[bytes]) -> bytes:
    """A NASDAQ BinaryFILE image: each message prefixed with its u16 big-endian length."""
    return b"".join(struct.pack("!H", len(m)) + m for m in messages)


def _write(path: str | os.PathLike, data: bytes, compress: bool) -> None:
    if compress:
        data = gzip.compress(data, compresslevel=6)
    with open(path, "wb") as f:
        f.write(data)


def write_pcap(path: str | os.PathLike, packets: Iterable[Packet], nanosecond: bool = True, *,
               big_endian: bool = False, linktype: int = LINKTYPE_ETHERNET, snaplen: int = 65535,
               gzip: bool = False) -> None:
    """Write a classic pcap file (see ``pcap_bytes``); ``gzip=True`` compresses it."""
    _write(path, pcap_bytes(packets, nanosecond, big_endian=big_endian, linktype=linktype, snaplen=snaplen), gzip)


def write_pcapng(path: str | os.PathLike, packets: Iterable[Packet], *, big_endian: bool = False,
                 tsresol: int = 9, linktype: int = LINKTYPE_ETHERNET, interfaces: Sequence[dict] | None = None,
                 simple: bool = False, extra_blocks: bool = True, gzip: bool = False) -> None:
    """Write a pcapng file (see ``pcapng_bytes``); ``gzip=True`` compresses it."""
    _write(path, pcapng_bytes(packets, big_endian=big_endian, tsresol=tsresol, linktype=linktype,
                              interfaces=interfaces, simple=simple, extra_blocks=extra_blocks), gzip)


def write_binaryfile(path: str | os.PathLike, messages: Iterable[bytes], *, gzip: bool = False) -> None:
    """Write a NASDAQ BinaryFILE day file (see ``binaryfile_bytes``); ``gzip=True`` compresses it."""
    _write(path, binaryfile_bytes(messages), gzip)
