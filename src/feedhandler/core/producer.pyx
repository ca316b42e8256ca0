# distutils: sources = csrc/ring.c
"""The feed core's producer loop: source -> framer -> decoder -> records, for every protocol and mode.

:c:func:`producer_fill` is the one loop. It runs in ``nogil`` C and is driven either by
:meth:`Producer.read` (the caller's batch: single-threaded replay) or by the native producer thread of
:meth:`Producer.start`, which writes ring slots in place (or pushes a local batch at the ring's wrap)
and closes the ring at the end (pipelined replay, live capture).

The pieces plug in as C function pointers: the source (``fh_source_next_fn``: a capture file, AF_PACKET,
AF_XDP, DPDK, a file replayed as a live source), the framer (:class:`Framer`'s ``framer_ops``:
MoldUDP64 sequencing in ``framing.moldudp64``, the CME packet header's plain UDP in
``framing.cme_packets``) and the decoder (an ``fh_decode_fn`` and its ctx: ITCH 5.0, CME MDP 3.0).
The two modes differ only where a source differs: a file's 0 is the end of the input, a live source's
0 is "nothing ready now" (so a batch is published at once, never held back to fill it), and a live
stream ends on :meth:`Producer.stop`, after what was received has been framed, decoded and published.

Two ways to spend a packet (one switch, ``start(latency=...)``): the batched default publishes records
to the ring and a consumer thread applies them to the books; the latency mode (run to completion)
busy-polls the source (never sleeps: a core at 100 %), takes at most a few frames a call, and applies
each batch of records to the books through the sinks (``fh_sink_fn``: BookSet, MbpBookSet) on the
receive thread itself, before publishing them to the ring, which is then only the fan-out to other
readers (a DROP ring: a slow reader loses records, counted, and never holds up the books).
"""
from cpython.pycapsule cimport PyCapsule_GetName, PyCapsule_GetPointer
from libc.stdint cimport uint8_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from feedhandler.includes.msg cimport fh_decode_fn, fh_msg
from feedhandler.includes.record cimport FH_RTYPE_MBO, FH_RTYPE_TRADE, fh_tick
from feedhandler.includes.moldudp64 cimport FH_MSG_RECORD
from feedhandler.includes.ring cimport (
    FH_RING_DROP, fh_ring, fh_ring_claim, fh_ring_close, fh_ring_policy, fh_ring_publish, fh_ring_push_for,
)
from feedhandler.includes.latency cimport FH_LAT_BUCKETS as LAT_BUCKETS
from feedhandler.includes.latency cimport fh_lat_bucket as _lat_bucket
from feedhandler.includes.latency cimport fh_now_realtime_ns as _now_ns
from feedhandler.ring cimport Ring
from feedhandler.protocols.itch50 cimport Itch50Decoder
from feedhandler.books.mbo cimport BookSet, bookset_apply
from feedhandler.books.mbp cimport MbpBookSet

import os

import numpy as np

from feedhandler.errors import FeedError
from feedhandler.records import TICK_DTYPE

cdef extern from "<pthread.h>" nogil:
    int pthread_create(pthread_t *t, const void *attr, void *(*fn)(void *) noexcept nogil, void *arg)
    int pthread_join(pthread_t t, void **ret)
    int pthread_setname_np(pthread_t t, const char *name)

cdef extern from "<sched.h>" nogil:
    ctypedef struct cpu_set_t:
        pass
    void CPU_ZERO(cpu_set_t *s)
    void CPU_SET(int cpu, cpu_set_t *s)
    int pthread_setaffinity_np(pthread_t t, size_t size, const cpu_set_t *s)

cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    cdef struct timespec:
        time_t tv_sec
        long tv_nsec
    ctypedef int clockid_t
    enum:
        CLOCK_MONOTONIC
    int clock_gettime(clockid_t clk, timespec *ts)

cdef extern from "<stdatomic.h>" nogil:
    # the stop flag is the only value two threads write/read outside counters
    int atomic_load_explicit(int *p, int order)
    void atomic_store_explicit(int *p, int v, int order)
    enum:
        memory_order_relaxed
        memory_order_acquire
        memory_order_release

