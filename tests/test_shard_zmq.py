"""Engine shards across hosts over ZeroMQ: two shard-server processes reached over tcp://127.0.0.1 (loopback
stands in for other hosts) give the same events, books and recovery as a single in-process engine."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_matcher import dict_flow  # noqa: E402

from engine.manager import EngineManager  # noqa: E402

SYMS = ["AAPL", "MSFT", "NVDA", "TSLA"]


def strip(ev: dict) -> dict:
    return {k: v for k, v in ev.items() if k not in ("seq", "token")}


def run_flow(m, flow, batch=37):
    out = []
    for i in range(0, len(flow), batch):
        out.extend([strip(e) for e in evs] for evs in m.submit_many(flow[i : i + batch]))
    return out


class ShardServers:
    """n ``python -m engine.shard_server`` processes on free loopback ports."""

    def __init__(self, n: int, journal_root: str | None = None):
        self.procs, self.endpoints = [], []
        for _ in range(n):
            cmd = [sys.executable, "-m", "engine.shard_server", "--bind", "tcp://127.0.0.1:0"]
            if journal_root:
                cmd += ["--journal-root", journal_root]
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
            line = p.stdout.readline()
            assert line.startswith("shard server listening on tcp://127.0.0.1:"), line
            self.procs.append(p)
            self.endpoints.append(line.split()[-1])

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            p.wait(10)
            p.stdout.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def test_two_shard_servers_over_tcp_match_single_engine():
    flow = dict_flow(21, 2000, SYMS, n_accounts=3)
    with EngineManager(SYMS) as single:
        want = run_flow(single, flow)
        want_books = {s: single.book(s, 50) for s in SYMS}
        want_bbo = {s: single.bbo(s) for s in SYMS}
        want_last = {s: single.last_trade(s) for s in SYMS}
    with ShardServers(2) as srv:
        m = EngineManager(SYMS, remote=srv.endpoints)
        assert m.n_shards == 2
        got = run_flow(m, flow)
        assert got == want
        assert {s: m.book(s, 50) for s in SYMS} == want_books
        assert {s: m.bbo(s) for s in SYMS} == want_bbo
        assert {s: m.last_trade(s) for s in SYMS} == want_last
        assert m.seq == len(flow)
        # each server owns exactly its symbols: a cancel routed by order id alone reaches the owner
        rest = [e for evs in got for e in evs if e["type"] == "accepted"]
        live = [e for e in rest if m.order(e["order_id"]) is not None]
        assert live, "the flow leaves resting orders"
        ev = live[-1]
        evs = m.submit({"type": "cancel", "account": ev["account"], "order_id": ev["order_id"]})
        assert evs[0]["type"] == "canceled" and evs[0]["symbol"] == ev["symbol"]
        h = m.state_hash()
        m.close()
        # the router did not start the shard servers: a graceful close() leaves them serving their books
        time.sleep(0.3)
        assert all(p.poll() is None for p in srv.procs)
        with EngineManager(SYMS, remote=srv.endpoints) as again:    # a restarted router finds them
            assert again.state_hash() == h
        # and close(shutdown_remote=True) is the explicit way to stop them
        EngineManager(SYMS, remote=srv.endpoints).close(shutdown_remote=True)
        for p in srv.procs:
            assert p.wait(10) == 0


def test_shard_servers_journal_and_recover(tmp_path):
    flow = dict_flow(22, 600, SYMS)
    root = tmp_path / "server-side"
    root.mkdir()
    with ShardServers(2, journal_root=str(root)) as srv:
        with EngineManager(SYMS, remote=srv.endpoints, journal_dir=str(tmp_path / "router-side")) as m:
            run_flow(m, flow)
            h = m.state_hash()
    # journals are on the servers' side, named after the router's shard directories
    assert sorted(os.listdir(root)) == ["shard-0", "shard-1"]
    assert not (tmp_path / "router-side").exists()
    with ShardServers(2, journal_root=str(root)) as srv:
        with EngineManager(SYMS, remote=srv.endpoints, journal_dir=str(tmp_path / "router-side")) as m:
            assert m.state_hash() == h and m.seq == len(flow)


def test_engine_thread_tokens_over_remote_shards():
    flow = dict_flow(23, 300, SYMS)
    with EngineManager(SYMS) as ref:
        want = [[strip(e) for e in evs] for evs in ref.submit_many(flow)]
    with ShardServers(2) as srv:
        m = EngineManager(SYMS, remote=srv.endpoints)
        got: dict = {}
        for evs in m.submit_many(flow, [("tok", i) for i in range(len(flow))]):
            for ev in evs:
                got.setdefault(ev["token"][1], []).append(strip(ev))
        m.close()
    assert [got.get(i, []) for i in range(len(flow))] == want


def test_server_refuses_a_second_owner_and_unknown_calls():
    from engine.manager import _ZmqShard

    with ShardServers(1) as srv:
        a = _ZmqShard(srv.endpoints[0], (["AAPL"], [0]), {})
        with pytest.raises(RuntimeError, match="already owns"):
            _ZmqShard(srv.endpoints[0], (["MSFT"], [1]), {})
        same = _ZmqShard(srv.endpoints[0], (["AAPL"], [0]), {})   # a router restart: same configuration
        assert same.call("get_seq") == 0
        with pytest.raises(RuntimeError, match="unknown call"):
            a.call("__class__")
        assert a.call("ping") == "pong"
        import numpy as np   # the dict API takes numpy integers; they cross the wire as JSON ints
        evs = a.call("submit_many", [{"type": "new", "account": "x", "symbol": "AAPL", "side": "B",
                                      "price": np.int64(5), "qty": np.int32(2)}], None)
        assert [(e["type"], e["price"], e["qty"]) for e in evs[0]] == [("accepted", 5, 2)]
        a.close()
