"""A simple, obviously-correct pure-Python L3 book with the semantics and counters of feedhandler.books.mbo.

Used only by the tests, as the independent reference of a differential test. Books are dicts of
price -> list of order ids (FIFO); orders are one dict keyed by order id. Nothing here is fast.
The semantics are written out in csrc/include/fh/book.h; this file restates them in plain Python.
"""
from __future__ import annotations

import numpy as np

from feedhandler import records as R

UNDEF = R.UNDEF_PRICE
F_MAYBE_BAD_BOOK = 0x04
F_WHOLE_ORDER = 0x02
GAP_LOST = 3
MBO = R.RTYPE["mbo"]
TRADE = R.RTYPE["trade"]
GAP = R.RTYPE["gap"]

COUNTERS = (
    "records adds replaces fills cancels deletes modifies clears trades nones trade_records ignored "
    "gaps_lost maybe_bad_book unknown_order duplicate_add size_underflow zero_size_add bad_price "
    "bad_side replace_without_delete instrument_mismatch crossed bad_action no_memory bbo_events "
    "bbo_events_dropped"
).split()


class Book:
    def __init__(self, instrument_id: int, stale: bool):
        self.instrument_id = instrument_id
        self.levels = {"B": {}, "A": {}}  # side -> price -> [order_id, ...] in queue order
        self.stale = stale
        self.reported = (UNDEF, 0, UNDEF, 0)

    def best(self, side):
        lv = self.levels[side]
        if not lv:
            return None
        return max(lv) if side == "B" else min(lv)


