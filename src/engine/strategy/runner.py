"""``feedhandler strategy NAME``: one strategy in its own process.

    feedhandler strategy breakout --md tcp://127.0.0.1:5570 --signals tcp://127.0.0.1:5580 \\
        --acks tcp://127.0.0.1:5581 --symbols AAPL,MSFT --param window=100 --param confirm_ticks=3

Sockets (the strategy connects; the publishers and the executor bind):

- ``--md`` (repeatable) SUB: tick records by symbol from ``feedhandler run|replay --publish`` or from the
  exchange's own market data (``feedhandler exchange``, ``--md-port``); the same wire (``[symbol,
  n * 64-byte records]``). Topics are compared exactly (ZeroMQ subscriptions match prefixes).
- ``--signals`` PUSH: msgpack signals (:mod:`engine.strategy.signals`) to ``feedhandler executor``. Its
  send high-water mark (``--hwm``) is where backpressure starts: a signal the socket refuses stays in the
  outbox (:mod:`engine.strategy.outbox`), which holds at most ``--max-pending`` unacknowledged signals;
  beyond that the strategy's ``buy``/``sell`` return None and the refusal is counted.
- ``--outbox PATH`` (optional): the unacknowledged signals are also kept in an SQLite file
  (:mod:`engine.strategy.outbox_file`), written before a signal leaves the process: a restarted process,
  even one that was killed, resends them (the executor's ledger acts on each id once) and numbers its new
  signals after every id it used. Without it the outbox is in memory: a killed strategy loses the signals
  the executor had not acknowledged.
- ``--acks`` SUB: the executor's acknowledgements for this process (topic = its instance id). A signal
  not acknowledged in ``--resend-after`` seconds is sent again (backing off); the executor acts on an id
  once, so a restarted executor gets every unacknowledged signal again and trades none twice.

No credentials: the process takes none, and removes the executor's credential variables
(``FEEDHANDLER_API_KEY``, ``FEEDHANDLER_API_SECRET``) from its environment before loading the strategy.

Exit codes: 0 ok (stopped by --duration or SIGTERM), 1 runtime failure, 2 usage (unknown strategy, bad
parameter or endpoint), 130 SIGINT. The summary (counts, tick -> acknowledgement latency) goes to stdout
(``--json`` for JSON).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import zmq

from engine.strategy.base import Strategy, coerce_params
from engine.strategy.outbox import Outbox
from engine.strategy.outbox_file import OutboxFile, OutboxInUse
from engine.signals import set_from_signal
from engine.strategy.signals import BadMessage, Signal, decode_ack, decode_signal
from feedhandler import records
from feedhandler.cliopts import add_debug, count_int, positive_int, positive_seconds, seconds, zmq_endpoint

__all__ = ["REGISTRY", "load_strategy", "StrategyOptions", "StrategyRunner", "main"]

REGISTRY = {"breakout": "engine.strategy.breakout:Breakout"}
CREDENTIAL_ENV = ("FEEDHANDLER_API_KEY", "FEEDHANDLER_API_SECRET")
EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
MD_BURST = 256                   # market-data messages handled per wake-up before looking at acks
LATENCY_KEEP = 1 << 16           # tick -> ack latency samples kept (the most recent)
LAG_EVERY = 16                   # market-data messages between two samples of publish -> here lag
_TS_RECV = {records.RTYPE[k]: records.DTYPES[k].fields["ts_recv"][1] for k in ("mbo", "trade", "bbo")}


def _ts_recv_of_last(recs: np.ndarray) -> int:
    """ts_recv of a message's last record (0 for kinds without one)."""
    off = _TS_RECV.get(int(recs["rtype"][-1]))
    if off is None:
        return 0
    return int(recs["raw"][-1, off:off + 8].view("<u8")[0])


class EndpointError(ValueError):
    """An endpoint ZeroMQ refuses (a usage error, exit 2)."""


