"""The web dashboard's server side: its pages, and the candles / pnl / ops endpoints (engine.http.dashboard)."""
from __future__ import annotations

import time
from fractions import Fraction

import numpy as np
import pytest

from _http_support import Signed, httpx, running_exchange

from engine.http.dashboard import candles_of, money_str
from test_history import pg_url  # noqa: F401 - fixture: a fresh database on FH_TEST_POSTGRES_URL


def _order(side, price, qty, sym="AAPL", **kw):
    return {"symbol": sym, "side": side, "type": "LIMIT", "price": price, "qty": qty, **kw}


def _cross(url, price, qty, sym="AAPL"):
    mm, tk = Signed(url, "MM"), Signed(url, "TAKER")
    assert mm.post("/api/v1/create_order", _order("SELL", price, qty, sym)).status_code == 202
    assert tk.post("/api/v1/create_order", _order("BUY", price, qty, sym)).status_code == 202


def _wait(pred, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_candles_of_ohlcv():
    s = 1_000_000_000
    ts = np.array([5 * s + 1, 61 * s, 5 * s + 2, 59 * s, 121 * s], np.int64)      # out of order
    px = np.array([100, 90, 105, 95, 80], np.int64) * s
    q = np.array([1, 2, 3, 4, 5], np.int64)
    c = candles_of(ts, px, q, 60)
    assert [x["t"] for x in c] == [0, 60_000, 120_000]
    assert c[0] == {"t": 0, "open": "100", "high": "105", "low": "95", "close": "95", "volume": "8", "trades": 3}
    assert c[1]["open"] == c[1]["close"] == "90" and c[1]["volume"] == "2"
    assert candles_of(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), 60) == []


def test_money_str_rounds_exactly():
    assert money_str(0) == "0"
    assert money_str(1_500_000_000) == "1.5"
    assert money_str(-2_000_000_000) == "-2"
    assert money_str(Fraction(1, 3)) == "0"                       # 0.33e-9 rounds to 0
    assert money_str(Fraction(10, 3) * 1_000_000_000) == "3.333333333"
    assert money_str(Fraction(-5, 2)) == "-0.000000003"           # half away from zero


def test_pages_and_static_files_are_served(tmp_path):
    with running_exchange(tmp_path) as ex:
        r = httpx.get(ex.http.url + "/")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert 'id="ladder"' in r.text and 'id="order-form"' in r.text and "/static/trader.js" in r.text
        r = httpx.get(ex.http.url + "/operator")
        assert r.status_code == 200 and "/static/operator.js" in r.text
        for name, ctype in (("trader.js", "application/javascript"), ("chart.js", "application/javascript"),
                            ("operator.js", "application/javascript"), ("dashboard.css", "text/css")):
            r = httpx.get(ex.http.url + "/static/" + name)
            assert r.status_code == 200 and r.headers["content-type"].startswith(ctype), name
        for bad in ("../server.py", "..%2Fserver.py", "nope.js", "x.py"):
            r = httpx.get(ex.http.url + "/static/" + bad)
            assert r.status_code == 404 and r.json()["code"] == "NOT_FOUND", bad


