"""HTTP/WebSocket gateway benchmark (engine.http), everything measured in the same run.

    python bench/bench_http.py                 # all parts
    python bench/bench_http.py --libs          # only: aiohttp vs Starlette/uvicorn, constant endpoint
    python bench/bench_http.py --orders 5000 --conns 8 --subscribers 100 --trades 300

Parts
1. libs: a constant endpoint (``GET /ping`` -> ``{"code":0,"msg":"ok","data":1}``) served by aiohttp and by
   Starlette on uvicorn (when installed), each in its own process: sequential round trip (one keep-alive
   connection) and requests/s (``--conns`` concurrent keep-alive connections).
2. orders: ``feedhandler exchange --http-port`` (its own process, HMAC-signed requests, risk rate limit off)
   ``POST /api/v1/create_order`` -> 202: round trip and orders/s, against the bare aiohttp endpoint of part 1
   measured with the same client (target: within 1.5x). Beside them, ``aiohttp_edge_only``: the same
   signed requests to an aiohttp endpoint that only reads the body, checks the HMAC signature and parses
   the JSON, then answers a constant 202 (the edge work no order can skip, on the same library). Orders alternate a SELL of one account (demo-mm) and
   a BUY of another (demo-taker) at one price, so every BUY trades and the book stays small (one account for
   both sides would have self-trade prevention cancel every BUY: nothing would trade). ``--repeat`` repetitions, each: the bare endpoint, then every (fsync policy,
   engine_thread) variant, interleaved; medians and each run's ratios (the machine is shared: compare ratios).
3. fan-out: ``--subscribers`` WebSocket clients on ``trades``; ``--trades`` crossing pairs posted one at a time;
   latency from the taker's POST to each subscriber's receipt, and frames delivered per second.

The client is a raw-socket HTTP/1.1 keep-alive client (asyncio streams): its own cost is small and the same
for both sides of each comparison. Figures: bench/README.md "HTTP gateway".
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from engine.http.auth import sign_request  # noqa: E402

BARE_AIOHTTP = textwrap.dedent("""
    import sys
    from aiohttp import web
    BODY = b'{"code":0,"msg":"ok","data":1}'
    async def ping(request):
        return web.Response(body=BODY, content_type="application/json")
    app = web.Application()
    app.router.add_get("/ping", ping)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
""")
# The edge work every order must do before it reaches any state, on the same library: read the body, check
# the HMAC signature (engine.http.auth's scheme, the secret looked up by key), parse the JSON object; then a
# constant 202. What create_order costs above this is the venue (nonce memory, rate limits, validation,
# risk, balances, sequencing, journal, matching, replies, views, market data).
EDGE_AIOHTTP = textwrap.dedent("""
    import hmac, json, sys
    from aiohttp import web
    from engine.http.auth import sign_request
    SECRETS = {"demo-mm": "demo-mm-secret", "demo-taker": "demo-taker-secret"}
    BODY = b'{"code":0,"msg":"ok","data":{"order_id":1,"status":"ACCEPTED"}}'
    async def create_order(request):
        body = await request.read()
        h = request.headers
        secret = SECRETS[h["X-API-KEY"]]
        want = sign_request(secret, int(h["X-TIMESTAMP"]), request.method, request.raw_path, h["X-NONCE"], body)
        if not hmac.compare_digest(want, h["X-SIGNATURE"]):
            raise web.HTTPUnauthorized()
        obj = json.loads(body)
        assert isinstance(obj, dict) and obj["symbol"]
        return web.Response(body=BODY, status=202, content_type="application/json")
    app = web.Application()
    app.router.add_post("/api/v1/create_order", create_order)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
