"""Public market data of the exchange as normalized tick records on a ZeroMQ PUB socket.

Engine events become the same 64-byte records the feed handler produces (``feedhandler.records``,
``csrc/include/fh/record.h``), so one subscriber can consume a venue feed and this exchange alike:

=================  ===========================================================================
engine event       record
=================  ===========================================================================
taker ``fill``     ``trade`` (rtype 0x00): price, size, aggressor side, order_id = resting order,
                   match_number = trade id
maker ``fill``     ``mbo`` action ``F`` on the resting order
``accepted``       ``mbo`` action ``A`` with the quantity left to rest, after the fills of the same
                   request (an order that does not rest, e.g. IOC, publishes no add)
``canceled``/      ``mbo`` action ``C`` (size = quantity removed) for orders that rested
``expired``
``replaced``       ``mbo`` action ``M`` (new price, new open size)
=================  ===========================================================================

Sides use DBN's letters (``B`` bid, ``A`` ask). ``instrument_id`` is the symbol's index in the
configured symbol list, ``sequence`` counts records per publisher, the last record of one engine
request for an instrument carries ``F_LAST``.

Wire: multipart ``[symbol (topic, ASCII), records (n * 64 bytes)]``; subscribe by symbol prefix.
Threading: :meth:`MarketDataPublisher.publish` may be called from any thread (one lock around the PUB
socket).
"""
from __future__ import annotations

import struct
import threading
import time

import numpy as np
import zmq

from engine.zmqio import NOBLOCK as _NOBLOCK, SNDMORE_NOBLOCK as _SNDMORE_NOBLOCK, send as _send
from feedhandler import records

F_LAST = 0x80
_SIDE = {"B": b"B", "S": b"A"}
_MBO = records.DTYPES["mbo"]
_TRADE = records.DTYPES["trade"]


def _packer(name: str, fields: tuple[str, ...]) -> tuple[struct.Struct, tuple[str, ...]]:
    """A little-endian struct for the named fields of one record layout, at the offsets of the C
    descriptor table (``feedhandler.records``), padded to the 64-byte slot: no layout typed by hand."""
    dt = records.DTYPES[name]
    chosen = sorted(((dt.fields[f][1], f, dt.fields[f][0]) for f in fields), key=lambda x: x[0])
    fmt, pos, order = "<", 0, []
    codes = {("u", 1): "B", ("u", 2): "H", ("u", 4): "I", ("u", 8): "Q", ("i", 4): "i", ("i", 8): "q"}
    for off, f, ft in chosen:
        if off < pos:
            raise ValueError(f"{name}.{f} overlaps the previous field")
        fmt += "x" * (off - pos)
        fmt += f"{ft.itemsize}s" if ft.kind == "S" else codes[(ft.kind, ft.itemsize)]
        pos = off + ft.itemsize
        order.append(f)
    fmt += "x" * (records.TICK_DTYPE.itemsize - pos)
    st = struct.Struct(fmt)
    assert st.size == records.TICK_DTYPE.itemsize
    return st, tuple(order)


_COMMON = ("length", "rtype", "instrument_id", "ts_event", "price", "size", "flags", "action", "side", "ts_recv",
           "sequence", "order_id", "match_number")
_MBO_S, _MBO_ORDER = _packer("mbo", _COMMON)
_TRADE_S, _TRADE_ORDER = _packer("trade", _COMMON)
_MBO_LEN = records.DBN_LENGTH["mbo"] // 4
_TRADE_LEN = records.DBN_LENGTH["trade"] // 4
_RT_MBO = records.RTYPE["mbo"]
_RT_TRADE = records.RTYPE["trade"]
# encode_events passes the values positionally in these orders; a layout change in record.h that moves a
# field fails here at import instead of writing it to the wrong offset.
if _MBO_ORDER != ("length", "rtype", "instrument_id", "ts_event", "order_id", "price", "size", "flags", "action",
                  "side", "ts_recv", "sequence", "match_number") or \
        _TRADE_ORDER != ("length", "rtype", "instrument_id", "ts_event", "price", "size", "action", "side", "flags",
                         "ts_recv", "sequence", "order_id", "match_number"):
    raise ImportError(f"tick record field order changed: update engine.marketdata ({_MBO_ORDER}, {_TRADE_ORDER})")


