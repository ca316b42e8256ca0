"""OUCH 4.2 acceptor (issue 10, item 8): partial cancel answered with Canceled and its decrement, Accepted
echoes the entered TIF/firm/capacity, the token map survives a restart (cancel of a resting pre-restart
token, no reuse of a used token); login timeout and packet size limit of the SoupBinTCP server."""
from __future__ import annotations

import socket
import time

import pytest

from engine.gateway import OrderPipeline
from engine.manager import EngineManager
from engine.ouch.acceptor import OuchAcceptor
from engine.risk import RiskLimits, RiskManager
from feedhandler.protocols import ouch42, soupbintcp as soup
from test_ouch42 import Tap

USERS = {"alice": ("pw-a", "ACC-A"), "bob": ("pw-b", "ACC-B")}


class Venue:
    def __init__(self, tmp_path, **kw):
        self.tmp, self.kw = tmp_path, kw
        self.eng = EngineManager(["AAPL", "MSFT"], journal_dir=str(tmp_path / "journal"))
        self._start()

    def _start(self):
        self.pipe = OrderPipeline(self.eng, RiskManager(RiskLimits(price_band_bps=0)))
        self.acc = OuchAcceptor(self.pipe, USERS, session="SESSION01", store_dir=self.tmp / "soup",
                                heartbeat_s=5, **self.kw).start()

    def restart(self):
        self.acc.stop()
        self.eng.close()
        self.eng = EngineManager(["AAPL", "MSFT"], journal_dir=str(self.tmp / "journal"))
        self._start()

    def close(self):
        self.acc.stop()
        self.eng.close()


@pytest.fixture
def venue(tmp_path):
    v = Venue(tmp_path)
    yield v
    v.close()


def login(port, user="alice", seq=0):
    t = Tap(port, [])
    t.send(soup.login_request(user, USERS[user][0], "", seq))
    pk = t.recv_packets(1)
    assert pk and pk[0][0] == soup.LOGIN_ACCEPTED, pk
    t.pending = pk[1:]          # what arrived with the Login Accepted (a replay) is read by msgs()
    return t


def enter(tok, side=b"S", shares=100, price=1_010_000, stock="AAPL", tif=99999, firm="FRM1", capacity=b"P"):
    return soup.unsequenced(ouch42.encode("enter_order", order_token=tok, side=side, shares=shares, stock=stock,
                                          price=price, time_in_force=tif, firm=firm, display=b"Y",
                                          capacity=capacity, intermarket_sweep=b"N", minimum_quantity=0,
                                          cross_type=b"N", customer_type=b"R"))


def msgs(t, n, timeout=3.0):
    return [ouch42.decode(p, "out") for k, p in t.recv_packets(n, timeout=timeout) if k == b"S"]


def asks(v):
    return [tuple(a)[:2] for a in v.pipe.in_engine(lambda: v.eng.book("AAPL", 10))[1]]


def test_accepted_echoes_entered_tif_firm_capacity(venue):
    a = login(venue.acc.port)
    try:
        a.send(enter("T1", tif=600, firm="ABCD", capacity=b"P"))
        (name, f), = msgs(a, 1)
        assert name == "accepted"
        assert (f["time_in_force"], f["firm"], f["capacity"]) == (600, b"ABCD", b"P")
    finally:
        a.close()


def test_partial_cancel_is_canceled_with_decrement(venue):
    a = login(venue.acc.port)
    try:
        a.send(enter("T1", shares=100))
        assert msgs(a, 1)[0][0] == "accepted"
        a.send(soup.unsequenced(ouch42.encode("cancel_order", order_token="T1", shares=30)))
        (name, f), = msgs(a, 1)
        assert name == "canceled", name
        assert (f["order_token"], f["decrement_shares"], f["reason"]) == (b"T1", 70, b"U")
        assert asks(venue) == [(101_000_000_000, 30)]
        a.send(soup.unsequenced(ouch42.encode("cancel_order", order_token="T1", shares=0)))
        (name, f), = msgs(a, 1)
        assert (name, f["decrement_shares"]) == ("canceled", 30)
        assert asks(venue) == []
    finally:
        a.close()


