"""The cost of POST /api/v1/create_order with the engine on the HTTP event loop (issue 11): what the request
path no longer does, and that what it still promises holds.

- An order alone in its loop iteration runs the engine at once (no bell, no extra loop iterations); orders
  that arrive together still share engine batches.
- The engine's answer reaches the request without the WebSocket hub's hand-off; the hub hands off only
  messages of channels someone subscribed to, and every stream's counter advances whoever listens.
- The views keep raw values and format them when read (the same answers as before).
- glibc's mmap threshold is fixed above asyncio's 256 KiB read buffer (engine.http.malloc).
"""
from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from _http_support import KEYS, Signed, engine_seq, running_exchange, signed_headers

websockets = pytest.importorskip("websockets", reason="websockets (test extra) is not installed")


def _order(side, price="100", qty="1", sym="AAPL", **kw):
    return {"symbol": sym, "side": side, "type": "LIMIT", "price": price, "qty": qty, **kw}


def _count_calls(obj, name):
    calls = []
    orig = getattr(obj, name)

    def wrapped(*a, **kw):
        calls.append(threading.get_ident())
        return orig(*a, **kw)
    setattr(obj, name, wrapped)
    return calls


def test_sequential_orders_run_the_engine_inline_and_skip_the_hub(tmp_path):
    """One order at a time, nobody on the WebSocket: no bell for a later drain, no hand-off to the hub (the
    old path rang the bell and handed every reply and every event list to the hub: one dispatch per order)."""
    with running_exchange(tmp_path, engine_thread="on") as ex:
        gw = ex.http
        assert gw.owns_engine
        mm = Signed(gw.url, "MM")
        r = mm.post("/api/v1/create_order", _order("SELL", cid="warm"))
        assert r.status_code == 202, r.text
        seq0 = engine_seq(ex)              # a query: through the engine queue (and its bell)
        bells = _count_calls(ex.pipeline, "_bell")
        handoffs = _count_calls(gw.hub, "hand_off")
        oids = []
        for i in range(20):
            buy = i % 2 == 1                # buys below the sells: nothing trades
            r = mm.post("/api/v1/create_order", _order("BUY" if buy else "SELL", price=str(50 + i if buy else 200 + i),
                                                       cid=f"s{i}"))
            assert r.status_code == 202, r.text
            d = r.json()["data"]
            assert d["status"] == "ACCEPTED" and d["cid"] == f"s{i}"
            oids.append(d["order_id"])
        assert bells == [] and handoffs == []
        assert engine_seq(ex) >= seq0 + 20
        # read your writes: every order the 202 named is in the views, formatted as before
        o = mm.get(f"/api/v1/order/{oids[3]}").json()["data"]
        assert o == {"order_id": oids[3], "cid": "s3", "symbol": "AAPL", "side": "BUY", "type": "LIMIT",
                     "price": "53", "qty": "1", "filled_qty": "0", "leaves_qty": "1", "status": "ACCEPTED",
                     "created_at": o["created_at"], "updated_at": o["created_at"], "seq": o["seq"]}
        assert abs(o["created_at"] - time.time() * 1000) < 60_000
        mm.close()