def load_strategy(spec: str) -> type:
    """A strategy class from a registered name (``breakout``) or ``module:Class``."""
    target = REGISTRY.get(spec, spec)
    module, sep, cls = target.partition(":")
    if not sep or not module or not cls:
        raise ValueError(f"unknown strategy {spec!r}: a registered name ({', '.join(sorted(REGISTRY))}) or "
                         "module:Class")
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise ValueError(f"strategy {spec!r}: cannot import {module}: {e}") from None
    obj = getattr(mod, cls, None)
    if not (isinstance(obj, type) and issubclass(obj, Strategy)):
        raise ValueError(f"strategy {spec!r}: {module}.{cls} is not a subclass of engine.strategy.Strategy")
    return obj


@dataclass
class StrategyOptions:
    strategy: str
    md: list[str]
    signals: str
    acks: str | None = None
    symbols: list[str] | None = None           # None: every symbol the publishers send
    params: list[str] = field(default_factory=list)
    hwm: int = 1000                            # PUSH send high-water mark (messages)
    max_pending: int = 1000                    # unacknowledged signals held
    resend_after: float = 1.0                  # s before an unacknowledged signal is sent again
    ttl_ms: int = 5000                         # signals older than this are not traded
    duration: float | None = None
    drain: float = 3.0                         # s to wait for outstanding acknowledgements at the end
    name: str | None = None                    # instance id (default: strategy name + random session)
    outbox: str | None = None                  # SQLite file keeping unacknowledged signals across restarts