def test_token_map_rebuilt_after_restart(tmp_path):
    v = Venue(tmp_path)
    try:
        a = login(v.acc.port)
        a.send(enter("REST1", shares=100))
        a.send(enter("GONE1", shares=10, stock="ZZZZ"))          # rejected: the token is used anyway
        got = msgs(a, 2)
        assert [n for n, _ in got] == ["accepted", "rejected"]
        a.close()
        v.restart()
        a = login(v.acc.port)
        # a used token is not entered again (neither the resting one nor the rejected one)
        a.send(enter("REST1", shares=5, price=1_000_000))
        a.send(enter("GONE1", shares=5, price=1_000_000))
        assert msgs(a, 1, timeout=1.0) == []
        assert asks(v) == [(101_000_000_000, 100)]
        assert v.acc.stats["duplicate_tokens"] == 2
        # the resting pre-restart order is canceled by its token
        a.send(soup.unsequenced(ouch42.encode("cancel_order", order_token="REST1", shares=0)))
        (name, f), = msgs(a, 1)
        assert (name, f["order_token"], f["decrement_shares"]) == ("canceled", b"REST1", 100)
        assert asks(v) == []
        a.close()
    finally:
        v.close()


def test_login_timeout_closes_idle_connections(tmp_path):
    v = Venue(tmp_path, login_timeout_s=1.0)
    socks = []
    try:
        for _ in range(50):
            socks.append(socket.create_connection(("127.0.0.1", v.acc.port), timeout=5))
        time.sleep(1.8)
        closed = 0
        for s in socks:
            s.settimeout(2)
            try:
                closed += s.recv(1) == b""
            except (socket.timeout, ConnectionResetError):
                pass
        assert closed == len(socks)
        assert v.acc.stats["login_timeouts"] == len(socks)
    finally:
        for s in socks:
            s.close()
        v.close()


def test_oversized_packet_closes_before_buffering(venue):
    s = socket.create_connection(("127.0.0.1", venue.acc.port), timeout=5)
    try:
        s.sendall(b"\xff\xf0L" + b"x" * 4000)         # a packet announcing 65,520 bytes
        s.settimeout(3)
        assert s.recv(1) == b""
        assert venue.acc.stats["oversized_packets"] == 1
        # after login, the same limit
        a = login(venue.acc.port)
        a.send(soup.unsequenced(b"O" + b"x" * 2000))
        assert a.recv_packets(1, timeout=3)[-1][0] == b"EOF"
        assert venue.acc.stats["oversized_packets"] == 2
        a.close()
    finally:
        s.close()


def test_reports_lost_in_a_crash_are_caught_up_from_the_journal(tmp_path):
    v = Venue(tmp_path)
    try:
        a = login(v.acc.port)
        a.send(enter("C1", shares=100))
        assert msgs(a, 1)[0][0] == "accepted"
        a.close()
        v.pipe.register_sink("ACC-A", None)       # the 'crash window': ACC-A's fill never reaches OUCH
        r = v.pipe.handle("ACC-Z", "z", {"type": "new", "client_order_id": "Z1", "symbol": "AAPL", "side": "B",
                                         "qty": 40, "price": 101_000_000_000, "order_type": "limit", "tif": "ioc",
                                         "rid": "z1"})
        assert r["status"] == "ack"
        v.restart()
        assert v.acc.stats["caught_up"] == 1
        a = login(v.acc.port, seq=1)                # replay from the first message
        got = msgs(a, 2)
        assert [(n, f["order_token"]) for n, f in got] == [("accepted", b"C1"), ("executed", b"C1")]
        assert got[1][1]["executed_shares"] == 40
        assert msgs(a, 1, timeout=0.5) == []          # nothing twice
        a.close()
    finally:
        v.close()