def test_candles_from_history_database_and_memory(tmp_path):
    with running_exchange(tmp_path) as ex:
        url = ex.http.url
        assert ex.history is not None
        _cross(url, "101.5", "10")
        _cross(url, "99.25", "5")
        _cross(url, "100", "7")
        _wait(lambda: ex.history_stats()["lag"] == 0)
        d = httpx.get(url + "/api/v1/candles?symbol=AAPL&interval=1h").json()["data"]
        assert d["source"] == "history" and d["interval"] == "1h"
        # all three trades within one hour (or across an hour boundary: then two candles)
        c = d["candles"]
        assert sum(int(x["volume"]) for x in c) == 22 and sum(x["trades"] for x in c) == 3
        assert c[0]["open"] == "101.5" and c[-1]["close"] == "100"
        assert max(x["high"] for x in c) == "101.5" and min(float(x["low"]) for x in c) == 99.25
        # a trade the writer has not stored yet is in the candles too (from the gateway's memory)
        ex.history.stop()
        ex.history_stats = lambda: {"lag": 0}
        _cross(url, "102", "1")
        d = httpx.get(url + "/api/v1/candles?symbol=AAPL&interval=1h").json()["data"]
        assert d["source"] == "history+memory"
        assert sum(int(x["volume"]) for x in d["candles"]) == 23 and d["candles"][-1]["close"] == "102"
        assert httpx.get(url + "/api/v1/candles?symbol=MSFT&interval=1m").json()["data"]["candles"] == []
        for q, code in (("symbol=AAPL&interval=7m", "INVALID_PARAMETER"), ("interval=1m", "INVALID_PARAMETER"),
                        ("symbol=ZZZ", "UNKNOWN_SYMBOL"), ("symbol=AAPL&limit=0", "INVALID_PARAMETER"),
                        ("symbol=AAPL&since=x", "INVALID_PARAMETER")):
            assert httpx.get(url + "/api/v1/candles?" + q).json()["code"] == code, q


def test_candles_from_postgresql_history(tmp_path, pg_url):  # noqa: F811 - the fixture
    from _http_support import exchange_cfg
    from engine.exchange import Exchange
    cfg = exchange_cfg(tmp_path)
    cfg["history"]["db"] = pg_url
    ex = Exchange(cfg).start()
    try:
        _cross(ex.http.url, "10.5", "4")
        _cross(ex.http.url, "11", "6")
        _wait(lambda: ex.history_stats()["lag"] == 0)
        d = httpx.get(ex.http.url + "/api/v1/candles?symbol=AAPL&interval=1d").json()["data"]
        assert d["source"] == "history"
        c = d["candles"]        # one day's candle (two if the trades straddle midnight UTC)
        assert c[0]["open"] == "10.5" and c[-1]["close"] == "11" and sum(int(x["volume"]) for x in c) == 10
        assert max(x["high"] for x in c) == "11" and min(x["low"] for x in c) == "10.5"
    finally:
        ex.stop()


def test_candles_when_the_history_database_fails_come_from_memory(tmp_path):
    with running_exchange(tmp_path) as ex:
        ex.cfg["history"]["db"] = "postgresql://nobody@127.0.0.1:1/none"     # what the dashboard's reader opens
        _cross(ex.http.url, "20", "2")
        r = httpx.get(ex.http.url + "/api/v1/candles?symbol=AAPL&interval=1m")
        assert r.status_code == 200, r.text
        d = r.json()["data"]
        assert d["source"] == "memory" and "history database" in d["history_error"]
        assert d["candles"][0]["close"] == "20" and d["candles"][0]["volume"] == "2"


def test_candles_without_history_come_from_memory(tmp_path):
    from _http_support import exchange_cfg
    from engine.exchange import Exchange
    cfg = exchange_cfg(tmp_path)
    cfg["history"]["enabled"] = False
    ex = Exchange(cfg).start()
    try:
        assert ex.history is None
        _cross(ex.http.url, "50", "3")
        d = httpx.get(ex.http.url + "/api/v1/candles?symbol=AAPL&interval=5s").json()["data"]
        assert d["source"] == "memory" and len(d["candles"]) == 1
        assert d["candles"][0]["open"] == "50" and d["candles"][0]["volume"] == "3"
        assert d["candles"][0]["t"] % 5000 == 0
    finally:
        ex.stop()