class StrategyRunner:
    """The loop of one strategy process (also usable in-process: tests, benchmarks)."""

    def __init__(self, opts: StrategyOptions, ctx: zmq.Context | None = None):
        for k in CREDENTIAL_ENV:
            os.environ.pop(k, None)
        self.opts = opts
        cls = load_strategy(opts.strategy)
        self.strategy: Strategy = cls(opts.symbols or [], coerce_params(cls, opts.params))
        store = None
        if opts.outbox:
            try:
                store = OutboxFile(opts.outbox)
            except (OutboxInUse, sqlite3.Error, OSError) as e:
                raise ValueError(f"--outbox {opts.outbox}: {e}") from None
        try:
            self._setup(opts, cls, store, ctx)
        except BaseException:
            if store is not None:
                store.close()
            raise

    def _setup(self, opts: StrategyOptions, cls: type, store: OutboxFile | None, ctx: zmq.Context | None) -> None:
        self.instance = (opts.name or (store.instance() if store is not None else None)
                         or f"{getattr(cls, 'name', cls.__name__)}.{os.urandom(4).hex()}")
        self._n = 0
        self.ctx = ctx or zmq.Context.instance()
        self.outbox = Outbox(opts.max_pending, opts.resend_after, store=store)
        restored = []
        if store is not None:
            try:
                store.set_instance(self.instance)
                self._n = store.issued(self.instance)          # new ids after every id this instance ever used
                restored = self.outbox.restore(decode_signal)
            except (sqlite3.Error, BadMessage) as e:
                raise ValueError(f"--outbox {opts.outbox}: unreadable: {e}") from None
        # signal ids are unique for ever: with an outbox the counter goes on from the file; without one a fixed
        # --id gets a per-process session (a restart counting from 1 again would reuse ids, which the executor
        # answers from its ledger as repeats: the new signals would never be traded)
        self._id_prefix = (self.instance if store is not None or not opts.name
                           else f"{self.instance}.{os.urandom(4).hex()}")
        # acknowledgements of restored signals come under their sender's topic (another --id before)
        self._ack_topics = sorted({self.instance} | {e.signal.sender for e in restored})
        self.want = {s.encode() for s in opts.symbols} if opts.symbols else None
        self.stop_event = threading.Event()
        self.stats = {"md_messages": 0, "md_records": 0, "md_other_symbols": 0, "signals": 0, "sends": 0,
                      "resends": 0, "acks": 0, "acks_dup": 0, "acks_unknown": 0, "bad_acks": 0,
                      "refused_backpressure": 0, "hwm_blocked": 0, "filled_qty": 0, "outcomes": {},
                      "restored": len(restored)}
        self.latency_ns: list[int] = []
        self.md_lag_ns: list[int] = []
        self._sockets: list[zmq.Socket] = []
        self.strategy.bind(self._emit)
        self.strategy.on_start()         # may refuse its parameters (ValueError)

    # ---- sockets ------------------------------------------------------------------------------------
    def _open(self) -> None:
        ctx = self.ctx
        self.md = ctx.socket(zmq.SUB)
        self.md.setsockopt(zmq.LINGER, 0)
        self.md.setsockopt(zmq.RCVHWM, 100_000)
        for s in (self.opts.symbols or [""]):
            self.md.setsockopt(zmq.SUBSCRIBE, s.encode())
        self.push = ctx.socket(zmq.PUSH)
        self.push.setsockopt(zmq.LINGER, 0)
        self.push.setsockopt(zmq.SNDHWM, self.opts.hwm)
        self.acks = ctx.socket(zmq.SUB)
        self.acks.setsockopt(zmq.LINGER, 0)
        for topic in self._ack_topics:
            self.acks.setsockopt(zmq.SUBSCRIBE, topic.encode())
        self._sockets = [self.md, self.push, self.acks]
        try:
            for ep in self.opts.md:
                self.md.connect(ep)
            self.push.connect(self.opts.signals)
            if self.opts.acks:
                self.acks.connect(self.opts.acks)
        except zmq.ZMQError as e:
            self.close()
            raise EndpointError(f"bad endpoint: {e}") from None

    def close(self) -> None:
        for s in self._sockets:
            s.close(linger=0)
        self._sockets = []
        if self.outbox.store is not None:
            try:
                self.outbox.flush_acks()
            finally:
                self.outbox.store.close()

    # ---- signals ------------------------------------------------------------------------------------
    def _emit(self, symbol, side, qty, price, order_type, tif, reason, md_ts) -> str | None:
        self._n += 1
        sig = Signal(f"{self._id_prefix}.{self._n}", self.instance, symbol, side, qty, price, order_type, tif,
                     time.time_ns(), md_ts, self.opts.ttl_ms, reason)
        if not self.outbox.add(sig, sig.encode(), self._n):
            self.stats["refused_backpressure"] += 1
            self.strategy.backpressure = True
            return None
        self.stats["signals"] += 1
        self._flush(time.monotonic())
        return sig.id

    def _flush(self, now: float) -> None:
        for e in self.outbox.due(now):
            try:
                self.push.send(e.data, zmq.NOBLOCK)
            except zmq.Again:            # the high-water mark: the executor is slow or away
                self.stats["hwm_blocked"] += 1
                e.next_send = now + 0.05
                break
            self.stats["resends" if e.sends else "sends"] += 1
            self.outbox.sent(e, now)
        self.strategy.backpressure = self.outbox.full

    def _on_ack(self, frames: list[bytes]) -> None:
        try:
            ack = decode_ack(frames[-1])
        except BadMessage:
            self.stats["bad_acks"] += 1
            return
        e = self.outbox.ack(ack["id"])
        if e is None:
            self.stats["acks_unknown"] += 1        # a repeated acknowledgement of a resend
            return
        st = self.stats
        st["acks"] += 1
        st["acks_dup"] += bool(ack.get("dup"))
        st["filled_qty"] += int(ack.get("filled") or 0)
        st["outcomes"][ack["status"]] = st["outcomes"].get(ack["status"], 0) + 1
        if e.signal.md_ts:
            if len(self.latency_ns) >= LATENCY_KEEP:
                del self.latency_ns[: LATENCY_KEEP // 2]
            self.latency_ns.append(time.time_ns() - e.signal.md_ts)
        self.strategy.on_ack(e.signal, ack)
        self.strategy.backpressure = self.outbox.full

    # ---- the loop ---------------------------------------------------------------------------------
    def run(self) -> dict:
        self._open()
        try:
            t0 = time.monotonic()
            end = t0 + self.opts.duration if self.opts.duration else None
            self._loop(lambda now: self.stop_event.is_set() or (end is not None and now >= end))
            # drain: wait a little for the outstanding acknowledgements (resending as needed)
            drain_end = time.monotonic() + self.opts.drain
            self._loop(lambda now: not len(self.outbox) or now >= drain_end, md=False)
            return self.summary(time.monotonic() - t0)
        finally:
            self.close()

    def _loop(self, done, md: bool = True) -> None:
        poller = zmq.Poller()
        if md:
            poller.register(self.md, zmq.POLLIN)
        poller.register(self.acks, zmq.POLLIN)
        md_sock, acks = self.md, self.acks
        want = self.want
        strat = self.strategy
        st = self.stats
        tick_dtype = records.TICK_DTYPE
        next_check = 0.0
        while True:
            now = time.monotonic()
            if done(now):
                return
            if now >= next_check:
                if len(self.outbox):
                    self._flush(now)
                nd = self.outbox.next_due()
                next_check = min(now + 0.1, nd) if nd is not None else now + 0.1
            wait = max(0.0, min(next_check - now, 0.1))
            ready = dict(poller.poll(int(wait * 1000) + 1))
            if md and md_sock in ready:
                for _ in range(MD_BURST):
                    try:
                        topic, payload = md_sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    st["md_messages"] += 1
                    if want is not None and topic not in want:
                        st["md_other_symbols"] += 1     # a longer symbol sharing the prefix
                        continue
                    recs = np.frombuffer(payload, dtype=tick_dtype)
                    st["md_records"] += recs.shape[0]
                    strat.on_batch(topic.decode("ascii", "replace"), recs)
                    if st["md_messages"] % LAG_EVERY == 0 and len(self.md_lag_ns) < LATENCY_KEEP:
                        ts = _ts_recv_of_last(recs)
                        if ts:
                            self.md_lag_ns.append(time.time_ns() - ts)
            if acks in ready:
                while True:
                    try:
                        frames = acks.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self._on_ack(frames)
                self.outbox.flush_acks()

    def summary(self, elapsed: float) -> dict:
        lat = np.array(self.latency_ns, dtype=np.int64)
        out = {"strategy": self.opts.strategy, "instance": self.instance, "elapsed_s": round(elapsed, 3),
               **self.stats, "unacknowledged": self.outbox.pending_ids()}
        lag = np.array(self.md_lag_ns, dtype=np.int64)
        if lag.shape[0]:
            out["md_lag_us"] = {"count": int(lag.shape[0]), "p50": round(float(np.percentile(lag, 50)) / 1e3, 1),
                                "p99": round(float(np.percentile(lag, 99)) / 1e3, 1)}
        if lat.shape[0]:
            out["tick_to_ack_us"] = {"count": int(lat.shape[0]), "p50": round(float(np.percentile(lat, 50)) / 1e3, 1),
                                     "p99": round(float(np.percentile(lat, 99)) / 1e3, 1)}
        return out


def format_summary(s: dict) -> str:
    lines = [f"strategy {s['strategy']} ({s['instance']}) for {s['elapsed_s']:.1f} s: market data {s['md_messages']:,} "
             f"messages, {s['md_records']:,} records",
             f"  signals {s['signals']:,}: sent {s['sends']:,}, resent {s['resends']:,}, acknowledged {s['acks']:,} "
             f"({', '.join(f'{k} {v}' for k, v in s['outcomes'].items()) or '-'}; {s['acks_dup']} repeated by the "
             f"executor), filled qty {s['filled_qty']:,}",
             f"  backpressure: refused {s['refused_backpressure']:,} signals, high-water mark hit {s['hwm_blocked']:,} "
             f"times; unacknowledged at the end {len(s['unacknowledged'])}"
             + (f"; {s['restored']:,} restored from the outbox file" if s.get("restored") else "")]
    if s.get("tick_to_ack_us"):
        t = s["tick_to_ack_us"]
        lines.append(f"  tick -> acknowledgement: p50 {t['p50']} us, p99 {t['p99']} us ({t['count']:,} signals)")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="feedhandler strategy",
                                description="Run a trading strategy process: market data in (ZeroMQ SUB), signals "
                                            "out (PUSH, msgpack) to `feedhandler executor`. Holds no credentials.")
    p.add_argument("name", help=f"a registered strategy ({', '.join(sorted(REGISTRY))}) or module:Class")
    p.add_argument("--md", type=zmq_endpoint, action="append", required=True, metavar="ENDPOINT",
                   help="market-data PUB to subscribe to (repeat for several; feedhandler run|replay --publish or "
                        "the exchange's --md-port)")
    p.add_argument("--signals", type=zmq_endpoint, required=True, metavar="ENDPOINT", help="the executor's signal PULL endpoint")
    p.add_argument("--acks", type=zmq_endpoint, metavar="ENDPOINT", default=None,
                   help="the executor's acknowledgement PUB endpoint (default: none; then signals are resent "
                        "until --drain ends)")
    p.add_argument("--symbols", default=None, help="comma-separated tickers to trade (default: every symbol)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="a strategy parameter (repeat); breakout's: " + ", ".join(
                       f"{k}={v}" for k, v in __import__('engine.strategy.breakout', fromlist=['Breakout']).Breakout.PARAMS.items()))
    p.add_argument("--hwm", type=count_int, default=1000, help="signal PUSH send high-water mark in messages (default 1000)")
    p.add_argument("--max-pending", type=positive_int, default=1000,
                   help="unacknowledged signals held before new ones are refused (default 1000)")
    p.add_argument("--resend-after", type=positive_seconds, default=1.0,
                   help="seconds before an unacknowledged signal is sent again, doubling (default 1.0)")
    p.add_argument("--ttl-ms", type=positive_int, default=5000, help="signals older than this are not traded (default 5000)")
    p.add_argument("--duration", type=seconds, default=None, help="stop after this many seconds (default: SIGINT/SIGTERM)")
    p.add_argument("--drain", type=seconds, default=3.0,
                   help="seconds to wait for outstanding acknowledgements when stopping (default 3)")
    p.add_argument("--id", default=None, help="instance id (default: NAME.<random>, or the one stored in --outbox): the "
                                               "acknowledgement topic")
    p.add_argument("--outbox", default=None, metavar="PATH",
                   help="SQLite file keeping the unacknowledged signals: a restarted (even killed) process resends "
                        "them and numbers new ones after them (default: none, memory only)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_debug(p)
    return p


def _failed(a, e: Exception) -> int:
    if a.debug:
        import traceback

        traceback.print_exc()
    print(f"feedhandler strategy: {a.name} failed: {type(e).__name__}: {e}", file=sys.stderr)
    return EXIT_FAIL


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    try:
        a = p.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    symbols = [s.strip().upper() for s in a.symbols.split(",") if s.strip()] if a.symbols else None
    for name, v in (("--hwm", a.hwm), ("--max-pending", a.max_pending)):
        if v <= 0:
            print(f"feedhandler strategy: {name} must be positive", file=sys.stderr)
            return EXIT_USAGE
    opts = StrategyOptions(a.name, a.md, a.signals, a.acks, symbols, a.param, a.hwm, a.max_pending, a.resend_after,
                           a.ttl_ms, a.duration, a.drain, a.id, a.outbox)
    try:
        runner = StrategyRunner(opts)
    except ValueError as e:
        print(f"feedhandler strategy: {e}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:          # the strategy's on_start failed otherwise: one line (--debug: where), exit 1
        return _failed(a, e)
    why: list[int] = []

    def on_signal(signum, frame):
        why.append(signum)
        set_from_signal(runner.stop_event)   # never the event's lock inside the handler (engine.signals)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        s = runner.run()
    except EndpointError as e:
        print(f"feedhandler strategy: {e}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:          # the strategy's own code failed: one line (--debug: where), exit 1
        return _failed(a, e)
    finally:
        for k, h in old.items():
            signal.signal(k, h)
    print(json.dumps(s) if a.json else format_summary(s), flush=True)
    return EXIT_INTERRUPTED if why and why[0] == signal.SIGINT else EXIT_OK


if __name__ == "__main__":      # pragma: no cover
    sys.exit(main())
