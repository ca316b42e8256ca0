"""Balances over the HTTP gateway: GET /api/v1/balances, the balance_updates WebSocket channel, the admin
endpoints (create_user, deposit, withdraw: an [accounts] admins account's signed key only, journaled), and
INSUFFICIENT_BALANCE on create_order; end to end with the exchange as a process, kill -9 and a restart."""
from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import threading
import time

import pytest

from _http_support import KEYS, Signed, engine_seq, httpx, journal_size, signed_headers

websockets = pytest.importorskip("websockets", reason="websockets (test extra) is not installed")

KEYS.setdefault("OPS", ("demo-ops", "demo-ops-secret"))
ALL_KEYS = [{"api_key": KEYS[a][0], "secret": KEYS[a][1], "account": a} for a in ("MM", "TAKER", "OPS")]
ACCOUNTS = {"enabled": True, "quote": "USD", "maker_fee_bps": 1, "taker_fee_bps": 2, "fee_account": "fees",
            "admins": ["OPS"]}


def _exchange(tmp_path, accounts=True):
    from engine.exchange import Exchange, load_config
    cfg = load_config(None, {"data_dir": str(tmp_path / "data"), "gateway.endpoint": "tcp://127.0.0.1:*",
                             "marketdata.endpoint": "tcp://127.0.0.1:*", "symbols": ["AAPL", "MSFT"]})
    cfg["http"] = {"port": 0}
    cfg["keys"] = ALL_KEYS
    cfg["history"] = dict(cfg["history"], enabled=False)   # see _toml
    if accounts:
        cfg["accounts"] = dict(ACCOUNTS)
    return Exchange(cfg)


@pytest.fixture
def ex(tmp_path):
    e = _exchange(tmp_path)
    e.start()
    try:
        yield e
        assert e.http.listener_errors == 0, e.http.last_listener_error
    finally:
        e.stop()


def _bal(url, account, of=None):
    r = Signed(url, account).get("/api/v1/balances" + (f"?account={of}" if of else ""))
    assert r.status_code == 200, r.text
    return {b["asset"]: (b["available"], b["locked"]) for b in r.json()["data"]["balances"]}


def _fund(url):
    ops = Signed(url, "OPS")
    for a in ("MM", "TAKER"):
        r = ops.post("/api/v1/admin/create_user", {"account": a})
        assert r.status_code == 200 and r.json()["data"]["op"] == "create_account", r.text
    r = ops.post("/api/v1/admin/deposit", {"account": "MM", "asset": "AAPL", "amount": "100", "rid": "d1"})
    assert r.status_code == 200 and r.json()["data"]["amount"] == "100", r.text
    r = ops.post("/api/v1/admin/deposit", {"account": "TAKER", "asset": "USD", "amount": "10000", "rid": "d2"})
    assert r.status_code == 200 and r.json()["data"]["amount"] == "10000", r.text


def _totals(url):
    from decimal import Decimal
    tot: dict = {}
    for a in ("MM", "TAKER", "OPS", "fees"):
        for asset, (av, lk) in _bal(url, "OPS", a).items():
            tot[asset] = tot.get(asset, Decimal(0)) + Decimal(av) + Decimal(lk)
    return {k: v.normalize() for k, v in tot.items()}


def test_balances_off_unsupported(tmp_path):
    e = _exchange(tmp_path, accounts=False)
    e.start()
    try:
        r = Signed(e.http.url, "MM").get("/api/v1/balances")
        assert r.status_code == 501 and r.json()["code"] == "UNSUPPORTED" and "[accounts]" in r.json()["msg"]
        r = Signed(e.http.url, "OPS").post("/api/v1/admin/deposit", {"account": "MM", "asset": "USD", "amount": "1"})
        assert r.json()["code"] == "UNSUPPORTED"
    finally:
        e.stop()


