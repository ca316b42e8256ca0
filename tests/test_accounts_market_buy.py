"""Market buys with balances (engine.accounts): a protection price from the book (capped by the risk band),
sequenced as a limit IOC at it, the lock settled by the fills and the rest unlocked; conservation, replay."""
from __future__ import annotations

import random

from engine.accounts import Accounts
from engine.gateway import OrderPipeline
from engine.manager import EngineManager
from engine.risk import RiskLimits, RiskManager

SYMS = ["AAPL", "MSFT"]
MAKER_BPS, TAKER_BPS = 10, 20


LOOSE = dict(price_band_bps=0, rate_per_s=0, bytes_per_s=0)


def _pipe(jd, per_account=None, **risk):
    eng = EngineManager(SYMS, journal_dir=str(jd))
    acc = Accounts(SYMS, quote="USD", maker_fee_bps=MAKER_BPS, taker_fee_bps=TAKER_BPS, fee_account="fees")
    lim = dict(LOOSE, **risk)
    return OrderPipeline(eng, RiskManager(RiskLimits(**lim), per_account), accounts=acc, admins=["OPS"])


def _fund(pipe, account, **assets):
    assert pipe.handle("OPS", None, {"type": "admin", "op": "create_account", "account": account})["status"] == "ack"
    for asset, amount in assets.items():
        r = pipe.handle("OPS", None, {"type": "admin", "op": "deposit", "account": account, "asset": asset,
                                      "amount": amount})
        assert r["status"] == "ack", r


def _new(clid, side, price, qty, sym="AAPL", **kw):
    return {"type": "new", "client_order_id": clid, "symbol": sym, "side": side, "price": price, "qty": qty, **kw}


def _mkt(clid, qty, sym="AAPL", **kw):
    return {"type": "new", "client_order_id": clid, "symbol": sym, "side": "B", "qty": qty,
            "order_type": "market", **kw}


def _bal(pipe, account):
    return {a: (v["available"], v["locked"]) for a, v in pipe.state.accounts.balances(account).items()}


def _lock(price, qty):
    n = price * qty
    return n + n * max(MAKER_BPS, TAKER_BPS) // 10_000


def test_market_buy_walks_the_book_settles_and_unlocks_the_rest(tmp_path):
    pipe = _pipe(tmp_path)
    _fund(pipe, "MM", AAPL=100)
    _fund(pipe, "T", USD=10_000_000)
    for clid, px, q in (("a1", 1000, 10), ("a2", 1010, 5), ("a3", 1050, 5)):
        assert pipe.handle("MM", None, _new(clid, "S", px, q))["status"] == "ack"
    # 12 fill at 1000 x10 and 1010 x2; protection price 1010 (where the asks cover 12)
    r = pipe.handle("T", None, _mkt("m1", 12))
    assert r["status"] == "ack", r
    evs = r["events"]
    assert evs[0]["type"] == "accepted" and evs[0]["price"] == 1010
    fills = [(e["price"], e["qty"]) for e in evs if e["type"] == "fill"]
    assert fills == [(1000, 10), (1010, 2)]
    cost = 1000 * 10 + 1010 * 2
    fee = 1000 * 10 * TAKER_BPS // 10_000 + 1010 * 2 * TAKER_BPS // 10_000
    assert _bal(pipe, "T") == {"USD": (10_000_000 - cost - fee, 0), "AAPL": (12, 0)}   # nothing stays locked
    assert pipe.state.accounts.orders == {a: o for a, o in pipe.state.accounts.orders.items() if o[0] == "MM"}
    assert pipe.state.accounts.totals() == {"USD": 10_000_000, "AAPL": 100}
    # more than the book holds: fills what is there (up to the deepest level), the rest expires and unlocks
    r = pipe.handle("T", None, _mkt("m2", 50))
    assert r["status"] == "ack"
    assert [e["type"] for e in r["events"]][-1] in ("expired", "canceled")
    assert sum(e["qty"] for e in r["events"] if e["type"] == "fill") == 8
    assert _bal(pipe, "T")["USD"][1] == 0 and _bal(pipe, "T")["AAPL"] == (20, 0)
    assert pipe.state.accounts.totals() == {"USD": 10_000_000, "AAPL": 100}
    assert pipe.engine.book("AAPL", 5)[1] == []
    pipe.engine.close()


