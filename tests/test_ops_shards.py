"""The shard router under failure: a shard that answers after the router's timeout is reported as an unknown
outcome and settled when it answers (never "rejected" while its order rests in a book); a restarted shard
server is re-initialised by the running router; a dead shard holds up only its own symbols. Shard servers are
`feedhandler shard-server` processes on loopback; every test stops what it starts."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

zmq = pytest.importorskip("zmq")

from _durability_support import free_port, wait_for  # noqa: E402
from engine.manager import EngineManager  # noqa: E402

PX = 1_000_000_000
SYMS = ["AAPL", "MSFT"]          # AAPL -> shard 0, MSFT -> shard 1


class Server:
    """One shard-server process on a fixed loopback port (so it can be restarted on the same address)."""

    def __init__(self, port: int | None = None, journal_root: str | None = None):
        self.port = port or free_port()
        self.journal_root = journal_root
        self.proc = None
        self.start()

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def start(self) -> None:
        cmd = [sys.executable, "-m", "engine.shard_server", "--bind", self.endpoint]
        if self.journal_root:
            cmd += ["--journal-root", self.journal_root]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("shard server listening on"), line

    def stall(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def kill(self) -> None:
        self.resume()
        self.proc.kill()
        self.proc.wait(10)
        self.proc.stdout.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.resume()
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc.stdout.close()


@pytest.fixture
def servers(request):
    made = []

    def make(*a, **kw):
        s = Server(*a, **kw)
        made.append(s)
        return s
    yield make
    for s in made:
        s.close()


def remote_exchange_config(tmp_path, servers, timeout_s: float) -> dict:
    """An exchange (in-process, any free ports) whose shards are these shard servers."""
    from engine.exchange import load_config
    return load_config(None, {"data_dir": str(tmp_path / "d"), "gateway.endpoint": "tcp://127.0.0.1:*",
                              "marketdata.endpoint": "tcp://127.0.0.1:*", "symbols": SYMS,
                              "engine.remote": [s.endpoint for s in servers], "engine.remote_timeout_s": timeout_s})


def new(sym, side, px, qty, clid, account="A", tif="gtc"):
    return {"type": "new", "account": account, "symbol": sym, "side": side, "price": px, "qty": qty, "tif": tif,
            "client_order_id": clid}


def test_late_answer_is_unknown_then_settled(servers):
    a, b = servers(), servers()
    settled = []
    m = EngineManager(SYMS, remote=[a.endpoint, b.endpoint], remote_timeout_s=0.4,
                      on_settled=lambda pairs: settled.extend(pairs))
    try:
        b.stall()
        evs = m.submit(new("MSFT", "S", 50 * PX, 10, "late-1"))
        assert [e["type"] for e in evs] == ["unknown"], evs      # not "rejected": the shard may apply it
        assert evs[0]["reason"] == "shard_timeout" and evs[0]["client_order_id"] == "late-1"
        b.resume()
        assert wait_for(lambda: settled), "the late answer was never settled"
        req, real = settled[0]
        assert req["client_order_id"] == "late-1"
        assert [e["type"] for e in real] == ["accepted"] and real[0]["leaves_qty"] == 10
        assert wait_for(lambda: not m._shards[1].down)
        # the order the client was told "unknown" about rests, and the router knows it
        assert m.book("MSFT")[1][0][:2] == (50 * PX, 10)
        assert m.order(real[0]["order_id"])["client_order_id"] == "late-1"
        assert m.settled == 1
    finally:
        m.close()


def test_dead_shard_blocks_only_its_own_symbols(servers):
    a, b = servers(), servers()
    m = EngineManager(SYMS, remote=[a.endpoint, b.endpoint], remote_timeout_s=1.5)
    try:
        b.stall()
        out = {}

        def slow():
            out["msft"] = m.submit(new("MSFT", "S", 50 * PX, 1, "m1"))
        t = threading.Thread(target=slow)
        t.start()
        time.sleep(0.1)
        t0 = time.monotonic()
        evs = m.submit(new("AAPL", "S", 100 * PX, 1, "a1"))   # the healthy shard, while MSFT's call hangs
        healthy_s = time.monotonic() - t0
        assert [e["type"] for e in evs] == ["accepted"]
        assert m.book("AAPL")[1][0][0] == 100 * PX
        assert healthy_s < 0.5, f"AAPL waited {healthy_s:.2f} s behind the dead MSFT shard"
        t.join(10)
        assert out["msft"][0]["type"] == "unknown"
        # the dead shard is now known to be down: its requests fail at once (never sent: a real reject)
        t0 = time.monotonic()
        evs = m.submit(new("MSFT", "S", 50 * PX, 1, "m2"))
        assert time.monotonic() - t0 < 0.2
        assert evs[0]["type"] == "rejected" and evs[0]["reason"] == "shard_unavailable"
        # a batch across both shards: the healthy part is applied
        res = m.submit_many([new("AAPL", "B", 99 * PX, 2, "a2"), new("MSFT", "B", 49 * PX, 2, "m3")])
        assert res[0][0]["type"] == "accepted" and res[1][0]["type"] == "rejected"
    finally:
        b.resume()
        m.close()


def test_restarted_shard_server_is_reinitialised(servers, tmp_path):
    root = tmp_path / "server-side"
    root.mkdir()
    a = servers(journal_root=str(root))
    b = servers(journal_root=str(root))
    m = EngineManager(SYMS, remote=[a.endpoint, b.endpoint], journal_dir=str(tmp_path / "j"),
                      remote_timeout_s=0.5)
    try:
        assert m.submit(new("MSFT", "S", 50 * PX, 7, "before"))[0]["type"] == "accepted"
        b.kill()
        b.start()                                     # same address, an empty server
        deadline = time.monotonic() + 15
        evs = None
        while time.monotonic() < deadline:
            evs = m.submit(new("MSFT", "S", 51 * PX, 3, f"after-{time.monotonic_ns()}"))
            if evs[0]["type"] == "accepted":
                break
            assert evs[0]["type"] in ("unknown", "rejected"), evs
            assert "not initialised" not in evs[0].get("text", "")
            time.sleep(0.1)
        assert evs[0]["type"] == "accepted", evs
        assert m._shards[1].reinits == 1
        # the restarted server recovered its journal: the order from before the crash is still there
        asks = m.book("MSFT")[1]
        assert asks[0][:2] == (50 * PX, 7) and asks[1][:2] == (51 * PX, 3)
    finally:
        m.close()


def test_settled_request_from_a_server_that_died_comes_from_its_journal(servers, tmp_path):
    """The server journals and applies the request, then dies before answering: after the restart the
    router settles the request from the events the server's recovery replayed."""
    root = tmp_path / "server-side"
    root.mkdir()
    a = servers(journal_root=str(root))
    b = servers(journal_root=str(root))
    settled = []
    m = EngineManager(SYMS, remote=[a.endpoint, b.endpoint], journal_dir=str(tmp_path / "j"),
                      remote_timeout_s=0.4, on_settled=lambda pairs: settled.extend(pairs))
    try:
        sh = m._shards[1]
        # stop reading answers of this shard: the request is applied and journaled, its answer never read
        sh.lock.acquire()
        orig_poll = sh.sock.poll
        sh.sock.poll = lambda *a, **k: 0
        sh.lock.release()
        evs = m.submit(new("MSFT", "S", 50 * PX, 4, "journaled"))
        assert evs[0]["type"] == "unknown"
        with sh.lock:
            sh.sock.poll = orig_poll
            # the server applied it and answered; that answer is lost (dropped here), then the server dies
            assert sh.sock.poll(5000)
            assert len(sh.sock.recv_multipart()) == 3
            b.kill()
        b.start()
        assert wait_for(lambda: settled, 15)
        req, real = settled[0]
        assert req["client_order_id"] == "journaled" and real[0]["type"] == "accepted", (real[0]["reason"], real[0]["text"])
        assert m.book("MSFT")[1][0][:2] == (50 * PX, 4)
    finally:
        m.close()


