"""Gateway benchmark: client -> ACK round trip and sustained orders/s over TCP loopback, next to a bare
pyzmq ROUTER/DEALER echo measured in the same run.

    python bench/bench_gateway.py [--n 6000] [--seconds 6] [--window 32] [--workers 2] [--rounds 3] [--json]

Each server runs in its own process (spawn), the client in this one; all are measured in interleaved
rounds so that load from other tenants of this shared machine hits them alike:

* ``echo``: a ROUTER that sends every multipart message straight back (the floor for any ZeroMQ service
  written in Python: one recv_multipart + one send_multipart per request);
* ``proxy_echo``: the gateway's socket layout with nothing in it (ROUTER -> zmq.proxy -> inproc DEALER ->
  one Python worker echoing): what the architecture itself costs over ``echo``;
* ``protocol_floor``: the same layout, the worker doing only what any request costs whatever the exchange
  behind it (HMAC check, JSON decode, a reply of the real shape JSON-encoded and sent): the floor of a
  Python gateway speaking this protocol;
* ``gateway``: the real path: ROUTER -> proxy -> worker (HMAC check, JSON, risk) -> engine input queue ->
  engine thread (worker 0: EngineManager, no journal) -> ACK, then market data on the PUB. The client signs
  every request (engine.auth).
* ``gateway_null``: the same gateway with an engine stub that accepts everything and keeps no book, to
  separate the gateway's own cost from the matching engine's.

``--inprocess-n`` adds the server-side cost of one request without ZeroMQ (``Gateway._handle`` called in
process), hot and after 100 us of idle before each request, as in the latency phase.

Latency: one request in flight, ``--n`` round trips after a warm-up; p50/p90/p99 in microseconds, pooled
over the rounds, plus the gateway/echo ratio of each round. Throughput: ``--window`` requests kept in
flight for ``--seconds`` (split over the rounds); ACKs per second, median of the rounds. The order flow is
new limit orders away from the touch followed by their cancels, so every request is acknowledged and the
book stays small. Numbers are the host's: the machine is shared and its hypervisor steals time, so
report medians and p99 together (see bench/README.md).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time

import zmq

from engine.gateway import dumpb, loads   # the protocol's JSON codec (orjson when installed)
from feedhandler.cliopts import positive_int

PX = 1_000_000_000


def echo_server(ready, stop_ev, port_q):
    ctx = zmq.Context()
    s = ctx.socket(zmq.ROUTER)
    port = s.bind_to_random_port("tcp://127.0.0.1")
    port_q.put(port)
    ready.set()
    poller = zmq.Poller()
    poller.register(s, zmq.POLLIN)
    while not stop_ev.is_set():
        if poller.poll(100):
            while True:
                try:
                    s.send_multipart(s.recv_multipart(zmq.NOBLOCK))
                except zmq.Again:
                    break
    s.close(0)
    ctx.term()


def proxy_echo_server(ready, stop_ev, port_q, floor=False):
    """The gateway's socket architecture: ROUTER -> zmq.proxy -> inproc DEALER -> one Python worker thread.

    ``floor=False`` (``proxy_echo``): the worker sends every message back, nothing else (the floor of the
    architecture). ``floor=True`` (``protocol_floor``): the worker does the protocol work every request
    needs whatever the exchange behind it, with the gateway's own code: HMAC check (engine.auth), JSON
    decode, a reply of the real shape (one ``accepted`` event) JSON-encoded and sent back. No validation,
    dedup, risk, engine, market data or latency stamps: what is left of the 1.3x budget for those."""
    import threading

    from engine.auth import Authenticator, KeyStore
    from engine.zmqio import recv_frames, send2

    auth = Authenticator(KeyStore({"demo-mm": (b"demo-mm-secret", "MM")}))
    ctx = zmq.Context()
    front = ctx.socket(zmq.ROUTER)
    port = front.bind_to_random_port("tcp://127.0.0.1")
    back = ctx.socket(zmq.DEALER)
    back.bind("inproc://bench-back")

    def protocol(s):
        ident, key, ts, sig, body = recv_frames(s)
        account = auth.verify(key, ts, sig, body)
        req = loads(body)
        protocol.n += 1
        ev = {"type": "accepted", "seq": protocol.n, "order_id": (1 << 40) | protocol.n,
              "client_order_id": req.get("client_order_id", ""), "request_client_order_id": req.get("client_order_id", ""),
              "account": account, "symbol": req.get("symbol", "AAPL"), "side": req.get("side", "B"),
              "price": req.get("price", 0), "qty": req.get("qty", 0), "leaves_qty": req.get("qty", 0), "cum_qty": 0,
              "trade_id": 0, "liquidity": "", "contra_account": "", "contra_order_id": 0, "reason": "",
              "ts_event": time.time_ns()}
        send2(s, ident, dumpb({"rid": req.get("rid"), "status": "ack", "events": [ev]}))
    protocol.n = 0

    def worker():
        s = ctx.socket(zmq.DEALER)
        s.connect("inproc://bench-back")
        poller = zmq.Poller()
        poller.register(s, zmq.POLLIN)
        while not stop_ev.is_set():
            if poller.poll(100):
                if floor:
                    protocol(s)
                else:
                    s.send_multipart(s.recv_multipart())
        s.close(0)

    def proxy():
        try:
            zmq.proxy(front, back)
        except zmq.ContextTerminated:
            pass

    threading.Thread(target=worker, daemon=True).start()
    threading.Thread(target=proxy, daemon=True).start()
    port_q.put(port)
    ready.set()
    stop_ev.wait()


class NullEngine:
    """Answers every request with one ``accepted`` event and keeps no book: isolates the gateway's own cost."""

    def __init__(self):
        self.n = 0

    def submit(self, req):
        self.n += 1
        return [{"type": "accepted", "seq": self.n, "order_id": self.n, "client_order_id": req.get("client_order_id", ""),
                 "account": req["account"], "symbol": req.get("symbol", "AAPL"), "side": req.get("side", "B"),
                 "price": req.get("price", 0), "qty": req.get("qty", 0), "leaves_qty": 0, "cum_qty": 0,
                 "trade_id": 0, "liquidity": "", "contra_account": "", "contra_order_id": 0, "reason": "",
                 "ts_event": 0}]

    def submit_many(self, reqs):
        return [self.submit(r) for r in reqs]