class ReferenceBookSet:
    def __init__(self, track_bbo_events: bool = False):
        self.books: dict[int, Book] = {}
        self.orders: dict[int, list] = {}  # order_id -> [instrument_id, side, price, size]
        self.c = dict.fromkeys(COUNTERS, 0)
        self.all_stale = False
        self.pending = None  # (side, instrument_id) of the order the previous record deleted
        self.track = track_bbo_events
        self.events: list[tuple] = []
        # (instrument_id, ts_event, ts_recv) of a whole-order cancel that ended the last batch: its BBO
        # report waits for the next record (the add half of a replace), or for a query (as book.c)
        self.defer = None

    # ---- helpers ----
    def _book(self, inst: int) -> Book:
        if inst not in self.books:
            self.books[inst] = Book(inst, self.all_stale)
        return self.books[inst]

    def _remove(self, oid: int):
        inst, side, price, size = self.orders.pop(oid)
        q = self.books[inst].levels[side][price]
        q.remove(oid)
        if not q:
            del self.books[inst].levels[side][price]

    def _crossed_check(self, book: Book):
        b, a = book.best("B"), book.best("A")
        if b is not None and a is not None and b >= a:
            self.c["crossed"] += 1

    def _top(self, book: Book):
        out = []
        for side in "BA":
            p = book.best(side)
            if p is None:
                out += [UNDEF, 0, 0]
            else:
                q = book.levels[side][p]
                out += [p, sum(self.orders[o][3] for o in q), len(q)]
        return tuple(out)

    def _emit(self, inst, ts_event, ts_recv):
        book = self.books[inst]
        bp, bs, _, ap, as_, _ = self._top(book)
        top = (bp, bs, ap, as_)
        if top == book.reported:
            return
        book.reported = top
        self.events.append((inst, ts_event, ts_recv, bp, bs, ap, as_))
        self.c["bbo_events"] += 1

    def _lookup(self, r):
        o = self.orders.get(r["order_id"])
        if o is None:
            self.c["unknown_order"] += 1
            return None
        if o[0] != r["instrument_id"]:
            self.c["instrument_mismatch"] += 1
            return None
        return o

    def _reduce(self, oid, size):
        o = self.orders[oid]
        if size >= o[3]:
            if size > o[3]:
                self.c["size_underflow"] += 1
            self._remove(oid)
        else:
            o[3] -= size

    # ---- actions; each returns the instrument whose book changed, or None ----
    def _add(self, r, pending):
        side = r["side"]
        replace = False
        if side == "N":
            inst = r["instrument_id"]
            if pending is None or pending[1] != inst or inst not in self.books:
                self.c["replace_without_delete"] += 1
                return None
            side = r["side"] = pending[0]
            replace = True
        elif side not in ("B", "A"):
            self.c["bad_side"] += 1
            return None
        if r["size"] == 0:
            self.c["zero_size_add"] += 1
            return None
        if r["price"] == UNDEF:
            self.c["bad_price"] += 1
            return None
        if r["order_id"] in self.orders:
            self.c["duplicate_add"] += 1
            return None
        book = self._book(r["instrument_id"])
        self.orders[r["order_id"]] = [r["instrument_id"], side, r["price"], r["size"]]
        book.levels[side].setdefault(r["price"], []).append(r["order_id"])
        self.c["adds"] += 1
        self.c["replaces"] += replace
        self._crossed_check(book)
        return r["instrument_id"]

    def _modify(self, r):
        o = self._lookup(r)
        if o is None:
            return None
        if r["price"] == UNDEF:
            self.c["bad_price"] += 1
            return None
        inst, side, price, size = o
        r["side"] = side
        self.c["modifies"] += 1
        oid = r["order_id"]
        if r["size"] == 0:
            self._remove(oid)
            return inst
        if r["price"] == price and r["size"] <= size:
            o[3] = r["size"]
            return inst
        self._remove(oid)
        self.orders[oid] = [inst, side, r["price"], r["size"]]
        self.books[inst].levels[side].setdefault(r["price"], []).append(oid)
        self._crossed_check(self.books[inst])
        return inst

    def apply(self, ticks: np.ndarray) -> int:
        """Apply a TICK_DTYPE batch, enriching its MBO records in place like the native book."""
        mbo = ticks.view(R.DTYPES["mbo"])
        rtypes = ticks["rtype"].tolist()
        insts = ticks["instrument_id"].tolist()
        trade_flags = ticks.view(R.DTYPES["trade"])["flags"].tolist()
        gap_kind = ticks.view(R.DTYPES["gap"])["kind"].tolist()
        rows = [
            dict(zip(("instrument_id", "order_id", "price", "size", "flags", "action", "side", "ts_event", "ts_recv"), t))
            for t in zip(insts, mbo["order_id"].tolist(), mbo["price"].tolist(), mbo["size"].tolist(),
                         mbo["flags"].tolist(), mbo["action"].tolist(), mbo["side"].tolist(),
                         mbo["ts_event"].tolist(), mbo["ts_recv"].tolist())
        ]
        for r in rows:
            r["action"] = r["action"].decode("latin-1") if r["action"] else "\0"
            r["side"] = r["side"].decode("latin-1") if r["side"] else "\0"
        n = len(rows)
        self.c["records"] += n
        deferred = None
        if self.defer is not None and n:
            r0 = rows[0]
            if rtypes[0] == MBO and r0["action"] == "A" and r0["side"] == "N" and r0["instrument_id"] == self.defer[0]:
                deferred = self.defer[0]
                self.defer = None
            else:
                self._flush()
        for i, r in enumerate(rows):
            pending, self.pending = self.pending, None
            if rtypes[i] != MBO:
                if rtypes[i] == TRADE:
                    self.c["trade_records"] += 1
                    if trade_flags[i] & F_MAYBE_BAD_BOOK:
                        self.c["maybe_bad_book"] += 1
                        self._book(insts[i]).stale = True
                elif rtypes[i] == GAP and gap_kind[i] == GAP_LOST:
                    self.c["gaps_lost"] += 1
                    self.all_stale = True
                    for b in self.books.values():
                        b.stale = True
                else:
                    self.c["ignored"] += 1
                continue
            if r["flags"] & F_MAYBE_BAD_BOOK:
                self.c["maybe_bad_book"] += 1
                self._book(r["instrument_id"]).stale = True
            act = r["action"]
            changed = None
            if act == "A":
                changed = self._add(r, pending)
            elif act == "F":
                o = self._lookup(r)
                if o is not None:
                    if r["price"] == UNDEF:
                        r["price"] = o[2]
                    r["side"] = o[1]
                    self.c["fills"] += 1
                    changed = o[0]
                    self._reduce(r["order_id"], r["size"])
            elif act == "C":
                o = self._lookup(r)
                if o is not None:
                    r["price"] = o[2]
                    r["side"] = o[1]
                    changed = o[0]
                    if r["flags"] & F_WHOLE_ORDER:
                        r["size"] = o[3]
                        self.pending = (o[1], o[0])
                        self.c["deletes"] += 1
                        self._remove(r["order_id"])
                        nxt = rows[i + 1] if i + 1 < n else None
                        if (self.track and nxt is not None and rtypes[i + 1] == MBO and nxt["action"] == "A"
                                and nxt["side"] == "N" and nxt["instrument_id"] == r["instrument_id"]):
                            deferred = changed
                            continue
                        if self.track and nxt is None:
                            self.defer = (changed, r["ts_event"], r["ts_recv"])
                            continue
                    else:
                        self.c["cancels"] += 1
                        self._reduce(r["order_id"], r["size"])
            elif act == "M":
                changed = self._modify(r)
            elif act == "R":
                self.c["clears"] += 1
                book = self.books.get(r["instrument_id"])
                if book is not None:
                    for side in "BA":
                        for q in book.levels[side].values():
                            for oid in q:
                                del self.orders[oid]
                        book.levels[side] = {}
                    book.stale = False
                    changed = r["instrument_id"]
            elif act == "T":
                self.c["trades"] += 1
            elif act == "N":
                self.c["nones"] += 1
            else:
                self.c["bad_action"] += 1
            if deferred is not None:
                if changed is None:
                    changed = deferred
                elif changed != deferred:
                    self._emit(deferred, r["ts_event"], r["ts_recv"])
                deferred = None
            if self.track and changed is not None:
                self._emit(changed, r["ts_event"], r["ts_recv"])
        # write the enrichment back
        is_mbo = np.asarray(rtypes) == MBO
        if is_mbo.any():
            mbo["price"][is_mbo] = [r["price"] for r, m in zip(rows, is_mbo) if m]
            mbo["size"][is_mbo] = [r["size"] for r, m in zip(rows, is_mbo) if m]
            mbo["side"][is_mbo] = [r["side"].encode("latin-1") for r, m in zip(rows, is_mbo) if m]
        return n

    # ---- queries, same shapes as feedhandler.books.mbo.BookSet ----
    def bbo(self, inst):
        book = self.books.get(inst)
        if book is None:
            return (UNDEF, 0, 0, UNDEF, 0, 0)
        return self._top(book)

    def depth(self, inst, n=10):
        book = self.books.get(inst)
        out = []
        for side in "BA":
            rows = []
            if book is not None:
                prices = sorted(book.levels[side], reverse=(side == "B"))[:n]
                for p in prices:
                    q = book.levels[side][p]
                    rows.append((p, sum(self.orders[o][3] for o in q), len(q)))
            out.append(rows)
        return tuple(out)

    def level_orders(self, inst, side, price):
        book = self.books.get(inst)
        if book is None:
            return []
        return [(o, self.orders[o][3]) for o in book.levels[side].get(price, [])]

    def queue_position(self, oid):
        inst, side, price, _ = self.orders[oid]
        q = self.books[inst].levels[side][price]
        k = q.index(oid)
        return (sum(self.orders[o][3] for o in q[:k]), k)

    def stale(self, inst):
        book = self.books.get(inst)
        return self.all_stale if book is None else book.stale

    @property
    def live_orders(self):
        return len(self.orders)

    def live_in(self, inst):
        return sum(1 for o in self.orders.values() if o[0] == inst)

    def _flush(self):
        if self.defer is not None:
            inst, ts_event, ts_recv = self.defer
            self.defer = None
            self._emit(inst, ts_event, ts_recv)

    def bbo_events(self):
        self._flush()
        ev, self.events = self.events, []
        return ev
