# distutils: sources = csrc/capture_afpacket.c csrc/capture_file.c csrc/net.c csrc/moldudp64.c csrc/pcap.c csrc/ring.c csrc/record.c
"""The live feed: a capture backend's native receive loop -> framing -> decoder -> ring, on one native
thread; Python only configures, starts, stops and reads counters.

Any backend plugs in through three C function addresses (see :class:`LiveFeed`):
``next(ctx, fh_pkt *pkts, size_t cap, int timeout_ms) -> n`` (frames valid until its next call),
``wake(ctx)`` (makes a waiting ``next`` return) and the ``ctx`` pointer. :class:`AfPacketSource` (this
module, csrc/capture_afpacket.c) and :class:`FileSource` (a capture file replayed at the recorded pace or
as fast as possible, csrc/capture_file.c) provide them; the cffi backends (AF_XDP, DPDK) give the
addresses of their C shims.

Contract: the producer thread is the only caller of the source's ``next`` and the framer/decoder while
it runs; counters are read as snapshots from any thread. Unlike the file Feed, a batch is published to
the ring as soon as the source has nothing more ready (never held back to fill a batch), and the stream
ends only on :meth:`LiveFeed.stop` (or a source that reports end of input).
"""
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, uintptr_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy, memset

from feedhandler.includes.msg cimport FH_MSG_TS_MASK, FH_MSG_TS_NONE, fh_decode_fn, fh_msg
from feedhandler.includes.record cimport FH_RTYPE_MBO, FH_RTYPE_TRADE, fh_tick
from feedhandler.includes.pcap cimport (
    FH_SRC_EEMPTY, FH_SRC_EFORMAT, FH_SRC_N_DAMAGE, fh_file_format_name, fh_filesrc_damage_name, fh_filesrc_stats, fh_filesrc_stats_get, fh_pkt, filesrc_damage,
)
from feedhandler.includes.capture_file cimport (
    fh_filelive, fh_filelive_close, fh_filelive_file, fh_filelive_next, fh_filelive_open, fh_filelive_stats,
    fh_filelive_stats_get, fh_filelive_wake,
)
from feedhandler.includes.net cimport FH_NET_N_REASONS, fh_net_reason_name
from feedhandler.includes.moldudp64 cimport (
    FH_MOLD_MAX_WINDOW, FH_MOLD_N_MALFORMED, FH_MOLD_SESSION_LEN, FH_MSG_RECORD,
    fh_framer, fh_framer_config, fh_framer_finish, fh_framer_free, fh_framer_input_done,
    fh_framer_missing_copy, fh_framer_n_sessions, fh_framer_new, fh_framer_run, fh_framer_session,
    fh_framer_set_input, fh_framer_stats, fh_framer_stats_get, fh_missing_range, fh_mold_malformed_name,
)
from feedhandler.includes.ring cimport fh_ring, fh_ring_claim, fh_ring_close, fh_ring_publish, fh_ring_push_for
from feedhandler.ring cimport Ring
from feedhandler.protocols.itch50 cimport Itch50Decoder
from feedhandler.capture.live.capture_afpacket cimport (
    fh_afp, fh_afp_close, fh_afp_config, fh_afp_hw_enabled, fh_afp_ifindex, fh_afp_next, fh_afp_open,
    fh_afp_stats, fh_afp_stats_get, fh_afp_wake,
)

import ipaddress
import os
import time

import numpy as np

from feedhandler.errors import CaptureError, CaptureFormatError, FeedError

cdef extern from "<pthread.h>" nogil:
    ctypedef unsigned long pthread_t
    int pthread_create(pthread_t *t, const void *attr, void *(*fn)(void *) noexcept nogil, void *arg)
    int pthread_setname_np(pthread_t t, const char *name)

cdef extern from "<sched.h>" nogil:
    ctypedef struct cpu_set_t:
        pass
    void CPU_ZERO(cpu_set_t *s)
    void CPU_SET(int cpu, cpu_set_t *s)
    int pthread_setaffinity_np(pthread_t t, size_t size, const cpu_set_t *s)
    int pthread_join(pthread_t t, void **ret)

cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    cdef struct timespec:
        time_t tv_sec
        long tv_nsec
    int clock_gettime(int clk, timespec *ts)
    enum:
        CLOCK_REALTIME

