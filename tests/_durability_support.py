"""Helpers shared by the durability tests of issue 10 (test_gateway_durability, test_fixouch_durability,
test_ops_standby, test_failover_state, test_durability_suite): exchange processes, the load generators
(gateway traders over engine.client, FIX sessions over simplefix) and the check of what the clients were
acknowledged against the events of a journal replay."""
from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

PX = 1_000_000_000
SPEC = Path(__file__).resolve().parents[2] / "shared" / "data" / "fix" / "spec"   # QuickFIX dictionaries


def _ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999            # Linux's default


def free_port() -> int:
    """A loopback port that is free now and that no outgoing connection will take before the process
    under test binds it: picked below the kernel's ephemeral range. (A port from bind(0) comes from that
    range, and CI once saw the exchange's own ZeroMQ connections to its shard servers take the gateway
    port in between: "Address already in use".)"""
    lo, _ = _ephemeral_range()
    top = min(lo, 65536) - 1
    if top > 11000:
        for port in random.Random().sample(range(10000, top), 200):
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
            finally:
                s.close()
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_for(cond, timeout=10.0, step=0.01) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return False


# ---- `feedhandler ...` processes --------------------------------------------------------------------------
def fh_script() -> str:
    exe = Path(sys.executable).parent / "feedhandler"
    if not exe.exists():
        pytest.skip("the feedhandler console script is not installed next to this Python")
    return str(exe)


def popen(*args):
    return subprocess.Popen([fh_script(), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))


def read_until(p, pattern: str, timeout: float = 30.0) -> re.Match:
    import selectors
    sel = selectors.DefaultSelector()
    sel.register(p.stdout, selectors.EVENT_READ)
    end = time.monotonic() + timeout
    seen = []
    while time.monotonic() < end:
        if not sel.select(0.2):
            if p.poll() is not None:
                break
            continue
        line = p.stdout.readline()
        if not line:
            break
        seen.append(line)
        m = re.search(pattern, line)
        if m:
            return m
    raise AssertionError(f"no {pattern!r} in {seen}; stderr: {p.stderr.read() if p.poll() is not None else ''}")


def stop(p, sig=signal.SIGTERM):
    if p.poll() is None:
        os.kill(p.pid, signal.SIGCONT)
        p.send_signal(sig)
        try:
            p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate(timeout=10)
    else:
        p.communicate(timeout=10)


# ---- gateway clients (engine.client over ZeroMQ) -----------------------------------------------------------
class Trader(threading.Thread):
    """One account: new orders around 100 (some outside a 10 % price band), cancels of its resting orders by
    original client order id; a request that got no answer (the exchange was down) is retried with the same
    rid and ids until it is answered, as the client library does. A reply "unknown" (a shard that did not
    answer in time) is asked about once more with the same request (it must never become a second order,
    nor a reject of an order that then rests); its outcome arrives as an execution report (settlement)."""

    def __init__(self, endpoint: str, k: int, stop: threading.Event, account: str, symbols=("AAPL",),
                 seed: int = 0, pause: float = 0.0):
        super().__init__(daemon=True)
        self.endpoint, self.k, self.stop_ev = endpoint, k, stop
        self.acct = account
        self.symbols = list(symbols)
        self.rng = random.Random(seed * 1000 + k)
        self.pause = pause
        self.acked: dict[str, dict] = {}        # client order id -> ack reply
        self.rejected: dict[str, str] = {}
        self.unknown: dict[str, dict] = {}      # client order id -> the "unknown" reply
        self.settled: dict[str, dict] = {}      # client order id -> first execution report after "unknown"
        self.execs: list[dict] = []
        self.cancel_acks: list[dict] = []
        self.timeouts = 0
        self.retries = 0
        self.error = None

    def _request(self, c, req: dict) -> dict:
        from engine.client import GatewayTimeout
        late = 0
        while True:
            try:
                return c.request(dict(req))
            except GatewayTimeout:
                self.timeouts += 1      # the exchange is down: the same rid and ids again
                late += self.stop_ev.is_set()
                if late > 10:           # the exchange is up again by then: something is wrong
                    raise

    def _collect(self, c, timeout: float = 0.0) -> None:
        for ev in c.executions(timeout):
            self.execs.append(ev)
            clid = ev.get("client_order_id")
            if clid in self.unknown and clid not in self.settled:
                self.settled[clid] = ev

    def run(self):
        from engine.client import Client
        try:
            with Client(self.endpoint, f"key{self.k}", f"secret{self.k}", timeout=0.3, retries=2,
                        backoff=0.02) as c:
                i = 0
                while not self.stop_ev.is_set():
                    i += 1
                    if self.pause:
                        time.sleep(self.pause)
                    self._collect(c)
                    if self.acked and self.rng.random() < 0.25:
                        clid = self.rng.choice(sorted(self.acked))
                        r = self._request(c, {"type": "cancel", "rid": f"{self.acct}-x{i}",
                                              "orig_client_order_id": clid})
                        if r["status"] == "ack":
                            self.cancel_acks.append(r)
                        continue
                    clid = f"{self.acct}-{i}"
                    req = {"type": "new", "rid": f"{self.acct}-r{i}", "client_order_id": clid,
                           "symbol": self.rng.choice(self.symbols), "side": self.rng.choice("BS"),
                           "price": self.rng.randint(85, 115) * PX, "qty": self.rng.randint(1, 4)}
                    r = self._request(c, req)
                    if r["status"] == "unknown":
                        self.unknown[clid] = r
                        time.sleep(self.rng.uniform(0.0, 0.3))
                        r = self._request(c, req)          # the same request again: its first outcome
                    self.retries = c.retries_done
                    if r["status"] == "ack":
                        self.acked[clid] = r
                    elif r["status"] != "unknown":
                        self.rejected[clid] = r.get("reason")
                if self.unknown:        # the settlements of what was answered "unknown"
                    end = time.monotonic() + 15
                    while len(self.settled) < len(self.unknown) and time.monotonic() < end:
                        self._collect(c, 0.2)
        except Exception as e:   # reported by the test
            self.error = e


