"""``feedhandler executor``: trading signals in (ZeroMQ PULL, msgpack), orders out to the exchange.

    FEEDHANDLER_API_SECRET=demo-taker-secret feedhandler executor --signals tcp://127.0.0.1:5580 \\
        --acks tcp://127.0.0.1:5581 --endpoint tcp://127.0.0.1:5555 --api-key demo-taker --state exec.sqlite

The only process of the trading side that holds credentials (the API key's secret comes from
``$FEEDHANDLER_API_SECRET`` or ``--secret-file``, never from the command line, where ``ps`` shows it).

Per signal (one at a time, in arrival order):

1. decode and check it (:mod:`engine.strategy.signals`); a bad one is counted with its reason and, when
   its id can be read, acknowledged as ``invalid``;
2. look its id up in the ledger (:mod:`engine.strategy.ledger`): ``done`` -> acknowledge again from the
   ledger (``dup``), nothing sent; ``sending`` -> an earlier executor sent (or maybe sent) its order: send
   again with the same client order id, whatever the signal's age;
3. a new id older than its ``ttl_ms`` -> ``expired`` (recorded, acknowledged, never sent); else record it
   as ``sending`` (committed) and send the order through :class:`engine.client.Client` with the client
   order id :func:`engine.strategy.signals.client_order_id` (derived from the signal id);
4. no answer, ``busy``, ``rate_limited`` or ``unknown``: send again (same request id and client order id,
   so the exchange's retry memory makes it idempotent) after ``--backoff`` seconds, doubling up to
   ``--max-backoff``, for as long as it takes (a stopped exchange) or until the executor is stopped
   (the row stays ``sending``: the next executor finishes it);
5. record the outcome (committed), then acknowledge it on the ``--acks`` PUB under the signal's ``from``.

At start the executor first finishes every signal its predecessor left ``sending``. While it waits on the
exchange it reads no signals: they queue in its PULL socket (``--hwm``), then in the strategies' PUSH
sockets, whose high-water marks the strategies see as backpressure.

Exit codes: 0 ok (--duration, SIGTERM), 1 runtime failure, 2 usage (bad options, no secret, refused
credentials), 130 SIGINT.
"""
from __future__ import annotations

import argparse
import json
import os
import signal as _signal
import sys
import threading
import time
from dataclasses import dataclass

import zmq

from engine.signals import set_from_signal
from engine.strategy.ledger import Ledger
from feedhandler.cliopts import add_debug, count_int, positive_seconds, seconds, zmq_endpoint
from engine.strategy.signals import BadMessage, Signal, client_order_id, decode_signal, encode_ack, peek_id

__all__ = ["ExecutorOptions", "Executor", "main", "outcome_of"]

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
RETRYABLE = ("busy", "rate_limited", "outcome_unknown")
SECRET_ENV = "FEEDHANDLER_API_SECRET"


class Stopped(Exception):
    """The executor was asked to stop while it waited on the exchange."""


@dataclass
class ExecutorOptions:
    signals: str                      # PULL bind endpoint
    endpoint: str                     # exchange gateway
    api_key: str
    secret: bytes
    acks: str | None = None           # PUB bind endpoint
    state: str = "executor.sqlite"
    hwm: int = 1000                   # PULL receive high-water mark (messages)
    timeout: float = 0.5              # s to wait for one reply
    backoff: float = 0.05             # s, first retry pause (doubles)
    max_backoff: float = 2.0          # s
    durable: str = "process"          # ledger: process | power
    duration: float | None = None


def outcome_of(sig: Signal, coid: str, reply: dict) -> dict:
    """The acknowledgement of a signal from the exchange's reply to its order."""
    events = reply.get("events") or []
    order_id = next((e.get("order_id") for e in events if e.get("order_id") is not None), None)
    filled = sum(int(e.get("qty") or 0) for e in events if e.get("type") == "fill" and e.get("liquidity") != "maker")
    if reply.get("status") == "ack":
        status = "filled" if filled else "accepted"
        reason = ""
    else:
        status, reason = "rejected", str(reply.get("reason") or reply.get("status") or "")
    return {"id": sig.id, "status": status, "order_id": order_id, "filled": filled, "client_order_id": coid,
            "reason": reason, "dup": False, "md_ts": sig.md_ts, "exchange_dup": bool(reply.get("dup"))}


