"""FIX order entry semantics per the FIX 4.2 / 4.4 specifications (issue 10, items 1, 3 and 4): ClOrdID and
OrigClOrdID of every ExecutionReport, OrdStatus/ExecType per version, CumQty/LeavesQty/AvgPx, duplicate
ClOrdIDs, non-integer quantities, OrdRejReason/CxlRejReason; over-long identifiers refused at the edge;
reports for a logged-out session delivered after its next Logon; ExecIDs, cancel by OrigClOrdID and
duplicate detection across a restart. Every ExecutionReport / OrderCancelReject we send is also checked
against the version's data dictionary (required fields, enum values) with the session's own validator."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

simplefix = pytest.importorskip("simplefix")

from engine.fix.acceptor import FixAcceptor, OrderApplication, SessionConfig
from engine.fix.message import split_fields, utc_timestamp
from engine.fix.session import Msg, SessionReject, validate
from engine.gateway import OrderPipeline
from engine.manager import EngineManager
from engine.risk import RiskLimits, RiskManager
from feedhandler.protocols.fix_dictionary import FixDictionary
from test_fix_session import Initiator

SPEC = Path(__file__).resolve().parents[2] / "shared" / "data" / "fix" / "spec"
pytestmark = pytest.mark.skipif(not SPEC.is_dir(), reason=f"{SPEC} (shared reference data) not present")

DICTS = {}


def check_spec(m, begin):
    """A received simplefix message is valid for its version's dictionary (as we validate inbound)."""
    d = DICTS.get(begin)
    if d is None:
        d = DICTS[begin] = FixDictionary.load(SPEC / ("FIX42.xml" if begin == b"FIX.4.2" else "FIX44.xml"))
    raw = m.encode(raw=True)
    fields = split_fields(raw)
    assert fields is not None
    try:
        validate(d, Msg(raw, fields))
    except SessionReject as e:
        raise AssertionError(f"{raw!r} is not valid {begin.decode()}: {e} (tag {e.tag})") from None


class Venue:
    """Engine (optionally journaled) + pipeline + FIX acceptor with a 4.4 and a 4.2 session."""

    def __init__(self, tmp_path, journal=False):
        self.tmp = tmp_path
        self.journal = str(tmp_path / "journal") if journal else None
        self.eng = EngineManager(["AAPL", "MSFT"], journal_dir=self.journal)
        self.start_acceptor()

    def start_acceptor(self):
        self.pipe = OrderPipeline(self.eng, RiskManager(RiskLimits(price_band_bps=0)))
        self.app = OrderApplication(self.pipe, {"BUYSIDE1": "ACC-1", "BUYSIDE2": "ACC-2"})
        self.acc = FixAcceptor([SessionConfig("FIX.4.4", "EXCH", "BUYSIDE1"),
                                SessionConfig("FIX.4.2", "EXCH", "BUYSIDE2")],
                               self.app, SPEC, store_dir=self.tmp / "store").start()

    def restart(self):
        """Stop everything and start again from the journal and the session stores."""
        self.acc.stop()
        self.eng.close()
        self.eng = EngineManager(["AAPL", "MSFT"], journal_dir=self.journal)
        self.start_acceptor()

    def close(self):
        self.acc.stop()
        self.eng.close()


@pytest.fixture
def venue(tmp_path):
    v = Venue(tmp_path)
    yield v
    v.close()


def logon(c, extra=()):
    c.send(b"A", [(98, 0), (108, 30)] + list(extra))
    r = c.recv()
    assert r not in (None, "EOF") and r.get(35) == b"A", r
    return r


def new_order(clid, side, qty, px, sym="AAPL", tif="0"):
    return [(11, clid), (21, "1"), (55, sym), (54, side), (38, qty), (40, "2"), (44, px), (59, tif),
            (60, utc_timestamp().decode())]