def test_admin_endpoints_refuse_non_admins_and_journal_nothing(ex):
    url = ex.http.url
    _fund(url)
    seq0, size0 = engine_seq(ex), journal_size(ex)
    before = _bal(url, "MM")
    mm = Signed(url, "MM")
    for path, body in (("/api/v1/admin/deposit", {"account": "MM", "asset": "USD", "amount": "5"}),
                       ("/api/v1/admin/withdraw", {"account": "MM", "asset": "AAPL", "amount": "5"}),
                       ("/api/v1/admin/create_user", {"account": "EVE"})):
        r = mm.post(path, body)
        assert r.status_code == 401 and r.json()["code"] == "UNAUTHORIZED", r.text
    # unsigned (dev header or JWT) never reaches the pipeline either
    r = httpx.post(url + "/api/v1/admin/create_user", json={"account": "EVE"}, headers={"X-User-ID": "OPS"})
    assert r.status_code == 401 and r.json()["code"] == "UNAUTHORIZED"
    r = mm.get("/api/v1/balances?account=TAKER")
    assert r.status_code == 401 and r.json()["code"] == "UNAUTHORIZED"
    assert engine_seq(ex) == seq0 and journal_size(ex) == size0 and _bal(url, "MM") == before
    ops = Signed(url, "OPS")
    r = ops.post("/api/v1/admin/withdraw", {"account": "MM", "asset": "AAPL", "amount": "101"})
    assert r.status_code == 422 and r.json()["code"] == "INSUFFICIENT_BALANCE", r.text
    r = ops.post("/api/v1/admin/create_user", {"account": "MM"})
    assert r.json()["code"] == "ACCOUNT_EXISTS"
    r = ops.post("/api/v1/admin/deposit", {"account": "NOBODY", "asset": "USD", "amount": "1"})
    assert r.json()["code"] == "UNKNOWN_ACCOUNT"
    r = ops.post("/api/v1/admin/deposit", {"account": "MM", "asset": "USD", "amount": "0.0000000001"})
    assert r.json()["code"] == "INVALID_PARAMETER"
    assert engine_seq(ex) == seq0
    # a retried rid is answered, not redone
    r1 = ops.post("/api/v1/admin/withdraw", {"account": "MM", "asset": "AAPL", "amount": "1", "rid": "w1"})
    r2 = ops.post("/api/v1/admin/withdraw", {"account": "MM", "asset": "AAPL", "amount": "1", "rid": "w1"})
    assert r1.status_code == r2.status_code == 200 and r2.json()["data"].get("duplicate") is True
    assert _bal(url, "MM")["AAPL"] == ("99", "0")


def test_insufficient_balance_on_create_order(ex):
    url = ex.http.url
    _fund(url)
    r = Signed(url, "TAKER").post("/api/v1/create_order", {"symbol": "AAPL", "side": "BUY", "price": "1000",
                                                           "qty": "11"})
    assert r.status_code == 422 and r.json()["code"] == "INSUFFICIENT_BALANCE", r.text
    from engine.http.openapi import document
    assert "INSUFFICIENT_BALANCE" in document()["x-error-codes"]


def test_balance_events_reach_zmq_sink_and_websocket_both(ex):
    """The HTTP hub listens to balance events without taking them from the account's own sink (ZeroMQ)."""
    url = ex.http.url
    _fund(url)
    got = []
    lock = threading.Lock()

    def sink(ev):
        with lock:
            got.append(ev)
    ex.pipeline.register_sink("MM", sink)

    async def run():
        ws = await _ws_login(url, "MM")
        r = await asyncio.to_thread(Signed(url, "MM").post, "/api/v1/create_order",
                                    {"symbol": "AAPL", "side": "SELL", "price": "50", "qty": "4", "cid": "z1"})
        assert r.status_code == 202, r.text
        msgs = []
        while not [m for m in msgs if m["channel"] == "balance_updates"]:
            msgs.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
        await ws.close()
        return [m for m in msgs if m["channel"] == "balance_updates"]
    bu = asyncio.run(run())
    assert bu[0]["data"]["asset"] == "AAPL" and bu[0]["data"]["available"] == "96" and bu[0]["data"]["locked"] == "4"
    deadline = time.time() + 5
    while time.time() < deadline and not any(e.get("type") == "balance" for e in got):
        time.sleep(0.01)
    with lock:
        zb = [e for e in got if e.get("type") == "balance"]
    assert zb and zb[0]["asset"] == "AAPL" and zb[0]["available"] == 96 and zb[0]["locked"] == 4
    assert zb[0]["seq"] == bu[0]["data"]["engine_seq"]
    ex.pipeline.register_sink("MM", None)