def test_concurrent_orders_share_engine_batches(tmp_path):
    """Orders that reach the loop together are queued for one drain (one engine call and journal write for
    several): 16 connections with 8 orders each, every one answered 202, fewer drains than orders."""
    with running_exchange(tmp_path, engine_thread="on") as ex:
        gw = ex.http
        sizes = []
        orig = ex.pipeline.drain

        def drain(*a, **kw):
            n = orig(*a, **kw)
            sizes.append(n)
            return n
        ex.pipeline.drain = drain
        host, port = "127.0.0.1", gw.port

        async def conn(k):
            r, w = await asyncio.open_connection(host, port)
            out = []
            for i in range(8):
                body = json.dumps(_order("BUY" if (k + i) % 2 else "SELL", price=str(50 + k),
                                         cid=f"c{k}-{i}")).encode()
                h = signed_headers("MM", "POST", "/api/v1/create_order", body)
                head = "".join(f"{a}: {b}\r\n" for a, b in h.items())
                w.write(f"POST /api/v1/create_order HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
                        f"{head}\r\n".encode() + body)
                resp = await r.readuntil(b"\r\n\r\n")
                n = int(resp.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                out.append((int(resp[9:12]), json.loads(await r.readexactly(n))))
            w.close()
            return out

        async def run():
            return await asyncio.gather(*(conn(k) for k in range(16)))
        res = [x for c in asyncio.run(run()) for x in c]
        assert len(res) == 128 and all(st == 202 for st, _ in res), res[:3]
        assert len({b["data"]["order_id"] for _, b in res}) == 128
        assert max(sizes, default=0) > 1 and len(sizes) < 128, sizes


def test_streams_count_while_nobody_listens(tmp_path):
    """order_updates and trades are counted while nobody subscribes (nothing is handed to the loop for them);
    a later subscriber gets the next numbers, consecutive from there, and the 202s never wait for it."""
    with running_exchange(tmp_path, engine_thread="on") as ex:
        url = ex.http.url
        mm, tk = Signed(url, "MM"), Signed(url, "TAKER")
        for i in range(3):                  # 3 resting sells, 3 crossing buys: 12 order events for the two
            assert mm.post("/api/v1/create_order", _order("SELL", cid=f"r{i}")).status_code == 202
            assert tk.post("/api/v1/create_order", _order("BUY", cid=f"t{i}")).status_code == 202
        hub = ex.http.hub
        assert hub._trade_seq == 3 and hub._acct_seq["MM"] >= 6 and hub._acct_seq["TAKER"] >= 6
        assert hub.stats["dispatch_batches"] == 0      # nothing was handed to the loop for nobody
        trades0, mm0 = hub._trade_seq, hub._acct_seq["MM"]

        async def run():
            from engine.http.auth import sign_request
            ws = await websockets.connect(url.replace("http", "ws") + "/ws")
            key, sec = KEYS["MM"]
            ts, nonce = time.time_ns(), "n-path-ws"
            await ws.send(json.dumps({"op": "auth", "api_key": key, "ts": str(ts), "nonce": nonce,
                                      "signature": sign_request(sec, ts, "WS", "/ws", nonce, b"")}))
            assert json.loads(await ws.recv())["code"] == 0
            await ws.send(json.dumps({"op": "subscribe", "channels": ["order_updates", "trades"]}))
            assert json.loads(await ws.recv())["code"] == 0
            for i in range(2):
                r = await asyncio.to_thread(mm.post, "/api/v1/create_order", _order("SELL", cid=f"r2{i}"))
                assert r.status_code == 202
                r = await asyncio.to_thread(tk.post, "/api/v1/create_order", _order("BUY", cid=f"t2{i}"))
                assert r.status_code == 202
            got = []
            while sum(1 for m in got if m["channel"] == "trades") < 2 or \
                    sum(1 for m in got if m["channel"] == "order_updates") < 4:
                got.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
            await ws.close()
            return got
        got = asyncio.run(run())
        assert [m["seq"] for m in got if m["channel"] == "trades"] == [trades0 + 1, trades0 + 2]
        ours = [m["seq"] for m in got if m["channel"] == "order_updates"]
        assert ours == list(range(mm0 + 1, mm0 + 1 + len(ours))), (mm0, ours)
        mm.close()
        tk.close()


@pytest.mark.parametrize("engine_thread", ["on", "off"])
def test_views_format_every_state_as_before(tmp_path, engine_thread):
    """Partial fill, amend, cancel and a trade, read back through the REST queries (the views now format
    when read): the strings and statuses of the API."""
    with running_exchange(tmp_path, engine_thread=engine_thread) as ex:
        url = ex.http.url
        mm, tk = Signed(url, "MM"), Signed(url, "TAKER")
        a = mm.post("/api/v1/create_order", _order("SELL", price="101.25", qty="10", cid="a")).json()["data"]
        b = mm.post("/api/v1/create_order", _order("SELL", price="102", qty="5", cid="b")).json()["data"]
        t = tk.post("/api/v1/create_order", _order("BUY", price="101.25", qty="4", cid="t")).json()["data"]
        r = mm.post("/api/v1/amend_order", {"order_id": b["order_id"], "price": "102.5", "qty": "3"})
        assert r.status_code == 200, r.text
        r = mm.post("/api/v1/cancel_order", {"cid": "a"})
        assert r.status_code == 200, r.text
        oa = mm.get(f"/api/v1/order/{a['order_id']}").json()["data"]
        assert (oa["status"], oa["price"], oa["qty"], oa["filled_qty"], oa["leaves_qty"], oa["side"], oa["type"]) \
            == ("CANCELED", "101.25", "10", "4", "0", "SELL", "LIMIT")
        ob = mm.get(f"/api/v1/order/{b['order_id']}").json()["data"]
        assert (ob["status"], ob["price"], ob["qty"], ob["leaves_qty"]) == ("ACCEPTED", "102.5", "3", "3")
        ot = tk.get(f"/api/v1/order/{t['order_id']}").json()["data"]
        assert (ot["status"], ot["filled_qty"], ot["leaves_qty"], ot["side"]) == ("FILLED", "4", "0", "BUY")
        assert mm.get(f"/api/v1/order/{t['order_id']}").json()["code"] == "UNKNOWN_ORDER"
        opened = mm.get("/api/v1/orders?status=open").json()["data"]
        assert [o["cid"] for o in opened] == ["b"]
        every = mm.get("/api/v1/orders").json()["data"]
        assert [o["cid"] for o in every] == ["a", "b"] and all("account" not in o for o in every)
        trades = mm.get("/api/v1/trades?symbol=AAPL").json()["data"]
        assert len(trades) == 1
        tr = trades[0]
        assert (tr["symbol"], tr["price"], tr["qty"], tr["taker_side"]) == ("AAPL", "101.25", "4", "BUY")
        assert isinstance(tr["ts"], int) and isinstance(tr["seq"], int) and tr["trade_id"].isdigit()
        assert mm.get(f"/api/v1/trades?symbol=AAPL&since={tr['ts'] + 1}").json()["data"] == []
        mm.close()
        tk.close()


_PROBE = """
import ctypes, ctypes.util, sys
libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                 "fsmblks", "uordblks", "fordblks", "keepcost")]
try:
    info = libc.mallinfo2
except AttributeError:
    print("skip"); sys.exit(0)
info.restype = MallInfo2
if sys.argv[1] == "tuned":
    from engine.http import malloc
    print(malloc.tune())
before = info().hblks
held = [bytearray(256 * 1024) for _ in range(4)]
print(info().hblks - before)
"""


def _probe(mode: str) -> list[str]:
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_malloc_thresholds_keep_read_buffers_off_mmap():
    """A fresh process: glibc mmaps each 256 KiB block (asyncio's socket read buffer size: its default
    threshold is 128 KiB until a larger mmapped block is freed); after engine.http.malloc.tune none is."""
    from engine.http import malloc
    default = _probe("default")
    if default == ["skip"]:
        pytest.skip("not glibc >= 2.33 (no mallinfo2): nothing to observe")
    assert default == ["4"]
    tuned = _probe("tuned")
    assert tuned[-1] == "0" and tuned[0] == f"mmap_threshold={malloc.MMAP_THRESHOLD}", tuned
    assert malloc.tune() is malloc.tune()               # once per process


def test_whole_chunked_body_is_taken_at_once_and_still_limited(tmp_path):
    """A body without Content-Length that arrived whole (one write, chunked) is taken without the read loop:
    within the limit it is an order like any other, beyond it PAYLOAD_TOO_LARGE (413) as read() says."""
    with running_exchange(tmp_path, engine_thread="on", max_body=4096) as ex:
        port = ex.http.port

        async def post(body: bytes):
            r, w = await asyncio.open_connection("127.0.0.1", port)
            h = signed_headers("MM", "POST", "/api/v1/create_order", body)
            head = "".join(f"{a}: {b}\r\n" for a, b in h.items())
            w.write(f"POST /api/v1/create_order HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n{head}\r\n"
                    .encode() + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n")
            resp = await r.readuntil(b"\r\n\r\n")
            n = int(resp.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            out = int(resp[9:12]), json.loads(await r.readexactly(n))
            w.close()
            return out
        ok = json.dumps(_order("SELL", cid="chunked")).encode()
        st, b = asyncio.run(post(ok))
        assert st == 202 and b["data"]["cid"] == "chunked", b
        big = json.dumps(_order("SELL", cid="big", pad="x" * 5000)).encode()
        st, b = asyncio.run(post(big))
        assert st == 413 and b["code"] == "PAYLOAD_TOO_LARGE" and "4096" in b["msg"], b
        assert ex.http.views.events == 1              # only the first order reached the engine