def report(c, msgtype=b"8"):
    m = c.recv_type(msgtype)
    assert m not in (None, "EOF"), f"no {msgtype} received"
    check_spec(m, c.begin.encode())
    return m


def fields(m, *tags):
    return tuple(m.get(t) for t in tags)


def connect(venue, who):
    if who == 1:
        c = Initiator(venue.acc.port, "BUYSIDE1")
    else:
        c = Initiator(venue.acc.port, "BUYSIDE2", begin="FIX.4.2")
    logon(c)
    return c


def test_reports_fix44_new_fill_replace_fill_cancel(venue):
    c1, c2 = connect(venue, 1), connect(venue, 2)
    try:
        c1.send(b"D", new_order("S-1", "2", "100", "101.5"))
        er = report(c1)
        assert fields(er, 150, 39, 11, 41, 151, 14) == (b"0", b"0", b"S-1", None, b"100", b"0")
        oid = er.get(37)
        c2.send(b"D", new_order("B-1", "1", "40", "102", tif="3"))
        report(c2)
        mf = report(c1)                                   # maker fill
        assert fields(mf, 150, 39, 11, 32, 31, 14, 151, 6) == (b"F", b"1", b"S-1", b"40", b"101.5", b"40",
                                                               b"60", b"101.5")
        # replace: 11 = the request's ClOrdID, 41 = the order's previous one, ExecType 5, OrdStatus of the
        # order (FIX 4.4 has no OrdStatus 5): partially filled
        c1.send(b"G", [(11, "S-2"), (41, "S-1"), (37, oid), (55, "AAPL"), (54, "2"), (38, "50"), (40, "2"),
                       (44, "101.5"), (60, utc_timestamp().decode())])
        rp = report(c1)
        assert fields(rp, 150, 39, 11, 41, 38, 14, 151) == (b"5", b"1", b"S-2", b"S-1", b"50", b"40", b"10")
        # a later fill of the replaced order carries the new ClOrdID
        c2.send(b"D", new_order("B-2", "1", "5", "102", tif="3"))
        report(c2)
        mf2 = report(c1)
        assert fields(mf2, 150, 39, 11, 14, 151, 6) == (b"F", b"1", b"S-2", b"45", b"5", b"101.5")
        # cancel by the current ClOrdID: 11 = the cancel's own, 41 = the order's
        c1.send(b"F", [(11, "S-3"), (41, "S-2"), (55, "AAPL"), (54, "2"), (38, "50"),
                       (60, utc_timestamp().decode())])
        cx = report(c1)
        assert fields(cx, 150, 39, 11, 41, 14, 151, 37) == (b"4", b"4", b"S-3", b"S-2", b"45", b"0", oid)
        # the order is done: a second cancel is too late (CxlRejReason 0), OrdStatus of the order
        c1.send(b"F", [(11, "S-4"), (41, "S-2"), (55, "AAPL"), (54, "2"), (60, utc_timestamp().decode())])
        rj = report(c1, b"9")
        assert fields(rj, 102, 39, 11, 41, 434) == (b"0", b"4", b"S-4", b"S-2", b"1")
    finally:
        c1.close()
        c2.close()


def test_reports_fix42_replace_is_ordstatus_5_and_fill_exectypes(venue):
    c1, c2 = connect(venue, 1), connect(venue, 2)
    try:
        c2.send(b"D", new_order("S-1", "2", "100", "50"))
        assert fields(report(c2), 150, 39, 20) == (b"0", b"0", b"0")
        c1.send(b"D", new_order("B-1", "1", "30", "50", tif="3"))
        report(c1)
        f1 = report(c2)
        assert fields(f1, 150, 39, 11, 14, 151) == (b"1", b"1", b"S-1", b"30", b"70")
        c2.send(b"G", [(11, "S-2"), (41, "S-1"), (21, "1"), (55, "AAPL"), (54, "2"), (38, "60"), (40, "2"),
                       (44, "50"), (60, utc_timestamp().decode())])
        rp = report(c2)
        assert fields(rp, 150, 39, 11, 41, 38, 14, 151) == (b"5", b"5", b"S-2", b"S-1", b"60", b"30", b"30")
        c1.send(b"D", new_order("B-2", "1", "30", "50", tif="3"))
        report(c1)
        f2 = report(c2)
        assert fields(f2, 150, 39, 11, 14, 151, 6) == (b"2", b"2", b"S-2", b"60", b"0", b"50")
        c2.send(b"F", [(11, "X-1"), (41, "NOPE"), (55, "AAPL"), (54, "2"), (38, "1"),
                       (60, utc_timestamp().decode())])
        rj = report(c2, b"9")
        assert fields(rj, 102, 39, 41) == (b"1", b"8", b"NOPE")
    finally:
        c1.close()
        c2.close()


