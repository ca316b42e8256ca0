"""The HTTP gateway's REST API against an in-process exchange: one engine, several doors."""
from __future__ import annotations

import json
import time

import pytest

from _http_support import KEYS, Signed, engine_seq, httpx, running_exchange, signed_headers


@pytest.fixture
def ex(tmp_path):
    with running_exchange(tmp_path) as ex:
        yield ex


def _order(side, price, qty, sym="AAPL", **kw):
    return {"symbol": sym, "side": side, "type": "LIMIT", "price": price, "qty": qty, **kw}


def test_create_order_202_then_cross_fill_and_queries(ex):
    mm, tk = Signed(ex.http.url, "MM"), Signed(ex.http.url, "TAKER")
    t0 = time.time() * 1000
    r = mm.post("/api/v1/create_order", _order("SELL", "101.25", "10", cid="mm-1"))
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["code"] == 0 and body["msg"] == "ok"
    d = body["data"]
    assert d["status"] == "ACCEPTED" and d["cid"] == "mm-1" and int(d["order_id"]) > 0
    assert t0 - 1000 <= d["accepted_at"] <= time.time() * 1000 + 1000
    sell_id = d["order_id"]
    r = mm.get("/api/v1/orders?status=open")
    assert [o["order_id"] for o in r.json()["data"]] == [sell_id]
    assert r.json()["data"][0]["price"] == "101.25" and r.json()["data"][0]["side"] == "SELL"
    dep = httpx.get(ex.http.url + "/api/v1/depth/AAPL?levels=5").json()["data"]
    assert dep["asks"] == [["101.25", "10"]] and dep["bids"] == []
    r = tk.post("/api/v1/create_order", _order("BUY", "101.25", "10", cid="tk-1"))
    assert r.status_code == 202, r.text
    buy_id = r.json()["data"]["order_id"]
    o = mm.get(f"/api/v1/order/{sell_id}").json()["data"]
    assert o["status"] == "FILLED" and o["filled_qty"] == "10" and o["leaves_qty"] == "0"
    assert tk.get(f"/api/v1/order/{buy_id}").json()["data"]["status"] == "FILLED"
    assert mm.get("/api/v1/orders?status=open").json()["data"] == []
    trades = httpx.get(ex.http.url + "/api/v1/trades?symbol=AAPL&since=0").json()["data"]
    assert len(trades) == 1 and trades[0]["price"] == "101.25" and trades[0]["qty"] == "10"
    assert trades[0]["taker_side"] == "BUY"
    assert httpx.get(ex.http.url + f"/api/v1/trades?symbol=AAPL&since={trades[0]['ts'] + 1}").json()["data"] == []
    # the same fill is what the ZeroMQ door's trade log recorded: one engine
    assert ex.trade_log.rows == 1


def test_cancel_and_amend_by_id_and_cid(ex):
    mm = Signed(ex.http.url, "MM")
    oid = mm.post("/api/v1/create_order", _order("BUY", "99", "5", cid="b1")).json()["data"]["order_id"]
    r = mm.post("/api/v1/amend_order", {"order_id": oid, "price": "99.5", "qty": "7"})
    assert r.status_code == 200, r.text
    assert r.json()["data"]["status"] == "REPLACED"
    o = mm.get(f"/api/v1/order/{oid}").json()["data"]
    assert o["price"] == "99.5" and o["leaves_qty"] == "7"
    r = mm.post("/api/v1/cancel_order", {"cid": "b1"})
    assert r.status_code == 200, r.text
    assert mm.get(f"/api/v1/order/{oid}").json()["data"]["status"] == "CANCELED"
    r = mm.post("/api/v1/cancel_order", {"order_id": oid})
    assert r.status_code == 404 and r.json()["code"] == "UNKNOWN_ORDER"


def test_zmq_and_http_doors_share_one_sequencer(ex):
    """An order entered over ZeroMQ is matched by one entered over HTTP."""
    from engine.client import Client
    c = Client(ex.gateway.endpoint, *KEYS["MM"])
    try:
        rep = c.submit("AAPL", "S", 100_000_000_000, 3, client_order_id="z1")
        assert rep["status"] == "ack", rep
    finally:
        c.close()
    tk = Signed(ex.http.url, "TAKER")
    r = tk.post("/api/v1/create_order", _order("BUY", "100", "3"))
    assert r.status_code == 202
    assert tk.get(f"/api/v1/order/{r.json()['data']['order_id']}").json()["data"]["status"] == "FILLED"
    assert Signed(ex.http.url, "MM").get("/api/v1/orders").json()["data"][0]["status"] == "FILLED"