class Executor:
    def __init__(self, opts: ExecutorOptions, ctx: zmq.Context | None = None, client=None):
        self.opts = opts
        self.ctx = ctx or zmq.Context.instance()
        if client is None:
            from engine.client import Client

            client = Client(opts.endpoint, opts.api_key, opts.secret, timeout=opts.timeout, retries=0,
                            ctx=self.ctx)
        self.client = client
        self.ledger = Ledger(opts.state, opts.durable)
        self.stop_event = threading.Event()
        self.stats = {"signals": 0, "orders": 0, "order_sends": 0, "retries": 0, "repeated": 0, "resumed": 0,
                      "expired": 0, "invalid": 0, "invalid_reasons": {}, "acks": 0, "outcomes": {},
                      "exchange_dups": 0}
        self.pull = self.pub = None

    # ---- sockets ----------------------------------------------------------------------------------
    def open(self) -> "Executor":
        self.pull = self.ctx.socket(zmq.PULL)
        self.pull.setsockopt(zmq.LINGER, 0)
        self.pull.setsockopt(zmq.RCVHWM, self.opts.hwm)
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        try:
            self.pull.bind(self.opts.signals)
            if self.opts.acks:
                self.pub.bind(self.opts.acks)
        except zmq.ZMQError as e:
            self.close()
            raise OSError(e.errno, f"cannot bind: {e.strerror}") from None
        self.signals_endpoint = self.pull.getsockopt_string(zmq.LAST_ENDPOINT)
        self.acks_endpoint = self.pub.getsockopt_string(zmq.LAST_ENDPOINT) if self.opts.acks else None
        return self

    def close(self) -> None:
        for s in (self.pull, self.pub):
            if s is not None:
                s.close(linger=0)
        self.pull = self.pub = None
        self.client.close()
        self.ledger.close()

    # ---- the exchange ------------------------------------------------------------------------------
    def check_credentials(self) -> str | None:
        """None when the gateway accepts our key (or does not answer: it may be starting), else the reason."""
        try:
            reply = self.client.request({"type": "query", "what": "position"}, timeout=self.opts.timeout, retries=2)
        except Exception as e:      # engine.client.GatewayTimeout: not up yet, the signals will wait for it
            if type(e).__name__ == "GatewayTimeout":
                return None
            raise
        if reply.get("status") == "rejected" and "auth" in str(reply.get("reason", "")):
            return str(reply.get("reason"))
        return None

    def _order(self, sig: Signal, coid: str) -> dict:
        """Send the signal's order until the exchange answers with a final outcome (retries with backoff)."""
        req = {"type": "new", "client_order_id": coid, "symbol": sig.symbol, "side": sig.side,
               "price": sig.price if sig.price is not None else 0, "qty": sig.qty, "order_type": sig.order_type,
               "tif": sig.tif, "post_only": False, "rid": coid}
        pause = self.opts.backoff
        attempt = 0
        while True:
            if attempt:
                self.stats["retries"] += 1
                if self.stop_event.wait(pause):
                    raise Stopped()
                pause = min(pause * 2, self.opts.max_backoff)
            attempt += 1
            self.stats["order_sends"] += 1
            self.ledger.sent(sig.id)
            try:
                reply = self.client.request(dict(req), timeout=self.opts.timeout, retries=0)
            except Exception as e:
                if type(e).__name__ != "GatewayTimeout":
                    raise
                continue
            if reply.get("status") in ("busy", "unknown") or reply.get("reason") in RETRYABLE:
                continue
            return reply

    # ---- signals ------------------------------------------------------------------------------------
    def _ack(self, sender: str, outcome: dict) -> None:
        if self.pub is not None:
            self.pub.send_multipart([sender.encode(), encode_ack(outcome)])
        self.stats["acks"] += 1

    def _count(self, outcome: dict) -> None:
        o = self.stats["outcomes"]
        o[outcome["status"]] = o.get(outcome["status"], 0) + 1

    def handle(self, data: bytes) -> dict | None:
        """One signal message; returns its acknowledgement (None when it could not be identified)."""
        self.stats["signals"] += 1
        try:
            sig = decode_signal(data)
        except BadMessage as e:
            reason = str(e)
            key = reason.split(":")[0]
            self.stats["invalid"] += 1
            self.stats["invalid_reasons"][key] = self.stats["invalid_reasons"].get(key, 0) + 1
            sid, sender = peek_id(data)
            if sid is None or sender is None:
                return None
            out = {"id": sid, "status": "invalid", "order_id": None, "filled": 0, "client_order_id": "",
                   "reason": reason, "dup": False}
            self._ack(sender, out)
            return out
        return self._handle(sig, data)

    def _handle(self, sig: Signal, data: bytes, resume: bool = False) -> dict:
        coid = client_order_id(sig.id)
        row = self.ledger.get(sig.id)
        if row is not None and row[0] == "done":
            out = dict(row[1], dup=True)
            self.stats["repeated"] += 1
            self._ack(sig.sender, out)
            return out
        if row is None:
            if sig.expired(time.time_ns()):
                out = {"id": sig.id, "status": "expired", "order_id": None, "filled": 0, "client_order_id": coid,
                       "reason": f"older than its ttl of {sig.ttl_ms} ms", "dup": False, "md_ts": sig.md_ts}
                self.ledger.finish(sig.id, sig.sender, coid, data, out)
                self.stats["expired"] += 1
                self._count(out)
                self._ack(sig.sender, out)
                return out
            self.ledger.begin(sig.id, sig.sender, coid, data)
            self.stats["orders"] += 1
        else:
            self.stats["resumed"] += 1      # left 'sending' by an executor that stopped
        reply = self._order(sig, coid)
        out = outcome_of(sig, coid, reply)
        self.stats["exchange_dups"] += out.pop("exchange_dup")
        self.ledger.finish(sig.id, sig.sender, coid, data, out)
        self._count(out)
        self._ack(sig.sender, out)
        return out

    def resume(self) -> int:
        """Finish the signals an earlier executor left in the sending state; returns how many."""
        n = 0
        for sid in self.ledger.in_flight():
            blob = self.ledger.db.execute("SELECT signal FROM signals WHERE id = ?", (sid,)).fetchone()[0]
            self._handle(decode_signal(blob), blob, resume=True)
            n += 1
        return n

    def run(self) -> dict:
        t0 = time.monotonic()
        end = t0 + self.opts.duration if self.opts.duration else None
        try:
            self.resume()
            poller = zmq.Poller()
            poller.register(self.pull, zmq.POLLIN)
            while not self.stop_event.is_set():
                if end is not None and time.monotonic() >= end:
                    break
                if not poller.poll(100):
                    continue
                while not self.stop_event.is_set():
                    try:
                        data = self.pull.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self.handle(data)
        except Stopped:
            pass
        return {**self.stats, "elapsed_s": round(time.monotonic() - t0, 3), "ledger": self.ledger.counts()}