def test_duplicate_clordid_rejected_and_not_entered(venue):
    c1 = connect(venue, 1)
    try:
        c1.send(b"D", new_order("D-1", "2", "100", "101"))
        assert report(c1).get(150) == b"0"
        c1.send(b"D", new_order("D-1", "2", "7", "99"))       # same ClOrdID, another order
        rj = report(c1)
        assert fields(rj, 150, 39, 103, 11) == (b"8", b"8", b"6", b"D-1")
        asks = venue.pipe.in_engine(lambda: venue.eng.book("AAPL", 10))[1]
        assert [tuple(a)[:2] for a in asks] == [(101_000_000_000, 100)]    # the second was not entered
        # the same ClOrdID on a cancel request: OrderCancelReject, duplicate (FIX 4.4: 6)
        c1.send(b"F", [(11, "D-1"), (41, "D-1"), (55, "AAPL"), (54, "2"), (60, utc_timestamp().decode())])
        assert fields(report(c1, b"9"), 102, 11) == (b"6", b"D-1")
        assert venue.app.stats["duplicates"] == 2
    finally:
        c1.close()


@pytest.mark.parametrize("who", [1, 2])
def test_non_integer_quantity_rejected_not_truncated(venue, who):
    c = connect(venue, who)
    try:
        c.send(b"D", new_order("Q-1", "1", "10.5", "100"))
        rj = report(c)
        assert fields(rj, 150, 39) == (b"8", b"8")
        assert rj.get(103) == (b"13" if who == 1 else b"0") and b"whole" in rj.get(58)
        bids = venue.pipe.in_engine(lambda: venue.eng.book("AAPL", 10))[0]
        assert bids == [] or len(bids) == 0
        c.send(b"D", new_order("Q-2", "1", "10.0", "100"))     # a whole number written with decimals is fine
        assert fields(report(c), 150, 38, 151) == (b"0", b"10", b"10")
    finally:
        c.close()


def test_every_reject_carries_a_reason(venue):
    c1 = connect(venue, 1)
    try:
        c1.send(b"D", new_order("R-1", "1", "10", "100", sym="NOPE"))
        assert fields(report(c1), 150, 103) == (b"8", b"1")       # unknown symbol
        c1.send(b"D", new_order("R-2", "1", "10", "0"))
        rj = report(c1)
        assert rj.get(150) == b"8" and rj.get(103) is not None and rj.get(58)
    finally:
        c1.close()