cdef extern from "<stdatomic.h>" nogil:
    int atomic_load_explicit(int *p, int order)
    void atomic_store_explicit(int *p, int v, int order)
    enum:
        memory_order_relaxed
        memory_order_acquire
        memory_order_release

ctypedef size_t (*live_next_fn)(void *src, fh_pkt *pkts, size_t cap, int timeout_ms) noexcept nogil
ctypedef void (*live_wake_fn)(void *src) noexcept nogil

# latency histograms: the log-linear buckets of fh/latency.h (shared with engine.book's consumer)
from feedhandler.includes.latency cimport FH_LAT_SUB as LAT_SUB, FH_LAT_BUCKETS as LAT_BUCKETS
from feedhandler.includes.latency cimport fh_lat_bucket as _lat_bucket, fh_lat_bucket_lower_ns
from feedhandler.includes.latency cimport fh_now_realtime_ns as _now_ns

cdef enum:
    PKT_BATCH = 4096            # frames per source call
    THREAD_BATCH = 8192         # records per producer step
    DIRECT_MIN = 256            # ring slots: write the ring in place when a claim gives at least this many
    PUSH_TIMEOUT_NS = 100000000 # ns: a full ring is re-checked against stop() this often
    IDLE_WAIT_MS = 50           # ms: a source waits this long for traffic before stop() is re-checked

DEFAULT_REORDER_WINDOW = 64     # packets


cdef struct live_core:
    live_next_fn src_next
    live_wake_fn src_wake
    void *src_ctx
    fh_framer *fr
    fh_pkt *pkts
    size_t pkt_cap
    const fh_msg *msgs
    size_t n_msgs
    size_t i_msgs
    fh_decode_fn fn
    void *ctx
    int stop                    # set by LiveFeed.stop() (atomic)
    int src_eof
    int finished
    int error
    uint64_t records
    uint64_t publishes
    fh_ring *ring
    fh_tick *local
    uint64_t lat_ring[LAT_BUCKETS]   # wire (ts_recv) -> published in the ring, ns, log-linear buckets




cdef extern from *:
    int __builtin_clzll(unsigned long long) nogil


def lat_bucket_lower_ns(int b):
    """Lower bound (ns) of latency histogram bucket ``b``."""
    return fh_lat_bucket_lower_ns(<size_t>b)


def lat_buckets_of(ns):
    """Bucket indices of an array of latencies (ns), the same buckets as the native histogram."""
    ns = np.asarray(ns, dtype=np.uint64)
    out = ns.astype(np.int64)
    big = ns >= LAT_SUB
    if big.any():
        v = ns[big]
        msb = np.floor(np.log2(v.astype(np.float64))).astype(np.int64)
        # float log2 can round up just below a power of two: fix msb exactly
        msb -= (np.left_shift(np.uint64(1), msb.astype(np.uint64)) > v).astype(np.int64)
        sub = np.right_shift(v, (msb - 3).astype(np.uint64)).astype(np.int64) & (LAT_SUB - 1)
        out[big] = (msb - 2) * LAT_SUB + sub
    return out


LATENCY_BUCKETS = LAT_BUCKETS


cdef inline void _lat_record(live_core *c, const fh_tick *t, size_t k) noexcept nogil:
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


cdef size_t live_fill(live_core *c, fh_tick *out, size_t cap) noexcept nogil:
    """Frames and decodes what the source has ready into out[0..cap); returns as soon as the source
    has nothing more ready (k > 0) or after one bounded idle wait (k == 0)."""
    cdef size_t k = 0, j, consumed, n_out, n
    cdef const fh_msg *m
    while k < cap:
        if c.i_msgs < c.n_msgs:
            m = &c.msgs[c.i_msgs]
            if m.flags & FH_MSG_RECORD:
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
                    c.error = 1
                    c.finished = 1
                break
            continue
        if c.finished:
            break
        c.i_msgs = 0
        c.n_msgs = fh_framer_run(c.fr, &c.msgs)
        if c.n_msgs:
            continue
        if not fh_framer_input_done(c.fr):
            c.error = 2
            c.finished = 1
            break
        if c.src_eof:
            c.n_msgs = fh_framer_finish(c.fr, &c.msgs)
            if c.n_msgs == 0:
                c.finished = 1
            continue
        if atomic_load_explicit(&c.stop, memory_order_acquire):
            c.src_eof = 1
            continue
        n = c.src_next(c.src_ctx, c.pkts, c.pkt_cap, 0 if k else IDLE_WAIT_MS)
        if n == 0:
            break               # nothing ready: publish what we have (or report idle)
        fh_framer_set_input(c.fr, c.pkts, n)
    c.records += k
    return k


