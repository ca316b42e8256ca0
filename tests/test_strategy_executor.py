"""The executor against an in-process exchange (exactly-once orders, resume, expiry, invalid signals, retries
with backoff) and the strategy runner against in-process sockets (signals, acknowledgements, backpressure)."""
from __future__ import annotations

import threading
import time

import msgpack
import pytest
import zmq

from engine.client import Client
from engine.exchange import Exchange, load_config
from engine.strategy.executor import Executor, ExecutorOptions
from engine.strategy.ledger import Ledger
from engine.strategy.runner import StrategyOptions, StrategyRunner
from engine.strategy.signals import Signal, client_order_id, decode_ack, decode_signal
from feedhandler import records
from feedhandler.publish import TickPublisher

PX = 1_000_000_000


@pytest.fixture
def exchange(tmp_path):
    cfg = load_config(None, {"data_dir": str(tmp_path / "ex"), "gateway.endpoint": "tcp://127.0.0.1:*",
                             "marketdata.endpoint": "tcp://127.0.0.1:*", "history.enabled": False})
    with Exchange(cfg) as ex:
        with Client(ex.gateway.endpoint, "demo-mm", "demo-mm-secret", timeout=5) as mm:
            r = mm.submit("AAPL", "S", 100 * PX, 1000, tif="day")
            assert r["status"] == "ack"
        yield ex


def _executor(tmp_path, ex_endpoint, **kw):
    opts = ExecutorOptions("tcp://127.0.0.1:*", ex_endpoint, "demo-taker", b"demo-taker-secret",
                           acks="tcp://127.0.0.1:*", state=str(tmp_path / "ledger.sqlite"), **kw)
    return Executor(opts, ctx=zmq.Context.instance()).open()


def _signal(i, **kw):
    d = dict(id=f"t.{i}", sender="t", symbol="AAPL", side="B", qty=10, price=101 * PX, ts=time.time_ns(),
             ttl_ms=60_000)
    d.update(kw)
    return Signal(**d)


def _position(ex, account_key="demo-taker"):
    """The account's AAPL position (shares), from the exchange's portfolio."""
    with Client(ex.gateway.endpoint, account_key, account_key + "-secret", timeout=5) as c:
        r = c.position("AAPL")
    return r["portfolio"]["positions"].get("AAPL", {}).get("qty", 0)


def test_signal_becomes_one_order_and_a_repeat_is_acknowledged_from_the_ledger(exchange, tmp_path):
    ex = _executor(tmp_path, exchange.gateway.endpoint)
    try:
        s = _signal(1)
        a1 = ex.handle(s.encode())
        assert a1["status"] == "filled" and a1["filled"] == 10 and not a1["dup"]
        assert a1["client_order_id"] == client_order_id("t.1")
        a2 = ex.handle(s.encode())                        # the strategy resent it (no ack seen)
        assert a2["dup"] and a2["filled"] == 10 and a2["order_id"] == a1["order_id"]
        assert ex.stats["orders"] == 1 and ex.stats["order_sends"] == 1 and ex.stats["repeated"] == 1
    finally:
        ex.close()
    assert _position(exchange) == 10


def test_restart_finishes_a_signal_left_sending_and_the_exchange_dedups(exchange, tmp_path):
    """An executor died after sending the order, before recording the outcome: its successor resends with
    the same client order id; the exchange answers from its retry memory; one order, one fill."""
    s = _signal(2)
    coid = client_order_id(s.id)
    led = Ledger(str(tmp_path / "ledger.sqlite"))
    led.begin(s.id, s.sender, coid, s.encode())
    led.close()
    with Client(exchange.gateway.endpoint, "demo-taker", "demo-taker-secret", timeout=5) as c:
        first = c.submit("AAPL", "B", 101 * PX, 10, tif="ioc", client_order_id=coid)
    ex = _executor(tmp_path, exchange.gateway.endpoint)
    try:
        assert ex.resume() == 1
        assert ex.stats["resumed"] == 1 and ex.stats["exchange_dups"] == 1
        assert ex.ledger.get(s.id)[1]["order_id"] == first["events"][0]["order_id"]
        again = ex.handle(s.encode())
        assert again["dup"]
    finally:
        ex.close()
    assert _position(exchange) == 10


def test_expired_and_invalid_signals_are_acknowledged_not_traded(exchange, tmp_path):
    ex = _executor(tmp_path, exchange.gateway.endpoint)
    try:
        old = _signal(3, ts=time.time_ns() - 10_000_000_000, ttl_ms=1000)
        assert ex.handle(old.encode())["status"] == "expired"
        m = msgpack.unpackb(_signal(4).encode())
        m["side"] = "sideways"
        bad = ex.handle(msgpack.packb(m))
        assert bad["status"] == "invalid" and "side" in bad["reason"]
        assert ex.handle(b"\x00\x01junk") is None
        assert ex.stats["invalid"] == 2 and ex.stats["orders"] == 0
        assert ex.ledger.get("t.3")[0] == "done" and ex.ledger.get("t.4") is None
    finally:
        ex.close()
    assert _position(exchange) == 0


def test_no_exchange_retries_with_backoff_and_leaves_the_signal_sending(tmp_path):
    with zmq.Context.instance().socket(zmq.ROUTER) as dead:     # a port nobody answers on
        port = dead.bind_to_random_port("tcp://127.0.0.1")
    ex = _executor(tmp_path, f"tcp://127.0.0.1:{port}", timeout=0.05, backoff=0.02, max_backoff=0.16)
    done = []
    t = threading.Thread(target=lambda: done.append(ex.run()))
    t.start()
    try:
        push = zmq.Context.instance().socket(zmq.PUSH)
        push.connect(ex.signals_endpoint)
        push.send(_signal(5).encode())
        time.sleep(1.2)
    finally:
        ex.stop_event.set()
        t.join(10)
        push.close(0)
    s = done[0]
    # 0.02 + 0.04 + 0.08 + 0.16 + 0.16 ... with 0.05 s timeouts: about 8 sends in 1.2 s, not 24 (no backoff)
    assert 4 <= s["retries"] <= 14, s
    assert s["ledger"] == {"sending": 1}
    led = Ledger(str(tmp_path / "ledger.sqlite"))
    assert led.in_flight() == ["t.5"] and led.get("t.5")[2] == s["order_sends"]
    led.close()
    ex.close()