def test_state_rebuilt_from_the_streams_equals_the_live_state(tmp_path):
    v = Venue(tmp_path)
    try:
        a, b = login(v.acc.port), login(v.acc.port, "bob")
        a.send(enter("A1", shares=100, tif=600, firm="ABCD", capacity=b"P"))
        a.send(enter("A2", shares=50, price=1_020_000))
        a.send(enter("A3", shares=10, stock="ZZZZ"))                        # rejected
        b.send(enter("B1", side=b"B", shares=30, tif=0))                    # fills A1 by 30
        a.send(soup.unsequenced(ouch42.encode("cancel_order", order_token="A1", shares=40)))     # partial
        a.send(soup.unsequenced(ouch42.encode("replace_order", existing_order_token="A2",
                                              replacement_order_token="A2R", shares=45, price=1_030_000,
                                              time_in_force=99998, display=b"Y", intermarket_sweep=b"N",
                                              minimum_quantity=0)))
        a.send(soup.unsequenced(ouch42.encode("modify_order", order_token="A2R", side=b"S", shares=20)))
        msgs(a, 8, timeout=1.5)
        msgs(b, 2, timeout=0.5)
        live = v.acc.state()
        h = v.acc.state_hash()
        a.close()
        b.close()
        v.restart()
        assert v.acc.stats["caught_up"] == 0
        assert v.acc.state() == live
        assert v.acc.state_hash() == h
    finally:
        v.close()


def test_partial_cancel_decrement_counts_a_late_routed_fill(tmp_path):
    """The exchange fills 30 of A1 (another user's order), then A1 is reduced to 40 open shares; the
    routed fill reaches the loop after the cancel's own reply: Executed 30 comes first and Canceled
    carries decrement 30 (70 -> 40), not 60."""
    class NoLoop:
        def call_soon_threadsafe(self, *a):
            pass
    eng = EngineManager(["AAPL"])
    pipe = OrderPipeline(eng, RiskManager(RiskLimits(price_band_bps=0)))
    acc = OuchAcceptor(pipe, USERS, session="SESSION01")
    acc.loop = NoLoop()
    for user, (_, account) in USERS.items():
        pipe.register_sink(account, lambda ev, u=user: acc._route(u, ev))
    acc._on_ouch("alice", ouch42.encode("enter_order", order_token="A1", side=b"S", shares=100, stock="AAPL",
                                        price=1_000_000, time_in_force=99999, firm="F", display=b"Y",
                                        capacity=b"A", intermarket_sweep=b"N", minimum_quantity=0,
                                        cross_type=b"N", customer_type=b"R"))
    pipe.handle("ACC-Z", "z", {"type": "new", "client_order_id": "Z", "symbol": "AAPL", "side": "B", "qty": 30,
                               "price": 100_000_000_000, "order_type": "limit", "tif": "ioc", "rid": "z"})
    acc._on_ouch("alice", ouch42.encode("cancel_order", order_token="A1", shares=40))
    out = [ouch42.decode(m, "out") for m in acc.stream("alice").msgs]
    assert [(n, f.get("executed_shares"), f.get("decrement_shares")) for n, f in out] == [
        ("accepted", None, None), ("executed", 30, None), ("canceled", None, 30)]
    eng.close()


@pytest.mark.parametrize("side", [b"B", b"?"])
def test_a_token_of_non_ascii_bytes_is_answered_and_echoed_byte_for_byte(venue, side):
    """An Enter Order whose token holds bytes above 0x7E: its answer (Accepted, or Rejected for a bad side)
    failed to encode ('\\ufffd' is not ASCII), the connection's handler died unanswered. The token is now
    echoed byte for byte and the session goes on."""
    a = login(venue.acc.port)
    tok = b"T\xff\x80ok-tokens\x01z"
    assert len(tok) == 14
    raw = bytearray(enter("PLACEHOLDER123", side=side, price=1_000_000))
    at = raw.index(b"PLACEHOLDER123")
    raw[at:at + 14] = tok
    a.send(bytes(raw))
    got = msgs(a, 1)
    assert got and got[0][0] == ("accepted" if side == b"B" else "rejected"), got
    assert got[0][1]["order_token"] == tok
    a.send(enter("NEXT0000000001", side=b"B", price=1_000_000))
    got = msgs(a, 1)
    assert got and got[0][0] == "accepted" and got[0][1]["order_token"] == b"NEXT0000000001", got
    a.close()
