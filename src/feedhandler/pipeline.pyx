# distutils: sources = csrc/pcap.c csrc/net.c csrc/moldudp64.c csrc/ring.c csrc/record.c
"""The Feed: a capture file in, normalized tick records out (into numpy batches or a Ring).

One packet's way: ``fh_filesrc`` (csrc/pcap.c: pcap / pcapng / BinaryFILE, gzip, format from the
bytes) -> ``fh_framer`` (csrc/moldudp64.c: Ethernet/VLAN/IPv4/UDP via csrc/net.c, MoldUDP64
sequencing with a reorder window, gap records) -> the protocol decoder (``Itch50Decoder.fn``) ->
records. All of it runs in one ``nogil`` loop (:c:func:`feed_fill`); Python is entered once per
:meth:`Feed.read` call, or never while the native producer thread started by :meth:`Feed.start` runs.

Time: ITCH timestamps are nanoseconds since midnight (US/Eastern). ``ts_event = midnight_ns + stamp``
where ``midnight_ns`` is, in order of precedence, the ``midnight_ns`` argument, midnight of ``date`` in
America/New_York, midnight (America/New_York) of the day of the first captured packet, or 0 for a
BinaryFILE without a date (so ``ts_event`` is then nanoseconds since midnight).
"""
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy, memset

from feedhandler.includes.msg cimport fh_decode_fn, fh_msg
from feedhandler.includes.record cimport fh_tick
from feedhandler.includes.pcap cimport (
    FH_SRC_EEMPTY, FH_SRC_EFORMAT, FH_SRC_N_DAMAGE, FH_PKT_TS_NONE, fh_file_format_name, filesrc_damage,
    fh_filesrc, fh_filesrc_close, fh_filesrc_damage_name, fh_filesrc_next, fh_filesrc_open,
    fh_filesrc_stats, fh_filesrc_stats_get, fh_pkt,
)
from feedhandler.includes.net cimport FH_NET_N_REASONS, fh_net_reason_name
from feedhandler.includes.moldudp64 cimport (
    FH_MOLD_MAX_FILTER, FH_MOLD_MAX_WINDOW, FH_MOLD_N_MALFORMED, FH_MOLD_SESSION_LEN, FH_MSG_RECORD,
    fh_framer, fh_framer_config, fh_framer_finish, fh_framer_free, fh_framer_input_done,
    fh_framer_missing_copy, fh_framer_n_sessions, fh_framer_new, fh_framer_run, fh_framer_session,
    fh_framer_set_input, fh_framer_stats, fh_framer_stats_get, fh_missing_range, fh_mold_malformed_name,
)
from feedhandler.includes.ring cimport (
    fh_ring, fh_ring_claim, fh_ring_close, fh_ring_publish, fh_ring_push_for,
)
from feedhandler.ring cimport Ring
from feedhandler.protocols.itch50 cimport Itch50Decoder

import ipaddress
import os

import numpy as np

from feedhandler.errors import CaptureError, CaptureFormatError, FeedError
from feedhandler.records import TICK_DTYPE

cdef extern from "<pthread.h>" nogil:
    int pthread_create(pthread_t *t, const void *attr, void *(*fn)(void *) noexcept nogil, void *arg)
    int pthread_join(pthread_t t, void **ret)

cdef extern from "<stdatomic.h>" nogil:
    # the stop flag is the only value two threads write/read outside counters
    int atomic_load_explicit(int *p, int order)
    void atomic_store_explicit(int *p, int v, int order)
    enum:
        memory_order_relaxed
        memory_order_acquire
        memory_order_release

cdef enum:
    PKT_BATCH = 4096            # frames per source read (fh_pkt array)
    THREAD_BATCH = 8192         # records per producer-thread step
    DIRECT_MIN = 256            # ring slots: fill the ring in place when a claim returns at least this many
    PUSH_TIMEOUT_NS = 100000000 # ns: a full ring is re-checked against stop() this often

DEFAULT_REORDER_WINDOW = 64     # packets


cdef size_t _filesrc_next(void *src, fh_pkt *pkts, size_t cap) noexcept nogil:
    return fh_filesrc_next(<fh_filesrc *>src, pkts, cap)


