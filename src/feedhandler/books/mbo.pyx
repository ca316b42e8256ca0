# distutils: sources = csrc/book.c
"""Per-instrument order-by-order (L3) books fed by normalized tick records.

The books live in C (``csrc/book.c``, contract and semantics in ``csrc/include/fh/book.h``);
:class:`BookSet` owns them. Python enters once per batch: :meth:`BookSet.apply` runs one ``nogil``
C loop over a whole numpy batch and :meth:`BookSet.consume` drains a ring without touching Python
except for an optional per-batch callback.
"""
from cpython.buffer cimport PyBUF_C_CONTIGUOUS, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.memoryview cimport PyMemoryView_FromMemory
from libc.stdint cimport int64_t, uint32_t, uint64_t, uintptr_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

from feedhandler.includes.record cimport FH_RTYPE_MBO, FH_RTYPE_TRADE, FH_TICK_SIZE, FH_UNDEF_PRICE, fh_tick
from feedhandler.includes.ring cimport (fh_ring, fh_ring_capacity, fh_ring_is_closed, fh_ring_is_finished,
                                        fh_ring_peek, fh_ring_release, fh_ring_slots, fh_ring_wait_for)
from feedhandler.ring cimport Ring

import numpy as np

from feedhandler.records import TICK_DTYPE

cdef extern from "Python.h":
    enum:
        PyBUF_WRITE
    int PyErr_CheckSignals() except -1

cdef enum:
    # consume() wakes up this often while the ring is idle to let Python handle signals (Ctrl-C), ns.
    CONSUME_POLL_NS = 100000000

__all__ = ["BookSet", "BBO_EVENT_DTYPE", "SUMMARY_DTYPE", "LEVEL_DTYPE", "COUNTER_NAMES", "UNDEF_PRICE",
           "LATENCY_BUCKETS"]


def _struct_dtype(fields, size_t itemsize):
    """numpy dtype of a C struct from [(name, format, byte offset)]: offsets come from the C compiler
    (below), never typed by hand."""
    return np.dtype({"names": [f[0] for f in fields], "formats": [f[1] for f in fields],
                     "offsets": [f[2] for f in fields], "itemsize": itemsize})


cdef fh_bbo_event _ev
cdef fh_book_summary _sm
cdef fh_book_depth_level _lv
cdef size_t _off(void *field, void *base):
    return <size_t>(<char *>field - <char *>base)

#: One row of :meth:`BookSet.bbo_events` (the memory layout of ``fh_bbo_event``).
BBO_EVENT_DTYPE = _struct_dtype([
    ("instrument_id", "<u4", _off(&_ev.instrument_id, &_ev)),
    ("ts_event", "<u8", _off(&_ev.ts_event, &_ev)),
    ("ts_recv", "<u8", _off(&_ev.ts_recv, &_ev)),
    ("bid_px", "<i8", _off(&_ev.bid_px, &_ev)),
    ("bid_sz", "<u8", _off(&_ev.bid_sz, &_ev)),
    ("ask_px", "<i8", _off(&_ev.ask_px, &_ev)),
    ("ask_sz", "<u8", _off(&_ev.ask_sz, &_ev)),
], sizeof(fh_bbo_event))
#: One row of :meth:`BookSet.bbo_all` (the memory layout of ``fh_book_summary``).
SUMMARY_DTYPE = _struct_dtype([
    ("instrument_id", "<u4", _off(&_sm.instrument_id, &_sm)),
    ("bid_px", "<i8", _off(&_sm.bid_px, &_sm)),
    ("bid_sz", "<u8", _off(&_sm.bid_sz, &_sm)),
    ("ask_px", "<i8", _off(&_sm.ask_px, &_sm)),
    ("ask_sz", "<u8", _off(&_sm.ask_sz, &_sm)),
    ("live_orders", "<u8", _off(&_sm.live_orders, &_sm)),
    ("stale", "?", _off(&_sm.stale, &_sm)),
], sizeof(fh_book_summary))
#: One price level of :meth:`BookSet.depth` (the memory layout of ``fh_book_depth_level``).
LEVEL_DTYPE = _struct_dtype([
    ("price", "<i8", _off(&_lv.price, &_lv)),
    ("size", "<u8", _off(&_lv.size, &_lv)),
    ("count", "<u8", _off(&_lv.count, &_lv)),
], sizeof(fh_book_depth_level))
COUNTER_NAMES = tuple(fh_book_counter_names[i].decode() for i in range(FH_BOOK_NCOUNTERS))
UNDEF_PRICE = FH_UNDEF_PRICE
#: Buckets of a full-resolution consume(latency_hist=...) histogram (same as
#: feedhandler.capture.live._live.LATENCY_BUCKETS).
LATENCY_BUCKETS = LAT_BUCKETS


