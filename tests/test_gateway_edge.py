"""The JSON gateway keeps its word (issue 10): edge checks before sequencing, failure isolation, and the
gateway's state (retry memory, risk, names) rebuilt from the journal after a restart.

Each test names the finding it guards; every one of them failed on the code before the fix.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

zmq = pytest.importorskip("zmq")

from engine.auth import Authenticator, KeyStore, sign
from engine.client import Client
from engine.gateway import Gateway, OrderPipeline, dumpb, loads
from engine.limits import MAX_BODY_BYTES, MAX_FRAME_BYTES, MAX_ID_BYTES
from engine.manager import EngineManager, ShardEngine
from engine.risk import RiskLimits, RiskManager
from engine.shard_core import JournalWriteFailed

PX = 1_000_000_000
KEYS = {"alice": (b"alice-secret", "ACC-A"), "bob": (b"bob-secret", "ACC-B")}
LOOSE = dict(price_band_bps=0, rate_per_s=0, bytes_per_s=0)


def _new(clid, side="B", price=100 * PX, qty=1, sym="AAPL", **kw):
    return {"type": "new", "rid": f"rid-{clid}", "client_order_id": clid, "symbol": sym, "side": side,
            "price": price, "qty": qty, **kw}


def _pipe(jd, **limits):
    lim = dict(LOOSE)
    lim.update(limits)
    eng = EngineManager(["AAPL", "MSFT"], journal_dir=str(jd))
    return OrderPipeline(eng, RiskManager(RiskLimits(**lim)))


# ---- item 1: sequence numbers only for what the journal took ----------------------------------------
def test_overlong_client_order_id_rejected_at_the_edge_and_never_sequenced(tmp_path):
    pipe = _pipe(tmp_path)
    r = pipe.handle("ACC-A", None, dict(_new("x" * 70_000), rid="r-long"))
    assert (r["status"], r["reason"]) == ("rejected", "bad_request") and "client_order_id" in r["text"]
    assert pipe.handle("ACC-A", None, _new("ok-1"))["status"] == "ack"
    # the engine refuses it too (FIX and OUCH reach the engine without the JSON edge)
    ev = pipe.engine.submit({"type": "new", "account": "ACC-A", "client_order_id": "y" * (MAX_ID_BYTES + 1),
                             "symbol": "AAPL", "side": "B", "price": PX, "qty": 1})
    assert ev[0]["type"] == "rejected" and ev[0]["seq"] == 0
    assert pipe.handle("ACC-A", None, _new("ok-2"))["status"] == "ack"
    assert pipe.engine.seq == 2
    pipe.engine.close()
    again = EngineManager(["AAPL", "MSFT"], journal_dir=str(tmp_path))    # used to fail: sequence gap 1 -> 3
    assert again.seq == 2
    again.close()


def test_failed_journal_write_rolls_back_sequence_and_counters(tmp_path):
    sh = ShardEngine(["AAPL"], journal_dir=str(tmp_path))
    req = {"type": "new", "account": "NEW-ACCT", "client_order_id": "a", "symbol": "AAPL", "side": "B",
           "price": PX, "qty": 1}
    real = sh.journal.commit

    def broken():
        raise OSError(28, "No space left on device")
    sh.journal.commit = broken
    with pytest.raises(JournalWriteFailed):
        sh.submit_many([dict(req)])
    assert sh.seq == 0 and sh.next_n == [0] and "NEW-ACCT" not in sh.accounts
    sh.journal.commit = real
    out = sh.submit_many([dict(req)])
    assert out[0][0]["type"] == "accepted" and out[0][0]["seq"] == 1
    assert out[0][0]["order_id"] & ((1 << 40) - 1) == 1
    sh.close()
    again = ShardEngine(["AAPL"], journal_dir=str(tmp_path))
    assert again.seq == 1 and again.state_hash() == sh.state_hash()
    again.close()


def test_old_journal_records_still_load_and_unknown_ones_fail_clearly(tmp_path):
    from engine.journal import JournalWriter
    from engine.shard_core import pack_str

    sh = ShardEngine(["AAPL"], journal_dir=str(tmp_path / "new"))
    sh.submit_many([{"type": "new", "account": "A", "client_order_id": "c1", "symbol": "AAPL", "side": "B",
                     "price": PX, "qty": 3, "dedup_key": "c:c1"}])
    sh.close()
    # rewrite its records in the version 1 layout (b"R": no dedup key), as older builds wrote them
    from engine.journal import read_journal
    payloads, _ = read_journal(str(tmp_path / "new" / "journal.bin"))
    os.makedirs(tmp_path / "old")
    w = JournalWriter(str(tmp_path / "old" / "journal.bin"))
    for p in payloads:
        if p[:1] == b"Q":
            size = 64
            body = p[1:1 + size]
            rest = p[1 + size:]
            n1 = int.from_bytes(rest[:2], "little")
            acct = rest[2:2 + n1].decode()
            rest = rest[2 + n1:]
            n2 = int.from_bytes(rest[:2], "little")
            clid = rest[2:2 + n2].decode()
            p = b"R" + body + pack_str(acct) + pack_str(clid)
        w.append(p)
    w.close()
    old = ShardEngine(["AAPL"], journal_dir=str(tmp_path / "old"))
    assert old.seq == 1 and old.state_hash() == ShardEngine(["AAPL"], journal_dir=str(tmp_path / "new")).state_hash()
    old.close()
    w = JournalWriter(str(tmp_path / "old" / "journal.bin"))
    w.append(b"Z" + b"\0" * 64)
    w.close()
    with pytest.raises(ValueError, match="unknown journal record type"):
        ShardEngine(["AAPL"], journal_dir=str(tmp_path / "old"))


# ---- item 2: failure isolation ----------------------------------------------------------------------
@pytest.fixture
def gateway(tmp_path):
    eng = EngineManager(["AAPL", "MSFT"], journal_dir=str(tmp_path / "j"))
    pipe = OrderPipeline(eng, RiskManager(RiskLimits(**LOOSE)))
    gw = Gateway(pipe, Authenticator(KeyStore(KEYS)), "tcp://127.0.0.1:*", workers=2).start()
    yield gw, pipe
    gw.stop()
    eng.close()


def test_unknown_symbol_book_query_answers_and_every_worker_survives(gateway):
    gw, _ = gateway
    with Client(gw.endpoint, "alice", b"alice-secret", timeout=3, retries=0) as c:
        for _ in range(6):          # more than the workers: each would have died on the old code
            r = c.book("NOPE")
            assert (r["status"], r["reason"]) == ("rejected", "unknown_symbol")
        assert c.hello()["status"] == "ok"
        assert c.submit("AAPL", "B", PX, 1)["status"] == "ack"


def test_exception_in_one_request_is_an_error_reply_to_it_alone(gateway):
    gw, pipe = gateway

    class Broken:
        def report(self, account):
            raise RuntimeError("portfolio bug")
    pipe.portfolio = Broken()
    with Client(gw.endpoint, "alice", b"alice-secret", timeout=3, retries=0) as c:
        for _ in range(4):
            r = c.position("AAPL")
            assert (r["status"], r["reason"]) == ("rejected", "internal_error")
        assert c.hello()["status"] == "ok"
    assert pipe.stats.errors == 4


ENGINE_FAILS = textwrap.dedent("""
    import sys, time
    from engine.auth import Authenticator, KeyStore
    from engine.gateway import Gateway, OrderPipeline
    from engine.manager import EngineManager
    from engine.risk import RiskLimits, RiskManager

    class FailingEngine(EngineManager):
        def submit_many(self, reqs, tokens=None):
            if any(r.get("symbol") == "MSFT" for r in reqs):
                raise RuntimeError("matching engine bug")
            return super().submit_many(reqs, tokens)

    eng = FailingEngine(["AAPL", "MSFT"])
    pipe = OrderPipeline(eng, RiskManager(RiskLimits(price_band_bps=0)))
    gw = Gateway(pipe, Authenticator(KeyStore({"alice": (b"alice-secret", "ACC-A")})), "tcp://127.0.0.1:*").start()
    print(gw.endpoint, flush=True)
    time.sleep(60)
    print("still alive", flush=True)
