"""POST /api/v1/create_order answers 202 once the order is sequenced and journaled, BEFORE the matching; the
outcome follows on order_updates. The matching step is held back (the engine thread is stopped between the
journal commit and the matching) to prove the 202 does not wait for it."""
from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from _http_support import Signed, journal_size, running_exchange

websockets = pytest.importorskip("websockets", reason="websockets (test extra) is not installed")


def _order(side, price, qty, sym="AAPL", **kw):
    return {"symbol": sym, "side": side, "type": "LIMIT", "price": price, "qty": qty, **kw}


def _hold_matching(ex):
    """Stop the engine thread between the journal commit of each batch and its matching until ``gate`` is
    set; ``journaled`` is set when a batch reached that point."""
    shard = ex.engine._local.shard
    orig = shard.on_journaled
    assert orig is not None, "the pipeline did not install its journaled hook"
    gate, journaled = threading.Event(), threading.Event()

    def slow(rows):
        journaled.set()     # before orig: orig lets the 202 go, and the client may look before a later set()
        orig(rows)
        assert gate.wait(20), "the test never released the matching"
    shard.on_journaled = slow
    return gate, journaled, lambda: setattr(shard, "on_journaled", orig)


def test_202_before_matching(tmp_path):
    """With the engine on its own thread (engine_thread off; "auto" with the default fsync=batch) the matching
    is held back after the journal commit: the 202 still arrives."""
    with running_exchange(tmp_path, engine_thread="off") as ex:
        assert ex.pipeline.early_acks and not ex.http.owns_engine
        mm = Signed(ex.http.url, "MM")
        size0 = journal_size(ex)
        gate, journaled, restore = _hold_matching(ex)
        try:
            t = time.perf_counter()
            r = mm.post("/api/v1/create_order", _order("SELL", "101", "3", cid="early-1"))
            waited = time.perf_counter() - t
            assert r.status_code == 202, r.text
            d = r.json()["data"]
            assert d["status"] == "ACCEPTED" and d["cid"] == "early-1" and int(d["order_id"]) > 0
            assert journaled.is_set() and not gate.is_set()
            # journaled (durable) but not matched: the engine has not produced any event of it yet
            assert journal_size(ex) > size0
            assert ex.http.views.events == 0 and not ex.http.views.open
            assert waited < 10
        finally:
            gate.set()
            restore()
        # read your writes: the order the 202 named is found (the query waits for the engine's events)
        o = mm.get(f"/api/v1/order/{d['order_id']}").json()["data"]
        assert o["status"] == "ACCEPTED" and o["leaves_qty"] == "3" and o["cid"] == "early-1"


@pytest.mark.parametrize("engine_thread", ["on", "off"])
def test_outcome_of_an_early_ack_arrives_on_order_updates(tmp_path, engine_thread):
    """A post-only BUY that would cross is journaled (202), then rejected by the matching: the rejection is on
    order_updates (with the order id of the 202) and counted as a late reject. With the engine on the event
    loop (on) the 202 is decided at the same point (journal commit), written once the batch is matched."""
    with running_exchange(tmp_path, engine_thread=engine_thread) as ex:
        assert ex.http.owns_engine == (engine_thread == "on")
        url = ex.http.url
        mm = Signed(url, "MM")

        async def run():
            ws = await websockets.connect(url.replace("http", "ws") + "/ws")
            from engine.http.auth import sign_request
            ts, nonce = time.time_ns(), "n-early-ws"
            await ws.send(json.dumps({"op": "auth", "api_key": "demo-mm", "ts": str(ts), "nonce": nonce,
                                      "signature": sign_request("demo-mm-secret", ts, "WS", "/ws", nonce, b"")}))
            assert json.loads(await ws.recv())["code"] == 0
            await ws.send(json.dumps({"op": "subscribe", "channels": ["order_updates"]}))
            assert json.loads(await ws.recv())["code"] == 0
            r = await asyncio.to_thread(mm.post, "/api/v1/create_order", _order("SELL", "100", "1", cid="rest"))
            assert r.status_code == 202
            r = await asyncio.to_thread(mm.post, "/api/v1/create_order",
                                        _order("BUY", "100", "1", cid="po", post_only=True))
            assert r.status_code == 202, r.text
            oid = r.json()["data"]["order_id"]
            seen = []
            while not any(m["data"]["order_id"] == oid for m in seen):
                seen.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
            await ws.close()
            return oid, seen
        oid, seen = asyncio.run(run())
        mine = [m["data"] for m in seen if m["data"]["order_id"] == oid]
        assert mine[0]["status"] == "REJECTED" and mine[0]["cid"] == "po", mine
        assert [m["seq"] for m in seen] == list(range(1, len(seen) + 1))
        deadline = time.time() + 5
        while ex.http.late_rejects < 1 and time.time() < deadline:
            time.sleep(0.01)
        assert ex.http.late_rejects == 1
        assert "exchange_http_late_rejects_total 1" in ex.http.metrics_text()


