"""History of balances: the writer stores users (admin create_account included) and one balance_changes row
per (account, asset) changed by each journaled input; the rows' sums equal the exchange's live balances
(conservation checked on the database rows), also after the writer resumes."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from test_history import SYMS, pg_url  # noqa: F401 - the fixture

from engine.accounts import Accounts
from engine.gateway import OrderPipeline
from engine.history.writer import HistoryWriter, open_store
from engine.manager import EngineManager
from engine.risk import RiskLimits, RiskManager

FEES = dict(maker_fee_bps=10, taker_fee_bps=20)


def _pipe(d: Path):
    d.mkdir(parents=True, exist_ok=True)
    (d / "exchange.json").write_text(json.dumps({"symbols": SYMS, "shards": 1, "tick_size": 1,
                                                 "stp": "cancel_newest", "journal": True, "accounts": True}))
    eng = EngineManager(SYMS, journal_dir=str(d / "journal"))
    acc = Accounts(SYMS, quote="USD", fee_account="fees", **FEES)
    return OrderPipeline(eng, RiskManager(RiskLimits(price_band_bps=0, rate_per_s=0, bytes_per_s=0)),
                         accounts=acc, admins=["OPS"])


def _admin(pipe, op, account, asset=None, amount=None):
    req = {"type": "admin", "op": op, "account": account}
    if asset:
        req.update(asset=asset, amount=amount)
    r = pipe.handle("OPS", None, req)
    assert r["status"] == "ack", r


def _flow(pipe, rnd, n, tag):
    for i in range(n):
        a = rnd.choice(["A", "B", "C"])
        sym = rnd.choice(SYMS)
        k = rnd.random()
        if k < 0.1:
            pipe.handle(a, None, {"type": "new", "client_order_id": f"{tag}m{i}", "symbol": sym, "side": "B",
                                  "qty": rnd.randint(1, 10), "order_type": "market"})
        elif k < 0.2:
            oid = next(iter(pipe.state.accounts.orders), None)
            if oid is not None:
                pipe.handle(pipe.state.accounts.orders[oid][0], None, {"type": "cancel", "order_id": oid})
        else:
            pipe.handle(a, None, {"type": "new", "client_order_id": f"{tag}{i}", "symbol": sym,
                                  "side": rnd.choice("BS"), "price": rnd.randint(95, 105) * 1000,
                                  "qty": rnd.randint(1, 10)})


def _rows(store, sql):
    if store.kind == "sqlite":
        return [tuple(r) for r in store.conn.execute(sql)]
    with store.conn.cursor() as cur:
        cur.execute(sql)
        return [tuple(r) for r in cur.fetchall()]


def _check(store, acc):
    sums = {(a, x): (int(da), int(dl)) for a, x, da, dl in _rows(
        store, "SELECT account, asset, SUM(d_available), SUM(d_locked) FROM balance_changes GROUP BY account, asset")}
    live = {(a, x): tuple(c) for a, cells in acc.bal.items() for x, c in cells.items() if c != [0, 0]}
    assert {k: v for k, v in sums.items() if v != (0, 0)} == live
    # conservation on the rows: per asset, everything held (available + locked) = deposits - withdrawals
    per_asset: dict = {}
    for (a, x), (da, dl) in sums.items():
        per_asset[x] = per_asset.get(x, 0) + da + dl
    assert per_asset == {x: v for x, v in acc.deposits.items()}
    # the amounts after each input: the last row of each cell is the live balance (one shard: exact)
    last = {}
    for a, x, av, lk in _rows(store, "SELECT account, asset, available, locked FROM balance_changes "
                                     "ORDER BY shard, seq"):
        last[(a, x)] = (int(av), int(lk))
    assert {k: v for k, v in last.items() if v != (0, 0)} == live
    dup = _rows(store, "SELECT COUNT(*) FROM (SELECT shard, seq, account, asset FROM balance_changes "
                       "GROUP BY shard, seq, account, asset HAVING COUNT(*) > 1) d")
    assert dup == [(0,)]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_balance_changes_and_users_in_history(tmp_path, backend, request):
    url = request.getfixturevalue("pg_url") if backend == "postgres" else str(tmp_path / "h.sqlite")
    d = tmp_path / "d"
    pipe = _pipe(d)
    acc = pipe.state.accounts
    _admin(pipe, "create_account", "NEWBIE")           # a user that never trades is still a user
    for a in ("A", "B", "C"):
        _admin(pipe, "create_account", a)
        _admin(pipe, "deposit", a, "USD", 10**9)
        _admin(pipe, "deposit", a, "AAPL", 1000)
        _admin(pipe, "deposit", a, "MSFT", 1000)
    rnd = random.Random(3)
    _flow(pipe, rnd, 150, "x")
    _admin(pipe, "withdraw", "A", "USD", 1000)
    w = HistoryWriter(str(d), open_store(url, str(d)), batch_inputs=13, accounts=acc.config())
    w.step()
    users = {r[0] for r in _rows(w.store, "SELECT account FROM accounts")}
    assert {"NEWBIE", "A", "B", "C"} <= users
    causes = {r[0] for r in _rows(w.store, "SELECT DISTINCT cause FROM balance_changes")}
    assert causes == {"deposit", "withdraw", "order"}
    _check(w.store, acc)
    n1 = _rows(w.store, "SELECT COUNT(*) FROM balance_changes")[0][0]
    w.close()
    # more flow; a new writer resumes after the stored sequence: the same sums, no row twice
    _flow(pipe, rnd, 100, "y")
    w = HistoryWriter(str(d), open_store(url, str(d)), batch_inputs=13, accounts=acc.config())
    w.step()
    assert _rows(w.store, "SELECT COUNT(*) FROM balance_changes")[0][0] > n1
    _check(w.store, acc)
    w.close()
    pipe.engine.close()


def test_writer_without_accounts_config_says_so(tmp_path, capsys):
    d = tmp_path / "d"
    pipe = _pipe(d)
    _admin(pipe, "create_account", "A")
    pipe.engine.close()
    w = HistoryWriter(str(d), open_store(str(tmp_path / "h.sqlite"), str(d)))
    w.step()
    assert "balance changes are not stored" in capsys.readouterr().err
    assert w.store.count("balance_changes") == 0
    w.close()
