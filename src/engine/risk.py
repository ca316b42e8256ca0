"""Pre-trade risk checks run by the gateway before an order reaches an engine.

Checks, in order (the first failure is the reject reason):

``rate_limited``           per-API-key token buckets across all the key's connections (``rate_per_s``
                           orders/s with ``burst`` orders; ``bytes_per_s`` request bytes/s with
                           ``burst_bytes``): an edge check (time, not state), :meth:`RiskManager.take`
``max_qty``                order quantity above ``max_order_qty``
``max_notional``           price_raw * qty above ``max_order_notional_raw`` (1e-9 currency units)
``price_band``             limit price further than ``price_band_bps`` from the reference price:
                           the last trade, else the BBO mid, else ``reference_prices[symbol]`` from the
                           configuration, else no check
``max_open_orders``        the account already has ``max_open_orders`` resting orders
``credit_limit``           open order notional of the account + this order above ``credit_limit_raw``
``position_limit``         worst-case position (position + open orders same side + this order) above
                           ``max_position`` in absolute value

All quantities and prices are integers (prices in 1e-9 units); no float decides anything. The state
(open orders, positions, reference prices) is fed from engine events through :meth:`RiskManager.on_events`,
so replaying the journal's events rebuilds it exactly. The gateway runs :meth:`check_state` on the engine
thread, in sequence order, for the requests of one engine batch one after the other: :meth:`reserve` makes
an order that passed count for the later ones of the same batch until :meth:`clear_reservations` (after the
batch's events were applied). :meth:`state_digest` is the canonical form that the state hash covers.
One lock guards the state: queries read it from other threads.
"""
from __future__ import annotations

import json
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
    rate_per_s: int = 10_000                     # orders per second per API key; 0 disables
    burst: int = 1_000                           # token bucket depth (orders)
    bytes_per_s: int = 4_000_000                 # request bytes per second per API key; 0 disables
    burst_bytes: int = 1_000_000                 # token bucket depth (bytes)
    max_open_orders: int = 10_000                # resting orders per account; 0 disables
    reference_prices: dict = field(default_factory=dict)   # symbol -> price_raw until the symbol trades


@dataclass
class _Bucket:
    tokens_milli: int
    last_ns: int


