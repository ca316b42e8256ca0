"""The WebSocket door: auth, channels, sequence numbers, depth snapshot + updates, slow consumers."""
from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest

from _http_support import Signed, running_exchange, signed_headers

websockets = pytest.importorskip("websockets", reason="websockets (test extra) is not installed")


def _order(side, price, qty, sym="AAPL"):
    return {"symbol": sym, "side": side, "type": "LIMIT", "price": price, "qty": qty}


async def _recv(ws, timeout=5.0):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def _until(ws, pred, timeout=5.0):
    end = time.monotonic() + timeout
    while True:
        m = await _recv(ws, max(0.01, end - time.monotonic()))
        if pred(m):
            return m


def _ws_url(ex):
    return ex.http.url.replace("http://", "ws://") + "/ws"


def test_ws_auth_subscribe_order_updates_trades_depth(tmp_path):
    with running_exchange(tmp_path) as ex:
        mm, tk = Signed(ex.http.url, "MM"), Signed(ex.http.url, "TAKER")
        mm.post("/api/v1/create_order", _order("SELL", "101", "4"))   # resting before the subscription

        async def run():
            async with websockets.connect(_ws_url(ex)) as ws:
                # private channel before auth: refused
                await ws.send(json.dumps({"op": "subscribe", "channels": ["order_updates"]}))
                m = await _recv(ws)
                assert m["code"] == "UNAUTHORIZED"
                login = ex.http.auth.login("demo-mm", "demo-mm-secret")["token"]
                await ws.send(json.dumps({"op": "auth", "token": login}))
                assert (await _recv(ws))["data"] == {"account": "MM"}
                await ws.send(json.dumps({"op": "subscribe", "channels": [
                    "order_updates", "trades", "depth.AAPL", "bbo.AAPL", "balance_updates", "depth.ZZZ"]}))
                m = await _recv(ws)
                assert m["type"] == "subscribed"
                assert m["data"]["channels"] == ["order_updates", "trades", "depth.AAPL", "bbo.AAPL"]
                assert {r["code"] for r in m["data"]["refused"]} == {"UNSUPPORTED", "UNKNOWN_SYMBOL"}
                snap = await _recv(ws)
                assert snap["channel"] == "depth.AAPL" and snap["type"] == "snapshot"
                assert snap["data"]["asks"] == [["101", "4"]]
                s0 = snap["seq"]
                bbo = await _recv(ws)
                assert bbo["channel"] == "bbo.AAPL" and bbo["data"]["ask"] == "101"
                await asyncio.to_thread(mm.post, "/api/v1/create_order", _order("SELL", "102", "1"))
                await asyncio.to_thread(tk.post, "/api/v1/create_order", _order("BUY", "101", "4"))
                got = []
                while len([m for m in got if m.get("channel") == "order_updates"]) < 2 or \
                        not any(m.get("channel") == "trades" for m in got) or \
                        not any(m.get("channel") == "depth.AAPL" and m["seq"] == s0 + 2 for m in got):
                    try:
                        got.append(await _recv(ws))
                    except asyncio.TimeoutError:
                        raise AssertionError(got)
                ou = [m for m in got if m.get("channel") == "order_updates"]
                assert [(m["data"]["status"], m["data"]["price"]) for m in ou] == [("ACCEPTED", "102"),
                                                                                    ("FILLED", "101")]
                seqs = [m["seq"] for m in ou]
                assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))          # no gap
                tr = [m for m in got if m.get("channel") == "trades"]
                assert tr[0]["data"]["price"] == "101" and tr[0]["data"]["qty"] == "4" and tr[0]["seq"] == 1
                dep = [m for m in got if m.get("channel") == "depth.AAPL"]
                assert [m["seq"] for m in dep] == [s0 + 1, s0 + 2]
                # apply the updates to the snapshot: the book the REST API shows
                asks = dict(map(tuple, snap["data"]["asks"]))
                for m in dep:
                    for px, q in m["data"]["asks"]:
                        if q == "0":
                            asks.pop(px, None)
                        else:
                            asks[px] = q
                rest = await asyncio.to_thread(
                    lambda: Signed(ex.http.url, "MM").c.get("/api/v1/depth/AAPL").json()["data"])
                assert sorted(asks.items()) == sorted(map(tuple, rest["asks"])) == [("102", "1")]
        asyncio.run(run())