def test_market_buy_needs_the_protective_amount(tmp_path):
    pipe = _pipe(tmp_path)
    _fund(pipe, "MM", AAPL=100)
    _fund(pipe, "T", USD=_lock(1010, 12) - 1)
    pipe.handle("MM", None, _new("a1", "S", 1000, 10))
    pipe.handle("MM", None, _new("a2", "S", 1010, 5))
    seq = pipe.engine.seq
    r = pipe.handle("T", None, _mkt("m1", 12))
    assert (r["status"], r["reason"]) == ("rejected", "insufficient_balance")
    assert pipe.engine.seq == seq                       # refused before sequencing
    r = pipe.handle("T", None, _mkt("m2", 11))           # lock(1010, 11) fits
    assert r["status"] == "ack", r
    assert _bal(pipe, "T")["USD"][1] == 0
    pipe.engine.close()


def test_market_buy_price_capped_by_the_risk_band(tmp_path):
    """With a price band, asks above the band's ceiling are not bought (nor locked against)."""
    # T trades under a 1% band around the reference price 1000; MM (the asks) has no band
    pipe = _pipe(tmp_path, per_account={"MM": RiskLimits(**LOOSE)}, price_band_bps=100,
                 reference_prices={"AAPL": 1000})
    _fund(pipe, "MM", AAPL=100)
    _fund(pipe, "T", USD=10_000_000)
    pipe.handle("MM", None, _new("a1", "S", 1005, 3))
    pipe.handle("MM", None, _new("a2", "S", 1010, 3))       # the ceiling: 1000 + 1% = 1010
    pipe.handle("MM", None, _new("a3", "S", 1020, 3))       # beyond it
    r = pipe.handle("T", None, _mkt("m1", 9))
    assert r["status"] == "ack" and r["events"][0]["price"] == 1010
    assert sum(e["qty"] for e in r["events"] if e["type"] == "fill") == 6
    assert pipe.engine.book("AAPL", 5)[1] == [pipe.engine.book("AAPL", 5)[1][0]]
    assert pipe.engine.book("AAPL", 5)[1][0][0] == 1020
    assert _bal(pipe, "T")["USD"][1] == 0
    pipe.engine.close()


def test_random_flow_with_market_buys_conserves_and_replays(tmp_path):
    rnd = random.Random(11)
    pipe = _pipe(tmp_path)
    accts = ["A", "B", "C"]
    for a in accts:
        _fund(pipe, a, USD=50_000_000, AAPL=500, MSFT=500)
    totals = pipe.state.accounts.totals()
    n_mkt = 0
    for i in range(400):
        a = rnd.choice(accts)
        sym = rnd.choice(SYMS)
        k = rnd.random()
        if k < 0.2:
            r = pipe.handle(a, None, _mkt(f"m{i}", rnd.randint(1, 30), sym, tif=rnd.choice(["day", "ioc", "fok"])))
            n_mkt += r["status"] == "ack"
        elif k < 0.3:
            r = pipe.handle(a, None, {"type": "new", "client_order_id": f"ms{i}", "symbol": sym, "side": "S",
                                      "qty": rnd.randint(1, 20), "order_type": "market"})
        else:
            side = rnd.choice("BS")
            r = pipe.handle(a, None, _new(f"o{i}", side, rnd.randint(990, 1010), rnd.randint(1, 20), sym))
        assert r["status"] in ("ack", "rejected"), r
        for acct, assets in pipe.state.accounts.bal.items():
            for asset, (av, lk) in assets.items():
                assert av >= 0 and lk >= 0, (i, acct, asset, av, lk)
    assert n_mkt > 20
    assert pipe.state.accounts.totals() == totals
    live = {a: _bal(pipe, a) for a in accts + ["fees"]}
    pipe.engine.close()
    again = _pipe(tmp_path)                 # a restart: the journal replay locks the same amounts
    assert {a: _bal(again, a) for a in accts + ["fees"]} == live
    again.engine.close()
