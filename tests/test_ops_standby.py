"""Failover as an operation: a hot standby follows the primary's journal(s), takes over when the primary is gone
(its journal lock released), is fenced while the primary lives (take_over refused: two writers never both
sequence), follows a data dir and an exchange with several shards, and runs as `feedhandler exchange
--standby-of DATA_DIR`. Loopback only; every test stops the processes it starts."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

zmq = pytest.importorskip("zmq")

from engine.errors import DataDirError  # noqa: E402
from engine.journal import JournalLocked, read_journal  # noqa: E402
from engine.manager import EngineManager, StandbyEngine  # noqa: E402
from engine.standby import StandbyShards  # noqa: E402
from _durability_support import fh_script, popen, read_until, stop, wait_for  # noqa: E402,F401

PX = 1_000_000_000
SYMS = ["AAPL", "MSFT", "NVDA"]


def new(sym, side, px, qty, clid, account="A"):
    return {"type": "new", "account": account, "symbol": sym, "side": side, "price": px, "qty": qty, "tif": "gtc",
            "client_order_id": clid}


def test_take_over_while_the_primary_lives_is_refused(tmp_path):
    jd = str(tmp_path / "j")
    primary = EngineManager(SYMS, journal_dir=jd)
    standby = StandbyEngine(SYMS, jd)
    standby.start(0.001)
    try:
        primary.submit(new("AAPL", "S", 100 * PX, 5, "p1"))
        assert wait_for(lambda: standby.seq == 1)
        with pytest.raises(JournalLocked, match="still written by its primary"):
            standby.take_over()
        # still a standby: it keeps following, and the primary keeps sequencing alone
        primary.submit(new("AAPL", "S", 101 * PX, 5, "p2"))
        assert wait_for(lambda: standby.seq == 2)
        assert standby.primary_alive()
    finally:
        primary.close()
    h = primary_hash = None
    assert not standby.primary_alive()
    m = standby.take_over()
    try:
        assert m.seq == 2
        m.submit(new("AAPL", "S", 102 * PX, 5, "s1"))
        h = m.state_hash()
        # a primary restarted on the same journal is fenced now
        with pytest.raises(JournalLocked, match="being written by another process"):
            EngineManager(SYMS, journal_dir=jd)
    finally:
        m.close()
    payloads, _ = read_journal(os.path.join(jd, "journal.bin"))
    with EngineManager(SYMS, journal_dir=jd) as again:        # one sequence, no gap, nothing dropped
        assert again.seq == 3 and again.state_hash() == h
    assert primary_hash is None and len(payloads) == 4        # config record + three inputs


def test_standby_pointed_at_the_data_dir_or_at_nothing(tmp_path):
    from engine.exchange import Exchange, load_config

    cfg = load_config(None, {"data_dir": str(tmp_path / "data"), "gateway.endpoint": "tcp://127.0.0.1:*",
                             "marketdata.endpoint": "tcp://127.0.0.1:*", "symbols": SYMS})
    ex = Exchange(cfg)
    ex.engine.submit(new("MSFT", "B", 10 * PX, 3, "d1"))
    standby = StandbyEngine(SYMS, str(tmp_path / "data"))     # the data dir, not its journal/
    standby.poll()
    assert standby.seq == 1
    want = ex.engine.state_hash()
    ex.stop()
    m = standby.take_over()
    assert m.state_hash() == want and m.book("MSFT")[0][0][:2] == (10 * PX, 3)
    m.close()
    # a directory without a journal: a clear error, never an empty book taken over
    (tmp_path / "empty").mkdir()
    sb = StandbyEngine(SYMS, str(tmp_path / "empty"))
    with pytest.raises(DataDirError, match="no journal"):
        sb.take_over()
    # a journal of another configuration: the standby says so instead of following silently
    sb = StandbyEngine(["AAPL"], str(tmp_path / "data"))
    sb.start(0.001)
    assert wait_for(lambda: sb.error is not None)
    with pytest.raises(DataDirError, match="another configuration"):
        sb.take_over()
    # several shards behind one data dir: StandbyEngine refuses, StandbyShards follows them
    with EngineManager(SYMS, journal_dir=str(tmp_path / "multi" / "journal"), shards=2):
        pass
    with pytest.raises(DataDirError, match="2 shard journals"):
        StandbyEngine(SYMS, str(tmp_path / "multi"))


def test_standby_of_a_sharded_exchange(tmp_path):
    jd = str(tmp_path / "data" / "journal")
    primary = EngineManager(SYMS, journal_dir=jd, shards=2)
    standby = StandbyShards(SYMS, str(tmp_path / "data"), shards=2)
    standby.start(0.001)
    try:
        for i, sym in enumerate(SYMS * 4):
            primary.submit(new(sym, "BS"[i % 2], (100 + i % 3) * PX, 10 + i, f"o{i}"))
        assert wait_for(lambda: standby.seq == primary.seq)
        with pytest.raises(JournalLocked):
            standby.take_over()
        want = primary.state_hash()
    finally:
        primary.close()
    m = standby.take_over()
    try:
        assert m.n_shards == 2 and m.state_hash() == want
        assert {s: m.bbo(s) for s in SYMS} == {s: m.bbo(s) for s in SYMS}
        m.submit(new("NVDA", "S", 99 * PX, 1, "after"))
        h = m.state_hash()
    finally:
        m.close()
    with EngineManager(SYMS, journal_dir=jd, shards=2) as again:
        assert again.state_hash() == h


# ---- the command ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["kill", "hung", "kill-2-shards"])
def test_cli_failover_kill_9_the_primary(tmp_path, how):
    from engine.client import Client

    data = str(tmp_path / "data")
    common = ["--symbols", "AAPL,MSFT", "--md-port", "0", "--fsync", "every"]
    n_shards = 2 if how == "kill-2-shards" else 1
    if n_shards == 2:
        cfg = tmp_path / "two.toml"
        cfg.write_text("[engine]\nshards = 2\n")
        common += ["--config", str(cfg)]
    primary = popen("exchange", *common, "--port", "0", "--data-dir", data)
    standby = None
    try:
        gw = read_until(primary, r"gateway=(\S+)").group(1)
        extra = ["--heartbeat-ms", "600"] if how == "hung" else []
        standby = popen("exchange", *common, "--port", "0", "--standby-of", data, *extra)
        read_until(standby, rf"standby of .*following {n_shards} shard journal")
        acked = []
        with Client(gw, "demo-mm", "demo-mm-secret", timeout=5) as mm, \
                Client(gw, "demo-taker", "demo-taker-secret", timeout=5) as tk:
            for i in range(5):
                r = mm.submit("AAPL", "S", (100 + i) * PX, 10, tif="gtc", client_order_id=f"mm{i}")
                assert r["status"] == "ack"
                acked.append(r["events"][0]["order_id"])
            assert tk.submit("AAPL", "B", 100 * PX, 4, tif="ioc")["status"] == "ack"
            assert mm.submit("MSFT", "B", 50 * PX, 7, tif="gtc")["status"] == "ack"     # the other shard
        # SIGUSR1 while the primary lives: refused, still following
        standby.send_signal(signal.SIGUSR1)
        read_until(standby, r"take_over refused.*still following")
        if how.startswith("kill"):
            primary.kill()                     # kill -9
        else:
            primary.send_signal(signal.SIGSTOP)  # hung: the heartbeat stops; the standby fences it (SIGKILL)
        try:
            m = read_until(standby, r"taking over: (.*); epoch (\d+), seq (\d+)", timeout=30)
        except AssertionError as e:
            hb = Path(data, "heartbeat")
            st = Path(f"/proc/{primary.pid}/stat").read_text().split()[2] if primary.poll() is None else "gone"
            raise AssertionError(f"{e}; heartbeat {hb.read_bytes() if hb.exists() else None}; primary state {st}; "
                                 f"data dir {sorted(os.listdir(data))}")
        assert int(m.group(3)) == 7 and int(m.group(2)) >= 2
        assert wait_for(lambda: primary.poll() is not None, 10), "the hung primary was not fenced"
        gw2 = read_until(standby, r"gateway=(\S+)").group(1)
        with Client(gw2, "demo-mm", "demo-mm-secret", timeout=5) as mm:
            book = mm.book("AAPL")
            assert [a[:2] for a in book["asks"]] == [[100 * PX, 6]] + [[(100 + i) * PX, 10] for i in range(1, 5)]
            assert mm.book("MSFT")["bids"][0][:2] == [50 * PX, 7]
            pos = mm.position("AAPL")["portfolio"]["positions"]["AAPL"]
            assert pos["qty"] == -4                     # the portfolio followed the journal too
            r = mm.cancel(order_id=acked[1])
            assert r["status"] == "ack", r
        # the old primary restarted on the same data dir is fenced
        again = subprocess.run([fh_script(), "exchange", *common, "--port", "0", "--data-dir", data],
                               capture_output=True, text=True, timeout=60)
        assert again.returncode == 1 and "being written by another process" in again.stderr, again.stderr
    finally:
        stop(primary)
        if standby is not None:
            stop(standby)
    assert standby.returncode == 0


def test_cli_standby_of_nothing_is_one_line_exit_2(tmp_path):
    (tmp_path / "empty").mkdir()
    r = subprocess.run([fh_script(), "exchange", "--standby-of", str(tmp_path / "empty"), "--port", "0",
                        "--md-port", "0"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "holds no journal" in r.stderr and len(r.stderr.strip().splitlines()) == 1
