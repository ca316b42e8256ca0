"""A pure-Python capture reader built on dpkt: the fallback when the native extension is not built,
and the independent reader the tests check the native framing against.

What it covers is the native *framing input*: capture files (pcap, pcapng, either gzip-compressed)
-> frames -> Ethernet (VLAN / QinQ tags), Linux SLL / SLL2, raw IPv4, BSD loopback -> IPv4 -> UDP
payloads or TCP segments. :class:`UdpBatches` yields the same ``(buf, offsets, lengths, ts_recv,
channel)`` batches as :class:`feedhandler.framing.udp.UdpBatches` (same port filter and A/B channel
rule); :func:`tcp_streams` reassembles TCP byte streams per direction.

What it does not cover: the decoders and books are native too, so ``feedhandler replay`` still needs
the extension; this reader gives the framing stage in Python, e.g. to read UDP payloads of a capture on
a machine without a compiler, or to cross-check the native reader.

Choosing the reader (like pyzmq's backend selection): :func:`udp_batches` returns the native reader,
or this one when ``FEEDHANDLER_READER=dpkt``; with ``FEEDHANDLER_READER=native`` a missing extension is
an ImportError; unset (or ``auto``), a missing extension falls back to dpkt with a warning that says
how to build the native one. Install dpkt with ``pip install 'feedhandler[dpkt]'``.
"""
from __future__ import annotations

import gzip
import os
import struct
import warnings
from decimal import Decimal
from typing import Iterator

import numpy as np

try:
    import dpkt
    import dpkt.loopback
    import dpkt.sll
    import dpkt.sll2
except ImportError as _e:  # pragma: no cover - tests/test_dpkt_fallback.py checks the message in a subprocess
    raise ImportError(f"feedhandler.capture.fallback needs dpkt ({_e}); install it with: "
                      "pip install 'feedhandler[dpkt]'") from _e

from feedhandler.errors import CaptureFormatError

__all__ = ["iter_frames", "udp_of", "tcp_of", "UdpBatches", "tcp_streams", "udp_batches", "reader_choice",
           "ENV", "REJECTED"]

