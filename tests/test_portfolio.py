"""PortfolioManager: exact positions, average price, realized/unrealized PnL, cash; reconciliation."""
from __future__ import annotations

import random
import sys
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_matcher import dict_flow  # noqa: E402

from engine.manager import EngineManager  # noqa: E402
from engine.portfolio import PortfolioManager  # noqa: E402


def test_hand_computed_example():
    pm = PortfolioManager()
    pm.deposit("a", 10_000)
    pm.apply_fill("a", "X", "B", 100, 3)
    pm.apply_fill("a", "X", "B", 101, 1)
    p = pm.position("a", "X")
    assert p.qty == 4 and p.avg_price == Fraction(401, 4)
    pm.apply_fill("a", "X", "S", 103, 2)       # realize 2 * (103 - 100.25)
    assert pm.realized("a") == Fraction(11, 2)
    pm.apply_fill("a", "X", "S", 99, 5)        # close 2 at 99, flip to short 3 at 99
    p = pm.position("a", "X")
    assert p.qty == -3 and p.avg_price == 99
    assert pm.realized("a") == Fraction(11, 2) + 2 * (99 - Fraction(401, 4))
    pm.set_mark("X", 97)
    assert pm.unrealized("a") == 3 * 2
    assert pm.accounts["a"].cash == 10_000 - 300 - 101 + 206 + 495
    rep = pm.report("a")
    assert rep["positions"]["X"]["qty"] == -3 and rep["unrealized"] == "6"


def test_reconciles_on_random_flow():
    syms = ["AAPL", "MSFT"]
    pm = PortfolioManager()
    with EngineManager(syms, portfolio=pm) as m:
        m.submit_many(dict_flow(8, 3000, syms, n_accounts=5))
        pm.mark(m)
        marks = dict(pm.marks)
    assert pm.fills > 100 and set(marks) == set(syms)
    total_pos = {s: 0 for s in syms}
    for name, acct in pm.accounts.items():
        value = sum(p.qty * marks[s] for s, p in acct.positions.items())
        assert acct.cash - acct.initial_cash + value == pm.realized(name) + pm.unrealized(name)
        for s, p in acct.positions.items():
            total_pos[s] += p.qty
            assert p.bought - p.sold == p.qty
            assert isinstance(p.realized, Fraction) and isinstance(acct.cash, int)
    assert total_pos == {s: 0 for s in syms}  # every trade has a buyer and a seller
    assert sum(a.cash for a in pm.accounts.values()) == 0


def test_average_price_independent_of_fill_split():
    rng = random.Random(1)
    for _ in range(50):
        q = [rng.randint(1, 9) for _ in range(4)]
        px = [rng.randint(90, 110) for _ in range(4)]
        pm = PortfolioManager()
        for a, b in zip(q, px):
            pm.apply_fill("a", "X", "B", b, a)
        assert pm.position("a", "X").avg_price == Fraction(sum(a * b for a, b in zip(q, px)), sum(q))