def event_key(ev: dict) -> tuple:
    return (ev["type"], ev["order_id"], ev.get("trade_id", 0), ev["seq"])


def check_acknowledged(evs: list[dict], traders: list[Trader], *, max_pos: int, band_bps: int,
                       ref_prices: dict[str, int], shard_of=None) -> tuple[Counter, int]:
    """Check the events of a journal replay (``request`` markers included) against what the traders were told:

    - every acknowledged order is accepted exactly once (no retry entered twice) with the acknowledged
      order id; every acknowledged fill and cancel is in the journal;
    - every accepted order was inside the price band of the reference of its moment (the configured price
      until the symbol's first trade, then the last trade) and within ``max_pos`` per account and symbol
      (position + open orders on the same side);
    - no order the traders were told "rejected" was ever accepted.

    ``shard_of(event) -> key`` separates the sequences of several shard journals (seq restarts per shard).
    Returns (accepted count per (account, client order id), number of acknowledged orders)."""
    shard_of = shard_of or (lambda ev: 0)
    accepted: Counter = Counter()
    accepted_oid = {}
    seen = set()
    ref_hist = {s: [(-1, r)] for s, r in ref_prices.items()}     # symbol -> [(seq, reference)]
    traded = set()
    pos: Counter = Counter()
    open_orders = {}
    for ev in evs:
        t = ev["type"]
        if t == "request":
            continue
        seen.add((shard_of(ev),) + event_key(ev))
        sym = ev.get("symbol")
        if t == "accepted":
            key = (ev["account"], ev["client_order_id"])
            accepted[key] += 1
            accepted_oid[key] = ev["order_id"]
            # risk decides a whole engine batch against the state at its start (+ reservations), so the
            # reference may be that of a few requests earlier (batches here hold a few requests); before the
            # symbol's first trade the BBO mid (itself inside the band) may be the reference
            hist = ref_hist[sym]
            refs = [r for s, r in hist if s >= ev["seq"] - 8] + [r for s, r in hist if s < ev["seq"] - 8][-1:]
            band = band_bps if sym in traded else 2 * band_bps
            assert any(abs(ev["price"] - r) * 10_000 <= band * r for r in refs), (ev, refs, band)
            open_orders[ev["order_id"]] = [ev["account"], ev["side"], ev["leaves_qty"], sym]
            same = sum(o[2] for o in open_orders.values()
                       if o[0] == ev["account"] and o[1] == ev["side"] and o[3] == sym)
            p = pos[(ev["account"], sym)]
            worst = p + same if ev["side"] == "B" else -p + same
            assert worst <= max_pos, (ev, p, same)
        elif t == "fill":
            if ev["liquidity"] == "taker":
                ref_hist[sym].append((ev["seq"], ev["price"]))
                traded.add(sym)
            pos[(ev["account"], sym)] += ev["qty"] if ev["side"] == "B" else -ev["qty"]
            o = open_orders.get(ev["order_id"])
            if o is not None:
                o[2] -= ev["qty"]
        elif t in ("canceled", "expired"):
            open_orders.pop(ev["order_id"], None)
        if t in ("fill", "canceled", "expired") and not ev.get("leaves_qty"):
            open_orders.pop(ev["order_id"], None)
    n_acked = 0
    for tr in traders:
        for clid, r in tr.acked.items():
            n_acked += 1
            key = (tr.acct, clid)
            assert accepted[key] == 1, (key, accepted[key])          # acknowledged, and entered once
            assert accepted_oid[key] == r["events"][0]["order_id"]
            for ev in r["events"]:                                  # every acknowledged fill is there
                assert (shard_of(ev),) + event_key(ev) in seen, ev
        for r in tr.cancel_acks:
            for ev in r["events"]:
                assert (shard_of(ev),) + event_key(ev) in seen, ev
        for clid, reason in tr.rejected.items():                     # a reject is never an order after all
            assert accepted[(tr.acct, clid)] == 0, (tr.acct, clid, reason)
    dup = [k for k, n in accepted.items() if n > 1]
    assert not dup, dup
    return accepted, n_acked