cdef enum:
    PKT_BATCH = 4096            # frames per source call (fh_pkt array)
    THREAD_BATCH = 8192         # records per producer-thread step
    # ring slots: write the ring in place when a claim gives at least this many. Above the room an MDP3
    # packet pair needs (two 1500-byte packets: ~310 records), so that a reorder never depends on where
    # the ring wraps: the records equal those of read() with any batch of at least this size.
    DIRECT_MIN = 1024
    PUSH_TIMEOUT_NS = 100000000 # ns: a full ring is re-checked against stop() this often
    IDLE_WAIT_MS = 50           # ms: a live source waits this long for traffic before stop() is re-checked
    LATENCY_SRC_CAP = 32        # frames per source call in latency mode: a burst is applied in small steps

MIN_READ_BATCH = DIRECT_MIN     # records: the smallest batch read() is guaranteed to make progress with


cdef inline void _lat_record(producer *c, const fh_tick *t, size_t k) noexcept nogil:
    # book events only (MBO and trades): the latency that matters is the one to a book change
    cdef uint64_t now = _now_ns(), r
    cdef size_t i
    for i in range(k):
        if t[i].hd.rtype == FH_RTYPE_MBO:
            r = t[i].mbo.ts_recv
        elif t[i].hd.rtype == FH_RTYPE_TRADE:
            r = t[i].trade.ts_recv
        else:
            continue
        if r and r <= now:
            c.lat_ring[_lat_bucket(now - r)] += 1


cdef inline uint64_t _wire_ns(const fh_tick *t, producer_wire wire) noexcept nogil:
    # the "wire" stamp of a book record (0: not a book record / no stamp)
    if t.hd.rtype == FH_RTYPE_MBO:
        return t.hd.ts_event if wire == WIRE_TS_EVENT else t.mbo.ts_recv
    if t.hd.rtype == FH_RTYPE_TRADE:
        return t.hd.ts_event if wire == WIRE_TS_EVENT else t.trade.ts_recv
    return 0


cdef inline void _lat_book(producer *c, const fh_tick *t, size_t k) noexcept nogil:
    # wire -> book after the sinks applied t[0..k): per message, and per packet (the messages of one
    # packet share its wire stamp: one sample per run of equal stamps, the packet's last message)
    cdef uint64_t now = _now_ns(), r, prev = 0
    cdef size_t i
    for i in range(k):
        r = _wire_ns(&t[i], c.wire)
        if r == 0 or r > now:
            continue
        c.lat_book[_lat_bucket(now - r)] += 1
        if r != prev:
            c.lat_book_pkt[_lat_bucket(now - r)] += 1
            prev = r


cdef inline int _spin_timeout(producer *c) noexcept nogil:
    # latency mode: 0 (poll without waiting) until the feed has been idle for spin_ns, then
    # IDLE_WAIT_MS (a blocking wait the next packet ends); spin_ns 0: never wait (pure busy poll)
    cdef timespec ts
    cdef uint64_t now
    if c.spin_ns == 0:
        return 0
    clock_gettime(CLOCK_MONOTONIC, &ts)
    now = <uint64_t>ts.tv_sec * 1000000000 + <uint64_t>ts.tv_nsec
    if c.idle_since == 0:
        c.idle_since = now
        return 0
    if now - c.idle_since < c.spin_ns:
        return 0
    c.spins_slept += 1
    return IDLE_WAIT_MS


cdef size_t producer_fill(producer *c, fh_tick *out, size_t cap) noexcept nogil:
    """Writes up to cap records; see the .pxd."""
    cdef size_t k = 0, j, consumed, n_out, n
    cdef const fh_msg *m
    while k < cap:
        if c.i_msgs < c.n_msgs:
            m = &c.msgs[c.i_msgs]
            if m.flags & FH_MSG_RECORD:         # a record the framer made (gap, end of session)
                memcpy(&out[k], m.data, sizeof(fh_tick))
                k += 1
                c.i_msgs += 1
                continue
            j = c.i_msgs + 1
            while j < c.n_msgs and not (c.msgs[j].flags & FH_MSG_RECORD):
                j += 1
            if c.fn == NULL:
                c.i_msgs = j
                continue
            n_out = 0
            consumed = c.fn(c.ctx, m, j - c.i_msgs, &out[k], cap - k, &n_out)
            k += n_out
            c.i_msgs += consumed
            if consumed == 0:
                if k == 0:
                    c.error = 1     # a whole batch of room and still no progress: cap too small
                    c.finished = 1
                break
            continue
        if c.finished:
            break
        c.i_msgs = 0
        c.n_msgs = c.fr.run(c.fr.fr, &c.msgs)
        if c.n_msgs:
            continue
        if not c.fr.input_done(c.fr.fr):
            c.error = 2             # the framer made no progress (cannot happen: see the framers)
            c.finished = 1
            break
        if c.src_eof:
            c.n_msgs = c.fr.finish(c.fr.fr, &c.msgs)
            if c.n_msgs == 0:
                c.finished = 1
            continue
        if c.mode == PRODUCER_LIVE and atomic_load_explicit(&c.stop, memory_order_acquire):
            c.src_eof = 1
            continue
        if c.spin:
            if k:
                break               # latency mode: apply what this source call brought at once
            # busy poll; with a spin budget, block in the source's wait (woken by the packet) once
            # the feed has been idle that long
            n = c.src_next(c.src_ctx, c.pkts, c.src_cap, _spin_timeout(c))
            if n:
                c.idle_since = 0
        else:
            n = c.src_next(c.src_ctx, c.pkts, c.pkt_cap, 0 if k else IDLE_WAIT_MS)
        if n == 0:
            if c.mode == PRODUCER_LIVE:
                break               # nothing ready: publish what we have (or report idle)
            c.src_eof = 1
            continue
        c.fr.set_input(c.fr.fr, c.pkts, n)
    c.records += k
    return k