def bench_exchange(workers, null_engine=False):
    """The exchange every gateway contender runs: two symbols, no journal, no rate limit or price band."""
    import tempfile

    from engine.exchange import Exchange, load_config
    cfg = load_config(None, {"data_dir": tempfile.mkdtemp(prefix="fh-bench-gw-"),
                             "gateway.endpoint": "tcp://127.0.0.1:*", "marketdata.endpoint": "tcp://127.0.0.1:*",
                             "gateway.workers": workers, "engine.fsync": "none", "engine.journal": False})
    cfg["symbols"] = ["AAPL", "MSFT"]
    cfg["risk"] = {"rate_per_s": 0, "bytes_per_s": 0, "price_band_bps": 0}
    ex = Exchange(cfg)
    if null_engine:
        ex.pipeline.engine = NullEngine()
    return ex


def gateway_server(ready, stop_ev, port_q, workers, null_engine=False):
    ex = bench_exchange(workers, null_engine)
    ex.start()
    port_q.put(int(ex.gateway.endpoint.rsplit(":", 1)[1]))
    ready.set()
    stop_ev.wait()
    ex.pipeline.flush_latency()
    stages = {k: {"p50_us": round(v["p50_ns"] / 1000, 1), "p99_us": round(v["p99_ns"] / 1000, 1)}
              for k, v in ex.latency.stats().items()}
    port_q.put(stages)
    ex.stop()


class _CapturedSocket:
    """Stands in for the worker's DEALER in the in-process measurement: keeps the last frame sent."""

    def __init__(self):
        self.last = b""

    def send(self, data, flags=0, copy=True, track=False):
        self.last = data


