"""PortfolioManager: per-account positions, average price, realized/unrealized PnL and cash, exactly.

All state is integers or ``fractions.Fraction`` (average prices of several fills are not integers);
money is in price_raw units (1e-9 of the currency) times quantity. Nothing is ever a float, so PnL
reconciles to the unit: for every account, with no fees,

    cash - initial_cash + sum(position * mark) == realized + unrealized

Feed it fill events (EngineManager(portfolio=...) does) and mark it to the book with :meth:`mark`
(last trade, else the BBO mid) or :meth:`set_mark`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

PRICE_SCALE = 1_000_000_000


@dataclass
class Position:
    qty: int = 0                       # signed: > 0 long, < 0 short
    cost: Fraction = Fraction(0)       # signed cost of the open position (avg_price * qty)
    realized: Fraction = Fraction(0)
    bought: int = 0
    sold: int = 0

    @property
    def avg_price(self) -> Fraction | None:
        return self.cost / self.qty if self.qty else None


@dataclass
class Account:
    cash: int = 0                      # price_raw * qty units
    initial_cash: int = 0
    positions: dict[str, Position] = field(default_factory=dict)


def _fmt(x: Fraction | int | None) -> str | None:
    """Exact string: an int when integral, else 'num/den'."""
    if x is None:
        return None
    x = Fraction(x)
    return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"


class PortfolioManager:
    """Positions and PnL per account from fill events."""

    def __init__(self):
        self.accounts: dict[str, Account] = {}
        self.marks: dict[str, Fraction] = {}
        self.fills = 0

    def _acct(self, name: str) -> Account:
        a = self.accounts.get(name)
        if a is None:
            a = self.accounts[name] = Account()
        return a

    def deposit(self, account: str, amount_raw: int) -> None:
        """Add cash (price_raw * qty units, e.g. 1000 * PRICE_SCALE for 1000.0 of currency)."""
        a = self._acct(account)
        a.cash += int(amount_raw)
        a.initial_cash += int(amount_raw)

    def on_fill(self, ev: dict) -> None:
        """Apply one fill event (either side); other event types are ignored."""
        if ev.get("type") != "fill":
            return
        self.apply_fill(ev["account"], ev["symbol"], ev["side"], ev["price"], ev["qty"])

    def apply_fill(self, account: str, symbol: str, side: str, price: int, qty: int) -> None:
        self.fills += 1
        a = self._acct(account)
        p = a.positions.get(symbol)
        if p is None:
            p = a.positions[symbol] = Position()
        signed = qty if side == "B" else -qty
        a.cash -= signed * price
        if side == "B":
            p.bought += qty
        else:
            p.sold += qty
        if p.qty == 0 or (p.qty > 0) == (signed > 0):
            p.cost += signed * price
            p.qty += signed
            return
        # reduces (and maybe flips) the position: realize against the average price
        closed = min(abs(signed), abs(p.qty))
        avg = p.cost / p.qty
        direction = 1 if p.qty > 0 else -1
        p.realized += closed * (price - avg) * direction
        p.cost -= avg * closed * direction
        p.qty -= closed * direction
        rest = abs(signed) - closed
        if rest:
            p.qty = rest * (1 if signed > 0 else -1)
            p.cost = Fraction(p.qty * price)
        if p.qty == 0:
            p.cost = Fraction(0)

    # ---- marks -------------------------------------------------------------------------------------------
    def set_mark(self, symbol: str, price: int | Fraction) -> None:
        self.marks[symbol] = Fraction(price)

    def mark(self, manager, symbols: list[str] | None = None) -> None:
        """Mark symbols to the book of an EngineManager: last trade, else BBO mid, else unchanged."""
        for sym in symbols or manager.symbols:
            lt = manager.last_trade(sym)
            if lt is not None:
                self.marks[sym] = Fraction(lt[0])
                continue
            bid, ask = manager.bbo(sym)
            if bid is not None and ask is not None:
                self.marks[sym] = Fraction(bid + ask, 2)

    # ---- queries -----------------------------------------------------------------------------------------
    def unrealized(self, account: str) -> Fraction:
        total = Fraction(0)
        for sym, p in self._acct(account).positions.items():
            if p.qty and sym in self.marks:
                total += p.qty * self.marks[sym] - p.cost
        return total

    def realized(self, account: str) -> Fraction:
        return sum((p.realized for p in self._acct(account).positions.values()), Fraction(0))

    def position(self, account: str, symbol: str) -> Position:
        return self._acct(account).positions.get(symbol, Position())

    def report(self, account: str) -> dict:
        """JSON-friendly summary (exact strings for fractions), e.g. for the gateway's portfolio query."""
        a = self._acct(account)
        positions = {}
        for sym, p in sorted(a.positions.items()):
            mark = self.marks.get(sym)
            positions[sym] = {"qty": p.qty, "avg_price": _fmt(p.avg_price), "realized": _fmt(p.realized),
                              "unrealized": _fmt(p.qty * mark - p.cost) if (mark is not None and p.qty) else "0",
                              "mark": _fmt(mark), "bought": p.bought, "sold": p.sold}
        return {"account": account, "cash": a.cash, "initial_cash": a.initial_cash,
                "realized": _fmt(self.realized(account)), "unrealized": _fmt(self.unrealized(account)),
                "positions": positions}

    def reports(self) -> list[dict]:
        return [self.report(name) for name in sorted(self.accounts)]