def test_overlong_clordid_refused_at_the_edge(tmp_path):
    """Issue 10 item 1 over FIX: a ClOrdID longer than 65,535 bytes gets a reject with a reason, consumes
    the inbound MsgSeqNum (the next message is processed, no resend loop), never reaches the exchange
    (no sequence number: the journal still recovers) and the engine keeps answering."""
    v = Venue(tmp_path, journal=True)
    c1 = connect(v, 1)
    try:
        seq0 = v.eng.seq
        c1.send(b"D", new_order("X" * 70_000, "1", "10", "100"))
        rj = report(c1)
        assert fields(rj, 150, 39) == (b"8", b"8") and rj.get(103) == b"99"
        assert b"longer than 64" in rj.get(58)
        assert v.eng.seq == seq0
        c1.send(b"F", [(11, "C" * 100), (41, "Y" * 80), (55, "AAPL"), (54, "1"), (60, utc_timestamp().decode())])
        assert fields(report(c1, b"9"), 102, 434) == (b"99", b"1")
        c1.send(b"D", new_order("OK-1", "1", "10", "100"))
        ok = report(c1)                                  # processed: the bad ones' MsgSeqNums were consumed
        assert fields(ok, 150, 11) == (b"0", b"OK-1")
        sess = v.acc.sessions[(b"FIX.4.4", b"EXCH", b"BUYSIDE1")]
        deadline = time.monotonic() + 2                  # (incremented right after the answer is written)
        while sess.next_target != c1.seq and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sess.next_target == c1.seq
    finally:
        c1.close()
        v.close()
    eng = EngineManager(["AAPL", "MSFT"], journal_dir=str(tmp_path / "journal"))   # recovers: no gap
    try:
        assert eng.seq == 1
    finally:
        eng.close()


def test_application_error_costs_a_reject_not_the_session(venue, monkeypatch):
    c1 = connect(venue, 1)
    try:
        def boom(*a, **k):
            raise KeyError("symbol")
        monkeypatch.setattr(venue.app, "_new_order", boom)
        c1.send(b"D", new_order("E-1", "1", "10", "100"))
        br = c1.recv_type(b"j")
        assert br not in (None, "EOF") and b"KeyError" in br.get(58)
        monkeypatch.undo()
        c1.send(b"D", new_order("E-2", "1", "10", "100"))
        assert fields(report(c1), 150, 11) == (b"0", b"E-2")
    finally:
        c1.close()


def drain(c, timeout=1.0):
    out = []
    while True:
        m = c.recv(timeout=timeout)
        if m is None or m == "EOF":
            return out
        out.append(m)


def test_fill_while_logged_out_delivered_after_relogon(venue):
    c1, c2 = connect(venue, 1), connect(venue, 2)
    c1.send(b"D", new_order("L-1", "2", "100", "101"))
    assert report(c1).get(150) == b"0"
    c1.send(b"5", [])
    assert c1.recv_type(b"5") not in (None, "EOF")
    c1.close()
    expected = c1.seq     # our next inbound
    try:
        c2.send(b"D", new_order("T-1", "1", "60", "101", tif="3"))
        report(c2)
        c2.send(b"D", new_order("T-2", "1", "40", "101", tif="3"))
        report(c2)
        time.sleep(0.3)
        # re-logon: our Logon's MsgSeqNum is beyond what the client has seen; its ResendRequest gets the
        # two fills themselves (PossDupFlag=Y), in order, not a GapFill over them
        c3 = Initiator(venue.acc.port, "BUYSIDE1", seq=expected)
        r = logon(c3)
        c3.send(b"2", [(7, 1), (16, 0)])
        got = [m for m in drain(c3) if m.get(35) == b"8"]
        fills = [m for m in got if m.get(150) == b"F"]
        assert [fields(m, 32, 14, 151, 39, 11, 43) for m in fills] == [
            (b"60", b"60", b"40", b"1", b"L-1", b"Y"), (b"40", b"100", b"0", b"2", b"L-1", b"Y")]
        assert all(int(m.get(34)) < int(r.get(34)) for m in fills)
        c3.close()
    finally:
        c2.close()


def test_next_expected_msgseqnum_on_logon_retransmits(venue):
    c1, c2 = connect(venue, 1), connect(venue, 2)
    c1.send(b"D", new_order("N-1", "2", "10", "101"))
    ack = report(c1)
    c1.send(b"5", [])
    c1.recv_type(b"5")
    c1.close()
    try:
        c2.send(b"D", new_order("T-1", "1", "10", "101", tif="3"))
        report(c2)
        time.sleep(0.3)
        c3 = Initiator(venue.acc.port, "BUYSIDE1", seq=c1.seq)
        logon(c3, [(789, int(ack.get(34)) + 1)])
        got = drain(c3)
        fills = [m for m in got if m.get(35) == b"8" and m.get(150) == b"F"]
        assert len(fills) == 1 and fills[0].get(43) == b"Y" and fills[0].get(11) == b"N-1"
        c3.close()
    finally:
        c2.close()