ENV = "FEEDHANDLER_READER"
_PCAP_MAGICS = {b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d"}
_PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
REJECTED = "rejected"  # udp_of / tcp_of: a frame that is not the asked-for transport (reason follows)


def _open(path):
    f = open(path, "rb")
    if f.read(2) == b"\x1f\x8b":
        f.close()
        return gzip.open(path, "rb")
    f.seek(0)
    return f


def iter_frames(path) -> Iterator[tuple[int, int, bytes]]:
    """``(ts_ns, linktype, frame)`` of every packet record of a pcap or pcapng file (gzip too)."""
    with _open(path) as f:
        magic = f.read(4)
        f.seek(0)
        if magic in _PCAP_MAGICS:
            r = dpkt.pcap.Reader(f)
            lt = r.datalink()
            for ts, frame in r:
                # dpkt gives nanosecond files' times as Decimal (exact), microsecond files' as float
                ns = int(ts * 1_000_000_000) if isinstance(ts, Decimal) else round(ts * 1_000_000) * 1000
                yield ns, lt, bytes(frame)
        elif magic == _PCAPNG_MAGIC:
            yield from _pcapng_frames(f)
        else:
            raise CaptureFormatError(f"{path}: not a pcap or pcapng file (first bytes {magic!r})")


def _pcapng_frames(f) -> Iterator[tuple[int, int, bytes]]:
    """pcapng blocks with dpkt's block classes; times kept exact (dpkt's Reader returns floats)."""
    le, ifaces = True, []
    while True:
        head = f.read(8)
        if len(head) < 8:
            return
        if head[:4] == _PCAPNG_MAGIC:
            le = f.read(4) == b"\x4d\x3c\x2b\x1a"
            f.seek(-4, 1)
            ifaces = []
        btype, blen = struct.unpack("<II" if le else ">II", head)
        if blen < 12:
            raise CaptureFormatError(f"pcapng block of {blen} bytes")
        buf = head + f.read(blen - 8)
        if btype == dpkt.pcapng.PCAPNG_BT_IDB:
            idb = (dpkt.pcapng.InterfaceDescriptionBlockLE if le else dpkt.pcapng.InterfaceDescriptionBlock)(buf)
            res = 6
            for opt in getattr(idb, "opts", []):
                if opt.code == dpkt.pcapng.PCAPNG_OPT_IF_TSRESOL:
                    res = opt.data[0]
            ifaces.append((idb.linktype, res))
        elif btype in (dpkt.pcapng.PCAPNG_BT_EPB, dpkt.pcapng.PCAPNG_BT_PB):
            if btype == dpkt.pcapng.PCAPNG_BT_EPB:
                blk = (dpkt.pcapng.EnhancedPacketBlockLE if le else dpkt.pcapng.EnhancedPacketBlock)(buf)
            else:  # the obsolete Packet Block
                blk = (dpkt.pcapng.PacketBlockLE if le else dpkt.pcapng.PacketBlock)(buf)
            lt, res = ifaces[blk.iface_id]
            ts = (blk.ts_high << 32) | blk.ts_low
            ns = (ts * 1_000_000_000) >> (res & 0x7F) if res & 0x80 else ts * 10 ** (9 - res) if res <= 9 \
                else ts // 10 ** (res - 9)
            yield ns, lt, bytes(blk.pkt_data)
        elif btype == dpkt.pcapng.PCAPNG_BT_SPB:  # Simple Packet Block: interface 0, no timestamp
            origlen = struct.unpack("<I" if le else ">I", buf[8:12])[0]
            yield 0, ifaces[0][0], bytes(buf[12:12 + min(origlen, blen - 16)])


def _ip_of(frame: bytes, linktype: int):
    """The IPv4 layer of a frame, or a reason string."""
    try:
        if linktype == 1:
            eth = dpkt.ethernet.Ethernet(frame)
            ip = eth.data
        elif linktype == 113:
            ip = dpkt.sll.SLL(frame).data
        elif linktype == 276:
            ip = dpkt.sll2.SLL2(frame).data
        elif linktype in (101, 228):
            if not frame or frame[0] >> 4 != 4:
                return "not_ipv4"
            ip = dpkt.ip.IP(frame)
        elif linktype == 0:
            ip = dpkt.loopback.Loopback(frame).data
        else:
            return "unsupported_linktype"
    except (dpkt.NeedData, dpkt.UnpackError, struct.error) as e:
        return f"truncated ({type(e).__name__})"
    if not isinstance(ip, dpkt.ip.IP):
        return "not_ipv4"
    if ip.mf or ip.offset:
        return "ipv4_fragment"
    return ip


def udp_of(frame: bytes, linktype: int = 1):
    """``(src_ip, sport, dst_ip, dport, payload)`` of a UDP/IPv4 frame (payload cut at the UDP length),
    else ``(REJECTED, reason)``."""
    ip = _ip_of(frame, linktype)
    if isinstance(ip, str):
        return REJECTED, ip
    udp = ip.data
    if not isinstance(udp, dpkt.udp.UDP):
        return REJECTED, "not_udp"
    if udp.ulen < 8 or udp.ulen - 8 > len(udp.data):
        return REJECTED, "bad_udp_length"
    return ip.src, udp.sport, ip.dst, udp.dport, bytes(udp.data[:udp.ulen - 8])


def tcp_of(frame: bytes, linktype: int = 1):
    """``(src_ip, sport, dst_ip, dport, seq, flags, payload)`` of a TCP/IPv4 frame, else ``(REJECTED, reason)``."""
    ip = _ip_of(frame, linktype)
    if isinstance(ip, str):
        return REJECTED, ip
    tcp = ip.data
    if not isinstance(tcp, dpkt.tcp.TCP):
        return REJECTED, "not_tcp"
    return ip.src, tcp.sport, ip.dst, tcp.dport, tcp.seq, tcp.flags, bytes(tcp.data)


class UdpBatches:
    """``framing.udp.UdpBatches`` in Python: the same batches (views valid until the next ``read``)."""

    def __init__(self, path, batch_packets: int = 8192, batch_bytes: int = 8 << 20, channels=None,
                 ab_offset: int = 1000, udp_port: int | None = None):
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no such file")
        self._it = iter_frames(path)
        self.batch_packets, self.batch_bytes = batch_packets, max(batch_bytes, 65536)
        self.ab_offset, self.udp_port = ab_offset, udp_port
        self._chan = dict(channels or {})
        self._next_channel = max(self._chan.values(), default=-1) + 1
        self._held = None
        self.counters = {"frames": 0, "udp": 0, "kept": 0, "other_port": 0, "payload_bytes": 0}
        self.rejects: dict[str, int] = {}

    def _channel(self, port: int) -> int:
        ch = self._chan.get(port)
        if ch is None and self.ab_offset:
            ch = self._chan.get(port - self.ab_offset, self._chan.get(port + self.ab_offset))
        if ch is None:
            ch, self._next_channel = self._next_channel, self._next_channel + 1
        self._chan[port] = ch
        return ch

    def read(self):
        """The next ``(buf, offsets, lengths, ts_recv, channel)`` or None at the end of the file."""
        pays, tss, chans, used = [], [], [], 0
        c = self.counters
        while len(pays) < self.batch_packets:
            item = self._held or next(self._it, None)
            self._held = None
            if item is None:
                break
            ts, lt, frame = item
            u = udp_of(frame, lt)
            if u[0] is REJECTED:
                c["frames"] += 1
                self.rejects[u[1]] = self.rejects.get(u[1], 0) + 1
                continue
            if self.udp_port is not None and u[3] != self.udp_port:
                c["frames"] += 1
                c["udp"] += 1
                c["other_port"] += 1
                continue
            if used + len(u[4]) > self.batch_bytes:
                self._held = item
                break
            c["frames"] += 1
            c["udp"] += 1
            pays.append(u[4])
            tss.append(ts)
            chans.append(self._channel(u[3]))
            used += len(u[4])
        if not pays:
            return None
        c["kept"] += len(pays)
        c["payload_bytes"] += used
        lengths = np.fromiter((len(p) for p in pays), np.uint32, len(pays))
        offsets = np.zeros(len(pays), np.uint64)
        np.cumsum(lengths[:-1], out=offsets[1:])
        return (np.frombuffer(b"".join(pays), np.uint8), offsets, lengths,
                np.array(tss, np.uint64), np.array(chans, np.uint16))

    def channels(self):
        return dict(self._chan)

    def stats(self):
        return dict(self.counters, link_rejects=dict(self.rejects), reader="dpkt")

    def close(self):
        self._it = iter(())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def tcp_streams(path) -> list[dict]:
    """TCP byte streams per direction, in order of first appearance: ``{"key": (src, sport, dst,
    dport), "data": bytes, "segments": [(ts_ns, stream offset, length)], "syn", "fin"}``. Bytes are
    placed by sequence number (retransmissions and out-of-order segments resolve; the first copy of a
    byte wins); a stream without a SYN starts at its first segment."""
    streams: dict[tuple, dict] = {}
    for ts, lt, frame in iter_frames(path):
        t = tcp_of(frame, lt)
        if t[0] is REJECTED:
            continue
        src, sport, dst, dport, seq, flags, data = t
        key = (int.from_bytes(src, "big"), sport, int.from_bytes(dst, "big"), dport)
        s = streams.setdefault(key, {"key": key, "isn": None, "syn": False, "fin": False, "pieces": {},
                                     "segments": []})
        if flags & dpkt.tcp.TH_SYN:
            s["syn"], s["isn"] = True, (seq + 1) & 0xFFFFFFFF
        if flags & dpkt.tcp.TH_FIN:
            s["fin"] = True
        if not data:
            continue
        if s["isn"] is None:
            s["isn"] = seq
        off = (seq - s["isn"]) & 0xFFFFFFFF
        s["segments"].append((ts, off, len(data)))
        for i, b in enumerate(data):
            s["pieces"].setdefault(off + i, b)
    out = []
    for s in streams.values():
        pieces = s.pop("pieces")
        n = 0
        while n in pieces:
            n += 1
        s["data"] = bytes(pieces[i] for i in range(n))
        s["holes"] = len(pieces) != n
        out.append(s)
    return out


def reader_choice() -> str:
    """"native" or "dpkt", from ``FEEDHANDLER_READER`` (native | dpkt | auto; default auto)."""
    want = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if want not in ("auto", "native", "dpkt"):
        raise ValueError(f"{ENV}={want!r}: expected native, dpkt or auto")
    if want == "dpkt":
        return "dpkt"
    try:
        import feedhandler.framing.udp  # noqa: F401
    except ImportError as e:
        if want == "native":
            raise ImportError(f"{ENV}=native but the native extension is not built ({e}); build it with "
                              "`pip install -e .` in a checkout (needs a C compiler), or set "
                              f"{ENV}=dpkt") from e
        warnings.warn(f"feedhandler: the native extension is not built ({e}); reading captures with the "
                      "pure-Python dpkt reader (much slower). Build it with `pip install -e .` (needs a C "
                      f"compiler); set {ENV}=dpkt to choose this reader quietly.", RuntimeWarning, stacklevel=3)
        return "dpkt"
    return "native"


def udp_batches(path, **kw):
    """A UDP batch reader of ``path``: native ``framing.udp.UdpBatches`` or this module's, chosen by
    :func:`reader_choice`. Both take the same arguments and return the same batches."""
    if reader_choice() == "native":
        from feedhandler.framing.udp import UdpBatches as Native
        return Native(path, **kw)
    return UdpBatches(path, **kw)