def test_pnl_realized_and_unrealized_per_symbol(tmp_path):
    with running_exchange(tmp_path, insecure_dev_auth=False) as ex:
        url = ex.http.url
        _cross(url, "100", "10")           # TAKER buys 10 @ 100
        _cross(url, "110", "4")            # TAKER buys 4 more @ 110: avg 102.857..., mark 110
        mm, tk = Signed(url, "MM"), Signed(url, "TAKER")
        # TAKER sells 5 @ 105 to MM: realized (105 - 720/7) * 5
        assert mm.post("/api/v1/create_order", _order("BUY", "105", "5")).status_code == 202
        assert tk.post("/api/v1/create_order", _order("SELL", "105", "5")).status_code == 202
        d = tk.get("/api/v1/pnl").json()["data"]
        assert d["account"] == "TAKER"
        (row,) = d["symbols"]
        avg = Fraction(1440, 14)
        assert row["symbol"] == "AAPL" and row["position"] == "9" and row["mark"] == "105"
        assert row["realized"] == money_str((105 - avg) * 5 * 1_000_000_000)
        assert row["unrealized"] == money_str((105 - avg) * 9 * 1_000_000_000)
        assert d["realized"] == row["realized"] and d["unrealized"] == row["unrealized"]
        m = mm.get("/api/v1/pnl").json()["data"]
        assert m["symbols"][0]["position"] == "-9"
        # no credentials: UNAUTHORIZED
        r = httpx.get(url + "/api/v1/pnl")
        assert r.status_code == 401 and r.json()["code"] == "UNAUTHORIZED"


def test_ops_figures_for_the_operator_page(tmp_path):
    with running_exchange(tmp_path) as ex:
        url = ex.http.url
        _cross(url, "100", "1")
        d = httpx.get(url + "/api/v1/ops").json()["data"]        # current: it flushes the buffered stamps
        h = {(x["group"], x["name"]): x for x in d["histograms"]}
        co = h[("http", "create_order")]
        assert co["count"] == 2 and sum(co["counts"]) == 2 and len(co["counts"]) == len(d["bounds_s"]) + 1
        assert co["p50_us"] > 0
        assert ("engine", "total") in h and h[("engine", "total")]["count"] >= 2
        assert ("engine", "match_done") in h and ("gateway", "risk_done") in h and ("gateway", "ack_sent") in h
        assert d["counters"]["acks"] >= 2 and d["counters"]["requests"] >= 2
        assert d["journal"]["seq"] >= 2 and d["journal"]["fsync"] == "batch"
        assert d["history"]["alive"] is True and "lag" in d["history"]
        assert d["sessions"] == []
        # sessions: a WebSocket connection (authenticated) and an account on the ZeroMQ door
        from websockets.sync.client import connect
        from engine.client import Client
        from _http_support import KEYS
        tok = httpx.post(url + "/api/v1/login", json={"api_key": "demo-taker", "secret": "demo-taker-secret"})
        c = Client(ex.gateway.endpoint, *KEYS["MM"])
        try:
            assert c.submit("AAPL", "B", 90_000_000_000, 1)["status"] == "ack"
            with connect(url.replace("http", "ws") + "/ws") as ws:
                ws.send('{"op": "auth", "token": "%s"}' % tok.json()["data"]["token"])
                assert '"code":0' in ws.recv(5).replace(" ", "")
                ws.send('{"op": "subscribe", "channels": ["trades", "order_updates"]}')
                ws.recv(5)
                sess = httpx.get(url + "/api/v1/ops").json()["data"]["sessions"]
        finally:
            c.close()
        assert {"door": "websocket", "account": "TAKER", "channels": 2, "queued": 0} in sess
        assert {"door": "zeromq", "account": "MM", "channels": None, "queued": None} in sess


def test_openapi_documents_the_dashboard_endpoints(tmp_path):
    with running_exchange(tmp_path) as ex:
        doc = httpx.get(ex.http.url + "/docs").json()
        for path in ("/api/v1/candles", "/api/v1/pnl", "/api/v1/ops"):
            assert "get" in doc["paths"][path], path
        params = {p["name"] for p in doc["paths"]["/api/v1/candles"]["get"]["parameters"]}
        assert params == {"symbol", "interval", "limit", "since"}
        assert doc["paths"]["/api/v1/pnl"]["get"]["security"]
        assert "/" not in doc["paths"] and "/operator" not in doc["paths"]
