"""What a strategy is: a small class with ``on_tick``, run in its own process by ``feedhandler strategy``.

Write your own::

    # mystrat.py
    from engine.strategy import Strategy

    class Momentum(Strategy):
        PARAMS = {"qty": 100, "step_bps": 20}          # defaults; --param step_bps=50 overrides (same type)

        def on_start(self):
            self.last = {}

        def on_tick(self, tick):                       # one price observation (a trade, or a BBO change)
            prev = self.last.get(tick.symbol)
            self.last[tick.symbol] = tick.price
            if prev and tick.price > prev * (10_000 + self.params["step_bps"]) // 10_000:
                self.buy(tick.symbol, self.params["qty"], limit=tick.price, reason="momentum", tick=tick)

        def on_ack(self, signal, ack):                 # optional: the executor's outcome of a signal
            ...

    $ feedhandler strategy mystrat:Momentum --md tcp://127.0.0.1:5570 --signals tcp://127.0.0.1:5580 \\
          --acks tcp://127.0.0.1:5581 --symbols AAPL,MSFT --param step_bps=50

(``mystrat`` must be importable: on ``PYTHONPATH`` or in the working directory.) Prices are integers of
1e-9 currency units (``tick.price / 1e9`` is dollars: for display only). ``buy``/``sell`` return the
signal id, or None when the runner refused the signal because too many are unacknowledged (backpressure:
the executor is slow or down; ``self.backpressure`` is then True). A strategy never sees credentials:
orders are the executor's business.

For speed a strategy may override ``on_batch(symbol, ticks)`` and read the record arrays directly
(``feedhandler.records``): the default turns each price record into a :class:`Tick` and calls ``on_tick``.
"""
from __future__ import annotations

import struct
from typing import Callable

import numpy as np

from feedhandler import records

__all__ = ["Tick", "Strategy", "ticks_of"]

_RT_TRADE = records.RTYPE["trade"]
_RT_MBO = records.RTYPE["mbo"]
_RT_BBO = records.RTYPE["bbo"]
_MBO = records.DTYPES["mbo"]
_UNDEF = records.UNDEF_PRICE
_FILL = ord("F")


class Tick:
    """One price observation of ``symbol``.

    kind: ``"trade"`` (a print: trade record, or an order-book fill whose trade is not also in the same
    message) or ``"bbo"`` (a best bid/offer change; ``price`` is the mid, 0 when a side is empty).
    """

    __slots__ = ("symbol", "kind", "price", "size", "side", "bid_px", "ask_px", "bid_sz", "ask_sz", "ts_event",
                 "ts_recv")

    def __init__(self, symbol, kind, price, size, side, bid_px, ask_px, bid_sz, ask_sz, ts_event, ts_recv):
        self.symbol = symbol
        self.kind = kind
        self.price = price
        self.size = size
        self.side = side
        self.bid_px = bid_px
        self.ask_px = ask_px
        self.bid_sz = bid_sz
        self.ask_sz = ask_sz
        self.ts_event = ts_event
        self.ts_recv = ts_recv

    def __repr__(self) -> str:
        return (f"Tick({self.symbol} {self.kind} price={self.price} size={self.size} bid={self.bid_px} "
                f"ask={self.ask_px} ts_recv={self.ts_recv})")


def _unpacker(kind: str, fields: tuple[str, ...]) -> struct.Struct:
    """A little-endian struct reading ``fields`` (in this order) of a record kind at the offsets of the C
    descriptor table (``feedhandler.records``): no layout typed by hand here."""
    dt = records.DTYPES[kind]
    codes = {("u", 1): "B", ("u", 2): "H", ("u", 4): "I", ("u", 8): "Q", ("i", 4): "i", ("i", 8): "q", ("S", 1): "c"}
    fmt, pos = "<", 0
    for off, name in sorted((dt.fields[f][1], f) for f in fields):
        if off < pos:
            raise ImportError(f"{kind}.{name} overlaps the previous field")
        ft = dt.fields[name][0]
        fmt += "x" * (off - pos) + codes[(ft.kind, ft.itemsize)]
        pos = off + ft.itemsize
    order = tuple(f for _, f in sorted((dt.fields[f][1], f) for f in fields))
    if order != fields:
        raise ImportError(f"{kind}: fields {fields} are not in record order {order} (record.h changed?)")
    return struct.Struct(fmt)


# fields in record order (checked above against record.h's descriptor table at import)
_BBO_S = _unpacker("bbo", ("ts_event", "ts_recv", "bid_px", "ask_px", "bid_sz", "ask_sz"))
_TRADE_S = _unpacker("trade", ("ts_event", "price", "size", "side", "ts_recv", "match_number"))
_MBO_S = _unpacker("mbo", ("ts_event", "price", "size", "side", "ts_recv", "match_number"))
_MBO_ACTION = _MBO.fields["action"][1]
_SIZE = records.TICK_DTYPE.itemsize
_OTHER = {b"B": "A", b"A": "B"}


