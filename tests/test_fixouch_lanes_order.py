"""Answers of the asynchronous request path of the FIX and OUCH acceptors keep the exchange's order (issue 10,
per-shard lanes through the acceptors): a request's reply comes back to the acceptor's loop through the
same queue as the events routed from other requests, so a fill of an order the exchange accepted just
before (caused by another account's request) is never reported before the order's own acceptance, even
when a drain of that queue scheduled earlier runs first. Deterministic: the engine thread's work is
awaited without yielding to the loop, so every callback is queued before the loop runs any of them."""
from __future__ import annotations

import asyncio
import time

import pytest

from _durability_support import SPEC
from engine.fix.acceptor import OrderApplication
from engine.fix.message import encode, split_fields, utc_timestamp
from engine.fix.session import FixSession
from engine.fix.store import MemoryStore
from engine.gateway import OrderPipeline
from engine.manager import EngineManager
from engine.ouch.acceptor import OuchAcceptor
from engine.risk import RiskLimits, RiskManager
from feedhandler.protocols import ouch42
from feedhandler.protocols.fix_dictionary import FixDictionary

pytestmark = pytest.mark.skipif(not SPEC.is_dir(), reason=f"{SPEC} (shared reference data) not present")
PX = 1_000_000_000


def settle(pipe: OrderPipeline) -> None:
    """Wait (without yielding to the event loop) until the engine thread has answered everything queued."""
    end = time.monotonic() + 5
    while (pipe._pending or pipe._inq) and time.monotonic() < end:
        time.sleep(0.005)
    time.sleep(0.05)          # the delivery after the release


def buy(pipe: OrderPipeline, rid: str, qty: int, price: int) -> None:
    """Another account's IOC buy (from this thread: it waits for the engine thread)."""
    r = pipe.handle("ACC-2", "other", {"type": "new", "client_order_id": rid, "symbol": "AAPL", "side": "B",
                                       "qty": qty, "price": price * PX, "order_type": "limit", "tif": "ioc",
                                       "rid": rid})
    assert r["status"] == "ack", r


def test_fix_fill_of_a_new_order_is_reported_after_its_acceptance():
    eng = EngineManager(["AAPL"])
    pipe = OrderPipeline(eng, RiskManager(RiskLimits(price_band_bps=0))).start()
    app = OrderApplication(pipe, {"C": "ACC-1"})
    out: list = []
    s = FixSession(FixDictionary.load(SPEC / "FIX44.xml"), "X", "C", MemoryStore(), app)
    s.connection_made(out.append, lambda: None)
    app.bind(s)
    seq = iter(range(1, 100))

    def send(msgtype, body):
        s.data_received(encode(b"FIX.4.4", msgtype, [(34, next(seq)), (49, b"C"), (52, utc_timestamp()),
                                                    (56, b"X")], body))

    def new(clid: bytes, price: bytes):
        send(b"D", [(11, clid), (38, b"10"), (40, b"2"), (44, price), (54, b"2"), (55, b"AAPL"),
                    (60, utc_timestamp())])

    async def main():
        app._loop_call = asyncio.get_running_loop().call_soon_threadsafe     # as FixAcceptor.start_async
        send(b"A", [(98, 0), (108, 30)])
        new(b"S-0", b"100")
        assert s.held                            # answered later, through the loop
        while s.held:
            await asyncio.sleep(0.01)
        buy(pipe, "b0", 10, 100)                 # fills S-0: routed, its drain queued on the loop
        new(b"S-1", b"101")                      # held; the engine thread answers it (queued) ...
        settle(pipe)
        buy(pipe, "b1", 4, 101)                  # ... then fills it (routed, queued after the answer)
        while s.held:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)

    try:
        asyncio.run(main())
    finally:
        pipe.stop()
        eng.close()
    ers = [dict(split_fields(r)) for r in out if b"\x0135=8\x01" in r]
    got = [(e[11], e[150], e[14]) for e in ers]
    assert got == [(b"S-0", b"0", b"0"), (b"S-0", b"F", b"10"), (b"S-1", b"0", b"0"), (b"S-1", b"F", b"4")], got
    seqs = [int(dict(split_fields(r))[34]) for r in out]
    assert seqs == list(range(1, len(out) + 1))
    assert s.next_target == 4                    # Logon, S-0, S-1: each MsgSeqNum consumed once


