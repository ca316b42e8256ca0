"""Accounts and balances (engine.accounts): state of the journaled state machine.

Locks on new orders, moves on fills with maker/taker fees to the fee account, unlocks on cancel and expiry,
re-locks on amend, INSUFFICIENT_BALANCE before sequencing, journaled admin operations, conservation under
random flow, and the same balances after a restart, a SIGKILL, with several shards and after a standby's
takeover."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from engine.accounts import Accounts, AccountsConfigError
from engine.gateway import OrderPipeline
from engine.manager import EngineManager
from engine.risk import RiskLimits, RiskManager

SYMS = ["AAPL", "MSFT"]
LOOSE = dict(price_band_bps=0, rate_per_s=0, bytes_per_s=0)
MAKER_BPS, TAKER_BPS = 10, 20


def _pipe(jd, shards=1, fees=True, **kw):
    eng = EngineManager(SYMS, journal_dir=str(jd), shards=shards)
    acc = Accounts(SYMS, quote="USD", maker_fee_bps=MAKER_BPS if fees else 0,
                   taker_fee_bps=TAKER_BPS if fees else 0, fee_account="fees")
    return OrderPipeline(eng, RiskManager(RiskLimits(**LOOSE)), accounts=acc, admins=["OPS"], **kw)


def _admin(pipe, op, account, asset=None, amount=None, rid=None):
    req = {"type": "admin", "op": op, "account": account}
    if asset is not None:
        req.update(asset=asset, amount=amount)
    if rid is not None:
        req["rid"] = rid
    return pipe.handle("OPS", None, req)


def _fund(pipe, account, **assets):
    assert _admin(pipe, "create_account", account)["status"] == "ack"
    for asset, amount in assets.items():
        r = _admin(pipe, "deposit", account, asset, amount)
        assert r["status"] == "ack", r


def _new(acct_clid, side, price, qty, sym="AAPL", **kw):
    return {"type": "new", "client_order_id": acct_clid, "symbol": sym, "side": side, "price": price,
            "qty": qty, **kw}


def _bal(pipe, account):
    r = pipe.handle(account, None, {"type": "query", "what": "balances"})
    assert r["status"] == "ok", r
    return {a: (v["available"], v["locked"]) for a, v in r["balances"].items()}


def _lock(price, qty):
    n = price * qty
    return n + n * max(MAKER_BPS, TAKER_BPS) // 10_000


def test_an_order_that_cannot_be_covered_is_rejected_and_never_sequenced(tmp_path):
    pipe = _pipe(tmp_path)
    _fund(pipe, "A", USD=_lock(1000, 10) - 1, AAPL=5)
    seq = pipe.engine.seq
    r = pipe.handle("A", None, _new("b1", "B", 1000, 10))
    assert (r["status"], r["reason"]) == ("rejected", "insufficient_balance")
    r = pipe.handle("A", None, _new("s1", "S", 1000, 6))
    assert (r["status"], r["reason"]) == ("rejected", "insufficient_balance")
    r = pipe.handle("NOBODY", None, _new("n1", "S", 1000, 1))
    assert (r["status"], r["reason"]) == ("rejected", "insufficient_balance")
    assert pipe.engine.seq == seq                       # nothing sequenced, nothing journaled
    assert pipe.engine.book("AAPL", 5) == ([], [])
    # covered exactly: accepted, and the whole lock is taken
    assert pipe.handle("A", None, _new("s2", "S", 1000, 5))["status"] == "ack"
    assert _bal(pipe, "A")["AAPL"] == (0, 5)
    # a market buy with no ask to buy from (MSFT's book is empty): refused, nothing sequenced
    seq = pipe.engine.seq
    r = pipe.handle("A", None, {"type": "new", "symbol": "MSFT", "side": "B", "qty": 1, "order_type": "market"})
    assert r["reason"] == "no_liquidity" and pipe.engine.seq == seq
    pipe.engine.close()


def test_prices_at_or_below_zero_are_refused(tmp_path):
    """A fill at a negative price would pay the buyer: refused on both sides, new and amend."""
    pipe = _pipe(tmp_path)
    _fund(pipe, "A", USD=10**6, AAPL=10)
    assert pipe.handle("A", None, _new("b0", "B", 0, 1))["reason"] == "bad_price"
    assert pipe.handle("A", None, _new("s0", "S", -5, 1))["reason"] == "bad_price"
    oid = pipe.handle("A", None, _new("s1", "S", 5, 1))["events"][0]["order_id"]
    assert pipe.handle("A", None, {"type": "amend", "order_id": oid, "new_price": -1})["reason"] == "bad_price"
    pipe.engine.close()


@pytest.mark.parametrize("processes", [False, True])
def test_admin_records_in_an_engine_process_are_replayed(tmp_path, processes):
    eng = EngineManager(SYMS, journal_dir=str(tmp_path), shards=2, processes=processes)
    pipe = OrderPipeline(eng, RiskManager(RiskLimits(**LOOSE)), admins=["OPS"],
                         accounts=Accounts(SYMS, maker_fee_bps=MAKER_BPS, taker_fee_bps=TAKER_BPS))
    _fund(pipe, "A", USD=10**6, MSFT=10)
    _fund(pipe, "B", USD=10**6)
    assert pipe.handle("A", None, _new("s1", "S", 100, 10, sym="MSFT"))["status"] == "ack"
    assert pipe.handle("B", None, _new("b1", "B", 100, 4, sym="MSFT"))["status"] == "ack"
    live, bal = pipe.state_hash(), {a: _bal(pipe, a) for a in ("A", "B", "fees")}
    eng.close()
    eng = EngineManager(SYMS, journal_dir=str(tmp_path), shards=2, processes=processes)
    again = OrderPipeline(eng, RiskManager(RiskLimits(**LOOSE)), admins=["OPS"],
                          accounts=Accounts(SYMS, maker_fee_bps=MAKER_BPS, taker_fee_bps=TAKER_BPS))
    assert {a: _bal(again, a) for a in ("A", "B", "fees")} == bal and again.state_hash() == live
    eng.close()


def test_two_orders_of_one_batch_share_the_balance(tmp_path):
    """The check reserves within an engine batch: two buys that each fit but not together."""
    pipe = _pipe(tmp_path)
    _fund(pipe, "A", USD=_lock(1000, 10) + _lock(1000, 5))
    out = pipe.handle_many([("A", None, _new("b1", "B", 1000, 10), None),
                            ("A", None, _new("b2", "B", 1000, 10), None),
                            ("A", None, _new("b3", "B", 1000, 5), None)])
    assert [r["status"] for r in out] == ["ack", "rejected", "ack"]
    assert out[1]["reason"] == "insufficient_balance"
    assert _bal(pipe, "A")["USD"] == (0, _lock(1000, 10) + _lock(1000, 5))
    pipe.engine.close()


def test_fills_move_balances_with_fees_and_conserve(tmp_path):
    pipe = _pipe(tmp_path)
    _fund(pipe, "MM", AAPL=100)
    _fund(pipe, "T", USD=1_000_000)
    assert pipe.handle("MM", None, _new("s1", "S", 1000, 30))["status"] == "ack"
    assert _bal(pipe, "MM")["AAPL"] == (70, 30)
    r = pipe.handle("T", None, _new("b1", "B", 1100, 10))     # crosses at the maker's 1000: partial of the ask
    assert r["status"] == "ack" and [e["type"] for e in r["events"]][:2] == ["accepted", "fill"]
    notional = 1000 * 10
    taker_fee, maker_fee = notional * TAKER_BPS // 10_000, notional * MAKER_BPS // 10_000
    assert _bal(pipe, "T") == {"USD": (1_000_000 - notional - taker_fee, 0), "AAPL": (10, 0)}
    assert _bal(pipe, "MM") == {"AAPL": (70, 20), "USD": (notional - maker_fee, 0)}
    assert _bal(pipe, "fees") == {"USD": (taker_fee + maker_fee, 0)}
    assert pipe.state.accounts.totals() == {"USD": 1_000_000, "AAPL": 100}
    # the rest of the ask: a bigger buy rests partially, its lock follows its leaves
    r = pipe.handle("T", None, _new("b2", "B", 1000, 25))
    assert r["status"] == "ack"
    usd = _bal(pipe, "T")["USD"]
    assert usd[1] == _lock(1000, 5)
    assert pipe.state.accounts.totals() == {"USD": 1_000_000, "AAPL": 100}
    pipe.engine.close()


def test_cancel_expiry_and_amend_unlock_and_relock(tmp_path):
    pipe = _pipe(tmp_path)
    _fund(pipe, "A", USD=_lock(1000, 20), AAPL=10)
    r = pipe.handle("A", None, _new("b1", "B", 1000, 10))
    oid = r["events"][0]["order_id"]
    assert _bal(pipe, "A")["USD"] == (_lock(1000, 20) - _lock(1000, 10), _lock(1000, 10))
    # amend up beyond what is available: refused, nothing changes
    r = pipe.handle("A", None, {"type": "amend", "order_id": oid, "new_qty": 21})
    assert r["reason"] == "insufficient_balance"
    # amend up within it: re-locked; amend the price down: part given back
    assert pipe.handle("A", None, {"type": "amend", "order_id": oid, "new_qty": 20})["status"] == "ack"
    assert _bal(pipe, "A")["USD"] == (0, _lock(1000, 20))
    assert pipe.handle("A", None, {"type": "amend", "order_id": oid, "new_price": 500})["status"] == "ack"
    assert _bal(pipe, "A")["USD"] == (_lock(1000, 20) - _lock(500, 20), _lock(500, 20))
    # cancel: everything back
    assert pipe.handle("A", None, {"type": "cancel", "order_id": oid})["status"] == "ack"
    assert _bal(pipe, "A")["USD"] == (_lock(1000, 20), 0)
    # an IOC sell with nothing to hit expires: its base comes back
    r = pipe.handle("A", None, _new("s1", "S", 1000, 10, tif="ioc"))
    assert r["status"] == "ack" and r["events"][-1]["type"] in ("expired", "canceled")
    assert _bal(pipe, "A")["AAPL"] == (10, 0)
    # end of day expires day orders
    pipe.handle("A", None, _new("s2", "S", 1000, 4))
    assert _bal(pipe, "A")["AAPL"] == (6, 4)
    for evs in pipe.engine.submit_many([{"type": "eod"}]):     # what a replay of the eod record notes
        pipe.state.note(evs)
    assert _bal(pipe, "A")["AAPL"] == (10, 0)
    assert pipe.state.accounts.orders == {}
    pipe.engine.close()


def test_admin_operations_need_an_admin_are_journaled_and_replayed(tmp_path):
    pipe = _pipe(tmp_path)
    r = pipe.handle("A", None, {"type": "admin", "op": "deposit", "account": "A", "asset": "USD", "amount": 5})
    assert (r["status"], r["reason"]) == ("rejected", "unauthorized")
    assert _admin(pipe, "deposit", "A", "USD", 5)["reason"] == "unknown_account"
    assert _admin(pipe, "create_account", "A")["status"] == "ack"
    assert _admin(pipe, "create_account", "A")["reason"] == "account_exists"
    assert _admin(pipe, "deposit", "A", "USD", 1.5)["reason"] == "bad_request"
    assert _admin(pipe, "deposit", "A", "EUR", 1)["reason"] == "bad_request"
    seq = pipe.engine.seq
    r = _admin(pipe, "deposit", "A", "USD", 500, rid="dep-1")
    assert r["status"] == "ack" and r["events"][0]["seq"] == seq + 1
    assert _admin(pipe, "deposit", "A", "USD", 500, rid="dep-1").get("dup") is True   # a retry: applied once
    assert _admin(pipe, "deposit", "A", "USD", 0, rid=7)["reason"] == "bad_request"
    assert _admin(pipe, "deposit", "A", "USD", 100, rid=7)["status"] == "ack"
    assert _admin(pipe, "deposit", "A", "USD", 100, rid=7).get("dup") is True       # an int rid too
    assert _admin(pipe, "withdraw", "A", "USD", 100)["status"] == "ack"
    assert _admin(pipe, "withdraw", "A", "USD", 501)["reason"] == "insufficient_balance"
    assert _admin(pipe, "withdraw", "A", "USD", 200)["status"] == "ack"
    assert _bal(pipe, "A") == {"USD": (300, 0)}
    assert pipe.handle("B", None, {"type": "query", "what": "balances", "account": "A"})["reason"] == "unauthorized"
    assert pipe.handle("OPS", None, {"type": "query", "what": "balances", "account": "A"})["balances"] == \
        {"USD": {"available": 300, "locked": 0}}
    live = pipe.state_hash()
    pipe.engine.close()
    again = _pipe(tmp_path)                     # restart: replay of the journal
    assert _bal(again, "A") == {"USD": (300, 0)}
    assert again.state_hash() == live
    assert _admin(again, "deposit", "A", "USD", 500, rid="dep-1").get("dup") is True   # still remembered
    assert _bal(again, "A") == {"USD": (300, 0)}
    again.engine.close()


def test_the_state_hash_covers_balances(tmp_path):
    a, b = _pipe(tmp_path / "a"), _pipe(tmp_path / "b")
    for p in (a, b):
        _fund(p, "A", USD=100)
    assert a.state_hash() == b.state_hash()
    _admin(b, "deposit", "A", "USD", 1)
    assert a.state_hash() != b.state_hash()
    a.engine.close()
    b.engine.close()


def test_balance_events_are_routed_to_their_accounts(tmp_path):
    pipe = _pipe(tmp_path)
    got: dict[str, list] = {"MM": [], "T": []}
    pipe.register_sink("MM", got["MM"].append)
    pipe.register_sink("T", got["T"].append)
    _fund(pipe, "MM", AAPL=10)
    _fund(pipe, "T", USD=100_000)
    pipe.handle("MM", None, _new("s1", "S", 1000, 10))
    got["MM"].clear()
    r = pipe.handle("T", None, _new("b1", "B", 1000, 10))
    seq = r["events"][0]["seq"]
    mm = [e for e in got["MM"] if e["type"] == "balance"]
    assert {(e["asset"], e["available"], e["locked"], e["seq"]) for e in mm} == \
        {("AAPL", 0, 0, seq), ("USD", 10_000 - 10, 0, seq)}
    t = [e for e in got["T"] if e["type"] == "balance"]
    assert {e["asset"] for e in t} == {"USD", "AAPL"}
    pipe.engine.close()


def test_balances_off_is_todays_exchange(tmp_path):
    eng = EngineManager(SYMS, journal_dir=str(tmp_path))
    pipe = OrderPipeline(eng, RiskManager(RiskLimits(**LOOSE)), admins=["OPS"])
    assert pipe.handle("A", None, _new("b1", "B", 1000, 10))["status"] == "ack"       # no balance needed
    r = pipe.handle("OPS", None, {"type": "admin", "op": "create_account", "account": "A"})
    assert r["reason"] == "accounts_disabled"
    assert pipe.handle("A", None, {"type": "query", "what": "balances"})["reason"] == "accounts_disabled"
    eng.close()


def test_a_journal_with_admin_records_refuses_to_run_without_accounts(tmp_path):
    pipe = _pipe(tmp_path)
    _fund(pipe, "A", USD=1)
    pipe.engine.close()
    eng = EngineManager(SYMS, journal_dir=str(tmp_path))
    with pytest.raises(ValueError, match="without \\[accounts\\]"):
        OrderPipeline(eng, RiskManager(RiskLimits(**LOOSE)))
    eng.close()


def test_snapshot_keeps_balances(tmp_path):
    pipe = _pipe(tmp_path)
    _fund(pipe, "A", USD=_lock(1000, 10), AAPL=3)
    pipe.handle("A", None, _new("b1", "B", 1000, 10))
    pipe.snapshot()
    _admin(pipe, "deposit", "A", "USD", 7)
    live, bal = pipe.state_hash(), _bal(pipe, "A")
    pipe.engine.close()
    again = _pipe(tmp_path)
    assert again.state_hash() == live and _bal(again, "A") == bal
    again.engine.close()


def test_accounts_config_errors():
    with pytest.raises(AccountsConfigError, match="maker_fee_bps"):
        Accounts(SYMS, maker_fee_bps=-1)
    with pytest.raises(AccountsConfigError, match="quote"):
        Accounts(SYMS, quote="AAPL")
    with pytest.raises(AccountsConfigError, match="base"):
        Accounts(SYMS, base={"TSLA": "TSLA"})
