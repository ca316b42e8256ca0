"""Demo trading bots: a market maker and a taker trading against the exchange through engine.client.

    feedhandler bot                    # starts an exchange in-process (temporary data dir) and trades 20 s
    feedhandler bot --endpoint tcp://127.0.0.1:5555 --md-endpoint tcp://127.0.0.1:5556 --duration 30

Within the run a new user sees: fills as they happen, the trade log, each account's position and PnL
(queried from the gateway's portfolio), and latency numbers (client round trip; with the in-process
exchange also the gateway/engine stage latencies of engine.latency).
"""
from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import tempfile
import threading
import time

PX = 1_000_000_000


def _money(v) -> str:
    """Display only: an exact PnL string in 1e-9 units ("a/b" or "n") as currency with 2 decimals."""
    from fractions import Fraction
    return f"{float(Fraction(str(v)) / PX):,.2f}"


def _pct(values: list[int], p: float) -> int:
    if not values:
        return 0
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * p / 100))]


class Bot(threading.Thread):
    def __init__(self, name, client, symbol, stop: threading.Event, seed: int, tick=10_000_000, verbose=True):
        super().__init__(name=name, daemon=True)
        self.c, self.symbol, self.stop_ev = client, symbol, stop
        self.rng = random.Random(seed)
        self.tick = tick
        self.rtt: list[int] = []
        self.fills: list[dict] = []
        self.orders = 0
        self.rejects = 0
        self.verbose = verbose
        self.error: BaseException | None = None

    def req(self, fn, *a, **kw):
        t0 = time.perf_counter_ns()
        r = fn(*a, **kw)
        self.rtt.append(time.perf_counter_ns() - t0)
        self.orders += 1
        if r.get("status") != "ack":
            self.rejects += 1
        for ev in r.get("events", []):
            if ev["type"] == "fill":
                self._fill(ev)
        return r

    def _fill(self, ev):
        self.fills.append(ev)
        if self.verbose:
            print(f"  fill  {self.name:<6} {ev['side']} {ev['qty']:>4} {ev['symbol']} @ {ev['price'] / PX:.2f} "
                  f"({ev.get('liquidity', '')})", flush=True)

    def drain_execs(self):
        for ev in self.c.executions():
            if ev.get("exec_type") == "fill":
                self._fill(ev)

    def run(self):
        try:
            self.loop()
        except BaseException as e:  # noqa: BLE001 - reported by the main thread after join()
            self.error = e


class MarketMaker(Bot):
    def loop(self):
        mid = 100 * PX
        live: list[int] = []
        while not self.stop_ev.is_set():
            mid += self.rng.choice((-1, 0, 1)) * self.tick
            for oid in live:
                self.req(self.c.cancel, order_id=oid)
            live = []
            for side, px in (("B", mid - 2 * self.tick), ("S", mid + 2 * self.tick)):
                r = self.req(self.c.submit, self.symbol, side, px, 100, tif="day")
                if r.get("status") == "ack" and r["events"] and r["events"][-1].get("leaves_qty", 0) > 0:
                    live.append(r["events"][0]["order_id"])
            self.drain_execs()
            self.stop_ev.wait(0.02)


class Taker(Bot):
    def loop(self):
        while not self.stop_ev.is_set():
            book = self.c.book(self.symbol, 1)
            bids, asks = book.get("bids") or [], book.get("asks") or []
            side = self.rng.choice("BS")
            if side == "B" and asks:
                self.req(self.c.submit, self.symbol, "B", asks[0][0], self.rng.randint(10, 60), tif="ioc")
            elif side == "S" and bids:
                self.req(self.c.submit, self.symbol, "S", bids[0][0], self.rng.randint(10, 60), tif="ioc")
            self.drain_execs()
            self.stop_ev.wait(0.05)


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or argparse.ArgumentParser(prog="feedhandler bot", description="Demo bots trading against the exchange.")
    p.add_argument("--endpoint", help="gateway address; default: start an exchange in-process")
    p.add_argument("--md-endpoint", help="market-data address (with --endpoint)")
    p.add_argument("--symbol", default="AAPL")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of trading (default 20)")
    p.add_argument("--mm-key", default="demo-mm")
    p.add_argument("--mm-secret", default="demo-mm-secret")
    p.add_argument("--taker-key", default="demo-taker")
    p.add_argument("--taker-secret", default="demo-taker-secret")
    p.add_argument("--quiet", action="store_true", help="do not print every fill")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--seed", type=int, default=1)
    return p


