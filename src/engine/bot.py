"""Demo trading bots: a market maker and a taker trading against the exchange through engine.client.

    feedhandler exchange &             # an exchange on the default local ports (5555 gateway, 5556 data)
    feedhandler bot                    # trades 20 s against it (it says which exchange it uses)
    feedhandler bot --endpoint tcp://10.0.0.5:5555 --md-endpoint tcp://10.0.0.5:5556 --duration 30
    feedhandler bot --start-exchange   # no exchange running: start one in-process in a temporary
                                       # directory, removed at the end

Without ``--endpoint`` the bot looks for an exchange on the default local ports (``--port``/``--md-port``
change them) and, when none answers, says so and exits 1: it starts its own only when asked
(``--start-exchange``). Exit codes: 0 ok; 1 no exchange answers, or it failed during the run; 2 bad
arguments or refused credentials; 130 interrupted.

Within the run a new user sees: fills as they happen, the trade log, each account's position and PnL
(queried from the gateway's portfolio), and latency numbers (client round trip; with the in-process
exchange also the gateway/engine stage latencies of engine.latency).
"""
from __future__ import annotations

import argparse
import csv
import json
import random
import shutil
import sys
import tempfile
import threading
import time
from decimal import Decimal

from engine.errors import EXIT_USAGE, CommandError, NoExchange, run_command
from feedhandler.cliopts import (add_symbols, deprecated_alias, port_number, positive_seconds, seconds,
                                 symbols_list, zmq_endpoint)

PX = 1_000_000_000


def _money(v) -> str:
    """Display only: a decimal PnL string (Client.position) with 2 decimals."""
    return f"{Decimal(str(v)):,.2f}"


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
        if ev.get("symbol", self.symbol) != self.symbol:   # another bot's symbol on the same account
            return
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
    p = p or argparse.ArgumentParser(
        prog="feedhandler bot", description="Demo bots (a market maker and a taker) trading against the exchange.",
        epilog="Exit codes: 0 ok; 1 no exchange answers or a failure during the run; 2 bad arguments or refused "
               "credentials; 130 interrupted. --debug prints the traceback of an error.")
    p.add_argument("--endpoint", type=zmq_endpoint, help="gateway address (default: the exchange on the default local port, "
                                      "tcp://127.0.0.1:5555, if one is running)")
    p.add_argument("--md-endpoint", type=zmq_endpoint, help="market-data address (default with --endpoint: none; without it "
                                         "tcp://127.0.0.1:5556)")
    p.add_argument("--port", type=port_number, default=5555, help="local gateway port to look for (default 5555)")
    p.add_argument("--md-port", type=port_number, default=5556, help="local market-data port to look for (default 5556)")
    p.add_argument("--start-exchange", action="store_true",
                   help="start an exchange in-process (temporary data dir, removed at the end) instead of "
                        "looking for a running one")
    add_symbols(p, "the symbols to trade, a market maker and a taker on each", default=["AAPL"])
    deprecated_alias(p, "--symbol", "--symbols", "symbols", type=symbols_list)
    p.add_argument("--duration", type=seconds, default=20.0, help="seconds of trading (default 20)")
    p.add_argument("--mm-key", default="demo-mm", help="API key of the market maker (default demo-mm)")
    p.add_argument("--mm-secret", default="demo-mm-secret", help="its secret (default demo-mm-secret)")
    p.add_argument("--taker-key", default="demo-taker", help="API key of the taker (default demo-taker)")
    p.add_argument("--taker-secret", default="demo-taker-secret", help="its secret (default demo-taker-secret)")
    p.add_argument("--timeout", type=positive_seconds, default=2.0, help="seconds to wait for a reply (default 2)")
    p.add_argument("--quiet", action="store_true", help="do not print every fill")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--seed", type=int, default=1, help="random seed of the bots' decisions (default 1)")
    p.add_argument("--debug", action="store_true", help="print the traceback of an error")
    return p


def _login(c, endpoint: str, key: str) -> None:
    """hello through the client; raises NoExchange when nothing answers, CommandError(2) when refused."""
    from engine.client import GatewayTimeout
    try:
        r = c.hello()
    except GatewayTimeout:
        raise NoExchange(f"no exchange answers at {endpoint} (start one with `feedhandler exchange`, pass "
                         "--endpoint, or --start-exchange to run one in-process for this run)") from None
    if r.get("status") != "ok":
        raise CommandError(f"the exchange at {endpoint} refused API key {key!r}: {r.get('reason', r)}",
                           EXIT_USAGE)