cdef size_t feed_fill(feed_core *c, fh_tick *out, size_t cap) noexcept nogil:
    """Writes up to cap records: frames and decodes until out is full or the input ends."""
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
                    c.error = 1     # a whole batch of room and still no progress: cap too small
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
            c.error = 2             # framer made no progress (cannot happen: see moldudp64.c)
            c.finished = 1
            break
        if not c.src_eof:
            n = c.src_next(c.src_ctx, c.pkts, c.pkt_cap)
            if n == 0:
                c.src_eof = 1
            else:
                fh_framer_set_input(c.fr, c.pkts, n)
            continue
        c.n_msgs = fh_framer_finish(c.fr, &c.msgs)
        if c.n_msgs == 0:
            c.finished = 1
    c.records += k
    return k


cdef void *_producer(void *arg) noexcept nogil:
    """Producer thread: fill ring slots in place (or push a local batch at the wrap), close at the end."""
    cdef feed_core *c = <feed_core *>arg
    cdef fh_tick *first = NULL
    cdef uint64_t n, k, done
    while not atomic_load_explicit(&c.stop, memory_order_acquire):
        n = fh_ring_claim(c.ring, THREAD_BATCH, &first)
        if n >= DIRECT_MIN:
            k = feed_fill(c, first, n)
            fh_ring_publish(c.ring, k)
        else:
            k = feed_fill(c, c.local, THREAD_BATCH)
            done = 0
            while done < k and not atomic_load_explicit(&c.stop, memory_order_acquire):
                done += fh_ring_push_for(c.ring, c.local + done, k - done, PUSH_TIMEOUT_NS)
        if k == 0 and c.finished:
            break
    fh_ring_close(c.ring)
    return NULL


def _midnight_ny_ns(year, month, day):
    from datetime import datetime
    from zoneinfo import ZoneInfo
    return int(datetime(year, month, day, tzinfo=ZoneInfo("America/New_York")).timestamp()) * 1_000_000_000


def midnight_ns_for_date(date):
    """Midnight of ``date`` ("YYYY-MM-DD" or a datetime.date) in America/New_York, ns since the epoch."""
    import datetime as _dt
    if isinstance(date, str):
        date = _dt.date.fromisoformat(date)
    return _midnight_ny_ns(date.year, date.month, date.day)