cdef size_t bookset_apply(BookSet b, fh_tick *ticks, size_t n) noexcept nogil:
    return fh_bookset_apply(b.bs, ticks, n)


cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    cdef struct timespec:
        time_t tv_sec
        long tv_nsec
    ctypedef int clockid_t
    enum:
        CLOCK_REALTIME
    int clock_gettime(clockid_t clk, timespec *ts)
    int nanosleep(const timespec *req, timespec *rem)

cdef extern from *:
    int __builtin_clzll(unsigned long long) nogil

cdef enum:
    GATHER_STEP_NS = 50000      # consume(gather_us=...): sleep at most this long between two looks
    IDLE_POLLS = 256            # consume(idle_sleep_us=...): polls of an empty ring before sleeping

# latency histogram of consume(latency_hist=...): the buckets of fh/latency.h, the same as the live
# capture loop's wire -> ring histogram
from feedhandler.includes.latency cimport FH_LAT_BUCKETS as LAT_BUCKETS, fh_lat_bucket as _lat_bucket
from feedhandler.includes.latency cimport fh_now_realtime_ns as _now_realtime_ns


cdef void _lat_add(uint64_t *hist, size_t nb, const fh_tick *t, size_t n, bint by_event) noexcept nogil:
    # wire (ts_recv; by_event: ts_event, a sender's clock in the messages) -> book, for book events only
    # (MBO and trades), "now" read once per batch; records without a stamp or stamped in the future
    # (clock steps) are not counted
    cdef uint64_t now = _now_realtime_ns(), r
    cdef size_t i, b
    for i in range(n):
        if t[i].hd.rtype == FH_RTYPE_MBO:
            r = t[i].hd.ts_event if by_event else t[i].mbo.ts_recv
        elif t[i].hd.rtype == FH_RTYPE_TRADE:
            r = t[i].hd.ts_event if by_event else t[i].trade.ts_recv
        else:
            continue
        if r == 0 or r > now:
            continue
        b = _lat_bucket(now - r)
        if b >= nb:
            b = nb - 1
        hist[b] += 1