cdef void *_producer(void *arg) noexcept nogil:
    cdef live_core *c = <live_core *>arg
    cdef fh_tick *first = NULL
    cdef uint64_t n, k, done
    while True:
        n = fh_ring_claim(c.ring, THREAD_BATCH, &first)
        if n >= DIRECT_MIN:
            k = live_fill(c, first, n)
            if k:
                _lat_record(c, first, k)
                fh_ring_publish(c.ring, k)
                c.publishes += 1
        else:
            k = live_fill(c, c.local, THREAD_BATCH)
            if k:
                _lat_record(c, c.local, k)
                done = 0
                # the consumer drains the ring until it is closed, so pushing on after stop() is safe
                while done < k:
                    done += fh_ring_push_for(c.ring, c.local + done, k - done, PUSH_TIMEOUT_NS)
                c.publishes += 1
        if c.finished:
            break
    fh_ring_close(c.ring)
    return NULL


cdef dict _framer_stats_dict(fh_framer *fr):
    cdef const fh_framer_stats *f = fh_framer_stats_get(fr)
    rejects = {fh_net_reason_name(i).decode(): f.net_reject[i] for i in range(1, FH_NET_N_REASONS)}
    malformed = {fh_mold_malformed_name(i).decode(): f.malformed[i] for i in range(FH_MOLD_N_MALFORMED)}
    return {
        "packets": f.packets, "udp_datagrams": f.udp_datagrams, "filtered": f.filtered,
        "link_rejects": rejects, "moldudp64_packets": f.mold_packets, "heartbeats": f.heartbeats,
        "end_of_session": f.end_of_session, "messages": f.messages, "duplicates": f.duplicate_messages,
        "duplicate_packets": f.duplicate_packets, "out_of_order": f.out_of_order, "reordered": f.reordered,
        "gaps": f.gaps, "gaps_filled": f.gaps_filled, "gaps_lost": f.gaps_lost,
        "filled_messages": f.filled_messages, "lost_messages": f.lost_messages, "resets": f.resets,
        "after_end_of_session": f.after_end_of_session, "filtered_sessions": f.filtered_sessions,
        "malformed": malformed, "held_max": f.held_max, "held_slots": f.held_slots,
        "zero_sequence_packets": f.zero_sequence_packets,
        "hold_failed": f.hold_failed, "gap_records": f.records,
    }


