"""Pre-trade risk checks run by the gateway before an order reaches an engine.

Checks, in order (the first failure is the reject reason):

``rate_limited``           per-client token bucket (``rate_per_s`` orders/s, ``burst`` orders)
``max_qty``                order quantity above ``max_order_qty``
``max_notional``           price_raw * qty above ``max_order_notional_raw`` (1e-9 currency units)
``price_band``             limit price further than ``price_band_bps`` from the reference price:
                           the last trade, else the BBO mid, else no check (empty book, no trades)
``credit_limit``           open order notional of the account + this order above ``credit_limit_raw``
``position_limit``         worst-case position (position + open orders same side + this order) above
                           ``max_position`` in absolute value

All quantities and prices are integers (prices in 1e-9 units); no float decides anything. The state
(open orders, positions, reference prices) is fed from engine events through :meth:`RiskManager.on_event`.
One lock guards it: gateway workers call ``check`` and ``on_event`` from several threads.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

UNLIMITED = 1 << 62


@dataclass(frozen=True)
class RiskLimits:
    max_order_qty: int = 1_000_000
    max_order_notional_raw: int = UNLIMITED      # 1e-9 currency units
    price_band_bps: int = 1_000                  # 10 %; 0 disables
    credit_limit_raw: int = UNLIMITED            # open order notional per account, 1e-9 units
    max_position: int = UNLIMITED                # shares/contracts per account and symbol
    rate_per_s: int = 10_000                     # orders per second per client; 0 disables
    burst: int = 1_000                           # token bucket depth (orders)


@dataclass
class _Bucket:
    tokens_milli: int
    last_ns: int


@dataclass
class _Account:
    open_orders: dict = field(default_factory=dict)   # order_id -> [symbol, side, price, leaves]
    open_notional: int = 0
    position: dict = field(default_factory=dict)      # symbol -> signed qty
    open_qty: dict = field(default_factory=dict)      # (symbol, side) -> qty


class RiskManager:
    """Stateful pre-trade risk. ``check`` returns None (pass) or a reason string."""

    def __init__(self, limits: RiskLimits | None = None, per_account: dict | None = None,
                 clock: Callable[[], int] = time.monotonic_ns):
        self.limits = limits or RiskLimits()
        self.per_account: dict[str, RiskLimits] = dict(per_account or {})
        self.clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[bytes | str, _Bucket] = {}
        self._accounts: dict[str, _Account] = {}
        self._last_trade: dict[str, int] = {}
        self._bbo: dict[str, tuple[int | None, int | None]] = {}
        self.rejects: dict[str, int] = {}

    # ---- queries -------------------------------------------------------------------------------
    def limits_for(self, account: str) -> RiskLimits:
        return self.per_account.get(account, self.limits)

    def reference_price(self, symbol: str) -> int | None:
        px = self._last_trade.get(symbol)
        if px is not None:
            return px
        bid, ask = self._bbo.get(symbol, (None, None))
        if bid is not None and ask is not None:
            return (bid + ask) // 2
        return None

    def position(self, account: str, symbol: str) -> int:
        a = self._accounts.get(account)
        return a.position.get(symbol, 0) if a else 0

    # ---- commands ------------------------------------------------------------------------------
    def set_bbo(self, symbol: str, bid: int | None, ask: int | None) -> None:
        self._bbo[symbol] = (bid, ask)

    def set_last_trade(self, symbol: str, price: int) -> None:
        self._last_trade[symbol] = price

    def check(self, client: bytes | str, account: str, req: dict) -> str | None:
        """Run every check on a new order (or amend) request; None when it may go to the engine."""
        lim = self.limits_for(account)
        with self._lock:
            reason = self._check_locked(client, account, req, lim)
            if reason is not None:
                self.rejects[reason] = self.rejects.get(reason, 0) + 1
            return reason

    def _check_locked(self, client, account, req, lim: RiskLimits) -> str | None:
        if lim.rate_per_s > 0 and not self._take_token(client, lim):
            return "rate_limited"
        kind = req.get("type")
        if kind not in ("new", "amend"):
            return None
        qty = int(req.get("qty") if kind == "new" else (req.get("new_qty") or 0))
        price = req.get("price") if kind == "new" else req.get("new_price")
        symbol = req.get("symbol")
        if qty <= 0 and kind == "new":
            return "bad_qty"
        if qty > lim.max_order_qty:
            return "max_qty"
        ref = self.reference_price(symbol)
        px_for_notional = price if price is not None else ref
        notional = (px_for_notional or 0) * qty
        if notional > lim.max_order_notional_raw:
            return "max_notional"
        if price is not None and ref is not None and lim.price_band_bps > 0:
            if abs(price - ref) * 10_000 > lim.price_band_bps * ref:
                return "price_band"
        if kind == "amend":
            return None
        acct = self._accounts.get(account)
        open_notional = acct.open_notional if acct else 0
        if open_notional + notional > lim.credit_limit_raw:
            return "credit_limit"
        if lim.max_position < UNLIMITED:
            pos = acct.position.get(symbol, 0) if acct else 0
            side = req.get("side")
            if side == "B":
                worst = pos + (acct.open_qty.get((symbol, "B"), 0) if acct else 0) + qty
            else:
                worst = -(pos - (acct.open_qty.get((symbol, "S"), 0) if acct else 0) - qty)
            if worst > lim.max_position:
                return "position_limit"
        return None

    def _take_token(self, client, lim: RiskLimits) -> bool:
        now = self.clock()
        b = self._buckets.get(client)
        cap = lim.burst * 1000
        if b is None:
            b = self._buckets[client] = _Bucket(cap, now)
        else:
            # refill: rate_per_s tokens per 1e9 ns, kept in thousandths of a token (integers only)
            b.tokens_milli = min(cap, b.tokens_milli + (now - b.last_ns) * lim.rate_per_s // 1_000_000)
            b.last_ns = now
        if b.tokens_milli >= 1000:
            b.tokens_milli -= 1000
            return True
        return False

    def on_event(self, ev: dict) -> None:
        """Update open orders, positions and reference prices from one engine event."""
        self.on_events((ev,))

    def on_events(self, events) -> None:
        """:meth:`on_event` for each event in order, under ONE lock acquisition (the gateway's engine
        thread calls this once per engine batch)."""
        accounts = self._accounts
        with self._lock:
            for ev in events:
                kind = ev.get("type")
                acct_name = ev.get("account")
                if acct_name is not None:
                    a = accounts.get(acct_name)
                    if a is None:
                        a = accounts[acct_name] = _Account()
                else:
                    a = None
                if kind == "accepted":
                    if a is not None:
                        leaves = ev.get("leaves_qty", ev.get("qty", 0))
                        if leaves:
                            self._open(a, ev.get("order_id"), ev.get("symbol"), ev.get("side"),
                                       ev.get("price") or 0, int(leaves))
                elif kind == "canceled":
                    if a is not None:
                        self._close(a, ev.get("order_id"))
                elif kind == "fill":
                    px, q = int(ev["price"]), int(ev["qty"])
                    sym = ev.get("symbol")
                    if ev.get("liquidity") in (None, "T", "taker") or ev.get("aggressor", True):
                        self._last_trade[sym] = px
                    if a is not None:
                        sgn = 1 if ev.get("side") == "B" else -1
                        a.position[sym] = a.position.get(sym, 0) + sgn * q
                        self._reduce(a, ev.get("order_id"), q)
                elif kind == "replaced" and a is not None:
                    oid = ev.get("order_id")
                    rec = a.open_orders.get(oid)
                    if rec is not None:
                        self._close(a, oid)
                        new_oid = ev.get("new_order_id", oid)
                        self._open(a, new_oid, rec[0], rec[1], ev.get("price", rec[2]) or rec[2],
                                   int(ev.get("leaves_qty", ev.get("qty", rec[3]))))

    def _open(self, a: _Account, oid, symbol, side, price, leaves):
        if oid in a.open_orders:
            self._close(a, oid)
        a.open_orders[oid] = [symbol, side, price, leaves]
        a.open_notional += price * leaves
        a.open_qty[(symbol, side)] = a.open_qty.get((symbol, side), 0) + leaves

    def _reduce(self, a: _Account, oid, q):
        rec = a.open_orders.get(oid)
        if rec is None:
            return
        q = min(q, rec[3])
        rec[3] -= q
        a.open_notional -= rec[2] * q
        a.open_qty[(rec[0], rec[1])] -= q
        if rec[3] == 0:
            del a.open_orders[oid]

    def _close(self, a: _Account, oid):
        rec = a.open_orders.pop(oid, None)
        if rec is not None:
            a.open_notional -= rec[2] * rec[3]
            a.open_qty[(rec[0], rec[1])] -= rec[3]