def ticks_of(symbol: str, recs) -> list[Tick]:
    """The price observations in one market-data message (records of one instrument, stream order; a
    ``TICK_DTYPE`` array or the message's bytes).

    Trades: trade records, and MBO fills (action F, price enriched by the books) unless a trade record of
    the same message carries the same match number (the exchange publishes both sides of a match; ITCH
    executions arrive as fills only). BBO: ``bbo`` records (feedhandler ``--publish-what bbo``).
    One pass of ``struct`` reads over the bytes: a market-data message is mostly one record, where numpy's
    per-call overhead would cost more than the record."""
    buf = recs if isinstance(recs, (bytes, bytearray, memoryview)) else recs.tobytes()
    out: list[Tick] = []
    trades: set[int] | None = None
    fills: list[tuple[int, int]] | None = None       # (index in out, match number)
    for off in range(0, len(buf) - _SIZE + 1, _SIZE):
        rt = buf[off + 1]
        if rt == _RT_BBO:
            ts_event, ts_recv, bid, ask, bid_sz, ask_sz = _BBO_S.unpack_from(buf, off)
            mid = (bid + ask) // 2 if bid != _UNDEF and ask != _UNDEF else 0
            out.append(Tick(symbol, "bbo", mid, 0, "N", bid, ask, bid_sz, ask_sz, ts_event, ts_recv))
        elif rt == _RT_TRADE:
            ts_event, price, size, side, ts_recv, match = _TRADE_S.unpack_from(buf, off)
            out.append(Tick(symbol, "trade", price, size, side.decode(), _UNDEF, _UNDEF, 0, 0, ts_event, ts_recv))
            if trades is None:
                trades = set()
            trades.add(match)
        elif rt == _RT_MBO and buf[off + _MBO_ACTION] == _FILL:
            ts_event, price, size, side, ts_recv, match = _MBO_S.unpack_from(buf, off)
            if price == _UNDEF:
                continue
            # the resting order's side was hit: the aggressor is the other side
            out.append(Tick(symbol, "trade", price, size, _OTHER.get(side, "N"), _UNDEF, _UNDEF, 0, 0, ts_event,
                            ts_recv))
            if fills is None:
                fills = []
            fills.append((len(out) - 1, match))
    if trades and fills:
        drop = {i for i, m in fills if m in trades}
        if drop:
            out = [t for i, t in enumerate(out) if i not in drop]
    return out


class Strategy:
    """Base class of a strategy. Override :meth:`on_tick` (and optionally :meth:`on_start`,
    :meth:`on_ack`, :meth:`on_batch`); emit signals with :meth:`buy` / :meth:`sell`.

    ``PARAMS``: the strategy's parameters and their defaults; ``--param NAME=VALUE`` sets one (converted
    to the default's type; an unknown name is an error). ``self.params`` holds the values,
    ``self.symbols`` the symbols it trades.
    """

    PARAMS: dict = {}
    name: str = "strategy"

    def __init__(self, symbols: list[str], params: dict | None = None):
        self.symbols = list(symbols)
        self.params = dict(self.PARAMS)
        for k, v in (params or {}).items():
            if k not in self.PARAMS:
                raise ValueError(f"{type(self).__name__} has no parameter {k!r} (it has: "
                                 f"{', '.join(sorted(self.PARAMS)) or 'none'})")
            self.params[k] = v
        self._emit: Callable | None = None
        self.backpressure = False

    # ---- the runner calls these -----------------------------------------------------------------
    def bind(self, emit: Callable) -> None:
        """The runner's signal sink: ``emit(symbol, side, qty, price, order_type, tif, reason, md_ts)``
        returns the signal id or None (refused: backpressure)."""
        self._emit = emit

    def on_start(self) -> None:
        """Called once before the first tick."""

    def on_batch(self, symbol: str, recs: np.ndarray) -> None:
        """One market-data message: records of ``symbol`` (``TICK_DTYPE``). Default: :meth:`on_tick` per
        price observation (:func:`ticks_of`)."""
        for t in ticks_of(symbol, recs):
            self.on_tick(t)

    def on_tick(self, tick: Tick) -> None:
        raise NotImplementedError(f"{type(self).__name__} must define on_tick(self, tick)")

    def on_ack(self, signal, ack: dict) -> None:
        """The executor's outcome of one of this strategy's signals (``ack["status"]``, ``ack["filled"]``)."""

    # ---- what a strategy calls ------------------------------------------------------------------
    def buy(self, symbol: str, qty: int, limit: int | None = None, tif: str = "ioc", reason: str = "",
            tick: Tick | None = None) -> str | None:
        return self._signal(symbol, "B", qty, limit, tif, reason, tick)

    def sell(self, symbol: str, qty: int, limit: int | None = None, tif: str = "ioc", reason: str = "",
             tick: Tick | None = None) -> str | None:
        return self._signal(symbol, "S", qty, limit, tif, reason, tick)

    def _signal(self, symbol, side, qty, limit, tif, reason, tick) -> str | None:
        if self._emit is None:
            raise RuntimeError("the strategy is not running (no runner bound)")
        return self._emit(symbol, side, int(qty), None if limit is None else int(limit),
                          "market" if limit is None else "limit", tif, reason, tick.ts_recv if tick else 0)


def coerce_params(cls: type, pairs: list[str]) -> dict:
    """``["window=50", "confirm=2"]`` -> typed values after ``cls.PARAMS``' defaults."""
    out = {}
    defaults = getattr(cls, "PARAMS", {})
    for p in pairs:
        k, sep, v = p.partition("=")
        k = k.strip().replace("-", "_")
        if not sep or not k:
            raise ValueError(f"--param {p!r} is not NAME=VALUE")
        if k not in defaults:
            raise ValueError(f"{cls.__name__} has no parameter {k!r} (it has: {', '.join(sorted(defaults)) or 'none'})")
        d = defaults[k]
        try:
            if isinstance(d, bool):
                if v.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError
                out[k] = v.lower() in ("1", "true", "yes", "on")
            elif isinstance(d, int):
                out[k] = int(v)
            elif isinstance(d, float):
                out[k] = float(v)
            else:
                out[k] = v
        except ValueError:
            kind = {bool: "boolean (true/false)", int: "whole number", float: "number"}.get(type(d), type(d).__name__)
            raise ValueError(f"--param {k}={v!r}: expected a {kind}") from None
    return out