def test_ws_hmac_and_dev_auth_refused(tmp_path):
    with running_exchange(tmp_path) as ex:
        async def run():
            async with websockets.connect(_ws_url(ex)) as ws:
                await ws.send(json.dumps({"op": "auth", "user_id": "MM"}))
                assert (await _recv(ws))["code"] == "UNAUTHORIZED"
                h = signed_headers("TAKER", "WS", "/ws")
                await ws.send(json.dumps({"op": "auth", "api_key": h["X-API-KEY"], "ts": h["X-TIMESTAMP"],
                                          "nonce": h["X-NONCE"], "signature": "0" * 64}))
                assert (await _recv(ws))["code"] == "INVALID_SIGNATURE"
                await ws.send(json.dumps({"op": "auth", "api_key": h["X-API-KEY"], "ts": h["X-TIMESTAMP"],
                                          "nonce": h["X-NONCE"], "signature": h["X-SIGNATURE"]}))
                assert (await _recv(ws))["data"] == {"account": "TAKER"}
        asyncio.run(run())


def test_slow_consumer_is_disconnected_not_buffered(tmp_path):
    """A client that subscribes and never reads: its bounded queue fills, it is closed (1008, reason)."""
    with running_exchange(tmp_path, ws_queue=64) as ex:
        hub = ex.http.hub
        s = socket.create_connection(("127.0.0.1", ex.http.port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        time.sleep(0.2)
        payload = json.dumps({"op": "subscribe", "channels": ["depth.AAPL", "trades"]}).encode()
        mask = b"\x00\x00\x00\x00"
        s.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + payload)   # masked text frame (zero mask)
        time.sleep(0.2)
        assert len(hub.conns) == 1
        mm = Signed(ex.http.url, "MM")
        # a fast reader on the same channels must keep up and stay connected
        fast_msgs = []

        async def fast():
            async with websockets.connect(_ws_url(ex)) as ws:
                await ws.send(json.dumps({"op": "subscribe", "channels": ["depth.AAPL"]}))
                try:
                    while True:
                        fast_msgs.append(await _recv(ws, 3.0))
                except asyncio.TimeoutError:
                    return ws.state

        import threading
        res = {}
        t = threading.Thread(target=lambda: res.setdefault("state", asyncio.run(fast())))
        t.start()
        time.sleep(0.3)
        for i in range(100):            # market data for both clients
            mm.post("/api/v1/create_order", {"symbol": "AAPL", "side": "BUY", "type": "LIMIT",
                                             "price": f"{50 + i * 0.01:.2f}", "qty": "1"})
        # the slow client keeps asking (pings) and never reads the answers: its queue must fill
        ping = json.dumps({"op": "ping"}).encode()
        frame = bytes([0x81, 0x80 | len(ping)]) + mask + ping
        s.setblocking(False)
        sent = 0
        end = time.monotonic() + 20
        while not hub.stats["slow_disconnects"] and time.monotonic() < end:
            try:
                s.send(frame * 200)
                sent += 200
            except (BlockingIOError, ConnectionError):
                time.sleep(0.01)
        end = time.monotonic() + 5
        while len(hub.conns) > 1 and time.monotonic() < end:
            time.sleep(0.05)
        assert hub.stats["slow_disconnects"] == 1
        assert all(c.queue.qsize() <= 64 for c in hub.conns)
        t.join()
        assert len([m for m in fast_msgs if m.get("type") == "update"]) == 100   # the reader got everything
        seqs = [m["seq"] for m in fast_msgs if m.get("channel") == "depth.AAPL"]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        s.close()
        assert "exchange_ws_slow_consumer_disconnects_total 1" in ex.http.metrics_text()