cdef inline bint _stopped(producer *c) noexcept nogil:
    # a file producer abandons the rest on stop(); a live one was told to end its input and publishes
    # everything until finished (the consumer drains the ring until it is closed)
    return c.mode == PRODUCER_FILE and atomic_load_explicit(&c.stop, memory_order_acquire)


cdef void *_producer_thread(void *arg) noexcept nogil:
    """Fill ring slots in place (or push a local batch at the wrap); close the ring at the end."""
    cdef producer *c = <producer *>arg
    cdef fh_tick *first = NULL
    cdef uint64_t n, k, done
    while not _stopped(c):
        n = fh_ring_claim(c.ring, THREAD_BATCH, &first)
        if n >= DIRECT_MIN:
            k = producer_fill(c, first, n)
            if k:
                if c.lat_on:
                    _lat_record(c, first, k)
                fh_ring_publish(c.ring, k)
                c.publishes += 1
        else:
            k = producer_fill(c, c.local, THREAD_BATCH)
            if k:
                if c.lat_on:
                    _lat_record(c, c.local, k)
                done = 0
                while done < k and not _stopped(c):
                    done += fh_ring_push_for(c.ring, c.local + done, k - done, PUSH_TIMEOUT_NS)
                c.publishes += 1
        if c.finished:
            break
    fh_ring_close(c.ring)
    return NULL


cdef void *_producer_thread_latency(void *arg) noexcept nogil:
    """Latency mode: busy-poll the source, frame and decode a few frames at a time into ring slots (or
    the local batch at the ring's wrap), apply them to the books (the sinks) here, then publish them
    to the fan-out ring without ever waiting for its reader; close the ring at the end."""
    cdef producer *c = <producer *>arg
    cdef fh_tick *first = NULL
    cdef fh_tick *out
    cdef uint64_t n, k, done
    cdef size_t i
    cdef bint direct
    while True:
        n = fh_ring_claim(c.ring, THREAD_BATCH, &first) if c.ring != NULL else 0
        direct = n >= DIRECT_MIN
        out = first if direct else c.local
        k = producer_fill(c, out, n if direct else THREAD_BATCH)
        if k:
            for i in range(c.n_sinks):
                c.sinks[i](c.sink_ctx[i], out, k)
            c.applied += k
            _lat_book(c, out, k)
            if c.ring != NULL:
                if direct:
                    fh_ring_publish(c.ring, k)
                else:
                    done = fh_ring_push_for(c.ring, out, k, 0)
                    c.fanout_dropped += k - done
                c.publishes += 1
            if c.lat_on:            # wire -> "ring": the records are final (in the books, fanned out)
                _lat_record(c, out, k)
        if c.finished:
            break
    if c.ring != NULL:
        fh_ring_close(c.ring)
    return NULL


cdef class Framer:
    """A framer the producer can drive (see the .pxd); subclasses fill ``ops`` and keep its state alive."""

    def stats(self):
        raise NotImplementedError(f"{type(self).__name__}.stats")