def test_gateway_reports_unknown_and_delivers_the_settlement(servers, tmp_path):
    from engine.client import Client
    from engine.exchange import Exchange

    a, b = servers(), servers()
    cfg = remote_exchange_config(tmp_path, [a, b], 0.4)
    with Exchange(cfg) as ex, Client(ex.gateway.endpoint, "demo-mm", "demo-mm-secret", timeout=5,
                                     retries=0) as c:
        b.stall()
        try:
            r = c.submit("MSFT", "S", 50 * PX, 10, client_order_id="gw-late")
        finally:
            b.resume()
        assert r["status"] == "unknown" and r["events"][0]["type"] == "unknown", r
        got = []
        end = time.monotonic() + 10
        while not got and time.monotonic() < end:
            got = [e for e in c.executions(timeout=0.5) if e.get("client_order_id") == "gw-late"]
        assert got and got[0]["exec_type"] == "accepted", got
        assert wait_for(lambda: not ex.engine._shards[1].down)
        book = c.book("MSFT")
        assert book["asks"][0][:2] == [50 * PX, 10]
        # a retry of the request now gets the settled outcome, not a second order
        r2 = c.submit("MSFT", "S", 50 * PX, 10, client_order_id="gw-late")
        assert r2.get("dup") and r2["status"] == "ack", r2
        assert c.book("MSFT")["asks"][0][:2] == [50 * PX, 10]


def test_router_that_cannot_reach_its_shard_fails_cleanly():
    from engine.shards import ShardTimeout
    before = {t.name for t in threading.enumerate()}
    with pytest.raises(ShardTimeout, match="no answer to init"):
        EngineManager(SYMS, remote=[f"tcp://127.0.0.1:{free_port()}"], remote_timeout_s=0.3)
    time.sleep(0.3)
    left = {t.name for t in threading.enumerate()} - before
    assert not [n for n in left if n.startswith("shard-probe")], left