def test_ouch_fill_of_a_new_order_is_reported_after_its_acceptance():
    users = {"alice": ("pw-a", "ACC-1")}
    eng = EngineManager(["AAPL"])
    pipe = OrderPipeline(eng, RiskManager(RiskLimits(price_band_bps=0))).start()
    acc = OuchAcceptor(pipe, users, session="SESSION01")
    pipe.register_sink("ACC-1", lambda ev: acc._route("alice", ev))

    def enter(tok: str, price: int):
        return acc._on_ouch("alice", ouch42.encode(
            "enter_order", order_token=tok, side=b"S", shares=10, stock="AAPL", price=price,
            time_in_force=99999, firm="F", display=b"Y", capacity=b"A", intermarket_sweep=b"N",
            minimum_quantity=0, cross_type=b"N", customer_type=b"R"))

    async def main():
        acc.loop = asyncio.get_running_loop()    # as OuchAcceptor.start_async
        w = enter("A0", 1_000_000)
        assert w is not None                     # answered later, through the loop
        await w
        buy(pipe, "b0", 10, 100)                 # fills A0: routed, its drain queued on the loop
        w = enter("A1", 1_010_000)               # waiting; the engine thread answers it (queued) ...
        assert w is not None
        settle(pipe)
        buy(pipe, "b1", 4, 101)                  # ... then fills it (routed, queued after the answer)
        await w
        await asyncio.sleep(0.05)

    try:
        asyncio.run(main())
    finally:
        pipe.stop()
        eng.close()
    out = [ouch42.decode(m, "out") for m in acc.stream("alice").msgs]
    got = [(n, f["order_token"].strip(), f.get("executed_shares")) for n, f in out]
    assert got == [("accepted", b"A0", None), ("executed", b"A0", 10), ("accepted", b"A1", None),
                   ("executed", b"A1", 4)], got
    assert acc.stats["orphan_events"] == 0


class SlowEngine:
    """An engine that takes ``delay`` seconds per batch (an order still with the exchange when stop() comes)."""

    def __init__(self, eng, delay: float):
        self._eng, self.delay = eng, delay

    def __getattr__(self, name):
        return getattr(self._eng, name)

    def submit_many(self, reqs):
        time.sleep(self.delay)
        return self._eng.submit_many(reqs)


def test_fix_stop_stores_the_report_of_an_order_still_with_the_exchange():
    pytest.importorskip("simplefix")
    from _durability_fix import FixClient
    from engine.fix.acceptor import FixAcceptor, SessionConfig

    eng = EngineManager(["AAPL"])
    pipe = OrderPipeline(SlowEngine(eng, 0.8), RiskManager(RiskLimits(price_band_bps=0))).start()
    acc = FixAcceptor([SessionConfig("FIX.4.4", "EXCH", "C", "ACC-1")], OrderApplication(pipe, {"C": "ACC-1"}),
                      SPEC).start()
    c = FixClient(acc.port, "C", "FIX.4.4", 1)
    try:
        c.send(b"A", [(98, 0), (108, 30)])
        c.pump(timeout=0.5)
        c.send(b"D", [(11, "S-0"), (21, "1"), (55, "AAPL"), (54, "2"), (38, "1"), (40, "2"), (44, "100"),
                      (59, "1"), (60, utc_timestamp().decode())])
        time.sleep(0.2)                           # with the (slow) engine now
        acc.stop()
    finally:
        c.close()
        pipe.stop()
        eng.close()
    s = next(iter(acc.sessions.values()))
    stored = [dict(split_fields(r)) for r in s.store.history()]
    assert [(m[35], m.get(11), m.get(150)) for m in stored if m[35] == b"8"] == [(b"8", b"S-0", b"0")]
    assert s.next_target == 3                     # the order's MsgSeqNum consumed after its report


def test_ouch_stop_stores_the_answer_of_a_request_still_with_the_exchange():
    import socket
    from feedhandler.protocols import soupbintcp as soup

    eng = EngineManager(["AAPL"])
    pipe = OrderPipeline(SlowEngine(eng, 0.8), RiskManager(RiskLimits(price_band_bps=0))).start()
    acc = OuchAcceptor(pipe, {"alice": ("pw-a", "ACC-1")}, session="SESSION01").start()
    c = socket.create_connection(("127.0.0.1", acc.port), timeout=5)
    try:
        c.sendall(soup.login_request("alice", "pw-a", "", 0))
        time.sleep(0.2)
        c.sendall(soup.unsequenced(ouch42.encode(
            "enter_order", order_token="A0", side=b"S", shares=10, stock="AAPL", price=1_000_000,
            time_in_force=99999, firm="F", display=b"Y", capacity=b"A", intermarket_sweep=b"N",
            minimum_quantity=0, cross_type=b"N", customer_type=b"R")))
        time.sleep(0.2)                           # with the (slow) engine now
        acc.stop()
    finally:
        c.close()
        pipe.stop()
        eng.close()
    out = [ouch42.decode(m, "out") for m in acc.stream("alice").msgs]
    assert [(n, f["order_token"].strip()) for n, f in out] == [("accepted", b"A0")]