def _bbo_batch(symbol_id, mids):
    out = records.empty(len(mids))
    v = out.view(records.DTYPES["bbo"])
    v["rtype"] = records.RTYPE["bbo"]
    v["instrument_id"] = symbol_id
    v["bid_px"] = [m - PX // 100 for m in mids]
    v["ask_px"] = [m + PX // 100 for m in mids]
    v["ts_recv"] = time.time_ns()
    return out


def _directory(iid, sym):
    d = records.empty(1)
    v = d.view(records.DTYPES["stock_directory"])
    v["rtype"] = records.RTYPE["stock_directory"]
    v["instrument_id"] = iid
    v["symbol"] = sym.ljust(8).encode()
    return d


def test_runner_signals_acks_and_backpressure():
    ctx = zmq.Context.instance()
    pub = TickPublisher("tcp://127.0.0.1:*", "ticks", ctx=ctx).start()
    pull = ctx.socket(zmq.PULL)
    pull_port = pull.bind_to_random_port("tcp://127.0.0.1")
    ackpub = ctx.socket(zmq.PUB)
    ack_port = ackpub.bind_to_random_port("tcp://127.0.0.1")
    opts = StrategyOptions("breakout", [pub.endpoint], f"tcp://127.0.0.1:{pull_port}", f"tcp://127.0.0.1:{ack_port}",
                           ["AAPL"], ["window=3", "confirm_ticks=1", "cooldown=0", "max_position=1000", "qty=1"],
                           hwm=2, max_pending=3, resend_after=0.3, drain=1.0, name="bt")
    runner = StrategyRunner(opts, ctx=ctx)
    out = []
    t = threading.Thread(target=lambda: out.append(runner.run()))
    t.start()
    try:
        assert pub.wait_subscribers(1, 5) == 1
        pub.publish(_directory(7, "AAPLX"))                   # shares the prefix: filtered by the runner
        pub.publish(_directory(3, "AAPL"))
        pub.publish(_bbo_batch(7, [100 * PX, 101 * PX, 100 * PX, 110 * PX]))
        pub.publish(_bbo_batch(3, [100 * PX, 101 * PX, 100 * PX, 110 * PX]))     # one resistance break
        sig = decode_signal(pull.recv())
        assert sig.symbol == "AAPL" and sig.side == "B" and sig.sender == "bt" and sig.md_ts > 0
        # no acknowledgement: the runner resends after resend_after
        assert pull.poll(2000) and decode_signal(pull.recv()).id == sig.id
        ackpub.send_multipart([b"bt", msgpack.packb({"v": 1, "id": sig.id, "status": "filled", "filled": 1,
                                                     "order_id": 1, "client_order_id": "c", "reason": "",
                                                     "dup": False})])
        deadline = time.monotonic() + 5
        while runner.stats["acks"] < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert runner.stats["acks"] == 1 and not len(runner.outbox)
        # backpressure: nobody reads the PULL; the HWM (2 + the pull's queue) and then max_pending (3) bite
        pull.close(0)
        for k in range(30):
            pub.publish(_bbo_batch(3, [(200 + 10 * k) * PX]))
            time.sleep(0.01)
        deadline = time.monotonic() + 5
        while runner.stats["refused_backpressure"] == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert runner.stats["refused_backpressure"] > 0 and len(runner.outbox) == 3
    finally:
        runner.stop_event.set()
        t.join(10)
        pub.close()
        ackpub.close(0)
    s = out[0]
    assert s["md_other_symbols"] == 2            # AAPLX (directory, BBO) matched the AAPL prefix: left out
    assert s["acks"] == 1 and s["resends"] >= 1 and len(s["unacknowledged"]) == 3


class Recorder(__import__("engine.strategy", fromlist=["Strategy"]).Strategy):
    """A strategy that only records what it sees (for the exchange market-data test)."""
    PARAMS = {}
    seen: list = []

    def on_tick(self, tick):
        Recorder.seen.append((tick.symbol, tick.kind, tick.price, tick.size, tick.side))


def test_runner_reads_the_exchanges_own_market_data(exchange):
    """The exchange's PUB (engine.marketdata) has the same wire as the feed's: a strategy subscribes to it;
    a match is one trade tick (the maker's fill record of the same match is not counted twice)."""
    Recorder.seen = []
    opts = StrategyOptions("test_strategy_executor:Recorder", [exchange.marketdata.endpoint], "tcp://127.0.0.1:1",
                           None, ["AAPL"], drain=0.0, name="rec")
    runner = StrategyRunner(opts, ctx=zmq.Context.instance())
    t = threading.Thread(target=runner.run)
    t.start()
    try:
        time.sleep(0.5)                                 # the SUB connects (PUB drops what comes before)
        with Client(exchange.gateway.endpoint, "demo-taker", "demo-taker-secret", timeout=5) as c:
            assert c.submit("AAPL", "B", 101 * PX, 7, tif="ioc")["status"] == "ack"
        deadline = time.monotonic() + 5
        while not Recorder.seen and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        runner.stop_event.set()
        t.join(10)
    assert Recorder.seen == [("AAPL", "trade", 100 * PX, 7, "B")]
