"""FIX session helpers of the durability tests (issue 10); needs simplefix (importing this module skips the
importing test module without it), see _durability_support for the rest."""
from __future__ import annotations

import threading

from engine.fix.message import utc_timestamp
from test_fix_session import Initiator


# ---- FIX sessions (simplefix) ------------------------------------------------------------------------------
class FixClient(Initiator):
    """An initiator that keeps every message it receives and answers the acceptor's ResendRequests with a
    GapFill (it never resends orders: an order without an answer is simply not acknowledged)."""

    def __init__(self, port, sender, begin, seq):
        super().__init__(port, sender, begin=begin, seq=seq)
        self.got: list = []
        self.lock = threading.RLock()

    def send(self, msgtype, fields=(), seq=None):
        with self.lock:           # the reader thread answers ResendRequests while the writer sends orders
            super().send(msgtype, fields, seq)

    def pump(self, timeout=0.3):
        while True:
            try:
                m = self.recv(timeout=timeout)
            except OSError:          # reset by the killed acceptor
                return "EOF"
            if m is None or m == "EOF":
                return m
            if m.get(35) == b"2":
                with self.lock:     # self.seq read and the GapFill sent under one lock
                    self.send(b"4", [(123, "Y"), (36, self.seq)], seq=int(m.get(7)))
                continue
            self.got.append(m)


def fix_logon(c):
    c.send(b"A", [(98, 0), (108, 30)])
    c.pump(timeout=0.5)
    assert any(m.get(35) == b"A" for m in c.got), "no Logon answer"


def fix_order(c, clid, side, qty, tif, price="100"):
    c.send(b"D", [(11, clid), (21, "1"), (55, "AAPL"), (54, side), (38, qty), (40, "2"), (44, price),
                  (59, tif), (60, utc_timestamp().decode())])


def check_reports_against_journal(reports: list, events: list[dict], account: str, who: str) -> None:
    """The ExecutionReports a session got (in MsgSeqNum order) against the journal replay's events of its
    account: every order's New and every fill reported exactly once, nothing else; per order New first
    and CumQty increasing."""
    want = []
    for ev in events:
        if ev.get("account") != account:
            continue
        if ev["type"] == "accepted":
            want.append((str(ev["order_id"]).encode(), "new", 0))
        elif ev["type"] == "fill":
            want.append((str(ev["order_id"]).encode(), "fill", ev["cum_qty"]))
    got = []
    for m in reports:
        et = m.get(150)
        if et == b"0":
            got.append((m.get(37), "new", 0))
        elif et in (b"F", b"1", b"2"):
            got.append((m.get(37), "fill", int(m.get(14))))
    missing = sorted(set(want) - set(got))
    assert not missing, f"{who}: journal events never reported: {missing[:5]}"
    assert sorted(got) == sorted(want), f"{who}: journal and reports differ"
    per_order: dict = {}
    for oid, kind, cum in got:
        seen = per_order.setdefault(oid, [])
        assert (kind == "new") == (not seen), f"{who}: order {oid} reports out of order"
        assert not seen or cum > seen[-1], f"{who}: order {oid} CumQty not increasing"
        seen.append(cum)
