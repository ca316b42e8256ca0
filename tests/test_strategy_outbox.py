"""The strategy's durable outbox (``feedhandler strategy --outbox PATH``, engine.strategy.outbox_file): the signals
the executor has not acknowledged survive the strategy process being killed, a restarted process resends them (the
executor's ledger acts on each id once) and numbers new signals after every id it used.

Units: the file keeps, forgets on acknowledgement, counts, locks; the runner takes the stored instance id and
counter back. End to end (separate processes, the shipped ITCH capture at its recorded pace as in
test_strategy_e2e): the strategy is SIGKILLed while the executor is stalled (so signals are outstanding), then
restarted on the same outbox file: every signal ever issued reaches the executor once, none is lost, none is
ordered twice at the exchange."""
from __future__ import annotations

import os
import signal
import sqlite3
import time

import msgpack
import pytest

from engine.strategy.outbox import Outbox
from engine.strategy.outbox_file import OutboxFile, OutboxInUse
from engine.strategy.runner import StrategyOptions, StrategyRunner
from engine.strategy.signals import Signal, client_order_id, decode_signal


def _sig(n, sender="s1"):
    return Signal(f"{sender}.{n}", sender, "AAPL", "B", 10, 100_000_000_000, ts=time.time_ns())


def test_outbox_file_keeps_unacknowledged_signals_across_reopen(tmp_path):
    path = str(tmp_path / "outbox.sqlite")
    ob = Outbox(10, store=OutboxFile(path))
    for n in (1, 2, 3):
        s = _sig(n)
        assert ob.add(s, s.encode(), n)
    assert ob.ack("s1.2") is not None
    ob.flush_acks()
    assert ob.ack("s1.3") is not None          # acknowledged, not flushed: as if killed before the burst ended
    ob.store.set_instance("s1")
    ob.store.close()                    # as a killed process would leave it (each write is its own commit)
    again = Outbox(10, store=OutboxFile(path))
    assert again.store.instance() == "s1" and again.store.issued("s1") == 3 and again.store.issued("other") == 0
    got = again.restore(decode_signal)
    assert [e.signal.id for e in got] == ["s1.1", "s1.3"]
    assert (got[1].signal.sender, got[1].signal.symbol, got[1].signal.qty) == ("s1", "AAPL", 10)
    assert len(again) == 2 and all(e.sends == 0 and e.next_send == 0.0 for e in got)   # due at once
    assert again.ack("s1.1") is not None and again.ack("s1.1") is None                  # a repeated ack: no-op
    assert [r.id for r in again.store.pending()] == ["s1.1", "s1.3"]
    again.flush_acks()
    assert [r.id for r in again.store.pending()] == ["s1.3"]
    again.store.close()


def test_outbox_file_is_one_process_at_a_time(tmp_path):
    path = str(tmp_path / "outbox.sqlite")
    a = OutboxFile(path)
    with pytest.raises(OutboxInUse, match="in use"):
        OutboxFile(path)
    a.close()
    OutboxFile(path).close()            # free again once closed (a killed process's lock goes with it)


def test_memory_outbox_restores_nothing():
    ob = Outbox(2)
    s = _sig(1)
    assert ob.add(s, s.encode(), 1) and ob.restore(decode_signal) == [] and ob.ack(s.id) is not None


def _opts(tmp_path, **kw):
    return StrategyOptions("breakout", ["tcp://127.0.0.1:1"], "tcp://127.0.0.1:2", symbols=["AAPL"],
                           outbox=str(tmp_path / "outbox.sqlite"), **kw)


def test_runner_takes_back_its_instance_counter_and_pending_signals(tmp_path):
    r = StrategyRunner(_opts(tmp_path))
    r._open()                   # sockets with no peer: every send meets the high-water mark, nothing leaves
    inst = r.instance
    ids = [r._emit("AAPL", "B", 10, 100_000_000_000, "limit", "ioc", "t", 0) for _ in range(3)]
    assert ids == [f"{inst}.1", f"{inst}.2", f"{inst}.3"]
    r.outbox.ack(ids[0])
    r.close()
    r2 = StrategyRunner(_opts(tmp_path))            # no --id: the stored instance
    r2._open()
    assert r2.instance == inst and r2.stats["restored"] == 2 and r2.outbox.pending_ids() == ids[1:]
    assert r2._emit("AAPL", "S", 10, 100_000_000_000, "limit", "ioc", "t", 0) == f"{inst}.4"     # never reused
    r2.close()
    r3 = StrategyRunner(_opts(tmp_path, name="other"))   # another id: still resends the old instance's signals
    assert r3.instance == "other" and r3._ack_topics == sorted(["other", inst])
    assert r3.outbox.pending_ids() == [*ids[1:], f"{inst}.4"]
    with pytest.raises(ValueError, match="in use by another strategy process"):
        StrategyRunner(_opts(tmp_path))
    r3.close()


def test_cli_refuses_an_outbox_in_use(tmp_path, capsys):
    from engine.strategy.runner import main
    held = OutboxFile(str(tmp_path / "outbox.sqlite"))
    try:
        assert main(["breakout", "--md", "tcp://127.0.0.1:1", "--signals", "tcp://127.0.0.1:2",
                     "--outbox", str(tmp_path / "outbox.sqlite"), "--duration", "0.1"]) == 2
        assert "in use by another strategy process" in capsys.readouterr().err
    finally:
        held.close()


