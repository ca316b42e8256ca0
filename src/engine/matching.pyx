"""Matching engine core: price-time priority limit order books over fixed-size records (fh/order.h).

Contract
- An :class:`Engine` owns all its books, its order pool and its output buffer; it is used by one thread
  at a time (the EngineManager's engine thread or process). ``process`` releases the GIL for the batch.
- Input: a caller-owned array of ``fh_order_req`` (read only during the call). Output: ``fh_exec``
  records appended to an engine-owned buffer, copied into a new numpy array before ``process`` returns.
- Deterministic: integer arithmetic only, no clock reads, no iteration over hash tables (the order-id
  map is used for lookups only). The same requests give byte-identical exec records.
- Errors: bad requests become ``rejected`` exec records with a reason code; only programming errors
  (wrong dtype, out of memory) raise.

Semantics are documented in matching.pyi and mirrored by tests/reference_matcher.py.
"""
import hashlib

import numpy as np

cimport cython
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcpy, memmove, memset
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_FromStringAndSize
from feedhandler.includes.record cimport FH_UNDEF_PRICE, fh_record_desc, fh_field_desc

cdef extern from "<time.h>" nogil:  # benchmarks only (process_latency); matching never reads a clock
    ctypedef long time_t
    cdef struct timespec:
        time_t tv_sec
        long tv_nsec
    int clock_gettime(int clk, timespec *tp)
    enum:
        CLOCK_MONOTONIC

REASONS = (
    "", "bad_qty", "bad_price", "bad_side", "bad_type", "bad_tif", "would_cross", "fok", "ioc", "stp",
    "user", "unknown_order", "not_owner", "eod", "bad_request", "unknown_symbol", "busy",
    "bad_instrument", "bad_kind",
)
assert len(REASONS) == FH_R_COUNT


class EngineError(Exception):
    """Programming error at the Engine boundary (bad dtype, unknown instrument, out of memory)."""


def order_layouts():
    """Return [(name, size, [(field, offset, size, count, kind), ...]), ...] from fh_order_descs()."""
    cdef size_t n = 0
    cdef const fh_record_desc *d = fh_order_descs(&n)
    cdef const fh_field_desc *f
    out = []
    for i in range(n):
        fields = []
        for j in range(d[i].nfields):
            f = &d[i].fields[j]
            fields.append((f.name.decode(), f.offset, f.size, f.count, chr(f.kind)))
        out.append((d[i].name.decode(), d[i].size, fields))
    return out


cdef object _DTYPES = None


cdef object _dtypes():
    global _DTYPES
    if _DTYPES is None:
        from engine.orders import EXEC_DTYPE, ORDER_DTYPE, REQ_DTYPE
        _DTYPES = (REQ_DTYPE, EXEC_DTYPE, ORDER_DTYPE)
    return _DTYPES


# ---- order-id map (open addressing, linear probing, backward-shift deletion) ---------------------

cdef inline uint64_t _hash(uint64_t k) noexcept nogil:
    k ^= k >> 33
    k *= 0xff51afd7ed558ccdULL
    k ^= k >> 33
    return k


cdef int _map_init(IdMap *m, uint64_t cap) noexcept nogil:
    m.keys = <uint64_t *>calloc(cap, sizeof(uint64_t))
    m.vals = <int32_t *>malloc(cap * sizeof(int32_t))
    if m.keys == NULL or m.vals == NULL:
        return -1
    m.mask = cap - 1
    m.used = 0
    return 0


cdef inline int32_t _map_get(const IdMap *m, uint64_t k) noexcept nogil:
    cdef uint64_t i = _hash(k) & m.mask
    while m.keys[i] != 0:
        if m.keys[i] == k:
            return m.vals[i]
        i = (i + 1) & m.mask
    return -1