def test_gateway_answers_a_healthy_shard_while_another_is_stopped(servers, tmp_path):
    """Per-shard lanes (issue 10, item 7): with one shard server SIGSTOPped, orders for the healthy shard
    are answered at once through the real gateway (not after the router's timeout), the stopped shard's
    orders are answered "unknown" once, then rejected at once, in their order; nothing is entered twice."""
    from engine.client import Client
    from engine.exchange import Exchange

    a, b = servers(), servers()
    timeout_s = 1.5
    cfg = remote_exchange_config(tmp_path, [a, b], timeout_s)
    with Exchange(cfg) as ex, Client(ex.gateway.endpoint, "demo-mm", "demo-mm-secret", timeout=10,
                                     retries=0) as c, \
            Client(ex.gateway.endpoint, "demo-taker", "demo-taker-secret", timeout=10, retries=0) as t:
        assert c.submit("MSFT", "S", 50 * PX, 1, client_order_id="m0")["status"] == "ack"
        b.stall()
        slow = {}
        try:
            def stalled():
                slow["r"] = t.submit("MSFT", "S", 51 * PX, 1, client_order_id="m1")
                slow["t"] = time.monotonic()
            th = threading.Thread(target=stalled)
            t0 = time.monotonic()
            th.start()
            time.sleep(0.1)                                  # the MSFT call is in flight now
            lat = []
            for i in range(10):
                s0 = time.monotonic()
                r = c.submit("AAPL", "S", (100 + i) * PX, 1, client_order_id=f"a{i}")
                lat.append(time.monotonic() - s0)
                assert r["status"] == "ack", r
            th.join(10)
            # the stopped shard is known down now: a query of its book is refused at once, nothing else
            bk = c.request({"type": "query", "what": "book", "symbol": "MSFT"})
            assert bk["status"] == "rejected" and bk["reason"] == "shard_unavailable", bk
            assert ex.pipeline.stats.errors == 0
        finally:
            b.resume()
        worst = max(lat)
        assert worst < timeout_s / 5, f"healthy-shard orders waited {worst:.3f} s behind the stopped shard"
        assert slow["r"]["status"] == "unknown", slow
        assert slow["t"] - t0 >= timeout_s * 0.9           # the stalled shard's own order did wait
        # the stopped shard's order settles; a retry of it is never a second order
        assert wait_for(lambda: not ex.engine._shards[1].down)
        got = []
        end = time.monotonic() + 10
        while not got and time.monotonic() < end:
            got = [e for e in t.executions(timeout=0.5) if e.get("client_order_id") == "m1"]
        assert got and got[0]["exec_type"] == "accepted", got
        r2 = t.submit("MSFT", "S", 51 * PX, 1, client_order_id="m1")
        assert r2.get("dup") and r2["status"] == "ack", r2
        asks = c.book("MSFT")["asks"]
        assert [x[:2] for x in asks] == [[50 * PX, 1], [51 * PX, 1]], asks
        assert [x[:2] for x in c.book("AAPL")["asks"]] == [[(100 + i) * PX, 1] for i in range(10)]


def test_retry_of_an_unknown_outcome_is_not_entered_twice(servers, tmp_path):
    """A client-library retry (same rid and client order id) of an order whose shard stalled past the
    router's timeout, sent while the outcome is still unknown, is answered "unknown" again (the first
    outcome's memory), never sequenced a second time when the shard is back."""
    from engine.client import Client
    from engine.exchange import Exchange

    a, b = servers(), servers()
    cfg = remote_exchange_config(tmp_path, [a, b], 0.4)
    with Exchange(cfg) as ex, Client(ex.gateway.endpoint, "demo-mm", "demo-mm-secret", timeout=5,
                                     retries=0) as c:
        req = {"type": "new", "rid": "r-1", "client_order_id": "u1", "symbol": "MSFT", "side": "S",
               "price": 50 * PX, "qty": 3, "tif": "gtc"}
        b.stall()
        try:
            first = c.request(dict(req))
            assert first["status"] == "unknown", first
            again = c.request(dict(req))                     # the shard still stopped
            assert again["status"] == "unknown" and again.get("dup"), again
        finally:
            b.resume()
        assert wait_for(lambda: not ex.engine._shards[1].down)
        # the retry once the shard answers again: the settled outcome, not a second order
        assert wait_for(lambda: c.request(dict(req)).get("status") == "ack", 10)
        third = c.request(dict(req))
        assert third.get("dup") and third["events"][0]["type"] == "accepted", third
        assert [x[:2] for x in c.book("MSFT")["asks"]] == [[50 * PX, 3]]
        assert ex.engine.seq == 1