""")
BARE_STARLETTE = textwrap.dedent("""
    import sys, uvicorn
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route
    BODY = b'{"code":0,"msg":"ok","data":1}'
    async def ping(request):
        return Response(BODY, media_type="application/json")
    app = Starlette(routes=[Route("/ping", ping)])
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="error", access_log=False)
""")


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port: int, proc, timeout=20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.communicate()[1][-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


class Conn:
    """One keep-alive HTTP/1.1 connection (asyncio streams)."""

    def __init__(self, port: int):
        self.port = port

    async def open(self):
        self.r, self.w = await asyncio.open_connection("127.0.0.1", self.port)
        return self

    async def request(self, method: str, target: str, body: bytes = b"", headers: dict | None = None):
        h = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.w.write(f"{method} {target} HTTP/1.1\r\nHost: b\r\nContent-Length: {len(body)}\r\n{h}\r\n".encode() + body)
        head = await self.r.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        m = re.search(rb"(?i)content-length: *(\d+)", head)
        n = int(m.group(1)) if m else 0
        return status, await self.r.readexactly(n)

    def close(self):
        self.w.close()


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] if xs else 0


async def measure(port: int, make_request, n: int, conns: int) -> dict:
    """Sequential round trips on one connection (n // 4 of them), then n requests over ``conns`` connections."""
    c = await Conn(port).open()
    for i in range(200):                                   # warm up
        await c.request(*make_request(i))
    rtts = []
    for i in range(n // 4):
        args = make_request(10_000_000 + i)
        t = time.perf_counter_ns()
        st, _ = await c.request(*args)
        rtts.append(time.perf_counter_ns() - t)
        assert st in (200, 202), st
    c.close()
    cs = [await Conn(port).open() for _ in range(conns)]
    statuses: dict[int, int] = {}
    # the requests are made (signed) before the clock starts: the client's own signing work would otherwise
    # count against the signed contenders only (the bare endpoint's request is a constant)
    reqs = [make_request(20_000_000 + i) for i in range(n)]

    async def worker(k: int, cc: Conn):
        for i in range(k, n, conns):
            st, _ = await cc.request(*reqs[i])
            statuses[st] = statuses.get(st, 0) + 1
    t = time.perf_counter()
    await asyncio.gather(*(worker(k, cc) for k, cc in enumerate(cs)))
    dt = time.perf_counter() - t
    for cc in cs:
        cc.close()
    return {"rtt_p50_us": pct(rtts, 50) / 1e3, "rtt_p99_us": pct(rtts, 99) / 1e3, "per_s": n / dt,
            "statuses": statuses}


async def engine_counts(port: int) -> dict:
    """Executions routed and orders left open, from the exchange's /metrics: with the orders crossing, about
    one execution per two orders and (almost) nothing left open."""
    c = await Conn(port).open()
    st, body = await c.request("GET", "/metrics", b"", None)
    c.close()
    text = body.decode()
    m = re.search(r'exchange_pipeline_total\{what="execs_routed"\} (\d+)', text)
    o = re.search(r"^exchange_open_orders (\d+)", text, re.M)
    return {"execs_routed": int(m.group(1)) if m else -1, "open_orders_at_end": int(o.group(1)) if o else -1}


def ping_request(i):
    return ("GET", "/ping", b"", None)


def start_bare(code: str):
    port = free_port()
    p = subprocess.Popen([sys.executable, "-c", code, str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True)
    wait_port(port, p)
    return p, port


def start_exchange(tmp: str, fsync: str = "batch", engine_thread: str = "auto"):
    cfg = Path(tmp) / "bench.toml"
    cfg.write_text('symbols = ["AAPL"]\n[risk]\nrate_per_s = 0\nmax_order_qty = 1000000\n'
                   '[http]\nquery_rate_per_s = 0\nws_queue = 100000\n'
                   f'engine_thread = "{engine_thread}"\n')
    exe = Path(sys.executable).parent / "feedhandler"
    p = subprocess.Popen([str(exe), "exchange", "--config", str(cfg), "--port", "0", "--md-port", "0",
                          "--http-port", "0", "--fsync", fsync, "--data-dir", str(Path(tmp) / "data")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, PYTHONUNBUFFERED="1"))
    line = p.stdout.readline()
    m = re.search(r"http=http://127.0.0.1:(\d+)", line)
    if not m:
        p.kill()
        raise RuntimeError(f"exchange did not start: {line} {p.communicate()[1][-2000:]}")
    return p, int(m.group(1))


MAKER, TAKER = ("demo-mm", "demo-mm-secret"), ("demo-taker", "demo-taker-secret")


def order_request(account_key=MAKER, crossing=None):
    """Order i: a SELL (even i) from ``account_key``, a BUY (odd i) from ``crossing`` when given (two
    accounts: every BUY trades with the SELL before it), else from ``account_key`` too."""
    def make(i):
        key, secret = crossing if (crossing is not None and i % 2) else account_key
        body = json.dumps({"symbol": "AAPL", "side": "BUY" if i % 2 else "SELL", "type": "LIMIT",
                           "price": "100", "qty": "1"}).encode()
        ts = time.time_ns()
        nonce = secrets.token_hex(8)
        return ("POST", "/api/v1/create_order", body,
                {"X-API-KEY": key, "X-TIMESTAMP": ts, "X-NONCE": nonce,
                 "X-SIGNATURE": sign_request(secret, ts, "POST", "/api/v1/create_order", nonce, body),
                 "Content-Type": "application/json"})
    return make


def stop(p):
    p.terminate()
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


async def fanout(port: int, subscribers: int, trades: int) -> dict:
    import websockets
    subs = []
    for _ in range(subscribers):
        ws = await websockets.connect(f"ws://127.0.0.1:{port}/ws", max_queue=None)
        await ws.send(json.dumps({"op": "subscribe", "channels": ["trades"]}))
        assert json.loads(await ws.recv())["code"] == 0
        subs.append(ws)
    recv_at: list[list[int]] = [[] for _ in subs]

    async def reader(k, ws):
        while len(recv_at[k]) < trades:
            json.loads(await ws.recv())
            recv_at[k].append(time.perf_counter_ns())
    readers = [asyncio.ensure_future(reader(k, ws)) for k, ws in enumerate(subs)]
    c = await Conn(port).open()
    mk_s, mk_b = order_request(), order_request(TAKER)
    sent = []
    t0 = time.perf_counter()
    for i in range(trades):
        await c.request(*mk_s(0))                        # resting SELL (i=0: SELL)
        sent.append(time.perf_counter_ns())
        await c.request(*mk_b(1))                        # crossing BUY: one trade to every subscriber
        await asyncio.sleep(0)
    await asyncio.wait_for(asyncio.gather(*readers), 60)
    dt = time.perf_counter() - t0
    lat = [recv_at[k][i] - sent[i] for k in range(len(subs)) for i in range(trades)]
    for ws in subs:
        await ws.close()
    c.close()
    return {"subscribers": subscribers, "trades": trades, "frames": subscribers * trades,
            "frames_per_s": subscribers * trades / dt, "lat_p50_ms": pct(lat, 50) / 1e6,
            "lat_p99_ms": pct(lat, 99) / 1e6}


def main(argv=None):
    import statistics

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--libs", action="store_true", help="only part 1")
    ap.add_argument("--requests", type=int, default=8000, help="requests per bare measurement (default 8000)")
    ap.add_argument("--orders", type=int, default=8000, help="orders per create_order measurement (default 8000)")
    ap.add_argument("--conns", type=int, default=8, help="concurrent connections for orders/s (default 8)")
    ap.add_argument("--subscribers", type=int, default=100, help="WebSocket fan-out subscribers (default 100)")
    ap.add_argument("--trades", type=int, default=200, help="trades of the fan-out part (default 200)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="repetitions, each: bare, then every create_order variant (interleaved); medians")
    ap.add_argument("--fsync", default="batch,none",
                    help="journal fsync policies to run the order part with (comma-separated; default batch,none)")
    ap.add_argument("--engine-thread", default="auto",
                    help="[http] engine_thread values to run (comma-separated auto,on,off: off is the engine "
                         "on the ZeroMQ gateway's worker, one thread hop each way; default auto)")
    a = ap.parse_args(argv)
    out: dict = {}
    runs: dict[str, list] = {}

    def bare():
        p, port = start_bare(BARE_AIOHTTP)
        try:
            return asyncio.run(measure(port, ping_request, a.requests, a.conns))
        finally:
            stop(p)
    if a.libs:
        out["aiohttp_bare"] = bare()
        try:
            import starlette  # noqa: F401
            import uvicorn  # noqa: F401
            p, port = start_bare(BARE_STARLETTE)
            try:
                out["starlette_uvicorn_bare"] = asyncio.run(measure(port, ping_request, a.requests, a.conns))
            finally:
                stop(p)
        except ImportError:
            out["starlette_uvicorn_bare"] = "not installed"
        print(json.dumps(out, indent=1, default=lambda x: round(x, 2) if isinstance(x, float) else str(x)))
        return
    variants = [(f, et.strip()) for f in a.fsync.split(",") for et in a.engine_thread.split(",")]
    for r in range(a.repeat):
        b = bare()
        runs.setdefault("aiohttp_bare", []).append(b)
        p, port = start_bare(EDGE_AIOHTTP)
        try:
            e = asyncio.run(measure(port, order_request(MAKER, TAKER), a.orders, a.conns))
        finally:
            stop(p)
        e["ratio_rtt_p50"] = e["rtt_p50_us"] / b["rtt_p50_us"]
        e["ratio_throughput"] = b["per_s"] / e["per_s"]
        runs.setdefault("aiohttp_edge_only", []).append(e)
        for fsync, et in variants:
            name = f"create_order_fsync_{fsync}" + ("" if et == "auto" else f"_engine_thread_{et}")
            with tempfile.TemporaryDirectory() as tmp:
                p, port = start_exchange(tmp, fsync, et)
                try:
                    o = asyncio.run(measure(port, order_request(MAKER, TAKER), a.orders, a.conns))
                    o.update(asyncio.run(engine_counts(port)))   # proof that the orders traded
                    if r == 0 and "ws_fanout" not in out and a.subscribers > 0:
                        out["ws_fanout"] = asyncio.run(fanout(port, a.subscribers, a.trades))
                finally:
                    stop(p)
            o["ratio_rtt_p50"] = o["rtt_p50_us"] / b["rtt_p50_us"]
            o["ratio_throughput"] = b["per_s"] / o["per_s"]
            runs.setdefault(name, []).append(o)
    for name, rs in runs.items():
        med = {k: statistics.median(x[k] for x in rs) for k in rs[0] if k != "statuses"}
        med["runs"] = len(rs)
        st: dict = {}
        for x in rs:
            for k, v in x["statuses"].items():
                st[k] = st.get(k, 0) + v
        med["statuses"] = st
        if name != "aiohttp_bare":
            med["ratio_rtt_p50_each"] = [round(x["ratio_rtt_p50"], 2) for x in rs]
            med["ratio_throughput_each"] = [round(x["ratio_throughput"], 2) for x in rs]
        out[name] = med
    print(json.dumps(out, indent=1, default=lambda x: round(x, 2) if isinstance(x, float) else str(x)))


if __name__ == "__main__":
    main()