def inprocess(null_engine, n, gap_s):
    """Server-side cost of one request without ZeroMQ: ``Gateway._handle`` (auth, JSON, validation, dedup,
    risk, engine, reply, market data) on signed new/cancel requests, one at a time, in this thread (made
    the engine thread). With ``gap_s`` > 0 the thread sleeps that long before every request, as a server
    does between the round trips of the latency phase: the code then runs on cold caches."""
    import engine.gateway.front as G
    from engine.auth import sign

    ex = bench_exchange(1, null_engine)
    ex.start()
    gw = ex.gateway
    gw.stop()                          # its threads go; this thread owns the engine instead
    sock = _CapturedSocket()
    gw._tls.sock = sock
    ex.pipeline.attach(lambda: None)
    send2_was = G._send2
    G._send2 = lambda s, ident, body, flags=0: s.send(body)     # the reply frame, captured
    to_cancel, costs = [], []
    try:
        for i in range(1, n + 1):
            if to_cancel and i % 2 == 0:
                req = {"type": "cancel", "rid": f"r{i}", "order_id": to_cancel.pop(0)}
            else:
                req = {"type": "new", "rid": f"r{i}", "client_order_id": f"c{i}", "symbol": "AAPL", "side": "B",
                       "price": 90 * PX + (i % 50) * 10_000_000, "qty": 10, "tif": "day"}
            body = dumpb(req)
            ts = time.time_ns()
            frames = [b"ident", b"demo-mm", str(ts).encode(), sign(b"demo-mm-secret", ts, body), body]
            if gap_s:
                time.sleep(gap_s)
            t0 = time.perf_counter_ns()
            gw._handle(sock, [frames])
            costs.append(time.perf_counter_ns() - t0)
            r = loads(sock.last)
            if r.get("status") != "ack":
                raise RuntimeError(f"not acknowledged: {r}")
            evs = r.get("events") or []
            if evs and evs[0]["type"] == "accepted":
                to_cancel.append(evs[0]["order_id"])
    finally:
        G._send2 = send2_was
        ex.pipeline.detach()
        ex.stop()
    warm = costs[len(costs) // 10:]
    return round(statistics.median(warm) / 1000, 1)


def run_inprocess(args):
    """Median server-side request cost (us), hot and after an idle gap, in a pinned child process each."""
    ctx = mp.get_context("spawn")
    out = {}
    for kind, null in (("gateway", False), ("gateway_null", True)):
        for label, gap in (("hot", 0.0), ("after_100us_idle", 0.0001)):
            with ctx.Pool(1) as pool:
                out[f"{kind}_{label}_us"] = pool.apply(_pinned_call, (inprocess, args.server_cpus, null,
                                                                       args.inprocess_n, gap))
    return out


def _pinned_call(fn, cpus, *args):
    if cpus:
        os.sched_setaffinity(0, cpus)
    return fn(*args)


def pct(v, p):
    s = sorted(v)
    return s[min(len(s) - 1, int(len(s) * p / 100))]


class EchoClient:
    """The same client code as GatewayClient (engine.client.Client: sign, four frames) against an echo; it
    reads the echoed frames back, so the client side costs the same in every contender."""

    def __init__(self, port):
        from engine.client import Client
        self.c = Client(f"tcp://127.0.0.1:{port}", "demo-mm", "demo-mm-secret", ctx=zmq.Context(), timeout=5)
        self.i = 0

    def send(self):
        self.i += 1
        self.c.send_raw(dumpb({"type": "new", "rid": f"r{self.i}", "client_order_id": f"c{self.i}", "symbol": "AAPL",
                               "side": "B", "price": 90 * PX, "qty": 10, "tif": "day"}))

    def recv(self):
        self.c.sock.recv_multipart()

    def close(self):
        ctx = self.c.ctx
        self.c.close()
        ctx.term()


class GatewayClient:
    """Signed requests over a DEALER: alternate a new order and the cancel of the previous one."""

    def __init__(self, port):
        from engine.client import Client
        self.c = Client(f"tcp://127.0.0.1:{port}", "demo-mm", "demo-mm-secret", ctx=zmq.Context(), timeout=5)
        self.i = 0
        self.to_cancel: list[int] = []
        self.pending_new = 0

    def make_body(self):
        self.i += 1
        if self.to_cancel and self.i % 2 == 0:
            req = {"type": "cancel", "rid": f"r{self.i}", "order_id": self.to_cancel.pop(0)}
        else:
            req = {"type": "new", "rid": f"r{self.i}", "client_order_id": f"c{self.i}", "symbol": "AAPL",
                   "side": "B", "price": (90 * PX) + (self.i % 50) * 10_000_000, "qty": 10, "tif": "day"}
        return dumpb(req)

    def send(self):
        self.c.send_raw(self.make_body())

    def recv(self):
        msg = loads(self.c.sock.recv())
        evs = msg.get("events") or []
        if msg.get("status") != "ack":
            raise RuntimeError(f"not acknowledged: {msg}")
        if evs and evs[0]["type"] == "accepted":
            self.to_cancel.append(evs[0]["order_id"])

    def close(self):
        self.c.close()


def latency_block(client, n):
    lat = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        client.send()
        client.recv()
        lat.append(time.perf_counter_ns() - t0)
    return lat


def throughput_block(client, seconds, window):
    """Keep ``window`` requests in flight for ``seconds``; replies per second."""
    for _ in range(window):
        client.send()
    done = 0
    t0 = time.perf_counter()
    end = t0 + seconds
    while time.perf_counter() < end:
        client.recv()
        done += 1
        client.send()
    elapsed = time.perf_counter() - t0
    for _ in range(window):
        client.recv()
    return done / elapsed


def summarize(lat_ns, rates):
    us = [x / 1000 for x in lat_ns]
    return {"p50_us": round(statistics.median(us), 1), "p90_us": round(pct(us, 90), 1),
            "p99_us": round(pct(us, 99), 1), "n": len(us), "orders_per_s": round(statistics.median(rates))}


KINDS = ("echo", "proxy_echo", "protocol_floor", "gateway", "gateway_null")


def _pinned(target, cpus, *args):
    """Run a server with every thread it creates (ZeroMQ I/O threads included) on ``cpus``."""
    if cpus:
        os.sched_setaffinity(0, cpus)
    target(*args)


def start_server(kind, args):
    ctx = mp.get_context("spawn")
    ready, stop_ev, q = ctx.Event(), ctx.Event(), ctx.Queue()
    target = {"echo": echo_server, "proxy_echo": proxy_echo_server, "protocol_floor": proxy_echo_server}.get(
        kind, gateway_server)
    extra = {gateway_server: (args.workers, kind == "gateway_null"),
             proxy_echo_server: (kind == "protocol_floor",)}.get(target, ())
    p = ctx.Process(target=_pinned, args=(target, args.server_cpus, ready, stop_ev, q) + extra, daemon=True)
    p.start()
    ready.wait(60)
    port = q.get(timeout=10)
    client = EchoClient(port) if kind in ("echo", "proxy_echo") else GatewayClient(port)
    return p, stop_ev, q, client


def run_all(args):
    """All three servers up at once; latency and throughput measured in interleaved blocks (echo, gateway,
    gateway_null, echo, ...) so that load from other tenants of this shared machine hits every
    contender alike. Per round ratios (gateway / echo of the same round) are reported next to the pooled
    percentiles."""
    servers = {k: start_server(k, args) for k in KINDS}
    lat = {k: [] for k in KINDS}
    rates = {k: [] for k in KINDS}
    rounds = []
    try:
        for k in KINDS:
            latency_block(servers[k][3], 300)   # warm-up
        n_block = max(1, args.n // args.rounds)
        for _ in range(args.rounds):
            r = {}
            for k in KINDS:
                block = latency_block(servers[k][3], n_block)
                lat[k].extend(block)
                rate = throughput_block(servers[k][3], args.seconds / args.rounds, args.window)
                rates[k].append(rate)
                r[k] = (statistics.median(block), rate)
            rounds.append({"p50_ratio": round(r["gateway"][0] / r["echo"][0], 2),
                           "throughput_ratio": round(r["echo"][1] / r["gateway"][1], 2),
                           "null_p50_ratio": round(r["gateway_null"][0] / r["echo"][0], 2),
                           "proxy_p50_ratio": round(r["proxy_echo"][0] / r["echo"][0], 2),
                           "floor_p50_ratio": round(r["protocol_floor"][0] / r["echo"][0], 2)})
    finally:
        res = {}
        for k, (p, stop_ev, q, client) in servers.items():
            client.close()
            stop_ev.set()
        for k, (p, stop_ev, q, client) in servers.items():
            if k.startswith("gateway"):
                try:   # server-side stage latencies (engine.latency), over both phases
                    res.setdefault(k, {})["server_stages"] = q.get(timeout=30)
                except Exception as e:  # noqa: BLE001 - a benchmark reports what it could not measure
                    res.setdefault(k, {})["server_stages"] = {"error": repr(e)}
            p.join(30)
            if p.is_alive():
                p.terminate()
    for k in KINDS:
        res.setdefault(k, {}).update(summarize(lat[k], rates[k]))
    res["rounds"] = rounds
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=6000, help="round trips for the latency figures (over all rounds)")
    ap.add_argument("--seconds", type=float, default=5.0, help="duration of the throughput phases (over all rounds)")
    ap.add_argument("--window", type=int, default=32, help="requests in flight in the throughput phase")
    ap.add_argument("--workers", type=int, default=2, help="gateway worker threads")
    ap.add_argument("--rounds", type=positive_int, default=10, help="interleaved rounds (every contender once per round)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--server-cpus", default="", help="pin every server process (all its threads) to these "
                    "CPUs, e.g. 1; the same for every contender (default: no pinning)")
    ap.add_argument("--client-cpus", default="", help="pin the client (this process) to these CPUs, e.g. 0")
    ap.add_argument("--inprocess-n", type=int, default=4000, help="requests per in-process measurement (0: skip "
                    "it): the server-side cost of a request without ZeroMQ, hot and after 100 us idle")
    a = ap.parse_args(argv)
    a.server_cpus = {int(c) for c in a.server_cpus.split(",") if c != ""}
    a.client_cpus = {int(c) for c in a.client_cpus.split(",") if c != ""}
    if a.client_cpus:
        os.sched_setaffinity(0, a.client_cpus)
    res = run_all(a)
    if a.inprocess_n:
        res["inprocess"] = run_inprocess(a)
    res["ratio_p50"] = round(res["gateway"]["p50_us"] / res["echo"]["p50_us"], 2)
    res["ratio_p99"] = round(res["gateway"]["p99_us"] / res["echo"]["p99_us"], 2)
    res["ratio_throughput"] = round(res["echo"]["orders_per_s"] / max(1, res["gateway"]["orders_per_s"]), 2)
    med = {k: round(statistics.median(r[k] for r in res["rounds"]), 2) for k in res["rounds"][0]}
    res["ratio_p50_median_of_rounds"] = med["p50_ratio"]
    res["median_of_rounds"] = med
    res["config"] = {"n": a.n, "seconds": a.seconds, "window": a.window, "workers": a.workers, "rounds": a.rounds,
                     "server_cpus": sorted(a.server_cpus), "client_cpus": sorted(a.client_cpus)}
    res["machine"] = {"python": sys.version.split()[0], "pyzmq": zmq.__version__, "libzmq": zmq.zmq_version(),
                      "cpus": os.cpu_count(), "platform": platform.platform(),
                      "loadavg_after": os.getloadavg()}
    if a.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"{'':12} {'p50 us':>9} {'p90 us':>9} {'p99 us':>9} {'orders/s':>10}")
    for k in KINDS:
        r = res[k]
        print(f"{k:12} {r['p50_us']:9.1f} {r['p90_us']:9.1f} {r['p99_us']:9.1f} {r['orders_per_s']:10d}")
    print("gateway server stages (p50/p99 us, both phases): " + ", ".join(
        f"{k} {v['p50_us']}/{v['p99_us']}" for k, v in res["gateway"].get("server_stages", {}).items()
        if isinstance(v, dict)))
    if "inprocess" in res:
        ip = res["inprocess"]
        print(f"server-side request cost in process (no ZeroMQ; median us): gateway {ip['gateway_hot_us']} hot, "
              f"{ip['gateway_after_100us_idle_us']} after 100 us idle; gateway_null {ip['gateway_null_hot_us']} hot, "
              f"{ip['gateway_null_after_100us_idle_us']} after 100 us idle")
    print(f"median of {len(res['rounds'])} interleaved rounds, p50 / echo p50: proxy_echo {med['proxy_p50_ratio']}x, "
          f"protocol_floor {med['floor_p50_ratio']}x, "
          f"gateway {med['p50_ratio']}x, gateway_null {med['null_p50_ratio']}x; echo/gateway throughput "
          f"{med['throughput_ratio']}x")
    print(f"gateway / echo: p50 {res['ratio_p50']}x (median of rounds {res['ratio_p50_median_of_rounds']}x)  "
          f"p99 {res['ratio_p99']}x  throughput {res['ratio_throughput']}x (target: within 1.3x)  "
          f"load average after: {res['machine']['loadavg_after'][0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