def format_summary(s: dict) -> str:
    return (f"executor for {s['elapsed_s']:.1f} s: signals {s['signals']:,} (orders {s['orders']:,}, resumed "
            f"{s['resumed']}, repeated from the ledger {s['repeated']}, expired {s['expired']}, invalid {s['invalid']}"
            f"{' ' + json.dumps(s['invalid_reasons']) if s['invalid_reasons'] else ''}); order sends "
            f"{s['order_sends']:,} ({s['retries']:,} retries, {s['exchange_dups']} answered from the exchange's retry "
            f"memory); outcomes {json.dumps(s['outcomes'])}; ledger {json.dumps(s['ledger'])}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="feedhandler executor",
                                description="Receive strategy signals (ZeroMQ PULL, msgpack) and send them as orders "
                                            "to the exchange, each exactly once (ledger + idempotent client order ids).")
    p.add_argument("--signals", type=zmq_endpoint, required=True, metavar="ENDPOINT", help="PULL endpoint to bind for signals")
    p.add_argument("--acks", type=zmq_endpoint, default=None, metavar="ENDPOINT",
                   help="PUB endpoint to bind for acknowledgements to the strategies (default: none)")
    p.add_argument("--endpoint", type=zmq_endpoint, default="tcp://127.0.0.1:5555",
                   help="the exchange gateway (default tcp://127.0.0.1:5555)")
    p.add_argument("--api-key", default=os.environ.get("FEEDHANDLER_API_KEY"),
                   help="API key (default $FEEDHANDLER_API_KEY)")
    p.add_argument("--secret-file", default=None,
                   help=f"file holding the API secret (default: ${SECRET_ENV}; never on the command line)")
    p.add_argument("--state", default="executor.sqlite", help="the ledger of handled signals (default executor.sqlite)")
    p.add_argument("--durable", choices=("process", "power"), default="process",
                   help="ledger commits survive a killed process (default) or also a power loss (fsync each)")
    p.add_argument("--hwm", type=count_int, default=1000, help="signal PULL receive high-water mark (default 1000)")
    p.add_argument("--timeout", type=positive_seconds, default=0.5, help="seconds to wait for one exchange reply (default 0.5)")
    p.add_argument("--backoff", type=seconds, default=0.05, help="first retry pause in seconds, doubling (default 0.05)")
    p.add_argument("--max-backoff", type=seconds, default=2.0, help="longest retry pause in seconds (default 2)")
    p.add_argument("--duration", type=seconds, default=None, help="stop after this many seconds (default: SIGINT/SIGTERM)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_debug(p)
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    try:
        a = p.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)

    def fail(msg: str, code: int = EXIT_USAGE) -> int:
        print(f"feedhandler executor: {msg}", file=sys.stderr)
        return code

    if not a.api_key:
        return fail("no API key: --api-key or $FEEDHANDLER_API_KEY")
    if a.secret_file:
        try:
            with open(a.secret_file, "rb") as f:
                secret = f.read().strip()
        except OSError as e:
            return fail(f"--secret-file: {e.strerror}: {a.secret_file}")
    else:
        secret = os.environ.get(SECRET_ENV, "").encode()
    if not secret:
        return fail(f"no API secret: ${SECRET_ENV} or --secret-file")
    if a.hwm <= 0 or a.timeout <= 0 or a.backoff <= 0 or a.max_backoff < a.backoff:
        return fail("--hwm, --timeout and --backoff must be positive, --max-backoff at least --backoff")
    opts = ExecutorOptions(a.signals, a.endpoint, a.api_key, secret, a.acks, a.state, a.hwm, a.timeout, a.backoff,
                           a.max_backoff, a.durable, a.duration)
    try:
        ex = Executor(opts).open()
    except (OSError, ValueError) as e:
        return fail(str(e))
    except Exception as e:          # sqlite3.Error: a ledger we cannot open
        return fail(f"--state {a.state}: {e}")
    why: list[int] = []

    def on_signal(signum, frame):
        why.append(signum)
        set_from_signal(ex.stop_event)       # never the event's lock inside the handler (engine.signals)

    old = {s: _signal.signal(s, on_signal) for s in (_signal.SIGINT, _signal.SIGTERM)}
    try:
        bad = ex.check_credentials()
        if bad:
            return fail(f"the exchange refused the API key {a.api_key!r}: {bad}")
        print(f"executor up: signals={ex.signals_endpoint} acks={ex.acks_endpoint} exchange={a.endpoint}", flush=True)
        s = ex.run()
    except Exception as e:          # one line (--debug: the traceback), exit 1
        if a.debug:
            import traceback

            traceback.print_exc()
        return fail(f"{type(e).__name__}: {e}", EXIT_FAIL)
    finally:
        for k, h in old.items():
            _signal.signal(k, h)
        ex.close()
    print(json.dumps(s) if a.json else format_summary(s), flush=True)
    return EXIT_INTERRUPTED if why and why[0] == _signal.SIGINT else EXIT_OK


if __name__ == "__main__":      # pragma: no cover
    sys.exit(main())
