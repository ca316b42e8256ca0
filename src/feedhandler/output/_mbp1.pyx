# cython: language_level=3, boundscheck=False, wraparound=False
"""mbp_update records (CME MDP 3.0 price levels) -> DBN ``Mbp1Msg`` (80 bytes), for the DBN writer.

A DBN MBP-1 record carries the update (price, size, action, side, depth) AND the top of the book
after it (``bid_px_00`` ... ``ask_ct_00``). The top after a Delete comes from level 2, so the
converter keeps each instrument's outright book, ``DEPTH`` (10) levels per side, with the same level
rules as ``feedhandler.books.mbp.MbpBookSet`` ('A' insert and shift down, 'M' change, 'C' delete and shift
up, 'D' DeleteThru empties the side, 'F' DeleteFrom removes levels 1..level, 'O' overlay, 'R' clear
every side; a gap RESET for instrument 0 (ChannelReset) clears every book). That is a sequential
state machine, so it is one nogil loop per batch here rather than numpy.

Written: every outright update that changes the top of its book, plus clears (as Databento's MBP-1
holds top-of-book events only). Implied-book updates are not written (no place for them in MBP-1;
Parquet / .npy keep them). Actions map to DBN's: 'A' add, 'M' and 'O' modify, 'C', 'D' and 'F'
cancel (DBN's 'F' means fill), 'R' clear; depth is the 0-based level (0 for side-wide actions).
"""
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memmove, memset, memcpy
from feedhandler.includes.record cimport (
    fh_tick, FH_RTYPE_MBP_UPDATE, FH_RTYPE_GAP, FH_GAP_RESET, FH_F_DBN_MASK, FH_UNDEF_PRICE,
)

import numpy as np

__all__ = ["Mbp1Converter", "MBP1_SIZE", "RTYPE_MBP1"]

cdef enum:
    DEPTH = 10
    SLOTS = 1 << 16          # instruments tracked (open addressing, power of two)
    MBP1_SIZE_C = 80

MBP1_SIZE = MBP1_SIZE_C
RTYPE_MBP1 = 0x01

cdef struct level:
    int64_t price
    uint32_t size
    uint32_t orders

cdef struct book:
    uint32_t instrument_id
    uint8_t used
    uint8_t n[2]             # 0 bid, 1 ask
    level lv[2][DEPTH]

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


cdef inline void _top(const book *b, mbp1 *o) noexcept nogil:
    o.bid_px = b.lv[0][0].price if b.n[0] else FH_UNDEF_PRICE
    o.bid_sz = b.lv[0][0].size if b.n[0] else 0
    o.bid_ct = b.lv[0][0].orders if b.n[0] else 0
    o.ask_px = b.lv[1][0].price if b.n[1] else FH_UNDEF_PRICE
    o.ask_sz = b.lv[1][0].size if b.n[1] else 0
    o.ask_ct = b.lv[1][0].orders if b.n[1] else 0


cdef inline bint _same_top(const mbp1 *a, const mbp1 *b) noexcept nogil:
    return (a.bid_px == b.bid_px and a.bid_sz == b.bid_sz and a.bid_ct == b.bid_ct and a.ask_px == b.ask_px
            and a.ask_sz == b.ask_sz and a.ask_ct == b.ask_ct)


cdef class Mbp1Converter:
    """Keeps the outright books across batches; :meth:`convert` turns a batch into MBP-1 bytes."""

    cdef book *books
    cdef public uint64_t table_full, bad_level, written, skipped_implied, unchanged

    def __cinit__(self):
        self.books = <book *>calloc(SLOTS, sizeof(book))
        if self.books == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self.books)

    cdef book *_get(self, uint32_t iid) noexcept nogil:
        cdef uint32_t h = (iid * 2654435761u) & (SLOTS - 1)
        cdef uint32_t probes = 0
        while probes < SLOTS:
            if not self.books[h].used:
                self.books[h].used = 1
                self.books[h].instrument_id = iid
                return &self.books[h]
            if self.books[h].instrument_id == iid:
                return &self.books[h]
            h = (h + 1) & (SLOTS - 1)
            probes += 1
        return NULL

    cdef size_t _run(self, const fh_tick *t, size_t n, mbp1 *out) noexcept nogil:
        cdef size_t i, j, w = 0
        cdef book *b
        cdef const fh_tick *r
        cdef mbp1 before
        cdef mbp1 *o
        cdef int s
        cdef uint32_t k, lvl
        cdef char act, dact
        for i in range(n):
            r = &t[i]
            if r.hd.rtype == FH_RTYPE_GAP:
                if r.gap.kind == FH_GAP_RESET and r.hd.instrument_id == 0:
                    for j in range(SLOTS):
                        if self.books[j].used:
                            self.books[j].n[0] = 0
                            self.books[j].n[1] = 0
                continue
            if r.hd.rtype != FH_RTYPE_MBP_UPDATE:
                continue
            if r.mbp_update.implied:
                self.skipped_implied += 1
                continue
            b = self._get(r.hd.instrument_id)
            if b == NULL:
                self.table_full += 1
                continue
            _top(b, &before)
            act = r.mbp_update.action
            lvl = r.mbp_update.level
            s = 0 if r.mbp_update.side == b'B' else 1
            dact = act
            if act == b'R':
                b.n[0] = 0
                b.n[1] = 0
            elif r.mbp_update.side != b'B' and r.mbp_update.side != b'A':
                self.bad_level += 1
                continue
            elif act == b'D':
                b.n[s] = 0
                dact = b'C'
                lvl = 1
            elif lvl == 0 or lvl > DEPTH:
                self.bad_level += 1
                continue
            else:
                k = lvl - 1
                if act == b'A':
                    if k > b.n[s]:
                        k = b.n[s]
                    if b.n[s] == DEPTH:
                        b.n[s] -= 1
                    memmove(&b.lv[s][k + 1], &b.lv[s][k], (b.n[s] - k) * sizeof(level))
                    b.n[s] += 1
                elif act == b'M' or act == b'O':
                    dact = b'M'
                    if k >= b.n[s]:
                        if k == b.n[s] and act == b'O':
                            b.n[s] += 1
                        else:
                            self.bad_level += 1
                            continue
                elif act == b'C':
                    if k >= b.n[s]:
                        self.bad_level += 1
                        continue
                    memmove(&b.lv[s][k], &b.lv[s][k + 1], (b.n[s] - k - 1) * sizeof(level))
                    b.n[s] -= 1
                    k = DEPTH        # nothing to store
                elif act == b'F':
                    dact = b'C'
                    if lvl >= b.n[s]:
                        b.n[s] = 0
                    else:
                        memmove(&b.lv[s][0], &b.lv[s][lvl], (b.n[s] - lvl) * sizeof(level))
                        b.n[s] -= lvl
                    k = DEPTH
                    lvl = 1
                else:
                    self.bad_level += 1
                    continue
                if k < DEPTH:
                    b.lv[s][k].price = r.mbp_update.price
                    b.lv[s][k].size = r.mbp_update.size
                    b.lv[s][k].orders = r.mbp_update.number_of_orders
            o = &out[w]
            _top(b, o)
            if act != b'R' and _same_top(&before, o):
                self.unchanged += 1
                continue
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
        cdef book *b = self._get(instrument_id)
        cdef mbp1 o
        if b == NULL:
            return (FH_UNDEF_PRICE, 0, FH_UNDEF_PRICE, 0)
        _top(b, &o)
        return (o.bid_px, o.bid_sz, o.ask_px, o.ask_sz)
