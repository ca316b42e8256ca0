"""End to end, as separate processes: the shipped ITCH capture replayed at (a multiple of) its recorded pace
(``feedhandler run --file --pace --publish --publish-what bbo``) is the market data of a breakout strategy
(``feedhandler strategy``), whose signals an executor (``feedhandler executor``) sends as orders to an
exchange (``feedhandler exchange``, SQLite history). Then the same with faults: the executor killed
(SIGKILL) mid-run and restarted, and the exchange stopped (SIGSTOP) for a while and continued.

Checked every time: every signal the strategy issued was acknowledged; the executor's ledger holds each
signal once; each signal's client order id appears at most once among the exchange's orders (history
database), exactly once for the signals acknowledged as traded; the taker's fills are in the history.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from feedhandler.books import BookSet
from engine.client import Client
from engine.strategy.signals import client_order_id
from feedhandler import records
from feedhandler.output import SymbolMap
from feedhandler.pipeline import Feed

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "pcaps" / "itch50_sample.pcap"
RUN_SECONDS = 6.0          # how long the paced replay should last

pytestmark = pytest.mark.skipif(os.environ.get("FH_SKIP_E2E") == "1", reason="FH_SKIP_E2E=1")


def _plan(n_symbols=3):
    """From an in-process replay of the sample: the busiest symbols by BBO changes, their mid-price range and
    the capture's span (for the pace factor)."""
    feed = Feed(str(SAMPLE), "itch50")
    books = BookSet(track_bbo_events=True)
    sm = SymbolMap()
    buf = records.empty(4096)
    evs, ts = [], []
    while (n := feed.read(buf)):
        b = buf[:n]
        books.apply(b)
        sm.update(b)
        evs.append(books.bbo_events())
        ts.append(b.view(records.DTYPES["mbo"])["ts_recv"][b["rtype"] == records.RTYPE["mbo"]])
    ev = np.concatenate(evs)
    ev = ev[(ev["bid_px"] != records.UNDEF_PRICE) & (ev["ask_px"] != records.UNDEF_PRICE)]
    ids, counts = np.unique(ev["instrument_id"], return_counts=True)
    top = ids[np.argsort(-counts)][:n_symbols].tolist()
    ranges = {}
    for i in top:
        e = ev[ev["instrument_id"] == i]
        mid = (e["bid_px"] // 2 + e["ask_px"] // 2)
        ranges[sm.by_id[i]] = (int(mid.min()), int(mid.max()))
    t = np.concatenate(ts)
    t = t[t > 0]
    span_s = (int(t.max()) - int(t.min())) / 1e9
    return ranges, span_s


def _ports(n):
    from _durability_support import free_port   # below the ephemeral range (see there)
    ports: list[int] = []
    while len(ports) < n:
        p = free_port()
        if p not in ports:
            ports.append(p)
    return ports


class Procs:
    """The test's processes; every one is stopped (and waited for) at the end, whatever happens."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = dict(os.environ)
        self.env.pop("FEEDHANDLER_API_SECRET", None)

    def start(self, name, *args, env=None, wait_for=None, timeout=60):
        out = open(self.tmp / f"{name}.out", "w")
        err = open(self.tmp / f"{name}.err", "w")
        p = subprocess.Popen([sys.executable, "-m", "feedhandler", *args], stdout=out, stderr=err, text=True,
                             env={**self.env, **(env or {})}, cwd=str(self.tmp))
        self.procs[name] = p
        if wait_for:
            deadline = time.monotonic() + timeout
            while wait_for not in self.read(name):
                assert p.poll() is None, f"{name} exited {p.returncode}: {self.read(name, 'err')}"
                assert time.monotonic() < deadline, f"{name} did not say {wait_for!r}: {self.read(name, 'err')}"
                time.sleep(0.05)
        return p

    def read(self, name, what="out"):
        return (self.tmp / f"{name}.{what}").read_text()

    def stop(self, name, sig=signal.SIGTERM, timeout=60):
        p = self.procs[name]
        if p.poll() is None:
            p.send_signal(sig)
        try:
            return p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            raise

    def json(self, name):
        out = self.read(name)
        return json.loads(out[out.index("\n{") + 1:] if not out.startswith("{") else out)

    def close(self):
        for p in self.procs.values():
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
                p.kill()
                p.wait()


def _setup(tmp_path):
    ranges, span_s = _plan()
    syms = sorted(ranges)
    gw, md_ex, feed_md, sig_ep, ack_ep = _ports(5)
    cfg = tmp_path / "exchange.toml"
    cfg.write_text("symbols = [" + ", ".join(f'"{s}"' for s in syms) + "]\n"
                   "[risk]\nprice_band_bps = 0\nmax_order_qty = 10000000\n")
    return ranges, span_s, syms, dict(gw=gw, md_ex=md_ex, feed_md=feed_md, sig=sig_ep, ack=ack_ep), cfg


def _start_trading(pr: Procs, tmp_path, ranges, syms, p, cfg, exchange_args=(), strategy_args=()):
    data = tmp_path / "exchange-data"
    pr.start("exchange", "exchange", "--config", str(cfg), "--data-dir", str(data), "--port", str(p["gw"]),
             "--md-port", str(p["md_ex"]), *exchange_args, wait_for="exchange up")
    # a market maker's liquidity around each symbol's price range (price band off): the strategy's IOC
    # orders, priced 50 % through the last price, cross it
    with Client(f"tcp://127.0.0.1:{p['gw']}", "demo-mm", "demo-mm-secret", timeout=10) as mm:
        for s in syms:
            lo, hi = ranges[s]
            assert mm.submit(s, "B", lo * 9 // 10, 5_000_000, tif="day")["status"] == "ack"
            assert mm.submit(s, "S", hi * 11 // 10, 5_000_000, tif="day")["status"] == "ack"
    _start_executor(pr, p)
    _start_strategy(pr, p, syms, strategy_args)
    return data


def _start_strategy(pr: Procs, p, syms, args=()):
    return pr.start("strategy", "strategy", "breakout", "--md", f"tcp://127.0.0.1:{p['feed_md']}", "--signals",
                    f"tcp://127.0.0.1:{p['sig']}", "--acks", f"tcp://127.0.0.1:{p['ack']}", "--symbols",
                    ",".join(syms), "--param", "window=20", "--param", "confirm_ticks=2", "--param",
                    "slippage_bps=5000", "--param", "max_position=100000000", "--param", "cooldown=3", "--param",
                    "qty=10", "--param", "source=bbo", "--hwm", "50", "--max-pending", "5000", "--resend-after",
                    "0.5", "--ttl-ms", "60000", "--drain", "20", "--id", "e2e", "--json", *args)


def _start_executor(pr: Procs, p, name="executor"):
    return pr.start(name, "executor", "--signals", f"tcp://127.0.0.1:{p['sig']}", "--acks",
                    f"tcp://127.0.0.1:{p['ack']}", "--endpoint", f"tcp://127.0.0.1:{p['gw']}", "--api-key",
                    "demo-taker", "--state", "ledger.sqlite", "--timeout", "0.3", "--backoff", "0.05",
                    "--max-backoff", "0.8", "--json", env={"FEEDHANDLER_API_SECRET": "demo-taker-secret"},
                    wait_for="executor up")


def _feed(pr: Procs, p, span_s, nsubs, seconds=RUN_SECONDS):
    pace = max(span_s / seconds, 1.0)
    return pr.start("feed", "run", "--file", str(SAMPLE), "--pace", f"{pace:g}", "--publish",
                    f"tcp://127.0.0.1:{p['feed_md']}", "--publish-what", "bbo", "--publish-wait-subs", str(nsubs),
                    "--status-interval", "0", "--json")


def _ledger_rows(tmp_path):
    db = sqlite3.connect(str(tmp_path / "ledger.sqlite"))
    try:
        return db.execute("SELECT id, state, outcome FROM signals").fetchall()
    finally:
        db.close()


def _wait_rows(tmp_path, n, timeout=60):
    """Until the executor's ledger holds ``n`` signals."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if len(_ledger_rows(tmp_path)) >= n:
                return
        except sqlite3.Error:
            pass
        time.sleep(0.05)
    raise AssertionError(f"the executor did not handle {n} signals")


def _check(pr: Procs, tmp_path, data, executors):
    import msgpack

    st = pr.json("strategy")
    assert st["signals"] > 5, st
    assert st["unacknowledged"] == [], st
    assert st["acks"] == st["signals"] and st["refused_backpressure"] == 0
    rows = _ledger_rows(tmp_path)
    assert len(rows) == st["signals"] and {r[1] for r in rows} == {"done"}
    outcomes = {r[0]: msgpack.unpackb(r[2]) for r in rows}
    traded = {i for i, o in outcomes.items() if o["status"] in ("filled", "accepted")}
    assert traded, outcomes
    hist = sqlite3.connect(str(data / "history.sqlite"))
    try:
        coids = [r[0] for r in hist.execute("SELECT client_order_id FROM orders WHERE account = 'TAKER'")]
        fills = hist.execute("SELECT count(*), sum(qty) FROM trades WHERE buyer = 'TAKER' OR seller = 'TAKER'").fetchone()
    finally:
        hist.close()
    assert len(coids) == len(set(coids)), "an order entered twice"
    want = {client_order_id(i) for i in traded}
    assert want <= set(coids), "an acknowledged order missing from the history"
    assert set(coids) <= {client_order_id(i) for i in outcomes}, "an order that no signal asked for"
    filled = sum(o["filled"] for o in outcomes.values())
    assert fills[0] > 0 and fills[1] == filled == st["filled_qty"]
    return st, outcomes


@pytest.fixture
def procs(tmp_path):
    pr = Procs(tmp_path)
    yield pr
    pr.close()


def _finish(pr: Procs, feed_timeout=120, exchange=True):
    assert pr.procs["feed"].wait(feed_timeout) == 0, pr.read("feed", "err")
    assert pr.stop("strategy") == 0, pr.read("strategy", "err")
    for name in [n for n in pr.procs if n.startswith("executor")]:
        if pr.procs[name].poll() is None:
            assert pr.stop(name) == 0, pr.read(name, "err")
    if exchange:
        assert pr.stop("exchange") == 0, pr.read("exchange", "err")


def test_capture_to_strategy_to_executor_to_exchange(procs, tmp_path):
    ranges, span_s, syms, p, cfg = _setup(tmp_path)
    data = _start_trading(procs, tmp_path, ranges, syms, p, cfg)
    _feed(procs, p, span_s, len(syms))
    _finish(procs)
    st, outcomes = _check(procs, tmp_path, data, ["executor"])
    ex = procs.json("executor")
    assert ex["orders"] == st["signals"] - ex["expired"] and ex["retries"] == 0 and ex["repeated"] == 0
    feed = procs.json("feed")
    assert feed["publish"]["records"] > 0 and feed["publish"]["what"] == "bbo"


def test_executor_killed_and_exchange_stopped_mid_run(procs, tmp_path):
    ranges, span_s, syms, p, cfg = _setup(tmp_path)
    data = _start_trading(procs, tmp_path, ranges, syms, p, cfg)
    _feed(procs, p, span_s, len(syms), seconds=2 * RUN_SECONDS)     # room for both faults mid-run

    _wait_rows(tmp_path, 3)
    procs.stop("executor", signal.SIGKILL)             # mid-run, no goodbye
    time.sleep(1.0)                                    # signals pile up at the strategy meanwhile
    _start_executor(procs, p, name="executor2")
    n = len(_ledger_rows(tmp_path))
    _wait_rows(tmp_path, n + 2)
    ex_pid = procs.procs["exchange"].pid
    os.kill(ex_pid, signal.SIGSTOP)                    # the exchange stalls: replies stop
    time.sleep(2.0)
    os.kill(ex_pid, signal.SIGCONT)
    _finish(procs)
    st, outcomes = _check(procs, tmp_path, data, ["executor", "executor2"])
    ex2 = procs.json("executor2")
    assert ex2["retries"] > 0, ex2                     # it waited out the stalled exchange with backoff
    assert st["resends"] > 0 or st["hwm_blocked"] > 0 or ex2["repeated"] + ex2["resumed"] > 0, st


def test_exchange_restarted_mid_run(procs, tmp_path):
    """The exchange stops (SIGTERM: journal flushed) and starts again on the same data dir and port while
    signals flow: the executor retries with backoff; the restarted exchange's retry memory (rebuilt from the
    journal) and the ledger keep every signal to one order."""
    ranges, span_s, syms, p, cfg = _setup(tmp_path)
    data = _start_trading(procs, tmp_path, ranges, syms, p, cfg)
    _feed(procs, p, span_s, len(syms), seconds=2 * RUN_SECONDS)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if len(_ledger_rows(tmp_path)) >= 5:
                break
        except sqlite3.Error:
            pass
        time.sleep(0.05)
    assert procs.stop("exchange") == 0, procs.read("exchange", "err")
    time.sleep(1.0)
    procs.start("exchange", "exchange", "--config", str(cfg), "--data-dir", str(data), "--port", str(p["gw"]),
                "--md-port", str(p["md_ex"]), wait_for="exchange up")
    _finish(procs)
    st, outcomes = _check(procs, tmp_path, data, ["executor"])
    ex = procs.json("executor")
    assert ex["retries"] > 0, ex