cdef class LiveFeed:
    """A live capture source decoded into normalized tick records, pushed into a :class:`Ring` by a
    native thread.

    Parameters
    ----------
    source : object
        A capture source with ``native() -> (next_addr, wake_addr, ctx_addr)`` (C function addresses
        of the signatures in this module's docstring) that stays open while the feed runs.
    protocol : str or None
        ``"itch50"`` (default) or None (framing only).
    date, midnight_ns : optional
        The trading day for ITCH ``ts_event`` (default: today in America/New_York).
    reorder_window : int
        MoldUDP64 packets held while a hole waits to be filled (by the other line of an A/B pair or
        by retransmission); 0..4096.
    udp_port : int, optional
        Keep only UDP datagrams to this port.
    group : str, optional
        Keep only datagrams to this IPv4 destination (the multicast group).
    publisher_id : int
        DBN publisher id written into records.
    """
    cdef live_core core
    cdef pthread_t thread
    cdef bint started, joined
    cdef object dec, src_obj, ring_obj
    cdef readonly object midnight_ns

    def __cinit__(self):
        memset(&self.core, 0, sizeof(self.core))

    def __init__(self, source, protocol="itch50", *, date=None, midnight_ns=None,
                 reorder_window=DEFAULT_REORDER_WINDOW, udp_port=None, group=None, publisher_id=0,
                 sequencing=True):
        cdef fh_framer_config cfg
        if not 0 <= int(reorder_window) <= FH_MOLD_MAX_WINDOW:
            raise ValueError(f"reorder_window must be 0..{FH_MOLD_MAX_WINDOW} packets, not {reorder_window}")
        if protocol not in ("itch50", None):
            raise ValueError(f"unknown protocol {protocol!r}: expected 'itch50' or None")
        memset(&cfg, 0, sizeof(cfg))
        cfg.reorder_window = <uint32_t>int(reorder_window)
        cfg.publisher_id = <uint16_t>int(publisher_id)
        cfg.no_sequencing = 0 if sequencing else 1
        if udp_port is not None:
            if not 0 < int(udp_port) < 65536:
                raise ValueError(f"udp_port must be 1..65535, not {udp_port}")
            cfg.dst_port = <uint16_t>int(udp_port)
        if group is not None:
            cfg.dst_ip = <uint32_t>int(ipaddress.IPv4Address(group))
        next_addr, wake_addr, ctx_addr = source.native()
        if not next_addr or not ctx_addr:
            raise ValueError("the source is not open")
        self.src_obj = source
        self.core.src_next = <live_next_fn><uintptr_t>next_addr
        self.core.src_wake = <live_wake_fn><uintptr_t>wake_addr if wake_addr else NULL
        self.core.src_ctx = <void *><uintptr_t>ctx_addr
        self.core.fr = fh_framer_new(&cfg)
        self.core.pkts = <fh_pkt *>calloc(PKT_BATCH, sizeof(fh_pkt))
        self.core.pkt_cap = PKT_BATCH
        self.core.local = <fh_tick *>malloc(THREAD_BATCH * sizeof(fh_tick))
        if self.core.fr == NULL or self.core.pkts == NULL or self.core.local == NULL:
            raise MemoryError()
        from feedhandler.pipeline import midnight_ns_for_date, midnight_ns_for_ts
        if midnight_ns is not None:
            self.midnight_ns = int(midnight_ns)
        elif date is not None:
            self.midnight_ns = midnight_ns_for_date(date)
        else:
            self.midnight_ns = midnight_ns_for_ts(time.time_ns())
        if protocol == "itch50":
            self.dec = Itch50Decoder(self.midnight_ns, publisher_id, 0)
            self.core.fn = (<Itch50Decoder>self.dec).fn
            self.core.ctx = (<Itch50Decoder>self.dec).ctx

    def __dealloc__(self):
        if self.started and not self.joined:
            atomic_store_explicit(&self.core.stop, 1, memory_order_release)
            if self.core.src_wake != NULL:
                self.core.src_wake(self.core.src_ctx)
            with nogil:
                pthread_join(self.thread, NULL)
        if self.core.fr != NULL:
            fh_framer_free(self.core.fr)
        free(self.core.pkts)
        free(self.core.local)

    @property
    def decoder(self):
        return self.dec

    @property
    def finished(self):
        return bool(self.core.finished)

    def start(self, Ring ring not None, int cpu=-1):
        """Start the receive thread (named ``fh-rx``); it closes ``ring`` when the feed ends (after
        :meth:`stop`). ``cpu`` >= 0 pins it to that CPU."""
        cdef cpu_set_t cpus
        if self.started:
            raise FeedError("already started")
        if cpu >= 0 and cpu >= (os.cpu_count() or 1):
            raise ValueError(f"cpu {cpu}: this machine has {os.cpu_count()} CPUs")
        self.ring_obj = ring
        self.core.ring = ring.ring
        cdef int rc = pthread_create(&self.thread, NULL, _producer, &self.core)
        if rc != 0:
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
        """Stop receiving: what was received is framed (holes given up), decoded and published, then
        the ring is closed. Returns at once; :meth:`join` waits."""
        atomic_store_explicit(&self.core.stop, 1, memory_order_release)
        if self.core.src_wake != NULL:
            self.core.src_wake(self.core.src_ctx)

    def join(self):
        if not self.started:
            raise FeedError("not started")
        if not self.joined:
            with nogil:
                pthread_join(self.thread, NULL)
            self.joined = True
        if self.core.error:
            raise FeedError(f"live pipeline error {self.core.error}")

    def latency_hist(self):
        """Wire (ts_recv) -> ring histogram: counts per bucket (see :func:`lat_bucket_lower_ns`)."""
        out = np.zeros(LAT_BUCKETS, np.uint64)
        cdef uint64_t[::1] v = out
        cdef int i
        for i in range(LAT_BUCKETS):
            v[i] = self.core.lat_ring[i]
        return out

    def missing_ranges(self):
        cdef size_t n = fh_framer_missing_copy(self.core.fr, NULL, 0)
        cdef fh_missing_range *buf
        out = []
        if n == 0:
            return out
        buf = <fh_missing_range *>malloc(n * sizeof(fh_missing_range))
        if buf == NULL:
            raise MemoryError()
        try:
            n = min(n, fh_framer_missing_copy(self.core.fr, buf, n))
            for i in range(n):
                out.append((PyBytes_FromStringAndSize(buf[i].session, FH_MOLD_SESSION_LEN).decode("latin-1"),
                            buf[i].first, buf[i].last))
        finally:
            free(buf)
        return out

    def sessions(self):
        cdef size_t n = fh_framer_n_sessions(self.core.fr)
        return [PyBytes_FromStringAndSize(fh_framer_session(self.core.fr, <uint16_t>i), FH_MOLD_SESSION_LEN)
                .decode("latin-1") for i in range(n)]

    def stats(self):
        """Snapshot of the framer, decoder and pipeline counters (safe while running)."""
        d = _framer_stats_dict(self.core.fr)
        d["sessions"] = self.sessions()
        d["records"] = self.core.records
        d["publishes"] = self.core.publishes
        d["decoder"] = self.dec.counters() if self.dec is not None else {}
        return d