# ---- end to end: a process, REST + WebSocket, kill -9, restart -----------------------------------------
def _exe() -> str:
    import sys
    from pathlib import Path
    exe = Path(sys.executable).parent / "feedhandler"
    if not exe.exists():
        pytest.skip("the feedhandler console script is not installed next to this Python")
    return str(exe)


def _toml(path):
    lines = []
    for k in ALL_KEYS:
        lines += ["[[keys]]", f'api_key = "{k["api_key"]}"', f'secret = "{k["secret"]}"', f'account = "{k["account"]}"']
    lines += ["[accounts]", "enabled = true", 'quote = "USD"', "maker_fee_bps = 1", "taker_fee_bps = 2",
              'fee_account = "fees"', 'admins = ["OPS"]',
              # off in this file's tests (balances only); tests/test_http_venue_e2e.py turns it on and
              # checks the history of the same flow in PostgreSQL
              "[history]", "enabled = false"]
    path.write_text("\n".join(lines) + "\n")
    return path


def _start(cfg, data_dir):
    p = subprocess.Popen([_exe(), "exchange", "--config", str(cfg), "--symbols", "AAPL,MSFT", "--port", "0",
                          "--md-port", "0", "--http-port", "0", "--data-dir", str(data_dir)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, PYTHONUNBUFFERED="1"))
    line = p.stdout.readline()
    m = re.search(r"http=(\S+)", line)
    if not m:
        p.kill()
        raise AssertionError((line, p.communicate(timeout=10)))
    return p, m.group(1)


async def _ws_login(url: str, account: str):
    ws = await websockets.connect(url.replace("http://", "ws://") + "/ws")
    h = signed_headers(account, "WS", "/ws")
    await ws.send(json.dumps({"op": "auth", "api_key": h["X-API-KEY"], "ts": h["X-TIMESTAMP"],
                              "nonce": h["X-NONCE"], "signature": h["X-SIGNATURE"]}))
    m = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert m["code"] == 0, m
    await ws.send(json.dumps({"op": "subscribe", "channels": ["order_updates", "trades", "balance_updates"]}))
    m = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert m["type"] == "subscribed" and m["code"] == 0 and not m["data"].get("refused"), m
    return ws


def _gapless(msgs):
    seqs = [m["seq"] for m in msgs]
    return bool(seqs) and seqs == list(range(seqs[0], seqs[0] + len(seqs)))