def main(argv: list[str] | None = None) -> int:
    from engine.client import Client

    a = build_parser().parse_args(argv)
    ex = None
    if a.endpoint is None:
        from engine.exchange import Exchange, load_config
        tmp = tempfile.mkdtemp(prefix="fh-exchange-")
        cfg = load_config(None, {"data_dir": tmp, "gateway.endpoint": "tcp://127.0.0.1:*",
                                 "marketdata.endpoint": "tcp://127.0.0.1:*", "engine.fsync": "none"})
        cfg["symbols"] = sorted({a.symbol, "AAPL", "MSFT"})
        ex = Exchange(cfg).start()
        a.endpoint, a.md_endpoint = ex.gateway.endpoint, ex.marketdata.endpoint
        print(f"started an in-process exchange: gateway {a.endpoint}, market data {a.md_endpoint}, data {tmp}",
              file=sys.stderr if a.json else sys.stdout)
    stop = threading.Event()
    mm_c = Client(a.endpoint, a.mm_key, a.mm_secret, md_endpoint=a.md_endpoint, timeout=2.0)
    tk_c = Client(a.endpoint, a.taker_key, a.taker_secret, timeout=2.0)
    summary: dict = {}
    try:
        for c in (mm_c, tk_c):
            r = c.hello()
            if r.get("status") != "ok":
                print(f"login failed: {r}", file=sys.stderr)
                return 2
        md_records = 0
        if a.md_endpoint:
            mm_c_md = Client(a.endpoint, a.mm_key, a.mm_secret, md_endpoint=a.md_endpoint)
            mm_c_md.subscribe([a.symbol])
        else:
            mm_c_md = None
        bots = [MarketMaker("mm", mm_c, a.symbol, stop, a.seed, verbose=not a.quiet),
                Taker("taker", tk_c, a.symbol, stop, a.seed + 1, verbose=not a.quiet)]
        print(f"trading {a.symbol} for {a.duration:.0f} s ...", flush=True, file=sys.stderr if a.json else sys.stdout)
        for b in bots:
            b.start()
        t_end = time.monotonic() + a.duration
        while time.monotonic() < t_end and all(b.is_alive() for b in bots):
            if mm_c_md is not None:
                for _, ticks in mm_c_md.market_data(0.1):
                    md_records += len(ticks)
            else:
                time.sleep(0.1)
        stop.set()
        for b in bots:
            b.join(5)
            if b.error is not None:
                raise b.error
            b.drain_execs()
        rtt = [x for b in bots for x in b.rtt]
        summary = {
            "orders": sum(b.orders for b in bots),
            "rejects": sum(b.rejects for b in bots),
            "fills": {b.name: len(b.fills) for b in bots},
            "market_data_records": md_records,
            "client_rtt_ns": {"p50": _pct(rtt, 50), "p90": _pct(rtt, 90), "p99": _pct(rtt, 99), "count": len(rtt)},
            "pnl": {},
        }
        for name, c in (("mm", mm_c), ("taker", tk_c)):
            r = c.position(a.symbol)
            summary["pnl"][name] = r.get("portfolio", r)
        if ex is not None:
            ex.pipeline.flush_latency()
            summary["exchange_latency_ns"] = {k: {"p50": v["p50_ns"], "p99": v["p99_ns"], "count": v["count"]}
                                             for k, v in ex.latency.stats().items()}
            ex.trade_log.flush()
            with open(ex.trade_log.path) as f:
                trades = list(csv.DictReader(f))
            summary["trade_log"] = {"path": ex.trade_log.path, "rows": len(trades), "last": trades[-5:]}
        if mm_c_md is not None:
            mm_c_md.close()
    finally:
        mm_c.close()
        tk_c.close()
        if ex is not None:
            ex.stop()
    if a.json:
        print(json.dumps(summary, indent=2, default=str))
        return 0
    print("\n=== summary ===")
    print(f"orders sent: {summary['orders']}  rejected: {summary['rejects']}  fills: {summary['fills']}  "
          f"market-data records: {summary['market_data_records']}")
    r = summary["client_rtt_ns"]
    print(f"client round trip (submit/cancel -> ACK): p50 {r['p50'] / 1000:.0f} us  p90 {r['p90'] / 1000:.0f} us  "
          f"p99 {r['p99'] / 1000:.0f} us  (n={r['count']})")
    for k, v in summary.get("exchange_latency_ns", {}).items():
        print(f"  exchange stage {k:<13} p50 {v['p50'] / 1000:8.1f} us  p99 {v['p99'] / 1000:8.1f} us  n={v['count']}")
    for name, p in summary["pnl"].items():
        if isinstance(p, dict) and "realized" in p:
            pos = p.get("positions", {}).get(a.symbol, {})
            print(f"PnL {name:<6} position {pos.get('qty', 0):>6}  realized {_money(p['realized']):>12}  "
                  f"unrealized {_money(p['unrealized']):>12}")
        else:
            print(f"PnL {name:<6} {p}")
    if "trade_log" in summary:
        tl = summary["trade_log"]
        print(f"trade log: {tl['path']} ({tl['rows']} trades); last ones:")
        for row in tl["last"]:
            print("  " + ", ".join(f"{k}={v}" for k, v in row.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