cdef size_t _afp_next(void *s, fh_pkt *pkts, size_t cap, int timeout_ms) noexcept nogil:
    return fh_afp_next(<fh_afp *>s, pkts, cap, timeout_ms)


cdef void _afp_wake(void *s) noexcept nogil:
    fh_afp_wake(<fh_afp *>s)


cdef class AfPacketSource:
    """AF_PACKET TPACKET_V3 capture on one interface (csrc/capture_afpacket.c).

    Parameters
    ----------
    iface : str
        Interface name.
    block_size : int
        Bytes per ring block (power of two); ``block_count`` blocks make the ring.
    retire_ms : int
        A partly filled block is handed over after this many ms (latency bound at low rates).
    promisc : bool
        Promiscuous mode while open.
    hw_timestamps : bool
        Ask the NIC for hardware receive stamps (SIOCSHWTSTAMP); software stamps otherwise.

    Raises
    ------
    feedhandler.errors.CaptureError
        With errno and a sentence: no such interface, no privilege (CAP_NET_RAW), ring too big.
    """
    cdef fh_afp *s
    cdef readonly str iface

    def __init__(self, str iface, *, block_size=1 << 16, block_count=1024, frame_size=2048, retire_ms=1,
                 snaplen=0, promisc=False, hw_timestamps=False, fanout_id=0, ignore_outgoing=False):
        cdef fh_afp_config cfg
        cdef char err[512]
        cdef bytes b = iface.encode()
        memset(&cfg, 0, sizeof(cfg))
        cfg.iface = b
        cfg.block_size = block_size
        cfg.block_count = block_count
        cfg.frame_size = frame_size
        cfg.retire_ms = retire_ms
        cfg.snaplen = snaplen
        cfg.promisc = bool(promisc)
        cfg.hw_timestamps = bool(hw_timestamps)
        cfg.fanout_id = fanout_id
        cfg.ignore_outgoing = bool(ignore_outgoing)
        err[0] = 0
        cdef int rc = fh_afp_open(&self.s, &cfg, err, sizeof(err))
        if rc != 0:
            raise CaptureError(-rc, err.decode("utf-8", "replace"), iface)
        self.iface = iface

    def __dealloc__(self):
        if self.s != NULL:
            fh_afp_close(self.s)
            self.s = NULL

    def close(self):
        """Unmap the ring and close the socket (only once the LiveFeed using it has been joined)."""
        if self.s != NULL:
            fh_afp_close(self.s)
            self.s = NULL

    def native(self):
        if self.s == NULL:
            return (0, 0, 0)
        return (<uintptr_t>_afp_next, <uintptr_t>_afp_wake, <uintptr_t>self.s)

    @property
    def hw_timestamps(self):
        return self.s != NULL and bool(fh_afp_hw_enabled(self.s))

    def read(self, size_t cap=4096, int timeout_ms=0):
        """Test/diagnostic helper: the next frames as a list of (ts_ns, ts_flags, bytes). Not for the data
        path (one Python object per frame)."""
        cdef fh_pkt *pkts
        if self.s == NULL:
            raise ValueError("closed")
        pkts = <fh_pkt *>calloc(cap, sizeof(fh_pkt))
        if pkts == NULL:
            raise MemoryError()
        try:
            with nogil:
                n = fh_afp_next(self.s, pkts, cap, timeout_ms)
            return [(pkts[i].ts_ns, pkts[i].flags, PyBytes_FromStringAndSize(<const char *>pkts[i].data,
                     pkts[i].caplen)) for i in range(n)]
        finally:
            free(pkts)

    def stats(self):
        cdef fh_afp_stats st
        if self.s == NULL:
            return {}
        fh_afp_stats_get(self.s, &st)
        return {"packets": st.packets, "bytes": st.bytes, "blocks": st.blocks, "polls": st.polls,
                "idle": st.idle, "kernel_packets": st.kernel_packets, "kernel_drops": st.kernel_drops,
                "kernel_freezes": st.kernel_freezes, "truncated": st.truncated, "ts_hw": st.ts_hw,
                "ts_sw": st.ts_sw, "ts_none": st.ts_none}


