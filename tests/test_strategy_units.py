"""Strategy side, unit level: signal messages, the outbox, the ledger, the breakout levels and signals, the
tick view of market-data messages, strategy loading."""
from __future__ import annotations

import random

import msgpack
import numpy as np
import pytest

pytest.importorskip("msgpack")

from engine.strategy.base import Strategy, Tick, coerce_params, ticks_of
from engine.strategy.breakout import Breakout, Levels
from engine.strategy.ledger import Ledger
from engine.strategy.outbox import Outbox
from engine.strategy.runner import load_strategy
from engine.strategy.signals import (BadMessage, Signal, client_order_id, decode_ack, decode_signal, encode_ack,
                                     peek_id)
from feedhandler import records

PX = 1_000_000_000


# ---- signals ------------------------------------------------------------------------------------------
def _sig(**kw):
    d = dict(id="s.1", sender="s", symbol="AAPL", side="B", qty=10, price=150 * PX, ts=123, md_ts=100, ttl_ms=5000,
             reason="r")
    d.update(kw)
    return Signal(**d)


def test_signal_round_trip():
    s = _sig()
    assert decode_signal(s.encode()) == s


@pytest.mark.parametrize("change, reason", [
    ({"side": "X"}, "side"), ({"qty": 0}, "qty"), ({"qty": True}, "qty"), ({"price": -1}, "price"),
    ({"symbol": ""}, "symbol"), ({"tif": "never"}, "tif"), ({"v": 2}, "version"), ({"id": ""}, "id"),
    ({"order_type": "stop"}, "order_type"), ({"price": None}, "price"),
])
def test_bad_signals_say_why(change, reason):
    m = msgpack.unpackb(_sig().encode())
    m.update(change)
    with pytest.raises(BadMessage, match=reason):
        decode_signal(msgpack.packb(m))


def test_not_msgpack_and_peek():
    with pytest.raises(BadMessage, match="msgpack|map"):
        decode_signal(b"\xc1garbage")
    assert peek_id(b"\xc1") == (None, None)
    m = msgpack.unpackb(_sig().encode())
    m["qty"] = -5
    assert peek_id(msgpack.packb(m)) == ("s.1", "s")


def test_market_signal_needs_no_price():
    s = _sig(price=None, order_type="market")
    assert decode_signal(s.encode()).price is None


def test_client_order_id_is_derived_and_fits():
    a, b = client_order_id("x.1"), client_order_id("x.2")
    assert a == client_order_id("x.1") and a != b and len(a) <= 64 and a.isascii()


def test_expiry():
    s = _sig(ts=0, ttl_ms=10)
    assert s.expired(11_000_000) and not s.expired(9_000_000)
    assert not _sig(ts=0, ttl_ms=0).expired(10**18)


def test_ack_round_trip_and_check():
    a = {"id": "s.1", "status": "filled", "filled": 10, "order_id": 7, "client_order_id": "c", "reason": "", "dup": False}
    assert decode_ack(encode_ack(a))["filled"] == 10
    with pytest.raises(BadMessage, match="status"):
        decode_ack(encode_ack(dict(a, status="maybe")))


# ---- outbox ---------------------------------------------------------------------------------------------
def test_outbox_refuses_when_full_and_backs_off():
    ob = Outbox(capacity=2, resend_after_s=1.0, max_resend_s=3.0)
    s1, s2, s3 = _sig(id="a"), _sig(id="b"), _sig(id="c")
    assert ob.add(s1, b"1") and ob.add(s2, b"2")
    assert not ob.add(s3, b"3") and ob.refused == 1 and ob.full
    due = ob.due(0.0)
    assert [e.signal.id for e in due] == ["a", "b"]
    for e in due:
        ob.sent(e, 10.0)
    assert ob.due(10.5) == []
    assert [e.signal.id for e in ob.due(11.0)] == ["a", "b"]        # resend after 1 s
    e = ob.due(11.0)[0]
    ob.sent(e, 11.0)                                                  # second send: wait 2 s
    assert e.next_send == 13.0
    ob.sent(e, 13.0)
    ob.sent(e, 16.0)
    assert e.next_send == 19.0                                        # capped at 3 s
    assert ob.ack("a") is e and ob.ack("a") is None and len(ob) == 1
    assert ob.add(s3, b"3")


# ---- ledger ---------------------------------------------------------------------------------------------
def test_ledger_survives_reopen(tmp_path):
    path = str(tmp_path / "l.sqlite")
    led = Ledger(path)
    led.begin("a", "s", "coid-a", b"sig-a")
    led.sent("a")
    led.finish("b", "s", "coid-b", b"sig-b", {"id": "b", "status": "expired"})
    led.close()
    led = Ledger(path)
    assert led.get("a") == ("sending", None, 1)
    assert led.get("b")[0] == "done" and led.get("b")[1]["status"] == "expired"
    assert led.in_flight() == ["a"]
    led.finish("a", "s", "coid-a", b"sig-a", {"id": "a", "status": "filled", "filled": 5})
    assert led.in_flight() == [] and led.get("a")[1]["filled"] == 5
    assert led.counts() == {"done": 2}
    with pytest.raises(ValueError):
        Ledger(path, durable="maybe")


