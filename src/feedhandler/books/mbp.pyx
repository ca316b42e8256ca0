"""Price-level (MBP) books: depth-N levels per side, per instrument, outright apart from implied.

Fed by ``mbp_update`` records (``feedhandler.records``) from the CME MDP 3.0 decoder, plus the
``gap`` records that decoder emits:

- action 'A' (MDP3 New) inserts a level at ``level`` and shifts the deeper ones down (the last falls
  off at the book's depth); 'M' (Change) updates size/orders at ``level``; 'C' (Delete) removes it
  and shifts the deeper ones up; 'D' (DeleteThru) empties the side; 'F' (DeleteFrom) removes levels
  1..level; 'O' (Overlay) replaces the level; 'R' clears every side of the instrument (snapshot start).
- FH_F_MAYBE_BAD_BOOK or a gap OPENED record for the instrument marks the book stale; a snapshot
  ('R' with FH_F_SNAPSHOT) or a gap FILLED record clears it; a gap RESET for instrument 0 (MDP3
  ChannelReset) empties every book.

Ownership: one thread owns a MbpBookSet; ``apply`` runs one nogil loop over a whole batch.
"""
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memmove, memset

import numpy as np

from feedhandler.includes.record cimport (
    fh_tick, FH_RTYPE_MBP_UPDATE, FH_RTYPE_GAP, FH_F_MAYBE_BAD_BOOK, FH_F_SNAPSHOT, FH_UNDEF_PRICE,
    FH_GAP_OPENED, FH_GAP_FILLED, FH_GAP_RESET,
)

cdef enum:
    K_APPLIED = 0
    K_IGNORED_DEPTH      # level beyond the book's depth
    K_BAD_LEVEL          # level 0, or a change/delete of a level that is not there
    K_BAD_ACTION
    K_CLEARS
    K_STALE_MARKS
    K_RECOVERED
    K_TABLE_FULL

COUNTER_NAMES = ("applied", "ignored_depth", "bad_level", "bad_action", "clears", "stale_marks",
                 "recovered", "table_full")
LEVEL_DTYPE = np.dtype([("price", "<i8"), ("size", "<u8"), ("orders", "<u4")])

cdef inline int _side_index(char side, uint8_t implied) noexcept nogil:
    if side == b'B':
        return 2 if implied else 0
    if side == b'A':
        return 3 if implied else 1
    return -1


