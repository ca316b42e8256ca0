"""FIX messages as (tag, value) lists: encoding with BodyLength/CheckSum, decoding with the native parser.

A message is a list of ``(tag: int, value: bytes)``; header order on output is 8, 9, 35, then the other
header fields by tag number (QuickFIX's order), the body in the order given, then 10.
"""
from __future__ import annotations

import time

import numpy as np

from feedhandler.protocols import fix as _fix

SOH = b"\x01"


def utc_timestamp(ns: int | None = None, millis: bool = True) -> bytes:
    """FIX UTCTimestamp (YYYYMMDD-HH:MM:SS.sss) of ``ns`` since the epoch (now when None)."""
    ns = time.time_ns() if ns is None else ns
    t = time.gmtime(ns // 1_000_000_000)
    s = time.strftime("%Y%m%d-%H:%M:%S", t)
    if millis:
        s += ".%03d" % ((ns // 1_000_000) % 1000)
    return s.encode()


def parse_utc_timestamp(v: bytes) -> int | None:
    """ns since the epoch of a UTCTimestamp, or None when malformed."""
    import calendar
    try:
        base = time.strptime(v[:17].decode(), "%Y%m%d-%H:%M:%S")
    except (ValueError, UnicodeDecodeError):
        return None
    ns = calendar.timegm(base) * 1_000_000_000
    frac = v[18:]
    if len(v) > 17:
        if v[17:18] != b"." or not frac.isdigit():
            return None
        ns += int(frac.ljust(9, b"0")[:9])
    return ns


def _b(v) -> bytes:
    if isinstance(v, bytes):
        return v
    if isinstance(v, bool):
        return b"Y" if v else b"N"
    return str(v).encode()


def encode(begin: bytes, msgtype: bytes, header: list, body: list) -> bytes:
    """Serialize; ``header`` excludes 8/9/35/10 (sorted by tag on output), ``body`` is kept in order."""
    parts = [b"35=" + msgtype + SOH]
    for tag, val in sorted(header, key=lambda f: f[0]):
        parts.append(b"%d=%s\x01" % (tag, _b(val)))
    for tag, val in body:
        parts.append(b"%d=%s\x01" % (tag, _b(val)))
    rest = b"".join(parts)
    head = b"8=" + begin + SOH + b"9=%d\x01" % len(rest)
    msg = head + rest
    return msg + b"10=%03d\x01" % (sum(msg) & 255)


def split_fields(buf: bytes, start: int = 0, end: int | None = None) -> list[tuple[int, bytes]] | None:
    """Fields of buf[start:end] as (tag, value) pairs, or None when a field is malformed."""
    end = len(buf) if end is None else end
    out = np.empty(((end - start) // 2 + 1, 3), dtype=np.int32)   # a field takes >= 2 bytes
    mv = memoryview(buf)
    n = _fix.fields(mv, start, end, out)
    if n < 0:
        return None
    rows = out[:n].tolist()
    return [(t, buf[a:b]) for t, a, b in rows]


class Framer:
    """Incremental framing of a byte stream into whole messages (QuickFIX semantics, see fix.pyx).

    ``feed(data)`` returns a list of ``(status, raw_message_bytes)``; garbled bytes are dropped and
    counted in ``garbled``.
    """

    def __init__(self):
        self.buf = bytearray()
        self.garbled = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self.buf += data
        out = []
        buf = bytes(self.buf)
        pos = 0
        while pos < len(buf):
            st, ms, me = _fix.frame(buf, pos)
            if st == _fix.INCOMPLETE:
                pos = ms
                break
            if st == _fix.GARBLED:
                self.garbled += 1
                pos = me if me > pos else pos + 1
                continue
            out.append((st, buf[ms:me]))
            pos = me
        del self.buf[:pos]
        return out