# ---- breakout ---------------------------------------------------------------------------------------------
def test_levels_match_a_naive_window():
    rng = random.Random(7)
    for window in (2, 3, 10, 50):
        lv = Levels(window)
        prices = [rng.randrange(90, 110) for _ in range(500)]
        for i, p in enumerate(prices):
            lv.push(p)
            w = prices[max(0, i + 1 - window): i + 1]
            assert (lv.resistance, lv.support) == (max(w), min(w))
    with pytest.raises(ValueError):
        Levels(1)


def _tick(price, ts=0, sym="AAPL", kind="trade"):
    return Tick(sym, kind, price, 100, "B", 0, 0, 0, 0, ts, ts)


class _Sink:
    def __init__(self, refuse=False):
        self.out = []
        self.refuse = refuse

    def __call__(self, symbol, side, qty, price, order_type, tif, reason, md_ts):
        if self.refuse:
            return None
        self.out.append((symbol, side, qty, price, tif))
        return f"id{len(self.out)}"


def _breakout(**params):
    b = Breakout(["AAPL"], params)
    sink = _Sink()
    b.bind(sink)
    b.on_start()
    return b, sink


def test_breakout_signals_after_confirmation_only():
    b, sink = _breakout(window=5, confirm_ticks=3, qty=10, max_position=10, slippage_bps=100, cooldown=0)
    for p in (100, 101, 99, 100, 101):           # range 99..101
        b.on_tick(_tick(p * PX))
    b.on_tick(_tick(102 * PX))                   # break 1
    b.on_tick(_tick(103 * PX))                   # 2
    assert sink.out == []
    b.on_tick(_tick(102 * PX))                   # 3: confirmed against the frozen level 101
    assert sink.out == [("AAPL", "B", 10, 102 * PX + 102 * PX // 100, "ioc")]


def test_breakout_cancelled_when_price_returns():
    b, sink = _breakout(window=5, confirm_ticks=2, cooldown=0)
    for p in (100, 101, 99, 100, 101, 102, 100, 102):
        b.on_tick(_tick(p * PX))
    # 102 breaks 101, 100 is back inside (cancel); the final 102 starts a new break (1 tick): no signal
    assert sink.out == []


def test_breakout_support_sell_time_confirmation_and_position_limit():
    b, sink = _breakout(window=4, confirm_ticks=1, confirm_ms=5, qty=10, max_position=10, cooldown=0)
    t = 0
    for p in (100, 101, 100, 101):
        t += 1_000_000
        b.on_tick(_tick(p * PX, t))
    b.on_tick(_tick(98 * PX, t + 1_000_000))      # break below 100, 0 ms beyond
    assert sink.out == []
    b.on_tick(_tick(97 * PX, t + 7_000_000))      # 6 ms after the break started: confirmed
    assert sink.out[0][:3] == ("AAPL", "S", 10)
    for k in range(20):                            # further breaks: the position limit (-10) holds
        b.on_tick(_tick((96 - k) * PX, t + (10 + k) * 1_000_000))
    assert len(sink.out) == 1
    b.on_ack(None, {"id": "id1", "status": "rejected", "filled": 0})   # nothing filled: room again
    b.on_tick(_tick(70 * PX, t + 40_000_000))
    b.on_tick(_tick(69 * PX, t + 50_000_000))
    assert len(sink.out) == 2 and sink.out[1][1] == "S"


def test_breakout_source_filter_and_refusal():
    b, sink = _breakout(window=3, confirm_ticks=1, source="bbo", cooldown=0)
    for p in (100, 101, 100, 200):
        b.on_tick(_tick(p * PX))                   # trades ignored
    assert sink.out == [] and "AAPL" not in b.state
    sink.refuse = True
    for p in (100, 101, 100, 200):
        b.on_tick(_tick(p * PX, kind="bbo"))
    assert b.signals == 0                          # refused by the runner: not counted as issued
    with pytest.raises(ValueError):
        _breakout(source="news")


# ---- the tick view of market data ----------------------------------------------------------------------
def _recs(rows):
    out = records.empty(len(rows))
    for i, r in enumerate(rows):
        kind = r.pop("kind")
        v = out[i: i + 1].view(records.DTYPES[kind])
        v["rtype"] = records.RTYPE[kind]
        for k, x in r.items():
            v[k] = x
    return out


def test_ticks_of_dedups_exchange_fills_and_reads_bbo():
    recs = _recs([
        {"kind": "mbo", "action": b"A", "side": b"B", "price": 10 * PX, "size": 5, "order_id": 1},
        {"kind": "trade", "price": 11 * PX, "size": 3, "side": b"B", "match_number": 9, "ts_recv": 5},
        {"kind": "mbo", "action": b"F", "side": b"A", "price": 11 * PX, "size": 3, "match_number": 9},   # same match
        {"kind": "mbo", "action": b"F", "side": b"A", "price": 12 * PX, "size": 2, "match_number": 10},  # ITCH E
        {"kind": "bbo", "bid_px": 10 * PX, "ask_px": 12 * PX, "bid_sz": 5, "ask_sz": 7, "ts_recv": 6},
        {"kind": "bbo", "bid_px": records.UNDEF_PRICE, "ask_px": 12 * PX},
    ])
    ts = ticks_of("X", recs)
    assert [(t.kind, t.price, t.size, t.side) for t in ts] == [
        ("trade", 11 * PX, 3, "B"), ("trade", 12 * PX, 2, "B"), ("bbo", 11 * PX, 0, "N"), ("bbo", 0, 0, "N")]
    assert ts[0].ts_recv == 5 and ts[2].bid_sz == 5 and ts[2].ask_sz == 7


# ---- loading ------------------------------------------------------------------------------------------
class Mine(Strategy):
    PARAMS = {"n": 3, "x": 1.5, "on": False, "s": "a"}

    def on_tick(self, tick):
        pass


def test_load_by_name_and_module_class():
    assert load_strategy("breakout") is Breakout
    assert load_strategy("test_strategy_units:Mine") is Mine
    for bad in ("nosuch", "os:path", "no_such_module:X", "test_strategy_units:_Sink"):
        with pytest.raises(ValueError):
            load_strategy(bad)


def test_params_are_typed():
    assert coerce_params(Mine, ["n=5", "x=2", "on=yes", "s=b"]) == {"n": 5, "x": 2.0, "on": True, "s": "b"}
    for bad in (["n=x"], ["zz=1"], ["n"], ["on=maybe"]):
        with pytest.raises(ValueError):
            coerce_params(Mine, bad)
    with pytest.raises(ValueError, match="no parameter"):
        Mine(["A"], {"zz": 1})


def test_base_strategy_needs_on_tick_and_a_runner():
    class Bare(Strategy):
        pass

    with pytest.raises(NotImplementedError):
        Bare([]).on_tick(_tick(1))
    with pytest.raises(RuntimeError):
        Mine([]).buy("A", 1, limit=1)


def test_strategy_cli_exit_codes(capsys):
    from engine.strategy.runner import main
    assert main(["nosuch", "--md", "tcp://127.0.0.1:1", "--signals", "tcp://127.0.0.1:2"]) == 2
    assert "unknown strategy" in capsys.readouterr().err
    assert main(["breakout", "--md", "tcp://127.0.0.1:1", "--signals", "tcp://127.0.0.1:2", "--param", "window=x"]) == 2
    assert main(["breakout", "--md", "nonsense", "--signals", "tcp://127.0.0.1:2", "--duration", "0.1"]) == 2
    assert "is not a ZeroMQ endpoint" in capsys.readouterr().err
    assert main(["breakout", "--md", "tcp://127.0.0.1:1", "--signals", "tcp://127.0.0.1:2", "--duration", "0.2",
                 "--drain", "0", "--json"]) == 0


def test_executor_cli_needs_a_secret_and_never_takes_it_on_the_command_line(monkeypatch, capsys, tmp_path):
    from engine.strategy.executor import build_parser, main
    monkeypatch.delenv("FEEDHANDLER_API_SECRET", raising=False)
    assert main(["--signals", "tcp://127.0.0.1:*", "--api-key", "k", "--state", str(tmp_path / "l")]) == 2
    assert "no API secret" in capsys.readouterr().err
    assert not any("secret" in a.dest and a.dest != "secret_file" for a in build_parser()._actions)
    assert main(["--signals", "tcp://127.0.0.1:*", "--api-key", "k", "--secret-file", str(tmp_path / "none")]) == 2


def test_layering_publisher_without_engine_strategy_without_client():
    """feedhandler.publish imports nothing of engine (ARCHITECTURE.md); a strategy process never loads the
    client library, the auth code or the executor (no credentials in a strategy process)."""
    import subprocess
    import sys
    code = ("import sys, feedhandler.publish; bad = [m for m in sys.modules if m.split('.')[0] == 'engine'];"
            "import engine.strategy.runner, engine.strategy.breakout;"
            "bad += [m for m in ('engine.client', 'engine.auth', 'engine.strategy.executor') if m in sys.modules];"
            "print(bad)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_the_readmes_example_strategy_runs(tmp_path, monkeypatch):
    """The README's "your own strategy" example, loaded as module:Class the way the CLI does."""
    import re
    from pathlib import Path
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    import textwrap
    block = re.search(r"```python\n(\s*from engine\.strategy import Strategy[^\n]*\n.*?)\s*```", text, re.S)
    assert block, "the README's strategy example is gone"
    code = textwrap.dedent(block.group(1))
    (tmp_path / "readme_strategy.py").write_text(code.split("\n# without sockets")[0])
    monkeypatch.syspath_prepend(str(tmp_path))
    cls = load_strategy("readme_strategy:Momentum")
    s = cls(["AAPL"], coerce_params(cls, ["step_bps=50"]))
    sink = _Sink()
    s.bind(sink)
    s.on_start()
    for p in (100 * PX, 100 * PX + PX // 1000, 101 * PX):     # +0.1 %: no; +1 %: buy
        s.on_tick(_tick(p))
    assert sink.out == [("AAPL", "B", 100, 101 * PX, "ioc")]