def test_engine_rejects_and_risk_codes(ex):
    mm = Signed(ex.http.url, "MM")
    r = mm.post("/api/v1/create_order", _order("BUY", "1", "2000000"))
    assert r.status_code == 422 and r.json()["code"] == "MAX_QTY"
    r = mm.post("/api/v1/create_order", _order("BUY", "1", "1", sym="NOPE"))
    assert r.status_code == 404 and r.json()["code"] == "UNKNOWN_SYMBOL"
    r = mm.post("/api/v1/create_order", {"symbol": "AAPL", "side": "BUY", "type": "MARKET", "qty": "1",
                                         "price": "1"})
    assert r.status_code == 400 and r.json()["code"] == "INVALID_PARAMETER"
    r = mm.post("/api/v1/create_order", {**_order("BUY", "1", "1"), "extra": 1})
    assert r.json()["code"] == "INVALID_PARAMETER"


def test_duplicate_cid_is_idempotent(ex):
    mm = Signed(ex.http.url, "MM")
    a = mm.post("/api/v1/create_order", _order("BUY", "50", "1", cid="same"))
    seq = engine_seq(ex)
    b = mm.post("/api/v1/create_order", _order("BUY", "50", "1", cid="same"))
    assert a.status_code == b.status_code == 202
    assert b.json()["data"]["order_id"] == a.json()["data"]["order_id"] and b.json()["data"]["duplicate"]
    assert engine_seq(ex) == seq


def test_public_endpoints_symbols_health_balances(ex):
    base = ex.http.url
    s = httpx.get(base + "/api/v1/symbols").json()
    assert [x["symbol"] for x in s["data"]] == ["AAPL", "MSFT"]
    h = httpx.get(base + "/health").json()
    assert h["code"] == 0 and h["data"]["status"] == "UP"
    r = Signed(base, "MM").get("/api/v1/balances")
    assert r.status_code == 501 and r.json()["code"] == "UNSUPPORTED"
    r = httpx.get(base + "/api/v1/nothing")
    assert r.status_code == 404 and r.json()["code"] == "NOT_FOUND"
    r = httpx.get(base + "/api/v1/depth/AAPL?levels=abc")
    assert r.json()["code"] == "INVALID_PARAMETER"


def test_metrics_prometheus_text(ex):
    mm = Signed(ex.http.url, "MM")
    mm.post("/api/v1/create_order", _order("BUY", "10", "1"))
    ex.pipeline.flush_latency()
    txt = httpx.get(ex.http.url + "/metrics").text
    assert "# TYPE exchange_http_request_seconds histogram" in txt
    assert 'exchange_http_request_seconds_count{endpoint="create_order"} 1' in txt
    assert 'exchange_pipeline_total{what="acks"}' in txt
    assert "exchange_ws_queued_frames 0" in txt
    for line in txt.splitlines():       # every sample line: name{labels} number
        if line and not line.startswith("#"):
            float(line.rsplit(" ", 1)[1])
    # cumulative buckets never decrease
    b = [int(x.rsplit(" ", 1)[1]) for x in txt.splitlines()
         if x.startswith('exchange_http_request_seconds_bucket{endpoint="create_order"')]
    assert b == sorted(b) and b[-1] == 1


def test_every_documented_path_answers(ex):
    """/docs describes what the server serves: each documented operation answers (not 404/405)."""
    doc = httpx.get(ex.http.url + "/docs").json()
    assert doc["openapi"].startswith("3.")
    sample = {"order_id": "1099511627777", "symbol": "AAPL"}
    n = 0
    for path, ops in doc["paths"].items():
        target = path.format(**sample)
        for method in ops:
            if path == "/ws":
                continue            # the WebSocket: tests/test_http_ws.py
            body = b"{}" if method == "post" else b""
            h = signed_headers("MM", method.upper(), target, body)
            r = httpx.request(method.upper(), ex.http.url + target, content=body or None, headers=h)
            if path == "/metrics":
                assert r.status_code == 200 and r.text.startswith("# HELP")
            else:
                assert r.status_code not in (404, 405) or r.json()["code"] == "UNKNOWN_ORDER", (method, path, r.text)
                assert "code" in r.json() or path == "/docs"
            n += 1
    assert n >= 12
    # and nothing served under /api is undocumented
    from engine.http.openapi import ROUTES
    assert {p for _, p, *_ in ROUTES} == set(doc["paths"])


def test_query_rate_limit_429_retry_after(tmp_path):
    with running_exchange(tmp_path, query_rate_per_s=1, query_burst=2) as ex:
        mm = Signed(ex.http.url, "MM")
        codes = [mm.get("/api/v1/orders").status_code for _ in range(4)]
        assert codes[:2] == [200, 200] and codes[-1] == 429
        r = mm.get("/api/v1/orders")
        assert r.json()["code"] == "RATE_LIMITED" and int(r.headers["Retry-After"]) >= 1
        # another account has its own bucket
        assert Signed(ex.http.url, "TAKER").get("/api/v1/orders").status_code == 200


