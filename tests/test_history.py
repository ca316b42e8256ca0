"""History (engine.history) and the live book in Redis (engine.redisbook).

The writer follows an exchange's journal files and stores what they sequenced exactly once: SQLite in the data
dir by default, PostgreSQL with --db (FH_TEST_POSTGRES_URL: .ci/run starts a throwaway server), Redis with
--redis (FH_TEST_REDIS_URL). Tests that need a server skip with the reason when it is not there. Every test
stops the processes it starts (the writer child exits with its exchange, also after kill -9).
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytest.importorskip("zmq")

from engine.history import schema  # noqa: E402
from engine.history.rows import COLUMNS, Rows  # noqa: E402
from engine.history.sqlite import SqliteStore  # noqa: E402
from engine.history.writer import HistoryWriter, open_store  # noqa: E402
from engine.manager import ShardEngine  # noqa: E402

PX = 1_000_000_000
SYMS = ["AAPL", "MSFT"]


# ---- servers -------------------------------------------------------------------------------------------------
@pytest.fixture
def pg_url():
    """A fresh database on the PostgreSQL of FH_TEST_POSTGRES_URL, dropped afterwards."""
    url = os.environ.get("FH_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("FH_TEST_POSTGRES_URL is not set (.ci/run starts a PostgreSQL for these tests)")
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as e:
        pytest.skip(f"PostgreSQL at FH_TEST_POSTGRES_URL does not answer: {str(e).strip().splitlines()[0]}")
    name = f"fh_hist_{uuid.uuid4().hex[:12]}"
    admin.execute(f"CREATE DATABASE {name}")
    base = url.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


@pytest.fixture
def redis_url():
    url = os.environ.get("FH_TEST_REDIS_URL")
    if not url:
        pytest.skip("FH_TEST_REDIS_URL is not set (.ci/run starts a Redis for these tests)")
    redis = pytest.importorskip("redis")
    r = redis.Redis.from_url(url, socket_connect_timeout=5)
    try:
        r.flushdb()
    except redis.exceptions.ConnectionError as e:
        pytest.skip(f"Redis at FH_TEST_REDIS_URL does not answer: {e}")
    yield url
    r.flushdb()
    r.close()


# ---- a data dir with a journal, written without the network --------------------------------------------------
def new(sym, side, px, qty, clid, account):
    return {"type": "new", "account": account, "symbol": sym, "side": side, "price": px, "qty": qty, "tif": "gtc",
            "client_order_id": clid}


def make_data_dir(d: Path, n_rounds: int, symbols=SYMS) -> list[dict]:
    """An exchange data dir (manifest + one shard journal) holding n_rounds of 6 journaled inputs: a resting sell,
    a buy crossing it partly, a post-only buy that would cross (rejected by the engine), an amend of the sell, its
    cancel and a second cancel (rejected: unknown order); returns the engine's events."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "exchange.json").write_text(json.dumps({"symbols": symbols, "shards": 1, "tick_size": 1,
                                                 "stp": "cancel_newest", "journal": True}))
    sh = ShardEngine(symbols, journal_dir=str(d / "journal"))
    events = []
    try:
        for i in range(n_rounds):
            sym = symbols[i % len(symbols)]
            px = (100 + i % 7) * PX
            reqs = [new(sym, "S", px, 10, f"s{i}", "MM"), new(sym, "B", px, 4, f"b{i}", f"T{i % 3}"),
                    dict(new(sym, "B", px, 1, f"p{i}", "PO"), post_only=True)]
            out = sh.submit_many(reqs)
            sell_id = out[0][0]["order_id"]
            out2 = sh.submit_many([{"type": "amend", "account": "MM", "order_id": sell_id, "new_price": px + PX,
                                    "new_qty": 5},
                                   {"type": "cancel", "account": "MM", "order_id": sell_id},
                                   {"type": "cancel", "account": "MM", "order_id": sell_id}])
            for evs in out + out2:
                events.extend(evs)
    finally:
        sh.close()
    return events