# ---- end to end: the strategy process killed mid-run ------------------------------------------------------
@pytest.mark.skipif(os.environ.get("FH_SKIP_E2E") == "1", reason="FH_SKIP_E2E=1")
def test_strategy_killed_mid_run_loses_no_signal_and_trades_none_twice(tmp_path):
    from test_strategy_e2e import (RUN_SECONDS, Procs, _feed, _finish, _ledger_rows, _setup, _start_strategy,
                                   _start_trading, _wait_rows)

    pr = Procs(tmp_path)
    try:
        ranges, span_s, syms, p, cfg = _setup(tmp_path)
        outbox = tmp_path / "outbox.sqlite"
        args = ("--outbox", str(outbox))
        data = _start_trading(pr, tmp_path, ranges, syms, p, cfg, strategy_args=args)
        _feed(pr, p, span_s, len(syms), seconds=2 * RUN_SECONDS)
        _wait_rows(tmp_path, 3)
        ex = pr.procs["executor"].pid
        os.kill(ex, signal.SIGSTOP)               # the executor stalls: the strategy's signals stay unacknowledged

        def pending():
            db = sqlite3.connect(str(outbox))
            try:
                return [r[0] for r in db.execute("SELECT id FROM pending ORDER BY t_ns")]
            finally:
                db.close()

        def issued():
            db = sqlite3.connect(str(outbox))
            try:
                return db.execute("SELECT count FROM issued WHERE sender = 'e2e'").fetchone()[0]
            finally:
                db.close()

        deadline = time.monotonic() + 60
        while len(pending()) < 3:
            assert time.monotonic() < deadline, "no signals outstanding while the executor stalled"
            time.sleep(0.05)
        pr.stop("strategy", signal.SIGKILL)       # no goodbye, no drain
        at_kill, issued_at_kill = pending(), issued()
        os.kill(ex, signal.SIGCONT)               # it handles what reached it; those acks go to a dead process
        time.sleep(0.5)
        _start_strategy(pr, p, syms, args)        # the same --id and outbox file
        _finish(pr)

        st = pr.json("strategy")
        assert st["restored"] == len(at_kill) > 0, (st, at_kill)
        assert st["unacknowledged"] == [] and pending() == []
        total = issued()
        assert total == issued_at_kill + st["signals"]          # the restarted process numbered after the old ids
        rows = _ledger_rows(tmp_path)
        # not lost: every id ever issued (1..total, by both processes) reached the executor, and is done
        assert sorted(r[0] for r in rows) == sorted(f"e2e.{n}" for n in range(1, total + 1))
        assert {r[1] for r in rows} == {"done"}
        outcomes = {r[0]: msgpack.unpackb(r[2]) for r in rows}
        traded = {i for i, o in outcomes.items() if o["status"] in ("filled", "accepted")}
        hist = sqlite3.connect(str(data / "history.sqlite"))
        try:
            coids = [r[0] for r in hist.execute("SELECT client_order_id FROM orders WHERE account = 'TAKER'")]
            filled = hist.execute("SELECT coalesce(sum(qty), 0) FROM trades WHERE buyer = 'TAKER' OR "
                                  "seller = 'TAKER'").fetchone()[0]
        finally:
            hist.close()
        # not acted on twice: one order per signal at the exchange, the fills are the ledger's
        assert len(coids) == len(set(coids)), "an order entered twice"
        assert {client_order_id(i) for i in traded} <= set(coids) <= {client_order_id(i) for i in outcomes}
        assert filled == sum(o["filled"] for o in outcomes.values()) > 0
        assert st["acks"] == st["signals"] + st["restored"]
        # the stalled executor had received the outstanding signals and, continued, acted on them while no
        # strategy listened: their resends were answered from its ledger (dup), not ordered again
        assert st["acks_dup"] > 0, st
    finally:
        pr.close()


class Boom(__import__("engine.strategy.base", fromlist=["Strategy"]).Strategy):
    """A strategy whose own code fails (for the CLI's error convention)."""

    def on_start(self):
        raise RuntimeError("boom in on_start")


@pytest.mark.parametrize("debug", [False, True])
def test_strategy_failure_is_one_line_and_debug_shows_the_traceback(debug, capsys):
    from engine.strategy.runner import main
    argv = ["test_strategy_outbox:Boom", "--md", "tcp://127.0.0.1:1", "--signals", "tcp://127.0.0.1:2"]
    assert main(argv + (["--debug"] if debug else [])) == 1
    err = capsys.readouterr().err
    assert "feedhandler strategy: test_strategy_outbox:Boom failed: RuntimeError: boom in on_start" in err
    assert ("Traceback" in err) == debug
    if not debug:
        assert len(err.strip().splitlines()) == 1


def test_without_outbox_a_fixed_id_never_reuses_signal_ids():
    """A restarted strategy with the same --id and no --outbox used to number its signals from 1 again: the
    executor answered them from its ledger as repeats of the dead process's signals (never traded)."""
    firsts = []
    for _ in range(2):
        r = StrategyRunner(StrategyOptions("breakout", ["tcp://127.0.0.1:1"], "tcp://127.0.0.1:2", symbols=["AAPL"],
                                           name="fixed"))
        r._open()
        try:
            firsts.append(r._emit("AAPL", "B", 10, 100_000_000_000, "limit", "ioc", "t", 0))
            assert r.instance == "fixed" and r._ack_topics == ["fixed"]       # acknowledgements: the same topic
        finally:
            r.close()
    assert firsts[0] != firsts[1] and all(f.startswith("fixed.") for f in firsts), firsts