def _main(argv: list[str]) -> int:
    from engine.client import Client

    a = build_parser().parse_args(argv)
    info = sys.stderr if a.json else sys.stdout
    ex = None
    tmp = None
    if a.start_exchange:
        if a.endpoint is not None:
            raise CommandError("--start-exchange and --endpoint exclude each other", EXIT_USAGE)
        from engine.exchange import Exchange, load_config
        tmp = tempfile.mkdtemp(prefix="fh-exchange-")
    elif a.endpoint is None:
        a.endpoint = f"tcp://127.0.0.1:{a.port}"
        if a.md_endpoint is None:
            a.md_endpoint = f"tcp://127.0.0.1:{a.md_port}"
    stop = threading.Event()
    mm_c = tk_c = mm_c_md = None
    extra_c: list = []
    summary: dict = {}
    try:
        if tmp is not None:
            cfg = load_config(None, {"data_dir": tmp, "gateway.endpoint": "tcp://127.0.0.1:*",
                                     "marketdata.endpoint": "tcp://127.0.0.1:*", "engine.fsync": "none",
                                     "symbols": sorted({*a.symbols, "AAPL", "MSFT"})})
            ex = Exchange(cfg).start()
            a.endpoint, a.md_endpoint = ex.gateway.endpoint, ex.marketdata.endpoint
            print(f"started an in-process exchange: gateway {a.endpoint}, market data {a.md_endpoint}, data {tmp} "
                  "(removed at the end)", file=info, flush=True)
        mm_c = Client(a.endpoint, a.mm_key, a.mm_secret, md_endpoint=a.md_endpoint, timeout=a.timeout, retries=1)
        tk_c = Client(a.endpoint, a.taker_key, a.taker_secret, timeout=a.timeout, retries=1)
        _login(mm_c, a.endpoint, a.mm_key)
        _login(tk_c, a.endpoint, a.taker_key)
        if ex is None:
            print(f"using the exchange at {a.endpoint}" + (f", market data {a.md_endpoint}" if a.md_endpoint else ""),
                  file=info, flush=True)
        md_records = 0
        if a.md_endpoint:
            mm_c_md = Client(a.endpoint, a.mm_key, a.mm_secret, md_endpoint=a.md_endpoint)
            mm_c_md.subscribe(list(a.symbols))
        one = len(a.symbols) == 1   # one symbol: the bots keep their plain names (mm, taker)
        bots = []
        for i, sym in enumerate(a.symbols):
            sfx = "" if one else f":{sym}"
            if i:   # a client (ZeroMQ socket) per bot thread: sockets are not shared between threads
                extra_c.append(Client(a.endpoint, a.mm_key, a.mm_secret, timeout=a.timeout, retries=1))
                extra_c.append(Client(a.endpoint, a.taker_key, a.taker_secret, timeout=a.timeout, retries=1))
                m, t = extra_c[-2:]
            else:
                m, t = mm_c, tk_c
            bots += [MarketMaker("mm" + sfx, m, sym, stop, a.seed + 2 * i, verbose=not a.quiet),
                     Taker("taker" + sfx, t, sym, stop, a.seed + 2 * i + 1, verbose=not a.quiet)]
        print(f"trading {','.join(a.symbols)} for {a.duration:.0f} s ...", flush=True, file=info)
        for b in bots:
            b.start()
        t_end = time.monotonic() + a.duration
        try:
            while time.monotonic() < t_end and all(b.is_alive() for b in bots):
                if mm_c_md is not None:
                    for _, ticks in mm_c_md.market_data(0.1):
                        md_records += len(ticks)
                else:
                    time.sleep(0.1)
        finally:
            stop.set()
            for b in bots:
                b.join(5)
        for b in bots:
            if b.error is not None:
                raise CommandError(f"the {b.name} bot failed: {type(b.error).__name__}: {b.error}")
            b.drain_execs()
        rtt = [x for b in bots for x in b.rtt]
        summary = {
            "exchange": a.endpoint if ex is None else "in-process",
            "orders": sum(b.orders for b in bots),
            "rejects": sum(b.rejects for b in bots),
            "fills": {b.name: len(b.fills) for b in bots},
            "market_data_records": md_records,
            "client_rtt_ns": {"p50": _pct(rtt, 50), "p90": _pct(rtt, 90), "p99": _pct(rtt, 99), "count": len(rtt)},
            "pnl": {},
        }
        for name, c in (("mm", mm_c), ("taker", tk_c)):
            r = c.position(a.symbols[0])
            summary["pnl"][name] = r.get("portfolio", r)
        if ex is not None:
            ex.pipeline.flush_latency()
            summary["exchange_latency_ns"] = {k: {"p50": v["p50_ns"], "p99": v["p99_ns"], "count": v["count"]}
                                             for k, v in ex.latency.stats().items()}
            ex.trade_log.flush()
            with open(ex.trade_log.path) as f:
                trades = list(csv.DictReader(f))
            summary["trade_log"] = {"path": ex.trade_log.path, "rows": len(trades), "last": trades[-5:]}
    finally:
        stop.set()
        for c in (mm_c_md, mm_c, tk_c, *extra_c):
            if c is not None:
                c.close()
        if ex is not None:
            ex.stop()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
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
            q = {sym: p.get("positions", {}).get(sym, {}).get("qty", 0) for sym in a.symbols}
            qty = f"{q[a.symbols[0]]:>6}" if len(q) == 1 else "  ".join(f"{sym} {v:>6}" for sym, v in q.items())
            print(f"PnL {name:<6} position {qty}  realized {_money(p['realized']):>12}  "
                  f"unrealized {_money(p['unrealized']):>12}")
        else:
            print(f"PnL {name:<6} {p}")
    if "trade_log" in summary:
        tl = summary["trade_log"]
        print(f"trade log ({tl['rows']} trades, removed with the temporary exchange); last ones:")
        for row in tl["last"]:
            print("  " + ", ".join(f"{k}={v}" for k, v in row.items()))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``feedhandler bot``: exit codes 0 / 1 / 2 / 130 (see engine.errors); errors are one line."""
    return run_command("feedhandler bot", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
