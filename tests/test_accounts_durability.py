"""Balances under random flow, restarts, SIGKILL, several shards and a standby's takeover.

Conservation: the sum of each asset over all accounts (the fee account included) changes only by deposits
and withdrawals; no available or locked amount is ever negative; the locks equal what the live orders
need. After a restart, a SIGKILL or a takeover the balances (and the whole state hash) equal an offline
replay of the same journal."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.accounts import Accounts
from engine.gateway import OrderPipeline
from engine.manager import EngineManager, StandbyEngine, StandbyShards
from engine.risk import RiskLimits, RiskManager

SYMS = ["AAPL", "MSFT"]
ACCTS = ["A", "B", "C"]
LOOSE = dict(price_band_bps=0, rate_per_s=0, bytes_per_s=0)


def _pipe(jd, shards=1):
    eng = EngineManager(SYMS, journal_dir=str(jd), shards=shards)
    acc = Accounts(SYMS, quote="USD", maker_fee_bps=7, taker_fee_bps=13, fee_account="fees")
    return OrderPipeline(eng, RiskManager(RiskLimits(**LOOSE)), accounts=acc, admins=["OPS"])


def _check_invariants(pipe) -> None:
    acc = pipe.state.accounts
    totals = acc.totals()
    for asset in set(totals) | set(acc.deposits):
        assert totals.get(asset, 0) == acc.deposits.get(asset, 0), (asset, totals, acc.deposits)
    for name, cells in acc.bal.items():
        for asset, (avail, locked) in cells.items():
            assert avail >= 0 and locked >= 0, (name, asset, avail, locked)
    need: dict = {}
    for oid, (a, side, sym, price, leaves, locked) in acc.orders.items():
        assert locked == acc.lock_for(side, price, leaves)
        asset = "USD" if side == "B" else sym
        need[(a, asset)] = need.get((a, asset), 0) + locked
    for name, cells in acc.bal.items():
        for asset, (_, locked) in cells.items():
            assert locked == need.get((name, asset), 0), (name, asset)


new_order = st.tuples(st.just("new"), st.sampled_from(ACCTS), st.sampled_from(SYMS), st.sampled_from("BS"),
                      st.integers(95, 105), st.integers(1, 40), st.sampled_from(["day", "ioc", "gtc"]))
action = st.one_of(
    new_order, new_order, new_order,
    st.tuples(st.just("deposit"), st.sampled_from(ACCTS), st.sampled_from(["USD", *SYMS]),
              st.integers(1, 200_000)),
    st.tuples(st.just("withdraw"), st.sampled_from(ACCTS), st.sampled_from(["USD", *SYMS]),
              st.integers(1, 50_000)),
    st.tuples(st.just("new"), st.sampled_from(ACCTS), st.sampled_from(SYMS), st.sampled_from("BS"),
              st.integers(95, 105), st.integers(1, 40), st.sampled_from(["day", "ioc", "gtc"])),
    st.tuples(st.just("cancel"), st.integers(0, 50)),
    st.tuples(st.just("amend"), st.integers(0, 50), st.integers(90, 110), st.integers(1, 60)),
    st.tuples(st.just("eod"),),
    st.tuples(st.just("snapshot"),),
)


def _run(pipe, actions) -> None:
    live: list = []
    for a in ACCTS:      # funded so that orders cross and fill; the flow's withdrawals can still drain them
        pipe.handle("OPS", None, {"type": "admin", "op": "create_account", "account": a})
        for asset, amount in (("USD", 30_000), ("AAPL", 150), ("MSFT", 150)):
            pipe.handle("OPS", None, {"type": "admin", "op": "deposit", "account": a, "asset": asset,
                                      "amount": amount})
    for i, act in enumerate(actions):
        kind = act[0]
        if kind in ("deposit", "withdraw"):
            r = pipe.handle("OPS", None, {"type": "admin", "op": kind, "account": act[1], "asset": act[2],
                                          "amount": act[3], "rid": f"adm-{i}"})
            assert r["status"] == "ack" or r["reason"] == "insufficient_balance", r
        elif kind == "new":
            _, acct, sym, side, price, qty, tif = act
            r = pipe.handle(acct, None, {"type": "new", "symbol": sym, "side": side, "price": price, "qty": qty,
                                         "tif": tif, "client_order_id": f"o{i}"})
            assert r["status"] == "ack" or r["reason"] == "insufficient_balance", r
            if r["status"] == "ack":
                live.append((acct, r["events"][0]["order_id"]))
        elif kind in ("cancel", "amend") and live:
            acct, oid = live[act[1] % len(live)]
            req = {"type": kind, "order_id": oid}
            if kind == "amend":
                req.update(new_price=act[2], new_qty=act[3])
            r = pipe.handle(acct, None, req)
            assert r["status"] in ("ack", "rejected"), r
        elif kind == "snapshot":          # recovery then starts from the snapshots (engine + gateway state)
            pipe.snapshot()
        elif kind == "eod":
            for evs in pipe.engine.submit_many([{"type": "eod"}]):
                pipe.state.note(evs)
        _check_invariants(pipe)


@pytest.mark.parametrize("shards", [1, 2])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(actions=st.lists(action, min_size=20, max_size=80))
def test_conservation_under_random_flow_and_after_restart(shards, actions):
    d = tempfile.mkdtemp(prefix="acct-")
    try:
        pipe = _pipe(d, shards)
        _run(pipe, actions)
        live_hash = pipe.state_hash()
        bal = {a: pipe.state.accounts.balances(a) for a in [*ACCTS, "fees"]}
        pipe.engine.close()
        again = _pipe(d, shards)            # replay of every shard's journal
        _check_invariants(again)
        assert {a: again.state.accounts.balances(a) for a in [*ACCTS, "fees"]} == bal
        assert again.state_hash() == live_hash
        again.engine.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)


CHILD = textwrap.dedent("""
    import os, signal, sys, random
    sys.path.insert(0, {tests!r})
    from test_accounts_durability import _pipe, _run, action
    from hypothesis import strategies as st
    pipe = _pipe({jd!r}, {shards})
    rnd = random.Random(7)
    acts = []
    for i in range(300):
        k = rnd.choice(["deposit", "new", "new", "new", "cancel", "amend", "withdraw"])
        if k == "deposit":
            acts.append(("deposit", rnd.choice("ABC"), rnd.choice(["USD", "AAPL", "MSFT"]), rnd.randint(1, 200000)))
        elif k == "withdraw":
            acts.append(("withdraw", rnd.choice("ABC"), rnd.choice(["USD", "AAPL", "MSFT"]), rnd.randint(1, 50000)))
        elif k == "new":
            acts.append(("new", rnd.choice("ABC"), rnd.choice(["AAPL", "MSFT"]), rnd.choice("BS"),
                         rnd.randint(95, 105), rnd.randint(1, 40), rnd.choice(["day", "ioc", "gtc"])))
        elif k == "cancel":
            acts.append(("cancel", rnd.randint(0, 50)))
        else:
            acts.append(("amend", rnd.randint(0, 50), rnd.randint(90, 110), rnd.randint(1, 60)))
    _run(pipe, acts)
    print(pipe.state_hash(), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


@pytest.mark.parametrize("shards", [1, 2])
def test_sigkill_then_restart_gives_the_balances_of_an_offline_replay(tmp_path, shards):
    jd = tmp_path / "journal"
    code = CHILD.format(tests=os.path.dirname(__file__), jd=str(jd), shards=shards)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    acked_hash = p.stdout.split()[-1]
    again = _pipe(jd, shards)
    _check_invariants(again)
    assert again.state_hash() == acked_hash
    assert any(again.state.accounts.bal.get(a) for a in ACCTS)
    assert sum(len(c) for c in again.state.accounts.bal.values()) > 3
    again.engine.close()


@pytest.mark.parametrize("shards", [1, 2])
def test_a_standby_takeover_keeps_the_balances(tmp_path, shards):
    pipe = _pipe(tmp_path, shards)
    sb = StandbyEngine(SYMS, str(tmp_path)) if shards == 1 else StandbyShards(SYMS, str(tmp_path), shards=shards)
    sb.start()
    _run(pipe, [("deposit", "A", "USD", 100_000), ("deposit", "B", "AAPL", 50),
                ("new", "B", "AAPL", "S", 100, 30, "gtc"), ("new", "A", "AAPL", "B", 101, 10, "day"),
                ("new", "A", "AAPL", "B", 99, 5, "gtc"), ("withdraw", "A", "USD", 1_000),
                ("deposit", "C", "MSFT", 9), ("new", "C", "MSFT", "S", 100, 9, "gtc"),
                ("new", "A", "MSFT", "B", 100, 3, "gtc")])
    live = pipe.state_hash()
    bal = {a: pipe.state.accounts.balances(a) for a in [*ACCTS, "fees"]}
    pipe.engine.close()                      # the primary is gone (a takeover never runs beside it)
    mgr = sb.take_over()
    acc = Accounts(SYMS, quote="USD", maker_fee_bps=7, taker_fee_bps=13, fee_account="fees")
    taken = OrderPipeline(mgr, RiskManager(RiskLimits(**LOOSE)), accounts=acc, admins=["OPS"])
    assert {a: taken.state.accounts.balances(a) for a in [*ACCTS, "fees"]} == bal
    assert taken.state_hash() == live
    assert bal["A"]["USD"]["locked"] > 0 and bal["B"]["USD"]["available"] > 0
    # and it goes on: an admin op and an order after the takeover, then a restart of the new primary
    r = taken.handle("OPS", None, {"type": "admin", "op": "deposit", "account": "C", "asset": "USD", "amount": 9})
    assert r["status"] == "ack", r
    after = taken.state_hash()
    taken.engine.close()
    again = _pipe(tmp_path, shards)
    assert again.state_hash() == after
    again.engine.close()