def test_restart_keeps_execids_cancel_by_origclordid_and_duplicates(tmp_path):
    """Issue 10 item 3 (FIX): after a restart ExecIDs continue, cancel by OrigClOrdID works for orders
    entered before it, and a ClOrdID used before it is still a duplicate."""
    v = Venue(tmp_path, journal=True)
    try:
        c1 = connect(v, 1)
        c1.send(b"D", new_order("P-1", "2", "100", "101"))
        a = report(c1)
        c1.send(b"D", new_order("P-2", "2", "50", "102"))
        b = report(c1)
        c1.send(b"G", [(11, "P-3"), (41, "P-2"), (55, "AAPL"), (54, "2"), (38, "40"), (40, "2"), (44, "102"),
                       (60, utc_timestamp().decode())])
        rp = report(c1)
        assert fields(rp, 150, 11, 41) == (b"5", b"P-3", b"P-2")
        exec_ids = {a.get(17), b.get(17), rp.get(17)}
        c1.send(b"5", [])
        c1.recv_type(b"5")
        c1.close()
        next_in = c1.seq
        v.restart()
        c1 = Initiator(v.acc.port, "BUYSIDE1", seq=next_in)
        logon(c1)
        c1.send(b"F", [(11, "P-4"), (41, "P-1"), (55, "AAPL"), (54, "2"), (60, utc_timestamp().decode())])
        cx = report(c1)
        assert fields(cx, 150, 39, 11, 41, 37, 151) == (b"4", b"4", b"P-4", b"P-1", a.get(37), b"0")
        assert cx.get(17) not in exec_ids and int(cx.get(17)[1:]) > max(int(e[1:]) for e in exec_ids)
        c1.send(b"F", [(11, "P-5"), (41, "P-3"), (55, "AAPL"), (54, "2"), (60, utc_timestamp().decode())])
        cx2 = report(c1)
        assert fields(cx2, 150, 11, 41, 14) == (b"4", b"P-5", b"P-3", b"0")
        c1.send(b"D", new_order("P-1", "1", "5", "90"))
        assert fields(report(c1), 150, 103) == (b"8", b"6")
        c1.close()
    finally:
        v.close()


def test_reports_lost_in_a_crash_are_caught_up_from_the_journal(tmp_path):
    """The exchange journaled events whose reports never reached the session store (a crash in between):
    at restart the acceptor reports exactly those (replayed from the journal), nothing twice."""
    v = Venue(tmp_path, journal=True)
    try:
        c1 = connect(v, 1)
        c1.send(b"D", new_order("K-1", "2", "100", "101"))
        k1 = report(c1)
        # the 'crash window': events of ACC-1 the FIX application never sees
        v.pipe.register_sink("ACC-1", None)
        lost = v.pipe.handle("ACC-1", b"BUYSIDE1", {"type": "new", "client_order_id": "K-2", "symbol": "MSFT",
                                                     "side": "S", "qty": 10, "price": 50_000_000_000,
                                                     "order_type": "limit", "tif": "day", "rid": "fix-K-2"})
        assert lost["status"] == "ack"
        v.pipe.handle("ACC-3", b"OTHER", {"type": "new", "client_order_id": "Z-1", "symbol": "AAPL", "side": "B",
                                            "qty": 30, "price": 101_000_000_000, "order_type": "limit",
                                            "tif": "ioc", "rid": "z1"})
        c1.send(b"5", [])
        c1.recv_type(b"5")
        c1.close()
        v.restart()
        assert v.app.stats["caught_up"] == 2          # K-2 accepted, K-1's fill; nothing else again
        c1 = Initiator(v.acc.port, "BUYSIDE1", seq=c1.seq)
        logon(c1)
        c1.send(b"2", [(7, int(k1.get(34)) + 1), (16, 0)])
        ers = [m for m in drain(c1) if m.get(35) == b"8"]
        assert sorted((m.get(11), m.get(150), m.get(14)) for m in ers) == [(b"K-1", b"F", b"30"),
                                                                             (b"K-2", b"0", b"0")]
        # and the caught-up order is an order of the session: cancel by its ClOrdID
        c1.send(b"F", [(11, "K-3"), (41, "K-2"), (55, "MSFT"), (54, "2"), (60, utc_timestamp().decode())])
        assert fields(report(c1), 150, 11, 41) == (b"4", b"K-3", b"K-2")
        c1.close()
    finally:
        v.close()