def test_order_rate_limit_is_the_risk_bucket_per_account(tmp_path):
    from engine.exchange import Exchange
    from _http_support import exchange_cfg
    cfg = exchange_cfg(tmp_path)
    cfg["risk"] = {"rate_per_s": 1, "burst": 2}
    with Exchange(cfg) as ex:
        mm = Signed(ex.http.url, "MM")
        codes = [mm.post("/api/v1/create_order", _order("BUY", "10", "1")).status_code for _ in range(4)]
        assert codes[:2] == [202, 202] and codes[-1] == 429
        r = mm.post("/api/v1/create_order", _order("BUY", "10", "1"))
        assert r.json()["code"] == "RATE_LIMITED" and "Retry-After" in r.headers


def test_jwt_login_flow(ex):
    base = ex.http.url
    r = httpx.post(base + "/api/v1/login", json={"api_key": "demo-mm", "secret": "demo-mm-secret"})
    assert r.status_code == 200, r.text
    tok = r.json()["data"]["token"]
    r = httpx.post(base + "/api/v1/create_order", json=_order("BUY", "10", "1"),
                   headers={"Authorization": f"Bearer {tok}"})
    assert r.status_code == 202
    r = httpx.get(base + "/api/v1/orders", headers={"Authorization": f"Bearer {tok}"})
    assert len(r.json()["data"]) == 1
    r = httpx.post(base + "/api/v1/login", json={"api_key": "demo-mm", "secret": "wrong"})
    assert r.status_code == 401 and r.json()["code"] == "UNAUTHORIZED"


def test_insecure_dev_auth_header(tmp_path):
    with running_exchange(tmp_path, insecure_dev_auth=True) as ex:
        r = httpx.post(ex.http.url + "/api/v1/create_order", json=_order("BUY", "10", "1"),
                       headers={"X-User-ID": "DEV1"})
        assert r.status_code == 202
        r = httpx.get(ex.http.url + "/api/v1/orders", headers={"X-User-ID": "DEV1"})
        assert len(r.json()["data"]) == 1


def test_config_keys_validated(tmp_path):
    from engine.errors import ConfigError
    from engine.exchange import load_config
    with pytest.raises(ConfigError, match="http.jwt_tll_s .did you mean 'jwt_ttl_s'"):
        load_config(None, {"http.jwt_tll_s": 5})
    with pytest.raises(ConfigError, match="http.port"):
        load_config(None, {"http.port": 70000})
    with pytest.raises(ConfigError, match="insecure_dev_auth"):
        load_config(None, {"http.insecure_dev_auth": "yes"})
    with pytest.raises(ConfigError, match="at least 32"):
        load_config(None, {"http.jwt_secret": "short"})


def test_port_in_use_is_a_startup_error(tmp_path):
    import socket
    from engine.errors import StartupError
    from engine.exchange import Exchange
    from _http_support import exchange_cfg
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    try:
        cfg = exchange_cfg(tmp_path)
        cfg["http"]["port"] = s.getsockname()[1]
        ex = Exchange(cfg)
        with pytest.raises(StartupError, match="HTTP gateway"):
            ex.start()
    finally:
        s.close()


def test_cli_flags_reach_the_http_table(tmp_path):
    from engine.exchange import build_parser, config_from_args
    a = build_parser().parse_args(["--http-port", "0", "--insecure-dev-auth", "--jwt-secret", "k" * 32,
                                   "--data-dir", str(tmp_path)])
    h = config_from_args(a)["http"]
    assert h["port"] == 0 and h["insecure_dev_auth"] is True and h["jwt_secret"] == "k" * 32
    assert "http" not in config_from_args(build_parser().parse_args(["--data-dir", str(tmp_path)])) or \
        not config_from_args(build_parser().parse_args(["--data-dir", str(tmp_path)]))["http"]


def test_signature_binds_the_raw_target(ex):
    """The query string is signed: the same signature on another query is refused."""
    h = signed_headers("MM", "GET", "/api/v1/orders?status=open")
    r = httpx.get(ex.http.url + "/api/v1/orders?status=all", headers=h)
    assert r.status_code == 401 and r.json()["code"] == "INVALID_SIGNATURE"
    h = signed_headers("MM", "GET", "/api/v1/orders?status=open")
    assert httpx.get(ex.http.url + "/api/v1/orders?status=open", headers=h).status_code == 200