def encode_events(events: list[dict], instrument_ids: dict[str, int], ts_recv: int,
                  sequence_start: int = 0) -> dict[str, bytes]:
    """Encode one request's engine events as tick records, grouped by symbol (stream order kept);
    returns raw bytes (n * 64) per symbol."""
    if len(events) == 1:    # the common case (one ack, one cancel, one amend): no grouping, one pack
        ev = events[0]
        t = ev["type"]
        if t == "accepted":
            size, action = ev.get("leaves_qty", 0), b"A"
            if not size > 0:
                return {}
        elif t in ("canceled", "expired"):
            size, action = ev["qty"], b"C"
        elif t == "replaced":
            size, action = ev.get("leaves_qty", ev["qty"]), b"M"
        else:
            size = None
        if size is not None:
            sym = ev["symbol"]
            return {sym: _MBO_S.pack(_MBO_LEN, _RT_MBO, instrument_ids.get(sym, 0), ev.get("ts_event", 0) or ts_recv,
                                     ev["order_id"], ev["price"], size, F_LAST, action, _SIDE.get(ev.get("side"), b"N"),
                                     ts_recv, (sequence_start + 1) & 0xFFFFFFFF, ev.get("trade_id", 0) or 0)}
    rows: dict[str, list] = {}
    rested: dict[int, dict] = {}
    accepted_here: set[int] = set()
    for ev in events:
        t = ev["type"]
        sym = ev["symbol"]
        oid = ev["order_id"]
        if t == "accepted":
            accepted_here.add(oid)
            rested[oid] = ev
        elif t == "fill":
            if ev.get("liquidity") == "maker":
                rows.setdefault(sym, []).append((False, b"F", ev, ev["qty"], ev["price"], oid))
            else:
                rows.setdefault(sym, []).append((True, b"T", ev, ev["qty"], ev["price"],
                                                 ev.get("contra_order_id", 0) or 0))
            if oid in rested:
                rested[oid] = ev
        elif t in ("canceled", "expired"):
            if oid in accepted_here:
                rested.pop(oid, None)       # never rested (IOC remainder, FOK, STP of the taker)
            else:
                rows.setdefault(sym, []).append((False, b"C", ev, ev["qty"], ev["price"], oid))
        elif t == "replaced":
            rows.setdefault(sym, []).append((False, b"M", ev, ev.get("leaves_qty", ev["qty"]), ev["price"], oid))
    for oid, ev in rested.items():
        leaves = ev.get("leaves_qty", 0)
        if leaves > 0:
            rows.setdefault(ev["symbol"], []).append((False, b"A", ev, leaves, ev["price"], oid))
    out: dict[str, bytes] = {}
    seq = sequence_start
    for sym, lst in rows.items():
        buf = bytearray(64 * len(lst))
        iid = instrument_ids.get(sym, 0)
        last = len(lst) - 1
        for i, (is_trade, action, ev, size, price, oid) in enumerate(lst):
            seq += 1
            ts_event = ev.get("ts_event", 0) or ts_recv
            flags = F_LAST if i == last else 0
            side = _SIDE.get(ev.get("side"), b"N")
            match = ev.get("trade_id", 0) or 0
            if is_trade:   # argument order = _TRADE_ORDER (checked at import)
                _TRADE_S.pack_into(buf, 64 * i, _TRADE_LEN, _RT_TRADE, iid, ts_event, price, size, action, side,
                                   flags, ts_recv, seq & 0xFFFFFFFF, oid, match)
            else:          # argument order = _MBO_ORDER (checked at import)
                _MBO_S.pack_into(buf, 64 * i, _MBO_LEN, _RT_MBO, iid, ts_event, oid, price, size, flags, action,
                                 side, ts_recv, seq & 0xFFFFFFFF, match)
        out[sym] = bytes(buf)
    return out


def events_to_ticks(events: list[dict], instrument_ids: dict[str, int], ts_recv: int,
                    sequence_start: int = 0) -> dict[str, np.ndarray]:
    """:func:`encode_events` as ``TICK_DTYPE`` arrays."""
    return {k: np.frombuffer(v, dtype=records.TICK_DTYPE)
            for k, v in encode_events(events, instrument_ids, ts_recv, sequence_start).items()}


class MarketDataPublisher:
    """PUB socket of normalized tick records.

    Parameters
    ----------
    symbols : list[str]
        instrument_id of a symbol = its index in this list.
    endpoint : str
        PUB bind address (``tcp://127.0.0.1:*`` picks a port; read :attr:`endpoint` after start()).
    hwm : int
        PUB send high-water mark (messages); a slow subscriber loses messages beyond it (PUB semantics).

    Threading: :meth:`publish` may be called from any thread. The PUB socket is used under one lock, which
    is the full memory barrier ZeroMQ asks for when a socket moves between threads; there is no extra
    publisher thread (a thread hop per batch cost more than the send itself here).
    """

    def __init__(self, symbols: list[str], endpoint: str = "tcp://127.0.0.1:5556", hwm: int = 100_000,
                 ctx: zmq.Context | None = None):
        self.instrument_ids = {s: i for i, s in enumerate(symbols)}
        self.endpoint = endpoint
        self.hwm = hwm
        self.ctx = ctx or zmq.Context.instance()
        self._lock = threading.Lock()
        self._seq = 0
        self._topics: dict[str, bytes] = {}
        self._pub: zmq.Socket | None = None
        self.published = 0

    def start(self) -> "MarketDataPublisher":
        pub = self.ctx.socket(zmq.PUB)
        pub.setsockopt(zmq.SNDHWM, self.hwm)
        pub.setsockopt(zmq.LINGER, 0)
        if self.endpoint.endswith(":0"):
            self.endpoint = self.endpoint[:-2] + ":*"
        pub.bind(self.endpoint)
        self.endpoint = pub.getsockopt_string(zmq.LAST_ENDPOINT)
        self._pub = pub
        return self

    def publish(self, events: list[dict], ts_recv: int | None = None) -> int:
        """Encode and publish one request's events; returns the number of records."""
        if not events:
            return 0
        ts = ts_recv if ts_recv is not None else time.time_ns()
        n = 0
        with self._lock:
            by_sym = encode_events(events, self.instrument_ids, ts, self._seq)
            pub = self._pub
            for sym, payload in by_sym.items():
                k = len(payload) // 64
                self._seq += k
                n += k
                if pub is not None:
                    topic = self._topics.get(sym)
                    if topic is None:
                        topic = self._topics[sym] = sym.encode()
                    try:   # two sends with int flags: send_multipart's enum flag arithmetic costs ~1 us
                        _send(pub, topic, _SNDMORE_NOBLOCK)
                        _send(pub, payload, _NOBLOCK)
                    except zmq.Again:
                        pass   # PUB drops beyond the HWM by design; counted as published anyway
            self.published += n
        return n

    def stop(self) -> None:
        with self._lock:
            if self._pub is not None:
                self._pub.close(linger=0)
                self._pub = None


def decode(payload: bytes) -> np.ndarray:
    """A received records frame as a ``TICK_DTYPE`` array (use ``records.view(a, "mbo")`` per rtype)."""
    return np.frombuffer(payload, dtype=records.TICK_DTYPE)