def test_sequence_reset_does_not_forget_the_day(tmp_path):
    """A Logon with ResetSeqNumFlag=Y resets the sequence numbers and what ResendRequest serves, not the
    application's memory: after a restart ExecIDs still continue and old ClOrdIDs are still known."""
    v = Venue(tmp_path, journal=True)
    try:
        c1 = connect(v, 1)
        c1.send(b"D", new_order("R-1", "2", "100", "101"))
        e1 = report(c1)
        c1.send(b"5", [])
        c1.recv_type(b"5")
        c1.close()
        c1 = Initiator(v.acc.port, "BUYSIDE1", seq=1)
        r = logon(c1, [(141, "Y")])
        assert r.get(34) == b"1" and r.get(141) == b"Y"
        c1.send(b"5", [])
        c1.recv_type(b"5")
        c1.close()
        v.restart()
        c1 = Initiator(v.acc.port, "BUYSIDE1", seq=c1.seq)
        logon(c1)
        c1.send(b"F", [(11, "R-2"), (41, "R-1"), (55, "AAPL"), (54, "2"), (60, utc_timestamp().decode())])
        cx = report(c1)
        assert fields(cx, 150, 11, 41) == (b"4", b"R-2", b"R-1")
        assert int(cx.get(17)[1:]) > int(e1.get(17)[1:])
        c1.close()
    finally:
        v.close()


def test_state_rebuilt_from_the_store_equals_the_live_state(tmp_path):
    """What decides the application's answers is rebuilt exactly from the session stores: after a
    restart the state (orders with exact notional, each session's ClOrdIDs, ExecID counter, reported
    events) equals the live state before it."""
    v = Venue(tmp_path, journal=True)
    try:
        c1, c2 = connect(v, 1), connect(v, 2)
        c1.send(b"D", new_order("S-1", "2", "100", "100.01"))
        c1.send(b"D", new_order("S-2", "2", "100", "100.02"))
        report(c1)
        report(c1)
        c2.send(b"D", new_order("B-1", "1", "150", "100.02", tif="3"))      # fills at two prices
        report(c2)
        c1.send(b"G", [(11, "S-3"), (41, "S-2"), (55, "AAPL"), (54, "2"), (38, "90"), (40, "2"), (44, "100.02"),
                       (60, utc_timestamp().decode())])
        c1.send(b"D", new_order("S-1", "2", "5", "100"))                    # duplicate
        c1.send(b"D", new_order("L" * 80, "2", "5", "100"))                 # identifier refused
        c1.send(b"D", new_order("S-4", "2", "5.5", "100"))                  # non-integer quantity
        c1.send(b"F", [(11, "S-5"), (41, "NOPE"), (55, "AAPL"), (54, "2"), (60, utc_timestamp().decode())])
        c2.send(b"D", new_order("B-2", "1", "10", "99"))
        c2.send(b"G", [(11, "B-3"), (41, "B-2"), (21, "1"), (55, "AAPL"), (54, "1"), (38, "20"), (40, "2"),
                       (44, "99.5"), (60, utc_timestamp().decode())])
        c2.send(b"F", [(11, "B-4"), (41, "B-3"), (55, "AAPL"), (54, "1"), (38, "20"), (60, utc_timestamp().decode())])
        drain(c1, 1.0)
        drain(c2, 0.5)
        live = v.app.state()
        assert live["orders"] and any(o[8] % o[7] for o in live["orders"] if o[7])   # a non-round average
        h = v.app.state_hash()
        c1.close()
        c2.close()
        v.restart()
        assert v.app.stats["caught_up"] == 0
        assert v.app.state() == live
        assert v.app.state_hash() == h
    finally:
        v.close()