cdef int _map_put(IdMap *m, uint64_t k, int32_t v) noexcept nogil:
    cdef IdMap bigger
    cdef uint64_t i, j
    if (m.used + 1) * 2 > m.mask + 1:
        if _map_init(&bigger, (m.mask + 1) * 2) != 0:
            return -1
        for j in range(m.mask + 1):
            if m.keys[j] != 0:
                i = _hash(m.keys[j]) & bigger.mask
                while bigger.keys[i] != 0:
                    i = (i + 1) & bigger.mask
                bigger.keys[i] = m.keys[j]
                bigger.vals[i] = m.vals[j]
        bigger.used = m.used
        free(m.keys)
        free(m.vals)
        m[0] = bigger
    i = _hash(k) & m.mask
    while m.keys[i] != 0:
        if m.keys[i] == k:
            m.vals[i] = v
            return 0
        i = (i + 1) & m.mask
    m.keys[i] = k
    m.vals[i] = v
    m.used += 1
    return 0


cdef void _map_del(IdMap *m, uint64_t k) noexcept nogil:
    cdef uint64_t i = _hash(k) & m.mask
    cdef uint64_t j, home
    while m.keys[i] != k:
        if m.keys[i] == 0:
            return
        i = (i + 1) & m.mask
    # backward-shift deletion keeps every probe chain unbroken without tombstones
    j = i
    while True:
        j = (j + 1) & m.mask
        if m.keys[j] == 0:
            break
        home = _hash(m.keys[j]) & m.mask
        # move keys[j] into the hole at i unless its home lies cyclically in (i, j]
        if (j > i and (home <= i or home > j)) or (j < i and (home <= i and home > j)):
            m.keys[i] = m.keys[j]
            m.vals[i] = m.vals[j]
            i = j
    m.keys[i] = 0
    m.used -= 1


# ---- price levels ---------------------------------------------------------------------------------

cdef inline int32_t _lower_bound(const Side *s, int64_t key) noexcept nogil:
    cdef int32_t lo = 0, hi = s.n, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if s.lv[mid].key < key:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef int32_t _level_for(Side *s, int64_t key, int64_t price) noexcept nogil:
    """Index of the level with this key, inserting an empty one if needed; -1 on out of memory."""
    cdef int32_t i
    cdef Level *grown
    if s.n > 0 and s.lv[s.n - 1].key == key:  # at the top of the book: the common case
        return s.n - 1
    if s.n > 0 and s.lv[s.n - 1].key < key:
        i = s.n
    else:
        i = _lower_bound(s, key)
        if i < s.n and s.lv[i].key == key:
            return i
    if s.n == s.cap:
        grown = <Level *>realloc(s.lv, <size_t>(s.cap * 2 if s.cap else 64) * sizeof(Level))
        if grown == NULL:
            return -1
        s.lv = grown
        s.cap = s.cap * 2 if s.cap else 64
    if i < s.n:
        memmove(&s.lv[i + 1], &s.lv[i], <size_t>(s.n - i) * sizeof(Level))
    s.n += 1
    s.lv[i].key = key
    s.lv[i].price = price
    s.lv[i].qty = 0
    s.lv[i].count = 0
    s.lv[i].head = -1
    s.lv[i].tail = -1
    return i


cdef inline void _level_remove(Side *s, int32_t i) noexcept nogil:
    if i < s.n - 1:
        memmove(&s.lv[i], &s.lv[i + 1], <size_t>(s.n - 1 - i) * sizeof(Level))
    s.n -= 1


cdef inline int64_t _key(char side, int64_t price) noexcept nogil:
    return price if side == FH_ORD_BUY else -price


cdef inline Side *_own_side(Book *b, char side) noexcept nogil:
    return &b.bids if side == FH_ORD_BUY else &b.asks


cdef inline Side *_opp_side(Book *b, char side) noexcept nogil:
    return &b.asks if side == FH_ORD_BUY else &b.bids


cdef inline bint _crosses(char side, int64_t limit, int64_t level_price) noexcept nogil:
    return level_price <= limit if side == FH_ORD_BUY else level_price >= limit


