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
