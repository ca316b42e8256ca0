# distutils: sources = csrc/capture_afpacket.c csrc/capture_file.c csrc/net.c csrc/pcap.c csrc/record.c
"""The live feed: a capture backend's native receive loop -> framing -> decoder -> ring, on one native
thread; Python only configures, starts, stops and reads counters. The loop is the feed core's
(feedhandler.core.producer, the same as the file Feed's); this module gives it live sources.

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

from feedhandler.core.producer cimport PRODUCER_LIVE, Producer, fh_source_next_fn, fh_source_wake_fn
from feedhandler.includes.pcap cimport (
    FH_SRC_EEMPTY, FH_SRC_EFORMAT, FH_SRC_N_DAMAGE, fh_file_format_name, fh_filesrc_damage_name, fh_filesrc_stats, fh_filesrc_stats_get, fh_pkt, filesrc_damage,
)
from feedhandler.includes.capture_file cimport (
    fh_filelive, fh_filelive_close, fh_filelive_file, fh_filelive_next, fh_filelive_open, fh_filelive_stats,
    fh_filelive_stats_get, fh_filelive_wake,
)
from feedhandler.capture.live.capture_afpacket cimport (
    fh_afp, fh_afp_close, fh_afp_config, fh_afp_hw_enabled, fh_afp_ifindex, fh_afp_next, fh_afp_open,
    fh_afp_stats, fh_afp_stats_get, fh_afp_tpacket_version, fh_afp_wake,
)

import os
import time

import numpy as np

from feedhandler.errors import CaptureError, CaptureFormatError, FeedError

# latency histograms: the log-linear buckets of fh/latency.h (shared with feedhandler.books.mbo's consumer)
from feedhandler.includes.latency cimport FH_LAT_SUB as LAT_SUB, FH_LAT_BUCKETS as LAT_BUCKETS
from feedhandler.includes.latency cimport fh_lat_bucket_lower_ns

from feedhandler.framing.moldudp64 import DEFAULT_REORDER_WINDOW


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


cdef class LiveFeed(Producer):
    """A live capture source decoded into normalized tick records, pushed into a :class:`Ring` by a
    native thread: the feed core's producer (feedhandler.core.producer) with a live source.

    Parameters
    ----------
    source : object
        A capture source with ``native() -> (next_addr, wake_addr, ctx_addr)`` (C function addresses
        of the signatures in this module's docstring) that stays open while the feed runs.
    protocol : str or None
        ``"itch50"`` (default; MoldUDP64), ``"mdp3"`` (CME MDP 3.0: UDP payloads, A/B ports sharing a
        channel, arbitrated by the decoder: first copy wins), ``"fix"``, ``"ouch"``, ``"ouch42"``,
        ``"ouch50"`` (TCP sessions: ``framing.tcp.live_session_framer``, records as the packets complete
        the messages) or None (MoldUDP64 framing only).
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
    sequencing : bool
        ITCH: False = no MoldUDP64 sequencing (arrival order).
    channels, ab_offset : optional
        MDP3: fixed {udp_port: channel}; ports that differ by ``ab_offset`` (default 1000) share one.
    snapshot_ports : optional
        MDP3: snapshot (market recovery) ports, each with a fixed channel in ``channels``: passed on only
        while the framer's snapshot gate is open (``framer.open_snapshots``), resynchronised, not gapped.
    tcp_kw : dict, optional
        FIX / OUCH: ``symbols``, ``dictionary_dir``, ``max_ooo_segments``, ``max_ooo_bytes``.
    """
    cdef readonly object midnight_ns
    cdef readonly str protocol

    def __init__(self, source, protocol="itch50", *, date=None, midnight_ns=None,
                 reorder_window=DEFAULT_REORDER_WINDOW, udp_port=None, group=None, publisher_id=0,
                 sequencing=True, channels=None, ab_offset=1000, snapshot_ports=(), tcp_kw=None):
        if protocol not in ("itch50", "mdp3", "fix", "ouch", "ouch42", "ouch50", None):
            raise ValueError(f"unknown protocol {protocol!r}: expected 'itch50', 'mdp3', 'fix', 'ouch', 'ouch42', "
                             "'ouch50' or None")
        self.protocol = protocol
        if protocol in ("fix", "ouch", "ouch42", "ouch50"):
            # TCP reassembly + the incremental FIX decoder (records as the messages complete)
            from feedhandler.framing.tcp import live_session_framer
            framer = live_session_framer(protocol, **(tcp_kw or {}))
        elif protocol == "mdp3":
            if not sequencing:
                raise ValueError("sequencing=False is a MoldUDP64 option: the MDP3 decoder sequences itself")
            from feedhandler.framing.cme_packets import CmePacketFramer
            framer = CmePacketFramer(channels=channels, ab_offset=ab_offset, udp_port=udp_port, group=group,
                                     window=reorder_window, snapshot_ports=snapshot_ports)
            missing = [p for p in snapshot_ports or () if p not in (channels or {})]
            if missing:
                raise ValueError(f"snapshot ports {missing} need a fixed channel in channels=")
        else:
            from feedhandler.framing.moldudp64 import MoldUdp64Framer
            framer = MoldUdp64Framer(reorder_window=reorder_window, sequencing=sequencing, udp_port=udp_port,
                                     group=group, publisher_id=publisher_id)
        next_addr, wake_addr, ctx_addr = source.native()
        if not next_addr or not ctx_addr:
            raise ValueError("the source is not open")
        self.src_obj = source
        self.core.src_next = <fh_source_next_fn><uintptr_t>next_addr
        self.core.src_wake = <fh_source_wake_fn><uintptr_t>wake_addr if wake_addr else NULL
        self.core.src_ctx = <void *><uintptr_t>ctx_addr
        from feedhandler.pipeline import midnight_ns_for_date, midnight_ns_for_ts
        if midnight_ns is not None:
            self.midnight_ns = int(midnight_ns)
        elif date is not None:
            self.midnight_ns = midnight_ns_for_date(date)
        else:
            self.midnight_ns = midnight_ns_for_ts(time.time_ns())
        dec = None
        if protocol == "itch50":
            from feedhandler.protocols.itch50 import Itch50Decoder
            dec = Itch50Decoder(self.midnight_ns, publisher_id, 0)
        elif protocol == "mdp3":
            from feedhandler.protocols.mdp3 import Mdp3Decoder
            # with snapshot groups the run recovers what it joined too late for (late_join)
            dec = Mdp3Decoder(snapshot_channels={channels[p] for p in snapshot_ports or ()},
                              late_join=bool(snapshot_ports))
        self._plug(framer, dec, PRODUCER_LIVE)

    def __dealloc__(self):
        self._stop_and_join()       # before the source the thread reads goes

    def channels(self):
        """MDP3: {udp_port: channel} of the ports seen or fixed so far ({} for ITCH)."""
        get = getattr(self.framer_obj, "channels", None)
        return get() if get is not None else {}

    def stats(self):
        """Snapshot of the framer, decoder and pipeline counters (safe while running): the framing
        counters (MoldUDP64; MDP3: the common keys from the decoder, the UDP framer's under
        ``framing``), ``sessions``, ``records``, ``publishes``, ``decoder``."""
        fs = self.framer_obj.stats()
        if self.protocol in ("fix", "ouch", "ouch42", "ouch50"):
            from feedhandler.framing.tcp import live_session_stats
            d = live_session_stats(self.framer_obj)
        elif self.protocol == "mdp3":
            from feedhandler.pipeline import mdp3_stats
            d = mdp3_stats(fs, self.dec)
            d["packets"] = fs["frames"]
            d["link_rejects"] = fs["link_rejects"]
            d["channels"] = self.channels()
        else:
            d = fs
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
    """AF_PACKET capture on one interface (csrc/capture_afpacket.c): a TPACKET_V3 ring of blocks
    (throughput, the default) or a TPACKET_V2 ring of per-frame slots (``tpacket_version=2``: the
    latency mode's, each frame is ours as soon as the kernel wrote it, no block retire timer).

    Parameters
    ----------
    iface : str
        Interface name.
    block_size : int
        Bytes per ring block (power of two); ``block_count`` blocks make the ring.
    retire_ms : int
        TPACKET_V3: a partly filled block is handed over after this many ms (rounded up to a jiffy by
        the kernel: the latency bound at low rates). Unused by TPACKET_V2.
    tpacket_version : int
        3 (default): blocks; 2: per-frame slots of ``frame_size`` bytes.
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
                 snaplen=0, promisc=False, hw_timestamps=False, fanout_id=0, ignore_outgoing=False,
                 tpacket_version=3):
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
        if tpacket_version not in (2, 3):
            raise ValueError(f"tpacket_version must be 2 (per-frame slots) or 3 (blocks), not {tpacket_version!r}")
        cfg.tpacket_version = tpacket_version
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

    @property
    def tpacket_version(self):
        """The ring layout in use: 2 (per-frame slots) or 3 (blocks); 0 once closed."""
        return fh_afp_tpacket_version(self.s) if self.s != NULL else 0

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
                "ts_sw": st.ts_sw, "ts_none": st.ts_none, "tpacket_version": fh_afp_tpacket_version(self.s)}


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