@cython.final
cdef class Engine:
    """Books for instrument ids 0..n_instruments-1 (see matching.pyi for the full contract)."""

    def __cinit__(self, uint32_t n_instruments, tick_size=1):
        cdef uint32_t i
        if n_instruments == 0:
            raise EngineError("n_instruments must be > 0")
        ticks = list(tick_size) if isinstance(tick_size, (list, tuple)) else [tick_size] * n_instruments
        if len(ticks) != n_instruments or any(int(t) <= 0 for t in ticks):
            raise EngineError("tick_size: one positive int, or one per instrument")
        self.books = <Book *>calloc(n_instruments, sizeof(Book))
        self.pool_cap = 1024
        self.pool = <Order *>malloc(<size_t>self.pool_cap * sizeof(Order))
        self.cap_out = 1024
        self.out = <fh_exec *>malloc(self.cap_out * sizeof(fh_exec))
        if self.books == NULL or self.pool == NULL or self.out == NULL or _map_init(&self.ids, 2048) != 0:
            raise MemoryError()
        self.n_books = n_instruments
        for i in range(n_instruments):
            self.books[i].tick = int(ticks[i])
            self.books[i].instrument_id = i
        for i in range(<uint32_t>self.pool_cap):
            self.pool[i].next = <int32_t>i + 1
        self.pool[self.pool_cap - 1].next = -1
        self.free_head = 0
        self.n_out = 0

    def __dealloc__(self):
        cdef uint32_t i
        if self.books != NULL:
            for i in range(self.n_books):
                free(self.books[i].bids.lv)
                free(self.books[i].asks.lv)
            free(self.books)
        free(self.pool)
        free(self.out)
        free(self.ids.keys)
        free(self.ids.vals)

    # ---- native helpers ------------------------------------------------------------------------

    cdef fh_exec *_emit(self, const fh_order_req *r, uint8_t typ, uint64_t order_id, char side,
                               int64_t price, uint32_t qty, uint32_t leaves, uint32_t cum,
                               uint32_t account, uint8_t reason) noexcept nogil:
        cdef fh_exec *grown
        cdef fh_exec *e
        if self.n_out == self.cap_out:
            grown = <fh_exec *>realloc(self.out, self.cap_out * 2 * sizeof(fh_exec))
            if grown == NULL:
                return NULL
            self.out = grown
            self.cap_out *= 2
        e = &self.out[self.n_out]
        self.n_out += 1
        memset(e, 0, sizeof(fh_exec))
        e.seq = r.seq
        e.ts_event = r.ts_recv
        e.order_id = order_id
        e.price = price
        e.qty = qty
        e.leaves_qty = leaves
        e.cum_qty = cum
        e.account = account
        e.instrument_id = r.instrument_id
        e.type = typ
        e.side = side
        e.reason = reason
        return e

    cdef int _reject(self, const fh_order_req *r, uint8_t reason) noexcept nogil:
        cdef int64_t price = r.price
        if self._emit(r, FH_EX_REJECTED, r.order_id, r.side, price, r.qty, 0, 0, r.account, reason) == NULL:
            return -1
        return 0

    cdef int32_t _alloc(self) noexcept nogil:
        cdef int32_t i, old = self.pool_cap
        cdef Order *grown
        if self.free_head < 0:
            grown = <Order *>realloc(self.pool, <size_t>old * 2 * sizeof(Order))
            if grown == NULL:
                return -1
            self.pool = grown
            self.pool_cap = old * 2
            for i in range(old, old * 2):
                self.pool[i].next = i + 1
            self.pool[old * 2 - 1].next = -1
            self.free_head = old
        i = self.free_head
        self.free_head = self.pool[i].next
        return i

    cdef int _rest(self, Book *b, const Order *o) noexcept nogil:
        """Append a copy of o to the back of its level (it gets the lowest time priority)."""
        cdef int32_t idx = self._alloc()
        cdef Side *s = _own_side(b, o.side)
        cdef int32_t li
        cdef Level *L
        if idx < 0:
            return -1
        li = _level_for(s, _key(o.side, o.price), o.price)
        if li < 0 or _map_put(&self.ids, o.order_id, idx) != 0:
            return -1
        L = &s.lv[li]
        self.pool[idx] = o[0]
        self.pool[idx].prev = L.tail
        self.pool[idx].next = -1
        if L.tail >= 0:
            self.pool[L.tail].next = idx
        else:
            L.head = idx
        L.tail = idx
        L.count += 1
        L.qty += o.leaves
        return 0

    cdef void _unlink(self, Book *b, int32_t idx) noexcept nogil:
        """Remove a resting order from its level, the id map and the pool."""
        cdef Order *o = &self.pool[idx]
        cdef Side *s = _own_side(b, o.side)
        cdef int64_t key = _key(o.side, o.price)
        cdef int32_t li
        if s.n > 0 and s.lv[s.n - 1].key == key:
            li = s.n - 1
        else:
            li = _lower_bound(s, key)
        cdef Level *L = &s.lv[li]
        if o.prev >= 0:
            self.pool[o.prev].next = o.next
        else:
            L.head = o.next
        if o.next >= 0:
            self.pool[o.next].prev = o.prev
        else:
            L.tail = o.prev
        L.count -= 1
        L.qty -= o.leaves
        if L.count == 0:
            _level_remove(s, li)
        _map_del(&self.ids, o.order_id)
        o.next = self.free_head
        self.free_head = idx

    cdef bint _fok_fillable(self, Book *b, const Order *t, bint market) noexcept nogil:
        cdef Side *s = _opp_side(b, t.side)
        cdef int32_t li = s.n - 1, oi
        cdef uint64_t avail = 0
        while li >= 0:
            if not market and not _crosses(t.side, t.price, s.lv[li].price):
                return False
            oi = s.lv[li].head
            while oi >= 0:
                if t.stp != 0 and self.pool[oi].account == t.account:
                    if t.stp != FH_STP_CANCEL_OLDEST:
                        return False  # the taker would be canceled at this order
                else:
                    avail += self.pool[oi].leaves
                    if avail >= t.leaves:
                        return True
                oi = self.pool[oi].next
            li -= 1
        return False

    cdef int _match(self, Book *b, Order *t, const fh_order_req *r, bint market) noexcept nogil:
        """Match taker t against the opposite side. 0: done, 1: taker canceled by STP, -1: no memory."""
        cdef Side *s = _opp_side(b, t.side)
        cdef Level *L
        cdef Order *m
        cdef int32_t mi
        cdef uint32_t q
        cdef uint64_t tid
        cdef fh_exec *e
        while t.leaves > 0 and s.n > 0:
            L = &s.lv[s.n - 1]
            if not market and not _crosses(t.side, t.price, L.price):
                break
            mi = L.head
            m = &self.pool[mi]
            if t.stp != 0 and m.account == t.account:
                if t.stp != FH_STP_CANCEL_NEWEST:
                    if self._emit(r, FH_EX_CANCELED, m.order_id, m.side, m.price, m.leaves, 0, m.cum,
                                  m.account, FH_R_STP) == NULL:
                        return -1
                    self._unlink(b, mi)
                if t.stp != FH_STP_CANCEL_OLDEST:
                    if self._emit(r, FH_EX_CANCELED, t.order_id, t.side, t.price, t.leaves, 0, t.cum,
                                  t.account, FH_R_STP) == NULL:
                        return -1
                    t.leaves = 0
                    return 1
                continue
            q = t.leaves if t.leaves < m.leaves else m.leaves
            b.trades += 1
            tid = (<uint64_t>b.instrument_id << 40) | b.trades
            t.leaves -= q
            t.cum += q
            m.leaves -= q
            m.cum += q
            L.qty -= q
            e = self._emit(r, FH_EX_FILL, t.order_id, t.side, L.price, q, t.leaves, t.cum, t.account, 0)
            if e == NULL:
                return -1
            e.contra_order_id = m.order_id
            e.contra_account = m.account
            e.trade_id = tid
            e.liquidity = FH_LIQ_TAKER
            e = self._emit(r, FH_EX_FILL, m.order_id, m.side, L.price, q, m.leaves, m.cum, m.account, 0)
            if e == NULL:
                return -1
            e.contra_order_id = t.order_id
            e.contra_account = t.account
            e.trade_id = tid
            e.liquidity = FH_LIQ_MAKER
            if m.leaves == 0:
                self._unlink(b, mi)
        return 0

    cdef int _post_only_price(self, Book *b, Order *t) noexcept nogil:
        """Apply the post-only rule to t.price. 0: fine, 1: reject would_cross, 2: reject bad_price."""
        cdef Side *s = _opp_side(b, t.side)
        cdef int64_t best, p
        if s.n == 0:
            return 0
        best = s.lv[s.n - 1].price
        if not _crosses(t.side, t.price, best):
            return 0
        if not (t.flags & FH_OF_REPRICE):
            return 1
        p = best - b.tick if t.side == FH_ORD_BUY else best + b.tick
        if p <= 0:
            return 2
        t.price = p
        return 0

    cdef int _new(self, Book *b, const fh_order_req *r) noexcept nogil:
        cdef Order t
        cdef bint market = r.order_type == FH_OT_MARKET
        cdef int rc
        if r.side != FH_ORD_BUY and r.side != FH_ORD_SELL:
            return self._reject(r, FH_R_BAD_SIDE)
        if r.order_type != FH_OT_LIMIT and r.order_type != FH_OT_MARKET:
            return self._reject(r, FH_R_BAD_TYPE)
        if r.tif < FH_TIF_DAY or r.tif > FH_TIF_FOK:
            return self._reject(r, FH_R_BAD_TIF)
        if r.qty == 0 or r.qty > FH_MAX_QTY:
            return self._reject(r, FH_R_BAD_QTY)
        if not market and (r.price <= 0 or r.price == FH_UNDEF_PRICE or r.price % b.tick != 0):
            return self._reject(r, FH_R_BAD_PRICE)
        if market and (r.flags & FH_OF_POST_ONLY):
            return self._reject(r, FH_R_BAD_TYPE)
        if r.stp > FH_STP_CANCEL_BOTH or r.order_id == 0 or _map_get(&self.ids, r.order_id) >= 0:
            return self._reject(r, FH_R_BAD_REQUEST)
        t.order_id = r.order_id
        t.price = 0 if market else r.price
        t.ts_event = r.ts_recv
        t.leaves = r.qty
        t.cum = 0
        t.account = r.account
        t.instrument_id = r.instrument_id
        t.side = r.side
        t.tif = r.tif
        t.flags = r.flags & (FH_OF_POST_ONLY | FH_OF_REPRICE)
        t.stp = r.stp
        if t.flags & FH_OF_POST_ONLY:
            rc = self._post_only_price(b, &t)
            if rc == 1:
                return self._reject(r, FH_R_WOULD_CROSS)
            if rc == 2:
                return self._reject(r, FH_R_BAD_PRICE)
        if self._emit(r, FH_EX_ACCEPTED, t.order_id, t.side, t.price, t.leaves, t.leaves, 0, t.account, 0) == NULL:
            return -1
        if r.tif == FH_TIF_FOK and not self._fok_fillable(b, &t, market):
            if self._emit(r, FH_EX_CANCELED, t.order_id, t.side, t.price, t.leaves, 0, 0, t.account,
                          FH_R_FOK) == NULL:
                return -1
            return 0
        rc = self._match(b, &t, r, market)
        if rc < 0:
            return -1
        if rc == 0 and t.leaves > 0:
            if market or r.tif == FH_TIF_IOC or r.tif == FH_TIF_FOK:
                if self._emit(r, FH_EX_CANCELED, t.order_id, t.side, t.price, t.leaves, 0, t.cum, t.account,
                              FH_R_IOC) == NULL:
                    return -1
            elif self._rest(b, &t) != 0:
                return -1
        return 0

    cdef int _find_own(self, Book *b, const fh_order_req *r) noexcept nogil:
        """Pool index of the request's target order; -2 after a reject was emitted, -1 out of memory."""
        cdef int32_t idx = _map_get(&self.ids, r.order_id)
        if idx < 0 or self.pool[idx].instrument_id != r.instrument_id:
            return -1 if self._reject(r, FH_R_UNKNOWN_ORDER) < 0 else -2
        if self.pool[idx].account != r.account:
            return -1 if self._reject(r, FH_R_NOT_OWNER) < 0 else -2
        return idx

    cdef int _cancel(self, Book *b, const fh_order_req *r) noexcept nogil:
        cdef int32_t idx = self._find_own(b, r)
        cdef Order *o
        if idx < 0:
            return -1 if idx == -1 else 0
        o = &self.pool[idx]
        if self._emit(r, FH_EX_CANCELED, o.order_id, o.side, o.price, o.leaves, 0, o.cum, o.account,
                      FH_R_USER) == NULL:
            return -1
        self._unlink(b, idx)
        return 0

    cdef int _amend(self, Book *b, const fh_order_req *r) noexcept nogil:
        cdef int32_t idx = self._find_own(b, r)
        cdef Order *o
        cdef Order t
        cdef int64_t new_price
        cdef uint32_t new_leaves
        cdef Side *s
        cdef Level *L
        cdef int rc
        if idx < 0:
            return -1 if idx == -1 else 0
        o = &self.pool[idx]
        new_price = o.price if r.price == FH_UNDEF_PRICE else r.price
        new_leaves = o.leaves if r.qty == 0 else r.qty
        if new_leaves > FH_MAX_QTY:
            return self._reject(r, FH_R_BAD_QTY)
        if new_price <= 0 or new_price % b.tick != 0:
            return self._reject(r, FH_R_BAD_PRICE)
        if new_price == o.price and new_leaves <= o.leaves:
            # quantity decrease (or no change): keeps its place in the queue
            s = _own_side(b, o.side)
            L = &s.lv[_lower_bound(s, _key(o.side, o.price))]
            L.qty -= o.leaves - new_leaves
            o.leaves = new_leaves
            if self._emit(r, FH_EX_REPLACED, o.order_id, o.side, o.price, new_leaves, new_leaves, o.cum,
                          o.account, 0) == NULL:
                return -1
            return 0
        t = o[0]
        t.price = new_price
        t.leaves = new_leaves
        t.ts_event = r.ts_recv
        if t.flags & FH_OF_POST_ONLY:
            rc = self._post_only_price(b, &t)
            if rc == 1:
                return self._reject(r, FH_R_WOULD_CROSS)
            if rc == 2:
                return self._reject(r, FH_R_BAD_PRICE)
        # price change or quantity increase: loses priority (re-enters as a new order would)
        self._unlink(b, idx)
        if self._emit(r, FH_EX_REPLACED, t.order_id, t.side, t.price, t.leaves, t.leaves, t.cum, t.account,
                      0) == NULL:
            return -1
        rc = self._match(b, &t, r, False)
        if rc < 0:
            return -1
        if rc == 0 and t.leaves > 0 and self._rest(b, &t) != 0:
            return -1
        return 0

    cdef int _expire_side(self, Book *b, Side *s, const fh_order_req *r) noexcept nogil:
        cdef int32_t li = s.n - 1, oi, nxt
        cdef Order *o
        while li >= 0:
            oi = s.lv[li].head
            while oi >= 0:
                o = &self.pool[oi]
                nxt = o.next
                if o.tif == FH_TIF_DAY:
                    if self._emit(r, FH_EX_EXPIRED, o.order_id, o.side, o.price, o.leaves, 0, o.cum, o.account,
                                  FH_R_EOD) == NULL:
                        return -1
                    self._unlink(b, oi)  # may remove level li; only levels above li shift
                oi = nxt
            li -= 1
        return 0

    cdef int run(self, const fh_order_req *reqs, size_t n) except -1 nogil:
        cdef size_t i
        cdef const fh_order_req *r
        cdef Book *b
        cdef int rc
        for i in range(n):
            r = &reqs[i]
            if r.instrument_id >= self.n_books:
                rc = self._reject(r, FH_R_BAD_INSTRUMENT)
            else:
                b = &self.books[r.instrument_id]
                if r.kind == FH_ORD_NEW:
                    rc = self._new(b, r)
                elif r.kind == FH_ORD_CANCEL:
                    rc = self._cancel(b, r)
                elif r.kind == FH_ORD_AMEND:
                    rc = self._amend(b, r)
                elif r.kind == FH_ORD_EOD:
                    rc = self._expire_side(b, &b.bids, r)
                    if rc == 0:
                        rc = self._expire_side(b, &b.asks, r)
                else:
                    rc = self._reject(r, FH_R_BAD_KIND)
            if rc != 0:
                with gil:
                    raise MemoryError("matching engine out of memory")
        return 0

    cdef size_t count_orders(self) noexcept nogil:
        return <size_t>self.ids.used

    # ---- Python API ------------------------------------------------------------------------------

    cdef object _contiguous(self, reqs):
        """The request buffer as a C-contiguous object exporting whole fh_order_req records."""
        if isinstance(reqs, np.ndarray):
            if reqs.dtype.itemsize != sizeof(fh_order_req):
                raise EngineError(f"requests must be REQ_DTYPE records ({sizeof(fh_order_req)} bytes)")
            if not reqs.flags.c_contiguous:
                reqs = np.ascontiguousarray(reqs)
        return reqs

    cdef size_t _run_buffer(self, reqs, bint timed, uint64_t *ns_out, size_t ns_len) except? 0:
        """Run every record of a buffer (numpy array or bytes-like) in one nogil section; returns events."""
        cdef Py_buffer view
        cdef size_t n, i
        cdef const fh_order_req *p
        cdef timespec t0, t1
        if self.busy:
            raise EngineError("Engine.process entered from two threads at once (an Engine has one owner)")
        PyObject_GetBuffer(reqs, &view, PyBUF_SIMPLE)
        self.busy = True
        try:
            if <size_t>view.len % sizeof(fh_order_req) != 0:
                raise EngineError("request buffer is not a whole number of fh_order_req records")
            n = <size_t>view.len // sizeof(fh_order_req)
            p = <const fh_order_req *>view.buf
            self.n_out = 0
            if timed:
                if ns_len < n:
                    raise EngineError("ns_out too short")
                with nogil:
                    for i in range(n):
                        self.n_out = 0
                        clock_gettime(CLOCK_MONOTONIC, &t0)
                        self.run(&p[i], 1)
                        clock_gettime(CLOCK_MONOTONIC, &t1)
                        ns_out[i] = <uint64_t>((t1.tv_sec - t0.tv_sec) * 1000000000 + (t1.tv_nsec - t0.tv_nsec))
            elif n:
                with nogil:
                    self.run(p, n)
        finally:
            self.busy = False
            PyBuffer_Release(&view)
        return self.n_out

    def process(self, reqs):
        """Apply a batch of REQ_DTYPE records (ndarray or bytes-like) in order; return EXEC_DTYPE events."""
        cdef size_t n_out = self._run_buffer(self._contiguous(reqs), False, NULL, 0)
        out = np.empty(n_out, dtype=_dtypes()[1])
        if n_out:
            memcpy(<void *><size_t>out.ctypes.data, self.out, n_out * sizeof(fh_exec))
        return out

    def process_count(self, reqs):
        """Like process() but discards the events; returns their number (for benchmarks)."""
        return self._run_buffer(self._contiguous(reqs), False, NULL, 0)

    def process_latency(self, reqs, uint64_t[::1] ns_out):
        """Apply requests one by one, storing the CLOCK_MONOTONIC ns each took in ns_out (benchmarks only:
        the clock is read around the matching code, never by it)."""
        self._run_buffer(self._contiguous(reqs), True, &ns_out[0] if ns_out.shape[0] else NULL, ns_out.shape[0])

    def _book_orders(self, uint32_t inst):
        cdef Book *b = &self.books[inst]
        cdef Side *s
        cdef int32_t li, oi
        cdef size_t k = 0
        cdef fh_order *rec
        cdef Order *o
        cdef size_t total = 0
        cdef int side_no
        for side_no in range(2):
            s = &b.bids if side_no == 0 else &b.asks
            for li in range(s.n):
                total += s.lv[li].count
        out = np.zeros(total, dtype=_dtypes()[2])
        if total == 0:
            return out
        rec = <fh_order *><size_t>out.ctypes.data
        for side_no in range(2):
            s = &b.bids if side_no == 0 else &b.asks
            li = s.n - 1
            while li >= 0:
                oi = s.lv[li].head
                while oi >= 0:
                    o = &self.pool[oi]
                    rec[k].order_id = o.order_id
                    rec[k].price = o.price
                    rec[k].ts_event = o.ts_event
                    rec[k].leaves_qty = o.leaves
                    rec[k].cum_qty = o.cum
                    rec[k].account = o.account
                    rec[k].instrument_id = o.instrument_id
                    rec[k].side = o.side
                    rec[k].tif = o.tif
                    rec[k].flags = o.flags
                    rec[k].stp = o.stp
                    k += 1
                    oi = o.next
                li -= 1
        return out

    def orders(self, uint32_t instrument_id):
        """Resting orders of one book (ORDER_DTYPE): bids best-to-worst then asks, FIFO within a level."""
        if instrument_id >= self.n_books:
            raise EngineError(f"unknown instrument_id {instrument_id}")
        return self._book_orders(instrument_id)

    def snapshot(self):
        """(all resting orders as ORDER_DTYPE in deterministic book order, trade counters as uint64)."""
        parts = [self._book_orders(i) for i in range(self.n_books)]
        counters = np.array([self.books[i].trades for i in range(self.n_books)], dtype=np.uint64)
        return np.concatenate(parts), counters

    def restore(self, orders, trade_counters):
        """Load a snapshot() into an empty engine."""
        cdef Order o
        cdef uint32_t i
        if self.ids.used != 0:
            raise EngineError("restore() needs an empty engine")
        if len(trade_counters) != self.n_books:
            raise EngineError("trade_counters: one per instrument")
        for i in range(self.n_books):
            self.books[i].trades = int(trade_counters[i])
        for rec in orders:
            i = int(rec["instrument_id"])
            if i >= self.n_books:
                raise EngineError(f"snapshot order for unknown instrument {i}")
            o.order_id = int(rec["order_id"])
            o.price = int(rec["price"])
            o.ts_event = int(rec["ts_event"])
            o.leaves = int(rec["leaves_qty"])
            o.cum = int(rec["cum_qty"])
            o.account = int(rec["account"])
            o.instrument_id = i
            o.side = ord(rec["side"])
            o.tif = int(rec["tif"])
            o.flags = int(rec["flags"])
            o.stp = int(rec["stp"])
            if self._rest(&self.books[i], &o) != 0:
                raise MemoryError()

    def state_hash(self):
        """sha256 hex of snapshot(): equal hashes mean identical books, priorities and trade counters."""
        orders, counters = self.snapshot()
        h = hashlib.sha256()
        h.update(orders.tobytes())
        h.update(counters.tobytes())
        return h.hexdigest()

    def book(self, uint32_t instrument_id, int depth=10):
        """(bids, asks), best first, as (price_raw, total_qty, order_count) per level."""
        cdef Book *b
        cdef Side *s
        cdef int32_t li
        if instrument_id >= self.n_books:
            raise EngineError(f"unknown instrument_id {instrument_id}")
        b = &self.books[instrument_id]
        cdef int side_no
        result = []
        for side_no in range(2):
            s = &b.bids if side_no == 0 else &b.asks
            levels = []
            li = s.n - 1
            while li >= 0 and len(levels) < depth:
                levels.append((s.lv[li].price, s.lv[li].qty, s.lv[li].count))
                li -= 1
            result.append(levels)
        return result[0], result[1]

    def bbo(self, uint32_t instrument_id):
        """(best bid, best ask) price_raw; None for an empty side."""
        if instrument_id >= self.n_books:
            raise EngineError(f"unknown instrument_id {instrument_id}")
        cdef Book *b = &self.books[instrument_id]
        bid = b.bids.lv[b.bids.n - 1].price if b.bids.n else None
        ask = b.asks.lv[b.asks.n - 1].price if b.asks.n else None
        return bid, ask

    def order(self, uint64_t order_id):
        """One resting order as a dict, or None."""
        cdef int32_t idx = _map_get(&self.ids, order_id) if order_id else -1
        cdef Order *o
        if idx < 0:
            return None
        o = &self.pool[idx]
        return {"order_id": o.order_id, "instrument_id": o.instrument_id, "side": chr(o.side), "price": o.price,
                "leaves_qty": o.leaves, "cum_qty": o.cum, "account": o.account, "tif": o.tif,
                "flags": o.flags, "ts_event": o.ts_event}

    def n_orders(self, instrument_id=None):
        """Resting orders in one book (or in all books)."""
        cdef uint32_t i
        cdef int32_t li
        cdef Side *s
        if instrument_id is None:
            return self.count_orders()
        i = instrument_id
        if i >= self.n_books:
            raise EngineError(f"unknown instrument_id {i}")
        cdef int side_no
        total = 0
        for side_no in range(2):
            s = &self.books[i].bids if side_no == 0 else &self.books[i].asks
            for li in range(s.n):
                total += s.lv[li].count
        return total

    @property
    def n_instruments(self):
        return self.n_books