def midnight_ns_for_ts(ts_ns):
    """Midnight (America/New_York) of the trading day that contains ``ts_ns`` (ns since the epoch)."""
    from datetime import datetime
    from zoneinfo import ZoneInfo
    d = datetime.fromtimestamp(ts_ns // 1_000_000_000, tz=ZoneInfo("America/New_York")).date()
    return _midnight_ny_ns(d.year, d.month, d.day)


cdef class Feed:
    """A capture file (pcap, pcapng, NASDAQ BinaryFILE; gzip or not; format from the bytes) decoded into
    normalized tick records.

    Parameters
    ----------
    path : str or os.PathLike
        The capture file.
    protocol : str or None
        ``"itch50"`` (default), or None to frame and sequence only (records are then gap records).
    date : str, optional
        Trading day "YYYY-MM-DD"; ``ts_event`` = its midnight in America/New_York + the ITCH stamp.
    midnight_ns : int, optional
        Overrides ``date``: ns since the epoch of the trading day's midnight.
    reorder_window : int
        MoldUDP64 packets held while waiting for a hole to fill (0..4096); a hole not filled when the
        window overflows (or at end of input) is reported lost.
    sequencing : bool
        False: no MoldUDP64 sequencing (every message in arrival order, numbered on per session), for
        streams whose sequence numbers carry nothing (e.g. all 0; ``stats()["zero_sequence_packets"]``).
    reorder_window_messages : int, optional
        Also bound the window by the messages held (whichever bound is hit first).
    udp_port : int, optional
        Keep only UDP datagrams to this destination port.
    group : str, optional
        Keep only UDP datagrams to this destination IPv4 address (multicast group).
    channel_filter : iterable of int or str, optional
        Keep only these channels: channel indices (sessions numbered in order of appearance) or
        MoldUDP64 session names.
    publisher_id : int
        DBN publisher id written into every record.
    decoder : object, optional
        A ready ``Itch50Decoder`` to use instead of a new one (its counters then include this feed's).

    Notes
    -----
    Either :meth:`read` or :meth:`start` drives a feed, never both. Records come out in sequence order
    with ``fh_gap`` records (rtype 0xE0) at the position where a gap opened, was filled, was lost, or
    the session ended/restarted.
    """
    def __cinit__(self):
        memset(&self.core, 0, sizeof(self.core))

    def __init__(self, path, protocol="itch50", *, date=None, midnight_ns=None,
                 reorder_window=DEFAULT_REORDER_WINDOW, reorder_window_messages=None, udp_port=None,
                 group=None, channel_filter=None, publisher_id=0, decoder=None, sequencing=True):
        cdef char err[512]
        cdef int rc
        cdef fh_framer_config cfg
        cdef bytes bpath = os.fsencode(path)
        cdef size_t n
        cdef uint64_t first_ts = 0
        self.path = path
        if not 0 <= int(reorder_window) <= FH_MOLD_MAX_WINDOW:
            raise ValueError(f"reorder_window must be 0..{FH_MOLD_MAX_WINDOW} packets, not {reorder_window}")
        if protocol not in ("itch50", None):
            raise ValueError(f"unknown protocol {protocol!r}: expected 'itch50' or None")
        memset(&cfg, 0, sizeof(cfg))
        cfg.reorder_window = <uint32_t>int(reorder_window)
        if reorder_window_messages is not None:
            if not 0 < int(reorder_window_messages) < 2**32:
                raise ValueError(f"reorder_window_messages must be 1..2**32-1, not {reorder_window_messages}")
            cfg.reorder_window_msgs = <uint32_t>int(reorder_window_messages)
        cfg.publisher_id = <uint16_t>int(publisher_id)
        cfg.no_sequencing = 0 if sequencing else 1
        if udp_port is not None:
            if not 0 < int(udp_port) < 65536:
                raise ValueError(f"udp_port must be 1..65535, not {udp_port}")
            cfg.dst_port = <uint16_t>int(udp_port)
        if group is not None:
            cfg.dst_ip = <uint32_t>int(ipaddress.IPv4Address(group))
        if channel_filter is not None:
            names = []
            for ch in channel_filter:
                if isinstance(ch, (str, bytes)):
                    b = ch.encode("ascii") if isinstance(ch, str) else bytes(ch)
                    if len(b) > FH_MOLD_SESSION_LEN:
                        raise ValueError(f"a MoldUDP64 session name has at most 10 bytes: {ch!r}")
                    names.append(b.ljust(FH_MOLD_SESSION_LEN, b" "))
                else:
                    if not 0 <= int(ch) < 64:
                        raise ValueError(f"channel indices are 0..63, not {ch}")
                    cfg.channel_mask |= (<uint64_t>1) << int(ch)
            if len(names) > FH_MOLD_MAX_FILTER:
                raise ValueError(f"at most {FH_MOLD_MAX_FILTER} session names in channel_filter")
            for i, b in enumerate(names):
                memcpy(cfg.session_filter[i], <const char *>b, FH_MOLD_SESSION_LEN)
            cfg.n_session_filter = len(names)
            if cfg.channel_mask == 0 and not names:
                raise ValueError("channel_filter is empty: nothing would be kept")

        rc = fh_filesrc_open(&self.src, bpath, err, sizeof(err))
        if rc != 0:
            msg = err.decode("utf-8", "replace")
            if rc == FH_SRC_EFORMAT or rc == FH_SRC_EEMPTY:
                raise CaptureFormatError(f"{os.fspath(path)}: {msg}")
            if rc < 0 and rc > -10000:
                raise CaptureError(-rc, msg, os.fspath(path))
            raise CaptureError(msg)
        self.core.src_next = _filesrc_next
        self.core.src_ctx = self.src
        self.core.fr = fh_framer_new(&cfg)
        self.core.pkts = <fh_pkt *>calloc(PKT_BATCH, sizeof(fh_pkt))
        self.core.pkt_cap = PKT_BATCH
        if self.core.fr == NULL or self.core.pkts == NULL:
            raise MemoryError()
        # The first batch: it also gives the first capture time for the default trading day.
        n = fh_filesrc_next(self.src, self.core.pkts, PKT_BATCH)
        if n == 0:
            self.core.src_eof = 1
        else:
            fh_framer_set_input(self.core.fr, self.core.pkts, n)
            for i in range(n):
                if self.core.pkts[i].flags != FH_PKT_TS_NONE:
                    first_ts = self.core.pkts[i].ts_ns
                    break
        if midnight_ns is not None:
            self._midnight_ns = int(midnight_ns)
        elif date is not None:
            self._midnight_ns = midnight_ns_for_date(date)
        elif first_ts:
            # (a capture clock before 1970-01-02 New York time is no trading day: keep 0)
            self._midnight_ns = max(0, midnight_ns_for_ts(first_ts))
        else:
            self._midnight_ns = 0
        if not 0 <= self._midnight_ns < 2**64:
            raise ValueError(f"midnight_ns must be 0..2**64-1 ns since the epoch, not {self._midnight_ns}")
        if decoder is not None:
            self._set_decoder(decoder)
        elif protocol == "itch50":
            from feedhandler.protocols.itch50 import Itch50Decoder
            self._set_decoder(Itch50Decoder(self._midnight_ns, publisher_id, 0))

    cdef _set_decoder(self, decoder):
        cdef Itch50Decoder d = <Itch50Decoder?>decoder
        self.dec = d
        self.core.fn = d.fn
        self.core.ctx = d.ctx

    def __dealloc__(self):
        if self.started and not self.joined:
            atomic_store_explicit(&self.core.stop, 1, memory_order_release)
            with nogil:
                pthread_join(self.thread, NULL)
        if self.core.fr != NULL:
            fh_framer_free(self.core.fr)
        if self.src != NULL:
            fh_filesrc_close(self.src)
        free(self.core.pkts)
        free(self.core.local)

    @property
    def midnight_ns(self):
        """ns since the epoch of the trading day's midnight used for ``ts_event``."""
        return self._midnight_ns

    @property
    def decoder(self):
        """The protocol decoder (None when framing only)."""
        return self.dec

    def read(self, ticks):
        """Fill ``ticks`` (a C-contiguous numpy array of TICK_DTYPE / any 64-byte record dtype) with
        the next records. Returns how many were written; 0 at the end of the input."""
        if self.started:
            raise FeedError("this Feed is driven by its producer thread (start()); read() is not allowed")
        if not isinstance(ticks, np.ndarray) or ticks.dtype.itemsize != 64 or ticks.ndim != 1:
            raise TypeError("ticks must be a 1-d numpy array of 64-byte records (feedhandler.records.TICK_DTYPE)")
        if not ticks.flags.c_contiguous or not ticks.flags.writeable:
            raise ValueError("ticks must be C-contiguous and writeable")
        cdef uint8_t[::1] raw = ticks.view(np.uint8)
        cdef size_t cap = ticks.shape[0], k
        if cap == 0:
            return 0
        with nogil:
            k = feed_fill(&self.core, <fh_tick *>&raw[0], cap)
        if self.core.error:
            self._raise_error()
        return k

    cdef _raise_error(self):
        if self.core.error == 1:
            raise ValueError("the decoder cannot make progress: pass a ticks array of at least 64 records")
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

    def start(self, Ring ring not None):
        """Start the native producer thread: read, frame and decode into ``ring``; the thread closes the
        ring at the end. One producer per ring: nothing else may push into it meanwhile."""
        if self.started:
            raise FeedError("already started")
        self.core.local = <fh_tick *>malloc(THREAD_BATCH * sizeof(fh_tick))
        if self.core.local == NULL:
            raise MemoryError()
        self.ring_obj = ring        # keeps the ring alive while the thread writes to it
        self.core.ring = ring.ring
        cdef int rc = pthread_create(&self.thread, NULL, _producer, &self.core)
        if rc != 0:
            raise FeedError(f"pthread_create failed: {os.strerror(rc)}")
        self.started = True

    def stop(self):
        """Ask the producer thread to stop at its next batch (then join())."""
        atomic_store_explicit(&self.core.stop, 1, memory_order_release)

    def join(self):
        """Wait for the producer thread; re-raises an error it stopped on as a typed exception."""
        if not self.started:
            raise FeedError("not started")
        if not self.joined:
            with nogil:
                pthread_join(self.thread, NULL)
            self.joined = True
        if self.core.error:
            self._raise_error()

    @property
    def finished(self):
        """True when every record has been produced."""
        return bool(self.core.finished)

    def progress(self):
        """(bytes_read, total_bytes) of the file (compressed bytes for gzip), for a progress bar."""
        cdef const fh_filesrc_stats *s = fh_filesrc_stats_get(self.src)
        return (s.bytes_read, s.total_bytes)

    def missing_ranges(self):
        """Sequence ranges given up on: [(session, first_seq, last_seq)] (inclusive), oldest first."""
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
        """MoldUDP64 session names by channel index."""
        cdef size_t n = fh_framer_n_sessions(self.core.fr)
        return [PyBytes_FromStringAndSize(fh_framer_session(self.core.fr, <uint16_t>i), FH_MOLD_SESSION_LEN)
                .decode("latin-1") for i in range(n)]

    def stats(self):
        """Counters of every stage (a snapshot; safe while the producer thread runs).

        Keys: ``format``, ``gzip``, ``linktype``, ``bytes_read``, ``total_bytes``, ``bytes`` (decoded file
        bytes), ``packets``, ``truncated``, ``file_damage`` {reason: n}, ``link_rejects`` {reason: n},
        ``udp_datagrams``, ``filtered``, ``moldudp64_packets``, ``heartbeats``, ``end_of_session``,
        ``messages``, ``duplicates`` (messages), ``duplicate_packets``, ``out_of_order`` (packets held),
        ``reordered``, ``gaps``, ``gaps_filled``, ``gaps_lost``, ``filled_messages``, ``lost_messages``,
        ``resets``, ``after_end_of_session``, ``filtered_sessions``, ``malformed`` {reason: n},
        ``sessions`` [names], ``gap_records``, ``records``, ``decoder`` (the decoder's counters).
        """
        cdef const fh_filesrc_stats *s = fh_filesrc_stats_get(self.src)
        cdef const fh_framer_stats *f = fh_framer_stats_get(self.core.fr)
        damage = {fh_filesrc_damage_name(i).decode(): s.damage[i] for i in range(FH_SRC_N_DAMAGE)}
        rejects = {fh_net_reason_name(i).decode(): f.net_reject[i] for i in range(1, FH_NET_N_REASONS)}
        malformed = {fh_mold_malformed_name(i).decode(): f.malformed[i] for i in range(FH_MOLD_N_MALFORMED)}
        return {
            "format": fh_file_format_name(s.format).decode(),
            "gzip": bool(s.gzip),
            "linktype": s.linktype,
            "big_endian": bool(s.big_endian),
            "bytes_read": s.bytes_read,
            "total_bytes": s.total_bytes,
            "bytes": s.data_bytes,
            "packets": s.packets,
            "pcapng_blocks_skipped": s.blocks_skipped,
            "truncated": damage["truncated_header"] + damage["truncated_record"] + damage["gzip_truncated"],
            "file_damage": damage,
            # where damage was and what was skipped (file_events, file_bytes_skipped, ...)
            **{k: v for k, v in filesrc_damage(s).items() if k != "file_damage"},
            "link_rejects": rejects,
            "udp_datagrams": f.udp_datagrams,
            "filtered": f.filtered,
            "moldudp64_packets": f.mold_packets,
            "heartbeats": f.heartbeats,
            "end_of_session": f.end_of_session,
            "messages": f.messages,
            "duplicates": f.duplicate_messages,
            "duplicate_packets": f.duplicate_packets,
            "out_of_order": f.out_of_order,
            "reordered": f.reordered,
            "gaps": f.gaps,
            "gaps_filled": f.gaps_filled,
            "gaps_lost": f.gaps_lost,
            "filled_messages": f.filled_messages,
            "lost_messages": f.lost_messages,
            "resets": f.resets,
            "after_end_of_session": f.after_end_of_session,
            "filtered_sessions": f.filtered_sessions,
            "malformed": malformed,
            "held_max": f.held_max,
            "held_slots": f.held_slots,
            "zero_sequence_packets": f.zero_sequence_packets,
            "hold_failed": f.hold_failed,
            "sessions": self.sessions(),
            "gap_records": f.records,
            "records": self.core.records,
            "decoder": self.dec.counters() if self.dec is not None else {},
        }