cdef inline void _sleep_ns(uint64_t ns) noexcept nogil:
    cdef timespec ts
    ts.tv_sec = <time_t>(ns // 1000000000)
    ts.tv_nsec = <long>(ns % 1000000000)
    nanosleep(&ts, NULL)


cdef uint64_t _gather(fh_ring *r, uint64_t n, uint64_t max_batch, const fh_tick **first,
                      uint64_t gather_ns) noexcept nogil:
    # Records are arriving (n > 0): let more arrive for at most gather_ns (sleeping, so that the
    # producer gets the CPU), so that a per-batch callback sees batches of up to max_batch instead of
    # whatever the producer published last. Stops early at max_batch, at the ring's end (a run is
    # contiguous) or when the ring is closed.
    cdef uint64_t deadline, now
    cdef uint64_t cap = fh_ring_capacity(r)
    cdef const fh_tick *slots = fh_ring_slots(r)
    if gather_ns == 0 or n >= max_batch:
        return n
    deadline = _now_realtime_ns() + gather_ns
    while n < max_batch:
        if <uint64_t>(first[0] - slots) + n >= cap:
            break
        if fh_ring_is_closed(r):
            return fh_ring_peek(r, max_batch, first)
        now = _now_realtime_ns()
        if now >= deadline:
            break
        _sleep_ns(deadline - now if deadline - now < GATHER_STEP_NS else GATHER_STEP_NS)
        n = fh_ring_peek(r, max_batch, first)
    return n


cdef uint64_t _wait(fh_ring *r, uint64_t max_batch, const fh_tick **first, uint64_t idle_sleep_ns) noexcept nogil:
    # fh_ring_wait_for(CONSUME_POLL_NS), or with idle_sleep_ns > 0 a cheaper wait for a consumer
    # that shares its CPUs with the receive path: a few polls, then sleeps of idle_sleep_ns (no
    # spinning or sched_yield storms while the wire is slower than the books).
    cdef uint64_t n, deadline
    cdef int i
    if idle_sleep_ns == 0:
        return fh_ring_wait_for(r, max_batch, first, CONSUME_POLL_NS)
    for i in range(IDLE_POLLS):
        n = fh_ring_peek(r, max_batch, first)
        if n != 0:
            return n
    deadline = _now_realtime_ns() + CONSUME_POLL_NS
    while True:
        n = fh_ring_peek(r, max_batch, first)
        if n != 0:
            return n
        if fh_ring_is_closed(r):
            return fh_ring_peek(r, max_batch, first)
        if _now_realtime_ns() >= deadline:
            return 0
        _sleep_ns(idle_sleep_ns)


cdef uint64_t _consume(BookSet self, fh_ring *r, size_t max_batch, callback, uint64_t *hist, size_t nb,
                       uint64_t gather_ns, uint64_t idle_sleep_ns, bint by_event=False) except? 0:
    # BookSet.consume's loop (a module-level function so that book.pxd need not know fh_ring).
    # Without a callback the whole loop runs without the GIL and re-enters Python only when the ring
    # has been idle for CONSUME_POLL_NS (signals) or at the end.
    cdef const fh_tick *first
    cdef uint64_t n, total = 0
    cdef bint has_cb = callback is not None
    while True:
        # busy only while native code mutates the books: the callback may query this BookSet
        self._enter()
        self.busy = True
        with nogil:
            while True:
                n = _wait(r, max_batch, &first, idle_sleep_ns)
                if n == 0:
                    break
                if has_cb:
                    n = _gather(r, n, max_batch, &first, gather_ns)
                # The consumer owns the slots from wait until release (fh/ring.h), so it may
                # enrich them in place.
                fh_bookset_apply(self.bs, <fh_tick *>first, n)
                if hist != NULL:
                    _lat_add(hist, nb, first, n, by_event)
                total += n
                if has_cb:
                    break
                fh_ring_release(r, n)
        self.busy = False
        if n == 0:
            if fh_ring_is_finished(r):
                break
            PyErr_CheckSignals()
            continue
        try:
            callback(np.frombuffer(
                PyMemoryView_FromMemory(<char *>first, n * FH_TICK_SIZE, PyBUF_WRITE),
                dtype=TICK_DTYPE))
        finally:
            fh_ring_release(r, n)
    return total


cdef int _side(object side) except -1:
    if side in ("B", b"B", FH_BOOK_BID):
        return FH_BOOK_BID
    if side in ("A", b"A", FH_BOOK_ASK):
        return FH_BOOK_ASK
    raise ValueError(f"side must be 'B' or 'A', not {side!r}")


cdef class BookSet:
    """The L3 books of one feed, one per instrument_id, created on first use.

    Parameters
    ----------
    max_instruments : int
        Instrument ids below this are found through a direct table (4 bytes an id); larger ids go
        through a hash map.
    track_bbo_events : bool
        Record every change of an instrument's best bid/offer for :meth:`bbo_events`.
    depth_hint : int
        Price levels a side of a new book is expected to hold (sizes its price ladder's directory;
        any depth works: inserting or removing a level costs the same however far from the top).

    Notes
    -----
    A BookSet is owned by one thread. :meth:`apply` and :meth:`consume` release the GIL but must not
    run concurrently with each other or with the queries on the same BookSet.
    """

    def __cinit__(self, uint32_t max_instruments=65536, bint track_bbo_events=False, uint32_t depth_hint=16):
        self.bs = fh_bookset_new(max_instruments, depth_hint, track_bbo_events)
        if self.bs == NULL:
            raise MemoryError("fh_bookset_new")
        self.max_instruments = max_instruments
        self.track_bbo_events = track_bbo_events

    cdef int _enter(self) except -1:
        if self.busy:
            raise RuntimeError("this BookSet is being updated by apply/consume in another thread")
        return 0

    def __dealloc__(self):
        fh_bookset_free(self.bs)
        self.bs = NULL

    # ---- commands -----------------------------------------------------------------------------
    def apply(self, ticks):
        """Apply a batch of records in order and enrich them in place.

        Parameters
        ----------
        ticks : numpy.ndarray
            C-contiguous, writable, 8-byte aligned array of 64-byte records (``TICK_DTYPE`` or any
            record dtype of ``feedhandler.records``). Fills in the side, price and size the decoder
            did not know (see ``fh/book.h``).

        Returns
        -------
        int
            Records applied.
        """
        cdef Py_buffer view
        cdef size_t n
        PyObject_GetBuffer(ticks, &view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS)
        try:
            if view.itemsize != FH_TICK_SIZE or view.len % FH_TICK_SIZE:
                raise ValueError(f"records must be {FH_TICK_SIZE} bytes, got itemsize {view.itemsize}")
            if <uintptr_t>view.buf % 8:
                raise ValueError("records must be 8-byte aligned (use feedhandler.records.empty)")
            n = <size_t>view.len // FH_TICK_SIZE
            self._enter()
            self.busy = True
            try:
                with nogil:
                    fh_bookset_apply(self.bs, <fh_tick *>view.buf, n)
            finally:
                self.busy = False
        finally:
            PyBuffer_Release(&view)
        return n

    def consume(self, Ring ring not None, size_t max_batch=4096, callback=None, latency_hist=None,
                double gather_us=0.0, double idle_sleep_us=0.0, str latency_wire="ts_recv"):
        """Apply every record of a ring until it is closed and drained.

        Parameters
        ----------
        ring : feedhandler.ring.Ring
            The ring; the calling thread becomes its one consumer (see ``fh/ring.h``).
        max_batch : int
            Most records applied between two releases.
        callback : callable, optional
            Called once per batch with the enriched records (a ``TICK_DTYPE`` numpy view of the ring
            slots, valid only during the call: copy what you keep) before they are released to the
            producer. An exception from it stops consume (the batch is released first) and propagates.
        latency_hist : numpy.ndarray, optional
            C-contiguous writable ``uint64`` array: after each batch is applied, every MBO and trade
            record with a ``ts_recv`` adds 1 to bucket ``b(now - ts_recv)`` (wire -> book, ns,
            CLOCK_REALTIME read once per batch), with the log-linear buckets of
            ``feedhandler.capture.live._live`` (``LATENCY_BUCKETS`` of them; a shorter array clips
            to its last bucket). Filled natively, without the GIL; read it after consume returns.
        gather_us : float
            With a callback: once records are arriving, keep collecting them for up to this long
            before applying (up to ``max_batch``, the ring's end or its close), so that the callback
            sees larger batches; adds at most that much to the wire->book latency.
        idle_sleep_us : float
            0 (default): wait for records with the ring's spin -> sched_yield -> sleep back-off.
            > 0: poll a little, then sleep this long between looks at an empty ring, leaving the CPU
            to the receive path (a live consumer on shared cores); adds up to that much (plus the
            timer slack) to the wire->book latency of the first record after an idle spell.
        latency_wire : {"ts_recv", "ts_event"}
            The field the latency histogram starts from: the capture clock (default) or the message's
            own time (a sender that writes its clock into the messages: bench/bench_latency.py).

        Returns
        -------
        int
            Records applied.

        Notes
        -----
        The GIL is released while waiting and applying. Without a callback the loop does not enter
        Python at all while records flow, only when the ring has been idle for 0.1 s (to handle
        signals) and at the end; with one, Python is entered once per batch.
        """
        cdef fh_ring *r = ring.ring
        cdef Py_buffer view
        cdef uint64_t *hist = NULL
        cdef size_t nb = 0
        if r == NULL:
            raise ValueError("the ring is closed")
        if max_batch == 0:
            raise ValueError("max_batch must be positive")
        if gather_us < 0 or idle_sleep_us < 0:
            raise ValueError("gather_us and idle_sleep_us must be >= 0")
        cdef uint64_t gather_ns = <uint64_t>(gather_us * 1000.0)
        cdef uint64_t idle_ns = <uint64_t>(idle_sleep_us * 1000.0)
        if latency_wire not in ("ts_recv", "ts_event"):
            raise ValueError(f"latency_wire must be 'ts_recv' or 'ts_event', not {latency_wire!r}")
        cdef bint by_event = latency_wire == "ts_event"
        if latency_hist is None:
            return _consume(self, r, max_batch, callback, NULL, 0, gather_ns, idle_ns)
        if not isinstance(latency_hist, np.ndarray) or latency_hist.dtype != np.uint64:
            raise ValueError("latency_hist must be a C-contiguous writable numpy uint64 array")
        PyObject_GetBuffer(latency_hist, &view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS)
        try:
            if <uintptr_t>view.buf % 8:
                raise ValueError("latency_hist must be 8-byte aligned")
            nb = <size_t>view.len // 8
            if nb == 0:
                raise ValueError("latency_hist must have at least one bucket")
            hist = <uint64_t *>view.buf
            return _consume(self, r, max_batch, callback, hist, nb, gather_ns, idle_ns, by_event)
        finally:
            PyBuffer_Release(&view)

    # ---- queries ------------------------------------------------------------------------------
    def bbo(self, uint32_t instrument_id):
        """Best bid and offer: ``(bid_px, bid_sz, bid_count, ask_px, ask_sz, ask_count)``.

        An empty side (or an unknown instrument) reads ``UNDEF_PRICE, 0, 0``.
        """
        cdef fh_bbo b
        self._enter()
        fh_bookset_bbo(self.bs, instrument_id, &b)
        return (b.bid_px, b.bid_sz, b.bid_count, b.ask_px, b.ask_sz, b.ask_count)

    def bbo_all(self):
        """One row per book (``SUMMARY_DTYPE``), in order of creation."""
        self._enter()
        cdef size_t n = fh_bookset_instrument_count(self.bs)
        out = np.zeros(n, dtype=SUMMARY_DTYPE)
        cdef unsigned char[::1] mem = out.view(np.uint8)
        if n:
            fh_bookset_summaries(self.bs, <fh_book_summary *>&mem[0], n)
        return out

    def depth(self, uint32_t instrument_id, size_t n=10):
        """Up to ``n`` levels a side, best first: ``(bids, asks)`` arrays of ``LEVEL_DTYPE``."""
        self._enter()
        res = []
        cdef size_t k
        cdef unsigned char[::1] mem
        for side in (FH_BOOK_BID, FH_BOOK_ASK):
            out = np.zeros(n, dtype=LEVEL_DTYPE)
            k = 0
            if n:
                mem = out.view(np.uint8)
                k = fh_bookset_depth(self.bs, instrument_id, side, <fh_book_depth_level *>&mem[0], n)
            res.append(out[:k])
        return tuple(res)

    def orders(self, uint32_t instrument_id, side, int64_t price):
        """The orders at one price level in queue (FIFO) order: ``[(order_id, size), ...]``."""
        self._enter()
        cdef int s = _side(side)
        cdef size_t cap = 0, n
        cdef uint64_t *ids = NULL
        cdef uint32_t *sizes = NULL
        n = fh_bookset_level_orders(self.bs, instrument_id, s, price, NULL, NULL, 0)
        if n == 0:
            return []
        ids = <uint64_t *>malloc(n * sizeof(uint64_t))
        sizes = <uint32_t *>malloc(n * sizeof(uint32_t))
        try:
            if ids == NULL or sizes == NULL:
                raise MemoryError()
            n = fh_bookset_level_orders(self.bs, instrument_id, s, price, ids, sizes, n)
            return [(ids[i], sizes[i]) for i in range(n)]
        finally:
            free(ids)
            free(sizes)

    def order(self, uint64_t order_id):
        """A live order: ``(instrument_id, side, price, size)``; KeyError when not live."""
        self._enter()
        cdef uint32_t inst, size
        cdef int side
        cdef int64_t price
        if fh_bookset_order(self.bs, order_id, &inst, &side, &price, &size) < 0:
            raise KeyError(order_id)
        return (inst, "B" if side == FH_BOOK_BID else "A", price, size)

    def queue_position(self, uint64_t order_id):
        """``(shares ahead, orders ahead)`` of a live order in its level; KeyError when not live."""
        self._enter()
        cdef uint64_t sh, od
        if fh_bookset_queue_position(self.bs, order_id, &sh, &od) < 0:
            raise KeyError(order_id)
        return (sh, od)

    def stale(self, uint32_t instrument_id):
        """True when a sequence gap may have lost events of this instrument."""
        self._enter()
        return bool(fh_bookset_stale(self.bs, instrument_id))

    def counters(self):
        """Event counts by kind and by reject reason (names in ``fh/book.h``)."""
        self._enter()
        cdef const uint64_t *c = fh_bookset_counters(self.bs)
        return {COUNTER_NAMES[i]: c[i] for i in range(FH_BOOK_NCOUNTERS)}

    def bbo_events(self):
        """BBO changes since the last call (``BBO_EVENT_DTYPE``); empty unless track_bbo_events."""
        self._enter()
        cdef size_t n
        cdef const fh_bbo_event *ev = fh_bookset_bbo_events(self.bs, &n)
        out = np.empty(n, dtype=BBO_EVENT_DTYPE)
        cdef unsigned char[::1] mem
        if n:
            mem = out.view(np.uint8)
            memcpy(&mem[0], ev, n * sizeof(fh_bbo_event))
        fh_bookset_bbo_events_drain(self.bs)
        return out

    def check(self):
        """Verify every internal invariant (O(book size), for tests); raises AssertionError."""
        self._enter()
        cdef int rc = fh_bookset_check(self.bs)
        if rc:
            raise AssertionError(f"fh_bookset_check failed with code {rc}")

    @property
    def live_orders(self):
        """Orders resting in all books."""
        self._enter()
        return fh_bookset_live_orders(self.bs)

    @property
    def instrument_count(self):
        """Books created so far."""
        self._enter()
        return fh_bookset_instrument_count(self.bs)

    @property
    def memory_bytes(self):
        """Bytes the books currently hold (pools, tables, level arrays, event buffer)."""
        self._enter()
        return fh_bookset_memory(self.bs)

    def store_stats(self):
        """Where the live orders are kept: ``ref_orders`` in pages indexed by the order id (dense ids
        such as ITCH's), ``table_orders`` in the fallback hash table (ids of 2^32 and up, sparse ids,
        long-lived orders moved out of old pages), ``ref_pages`` in use and node ``pages`` allocated."""
        cdef fh_book_store_stats st
        self._enter()
        fh_bookset_store_stats(self.bs, &st)
        return {"ref_orders": st.ref_orders, "table_orders": st.table_orders, "ref_pages": st.ref_pages,
                "pages": st.pages}
