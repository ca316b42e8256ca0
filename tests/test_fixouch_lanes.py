"""Per-shard lanes through the FIX and OUCH acceptors (issue 10, item 7: "per-shard queues so a dead shard
blocks only its own symbols"). An exchange whose two shards are `feedhandler shard-server` processes on
loopback, one of them SIGSTOPped past the router's timeout: a FIX (resp. OUCH) session's order for the
healthy shard is answered at once while another session's order for the stopped shard is outstanding
(the acceptor's event loop is not held by the pipeline); the outstanding order is settled after SIGCONT
(answered "unknown" by the router, its report follows the settlement), exactly once. A session's own
later requests still wait for its earlier one: its answers keep the order of its requests. Every test
stops what it starts."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

zmq = pytest.importorskip("zmq")
simplefix = pytest.importorskip("simplefix")

from _durability_fix import FixClient  # noqa: E402
from _durability_support import SPEC, free_port, wait_for  # noqa: E402
from engine.fix.message import utc_timestamp  # noqa: E402
from feedhandler.protocols import ouch42, soupbintcp as soup  # noqa: E402

SYMS = ["AAPL", "MSFT"]          # AAPL -> shard 0, MSFT -> shard 1 (the one stopped)
TIMEOUT_S = 1.5                  # the router's timeout: a healthy-shard answer must come well before it
FAST_S = TIMEOUT_S / 4
OUCH_USERS = {"alice": {"password": "pw-a", "account": "OA"}, "bob": {"password": "pw-b", "account": "OB"}}


class ShardServer:
    """One shard-server process on a loopback port."""

    def __init__(self):
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "engine.shard_server", "--bind",
                                      f"tcp://127.0.0.1:{self.port}"], stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("shard server listening on"), line

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def stall(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

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
def exchange(tmp_path):
    """An in-process exchange on two shard servers, with a FIX acceptor (sessions F1, F2) and an OUCH
    acceptor (users alice, bob); yields (exchange, healthy server, server to stop)."""
    from engine.exchange import Exchange, load_config

    servers = [ShardServer(), ShardServer()]
    ex = None
    try:
        sessions = [{"begin_string": "FIX.4.4", "our_comp_id": "EXCH", "their_comp_id": s, "account": s}
                    for s in ("F1", "F2")]
        cfg = load_config(None, {
            "data_dir": str(tmp_path / "d"), "gateway.endpoint": "tcp://127.0.0.1:*",
            "marketdata.endpoint": "tcp://127.0.0.1:*", "symbols": SYMS, "engine.fsync": "none",
            "engine.remote": [s.endpoint for s in servers], "engine.remote_timeout_s": TIMEOUT_S,
            "risk": {"price_band_bps": 0},
            "fix": {"port": 0, "spec_dir": str(SPEC), "sessions": sessions},
            "ouch": {"port": 0, "users": OUCH_USERS}})
        ex = Exchange(cfg).start()
        yield ex, servers[0], servers[1]
    finally:
        for s in servers:
            s.resume()
        if ex is not None:
            ex.stop()
        for s in servers:
            s.close()


# ---- FIX ----------------------------------------------------------------------------------------------
def fix_session(port: int, sender: str) -> FixClient:
    c = FixClient(port, sender, "FIX.4.4", 1)
    c.send(b"A", [(98, 0), (108, 30)])
    c.pump(timeout=0.5)
    assert any(m.get(35) == b"A" for m in c.got), "no Logon answer"
    return c


def fix_new(c: FixClient, clid: str, sym: str, price: str) -> None:
    c.send(b"D", [(11, clid), (21, "1"), (55, sym), (54, "2"), (38, "1"), (40, "2"), (44, price), (59, "1"),
                  (60, utc_timestamp().decode())])


def fix_report(c: FixClient, clid: str, timeout: float, exec_type: bytes = b"0"):
    """The first ExecutionReport of ``clid`` with this ExecType, waiting at most ``timeout``."""
    end = time.monotonic() + timeout
    while True:
        for m in c.got:
            if m.get(35) == b"8" and m.get(11) == clid.encode() and m.get(150) == exec_type:
                return m
        left = end - time.monotonic()
        if left <= 0:
            return None
        c.pump(timeout=min(0.02, left))


def test_fix_session_is_answered_while_another_waits_on_a_stopped_shard(exchange):
    ex, _healthy, stopped = exchange
    s1, s2 = fix_session(ex.fix.port, "F1"), fix_session(ex.fix.port, "F2")
    try:
        fix_new(s1, "w-aapl", "AAPL", "100")          # both shards answer (and their lanes exist)
        fix_new(s2, "w-msft", "MSFT", "50")
        assert fix_report(s1, "w-aapl", 5) is not None and fix_report(s2, "w-msft", 5) is not None
        stopped.stall()
        t0 = time.monotonic()
        fix_new(s2, "m1", "MSFT", "51")               # outstanding: its shard is stopped
        time.sleep(0.1)
        lat = []
        for i in range(5):
            s0 = time.monotonic()
            fix_new(s1, f"a{i}", "AAPL", str(101 + i))
            er = fix_report(s1, f"a{i}", TIMEOUT_S * 2)
            lat.append(time.monotonic() - s0)
            assert er is not None, f"a{i}: no ExecutionReport: {[str(m) for m in s1.got]}"
        print(f"FIX: healthy-shard ExecutionReports in {min(lat) * 1e3:.1f}..{max(lat) * 1e3:.1f} ms while another "
              f"session's order waits on the stopped shard (router timeout {TIMEOUT_S} s)")
        assert max(lat) < FAST_S, f"F1's AAPL orders waited {max(lat):.3f} s behind F2's stopped shard"
        assert time.monotonic() - t0 < TIMEOUT_S, "the stopped shard's order was no longer outstanding"
        assert fix_report(s2, "m1", 0.05) is None      # still outstanding meanwhile
        # F2's own next order waits for its first (a session's answers keep the order of its requests)
        s0 = time.monotonic()
        fix_new(s2, "m2-aapl", "AAPL", "120")
        assert fix_report(s2, "m2-aapl", TIMEOUT_S * 3) is not None
        assert time.monotonic() - t0 >= TIMEOUT_S * 0.9, "F2's second order overtook its first"
        stopped.resume()
        # the stopped shard's order is settled ("unknown" at the router's timeout): reported once, after
        er = fix_report(s2, "m1", 15)
        assert er is not None, "m1 never settled"
        assert er.get(39) == b"0" and er.get(55) == b"MSFT"
        s2.pump(timeout=0.3)
        reports = [m for m in s2.got if m.get(35) == b"8" and m.get(11) == b"m1"]
        assert len(reports) == 1, reports
        seqs = [int(m.get(34)) for m in s2.got]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs     # no gap, no reordering
        # the settled order is the session's: cancel by OrigClOrdID
        s2.send(b"F", [(11, "m1-x"), (41, "m1"), (55, "MSFT"), (54, "2"), (60, utc_timestamp().decode())])
        assert fix_report(s2, "m1-x", 10, b"4") is not None, "the settled order cannot be canceled"
        assert wait_for(lambda: not ex.engine._shards[1].down)
        assert ex.pipeline.stats.errors == 0
        assert ex.fix.app.stats["orphan_events"] == 0 and ex.fix.app.stats["unknown_outcomes"] == 1
    finally:
        s1.close()
        s2.close()


# ---- OUCH ---------------------------------------------------------------------------------------------
class OuchClient:
    def __init__(self, port: int, user: str):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.f = soup.Framer()
        self.got: list = []           # (name, fields) of the sequenced messages
        self.s.sendall(soup.login_request(user, OUCH_USERS[user]["password"], "", 0))
        end = time.monotonic() + 5
        while not self.logged_in and time.monotonic() < end:
            self._read(0.1)
        assert self.logged_in, "no Login Accepted"

    logged_in = False

    def _read(self, timeout: float) -> None:
        self.s.settimeout(max(timeout, 0.001))
        try:
            data = self.s.recv(65536)
        except socket.timeout:
            return
        assert data, "OUCH connection closed"
        for kind, payload in self.f.feed(data):
            if kind == soup.LOGIN_ACCEPTED:
                self.logged_in = True
            elif kind == b"S":
                self.got.append(ouch42.decode(payload, "out"))

    def enter(self, tok: str, stock: str, price: int) -> None:
        self.s.sendall(soup.unsequenced(ouch42.encode(
            "enter_order", order_token=tok, side=b"S", shares=1, stock=stock, price=price, time_in_force=99999,
            firm="FRM1", display=b"Y", capacity=b"A", intermarket_sweep=b"N", minimum_quantity=0, cross_type=b"N",
            customer_type=b"R")))

    def cancel(self, tok: str) -> None:
        self.s.sendall(soup.unsequenced(ouch42.encode("cancel_order", order_token=tok, shares=0)))

    def wait(self, name: str, tok: str, timeout: float):
        end = time.monotonic() + timeout
        while True:
            for n, f in self.got:
                if n == name and (f.get("order_token") or b"").strip() == tok.encode():
                    return f
            left = end - time.monotonic()
            if left <= 0:
                return None
            self._read(min(0.02, left))

    def close(self) -> None:
        self.s.close()


def test_ouch_user_is_answered_while_another_waits_on_a_stopped_shard(exchange):
    ex, _healthy, stopped = exchange
    alice, bob = OuchClient(ex.ouch.port, "alice"), OuchClient(ex.ouch.port, "bob")
    try:
        alice.enter("W-AAPL", "AAPL", 1_000_000)
        bob.enter("W-MSFT", "MSFT", 500_000)
        assert alice.wait("accepted", "W-AAPL", 5) is not None and bob.wait("accepted", "W-MSFT", 5) is not None
        stopped.stall()
        t0 = time.monotonic()
        bob.enter("B1", "MSFT", 510_000)               # outstanding: its shard is stopped
        time.sleep(0.1)
        lat = []
        for i in range(5):
            s0 = time.monotonic()
            alice.enter(f"A{i}", "AAPL", 1_010_000 + i * 10_000)
            acc = alice.wait("accepted", f"A{i}", TIMEOUT_S * 2)
            lat.append(time.monotonic() - s0)
            assert acc is not None, f"A{i}: no Accepted"
        print(f"OUCH: healthy-shard Accepted in {min(lat) * 1e3:.1f}..{max(lat) * 1e3:.1f} ms while another user's "
              f"order waits on the stopped shard (router timeout {TIMEOUT_S} s)")
        assert max(lat) < FAST_S, f"alice's AAPL orders waited {max(lat):.3f} s behind bob's stopped shard"
        assert time.monotonic() - t0 < TIMEOUT_S, "the stopped shard's order was no longer outstanding"
        assert bob.wait("accepted", "B1", 0.05) is None
        # bob's own next order waits for his first (his messages keep the order of his requests)
        bob.enter("B2-AAPL", "AAPL", 1_200_000)
        assert bob.wait("accepted", "B2-AAPL", TIMEOUT_S * 3) is not None
        assert time.monotonic() - t0 >= TIMEOUT_S * 0.9, "bob's second order overtook his first"
        stopped.resume()
        acc = bob.wait("accepted", "B1", 15)
        assert acc is not None, "B1 never settled"
        assert acc["stock"].strip() == b"MSFT" and acc["shares"] == 1
        bob._read(0.3)
        assert sum(1 for n, f in bob.got if n == "accepted" and f["order_token"].strip() == b"B1") == 1
        # the settled order is bob's: it can be canceled by its token
        assert wait_for(lambda: not ex.engine._shards[1].down)
        bob.cancel("B1")
        assert bob.wait("canceled", "B1", 10) is not None, "the settled order cannot be canceled"
        assert ex.pipeline.stats.errors == 0
        assert ex.ouch.stats["unknown_outcomes"] == 1 and ex.ouch.stats["orphan_events"] == 0, ex.ouch.stats
    finally:
        alice.close()
        bob.close()


@pytest.mark.parametrize("engine,lanes", [({}, False), ({"engine.shards": 2}, True),
                                          ({"engine.processes": True}, True)])
def test_acceptors_wait_inline_only_for_one_in_process_shard(tmp_path, engine, lanes):
    """One in-process shard: nothing stalls alone, the acceptors answer inline (a loop hop less per order);
    several shards or shards out of process: per-shard lanes (asynchronous)."""
    from engine.exchange import Exchange, load_config

    cfg = load_config(None, {"data_dir": str(tmp_path / "d"), "gateway.endpoint": "tcp://127.0.0.1:*",
                             "marketdata.endpoint": "tcp://127.0.0.1:*", "symbols": SYMS, "engine.fsync": "none",
                             "history": {"enabled": False},
                             "fix": {"port": 0, "spec_dir": str(SPEC), "sessions": [
                                 {"begin_string": "FIX.4.4", "our_comp_id": "EXCH", "their_comp_id": "F1"}]},
                             "ouch": {"port": 0, "users": OUCH_USERS}, **engine})
    with Exchange(cfg) as ex:
        assert ex.fix.app.asynchronous is lanes and ex.ouch.asynchronous is lanes