""")


def test_engine_thread_exception_ends_the_process_with_a_log_line():
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    p = subprocess.Popen([sys.executable, "-c", ENGINE_FAILS], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env)
    try:
        endpoint = p.stdout.readline().strip()
        assert endpoint.startswith("tcp://"), p.stderr.read()
        with Client(endpoint, "alice", b"alice-secret", timeout=2, retries=0) as c:
            assert c.submit("AAPL", "B", PX, 1)["status"] == "ack"
            c.send_raw(dumpb({"type": "new", "rid": "boom", "client_order_id": "boom", "symbol": "MSFT",
                              "side": "B", "price": PX, "qty": 1}))
            rc = p.wait(timeout=20)
        assert rc == 70
        err = p.stderr.read()
        assert "engine thread failed" in err and "matching engine bug" in err
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


# ---- item 3: the state machine survives a restart --------------------------------------------------
def _trade_setup(pipe):
    # a trade at 100 (reference for the band), MM keeps a resting sell, ACC-A is long 10 (its max)
    assert pipe.handle("MM", None, _new("mm-1", "S", 100 * PX, 10))["status"] == "ack"
    assert pipe.handle("ACC-A", None, _new("a-1", "B", 100 * PX, 10))["status"] == "ack"
    assert pipe.handle("MM2", None, _new("mm-2", "S", 101 * PX, 5))["status"] == "ack"
    assert pipe.handle("ACC-B", None, _new("b-1", "B", 99 * PX, 5))["status"] == "ack"


@pytest.mark.parametrize("how", ["graceful", "crash"])
def test_restart_rebuilds_retry_memory_risk_band_and_names(tmp_path, how):
    limits = dict(max_position=10, price_band_bps=1_000)
    pipe = _pipe(tmp_path, **limits)
    _trade_setup(pipe)
    first = pipe.handle("ACC-A", None, _new("a-1", "B", 100 * PX, 10))
    assert first.get("dup") is True
    live_hash = pipe.state_hash()
    if how == "graceful":
        pipe.engine.close()
    else:
        # "crash": the old engine is simply abandoned (journal writes are os.write: nothing buffered in
        # the process), like a SIGKILL, which also drops the journal's writer lock (the kernel closes the
        # lock file); the durability suite kills a real process
        for sh in pipe.engine._shards:
            sh.shard.journal.lock.release()
    pipe2 = _pipe(tmp_path, **limits)
    assert pipe2.rebuilt == 4
    assert pipe2.state_hash() == live_hash
    # a retry of a pre-restart order (same rid and client order id) is not entered twice
    again = pipe2.handle("ACC-A", None, _new("a-1", "B", 100 * PX, 10))
    assert again.get("dup") is True and again["events"][0]["order_id"] == first["events"][0]["order_id"]
    # the account at max_position cannot buy more; the price band still holds
    assert pipe2.handle("ACC-A", None, _new("a-2", "B", 100 * PX, 1))["reason"] == "position_limit"
    assert pipe2.handle("ACC-B", None, _new("b-2", "B", 150 * PX, 1))["reason"] == "price_band"
    # cancel by original client order id works for a pre-restart order
    r = pipe2.handle("ACC-B", None, {"type": "cancel", "rid": "x-1", "orig_client_order_id": "b-1"})
    assert [e["type"] for e in r["events"]] == ["canceled"]
    # the order counter continues: a new order gets the next id, not a reused one
    r = pipe2.handle("MM2", None, _new("mm-3", "S", 102 * PX, 1))
    assert r["events"][0]["order_id"] & ((1 << 40) - 1) == 5
    pipe2.engine.close()


def test_risk_is_decided_in_sequence_order_within_one_batch(tmp_path):
    pipe = _pipe(tmp_path, max_position=10)
    out = pipe.handle_many([("ACC-A", None, _new("p-1", "B", PX, 6), None),
                            ("ACC-A", None, _new("p-2", "B", PX, 6), None)])
    assert out[0]["status"] == "ack" and out[1]["reason"] == "position_limit"
    # a retry of an order in the same batch is the same order
    out = pipe.handle_many([("ACC-A", None, _new("p-3", "S", 2 * PX, 1), None),
                            ("ACC-A", None, _new("p-3", "S", 2 * PX, 1), None)])
    assert out[1].get("dup") is True and out[1]["events"] == out[0]["events"]
    pipe.engine.close()


# ---- item 5: edge hygiene ------------------------------------------------------------------------
@pytest.mark.parametrize("field,value", [("qty", 1.5), ("qty", True), ("qty", "7"), ("price", "100"),
                                         ("price", 1.5), ("side", 1), ("post_only", 1), ("symbol", ["AAPL"]),
                                         ("client_order_id", 7), ("tif", None), ("rid", {"a": 1})])
def test_types_are_strict_never_coerced(tmp_path, field, value):
    pipe = _pipe(tmp_path)
    req = _new("t-1")
    req[field] = value
    r = pipe.handle("ACC-A", None, req)
    assert (r["status"], r["reason"]) == ("rejected", "bad_request"), r
    assert pipe.engine.seq == 0
    pipe.engine.close()


def _frames(key, secret, body, ts=None):
    ts = time.time_ns() if ts is None else ts
    return [key, str(ts).encode(), sign(secret, ts, body), body]


def test_message_size_limits(gateway):
    gw, pipe = gateway
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(gw.endpoint)
    try:
        body = dumpb(dict(_new("big-1"), pad="x" * MAX_BODY_BYTES))
        s.send_multipart(_frames(b"alice", b"alice-secret", body))
        assert s.poll(3000)
        assert loads(s.recv())["reason"] == "message_too_large"
        # above the frame limit: never read, the peer is dropped; the gateway keeps serving everyone
        s.send_multipart(_frames(b"alice", b"alice-secret", b"{" + b" " * (MAX_FRAME_BYTES + 10) + b"}"))
        assert not s.poll(500)
    finally:
        s.close(linger=0)
    with Client(gw.endpoint, "bob", b"bob-secret", timeout=3, retries=0) as c:
        assert c.hello()["status"] == "ok"
    assert pipe.stats.too_large == 1 and pipe.engine.seq == 0


def test_signed_order_without_ids_cannot_be_replayed_as_a_second_order(gateway):
    gw, pipe = gateway
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(gw.endpoint)
    try:
        body = dumpb({"type": "new", "symbol": "AAPL", "side": "B", "price": PX, "qty": 3})
        frames = _frames(b"alice", b"alice-secret", body)
        s.send_multipart(frames)
        assert s.poll(3000)
        first = loads(s.recv())
        s.send_multipart(frames)       # the same signed message again, inside the receive window
        assert s.poll(3000)
        second = loads(s.recv())
    finally:
        s.close(linger=0)
    assert first["status"] == "ack" and second.get("dup") is True
    assert pipe.engine.book("AAPL")[0] == [(PX, 3, 1)]


def test_rate_limit_is_per_api_key_across_connections(tmp_path):
    eng = EngineManager(["AAPL"])
    pipe = OrderPipeline(eng, RiskManager(RiskLimits(price_band_bps=0, rate_per_s=1, burst=3)))
    gw = Gateway(pipe, Authenticator(KeyStore(KEYS)), "tcp://127.0.0.1:*").start()
    clients = [Client(gw.endpoint, "alice", b"alice-secret", timeout=3, retries=0) for _ in range(5)]
    try:
        reasons = [c.submit("AAPL", "B", PX, 1).get("reason") for c in clients for _ in range(2)]
        assert reasons.count("rate_limited") >= 4          # 10 orders, one bucket of 3 (+ 1/s refill)
        with Client(gw.endpoint, "bob", b"bob-secret", timeout=3, retries=0) as b:   # another key: its own
            assert b.submit("AAPL", "B", PX, 1)["status"] == "ack"
    finally:
        for c in clients:
            c.close()
        gw.stop()
        eng.close()


def test_bytes_rate_limit_per_api_key(tmp_path):
    pipe = OrderPipeline(EngineManager(["AAPL"]), RiskManager(RiskLimits(price_band_bps=0, rate_per_s=0,
                                                                         bytes_per_s=1_000, burst_bytes=2_000)))
    out = [pipe.handle_many([("ACC-A", b"alice", _new(f"bb-{i}"), None, 900, None)])[0] for i in range(4)]
    assert [r["status"] for r in out[:2]] == ["ack", "ack"] and out[2]["reason"] == "rate_limited"


def test_open_order_cap_and_configured_reference_price(tmp_path):
    pipe = _pipe(tmp_path, max_open_orders=2, price_band_bps=1_000, reference_prices={"AAPL": 100 * PX})
    assert pipe.handle("ACC-A", None, _new("r-1", "B", 150 * PX))["reason"] == "price_band"   # no trade yet
    assert pipe.handle("ACC-A", None, _new("r-2", "B", 95 * PX))["status"] == "ack"
    assert pipe.handle("ACC-A", None, _new("r-3", "B", 96 * PX))["status"] == "ack"
    assert pipe.handle("ACC-A", None, _new("r-4", "B", 97 * PX))["reason"] == "max_open_orders"
    pipe.handle("ACC-A", None, {"type": "cancel", "rid": "c-2", "orig_client_order_id": "r-2"})
    assert pipe.handle("ACC-A", None, _new("r-5", "B", 97 * PX))["status"] == "ack"
    pipe.engine.close()


# ---- fuzz ----------------------------------------------------------------------------------------
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

_scalar = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False),
                    st.text(max_size=80), st.sampled_from(["AAPL", "MSFT", "B", "S", "buy", "limit", "market",
                                                           "ioc", "day", "new", "cancel", "amend"]))
_value = st.recursive(_scalar, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c,
                                                                                     max_size=3), max_leaves=6)
_field = st.sampled_from(["type", "rid", "client_order_id", "symbol", "side", "price", "qty", "order_type",
                          "tif", "post_only", "order_id", "orig_client_order_id", "new_price", "new_qty", "what",
                          "depth", "zzz"])
_request = st.one_of(
    st.dictionaries(_field, _value, max_size=10),
    st.builds(lambda t, d: dict(d, type=t), st.sampled_from(["new", "cancel", "amend", "query", "hello"]),
              st.dictionaries(_field, _value, max_size=10)),
    st.builds(lambda clid, side, px, q: _new(clid, side, px * PX, q),
              st.text(min_size=1, max_size=70), st.sampled_from(["B", "S"]), st.integers(90, 110),
              st.integers(1, 20)))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(reqs=st.lists(st.tuples(st.sampled_from(["ACC-A", "ACC-B", "MM"]), _request), min_size=1, max_size=25))
def test_fuzzed_requests_never_break_the_pipeline_and_replay_equals_live(tmp_path_factory, reqs):
    jd = tmp_path_factory.mktemp("fuzz")
    pipe = OrderPipeline(EngineManager(["AAPL", "MSFT"], journal_dir=str(jd)),
                         RiskManager(RiskLimits(price_band_bps=2_000, max_position=50, rate_per_s=0,
                                                max_open_orders=10)), dedup_size=16)
    for acct, req in reqs:
        r = pipe.handle(acct, None, req)
        assert r["status"] in ("ok", "ack", "rejected"), r
        if r["status"] == "rejected":
            assert r["reason"] != "internal_error", r
        json.dumps(pipe.finish(r))      # every reply encodes
    assert pipe.failed is None and pipe.stats.errors == 0
    assert all(len(m) <= 16 for m in pipe.state.dedup._by.values()) and len(pipe.state.dedup) <= 3 * 16
    assert pipe.handle("ACC-A", None, {"type": "hello"})["status"] == "ok"
    live = pipe.state_hash()
    pipe.engine.close()
    replayed = OrderPipeline(EngineManager(["AAPL", "MSFT"], journal_dir=str(jd)),
                             RiskManager(RiskLimits(price_band_bps=2_000, max_position=50, rate_per_s=0,
                                                    max_open_orders=10)), dedup_size=16)
    assert replayed.state_hash() == live
    replayed.engine.close()


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(bodies=st.lists(st.one_of(st.binary(max_size=200), _request.map(lambda r: dumpb(r) if _encodable(r) else b"{")),
                       min_size=1, max_size=10))
def test_fuzzed_frames_over_zeromq_never_kill_a_worker(gateway, bodies):
    gw, pipe = gateway
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(gw.endpoint)
    try:
        for body in bodies:
            s.send_multipart(_frames(b"alice", b"alice-secret", body))
            assert s.poll(5000), body
            assert "status" in loads(s.recv())
    finally:
        s.close(linger=0)
    with Client(gw.endpoint, "bob", b"bob-secret", timeout=3, retries=0) as c:
        assert c.hello()["status"] == "ok"
    assert pipe.failed is None


def _encodable(r) -> bool:
    try:
        dumpb(r)
        return True
    except (TypeError, ValueError, OverflowError):
        return False


def test_gateway_snapshot_then_journal_rebuilds_the_same_state(tmp_path):
    limits = dict(max_position=10, price_band_bps=1_000)
    pipe = _pipe(tmp_path, **limits)
    _trade_setup(pipe)
    pipe.snapshot()
    assert pipe.handle("MM2", None, _new("mm-9", "S", 103 * PX, 2))["status"] == "ack"
    live = pipe.state_hash()
    pipe.engine.close()
    pipe2 = _pipe(tmp_path, **limits)
    assert pipe2.rebuilt == 1                  # only the request after the snapshot was replayed
    assert pipe2.state_hash() == live
    assert pipe2.handle("ACC-A", None, _new("a-1", "B", 100 * PX, 10)).get("dup") is True
    assert pipe2.handle("ACC-A", None, _new("a-2", "B", 100 * PX, 1))["reason"] == "position_limit"
    pipe2.engine.close()
    # an engine snapshot without the gateway's is refused with a reason, never a silent partial state
    os.remove(tmp_path / "gateway-snapshot.json")
    with pytest.raises(ValueError, match="gateway-snapshot.json"):
        _pipe(tmp_path, **limits)


def test_deeply_nested_json_is_bad_json_not_a_dead_burst(gateway):
    gw, pipe = gateway
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(gw.endpoint)
    try:
        s.send_multipart(_frames(b"alice", b"alice-secret", b"[" * 2000 + b"]" * 2000))
        assert s.poll(3000)
        assert loads(s.recv())["reason"] == "bad_json"
    finally:
        s.close(linger=0)
    assert pipe.stats.errors == 0


def test_restart_with_two_shards_rebuilds_the_same_state(tmp_path):
    def make():
        return OrderPipeline(EngineManager(["AAPL", "MSFT"], shards=2, journal_dir=str(tmp_path)),
                             RiskManager(RiskLimits(**dict(LOOSE, max_position=8))))
    pipe = make()
    for i in range(6):
        sym = ("AAPL", "MSFT")[i % 2]
        pipe.handle("MM", None, _new(f"m{i}", "S", 100 * PX, 2, sym=sym))
        pipe.handle("ACC-A", None, _new(f"a{i}", "B", 100 * PX, 1, sym=sym))
    live = pipe.state_hash()
    pipe.engine.close()
    again = make()
    assert again.rebuilt == 12 and again.state_hash() == live
    assert again.handle("ACC-A", None, _new("a3", "B", 100 * PX, 1, sym="MSFT")).get("dup") is True
    again.engine.close()


def test_retry_memory_is_per_account(tmp_path):
    """One account's flood never pushes another account's outcome out of the retry memory."""
    pipe = OrderPipeline(EngineManager(["AAPL"]), RiskManager(RiskLimits(**LOOSE)), dedup_size=4)
    first = pipe.handle("ACC-B", None, _new("b-keep", "B", PX, 1))
    for i in range(20):
        pipe.handle("ACC-A", None, _new(f"flood-{i}", "S", 200 * PX, 1))
    again = pipe.handle("ACC-B", None, _new("b-keep", "B", PX, 1))
    assert again.get("dup") is True and again["events"] == first["events"]
    assert pipe.handle("ACC-A", None, _new("flood-0", "S", 200 * PX, 1)).get("dup") is None   # forgotten


def test_shard_timeout_is_an_unknown_outcome_not_a_reject(tmp_path):
    from engine.manager import ShardTimeout

    class Stalled(EngineManager):
        stall = True

        def submit_many(self, reqs, tokens=None):
            if self.stall:
                raise ShardTimeout("engine shard tcp://x: no answer to submit_many in 10 ms")
            return super().submit_many(reqs, tokens)
    pipe = OrderPipeline(Stalled(["AAPL"]), RiskManager(RiskLimits(**LOOSE)))
    r = pipe.handle("ACC-A", None, _new("u-1"))
    assert (r["status"], r["reason"]) == ("unknown", "outcome_unknown") and pipe.failed is None
    pipe.engine.stall = False      # not remembered: the retry is decided again (settling is the router's)
    assert pipe.handle("ACC-A", None, _new("u-1"))["status"] == "ack"


def test_journal_failure_on_the_engine_thread_is_fatal_and_fail_stop(tmp_path):
    pipe = _pipe(tmp_path)
    seen = []
    pipe.on_fatal = seen.append           # in a process: the default logs and exits 70 (tested above)
    assert pipe.handle("ACC-A", None, _new("j-0"))["status"] == "ack"
    shard = pipe.engine._shards[0].shard

    def broken():
        raise OSError(5, "Input/output error")
    shard.journal.commit = broken
    r = pipe.handle("ACC-A", None, _new("j-1"))
    assert (r["status"], r["reason"]) == ("rejected", "engine_failed")
    assert isinstance(seen[0], JournalWriteFailed) and pipe.engine.seq == 1
    # never a live pipeline answering as if nothing happened
    assert pipe.handle("ACC-A", None, {"type": "hello"})["reason"] == "engine_failed"
    del shard.journal.commit
    pipe.engine.close()
    assert EngineManager(["AAPL", "MSFT"], journal_dir=str(tmp_path)).seq == 1


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(messages=st.lists(st.lists(st.binary(max_size=80), min_size=1, max_size=7), min_size=1, max_size=6))
def test_fuzzed_raw_multipart_messages_are_answered(gateway, messages):
    gw, pipe = gateway
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(gw.endpoint)
    try:
        for frames in messages:
            s.send_multipart(frames)
            assert s.poll(5000), frames
            assert loads(s.recv())["status"] == "rejected"     # bad_frames or an authentication reason
    finally:
        s.close(linger=0)
    assert pipe.failed is None and pipe.engine.seq == 0


def test_a_standby_can_keep_the_gateway_state_and_hand_it_over(tmp_path):
    """What a hot standby needs (engine.manager.StandbyEngine belongs to the failover work): follow the
    journal, feed the replayed events to an OrderState as it goes, take over with that state."""
    from engine.gateway import OrderState
    from engine.manager import StandbyEngine

    limits = dict(max_position=10, price_band_bps=1_000)
    pipe = _pipe(tmp_path, **limits)
    sb = StandbyEngine(["AAPL", "MSFT"], str(tmp_path))
    state = OrderState(RiskManager(RiskLimits(**dict(LOOSE, **limits))))

    def follow():
        sb.shard.replay_payloads(sb.follower.poll(), source="primary")
        state.rebuild(sb.shard.take_replayed())
    _trade_setup(pipe)
    follow()
    assert pipe.handle("MM2", None, _new("mm-7", "S", 104 * PX, 1))["status"] == "ack"
    follow()
    live = pipe.state_hash()
    pipe.engine.close()                  # the primary is gone (a takeover never runs beside it)
    taken = OrderPipeline(sb.take_over(), state=state)
    assert taken.state_hash() == live
    assert taken.handle("ACC-A", None, _new("a-1", "B", 100 * PX, 10)).get("dup") is True
    assert taken.handle("ACC-A", None, _new("a-9", "B", 100 * PX, 1))["reason"] == "position_limit"
    taken.engine.close()


def test_a_request_that_is_not_an_object_is_a_bad_request(tmp_path):
    pipe = _pipe(tmp_path)
    for req in ([1, 2], "new", 7, None):
        r = pipe.handle("ACC-A", None, req)
        assert (r["status"], r["reason"]) == ("rejected", "bad_request"), r
    assert pipe.stats.errors == 0
    pipe.engine.close()


def test_an_unknown_outcome_event_is_answered_unknown_and_a_retry_is_not_entered_again(tmp_path):
    """An engine layer that reports a request's outcome as unknown (one ``unknown`` event; the shard router
    settles it later) gets status unknown, never an ack. A retry (same client order id) before the
    settlement is answered "unknown" again from the retry memory, never sent to the engine a second time
    (the shard may have applied the first: a second order, or a reject of an order that then rests); the
    settlement (engine.exchange.Exchange._on_settled: OrderState.remember) replaces it with the outcome."""
    class Router(EngineManager):
        stall = True
        calls = 0

        def submit_many(self, reqs, tokens=None):
            self.calls += 1
            if self.stall:
                return [[{"type": "unknown", "account": r["account"], "client_order_id": r["client_order_id"],
                          "reason": "shard_timeout", "seq": 0}] for r in reqs]
            return super().submit_many(reqs, tokens)
    pipe = OrderPipeline(Router(["AAPL"]), RiskManager(RiskLimits(**LOOSE)))
    r = pipe.handle("ACC-A", None, _new("k-1"))
    assert (r["status"], r["reason"]) == ("unknown", "shard_timeout")
    assert pipe.stats.acks == 0 and pipe.engine.calls == 1
    pipe.engine.stall = False
    again = pipe.handle("ACC-A", None, _new("k-1"))
    assert again["status"] == "unknown" and again.get("dup") is True and pipe.engine.calls == 1, again
    settled = {"status": "ack", "events": [{"type": "accepted", "account": "ACC-A", "client_order_id": "k-1"}]}
    pipe.state.remember("ACC-A", "c:k-1", settled)
    r = pipe.handle("ACC-A", None, _new("k-1"))
    assert r["status"] == "ack" and r.get("dup") is True and pipe.engine.calls == 1, r
    assert pipe.handle("ACC-A", None, _new("k-2"))["status"] == "ack" and pipe.engine.calls == 2