def decoder_fn(decoder):
    """``(fn, ctx)`` addresses of a decoder: an ``Itch50Decoder`` or any object whose ``decode_fn()``
    returns the ("fh_decode_fn", ctx) PyCapsules (``Mdp3Decoder``)."""
    cdef Itch50Decoder d
    if isinstance(decoder, Itch50Decoder):
        d = <Itch50Decoder>decoder
        return <size_t>d.fn, <size_t>d.ctx
    get = getattr(decoder, "decode_fn", None)
    if get is None:
        raise TypeError(f"{type(decoder).__name__} is no decoder: it has no decode_fn() (fh/decoder.h)")
    fn, ctx = get()
    return (<size_t>PyCapsule_GetPointer(fn, b"fh_decode_fn"),
            <size_t>PyCapsule_GetPointer(ctx, PyCapsule_GetName(ctx)))


cdef size_t _mbo_sink(void *ctx, fh_tick *t, size_t n) noexcept nogil:
    return bookset_apply(<BookSet>ctx, t, n)


cdef size_t _mbp_sink(void *ctx, fh_tick *t, size_t n) noexcept nogil:
    return (<MbpBookSet>ctx).apply_ticks(t, n)


class book_sink:
    """The books as a sink of the latency mode (``Producer.start(latency=True, sinks=[...])``): a
    :class:`~feedhandler.books.BookSet` (L3) or :class:`~feedhandler.books.MbpBookSet` (price levels).
    The books are then owned by the receive thread until it is joined: query them after ``join()``."""

    def __init__(self, books):
        if not isinstance(books, (BookSet, MbpBookSet)):
            raise TypeError(f"{type(books).__name__} is not a BookSet or MbpBookSet")
        self.books = books

    def sink(self):
        fn = <size_t>_mbo_sink if isinstance(self.books, BookSet) else <size_t>_mbp_sink
        return fn, <size_t><void *>self.books


cdef _books_busy(sinks, bint busy):
    # a BookSet applied by the receive thread refuses Python calls until the thread is joined
    cdef BookSet b
    for obj in sinks or ():
        books = getattr(obj, "books", None)
        if isinstance(books, BookSet):
            b = <BookSet>books
            if busy:
                b._enter()
            b.busy = busy