def table(store, name: str, order_by: str) -> list[tuple]:
    """A table's rows without the wall-clock columns (*_ns)."""
    cols = [c for c in COLUMNS[name] if not c.endswith("_ns")]
    q = f"SELECT {', '.join(cols)} FROM {name} ORDER BY {order_by}"
    if store.kind == "sqlite":
        return [tuple(r) for r in store.conn.execute(q)]
    with store.conn.cursor() as cur:
        cur.execute(q)
        return [tuple(r) for r in cur.fetchall()]


def all_tables(store) -> dict:
    return {"order_events": table(store, "order_events", "shard, seq, n"),
            "orders": table(store, "orders", "order_id"),
            "trades": table(store, "trades", "trade_id"),
            "position_changes": table(store, "position_changes", "trade_id, order_id"),
            "accounts": table(store, "accounts", "account")}


# ---- rows ------------------------------------------------------------------------------------------------------
def test_rows_follow_each_order_through_its_status_changes(tmp_path):
    events = make_data_dir(tmp_path / "d", 3)
    assert all(e["seq"] for e in events)
    rows = Rows()
    rows.add(0, events)
    assert rows.events == len(events)
    by_type = {}
    for r in rows.order_events:
        by_type.setdefault(r[3], 0)
        by_type[r[3]] += 1
    assert by_type["fill"] == 6 and len(rows.trades) == 3 and len(rows.position_changes) == 6
    # the sell: accepted 10, 4 filled, amended to 5 (4 filled, 1 left), canceled: one row, final state
    sell = next(r for r in rows.order_rows() if r[9] == "s0")
    assert sell[8] == "CANCELED" and sell[4] == 101 * PX and sell[7] == 4 and sell[6] == 0
    buy = next(r for r in rows.order_rows() if r[9] == "b0")
    assert buy[8] == "FILLED" and buy[5] == 4
    # a refused second cancel is an event and leaves the order as it was; a refused new order is a REJECTED row
    assert [r[15] for r in rows.order_events if r[3] == "rejected"] == ["would_cross", "unknown_order"] * 3
    po = [r for r in rows.rejected_rows()]
    assert [(r[9], r[8], r[10], r[2]) for r in po] == [(f"p{i}", "REJECTED", "would_cross", "PO") for i in range(3)]
    t = rows.trades[0]
    assert t[4] == "B" and t[7] == "T0" and t[8] == "MM" and t[3] == 4
    assert {a[0] for a in rows.accounts} == {"MM", "T0", "T1", "T2", "PO"}
    # position changes net to zero per trade
    per = {}
    for pc in rows.position_changes:
        per[pc[0]] = per.get(pc[0], 0) + pc[4]
    assert set(per.values()) == {0}


# ---- migrations --------------------------------------------------------------------------------------------------
def test_migrations_are_applied_once_sqlite(tmp_path):
    path = str(tmp_path / "h.sqlite")
    s1 = SqliteStore(path)
    assert s1.applied == [v for v, _, _ in schema.migrations()] and s1.applied[0] == 1
    s1.close()
    s2 = SqliteStore(path)
    assert s2.applied == []
    assert s2.count("schema_version") == len(schema.migrations())
    # a database from a newer feedhandler is refused, never downgraded
    s2.conn.execute("INSERT INTO schema_version VALUES (9999, 'future', 0)")
    s2.close()
    with pytest.raises(schema.SchemaError, match="newer"):
        SqliteStore(path)


def test_migrations_are_applied_once_postgres(pg_url):
    from engine.history.postgres import PostgresStore

    s1 = PostgresStore(pg_url)
    assert s1.applied[0] == 1
    s1.close()
    s2 = PostgresStore(pg_url)
    assert s2.applied == [] and s2.count("schema_version") == len(schema.migrations())
    s2.close()


def test_migration_files_are_numbered_and_split():
    ms = schema.migrations()
    assert [v for v, _, _ in ms] == sorted({v for v, _, _ in ms})
    stmts = ms[0][2]
    assert any(s.startswith("CREATE TABLE orders") for s in stmts) and not any("--" in s for s in stmts)