cdef size_t _file_next(void *s, fh_pkt *pkts, size_t cap, int timeout_ms) noexcept nogil:
    return fh_filelive_next(s, pkts, cap, timeout_ms)


cdef void _file_wake(void *s) noexcept nogil:
    fh_filelive_wake(s)


cdef class FileSource:
    """A capture file (pcap, pcapng, NASDAQ BinaryFILE, gzip) replayed as a live source: the ``pcap``
    backend of ``feedhandler run`` (csrc/capture_file.c).

    Parameters
    ----------
    path : str
    speed : float
        0 (default): as fast as the pipeline takes it, ``ts_recv`` = the capture's stamps (the records equal
        ``feedhandler replay``'s). > 0: each frame is released when its recorded time comes, scaled
        (1.0 = the recorded pace, 10 = ten times faster), and stamped with that schedule on the realtime
        clock (user-space clock flag), so latencies read as on a live feed.

    Raises
    ------
    feedhandler.errors.CaptureError
        The file cannot be opened or is not a capture (with the reason).
    """
    cdef fh_filelive *s
    cdef readonly str path
    cdef readonly double speed

    def __init__(self, path, *, double speed=0.0):
        cdef char err[512]
        cdef bytes b = os.fsencode(path)
        err[0] = 0
        cdef int rc = fh_filelive_open(&self.s, b, speed, err, sizeof(err))
        if rc != 0:
            msg = err.decode("utf-8", "replace")
            if rc == FH_SRC_EFORMAT or rc == FH_SRC_EEMPTY:
                raise CaptureFormatError(f"{os.fspath(path)}: {msg}")
            if -10000 < rc < 0:
                raise CaptureError(-rc, msg, os.fspath(path))
            raise CaptureError(f"{os.fspath(path)}: {msg}")
        self.path = str(path)
        self.speed = speed

    def __dealloc__(self):
        if self.s != NULL:
            fh_filelive_close(self.s)
            self.s = NULL

    def close(self):
        """Close the file (only once the LiveFeed using it has been joined)."""
        if self.s != NULL:
            fh_filelive_close(self.s)
            self.s = NULL

    def native(self):
        if self.s == NULL:
            return (0, 0, 0)
        return (<uintptr_t>_file_next, <uintptr_t>_file_wake, <uintptr_t>self.s)

    @property
    def eof(self):
        """True once every frame of the file was handed to the pipeline."""
        cdef fh_filelive_stats st
        if self.s == NULL:
            return True
        fh_filelive_stats_get(self.s, &st)
        return bool(st.eof)

    def stats(self):
        cdef fh_filelive_stats st
        cdef const fh_filesrc_stats *f
        if self.s == NULL:
            return {}
        fh_filelive_stats_get(self.s, &st)
        f = fh_filesrc_stats_get(fh_filelive_file(self.s))
        damage = {fh_filesrc_damage_name(i).decode(): f.damage[i] for i in range(FH_SRC_N_DAMAGE)}
        paced = self.speed > 0
        return {"packets": st.packets, "bytes": st.bytes, "batches": st.batches, "eof": bool(st.eof),
                "speed": self.speed, "waits": st.waits, "behind_max_ns": st.behind_ns,
                "format": fh_file_format_name(f.format).decode(), "gzip": bool(f.gzip),
                "file_damage": {k: v for k, v in damage.items() if v},
                **{k: v for k, v in filesrc_damage(f).items() if k != "file_damage"},
                "ts_sw": 0 if paced else st.packets - st.unstamped,
                "ts_user": st.packets - st.unstamped if paced else 0, "unstamped": st.unstamped}