def test_reports_follow_exchange_order_when_a_routed_fill_is_late(tmp_path):
    """A maker fill routed from another request reaches the session's loop by a later callback than the
    session's own replace that the exchange processed after it: the fill is still reported (and counted)
    first, and the replace report has the right CumQty/LeavesQty/OrderQty."""
    from engine.fix.store import MemoryStore
    from engine.fix.session import FixSession
    from engine.fix.message import encode
    eng = EngineManager(["AAPL"])
    pipe = OrderPipeline(eng, RiskManager(RiskLimits(price_band_bps=0)))
    app = OrderApplication(pipe, {"C": "ACC-1"}, loop_call=lambda *a: None)   # routed events wait
    out: list = []
    s = FixSession(FixDictionary.load(SPEC / "FIX44.xml"), "X", "C", MemoryStore(), app)
    s.connection_made(out.append, lambda: None)
    app.bind(s)
    seq = iter(range(1, 100))

    def send(msgtype, body):
        s.data_received(encode(b"FIX.4.4", msgtype, [(34, next(seq)), (49, b"C"), (52, utc_timestamp()),
                                                    (56, b"X")], body))

    send(b"A", [(98, 0), (108, 30)])
    send(b"D", [(11, b"S-1"), (38, b"100"), (40, b"2"), (44, b"100"), (54, b"2"), (55, b"AAPL"),
                (60, utc_timestamp())])
    pipe.handle("ACC-2", "other", {"type": "new", "client_order_id": "B", "symbol": "AAPL", "side": "B",
                                   "qty": 30, "price": 100_000_000_000, "order_type": "limit", "tif": "ioc",
                                   "rid": "b"})
    assert len(app._routed) == 1                       # the maker fill, not yet reported
    send(b"G", [(11, b"S-2"), (38, b"50"), (40, b"2"), (41, b"S-1"), (44, b"100"), (54, b"2"), (55, b"AAPL"),
                (60, utc_timestamp())])
    ers = [dict(split_fields(r)) for r in out if b"\x0135=8\x01" in r]
    got = [(e[150], e[11], e[38], e[14], e[151]) for e in ers]
    assert got == [(b"0", b"S-1", b"100", b"0", b"100"), (b"F", b"S-1", b"100", b"30", b"70"),
                   (b"5", b"S-2", b"50", b"30", b"20")]
    # the rest is filled by another request; a cancel processed before that fill's callback is too late
    # (CxlRejReason 0, OrdStatus filled), and the fill is reported first
    pipe.handle("ACC-2", "other", {"type": "new", "client_order_id": "B2", "symbol": "AAPL", "side": "B",
                                   "qty": 20, "price": 100_000_000_000, "order_type": "limit", "tif": "ioc",
                                   "rid": "b2"})
    n = len(out)
    send(b"F", [(11, b"S-3"), (41, b"S-2"), (54, b"2"), (55, b"AAPL"), (60, utc_timestamp())])
    tail = [dict(split_fields(r)) for r in out[n:]]
    assert [(m[35], m.get(150), m.get(39), m.get(102)) for m in tail] == [(b"8", b"F", b"2", None),
                                                                         (b"9", None, b"2", b"0")]
    eng.close()