# ---- the writer ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_writer_stores_what_the_journal_holds_and_resumes(tmp_path, backend, request):
    url = request.getfixturevalue("pg_url") if backend == "postgres" else str(tmp_path / "h.sqlite")
    d = tmp_path / "d"
    events = make_data_dir(d, 20)
    w = HistoryWriter(str(d), open_store(url, str(d)), batch_inputs=7)
    w.step()
    assert w.stored == [120] and w.lag() == 0 and w.batches == 18      # 121 records (config + 120 inputs) by 7
    got = all_tables(w.store)
    assert len(got["order_events"]) == len(events)
    assert [(r[1], r[3], r[4]) for r in got["order_events"]] == [(e["seq"], e["type"], e["order_id"]) for e in events]
    assert len(got["trades"]) == 20
    status = {}
    for r in got["orders"]:
        status[r[9][0] + r[8]] = status.get(r[9][0] + r[8], 0) + 1
    assert status == {"sCANCELED": 20, "bFILLED": 20, "pREJECTED": 20}
    w.close()
    # the exchange journals more; a new writer resumes after the stored sequence
    sh = ShardEngine(SYMS, journal_dir=str(d / "journal"))
    more = sh.submit_many([new("AAPL", "S", 50 * PX, 3, "late-s", "MM"), new("AAPL", "B", 50 * PX, 3, "late-b", "X")])
    sh.close()
    w = HistoryWriter(str(d), open_store(url, str(d)), batch_inputs=7)
    assert w.stored == [120] and w.lag() == 0      # nothing read yet
    w.step()
    assert w.stored == [122]
    got2 = all_tables(w.store)
    assert got2["order_events"][:len(events)] == got["order_events"]
    assert len(got2["order_events"]) == len(events) + sum(len(x) for x in more)
    assert len(got2["trades"]) == 21
    assert ("X",) in [r[:1] for r in got2["accounts"]]
    w.close()


def test_one_writer_per_data_dir(tmp_path):
    from engine.errors import DataDirError

    d = tmp_path / "d"
    make_data_dir(d, 1)
    w = HistoryWriter(str(d), open_store(None, str(d)))
    try:
        with pytest.raises(DataDirError, match="another history writer"):
            HistoryWriter(str(d), None)
    finally:
        w.close()


