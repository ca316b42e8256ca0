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


class OrderView:
    def __init__(self, max_closed: int = 100_000, max_trades: int = 10_000):
        self._lock = threading.Lock()
        self.open: dict[int, dict] = {}
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
            self.open[oid] = {
                "order_id": str(oid), "cid": ev.get("client_order_id") or "", "account": ev.get("account", ""),
                "symbol": ev.get("symbol", ""), "side": SIDE_NAME.get(ev.get("side"), ev.get("side")),
                "type": "LIMIT" if ev.get("price") else "MARKET",
                "price": price_str(ev["price"]) if ev.get("price") else None,
                "qty": str(ev.get("qty", 0)), "filled_qty": "0", "leaves_qty": str(ev.get("leaves_qty", 0)),
                "status": "ACCEPTED", "created_at": _ms(ev.get("ts_event")),
                "updated_at": _ms(ev.get("ts_event")), "seq": ev.get("seq", 0)}
            return
        o = self.open.get(oid)
        if t == "fill":
            if ev.get("liquidity") == "taker":
                self._trade(ev)
            if o is None:
                return
            o["filled_qty"] = str(ev.get("cum_qty", 0))
            o["leaves_qty"] = str(ev.get("leaves_qty", 0))
            o["status"] = "FILLED" if not ev.get("leaves_qty") else "PARTIALLY_FILLED"
        elif t in ("canceled", "expired"):
            if o is None:
                return
            o["leaves_qty"] = str(ev.get("leaves_qty", 0))
            if ev.get("leaves_qty"):
                return                      # a partial cancel (qty reduced): still open
            o["status"] = "CANCELED" if t == "canceled" else "EXPIRED"
        elif t == "replaced":
            if o is None:
                return
            if ev.get("price"):
                o["price"] = price_str(ev["price"])
            o["leaves_qty"] = str(ev.get("leaves_qty", 0))
            o["qty"] = str(int(ev.get("leaves_qty", 0)) + int(o["filled_qty"]))
        else:
            return
        o["updated_at"] = _ms(ev.get("ts_event"))
        o["seq"] = ev.get("seq", 0)
        if t in _ENDS and not ev.get("leaves_qty"):
            del self.open[oid]
            self.closed[oid] = o
            if len(self.closed) > self.max_closed:
                self.closed.popitem(last=False)

    def _trade(self, ev: dict) -> None:
        sym = ev.get("symbol", "")
        q = self.trades.get(sym)
        if q is None:
            q = self.trades[sym] = deque(maxlen=self.max_trades)
        q.append({"trade_id": str(ev.get("trade_id", 0)), "symbol": sym, "price": price_str(ev["price"]),
                  "qty": str(ev["qty"]), "taker_side": SIDE_NAME.get(ev.get("side"), ev.get("side")),
                  "ts": _ms(ev.get("ts_event")), "seq": ev.get("seq", 0)})

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
            if o is None or o["account"] != account:
                return None
            return dict(o)

    def orders(self, account: str, status: str | None) -> list[dict]:
        with self._lock:
            if status == "open":
                return [dict(o) for o in self.open.values() if o["account"] == account]
            out = [dict(o) for o in self.open.values() if o["account"] == account]
            out += [dict(o) for o in self.closed.values() if o["account"] == account]
        out.sort(key=lambda o: int(o["order_id"]))
        return out

    def trade_list(self, symbol: str, since_ms: int, limit: int) -> list[dict]:
        with self._lock:
            q = self.trades.get(symbol) or ()
            out = [dict(t) for t in q if t["ts"] >= since_ms]
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
