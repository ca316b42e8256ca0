"""Orders and public trades as the engine's events describe them, for the REST queries.

Fed on the engine thread, in engine order, by :class:`EventTap` (every event list the pipeline publishes,
whichever door sent the request), and at start from the events the journal replay regenerated
(``EngineManager.recovered_events``), so a restart answers for the orders it recovered. Read by the HTTP
event loop under one lock. Open orders are kept until they end; ended orders and trades are kept in bounded
LRU/ring memories (``max_closed``, ``max_trades`` per symbol): the history database answers beyond that.
"""
from __future__ import annotations

import threading
from collections import OrderedDict, deque

from engine.http.codec import SIDE_NAME, price_str

_ENDS = ("fill", "canceled", "expired")


def _ms(ns) -> int:
    return int(ns or 0) // 1_000_000


# an order's record in the views: a list of the engine's raw values, formatted only when a query reads it
# (an order is written by every event and usually never read)
_OID, _CID, _ACCT, _SYM, _SIDE, _TYPE, _PRICE, _QTY, _FILLED, _LEAVES, _STATUS, _CREATED, _UPDATED, _SEQ = range(14)


def _order_dict(r: list) -> dict:
    price = r[_PRICE]
    return {"order_id": str(r[_OID]), "cid": r[_CID], "account": r[_ACCT], "symbol": r[_SYM],
            "side": SIDE_NAME.get(r[_SIDE], r[_SIDE]), "type": r[_TYPE],
            "price": price_str(price) if price else None, "qty": str(r[_QTY]), "filled_qty": str(r[_FILLED]),
            "leaves_qty": str(r[_LEAVES]), "status": r[_STATUS], "created_at": _ms(r[_CREATED]),
            "updated_at": _ms(r[_UPDATED]), "seq": r[_SEQ]}


def _trade_dict(t: tuple) -> dict:
    trade_id, sym, price, qty, side, ts, seq = t
    return {"trade_id": str(trade_id), "symbol": sym, "price": price_str(price), "qty": str(qty),
            "taker_side": SIDE_NAME.get(side, side), "ts": _ms(ts), "seq": seq}


class OrderView:
    def __init__(self, max_closed: int = 100_000, max_trades: int = 10_000):
        self._lock = threading.Lock()
        self.open: dict[int, list] = {}
        self.closed: OrderedDict = OrderedDict()
        self.trades: dict[str, deque] = {}
        self.max_closed = max_closed
        self.max_trades = max_trades
        self.events = 0
        self.applied: dict[str, int] = {}      # symbol -> highest engine sequence applied (read-your-writes)

    # ---- engine thread ----------------------------------------------------------------------------
    def apply(self, events: list[dict]) -> None:
        with self._lock:
            for ev in events:
                self._apply(ev)

    def _apply(self, ev: dict) -> None:
        t = ev.get("type")
        if t == "request":        # recovery's marker before each request's events (gateway state), no event
            return
        seq = ev.get("seq") or 0
        if seq:
            sym = ev.get("symbol", "")
            if seq > self.applied.get(sym, 0):
                self.applied[sym] = seq
        oid = ev.get("order_id")
        self.events += 1
        if t == "accepted":
            price = ev.get("price")
            ts = ev.get("ts_event")
            self.open[oid] = [oid, ev.get("client_order_id") or "", ev.get("account", ""), ev.get("symbol", ""),
                              ev.get("side"), "LIMIT" if price else "MARKET", price, ev.get("qty", 0), 0,
                              ev.get("leaves_qty", 0), "ACCEPTED", ts, ts, ev.get("seq", 0)]
            return
        o = self.open.get(oid)
        if t == "fill":
            if ev.get("liquidity") == "taker":
                self._trade(ev)
            if o is None:
                return
            leaves = ev.get("leaves_qty", 0)
            o[_FILLED] = ev.get("cum_qty", 0)
            o[_LEAVES] = leaves
            o[_STATUS] = "FILLED" if not leaves else "PARTIALLY_FILLED"
        elif t == "canceled" or t == "expired":
            if o is None:
                return
            leaves = ev.get("leaves_qty", 0)
            o[_LEAVES] = leaves
            if leaves:
                return                      # a partial cancel (qty reduced): still open
            o[_STATUS] = "CANCELED" if t == "canceled" else "EXPIRED"
        elif t == "replaced":
            if o is None:
                return
            if ev.get("price"):
                o[_PRICE] = ev["price"]
            leaves = ev.get("leaves_qty", 0)
            o[_LEAVES] = leaves
            o[_QTY] = int(leaves) + int(o[_FILLED])
        else:
            return
        o[_UPDATED] = ev.get("ts_event")
        o[_SEQ] = ev.get("seq", 0)
        if t in _ENDS and not leaves:
            del self.open[oid]
            self.closed[oid] = o
            if len(self.closed) > self.max_closed:
                self.closed.popitem(last=False)

    def _trade(self, ev: dict) -> None:
        sym = ev.get("symbol", "")
        q = self.trades.get(sym)
        if q is None:
            q = self.trades[sym] = deque(maxlen=self.max_trades)
        q.append((ev.get("trade_id", 0), sym, ev["price"], ev["qty"], ev.get("side"), ev.get("ts_event"),
                  ev.get("seq", 0)))

    def caught_up(self, events: list[dict]) -> bool:
        """True once every event of a reply is applied here (the reply reaches the HTTP loop before the
        engine thread publishes the same events to the views: a 202 must not precede its own order)."""
        applied = self.applied
        for ev in events:
            seq = ev.get("seq") or 0
            if seq and applied.get(ev.get("symbol", ""), 0) < seq:
                return False
        return True

    # ---- HTTP event loop ---------------------------------------------------------------------------
    def order(self, account: str, oid: int) -> dict | None:
        """The order if it belongs to ``account`` (another account's order is unknown, not forbidden)."""
        with self._lock:
            o = self.open.get(oid) or self.closed.get(oid)
            if o is None or o[_ACCT] != account:
                return None
            return _order_dict(o)

    def orders(self, account: str, status: str | None) -> list[dict]:
        with self._lock:
            if status == "open":
                return [_order_dict(o) for o in self.open.values() if o[_ACCT] == account]
            out = [_order_dict(o) for o in self.open.values() if o[_ACCT] == account]
            out += [_order_dict(o) for o in self.closed.values() if o[_ACCT] == account]
        out.sort(key=lambda o: int(o["order_id"]))
        return out

    def trade_list(self, symbol: str, since_ms: int, limit: int) -> list[dict]:
        with self._lock:
            q = self.trades.get(symbol) or ()
            out = [_trade_dict(t) for t in q if _ms(t[5]) >= since_ms]
        return out[-limit:]


class EventTap:
    """Stands in the pipeline's ``marketdata`` slot: forwards every event list to the real market-data
    publisher, then to listeners (engine thread, engine order). A listener that raises is counted, not
    allowed to stop market data or the engine."""

    def __init__(self, inner, listeners=()):
        self.inner = inner
        self.listeners = list(listeners)
        self.errors = 0
        self.last_error = ""

    def publish(self, events: list[dict], *args, **kw):
        out = self.inner.publish(events, *args, **kw) if self.inner is not None else 0
        for fn in self.listeners:
            try:
                fn(events)
            except Exception as e:    # noqa: BLE001 - a view must never stop the engine thread
                self.errors += 1
                self.last_error = repr(e)
        return out

    def __getattr__(self, name):          # start/stop/endpoint... of the real publisher
        return getattr(self.inner, name)
