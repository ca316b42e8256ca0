"""End to end with independent clients: the exchange as a process (``feedhandler exchange --http-port``),
httpx for REST, websockets for the pushes; then kill -9 and a restart: the journal rebuilds the state."""
from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _http_support import Signed, httpx, signed_headers

websockets = pytest.importorskip("websockets", reason="websockets (test extra) is not installed")


def _exe() -> str:
    exe = Path(sys.executable).parent / "feedhandler"
    if not exe.exists():
        pytest.skip("the feedhandler console script is not installed next to this Python")
    return str(exe)


def start(data_dir):
    p = subprocess.Popen([_exe(), "exchange", "--symbols", "AAPL,MSFT", "--port", "0", "--md-port", "0",
                          "--http-port", "0", "--data-dir", str(data_dir)],
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
    await ws.send(json.dumps({"op": "subscribe", "channels": ["order_updates", "trades"]}))
    m = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert m["type"] == "subscribed" and m["code"] == 0, m
    return ws


async def _collect(ws, n_orders: int, n_trades: int):
    ou, tr = [], []
    while len([m for m in ou if m["data"]["status"] == "FILLED"]) < n_orders or len(tr) < n_trades:
        m = json.loads(await asyncio.wait_for(ws.recv(), 10))
        (ou if m["channel"] == "order_updates" else tr).append(m)
    return ou, tr


def _gapless(msgs):
    seqs = [m["seq"] for m in msgs]
    return seqs == list(range(seqs[0], seqs[0] + len(seqs)))


def cross(url: str, price: str, qty: str, tag: str):
    """MM sells, TAKER buys at the same price over REST while both watch their WebSockets."""
    async def run():
        ws_mm, ws_tk = await _ws_login(url, "MM"), await _ws_login(url, "TAKER")
        mm, tk = Signed(url, "MM"), Signed(url, "TAKER")
        r1 = await asyncio.to_thread(mm.post, "/api/v1/create_order", {
            "symbol": "AAPL", "side": "SELL", "type": "LIMIT", "price": price, "qty": qty, "cid": f"s-{tag}"})
        r2 = await asyncio.to_thread(tk.post, "/api/v1/create_order", {
            "symbol": "AAPL", "side": "BUY", "type": "LIMIT", "price": price, "qty": qty, "cid": f"b-{tag}"})
        assert r1.status_code == 202 and r2.status_code == 202, (r1.text, r2.text)
        (ou_mm, tr_mm), (ou_tk, tr_tk) = await asyncio.gather(_collect(ws_mm, 1, 1), _collect(ws_tk, 1, 1))
        await ws_mm.close()
        await ws_tk.close()
        return r1.json()["data"], r2.json()["data"], ou_mm, ou_tk, tr_mm, tr_tk
    s, b, ou_mm, ou_tk, tr_mm, tr_tk = asyncio.run(run())
    for ou, d in ((ou_mm, s), (ou_tk, b)):
        assert [m["data"]["status"] for m in ou] == ["ACCEPTED", "FILLED"]
        assert {m["data"]["order_id"] for m in ou} == {d["order_id"]}
        assert _gapless(ou)
    assert tr_mm[0]["data"] == tr_tk[0]["data"] and tr_mm[0]["data"]["price"] == price
    assert tr_mm[0]["data"]["qty"] == qty and tr_mm[0]["data"]["taker_side"] == "BUY"
    return s["order_id"], b["order_id"], tr_mm[0]["data"]["trade_id"]


def check_state(url: str, orders: list[tuple[str, str]], trade_ids: list[str]):
    mm, tk = Signed(url, "MM"), Signed(url, "TAKER")
    for sell, buy in orders:
        assert mm.get(f"/api/v1/order/{sell}").json()["data"]["status"] == "FILLED"
        assert tk.get(f"/api/v1/order/{buy}").json()["data"]["status"] == "FILLED"
    tr = httpx.get(url + "/api/v1/trades?symbol=AAPL").json()["data"]
    assert [t["trade_id"] for t in tr] == trade_ids


@pytest.mark.slow
def test_two_users_cross_over_rest_and_ws_then_kill9_restart(tmp_path):
    data = tmp_path / "data"
    p, url = start(data)
    try:
        o1 = cross(url, "101.5", "7", "1")
        check_state(url, [o1[:2]], [o1[2]])
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(10)
    p, url = start(data)            # the journal rebuilds the books, the orders and the trades
    try:
        check_state(url, [o1[:2]], [o1[2]])
        o2 = cross(url, "101.75", "3", "2")
        check_state(url, [o1[:2], o2[:2]], [o1[2], o2[2]])
        assert o2[0] != o1[0] and o2[2] != o1[2]
    finally:
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=20)
        assert p.returncode == 0, err