def test_refused_before_sequencing_is_not_202(tmp_path):
    """Risk refusals happen before the journal: an error answer, never a 202, and nothing journaled."""
    with running_exchange(tmp_path) as ex:
        mm = Signed(ex.http.url, "MM")
        size0 = journal_size(ex)
        r = mm.post("/api/v1/create_order", _order("BUY", "1", "2000000"))
        assert r.status_code == 422 and r.json()["code"] == "MAX_QTY"
        assert journal_size(ex) == size0


def test_cancel_right_after_202_finds_the_order(tmp_path):
    """A cancel sent as soon as the 202 arrives (matching held back meanwhile) waits for the order's events
    instead of answering UNKNOWN_ORDER."""
    with running_exchange(tmp_path, engine_thread="off") as ex:
        mm = Signed(ex.http.url, "MM")
        gate, journaled, restore = _hold_matching(ex)
        out = {}
        try:
            r = mm.post("/api/v1/create_order", _order("BUY", "90", "2", cid="c1"))
            assert r.status_code == 202
            oid = r.json()["data"]["order_id"]
            restore()

            def cancel():
                out["r"] = Signed(ex.http.url, "MM").post("/api/v1/cancel_order", {"order_id": oid})
            th = threading.Thread(target=cancel)
            th.start()
            time.sleep(0.2)
            assert "r" not in out          # waiting for the engine's events of the order
        finally:
            gate.set()
            restore()
        th.join(10)
        assert out["r"].status_code == 200, out["r"].text
        assert out["r"].json()["data"]["status"] == "CANCELED"


@pytest.mark.parametrize("fsync,owns", [("none", True), ("interval", True), ("batch", False)])
def test_engine_thread_auto_follows_the_fsync_policy(tmp_path, fsync, owns):
    """engine_thread "auto": the event loop runs the engine unless each batch is fsynced (an fsync would stop
    the loop); orders and queries work either way, and the ZeroMQ door still reaches the same engine."""
    from _http_support import exchange_cfg
    from engine.exchange import Exchange
    cfg = exchange_cfg(tmp_path)
    cfg["engine"] = dict(cfg["engine"], fsync=fsync)
    ex = Exchange(cfg)
    ex.start()
    try:
        assert ex.http.owns_engine == owns
        mm = Signed(ex.http.url, "MM")
        r = mm.post("/api/v1/create_order", _order("SELL", "100", "2", cid="a1"))
        assert r.status_code == 202, r.text
        assert mm.get(f"/api/v1/order/{r.json()['data']['order_id']}").json()["data"]["status"] == "ACCEPTED"
        # another door (in-process, like the FIX/OUCH acceptors) is handed to whichever thread owns the engine
        rep = ex.pipeline.handle("TAKER", None, {"type": "new", "client_order_id": "t1", "symbol": "AAPL",
                                                 "side": "B", "price": 100_000_000_000, "qty": 2})
        assert rep["status"] == "ack" and [e["type"] for e in rep["events"]][:2] == ["accepted", "fill"]
        # the fill came through another door: the HTTP views learn it from the engine's events, delivered to the
        # event loop after the taker's answer (eventually, not before that answer returns)
        oid = r.json()['data']['order_id']
        end = time.monotonic() + 10
        while (st := mm.get(f"/api/v1/order/{oid}").json()["data"]["status"]) != "FILLED" and time.monotonic() < end:
            time.sleep(0.02)
        assert st == "FILLED"
    finally:
        ex.stop()
    assert ex.pipeline._owner is None


def test_engine_thread_bad_value_is_a_config_error(tmp_path):
    from engine.errors import ConfigError
    from engine.exchange import Exchange
    from _http_support import exchange_cfg
    with pytest.raises(ConfigError, match="engine_thread must be auto, on or off"):
        Exchange(exchange_cfg(tmp_path, engine_thread="sometimes"))
