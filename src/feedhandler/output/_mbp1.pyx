# cython: language_level=3, boundscheck=False, wraparound=False
"""mbp_update records (CME MDP 3.0 price levels) -> DBN ``Mbp1Msg`` (80 bytes), for the DBN writer.

A DBN MBP-1 record carries the update (price, size, action, side, depth) AND the top of the book
after it (``bid_px_00`` ... ``ask_ct_00``). The top after a Delete comes from level 2, so the
converter keeps each instrument's outright book: a ``feedhandler.books.mbp.MbpBookSet`` (``DEPTH``
levels), whose ``apply_one`` is the one implementation of the level rules ('A' insert and shift down,
'M' change, 'C' delete and shift up, 'D' DeleteThru, 'F' DeleteFrom, 'O' overlay, 'R' clear, a gap
RESET for instrument 0 clears every book). This module only maps each applied update and the top
around it to DBN's record, in one nogil loop per batch.

Written: every outright update that changes the top of its book, plus clears (as Databento's MBP-1
holds top-of-book events only). Implied-book updates are applied to the books but not written (no
place for them in MBP-1; Parquet / .npy keep them). Actions map to DBN's: 'A' add, 'M' and 'O' modify, 'C', 'D' and 'F'
cancel (DBN's 'F' means fill), 'R' clear; depth is the 0-based level (0 for side-wide actions).
"""
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from feedhandler.books.mbp cimport MbpBookSet, mbp_book
from feedhandler.includes.record cimport fh_tick, FH_RTYPE_MBP_UPDATE, FH_F_DBN_MASK, FH_UNDEF_PRICE

import numpy as np

__all__ = ["Mbp1Converter", "MBP1_SIZE", "RTYPE_MBP1"]

cdef enum:
    DEPTH = 10
    MAX_INSTRUMENTS = 1 << 15    # instruments tracked (more are counted as table_full)
    MBP1_SIZE_C = 80

MBP1_SIZE = MBP1_SIZE_C
RTYPE_MBP1 = 0x01

cdef packed struct mbp1:    # DBN Mbp1Msg, little-endian, 80 bytes
    uint8_t length
    uint8_t rtype
    uint16_t publisher_id
    uint32_t instrument_id
    uint64_t ts_event
    int64_t price
    uint32_t size
    char action
    char side
    uint8_t flags
    uint8_t depth
    uint64_t ts_recv
    int32_t ts_in_delta
    uint32_t sequence
    int64_t bid_px
    int64_t ask_px
    uint32_t bid_sz
    uint32_t ask_sz
    uint32_t bid_ct
    uint32_t ask_ct


cdef inline void _top(const mbp_book *b, uint32_t depth, mbp1 *o) noexcept nogil:
    """The outright top of b (an empty book when b is NULL) into o's bid/ask fields."""
    cdef bint bid = b != NULL and b.n[0] > 0
    cdef bint ask = b != NULL and b.n[1] > 0
    o.bid_px = b.levels[0].price if bid else FH_UNDEF_PRICE
    o.bid_sz = <uint32_t>b.levels[0].size if bid else 0
    o.bid_ct = b.levels[0].orders if bid else 0
    o.ask_px = b.levels[depth].price if ask else FH_UNDEF_PRICE
    o.ask_sz = <uint32_t>b.levels[depth].size if ask else 0
    o.ask_ct = b.levels[depth].orders if ask else 0


cdef inline bint _same_top(const mbp1 *a, const mbp1 *b) noexcept nogil:
    return (a.bid_px == b.bid_px and a.bid_sz == b.bid_sz and a.bid_ct == b.bid_ct and a.ask_px == b.ask_px
            and a.ask_sz == b.ask_sz and a.ask_ct == b.ask_ct)


cdef class Mbp1Converter:
    """Keeps the outright books across batches; :meth:`convert` turns a batch into MBP-1 bytes.

    Counters: ``written``, ``unchanged`` (updates that left the top as it was: not written),
    ``skipped_implied``, ``rejected`` (updates the book refused: bad level or side; the book set's
    counters say which), ``table_full``."""

    cdef MbpBookSet books
    cdef public uint64_t written, skipped_implied, unchanged, rejected

    def __cinit__(self, int max_instruments=MAX_INSTRUMENTS):
        self.books = MbpBookSet(DEPTH, max_instruments)

    @property
    def table_full(self):
        return int(self.books.counters()["table_full"])

    def book_counters(self):
        """The outright books' counters (feedhandler.books.mbp.COUNTER_NAMES)."""
        return self.books.counters()

    cdef size_t _run(self, const fh_tick *t, size_t n, mbp1 *out) noexcept nogil:
        cdef size_t i, w = 0
        cdef const fh_tick *r
        cdef mbp1 before
        cdef mbp1 *o
        cdef mbp_book *b
        cdef uint32_t lvl
        cdef char act, dact
        cdef uint32_t d = self.books.depth
        for i in range(n):
            r = &t[i]
            if r.hd.rtype != FH_RTYPE_MBP_UPDATE or r.mbp_update.implied:
                # gap records (a ChannelReset clears every book) and implied levels (kept, so that this
                # book is the MbpBookSet's; MBP-1 has no place for them): applied, not written
                self.books.apply_one(r)
                if r.hd.rtype == FH_RTYPE_MBP_UPDATE:
                    self.skipped_implied += 1
                continue
            b = self.books._get(r.hd.instrument_id)
            if b == NULL:
                continue                         # (counted by the book set as table_full)
            _top(b, d, &before)
            if not self.books.apply_to(b, r):
                self.rejected += 1
                continue
            o = &out[w]
            _top(b, d, o)
            act = r.mbp_update.action
            if act != b'R' and _same_top(&before, o):
                self.unchanged += 1
                continue
            lvl = r.mbp_update.level
            dact = act
            if act == b'D' or act == b'F':
                dact = b'C'              # DBN's 'F' is a fill
                lvl = 1
            elif act == b'M' or act == b'O':
                dact = b'M'
            o.length = MBP1_SIZE_C // 4
            o.rtype = 0x01
            o.publisher_id = r.hd.publisher_id
            o.instrument_id = r.hd.instrument_id
            o.ts_event = r.hd.ts_event
            o.price = r.mbp_update.price
            o.size = r.mbp_update.size
            o.action = dact
            o.side = b'N' if act == b'R' else r.mbp_update.side
            o.flags = r.mbp_update.flags & FH_F_DBN_MASK
            o.depth = 0 if (act == b'R' or lvl == 0) else <uint8_t>(lvl - 1)
            o.ts_recv = r.mbp_update.ts_recv
            o.ts_in_delta = 0
            o.sequence = r.mbp_update.sequence
            w += 1
        self.written += w
        return w

    def convert(self, ticks):
        """The MBP-1 records ((n, 80) uint8, stream order) of a batch of 64-byte tick records."""
        arr = np.ascontiguousarray(ticks)
        if arr.dtype.itemsize != sizeof(fh_tick):
            raise ValueError("expected 64-byte tick records")
        cdef size_t n = arr.shape[0]
        out = np.empty((max(n, 1), MBP1_SIZE_C), np.uint8)
        if n == 0:
            return out[:0]
        cdef const fh_tick *t = <const fh_tick *><size_t>arr.ctypes.data
        cdef mbp1 *o = <mbp1 *><size_t>out.ctypes.data
        cdef size_t w
        with nogil:
            w = self._run(t, n, o)
        return out[:w]

    def bbo(self, uint32_t instrument_id):
        """(bid_px, bid_sz, ask_px, ask_sz) of the tracked outright book (UNDEF price / 0 when empty)."""
        return self.books.bbo(instrument_id)