@dataclass
class _Reservation:
    open_orders: int = 0
    notional: int = 0
    qty: dict = field(default_factory=dict)           # (symbol, side) -> qty


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
        #: any rate limit configured (the gateway skips :meth:`take` when not)
        self.edge_limits = any(lim.rate_per_s > 0 or lim.bytes_per_s > 0
                               for lim in (self.limits, *self.per_account.values()))
        self._lock = threading.Lock()
        self._buckets: dict[bytes | str, _Bucket] = {}
        self._byte_buckets: dict[bytes | str, _Bucket] = {}
        self._accounts: dict[str, _Account] = {}
        self._reserved: dict[str, _Reservation] = {}
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
        return self.limits.reference_prices.get(symbol)

    def position(self, account: str, symbol: str) -> int:
        a = self._accounts.get(account)
        return a.position.get(symbol, 0) if a else 0

    # ---- commands ------------------------------------------------------------------------------
    def set_bbo(self, symbol: str, bid: int | None, ask: int | None) -> None:
        self._bbo[symbol] = (bid, ask)

    def set_last_trade(self, symbol: str, price: int) -> None:
        self._last_trade[symbol] = price

    def check(self, client: bytes | str, account: str, req: dict) -> str | None:
        """Rate limit (one order, no bytes) then every state check on a new order (or amend) request; None
        when it may go to the engine."""
        reason = self.take(client, account, 0)
        return reason if reason is not None else self.check_state(account, req)

    def take(self, client: bytes | str, account: str, nbytes: int = 0, orders: int = 1) -> str | None:
        """Edge check: ``orders`` orders and ``nbytes`` request bytes from ``client``'s buckets (the API key:
        one budget across all its connections); ``"rate_limited"`` when either is empty."""
        lim = self.limits_for(account)
        if (lim.rate_per_s <= 0 or orders <= 0) and (lim.bytes_per_s <= 0 or nbytes <= 0):
            return None
        with self._lock:
            ok = ((lim.rate_per_s <= 0 or orders <= 0
                   or self._take_token(self._buckets, client, lim.rate_per_s, lim.burst, orders))
                  and (lim.bytes_per_s <= 0 or nbytes <= 0 or self._take_token(
                      self._byte_buckets, client, lim.bytes_per_s, lim.burst_bytes, nbytes)))
            if not ok:
                self.rejects["rate_limited"] = self.rejects.get("rate_limited", 0) + 1
                return "rate_limited"
            return None

    def check_state(self, account: str, req: dict) -> str | None:
        """The checks that depend on the state machine (limits, positions, open orders, reference prices):
        the engine thread runs them in sequence order, so a replay of the journal reaches the same state."""
        lim = self.limits_for(account)
        with self._lock:
            reason = self._check_locked(account, req, lim)
            if reason is not None:
                self.rejects[reason] = self.rejects.get(reason, 0) + 1
            return reason

    def check_and_reserve(self, account: str, req: dict, reserve: bool = True) -> str | None:
        """:meth:`check_state`, then (``reserve``: more requests follow in the batch) :meth:`reserve` when it
        passed; one lock (the engine thread's path)."""
        lim = self.per_account.get(account, self.limits) if self.per_account else self.limits
        with self._lock:
            reason = self._check_locked(account, req, lim)
            if reason is not None:
                self.rejects[reason] = self.rejects.get(reason, 0) + 1
                return reason
            if reserve and req.get("type") == "new":
                self._reserve_locked(account, req)
            return None

    def reserve(self, account: str, req: dict) -> None:
        """A new order passed :meth:`check_state` and goes to the engine in this batch: count it for the
        next checks of the same batch (until :meth:`clear_reservations`)."""
        if req.get("type") != "new":
            return
        with self._lock:
            self._reserve_locked(account, req)

    def _reserve_locked(self, account: str, req: dict) -> None:
        qty = int(req.get("qty") or 0)
        price = req.get("price") or self.reference_price(req.get("symbol")) or 0
        r = self._reserved.get(account)
        if r is None:
            r = self._reserved[account] = _Reservation()
        r.open_orders += 1
        r.notional += price * qty
        k = (req.get("symbol"), req.get("side"))
        r.qty[k] = r.qty.get(k, 0) + qty

    def clear_reservations(self) -> None:
        """The batch's events were applied (they carry the real state): forget its reservations."""
        if self._reserved:
            with self._lock:
                self._reserved.clear()

    def _check_locked(self, account, req, lim: RiskLimits) -> str | None:
        kind = req.get("type")
        if kind == "new":
            qty = req.get("qty") or 0
            price = None if req.get("order_type") == "market" else req.get("price")
        elif kind == "amend":
            qty = req.get("new_qty") or 0
            price = req.get("new_price")
        else:
            return None
        symbol = req.get("symbol")
        if qty <= 0 and kind == "new":
            return "bad_qty"
        if qty > lim.max_order_qty:
            return "max_qty"
        band = lim.price_band_bps
        ref = self.reference_price(symbol) if band > 0 or price is None else None
        notional = (price if price is not None else (ref or 0)) * qty
        if notional > lim.max_order_notional_raw:
            return "max_notional"
        if band > 0 and price is not None and ref is not None:
            if abs(price - ref) * 10_000 > band * ref:
                return "price_band"
        if kind == "amend":
            return None
        acct = self._accounts.get(account)
        res = self._reserved.get(account) if self._reserved else None
        if lim.max_open_orders > 0 and (acct is not None or res is not None):
            n_open = (len(acct.open_orders) if acct else 0) + (res.open_orders if res else 0)
            if n_open >= lim.max_open_orders:
                return "max_open_orders"
        if lim.credit_limit_raw < UNLIMITED:
            open_notional = (acct.open_notional if acct else 0) + (res.notional if res else 0)
            if open_notional + notional > lim.credit_limit_raw:
                return "credit_limit"
        if lim.max_position < UNLIMITED:
            pos = acct.position.get(symbol, 0) if acct else 0
            side = req.get("side")
            same = ((acct.open_qty.get((symbol, side), 0) if acct else 0)
                    + (res.qty.get((symbol, side), 0) if res else 0))
            if side == "B":
                worst = pos + same + qty
            else:
                worst = -(pos - same - qty)
            if worst > lim.max_position:
                return "position_limit"
        return None

    def export_state(self) -> dict:
        """The state machine's part of the risk state as JSON-able data (gateway snapshots)."""
        with self._lock:
            return {"accounts": {n: {"open_orders": [[k, *v] for k, v in a.open_orders.items()],
                                     "open_notional": a.open_notional, "position": a.position,
                                     "open_qty": [[s, d, q] for (s, d), q in a.open_qty.items()]}
                                 for n, a in self._accounts.items()},
                    "last_trade": self._last_trade, "bbo": {k: list(v) for k, v in self._bbo.items()}}

    def import_state(self, data: dict) -> None:
        """Restore :meth:`export_state` (replaces the state machine's part; rate buckets untouched)."""
        with self._lock:
            self._accounts = {}
            for n, a in data["accounts"].items():
                acct = self._accounts[n] = _Account()
                acct.open_orders = {row[0]: list(row[1:]) for row in a["open_orders"]}
                acct.open_notional = a["open_notional"]
                acct.position = dict(a["position"])
                acct.open_qty = {(s, d): q for s, d, q in a["open_qty"]}
            self._last_trade = dict(data["last_trade"])
            self._bbo = {k: tuple(v) for k, v in data["bbo"].items()}

    def state_digest(self) -> bytes:
        """Canonical bytes of the state machine's part of the risk state (open orders, positions, last
        trades; not the rate buckets, which are time at the edge): what the state hash covers."""
        with self._lock:
            accts = []
            for name in sorted(self._accounts):
                a = self._accounts[name]
                if not a.open_orders and not any(a.position.values()):
                    continue        # an account that only saw unsequenced rejects: no state
                accts.append([name, sorted([k, v] for k, v in a.open_orders.items()), a.open_notional,
                              sorted([k, v] for k, v in a.position.items() if v),
                              sorted([list(k), v] for k, v in a.open_qty.items() if v)])
            return json.dumps([accts, sorted(self._last_trade.items()),
                               sorted([k, list(v)] for k, v in self._bbo.items())],
                              separators=(",", ":"), default=str).encode()

    def _take_token(self, buckets: dict, client, rate: int, burst: int, n: int) -> bool:
        now = self.clock()
        b = buckets.get(client)
        cap = burst * 1000
        if b is None:
            b = buckets[client] = _Bucket(cap, now)
        else:
            # refill: rate tokens per 1e9 ns, kept in thousandths of a token (integers only)
            b.tokens_milli = min(cap, b.tokens_milli + (now - b.last_ns) * rate // 1_000_000)
            b.last_ns = now
        if b.tokens_milli >= 1000 * n:
            b.tokens_milli -= 1000 * n
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
