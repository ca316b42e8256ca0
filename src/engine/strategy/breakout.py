"""Support/resistance breakout: ``feedhandler strategy breakout``.

Per symbol, over the last ``window`` price observations (trades, or BBO mids; ``source``):

- resistance = the highest price of the window, support = the lowest;
- a break: a price above resistance (below support) by more than ``buffer_bps``. The level is frozen
  when the break starts;
- confirmation: the break is a signal once ``confirm_ticks`` consecutive observations stayed beyond the
  frozen level AND ``confirm_ms`` of market time (ts_event) passed since the first of them; a price back
  inside the level cancels the break;
- signal: buy ``qty`` on a resistance break, sell on a support break, a limit order ``slippage_bps``
  through the last price (``tif``, IOC by default), unless the position (filled, plus what is in flight)
  would go beyond ``max_position``; then ``cooldown`` observations without a new signal in that symbol.

All arithmetic on prices is integer (1e-9 units). Levels come from a monotonic deque per side, so each
observation costs O(1) amortized whatever the window.
"""
from __future__ import annotations

from collections import deque

from engine.strategy.base import Strategy, Tick

__all__ = ["Breakout", "Levels"]


class Levels:
    """Rolling max and min of the last ``window`` prices (monotonic deques of (index, price))."""

    __slots__ = ("window", "n", "hi", "lo")

    def __init__(self, window: int):
        if window < 2:
            raise ValueError(f"window must be at least 2, not {window}")
        self.window = window
        self.n = 0
        self.hi: deque = deque()
        self.lo: deque = deque()

    def push(self, price: int) -> None:
        i = self.n
        self.n += 1
        hi, lo = self.hi, self.lo
        while hi and hi[-1][1] <= price:
            hi.pop()
        hi.append((i, price))
        while lo and lo[-1][1] >= price:
            lo.pop()
        lo.append((i, price))
        first = self.n - self.window
        if hi[0][0] < first:
            hi.popleft()
        if lo[0][0] < first:
            lo.popleft()

    @property
    def full(self) -> bool:
        return self.n >= self.window

    @property
    def resistance(self) -> int:
        return self.hi[0][1]

    @property
    def support(self) -> int:
        return self.lo[0][1]


class _State:
    __slots__ = ("levels", "side", "level", "count", "since", "cooldown", "position", "pending")

    def __init__(self, window: int):
        self.levels = Levels(window)
        self.side = None          # "B" (resistance break in progress), "S" (support) or None
        self.level = 0
        self.count = 0
        self.since = 0
        self.cooldown = 0
        self.position = 0         # filled, signed
        self.pending = 0          # signed qty of signals not acknowledged yet


class Breakout(Strategy):
    name = "breakout"
    PARAMS = {
        "window": 50,             # price observations that define support and resistance
        "confirm_ticks": 2,       # consecutive observations beyond the level
        "confirm_ms": 0,          # and at least this much market time (ts_event) beyond it
        "buffer_bps": 0,          # a break must exceed the level by more than this (basis points)
        "qty": 100,
        "max_position": 100,      # |filled + in flight| stays within this
        "slippage_bps": 10,       # limit price this far through the last price
        "cooldown": 10,           # observations after a signal before the next one in that symbol
        "source": "any",          # any | trade | bbo: which observations feed the levels
        "tif": "ioc",
    }

    def on_start(self) -> None:
        p = self.params
        if p["confirm_ticks"] < 1:
            raise ValueError("confirm_ticks must be at least 1")
        if p["source"] not in ("any", "trade", "bbo"):
            raise ValueError(f"source must be any, trade or bbo, not {p['source']!r}")
        self.state: dict[str, _State] = {}
        self.signals = 0
        self._sides: dict[str, tuple[str, int]] = {}     # signal id -> (symbol, signed qty)

    def on_tick(self, tick: Tick) -> None:
        p = self.params
        src = p["source"]
        if tick.price <= 0 or (src != "any" and tick.kind != src):
            return
        st = self.state.get(tick.symbol)
        if st is None:
            st = self.state[tick.symbol] = _State(p["window"])
        price = tick.price
        lv = st.levels
        if st.cooldown:
            st.cooldown -= 1
        if lv.full:
            self._check(st, tick, price)
        lv.push(price)

    def _check(self, st: _State, tick: Tick, price: int) -> None:
        p = self.params
        lv = st.levels
        if st.side is None:
            buf_hi = lv.resistance * p["buffer_bps"] // 10_000
            buf_lo = lv.support * p["buffer_bps"] // 10_000
            if price > lv.resistance + buf_hi:
                st.side, st.level = "B", lv.resistance + buf_hi
            elif price < lv.support - buf_lo:
                st.side, st.level = "S", lv.support - buf_lo
            else:
                return
            st.count, st.since = 0, tick.ts_event
        beyond = price > st.level if st.side == "B" else price < st.level
        if not beyond:
            st.side = None
            return
        st.count += 1
        if st.count < p["confirm_ticks"] or tick.ts_event - st.since < p["confirm_ms"] * 1_000_000:
            return
        side, level = st.side, st.level
        st.side = None
        if st.cooldown:
            return
        qty = p["qty"]
        signed = qty if side == "B" else -qty
        if abs(st.position + st.pending + signed) > p["max_position"]:
            return
        slip = price * p["slippage_bps"] // 10_000
        limit = price + slip if side == "B" else max(price - slip, 1)
        what = "resistance" if side == "B" else "support"
        reason = f"{what} {level} broken: {price} after {st.count} ticks"
        sid = (self.buy if side == "B" else self.sell)(tick.symbol, qty, limit=limit, tif=p["tif"], reason=reason,
                                                     tick=tick)
        if sid is not None:
            st.pending += signed
            st.cooldown = p["cooldown"]
            self.signals += 1
            self._sides[sid] = (tick.symbol, signed)

    def on_ack(self, signal, ack: dict) -> None:
        sym, signed = self._sides.pop(ack["id"], (None, 0))
        if sym is None:
            return
        st = self.state[sym]
        st.pending -= signed
        filled = int(ack.get("filled") or 0)
        st.position += filled if signed > 0 else -filled