cdef class Producer:
    """The producer loop with its source, framer and decoder plugged in (by a subclass: ``Feed`` for
    files, ``LiveFeed`` for live sources). Either :meth:`read` or :meth:`start` drives it, never both."""

    def __cinit__(self):
        memset(&self.core, 0, sizeof(self.core))

    cdef _plug(self, Framer framer, decoder, producer_mode mode):
        """Attach the framer and the decoder (the subclass sets the source) and allocate the batch."""
        self.framer_obj = framer
        self.core.fr = framer.ops
        self.core.mode = mode
        self.core.lat_on = 1 if mode == PRODUCER_LIVE else 0
        if self.core.pkts == NULL:
            self.core.pkts = <fh_pkt *>malloc(PKT_BATCH * sizeof(fh_pkt))
            if self.core.pkts == NULL:
                raise MemoryError()
            memset(self.core.pkts, 0, PKT_BATCH * sizeof(fh_pkt))
            self.core.pkt_cap = PKT_BATCH
        self.dec = decoder
        if decoder is None:
            self.core.fn = NULL
            self.core.ctx = NULL
        else:
            fn, ctx = decoder_fn(decoder)
            self.core.fn = <fh_decode_fn><size_t>fn
            self.core.ctx = <void *><size_t>ctx

    cdef void _stop_and_join(self) noexcept:
        """(dealloc) A thread still running is stopped and joined before its source and framer go."""
        if self.started and not self.joined:
            atomic_store_explicit(&self.core.stop, 1, memory_order_release)
            if self.core.src_wake != NULL:
                self.core.src_wake(self.core.src_ctx)
            with nogil:
                pthread_join(self.thread, NULL)
            self.joined = True

    def __dealloc__(self):
        self._stop_and_join()
        free(self.core.pkts)
        free(self.core.local)

    @property
    def decoder(self):
        """The protocol decoder (None when framing only)."""
        return self.dec

    @property
    def framer(self):
        """The framer (its ``stats()`` are the framing counters)."""
        return self.framer_obj

    @property
    def finished(self):
        """True when every record has been produced."""
        return bool(self.core.finished)

    def read(self, ticks):
        """Fill ``ticks`` (a C-contiguous numpy array of TICK_DTYPE / any 64-byte record dtype) with
        the next records. Returns how many were written; 0 at the end of the input."""
        if self.started:
            raise FeedError("this feed is driven by its producer thread (start()); read() is not allowed")
        if not isinstance(ticks, np.ndarray) or ticks.dtype.itemsize != 64 or ticks.ndim != 1:
            raise TypeError("ticks must be a 1-d numpy array of 64-byte records (feedhandler.records.TICK_DTYPE)")
        if not ticks.flags.c_contiguous or not ticks.flags.writeable:
            raise ValueError("ticks must be C-contiguous and writeable")
        cdef uint8_t[::1] raw = ticks.view(np.uint8)
        cdef size_t cap = ticks.shape[0], k
        if cap == 0:
            return 0
        with nogil:
            k = producer_fill(&self.core, <fh_tick *>&raw[0], cap)
        self._raise_failure()
        if self.core.error:
            self._raise_error()
        return k

    cdef _raise_failure(self):
        """Re-raise (once) the exception the framer stopped on."""
        cdef Framer fr = <Framer>self.framer_obj
        if fr is not None and fr.failure is not None:
            e, fr.failure = fr.failure, None
            raise e

    cdef _raise_error(self):
        if self.core.error == 1:
            raise ValueError("the decoder cannot make progress: pass a ticks array of at least "
                             f"{MIN_READ_BATCH} records")
        raise FeedError(f"internal framing error {self.core.error}")

    def __iter__(self):
        """Batches (numpy TICK_DTYPE arrays of up to 65536 records) until the end."""
        buf = np.empty(65536, dtype=TICK_DTYPE)
        while True:
            n = self.read(buf)
            if n == 0:
                return
            yield buf[:n].copy()

    def read_all(self):
        """Every remaining record in one TICK_DTYPE array (for tests and small files)."""
        parts = list(self)
        # (np.concatenate would canonicalize the overlapping-field dtype into an 80-byte one)
        out = np.empty(sum(len(p) for p in parts), dtype=TICK_DTYPE)
        pos = 0
        for p in parts:
            out[pos:pos + len(p)] = p
            pos += len(p)
        return out

    def start(self, Ring ring, int cpu=-1, *, bint latency=False, sinks=(), str wire="ts_recv",
              double spin_us=0.0):
        """Start the native producer thread (named ``fh-rx``): frame and decode into ``ring``; the thread
        closes the ring at the end. One producer per ring. ``cpu`` >= 0 pins the thread to that CPU.

        ``latency=True`` (live feeds): run to completion. The thread busy-polls the source (a core at
        100 %), frames and decodes a few frames at a time and applies the records to each of ``sinks``
        (objects with ``sink() -> (fn_address, ctx_address)``, an ``fh_sink_fn``: :func:`book_sink`)
        on this thread, before it publishes them to ``ring`` (which must then be a "drop" ring, or
        None for no fan-out). ``wire`` names the record field the wire -> book histograms start from:
        ``"ts_recv"`` (the capture clock) or ``"ts_event"`` (a sender that writes its own clock into
        the messages, as bench/bench_latency.py's does). ``spin_us`` > 0 (latency mode): busy-poll only
        while the feed has been idle for less than that, then wait in the source (woken by the next
        packet): the core is free while the feed is quiet, at the cost of a wake-up on the first packet
        after a pause; 0 (default): busy-poll always."""
        cdef cpu_set_t cpus
        cdef size_t fn, ctx
        if self.started:
            raise FeedError("already started")
        if cpu >= 0 and cpu >= (os.cpu_count() or 1):
            raise ValueError(f"cpu {cpu}: this machine has {os.cpu_count()} CPUs")
        if wire not in ("ts_recv", "ts_event"):
            raise ValueError(f"wire must be 'ts_recv' or 'ts_event', not {wire!r}")
        sinks = list(sinks)
        if latency:
            if self.core.mode != PRODUCER_LIVE:
                raise FeedError("latency mode is for live sources (a file feed is read, not waited for)")
            if ring is not None and fh_ring_policy(ring.ring) != FH_RING_DROP:
                raise ValueError("latency mode publishes to a fan-out ring that never holds up the books: "
                                 "give a Ring(..., overflow='drop') (or None)")
            if len(sinks) > PRODUCER_MAX_SINKS:
                raise ValueError(f"at most {PRODUCER_MAX_SINKS} sinks")
        elif ring is None:
            raise ValueError("the batched mode needs a ring (its consumer applies the books)")
        elif sinks:
            raise ValueError("sinks run on the receive thread: latency=True")
        if self.core.local == NULL:
            self.core.local = <fh_tick *>malloc(THREAD_BATCH * sizeof(fh_tick))
            if self.core.local == NULL:
                raise MemoryError()
        self.ring_obj = ring        # keeps the ring alive while the thread writes to it
        self.core.ring = ring.ring if ring is not None else NULL
        self.sink_objs = sinks      # keeps the sinks' owners alive while the thread calls them
        _books_busy(sinks, True)
        self.core.n_sinks = 0
        for obj in sinks:
            fn, ctx = obj.sink()
            self.core.sinks[self.core.n_sinks] = <fh_sink_fn>fn
            self.core.sink_ctx[self.core.n_sinks] = <void *>ctx
            self.core.n_sinks += 1
        self.core.wire = WIRE_TS_EVENT if wire == "ts_event" else WIRE_TS_RECV
        self.core.spin = 1 if latency else 0
        if spin_us < 0:
            raise ValueError("spin_us must be >= 0")
        self.core.spin_ns = <uint64_t>(spin_us * 1000.0)
        self.core.idle_since = 0
        self.core.src_cap = LATENCY_SRC_CAP if LATENCY_SRC_CAP < self.core.pkt_cap else self.core.pkt_cap
        cdef int rc = pthread_create(&self.thread, NULL,
                                     _producer_thread_latency if latency else _producer_thread, &self.core)
        if rc != 0:
            _books_busy(sinks, False)
            raise FeedError(f"pthread_create failed: {os.strerror(rc)}")
        self.started = True
        pthread_setname_np(self.thread, b"fh-rx")
        if cpu >= 0:
            CPU_ZERO(&cpus)
            CPU_SET(cpu, &cpus)
            rc = pthread_setaffinity_np(self.thread, sizeof(cpu_set_t), &cpus)
            if rc != 0:
                raise FeedError(f"cannot pin the receive thread to CPU {cpu}: {os.strerror(rc)}")

    def stop(self):
        """A file feed: stop at the next batch (then join()). A live feed: stop receiving; what was
        received is framed (holes given up), decoded and published, then the ring is closed."""
        atomic_store_explicit(&self.core.stop, 1, memory_order_release)
        if self.core.src_wake != NULL:
            self.core.src_wake(self.core.src_ctx)

    def join(self):
        """Wait for the producer thread; re-raises an error it stopped on as a typed exception."""
        if not self.started:
            raise FeedError("not started")
        if not self.joined:
            with nogil:
                pthread_join(self.thread, NULL)
            self.joined = True
            _books_busy(self.sink_objs, False)
        self._raise_failure()
        if self.core.error:
            raise FeedError(f"producer error {self.core.error}: "
                            + ("the decoder made no progress" if self.core.error == 1 else "the framer is stuck"))

    def latency_hist(self):
        """Wire (ts_recv) -> ring histogram (live feeds): counts per bucket (see fh/latency.h)."""
        out = np.zeros(LAT_BUCKETS, np.uint64)
        cdef uint64_t[::1] v = out
        cdef int i
        for i in range(LAT_BUCKETS):
            v[i] = self.core.lat_ring[i]
        return out

    def book_latency_hist(self, str per="message"):
        """Latency mode: wire -> book histogram (counts per bucket of fh/latency.h), one sample per
        book message (MBO and trade records: ``per="message"``) or per packet (``per="packet"``: the
        packet's last message, i.e. when the whole packet is in the books). Zeros in the batched mode
        (its consumer keeps the wire -> book histogram)."""
        if per not in ("message", "packet"):
            raise ValueError(f"per must be 'message' or 'packet', not {per!r}")
        out = np.zeros(LAT_BUCKETS, np.uint64)
        cdef uint64_t[::1] v = out
        cdef int i
        cdef uint64_t *src = &self.core.lat_book[0]
        if per == "packet":
            src = &self.core.lat_book_pkt[0]
        for i in range(LAT_BUCKETS):
            v[i] = src[i]
        return out

    @property
    def latency_mode(self):
        """True when started in latency mode (books applied on the receive thread)."""
        return bool(self.core.spin)

    def missing_ranges(self):
        """Sequence ranges given up on: [(session, first, last)] (inclusive), oldest first (MoldUDP64)."""
        get = getattr(self.framer_obj, "missing_ranges", None)
        return get() if get is not None else []

    def sessions(self):
        """Session names (MoldUDP64) or channel names (CME: "port/port") by channel index."""
        return self.framer_obj.sessions()

    def producer_stats(self):
        """The loop's own counters: records written, ring publishes."""
        return {"records": self.core.records, "publishes": self.core.publishes, "applied": self.core.applied,
                "fanout_dropped": self.core.fanout_dropped, "idle_waits": self.core.spins_slept}