cdef class MbpBookSet:
    """Price-level books for many instruments.

    Parameters
    ----------
    depth : int
        Levels kept per side (CME publishes 10 outright, 2 implied; deeper updates are counted).
    max_instruments : int
        Books allocated up front; updates for more instruments are counted as ``table_full``.
    """

    def __cinit__(self, int depth=10, int max_instruments=4096):
        cdef uint32_t cap = 1
        if depth < 1 or depth > 255:
            raise ValueError("depth must be 1..255")
        while cap < <uint32_t>max_instruments * 2:
            cap <<= 1
        self.depth = depth
        self.mask = cap - 1
        self.limit = max_instruments
        self.books = <mbp_book *>calloc(cap, sizeof(mbp_book))
        self.pool = <mbp_level *>calloc(<size_t>cap * 4 * depth, sizeof(mbp_level))
        if self.books == NULL or self.pool == NULL:
            raise MemoryError()
        for i in range(cap):
            self.books[i].levels = self.pool + <size_t>i * 4 * depth

    def __dealloc__(self):
        free(self.books)
        free(self.pool)

    cdef mbp_book *find(self, uint32_t iid) noexcept nogil:
        cdef uint32_t h = (iid * <uint32_t>2654435761) & self.mask
        while self.books[h].used:
            if self.books[h].instrument_id == iid:
                return &self.books[h]
            h = (h + 1) & self.mask
        return NULL

    cdef mbp_book *_get(self, uint32_t iid) noexcept nogil:
        cdef uint32_t h = (iid * <uint32_t>2654435761) & self.mask
        while self.books[h].used:
            if self.books[h].instrument_id == iid:
                return &self.books[h]
            h = (h + 1) & self.mask
        if self.count >= self.limit:
            self.cnt[K_TABLE_FULL] += 1
            return NULL
        self.count += 1
        self.books[h].used = 1
        self.books[h].instrument_id = iid
        return &self.books[h]

    cdef int apply_one(self, const fh_tick *t) noexcept nogil:
        """Apply one record (the level rules of the module docstring): 1 when it changed a book (an
        mbp_update applied), 0 otherwise (other kinds, gap records, rejects: counted). The one
        implementation of these rules (with ``apply_to``): ``apply_ticks`` and the DBN MBP-1 converter
        (feedhandler.output._mbp1) both call it."""
        cdef mbp_book *b
        cdef uint32_t j
        if t.hd.rtype == FH_RTYPE_GAP:
            if t.gap.kind == FH_GAP_RESET and t.hd.instrument_id == 0:
                for j in range(self.mask + 1):
                    if self.books[j].used:
                        memset(self.books[j].n, 0, 4)
                        self.books[j].stale = 0
                self.cnt[K_CLEARS] += 1
            elif t.hd.instrument_id != 0:
                b = self._get(t.hd.instrument_id)
                if b != NULL and t.gap.kind == FH_GAP_OPENED:
                    b.stale = 1
                    self.cnt[K_STALE_MARKS] += 1
            return 0
        if t.hd.rtype != FH_RTYPE_MBP_UPDATE:
            return 0
        b = self._get(t.hd.instrument_id)
        if b == NULL:
            return 0
        return self.apply_to(b, t)

    cdef int apply_to(self, mbp_book *b, const fh_tick *t) noexcept nogil:
        """Apply mbp_update ``t`` to its instrument's book ``b`` (from ``_get``): 1 when applied, 0 when
        refused (counted). ``apply_one`` without the lookup, for a caller that holds the book."""
        cdef mbp_level *lv
        cdef int s, k
        cdef uint32_t lvl, d = self.depth
        if t.mbp_update.action == b'R':
            memset(b.n, 0, 4)
            self.cnt[K_CLEARS] += 1
            if t.mbp_update.flags & FH_F_SNAPSHOT and b.stale:
                b.stale = 0
                self.cnt[K_RECOVERED] += 1
            return 1
        if t.mbp_update.flags & FH_F_MAYBE_BAD_BOOK and not b.stale:
            b.stale = 1
            self.cnt[K_STALE_MARKS] += 1
        s = _side_index(t.mbp_update.side, t.mbp_update.implied)
        if s < 0:
            self.cnt[K_BAD_ACTION] += 1
            return 0
        lv = b.levels + <size_t>s * d
        lvl = t.mbp_update.level
        if t.mbp_update.action == b'D':
            b.n[s] = 0
            return 1
        if lvl == 0:
            self.cnt[K_BAD_LEVEL] += 1
            return 0
        if lvl > d:
            self.cnt[K_IGNORED_DEPTH] += 1
            return 0
        k = lvl - 1
        if t.mbp_update.action == b'A':
            if k > b.n[s]:
                self.cnt[K_BAD_LEVEL] += 1
                k = b.n[s]
            if b.n[s] == d:
                b.n[s] -= 1   # the deepest level falls off
            memmove(&lv[k + 1], &lv[k], (b.n[s] - k) * sizeof(mbp_level))
            b.n[s] += 1
        elif t.mbp_update.action == b'M' or t.mbp_update.action == b'O':
            if k >= b.n[s]:
                if k == b.n[s] and t.mbp_update.action == b'O':
                    b.n[s] += 1
                else:
                    self.cnt[K_BAD_LEVEL] += 1
                    return 0
        elif t.mbp_update.action == b'C':
            if k >= b.n[s]:
                self.cnt[K_BAD_LEVEL] += 1
                return 0
            memmove(&lv[k], &lv[k + 1], (b.n[s] - k - 1) * sizeof(mbp_level))
            b.n[s] -= 1
            return 1
        elif t.mbp_update.action == b'F':
            if lvl >= b.n[s]:
                b.n[s] = 0
            else:
                memmove(&lv[0], &lv[lvl], (b.n[s] - lvl) * sizeof(mbp_level))
                b.n[s] -= lvl
            return 1
        else:
            self.cnt[K_BAD_ACTION] += 1
            return 0
        lv[k].price = t.mbp_update.price
        lv[k].size = t.mbp_update.size
        lv[k].orders = t.mbp_update.number_of_orders
        return 1

    cdef size_t apply_ticks(self, const fh_tick *ticks, size_t n) noexcept nogil:
        cdef size_t i, applied = 0
        for i in range(n):
            applied += self.apply_one(&ticks[i])
        self.cnt[K_APPLIED] += applied
        return applied

    # ---- commands --------------------------------------------------------------------------
    def apply(self, ticks):
        """Apply a batch of tick records (numpy, any 64-byte record dtype); returns updates applied.

        Records other than mbp_update and gap are skipped, so a whole decoder batch can be passed.
        """
        arr = np.ascontiguousarray(ticks)
        if arr.dtype.itemsize != 64:
            raise TypeError("ticks must be 64-byte records (feedhandler.records.TICK_DTYPE)")
        cdef const unsigned char[::1] raw = arr.view(np.uint8).reshape(-1) if arr.size else np.zeros(0, np.uint8)
        cdef size_t n = arr.shape[0] if arr.ndim else 0
        cdef size_t done
        if n == 0:
            return 0
        with nogil:
            done = self.apply_ticks(<const fh_tick *>&raw[0], n)
        return done

    def clear(self):
        """Empty every book and forget staleness."""
        for i in range(self.mask + 1):
            memset(self.books[i].n, 0, 4)
            self.books[i].stale = 0

    # ---- queries ---------------------------------------------------------------------------
    def levels(self, uint32_t instrument_id, side="B", bint implied=False):
        """The side's levels, best first, as a numpy array of LEVEL_DTYPE (price, size, orders)."""
        cdef mbp_book *b = self.find(instrument_id)
        cdef int s = _side_index(ord(side), implied)
        if s < 0:
            raise ValueError("side is 'B' or 'A'")
        out = np.zeros(0 if b == NULL else b.n[s], dtype=LEVEL_DTYPE)
        if b != NULL:
            for k in range(b.n[s]):
                out[k] = (b.levels[s * self.depth + k].price, b.levels[s * self.depth + k].size,
                          b.levels[s * self.depth + k].orders)
        return out

    def bbo(self, uint32_t instrument_id, bint implied=False):
        """(bid_price, bid_size, ask_price, ask_size); UNDEF price and 0 size for an empty side."""
        out = []
        for side in "BA":
            lv = self.levels(instrument_id, side, implied)
            out += [int(lv["price"][0]), int(lv["size"][0])] if len(lv) else [FH_UNDEF_PRICE, 0]
        return tuple(out)

    def is_stale(self, uint32_t instrument_id):
        cdef mbp_book *b = self.find(instrument_id)
        return b != NULL and b.stale != 0

    def stale_instruments(self):
        return sorted(self.books[i].instrument_id for i in range(self.mask + 1)
                      if self.books[i].used and self.books[i].stale)

    def instruments(self):
        return sorted(self.books[i].instrument_id for i in range(self.mask + 1) if self.books[i].used)

    def counters(self):
        return {name: self.cnt[i] for i, name in enumerate(COUNTER_NAMES)}