def test_not_a_data_dir_is_a_clear_error(tmp_path, capsys):
    from engine.history.service import main

    assert main(["--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not an exchange data dir" in err and err.count("\n") == 1


def _history_cmd(d: Path, *extra) -> list[str]:
    return [sys.executable, "-c", "import sys; from engine.history.service import main; sys.exit(main())",
            "--data-dir", str(d), *extra]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_writer_killed_mid_batch_resumes_without_a_row_twice(tmp_path, backend, request):
    """SIGKILL the `feedhandler history` process while it stores (small batches of a long journal), restart it:
    the tables equal those of one uninterrupted run (nothing lost, nothing twice)."""
    url = request.getfixturevalue("pg_url") if backend == "postgres" else str(tmp_path / "h.sqlite")
    d = tmp_path / "d"
    events = make_data_dir(d, 1500)
    n_inputs = 1500 * 6
    p = subprocess.Popen(_history_cmd(d, "--db", url, "--batch-inputs", "5"), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    probe = open_store(url, str(d))
    try:
        deadline = time.monotonic() + 60
        stored = 0
        while time.monotonic() < deadline and p.poll() is None:
            stored = probe.positions().get(0, 0)
            if stored >= 500:
                break
            time.sleep(0.02)
        assert p.poll() is None, ("the writer finished before it could be killed", p.communicate())
        os.kill(p.pid, signal.SIGKILL)
        p.wait(10)
        stored = probe.positions()[0]
        assert 0 < stored < n_inputs
        # what it stored is whole: the events of exactly the inputs up to the stored sequence
        assert probe.count("order_events") == sum(1 for e in events if e["seq"] <= stored)
    finally:
        probe.close()
    r = subprocess.run(_history_cmd(d, "--db", url), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"resuming after seq {stored}" in r.stdout
    s = open_store(url, str(d))
    try:
        got = all_tables(s)
        assert s.positions() == {0: n_inputs}
    finally:
        s.close()
    # one uninterrupted run of the same journal into another database: the same rows
    ref = offline(d, tmp_path)
    assert len(got["order_events"]) == len(events) == len(ref["order_events"])
    for name in ref:
        assert got[name] == ref[name], name


# ---- the exchange runs it ------------------------------------------------------------------------------------
def fh_script() -> str:
    exe = Path(sys.executable).parent / "feedhandler"
    if not exe.exists():
        pytest.skip("the feedhandler console script is not installed next to this Python")
    return str(exe)


def start_exchange(data_dir, *extra):
    p = subprocess.Popen([fh_script(), "exchange", "--symbols", ",".join(SYMS), "--port", "0", "--md-port", "0",
                          "--data-dir", str(data_dir), *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, PYTHONUNBUFFERED="1"))
    line = p.stdout.readline()
    m = re.search(r"gateway=(\S+)", line)
    if not m:
        p.kill()
        raise AssertionError((line, p.communicate(timeout=10)))
    return p, m.group(1)


def children_of(pid: int) -> list[int]:
    out = []
    for st in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = st.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(st.parent.name))
    return out


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def wait_for(cond, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


def trade_round(gw: str, tag: str, n: int) -> list[int]:
    """n crossing pairs sent with the client library; returns the acknowledged order ids."""
    from engine.client import Client

    ids = []
    with Client(gw, "demo-mm", "demo-mm-secret", timeout=10) as mm, \
            Client(gw, "demo-taker", "demo-taker-secret", timeout=10) as tk:
        for i in range(n):
            a = mm.submit("AAPL", "S", (100 + i % 3) * PX, 10, tif="gtc", client_order_id=f"{tag}-s{i}")
            b = tk.submit("AAPL", "B", (100 + i % 3) * PX, 10, tif="gtc", client_order_id=f"{tag}-b{i}")
            assert a["status"] == "ack" and b["status"] == "ack", (a, b)
            ids += [a["events"][0]["order_id"], b["events"][0]["order_id"]]
    return ids


def offline(data_dir: Path, tmp_path: Path) -> dict:
    """The tables a fresh writer stores from the journal of data_dir (a copy: the original may be followed)."""
    import shutil

    ref = tmp_path / f"ref-{uuid.uuid4().hex[:6]}"
    shutil.copytree(data_dir / "journal", ref / "journal")
    shutil.copy(data_dir / "exchange.json", ref / "exchange.json")
    w = HistoryWriter(str(ref), open_store(str(ref / "r.sqlite"), str(ref)))
    w.step()
    t = all_tables(w.store)
    w.close()
    return t


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_exchange_history_end_to_end_with_kill_9(tmp_path, backend, request):
    """feedhandler exchange with history on SQLite (default) / PostgreSQL (--db): crossing orders from the client
    library are stored as orders (FILLED) and trades; kill -9 the exchange (its writer goes too), restart it, trade
    more, stop it: every acknowledged order once, every trade once, the same rows as an offline replay."""
    db_args = ["--db", request.getfixturevalue("pg_url")] if backend == "postgres" else []
    d = tmp_path / "data"
    p, gw = start_exchange(d, *db_args)
    try:
        ids1 = trade_round(gw, "r1", 20)
        writers = children_of(p.pid)
        assert writers, "the exchange runs no history writer process"
        url = db_args[1] if db_args else str(d / "history.sqlite")
        store = open_store(url, str(d))
        assert wait_for(lambda: store.count("trades") == 20), store.count("trades")
        store.close()
        os.kill(p.pid, signal.SIGKILL)
        p.wait(10)
        assert wait_for(lambda: all(gone(w) for w in writers), 15), "the history writer outlived its exchange"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
        p.stdout.close()
        p.stderr.close()
    p, gw = start_exchange(d, *db_args)
    try:
        ids2 = trade_round(gw, "r2", 15)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        assert "history: stored seq" in out
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
    s = open_store(url, str(d))
    try:
        got = all_tables(s)
        assert s.positions() == {0: 70}
        orders = {r[0]: r for r in got["orders"]}
        assert set(ids1 + ids2) <= set(orders)
        assert len(got["orders"]) == 70 and {r[8] for r in got["orders"]} == {"FILLED"}
        assert len(got["trades"]) == 35 and len({r[0] for r in got["trades"]}) == 35
        assert len({(r[0], r[1], r[2]) for r in got["order_events"]}) == len(got["order_events"])
        assert {r[0] for r in got["accounts"]} == {"MM", "TAKER"}
    finally:
        s.close()
    assert got == offline(d, tmp_path)


def test_exchange_reports_history_lag_and_stops_its_writer(tmp_path):
    from engine.exchange import Exchange, load_config

    cfg = load_config(None, {"symbols": SYMS, "data_dir": str(tmp_path / "data"),
                             "gateway.endpoint": "tcp://127.0.0.1:*", "marketdata.endpoint": "tcp://127.0.0.1:*"})
    ex = Exchange(cfg).start()
    try:
        assert ex.history is not None and ex.history.proc.is_alive()
        trade_round(ex.gateway.endpoint, "x", 3)
        assert ex.engine.seq == 6
        assert wait_for(lambda: ex.history_stats()["lag"] == 0 and ex.history_stats()["stored_seq"] == [6])
        proc = ex.history.proc
    finally:
        ex.stop()
    assert not proc.is_alive() and proc.exitcode == 0
    s = SqliteStore(str(tmp_path / "data" / "history.sqlite"))
    assert s.count("trades") == 3
    s.close()


def test_no_history_flag_and_config_key(tmp_path):
    from engine.exchange import build_parser, config_from_args

    a = build_parser().parse_args(["--no-history", "--data-dir", str(tmp_path)])
    assert config_from_args(a)["history"]["enabled"] is False
    a = build_parser().parse_args(["--db", "postgresql://u@h/db", "--redis", "redis://h:1/0"])
    cfg = config_from_args(a)
    assert cfg["history"]["db"] == "postgresql://u@h/db" and cfg["history"]["redis"] == "redis://h:1/0"


def test_unreachable_database_is_a_one_line_startup_error(tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    r = subprocess.run([fh_script(), "exchange", "--port", "0", "--md-port", "0", "--data-dir", str(tmp_path / "d"),
                        "--db", f"postgresql://nobody@127.0.0.1:{port}/none", "--duration", "1"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stderr.count("\n") == 1 and "history writer" in r.stderr, r.stderr


# ---- Redis ---------------------------------------------------------------------------------------------------
def test_redis_live_book_bbo_and_trades(tmp_path, redis_url):
    import redis

    from engine.exchange import Exchange, load_config

    cfg = load_config(None, {"symbols": SYMS, "data_dir": str(tmp_path / "data"), "history.redis": redis_url,
                             "gateway.endpoint": "tcp://127.0.0.1:*", "marketdata.endpoint": "tcp://127.0.0.1:*"})
    r = redis.Redis.from_url(redis_url)
    ex = Exchange(cfg).start()
    try:
        from engine.client import Client

        with Client(ex.gateway.endpoint, "demo-mm", "demo-mm-secret", timeout=10) as mm, \
                Client(ex.gateway.endpoint, "demo-taker", "demo-taker-secret", timeout=10) as tk:
            for px, q in ((101, 5), (102, 7), (103, 9)):
                assert mm.submit("AAPL", "S", px * PX, q, tif="gtc")["status"] == "ack"
            assert mm.submit("AAPL", "B", 99 * PX, 4, tif="gtc")["status"] == "ack"
            assert tk.submit("AAPL", "B", 102 * PX, 8, tif="ioc")["status"] == "ack"   # 5 @ 101, 3 @ 102
        assert wait_for(lambda: r.xlen("fh:trades:AAPL") == 2)
        assert wait_for(lambda: r.hget("fh:bbo:AAPL", "seq") == b"5")
        bbo = {k.decode(): v.decode() for k, v in r.hgetall("fh:bbo:AAPL").items()}
        assert (bbo["bid_px"], bbo["bid_qty"], bbo["ask_px"], bbo["ask_qty"]) == (str(99 * PX), "4", str(102 * PX), "4")
        book = r.hgetall("fh:book:AAPL")
        assert json.loads(book[b"asks"]) == [[str(102 * PX), 4, 1], [str(103 * PX), 9, 1]]
        assert json.loads(book[b"bids"]) == [[str(99 * PX), 4, 1]]
        trades = r.xrange("fh:trades:AAPL")
        assert [t[0] for t in trades] == [b"1-0", b"2-0"]
        assert [(t[1][b"price"], t[1][b"qty"], t[1][b"side"]) for t in trades] == \
            [(str(101 * PX).encode(), b"5", b"B"), (str(102 * PX).encode(), b"3", b"B")]
        assert r.smembers("fh:symbols") == {b"AAPL"}
    finally:
        ex.stop()
    # a writer that replays the journal again (a restart) adds no trade twice
    from engine.redisbook import RedisBook

    w = HistoryWriter(str(tmp_path / "data"), None, redis_book=RedisBook(redis_url))
    w.step()
    w.close()
    assert r.xlen("fh:trades:AAPL") == 2
    r.close()


def test_history_follows_several_shards(tmp_path):
    """An exchange with two shards: the writer follows both journals (one position per shard)."""
    from engine.exchange import Exchange, load_config

    cfg = load_config(None, {"symbols": SYMS, "data_dir": str(tmp_path / "data"), "engine.shards": 2,
                             "gateway.endpoint": "tcp://127.0.0.1:*", "marketdata.endpoint": "tcp://127.0.0.1:*"})
    ex = Exchange(cfg).start()
    try:
        from engine.client import Client

        with Client(ex.gateway.endpoint, "demo-mm", "demo-mm-secret", timeout=10) as mm, \
                Client(ex.gateway.endpoint, "demo-taker", "demo-taker-secret", timeout=10) as tk:
            for sym in SYMS:
                assert mm.submit(sym, "S", 100 * PX, 5, tif="gtc")["status"] == "ack"
                assert tk.submit(sym, "B", 100 * PX, 5, tif="gtc")["status"] == "ack"
        assert wait_for(lambda: ex.history_stats()["stored_seq"] == [2, 2])
    finally:
        ex.stop()
    s = SqliteStore(str(tmp_path / "data" / "history.sqlite"))
    try:
        assert s.positions() == {0: 2, 1: 2}
        assert sorted(r[1] for r in table(s, "trades", "trade_id")) == sorted(SYMS)
    finally:
        s.close()


def test_history_command_follows_until_sigterm(tmp_path):
    d = tmp_path / "d"
    make_data_dir(d, 2)
    p = subprocess.Popen(_history_cmd(d, "--follow"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        s = SqliteStore(str(d / "history.sqlite")) if wait_for(lambda: (d / "history.sqlite").exists()) else None
        assert s is not None
        assert wait_for(lambda: s.positions().get(0) == 12)
        sh = ShardEngine(SYMS, journal_dir=str(d / "journal"))
        sh.submit_many([new("MSFT", "S", 70 * PX, 3, "f-s", "MM"), new("MSFT", "B", 70 * PX, 3, "f-b", "F")])
        sh.close()
        assert wait_for(lambda: s.positions().get(0) == 14)
        assert s.count("trades") == 3
        s.close()
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
        assert "stored seq 14 of 14 lag=0" in out
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)


def test_psycopg_and_redis_are_core_dependencies():
    """`pip install .` brings what --db postgresql:// and --redis need (the README's commands work after it)."""
    try:
        import tomllib
    except ImportError:
        pytest.skip("tomllib needs Python >= 3.11")
    root = Path(__file__).resolve().parents[1]
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=!~ \[]", d, maxsplit=1)[0].lower() for d in deps}
    assert {"psycopg", "redis"} <= names, deps
    assert any(d.startswith("psycopg[binary]") for d in deps), deps     # libpq included: no system library needed


def test_a_dead_writer_is_started_again_and_resumes(tmp_path):
    """An exchange embedded through the Python API (nobody calls history.check()): the service's own
    supervisor starts a writer that died again, and the new writer stores what was journaled meanwhile (only
    `feedhandler exchange`'s loop restarted it before)."""
    from engine.exchange import Exchange, load_config

    cfg = load_config(None, {"symbols": SYMS, "data_dir": str(tmp_path / "data"),
                             "gateway.endpoint": "tcp://127.0.0.1:*", "marketdata.endpoint": "tcp://127.0.0.1:*"})
    out = []

    class Out:
        def write(self, s):
            out.append(s)

        def flush(self):
            return None

    ex = Exchange(cfg).start()
    try:
        ex.history.out = Out()
        trade_round(ex.gateway.endpoint, "a", 2)
        assert wait_for(lambda: ex.history_stats()["stored_seq"] == [4])
        old = ex.history.proc
        ex.history.restart_delay_s = 3600.0                 # held down while the next orders are journaled
        os.kill(old.pid, signal.SIGKILL)
        old.join(10)
        assert not ex.history_stats()["alive"]
        trade_round(ex.gateway.endpoint, "b", 2)            # journaled while no writer runs
        time.sleep(0.5)
        assert ex.history.proc is old and ex.history_stats()["restarts"] == 0
        ex.history.restart_delay_s = 0.0
        assert wait_for(lambda: ex.history.proc is not old and ex.history.proc.is_alive())
        assert "history writer exited (code -9); starting it again" in "".join(out)
        assert wait_for(lambda: ex.history_stats()["stored_seq"] == [8] and ex.history_stats()["lag"] == 0)
        assert ex.history_stats()["restarts"] == 1
    finally:
        ex.stop()
    s = SqliteStore(str(tmp_path / "data" / "history.sqlite"))
    try:
        assert s.count("trades") == 4 and s.count("orders") == 8
    finally:
        s.close()


@pytest.mark.slow
def test_ci_services_start_answer_and_leave_nothing_running():
    """.ci/services.sh (sourced by .ci/run): a PostgreSQL and a Redis in a temporary directory, their URLs
    exported, both stopped and the directory removed by stop_services; nothing left running."""
    import shutil

    root = Path(__file__).resolve().parents[1]
    if not shutil.which("redis-server") or not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        pytest.skip("Debian's postgresql and redis-server are not installed (.ci/run installs them)")
    script = (f". {root}/.ci/services.sh\nstart_services\n"
              'echo "PG=$FH_TEST_POSTGRES_URL"; echo "REDIS=$FH_TEST_REDIS_URL"; echo "DIR=$FH_SERVICES_DIR"\n'
              f"{sys.executable} -c \"import os, psycopg, redis; "
              "psycopg.connect(os.environ['FH_TEST_POSTGRES_URL']).execute('select 1'); "
              "print('REDIS_PING', redis.Redis.from_url(os.environ['FH_TEST_REDIS_URL']).ping())\"\n"
              "stop_services\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FH_TEST_") and k != "TMPDIR"}
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=180, env=env)
    assert r.returncode == 0, r.stderr
    out = dict(ln.split("=", 1) for ln in r.stdout.splitlines() if "=" in ln)
    assert out["PG"].startswith("postgresql://") and out["REDIS"].startswith("unix://"), (r.stdout, r.stderr)
    assert "REDIS_PING True" in r.stdout
    assert not Path(out["DIR"]).exists()
    port = out["PG"].rsplit(":", 1)[1].split("/")[0]
    sock = out["REDIS"][len("unix://"):]
    for st in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            cmd = st.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        assert out["DIR"] not in cmd and f"-p {port}" not in cmd and sock not in cmd, cmd


def test_history_command_on_a_journal_damaged_in_the_middle(tmp_path, capsys):
    """`feedhandler history` (store what the journal holds, exit) on a journal with a damaged frame and
    valid frames after it: a data-dir error (exit 2) saying where, not exit 0 with the rest silently
    unstored. A torn tail only (a crashed exchange not restarted yet) stores everything before it, exit 0."""
    from engine.history.service import main

    d = tmp_path / "d"
    make_data_dir(d, 20)
    path = d / "journal" / "journal.bin"
    good = path.read_bytes()
    path.write_bytes(good + b"\x40\x00\x00\x00garbage")          # a torn tail
    assert main(["--data-dir", str(d), "--db", str(tmp_path / "a.sqlite")]) == 0
    assert "stored seq 120 of 120" in capsys.readouterr().out
    bad = bytearray(good)
    bad[len(good) // 2] ^= 0x40
    path.write_bytes(bytes(bad))
    assert main(["--data-dir", str(d), "--db", str(tmp_path / "b.sqlite")]) == 2
    err = capsys.readouterr().err
    assert "corrupt journal frame at byte" in err and "history stored what comes before it" in err