def _cross(url, price, qty, tag, want):
    """MM sells, TAKER buys over REST; each WebSocket shows its orders, the trade and balance changes that end
    in ``want[account]`` (the balances REST then reports)."""
    async def collect(ws, final):
        ou, tr, bu = [], [], []
        while True:
            last = {}
            for m in bu:
                last[m["data"]["asset"]] = (m["data"]["available"], m["data"]["locked"])
            if (any(m["data"]["status"] == "FILLED" for m in ou) and tr
                    and all(last.get(a) == v for a, v in final.items())):
                return ou, tr, bu
            m = json.loads(await asyncio.wait_for(ws.recv(), 10))
            {"order_updates": ou, "trades": tr, "balance_updates": bu}[m["channel"]].append(m)

    async def run():
        ws_mm, ws_tk = await _ws_login(url, "MM"), await _ws_login(url, "TAKER")
        mm, tk = Signed(url, "MM"), Signed(url, "TAKER")
        r1 = await asyncio.to_thread(mm.post, "/api/v1/create_order", {
            "symbol": "AAPL", "side": "SELL", "type": "LIMIT", "price": price, "qty": qty, "cid": f"s-{tag}"})
        r2 = await asyncio.to_thread(tk.post, "/api/v1/create_order", {
            "symbol": "AAPL", "side": "BUY", "type": "LIMIT", "price": price, "qty": qty, "cid": f"b-{tag}"})
        assert r1.status_code == 202 and r2.status_code == 202, (r1.text, r2.text)
        a, b = await asyncio.gather(collect(ws_mm, want["MM"]), collect(ws_tk, want["TAKER"]))
        await ws_mm.close()
        await ws_tk.close()
        return r1.json()["data"], r2.json()["data"], a, b
    s, b, (ou_mm, tr_mm, bu_mm), (ou_tk, tr_tk, bu_tk) = asyncio.run(run())
    for ou, bu, d in ((ou_mm, bu_mm, s), (ou_tk, bu_tk, b)):
        assert [m["data"]["status"] for m in ou] == ["ACCEPTED", "FILLED"]
        assert {m["data"]["order_id"] for m in ou} == {d["order_id"]}
        assert _gapless(ou) and _gapless(bu)
        es = [m["data"]["engine_seq"] for m in bu]
        assert es == sorted(es)
    # the resting seller's lock comes first; the taker's buy locks and fills in one request: one message
    # per asset, both with that request's sequence number
    assert bu_mm[0]["data"]["asset"] == "AAPL" and bu_mm[0]["data"]["locked"] == qty
    assert {m["data"]["asset"] for m in bu_tk} == {"AAPL", "USD"}
    assert len({m["data"]["engine_seq"] for m in bu_tk}) == 1
    assert tr_mm[0]["data"] == tr_tk[0]["data"] and tr_mm[0]["data"]["qty"] == qty
    for acct in ("MM", "TAKER"):
        got = _bal(url, acct)
        assert {a: got[a] for a in want[acct]} == want[acct]
    return s["order_id"], b["order_id"]


@pytest.mark.slow
def test_deposits_cross_balances_conserved_then_kill9_restart(tmp_path):
    cfg, data = _toml(tmp_path / "exch.toml"), tmp_path / "data"
    from decimal import Decimal
    deposits = {"AAPL": Decimal(100).normalize(), "USD": Decimal(10000).normalize()}
    # 7 @ 101.5: notional 710.5; taker fee 2 bp = 0.1421, maker fee 1 bp = 0.07105
    want1 = {"MM": {"AAPL": ("93", "0"), "USD": ("710.42895", "0")},
             "TAKER": {"AAPL": ("7", "0"), "USD": ("9289.3579", "0")}}
    # then 3 @ 101.75: notional 305.25; taker fee 0.06105, maker fee 0.030525
    want2 = {"MM": {"AAPL": ("90", "0"), "USD": ("1015.648425", "0")},
             "TAKER": {"AAPL": ("10", "0"), "USD": ("8984.04685", "0")}}
    p, url = _start(cfg, data)
    try:
        _fund(url)
        o1 = _cross(url, "101.5", "7", "1", want1)
        assert _totals(url) == deposits
        assert _bal(url, "OPS", "fees") == {"USD": ("0.21315", "0")}
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(10)
    p, url = _start(cfg, data)              # the journal rebuilds orders, trades and balances
    try:
        for acct in ("MM", "TAKER"):
            assert _bal(url, acct) == want1[acct]
        assert _totals(url) == deposits
        mm = Signed(url, "MM")
        assert mm.get(f"/api/v1/order/{o1[0]}").json()["data"]["status"] == "FILLED"
        o2 = _cross(url, "101.75", "3", "2", want2)
        assert o2[0] != o1[0]
        assert _totals(url) == deposits
        assert Signed(url, "TAKER").get(f"/api/v1/order/{o2[1]}").json()["data"]["status"] == "FILLED"
    finally:
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=20)
        assert p.returncode == 0, err
