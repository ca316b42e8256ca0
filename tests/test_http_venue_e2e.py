"""The venue end to end with independent clients and PostgreSQL: the exchange as a process with balances and
its history in PostgreSQL (``--db``); two users get deposits, cross over REST (httpx), watch order_updates,
balance_updates (one user_seq across both) and trades (websockets); the order is FILLED, balances are
conserved, the trade is in GET /api/v1/trades and in PostgreSQL, the balance_changes rows add up to the REST
balances; the same after kill -9 and a restart (no history row twice)."""
from __future__ import annotations

import asyncio
import json
import signal
import time
from decimal import Decimal

import pytest

from _http_support import Signed, httpx
from test_history import pg_url  # noqa: F401 - the fixture
from test_http_balances import _bal, _exe, _fund, _toml, _totals, _ws_login

psycopg = pytest.importorskip("psycopg")


def _start(cfg, data_dir, db):
    import os
    import re
    import subprocess
    p = subprocess.Popen([_exe(), "exchange", "--config", str(cfg), "--symbols", "AAPL,MSFT", "--port", "0",
                          "--md-port", "0", "--http-port", "0", "--data-dir", str(data_dir), "--db", db],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, PYTHONUNBUFFERED="1"))
    line = p.stdout.readline()
    m = re.search(r"http=(\S+)", line)
    if not m:
        p.kill()
        raise AssertionError((line, p.communicate(timeout=10)))
    return p, m.group(1)


def _cross(url, price, qty, tag):
    async def collect(ws):
        got = []
        t_end = time.monotonic() + 10
        while time.monotonic() < t_end:
            try:
                got.append(json.loads(await asyncio.wait_for(ws.recv(), 1.0)))
            except asyncio.TimeoutError:
                if any(m["channel"] == "trades" for m in got) and \
                        any(m["channel"] == "order_updates" and m["data"]["status"] == "FILLED" for m in got):
                    return got
        raise AssertionError(got)

    async def run():
        ws_mm, ws_tk = await _ws_login(url, "MM"), await _ws_login(url, "TAKER")
        mm, tk = Signed(url, "MM"), Signed(url, "TAKER")
        r1 = await asyncio.to_thread(mm.post, "/api/v1/create_order", {
            "symbol": "AAPL", "side": "SELL", "type": "LIMIT", "price": price, "qty": qty, "cid": f"s-{tag}"})
        r2 = await asyncio.to_thread(tk.post, "/api/v1/create_order", {
            "symbol": "AAPL", "side": "BUY", "type": "LIMIT", "price": price, "qty": qty, "cid": f"b-{tag}"})
        assert r1.status_code == 202 and r2.status_code == 202, (r1.text, r2.text)
        a, b = await asyncio.gather(collect(ws_mm), collect(ws_tk))
        await ws_mm.close()
        await ws_tk.close()
        return r1.json()["data"], r2.json()["data"], a, b
    s, b, msgs_mm, msgs_tk = asyncio.run(run())
    for msgs, d in ((msgs_mm, s), (msgs_tk, b)):
        private = [m for m in msgs if m["channel"] in ("order_updates", "balance_updates")]
        us = [m["user_seq"] for m in private]
        assert us == list(range(us[0], us[0] + len(us))), us          # in order, no gap, across both channels
        for ch in ("order_updates", "balance_updates", "trades"):
            seqs = [m["seq"] for m in msgs if m["channel"] == ch]
            assert seqs and seqs == list(range(seqs[0], seqs[0] + len(seqs))), (ch, seqs)
        ou = [m["data"] for m in msgs if m["channel"] == "order_updates"]
        assert [o["status"] for o in ou] == ["ACCEPTED", "FILLED"] and {o["order_id"] for o in ou} == {d["order_id"]}
    trade = next(m["data"] for m in msgs_tk if m["channel"] == "trades")
    assert trade["price"] == price and trade["qty"] == qty
    return s["order_id"], b["order_id"], trade["trade_id"]


def _pg(db, sql):
    with psycopg.connect(db) as c, c.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall()


def _pg_matches(db, url, trade_ids, orders, timeout=30.0):
    """Wait until the history writer stored everything: the trades, the orders FILLED, and balance_changes
    whose sums are the balances REST reports (raw engine units: USD amounts in 1e-9)."""
    want = {}
    for acct in ("MM", "TAKER", "fees"):
        for asset, (av, lk) in _bal(url, "OPS", acct).items():
            scale = Decimal(10**9) if asset == "USD" else Decimal(1)
            want[(acct, asset)] = (int(Decimal(av) * scale), int(Decimal(lk) * scale))
    end = time.monotonic() + timeout
    while True:
        try:
            trades = sorted(str(r[0]) for r in _pg(db, "SELECT trade_id FROM trades"))
            status = {str(r[0]): r[1] for r in _pg(db, "SELECT order_id, status FROM orders")}
            sums = {(a, x): (int(da), int(dl)) for a, x, da, dl in _pg(
                db, "SELECT account, asset, SUM(d_available), SUM(d_locked) FROM balance_changes "
                    "GROUP BY account, asset")}
        except psycopg.errors.UndefinedTable:
            trades, status, sums = [], {}, {}
        ok = (trades == sorted(trade_ids) and all(status.get(o) == "FILLED" for pair in orders for o in pair)
              and all(sums.get(k) == v for k, v in want.items() if v != (0, 0)))
        if ok:
            return sums
        if time.monotonic() > end:
            raise AssertionError((trades, trade_ids, status, sums, want))
        time.sleep(0.2)


@pytest.mark.slow
def test_venue_end_to_end_with_postgres_and_kill9(tmp_path, pg_url):  # noqa: F811 - the fixture
    cfg, data = _toml(tmp_path / "exch.toml"), tmp_path / "data"
    # the helper's config turns history off (written before the writer stored balances): on here
    cfg.write_text(cfg.read_text().replace("[history]\nenabled = false\n", ""))
    deposits = {"AAPL": Decimal(100).normalize(), "USD": Decimal(10000).normalize()}
    p, url = _start(cfg, data, pg_url)
    try:
        _fund(url)
        o1 = _cross(url, "101.5", "7", "1")
        assert _totals(url) == deposits
        tr = httpx.get(url + "/api/v1/trades?symbol=AAPL").json()["data"]
        assert [t["trade_id"] for t in tr] == [o1[2]]
        _pg_matches(pg_url, url, [o1[2]], [o1[:2]])
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(10)
    p, url = _start(cfg, data, pg_url)              # the journal rebuilds orders, trades and balances
    try:
        assert _totals(url) == deposits
        assert Signed(url, "MM").get(f"/api/v1/order/{o1[0]}").json()["data"]["status"] == "FILLED"
        o2 = _cross(url, "101.75", "3", "2")
        assert _totals(url) == deposits
        tr = httpx.get(url + "/api/v1/trades?symbol=AAPL").json()["data"]
        assert sorted(t["trade_id"] for t in tr) == sorted([o1[2], o2[2]])
        _pg_matches(pg_url, url, [o1[2], o2[2]], [o1[:2], o2[:2]])
        # exactly once: no balance row twice (the primary key) and conservation on the rows
        per_asset: dict = {}
        for a, x, da, dl in _pg(pg_url, "SELECT account, asset, d_available, d_locked FROM balance_changes"):
            per_asset[x] = per_asset.get(x, 0) + int(da) + int(dl)
        assert per_asset == {"AAPL": 100, "USD": 10000 * 10**9}
    finally:
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
