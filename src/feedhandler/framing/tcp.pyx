# distutils: sources = csrc/pcap.c
"""TCP stream reassembly from captures: one ordered byte stream per connection and direction.

Contract
--------
* Input: captured frames (Ethernet II with up to 4 VLAN tags, Linux SLL, raw IPv4; pcap/pcapng files
  are read natively by csrc/pcap.c in 4 MiB chunks). Each frame is walked with a bounds-checked cursor
  in a ``nogil`` loop over a batch of packets; nothing is read past ``caplen``. Frames that carry no
  TCP segment are counted by reason (``Reassembler.stats``), never raised.
* Per direction (src ip, src port -> dst ip, dst port) sequence numbers are unwrapped to 64 bits and
  bytes are delivered once, in sequence order:
  - retransmissions (segment wholly before the next expected byte) are dropped and counted;
  - overlaps (segment starting before the next expected byte) deliver only the new bytes; the
    overlapping bytes are compared with those already delivered and mismatches counted
    (``overlap_conflicts``; the first copy wins, as in most IDS "first" policies);
  - out-of-order segments are buffered up to ``max_ooo_segments`` / ``max_ooo_bytes`` per direction;
    past that bound, or at FIN/RST/end of capture, the missing range is declared a *hole*: recorded as
    (stream offset, bytes) in ``TcpStream.holes`` and counted; delivery resumes after it.
  - SYN sets the initial sequence number; a SYN on a closed 4-tuple starts a new connection (a new
    TcpStream); FIN closes the direction; RST closes both; data after FIN is counted, not delivered.
  - a capture that starts mid-connection (no SYN) starts each direction at its first segment.
* Output: ``TcpStream`` objects holding the in-order bytes (``data``), the capture time of the segment
  that delivered each byte (``ts_at(offsets)``), holes and counters. Consumers (SoupBinTCP, FIX) parse
  the bytes in one native pass per stream.

Threading: a Reassembler belongs to one thread.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t, int32_t
from libc.string cimport memcpy
from libc.stdlib cimport calloc, free
from feedhandler.includes.pcap cimport (fh_filesrc, fh_pkt, fh_filesrc_open, fh_filesrc_next,
                                        fh_filesrc_close, fh_filesrc_stats_get, fh_filesrc_stats,
                                        fh_filesrc_damage_name, FH_SRC_N_DAMAGE, filesrc_damage)
from feedhandler.includes.msg cimport fh_msg
from feedhandler.includes.moldudp64 cimport FH_MSG_RECORD
from feedhandler.core.producer cimport Framer

from bisect import bisect_left

import numpy as np

cdef extern from "fh/endian.h" nogil:
    uint16_t fh_load_be16(const void *p)
    uint32_t fh_load_be32(const void *p)

# ---- frame walk (nogil) -------------------------------------------------------------------------
cdef enum:
    T_OK = 0
    T_UNSUPPORTED_LINKTYPE
    T_TRUNCATED_LINK
    T_TOO_MANY_VLANS
    T_NOT_IPV4
    T_BAD_IPV4_HEADER
    T_TRUNCATED_IPV4
    T_FRAGMENT
    T_NOT_TCP
    T_BAD_TCP_HEADER
    T_TRUNCATED_TCP
    T_N

REASONS = ("ok", "unsupported_linktype", "truncated_link", "too_many_vlans", "not_ipv4",
           "bad_ipv4_header", "truncated_ipv4", "fragment", "not_tcp", "bad_tcp_header", "truncated_tcp")

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_PSH = 0x08
TCP_ACK = 0x10

cdef int _walk6(const uint8_t *f, uint32_t caplen, uint32_t p, _seg *s) noexcept nogil:
    """The IPv6 packet at f + p (after the link header): its TCP segment into *s."""
    cdef uint32_t ip_end, thl, hl
    cdef uint8_t nh
    cdef int k, next_hdrs = 0
    if caplen < p + 40:
        return T_TRUNCATED_IPV4
    if (f[p] >> 4) != 6:
        return T_BAD_IPV4_HEADER
    ip_end = p + 40 + fh_load_be16(f + p + 4)
    if ip_end == p + 40 and caplen > p + 40:
        return T_BAD_IPV4_HEADER             # a jumbogram (payload length 0): not on a feed
    if caplen < ip_end:
        return T_TRUNCATED_IPV4
    s.v6 = 1
    for k in range(16):
        s.src6[k] = f[p + 8 + k]
        s.dst6[k] = f[p + 24 + k]
    nh = f[p + 6]
    p += 40
    while nh == 0 or nh == 43 or nh == 60:  # hop-by-hop, routing, destination options
        next_hdrs += 1
        if next_hdrs > 8 or ip_end < p + 8:
            return T_BAD_IPV4_HEADER
        hl = (<uint32_t> f[p + 1] + 1) * 8
        if ip_end < p + hl:
            return T_TRUNCATED_IPV4
        nh = f[p]
        p += hl
    if nh == 44:
        return T_FRAGMENT
    if nh != 6:
        return T_NOT_TCP
    if ip_end < p + 20:
        return T_TRUNCATED_TCP
    thl = (f[p + 12] >> 4) * 4
    if thl < 20:
        return T_BAD_TCP_HEADER
    if ip_end < p + thl:
        return T_TRUNCATED_TCP
    s.src_ip = 0
    s.dst_ip = 0
    s.sport = fh_load_be16(f + p)
    s.dport = fh_load_be16(f + p + 2)
    s.seq = fh_load_be32(f + p + 4)
    s.ack = fh_load_be32(f + p + 8)
    s.flags = f[p + 13]
    s.off = p + thl
    s.len = ip_end - (p + thl)
    return T_OK


cdef int _walk(const uint8_t *f, uint32_t caplen, uint16_t linktype, _seg *s) noexcept nogil:
    """Fill *s from one frame; returns T_OK or the reason there is no TCP segment (IPv4 or IPv6)."""
    cdef uint32_t p = 0, ihl, tot, ip_end, thl
    cdef uint16_t et
    cdef int nvlan = 0
    s.v6 = 0
    if linktype == 1:        # Ethernet II
        if caplen < 14:
            return T_TRUNCATED_LINK
        et = fh_load_be16(f + 12)
        p = 14
        while et == 0x8100 or et == 0x88A8 or et == 0x9100:
            nvlan += 1
            if nvlan > 4:
                return T_TOO_MANY_VLANS
            if caplen < p + 4:
                return T_TRUNCATED_LINK
            et = fh_load_be16(f + p + 2)
            p += 4
        if et == 0x86DD:
            return _walk6(f, caplen, p, s)
        if et != 0x0800:
            return T_NOT_IPV4
    elif linktype == 113:    # Linux cooked v1
        if caplen < 16:
            return T_TRUNCATED_LINK
        et = fh_load_be16(f + 14)
        if et == 0x86DD:
            return _walk6(f, caplen, 16, s)
        if et != 0x0800:
            return T_NOT_IPV4
        p = 16
    elif linktype == 276:    # Linux cooked v2 (tcpdump -i any with libpcap >= 1.10)
        if caplen < 20:
            return T_TRUNCATED_LINK
        et = fh_load_be16(f)
        if et == 0x86DD:
            return _walk6(f, caplen, 20, s)
        if et != 0x0800:
            return T_NOT_IPV4
        p = 20
    elif linktype == 0:      # BSD loopback (the address family in host byte order)
        if caplen < 4:
            return T_TRUNCATED_LINK
        if (f[0] == 2 and f[1] == 0 and f[2] == 0 and f[3] == 0) or \
                (f[0] == 0 and f[1] == 0 and f[2] == 0 and f[3] == 2):     # AF_INET, either byte order
            p = 4
        elif caplen >= 5 and (f[4] >> 4) == 6:     # AF_INET6: 10 (Linux), 24, 28 or 30 (the BSDs)
            return _walk6(f, caplen, 4, s)
        else:
            return T_NOT_IPV4
    elif linktype == 101 or linktype == 228 or linktype == 229:
        if linktype == 229 or (linktype == 101 and caplen >= 1 and (f[0] >> 4) == 6):
            return _walk6(f, caplen, 0, s)   # raw IPv6 (229), or raw IP carrying IPv6
        p = 0
    else:
        return T_UNSUPPORTED_LINKTYPE
    if caplen < p + 20:
        return T_TRUNCATED_IPV4
    if (f[p] >> 4) != 4:
        return T_NOT_IPV4 if linktype == 101 else T_BAD_IPV4_HEADER
    ihl = (f[p] & 15) * 4
    tot = fh_load_be16(f + p + 2)
    if ihl < 20 or tot < ihl:
        return T_BAD_IPV4_HEADER
    if caplen < p + tot:
        return T_TRUNCATED_IPV4
    if (fh_load_be16(f + p + 6) & 0x3FFF) != 0:
        return T_FRAGMENT
    if f[p + 9] != 6:
        return T_NOT_TCP
    s.src_ip = fh_load_be32(f + p + 12)
    s.dst_ip = fh_load_be32(f + p + 16)
    ip_end = p + tot
    p += ihl
    if ip_end < p + 20:
        return T_TRUNCATED_TCP
    thl = (f[p + 12] >> 4) * 4
    if thl < 20:
        return T_BAD_TCP_HEADER
    if ip_end < p + thl:
        return T_TRUNCATED_TCP
    s.sport = fh_load_be16(f + p)
    s.dport = fh_load_be16(f + p + 2)
    s.seq = fh_load_be32(f + p + 4)
    s.ack = fh_load_be32(f + p + 8)
    s.flags = f[p + 13]
    s.off = p + thl
    s.len = ip_end - (p + thl)
    return T_OK


_V6 = 1 << 128     # added to an IPv6 address in a stream key (an IPv4 address is below 2**32)


def addr_text(a) -> str:
    """A stream key's address as text: dotted IPv4, or IPv6 (RFC 5952)."""
    if a >= _V6:
        import ipaddress
        return str(ipaddress.IPv6Address(a - _V6))
    return f"{a >> 24}.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}"


def endpoint_text(a, port) -> str:
    """ADDR:PORT of a stream key's address ([ADDR]:PORT for IPv6)."""
    return f"[{addr_text(a)}]:{port}" if a >= _V6 else f"{addr_text(a)}:{port}"


cdef object _src(const _seg *s):
    if s.v6:
        return _V6 + int.from_bytes(bytes(<uint8_t[:16]> &s.src6[0]), "big")
    return s.src_ip


cdef object _dst(const _seg *s):
    if s.v6:
        return _V6 + int.from_bytes(bytes(<uint8_t[:16]> &s.dst6[0]), "big")
    return s.dst_ip


MAX_CLOSED = 4096              # retired streams kept as tombstones (Reassembler.retire)
_SUM_KEYS = ("retrans_segments", "retrans_bytes", "overlap_segments", "overlap_conflicts", "ooo_segments",
             "hole_bytes", "after_fin_bytes")
_GONE_KEYS = _SUM_KEYS + ("holes", "late_bytes", "closed_evicted", "retired_streams", "retired_connections")


cdef class TcpStream:
    """The in-order bytes of one direction of one TCP connection (see module docstring)."""

    def __init__(self, tuple key, int conn):
        self.key = key
        self.conn = conn
        self.data = bytearray()
        self._end_off = []
        self._end_ts = []
        self.holes = []
        self.pending = {}
        self.pending_bytes = 0
        self.base = -1
        self.next_seq = -1
        self.last_raw = 0
        self.last_abs = 0
        self.valid_from = 0
        self.fin_seq = 0
        self.is_client = None
        self.syn = self.fin = self.rst = False
        self.first_ts = 0
        self.packets = self.retrans_segments = self.retrans_bytes = 0
        self.overlap_segments = self.overlap_bytes = self.overlap_conflicts = 0
        self.ooo_segments = self.hole_bytes = self.after_fin_bytes = 0
        self._mk_len = self._mk_holes = 0
        self.trimmed = 0
        self.retired = False
        self.holes_dropped = self.late_bytes = 0

    @property
    def src(self):
        return self.key[0], self.key[1]

    @property
    def dst(self):
        return self.key[2], self.key[3]

    def ts_at(self, offsets):
        """Capture time (ns) of the segment that delivered byte ``offsets[i] - 1`` (message ends)."""
        o = np.asarray(offsets, dtype=np.int64)
        cdef Py_ssize_t n_end = len(self._end_off), i, k
        if n_end == 0:
            return np.zeros(len(o), dtype=np.uint64)
        if len(o) <= 64:
            # a few message ends (a live packet's): binary search in the lists, no array of every chunk
            out = np.empty(len(o), dtype=np.uint64)
            for i in range(len(o)):
                k = bisect_left(self._end_off, int(o[i]))
                out[i] = self._end_ts[k if k < n_end else n_end - 1]
            return out
        ends = np.asarray(self._end_off, dtype=np.int64)
        tss = np.asarray(self._end_ts, dtype=np.uint64)
        idx = np.searchsorted(ends, o, side="left")
        np.clip(idx, 0, len(ends) - 1, out=idx)
        return tss[idx]

    def pieces(self):
        """[(start, end)] contiguous byte ranges of ``data`` between holes (a hole sits at each start > 0)."""
        out, s = [], 0
        for off, _n in self.holes:
            if off > s:
                out.append((s, off))
            s = off
        if len(self.data) > s:
            out.append((s, len(self.data)))
        return out

    def discard(self, int64_t n):
        """Drop the first ``n`` bytes of ``data`` (an incremental consumer is done with them), so that a
        long live session does not keep every byte it received. Every offset (``holes``, ``ts_at``,
        the marks) stays relative to ``data``: they move down by ``n`` (a hole before the cut keeps its
        place in ``holes`` at a negative offset). Retransmitted bytes are then compared with the bytes
        kept only (``overlap_conflicts``). Not for the whole-capture decoders (``pieces``)."""
        if n <= 0:
            return
        if n > len(self.data):
            raise ValueError(f"discard({n}): only {len(self.data)} bytes held")
        del self.data[:n]
        self.trimmed += n
        self.base += n
        cdef Py_ssize_t k = 0
        cdef list offs = self._end_off
        while k < len(offs) and <int64_t> offs[k] <= n:
            k += 1
        if k == len(offs) and k > 0:
            k -= 1              # keep the last chunk's time (ts_at of later bytes never looks before it)
        del self._end_off[:k]
        del self._end_ts[:k]
        self._end_off = [o - n for o in self._end_off]
        self.holes = [(o - n, m) for o, m in self.holes]
        self._mk_len -= n

    def stats(self):
        return {"packets": self.packets, "bytes": self.trimmed + len(self.data), "retrans_segments": self.retrans_segments,
                "retrans_bytes": self.retrans_bytes, "overlap_segments": self.overlap_segments,
                "overlap_bytes": self.overlap_bytes, "overlap_conflicts": self.overlap_conflicts,
                "ooo_segments": self.ooo_segments, "holes": len(self.holes) + self.holes_dropped,
                "hole_bytes": self.hole_bytes,
                "after_fin_bytes": self.after_fin_bytes, "syn": self.syn, "fin": self.fin, "rst": self.rst}

    @property
    def closed(self):
        """True once nothing more can be delivered: an RST, or a FIN with every byte before it delivered
        (no segment waiting out of order)."""
        return (self.rst or (self.fin and self.next_seq >= self.fin_seq)) and not self.pending

    def __repr__(self):
        return (f"TcpStream({endpoint_text(self.key[0], self.key[1])} -> {endpoint_text(self.key[2], self.key[3])} #{self.conn}, "
                f"{len(self.data)} bytes, {len(self.holes)} holes)")

    # -- internals ------------------------------------------------------------------------------
    cdef int64_t _unwrap(self, uint32_t raw):
        """64-bit sequence of a raw 32-bit one, nearest to the last one seen."""
        cdef int64_t d = <int64_t> (<int32_t> (raw - <uint32_t> self.last_raw))
        cdef int64_t v = self.last_abs + d
        self.last_abs = v
        self.last_raw = raw
        return v

    cdef void _append(self, bytes chunk, uint64_t ts):
        self.data += chunk
        self._end_off.append(len(self.data))
        self._end_ts.append(ts)
        self.next_seq += len(chunk)

    cdef void _deliver(self, int64_t s, bytes payload, uint64_t ts):
        """Segment [s, s+len) arrives; deliver what extends the stream, buffer what is ahead."""
        cdef int64_t e = s + len(payload), nxt = self.next_seq, k, old_off, n
        if self.retired and e > nxt:
            self.late_bytes += len(payload)     # new bytes after retirement (an RST'd stream): counted only
            return
        if e <= nxt:
            self.retrans_segments += 1
            self.retrans_bytes += len(payload)
            self._compare(s, payload)
            return
        if s < nxt:
            self.overlap_segments += 1
            self.overlap_bytes += nxt - s
            self._compare(s, payload[:nxt - s])
            payload = payload[nxt - s:]
            s = nxt
        if s > nxt:
            self.ooo_segments += 1
            old = self.pending.get(s)
            if old is None or len(old) < len(payload):
                if old is not None:
                    self.pending_bytes -= len(old)
                self.pending[s] = payload
                self.pending_bytes += len(payload)
            return
        self._append(payload, ts)
        self._drain(ts)

    cdef void _drain(self, uint64_t ts):
        cdef int64_t k
        while self.pending:
            k = min(self.pending)
            if k > self.next_seq:
                return
            p = self.pending.pop(k)
            self.pending_bytes -= len(p)
            if k + len(p) <= self.next_seq:
                self.retrans_segments += 1
                self.retrans_bytes += len(p)
                continue
            if k < self.next_seq:
                self.overlap_segments += 1
                self.overlap_bytes += self.next_seq - k
                p = p[self.next_seq - k:]
            self._append(p, ts)

    cdef void _compare(self, int64_t s, bytes payload):
        """Count a conflict when retransmitted bytes differ from the delivered ones."""
        cdef int64_t o = s - self.base
        if self.retired or s < self.valid_from or o < 0 or not payload:
            return                      # before the last hole: offsets of those bytes are not tracked
        if bytes(self.data[o:o + len(payload)]) != payload:
            self.overlap_conflicts += 1

    cdef void _skip_hole(self, uint64_t ts):
        """Give up on the bytes before the first buffered segment: record a hole, resume after it."""
        if not self.pending:
            return
        cdef int64_t k = min(self.pending)
        cdef int64_t n = k - self.next_seq
        if n > 0:
            self.holes.append((len(self.data), n))
            self.hole_bytes += n
            self.next_seq = k
            self.base += n      # stream offsets stay dense: after the hole, byte at seq q is data[q - base]
            self.valid_from = k
        self._drain(ts)

    def _flush(self, uint64_t ts):
        while self.pending:
            self._skip_hole(ts)


cdef class Reassembler:
    """Reassembles every TCP connection of a capture (see module docstring).

    ``feed_file(path)`` reads a pcap/pcapng file natively; ``feed(ts_ns, frame, linktype=1)`` takes
    one frame (tests, live use). ``finish()`` declares the remaining gaps as holes and returns the
    streams in order of first appearance.
    """

    def __init__(self, int max_ooo_segments=1024, int64_t max_ooo_bytes=4 << 20, int max_closed=MAX_CLOSED):
        self.max_ooo_segments = max_ooo_segments
        self.max_ooo_bytes = max_ooo_bytes
        self.max_closed = max_closed
        self.flows = {}
        self.streams = []
        self.n_created = 0
        self.closed = {}
        self.gone = dict.fromkeys(_GONE_KEYS, 0)
        self.closing = None
        self.reasons = [0] * T_N
        self.frames = 0
        self.syn_retrans = 0
        self.file_damage = {}
        self.file_events = []
        self.file_bytes_skipped = 0
        self.marks = None

    def track(self):
        """Start recording, packet by packet, which streams changed: after every segment that delivered
        bytes to a stream or declared a hole in it, ``marks`` receives ``(stream, len(stream.data),
        len(stream.holes))`` (both directions are checked: an RST flushes the peer too). An incremental
        consumer (``TcpSessionFramer``'s live mode) takes the list, frames each stream up to the marked
        length, and so sees the messages in the order the packets completed them."""
        if self.marks is None:
            self.marks = []
        if self.closing is None:
            self.closing = []
        return self

    def take_closing(self):
        """The streams that received a FIN or an RST since the last call (see ``track``)."""
        c = self.closing
        self.closing = []
        return c

    @property
    def retirement(self):
        """{retired_connections, retired_streams, tombstones (kept now), tombstones_evicted} (``retire``)."""
        g = self.gone
        return {"retired_connections": g["retired_connections"], "retired_streams": g["retired_streams"],
                "tombstones": len(self.closed), "tombstones_evicted": g["closed_evicted"]}

    @property
    def n_closed(self):
        """Retired streams kept as tombstones (at most ``max_closed``)."""
        return len(self.closed)

    def retire(self, streams):
        """An incremental consumer is done with a connection (``streams``: its two directions, both
        ``closed``, every byte decoded): drop the streams' bytes and take them out of ``streams``. Each
        stays, as a tombstone without bytes, in ``flows`` for the segments that arrive late (the last ACK,
        retransmissions: counted as on a live stream, new bytes counted in ``late_bytes``), up to
        ``max_closed`` tombstones; the oldest is then dropped and its counters fold into ``gone``, so
        ``stats`` keeps counting every stream. A segment for an evicted tombstone's 4-tuple starts a new
        stream (evictions counted in ``retirement``)."""
        cdef TcpStream st
        cdef int k = 0
        for st in streams:
            if st is None or st.retired:
                continue
            self.streams.remove(st)
            st.retired = True
            st.trimmed += len(st.data)
            st.holes_dropped += len(st.holes)
            st.data = bytearray()
            st._end_off = []
            st._end_ts = []
            st.holes = []
            st._mk_len = st._mk_holes = 0
            self.closed[st] = None
            k += 1
        if k:
            self.gone["retired_streams"] += k
            self.gone["retired_connections"] += 1
        while len(self.closed) > self.max_closed:
            st = next(iter(self.closed))
            del self.closed[st]
            d = st.stats()
            for key in _SUM_KEYS:
                self.gone[key] += d[key]
            self.gone["holes"] += d["holes"]
            self.gone["late_bytes"] += st.late_bytes
            self.gone["closed_evicted"] += 1
            if self.flows.get(st.key) is st:
                del self.flows[st.key]

    def take_marks(self):
        """The marks recorded since the last call (see ``track``)."""
        m = self.marks
        self.marks = []
        return m

    cdef void _mark(self, TcpStream st):
        if st is None:
            return
        if len(st.data) != st._mk_len or len(st.holes) != st._mk_holes:
            st._mk_len = len(st.data)
            st._mk_holes = len(st.holes)
            self.marks.append((st, st._mk_len, st._mk_holes))

    def feed(self, uint64_t ts_ns, frame, int linktype=1):
        cdef const uint8_t[::1] f = frame
        cdef _seg s
        cdef int st
        self.frames += 1
        if f.shape[0] == 0:
            self.reasons[T_TRUNCATED_LINK] += 1
            return
        with nogil:
            st = _walk(&f[0], <uint32_t> f.shape[0], <uint16_t> linktype, &s)
        self.reasons[st] += 1
        if st == T_OK:
            self._segment(&s, bytes(f[s.off:s.off + s.len]), ts_ns)

    def feed_file(self, path):
        """Reassemble every TCP segment of a capture file (pcap / pcapng, optionally gzipped)."""
        cdef fh_filesrc *src = NULL
        cdef fh_pkt pkts[256]
        cdef char err[256]
        cdef size_t n
        cdef int rc
        err[0] = 0
        rc = fh_filesrc_open(&src, str(path).encode(), err, sizeof(err))
        if rc != 0:
            raise OSError(f"{path}: {err.decode(errors='replace') or rc}")
        try:
            while True:
                with nogil:
                    n = fh_filesrc_next(src, pkts, 256)
                if n == 0:
                    break
                self._feed_pkts(pkts, n)
            self._add_source_damage(fh_filesrc_stats_get(src))
        finally:
            fh_filesrc_close(src)
        return self

    cdef int _feed_pkts(self, const fh_pkt *pkts, size_t n) except -1:
        """Reassemble the TCP segments of n captured frames (walked nogil, 256 at a time)."""
        cdef _seg segs[256]
        cdef size_t i, j, m
        j = 0
        while j < n:
            m = n - j if n - j < 256 else 256
            with nogil:
                for i in range(m):
                    segs[i].status = <uint8_t> _walk(pkts[j + i].data, pkts[j + i].caplen, pkts[j + i].linktype,
                                                     &segs[i])
            for i in range(m):
                self.frames += 1
                self.reasons[segs[i].status] += 1
                if segs[i].status == T_OK:
                    self._segment(&segs[i], pkts[j + i].data[segs[i].off:segs[i].off + segs[i].len],
                                  pkts[j + i].ts_ns)
            j += m
        return 0

    cdef _add_source_damage(self, const fh_filesrc_stats *st):
        """Count the capture file's damage (bad records skipped, truncation) as the source reported it."""
        dmg = filesrc_damage(st)
        for name, k in dmg["file_damage"].items():
            self.file_damage[name] = self.file_damage.get(name, 0) + k
        self.file_events.extend(dmg["file_events"])
        self.file_bytes_skipped += dmg["file_bytes_skipped"]

    cdef void _segment(self, _seg *s, bytes payload, uint64_t ts):
        self._segment_inner(s, payload, ts)
        if self.marks is not None:
            src, dst = _src(s), _dst(s)
            self._mark(self.flows.get((src, s.sport, dst, s.dport)))
            self._mark(self.flows.get((dst, s.dport, src, s.sport)))

    cdef void _segment_inner(self, _seg *s, bytes payload, uint64_t ts):
        cdef TcpStream st, peer
        src, dst = _src(s), _dst(s)
        key = (src, s.sport, dst, s.dport)
        rkey = (dst, s.dport, src, s.sport)
        st = self.flows.get(key)
        if (s.flags & TCP_SYN) and st is not None and (st.fin or st.rst) and st.syn:
            st = None                                   # 4-tuple reused: a new connection
        elif (s.flags & TCP_SYN) and st is not None and st.next_seq >= 0 and not st.syn and len(st.data) == 0 \
                and st.trimmed == 0:
            st = None                                   # only bare ACKs seen before the SYN: restart
        if st is None:
            conn = self.n_created
            self.n_created += 1
            st = TcpStream(key, conn)
            self.flows[key] = st
            self.streams.append(st)
            st.first_ts = ts
        st.packets += 1
        if s.flags & TCP_SYN:
            if st.syn:
                self.syn_retrans += 1
                return
            st.syn = True
            st.is_client = not (s.flags & TCP_ACK)
            peer = self.flows.get(rkey)
            if peer is not None and peer.is_client is None:
                peer.is_client = not st.is_client
            st.last_raw = s.seq
            st.last_abs = (<int64_t> 1 << 32) + s.seq
            st.next_seq = st.last_abs + 1
            st.base = st.next_seq
            st.valid_from = st.next_seq
            if len(payload):
                st._deliver(st.next_seq, payload, ts)
            return
        cdef int64_t seq
        if st.next_seq < 0:
            st.last_raw = s.seq
            st.last_abs = (<int64_t> 1 << 32) + s.seq
            st.next_seq = st.last_abs
            st.base = st.next_seq
            st.valid_from = st.next_seq
        seq = st._unwrap(s.seq)
        if len(payload):
            if st.fin and seq >= st.fin_seq:
                st.after_fin_bytes += len(payload)
            else:
                st._deliver(seq, payload, ts)
                if len(st.pending) > self.max_ooo_segments or st.pending_bytes > self.max_ooo_bytes:
                    st._skip_hole(ts)
        if s.flags & TCP_FIN and not st.fin:
            st.fin = True
            st.fin_seq = seq + len(payload)
            if self.closing is not None and not st.retired:
                self.closing.append(st)
        if s.flags & TCP_RST:
            st.rst = True
            st._flush(ts)
            peer = self.flows.get(rkey)
            if peer is not None:
                peer.rst = True
                peer._flush(ts)
            if self.closing is not None and not st.retired:
                self.closing.append(st)

    def finish(self):
        """Declare every remaining gap a hole; return the streams (first appearance order)."""
        cdef TcpStream st
        for st in self.streams:
            st._flush(st._end_ts[len(st._end_ts) - 1] if st._end_ts else st.first_ts)
            if self.marks is not None:
                self._mark(st)
        return list(self.streams)

    @property
    def stats(self):
        g = self.gone
        d = {"frames": self.frames, "tcp_segments": self.reasons[T_OK], "syn_retrans": self.syn_retrans,
             "streams": len(self.streams) + g["retired_streams"],
             "connections": len(pair_streams(self.streams)) + g["retired_connections"]}
        d["not_tcp"] = {REASONS[i]: self.reasons[i] for i in range(1, T_N) if self.reasons[i]}
        cdef TcpStream st
        every = self.streams + list(self.closed)
        per = [st.stats() for st in every]
        for k in _SUM_KEYS:
            d[k] = sum(x[k] for x in per) + g[k]
        d["holes"] = sum(x["holes"] for x in per) + g["holes"]
        # (only once it happens: a capture that never needs them keeps replay's keys)
        late = sum(st.late_bytes for st in every) + g["late_bytes"]
        if late:
            d["late_bytes"] = late

        if self.file_damage:
            d["file_damage"] = dict(self.file_damage)
            d["file_events"] = list(self.file_events)
            d["file_bytes_skipped"] = self.file_bytes_skipped
        return d


def reassemble_file(path, **kw):
    """Convenience: (streams, stats) of every TCP connection in a capture file."""
    r = Reassembler(**kw)
    r.feed_file(path)
    streams = r.finish()
    return streams, r.stats


def pair_streams(streams):
    """[(client_stream_or_None, server_stream_or_None)] per connection, using SYN direction when seen.

    The two directions of a connection are matched by reversed 4-tuple, in order of appearance (a
    reused 4-tuple gives several connections). Without a SYN the side whose port is larger is taken
    as the client (ephemeral port heuristic).
    """
    waiting = {}                       # reversed key -> [unpaired streams], oldest first
    pairs = []
    for s in streams:
        rkey = (s.key[2], s.key[3], s.key[0], s.key[1])
        q = waiting.get(s.key)
        if q:
            i = q.pop(0)
            pairs[i][1] = s
        else:
            waiting.setdefault(rkey, []).append(len(pairs))
            pairs.append([s, None])
    out = []
    for s, peer in pairs:
        if s.is_client is True or (s.is_client is None and (peer is None or peer.is_client is not True)
                                    and s.key[1] > s.key[3]):
            out.append((s, peer))
        else:
            out.append((peer, s))
    return out


class LiveConnections:
    """The connections of a Reassembler's streams as they appear: ``pair_streams`` done incrementally
    (same forward pass, so the connection indices are the same as replay's).

    ``update(streams)`` takes the streams created since the last call; ``index[stream]`` is the
    connection of a stream; ``oriented(i)`` its (client, server) by the rule of ``pair_streams``
    applied to what is known now (the SYN direction; else the larger port is the client)."""

    def __init__(self):
        self.n_seen = 0
        self.waiting = {}
        self.pairs = {}             # connection index -> [first stream, its peer or None] (open ones)
        self.n_pairs = 0            # connections seen (retired included)
        self.index = {}

    def update(self, streams, n_created=None):
        """``streams``: the reassembler's (open) streams, the ``n_created - n_seen`` newest at the end
        (``n_created``: ``Reassembler.n_created``; default ``len(streams)``, nothing retired)."""
        if n_created is None:
            n_created = len(streams)
        new = n_created - self.n_seen
        if new <= 0:
            return
        for s in streams[len(streams) - new:]:
            rkey = (s.key[2], s.key[3], s.key[0], s.key[1])
            q = self.waiting.get(s.key)
            if q:
                i = q.pop(0)
                if not q:
                    del self.waiting[s.key]
                self.pairs[i][1] = s
            else:
                i = self.n_pairs
                self.n_pairs += 1
                self.waiting.setdefault(rkey, []).append(i)
                self.pairs[i] = [s, None]
            self.index[s] = i
        self.n_seen = n_created

    def closed(self, i):
        """(client, server) of connection ``i`` if both directions were seen and are ``closed``, else None."""
        s, peer = self.pairs[i]
        if peer is None or not s.closed or not peer.closed:
            return None
        return self.oriented(i)

    def retire(self, i):
        """Forget connection ``i`` (both directions seen: it waits for no peer)."""
        for s in self.pairs.pop(i):
            if s is not None:
                self.index.pop(s, None)

    def oriented(self, i):
        s, peer = self.pairs[i]
        if s.is_client is True or (s.is_client is None and (peer is None or peer.is_client is not True)
                                    and s.key[1] > s.key[3]):
            return s, peer
        return peer, s


# ---- the feed core's TCP session framer ------------------------------------------------------------
cdef enum:
    RECORD_CHUNK = 4096         # records handed to the producer per finish() call


cdef struct tsf_state:          # what the producer's nogil loop reads (ops.fr points here)
    void *obj                   # the TcpSessionFramer (borrowed: the producer keeps it alive)
    const fh_pkt *pkts          # the source's current batch
    size_t n
    int done                    # the batch is reassembled (live: and its records handed out)
    int decoded                 # the sessions are decoded (records below are final)
    int live                    # incremental mode: records come out of run() as messages complete
    int consumed                # live: the current batch went through reassembly and decoding
    const uint8_t *recs         # decoded records (64 bytes each), owned by the framer's array
    size_t n_recs
    size_t pos                  # next record to hand out
    fh_msg *msgs                # RECORD_CHUNK messages marking ready records (FH_MSG_RECORD)


cdef void _tsf_set_input(void *f, const fh_pkt *pkts, size_t n) noexcept nogil:
    cdef tsf_state *t = <tsf_state *>f
    t.pkts = pkts
    t.n = n
    t.done = 1 if n == 0 else 0
    t.consumed = 0


cdef int _tsf_input_done(void *f) noexcept nogil:
    return (<tsf_state *>f).done


cdef size_t _tsf_handout(tsf_state *t, const fh_msg **msgs) noexcept nogil:
    """The next RECORD_CHUNK ready records as FH_MSG_RECORD messages."""
    cdef size_t k = 0
    while k < RECORD_CHUNK and t.pos < t.n_recs:
        t.msgs[k].data = t.recs + t.pos * 64
        t.msgs[k].len = 0
        t.msgs[k].flags = FH_MSG_RECORD
        k += 1
        t.pos += 1
    msgs[0] = t.msgs
    return k


cdef size_t _tsf_run(void *f, const fh_msg **msgs) noexcept nogil:
    cdef tsf_state *t = <tsf_state *>f
    cdef size_t k
    if t.live:
        # incremental: reassemble the batch, decode the messages it completed, hand their records out
        if t.pos < t.n_recs:
            return _tsf_handout(t, msgs)
        if t.done:
            return 0
        if not t.consumed:
            t.consumed = 1
            with gil:
                (<TcpSessionFramer>t.obj)._consume_live()
            if t.pos < t.n_recs:
                return _tsf_handout(t, msgs)
        t.done = 1
        return 0
    # whole-capture mode: reassembly only, no record before the end of the input (see TcpSessionFramer)
    if not t.done:
        with gil:
            (<TcpSessionFramer>t.obj)._consume()
        t.done = 1
    return 0


cdef size_t _tsf_finish(void *f, const fh_msg **msgs) noexcept nogil:
    cdef tsf_state *t = <tsf_state *>f
    if not t.decoded:
        if t.pos >= t.n_recs:
            with gil:
                (<TcpSessionFramer>t.obj)._decode_all()
            t.decoded = 1
        # (live: records of the last batch still pending are handed out before the final ones)
    return _tsf_handout(t, msgs)


cdef class TcpSessionFramer(Framer):
    """TCP reassembly and a session decoder (FIX, SoupBinTCP + OUCH) as a framer of the feed core.

    Packets in (the producer's source: ``pipeline.Feed``'s capture file, or a live source through
    ``LiveFeed``), ``fh_tick`` records out, as ``FH_MSG_RECORD`` messages the producer copies into the
    caller's batch or the ring (the producer runs with no decoder: the records are made here).

    Two modes, chosen by ``decode``:

    * **whole capture** (``decode`` a callable ``(reassembler) -> (records, stats)``:
      ``fix_stream.decode_streams`` or ``ouch_events.decode_streams``, the code ``replay_stream``
      runs, so the records are byte for byte those of ``replay_stream``). Those decoders need
      whole-capture state, which is why the records come out only once the input has ended
      (``finish``): each connection's two directions are merged by capture time, FIX reference data
      (SecurityList, SecurityDefinition) anywhere in a connection names every record of its symbols
      and puts an instrument definition ahead of them, symbol ids are assigned connection by
      connection, several connections are then merged by capture time, and the OUCH version is told
      from the first messages. ``feedhandler replay`` uses this mode.
    * **incremental** (``decode`` an incremental session decoder: ``fix_stream.FixLiveDecoder`` or
      ``ouch_events.OuchLiveDecoder``, objects with ``feed_marks(reassembler, marks) -> records``,
      ``finish(reassembler) -> (records, stats)`` and ``snapshot(reassembler) -> stats``). The
      reassembler records which stream each packet extended (``Reassembler.track``); after every
      source batch the decoder frames the messages those packets completed, in packet order, and
      their records come out of the producer's ``run`` at once, not at the end. ``feedhandler run``
      (``--file`` and ``--iface``) uses this mode; the live rules that replace the whole-capture ones
      are in those decoders' docstrings (in short: records in packet order, so the directions and
      connections interleave as captured; symbol ids in order of first appearance across the
      capture; reference data names the records that follow it; the FIX client side and the OUCH
      version are decided from the first messages, which are held only until then). ``result`` is
      the final statistics once the input has ended; ``progress()`` the statistics so far.

    Reassembly (per packet) and decoding run with the GIL (``with gil`` from the producer's loop, on
    whichever thread drives it); the hand-out of the records is nogil.

    An exception in reassembly or decoding (a signal's KeyboardInterrupt included) ends the input
    (whole capture: with no records); ``failure`` holds it and the producer re-raises it from
    ``read()`` / ``join()``.
    """
    cdef tsf_state st
    cdef readonly Reassembler reassembler
    cdef object decode
    cdef object recs
    cdef object _result
    cdef fh_filesrc *src
    cdef readonly bint live

    def __cinit__(self):
        self.st.msgs = NULL

    def __init__(self, decode, *, int max_ooo_segments=1024, int64_t max_ooo_bytes=4 << 20):
        self.live = hasattr(decode, "feed_marks")
        if not self.live and not callable(decode):
            raise TypeError("decode must be a callable (reassembler) -> (records, stats) or an incremental "
                            "session decoder (feed_marks, finish, snapshot)")
        self.decode = decode
        self.reassembler = Reassembler(max_ooo_segments=max_ooo_segments, max_ooo_bytes=max_ooo_bytes)
        if self.live:
            self.reassembler.track()
        self.st.msgs = <fh_msg *>calloc(RECORD_CHUNK, sizeof(fh_msg))
        if self.st.msgs == NULL:
            raise MemoryError()
        self.st.obj = <void *>self
        self.st.done = 1
        self.st.live = 1 if self.live else 0
        self.ops.fr = &self.st
        self.ops.set_input = _tsf_set_input
        self.ops.input_done = _tsf_input_done
        self.ops.run = _tsf_run
        self.ops.finish = _tsf_finish

    def __dealloc__(self):
        free(self.st.msgs)
        self.st.msgs = NULL

    def _attach_source(self, size_t src):
        """(pipeline.Feed) The capture file source, whose damage counters join the TCP statistics at
        the end of the input, as ``Reassembler.feed_file`` adds them. The Feed outlives the framer's use."""
        self.src = <fh_filesrc *>src

    cdef void _consume(self) noexcept:
        if self.failure is not None:
            return
        try:
            self.reassembler._feed_pkts(self.st.pkts, self.st.n)
        except BaseException as e:
            self.failure = e

    cdef void _set_records(self, recs) except *:
        cdef const uint8_t[::1] raw
        recs = np.ascontiguousarray(recs)
        if recs.ndim != 1 or recs.dtype.itemsize != 64:
            raise TypeError("decode must return a 1-d array of 64-byte records")
        self.recs = recs
        self.st.pos = 0
        self.st.n_recs = 0
        if recs.shape[0]:
            raw = recs.view(np.uint8)
            self.st.recs = &raw[0]
            self.st.n_recs = recs.shape[0]

    cdef void _consume_live(self) noexcept:
        """Live: reassemble the batch, decode the messages it completed (records ready at once)."""
        if self.failure is not None:
            return
        try:
            self.reassembler._feed_pkts(self.st.pkts, self.st.n)
            self._set_records(self.decode.feed_marks(self.reassembler, self.reassembler.take_marks()))
        except BaseException as e:
            self.failure = e

    cdef void _decode_all(self) noexcept:
        if self.failure is not None:
            return
        try:
            if self.src != NULL:
                self.reassembler._add_source_damage(fh_filesrc_stats_get(self.src))
            if self.live:
                recs, stats = self.decode.finish(self.reassembler)
            else:
                recs, stats = self.decode(self.reassembler)
            self._set_records(recs)
            self._result = stats
        except BaseException as e:
            self.failure = e

    def progress(self):
        """The decoder's statistics so far (incremental mode; whole capture: ``result``, None before
        the end of the input)."""
        if self._result is not None or not self.live:
            return self._result
        return self.decode.snapshot(self.reassembler)

    @property
    def decoded(self):
        """True once the input has ended and the sessions are decoded (``result`` is then set)."""
        return bool(self.st.decoded) and self._result is not None

    @property
    def result(self):
        """The decoder's statistics (``replay_stream``'s stats dict), or None before the end of the input."""
        return self._result

    def stats(self):
        """TCP reassembly counters so far (``Reassembler.stats``; the decoder's come with ``result``)."""
        return self.reassembler.stats

    def sessions(self):
        """One name per TCP connection seen so far: "client_ip:port>server_ip:port" (by first SYN)."""
        out = []
        for c, s in pair_streams(self.reassembler.streams):
            st = c if c is not None else s
            a, b = (st.src, st.dst) if c is not None else (st.dst, st.src)
            out.append(f"{endpoint_text(a[0], a[1])}>{endpoint_text(b[0], b[1])}")
        return out


def live_session_framer(protocol, *, symbols=None, dictionary_dir=None, max_ooo_segments=1024,
                        max_ooo_bytes=4 << 20):
    """A TcpSessionFramer in incremental mode for a FIX or OUCH feed (``LiveFeed``, ``feedhandler run``)."""
    if protocol == "fix":
        from feedhandler.protocols.fix_stream import FixLiveDecoder
        dec = FixLiveDecoder(symbols=symbols, dictionary_dir=dictionary_dir)
    elif protocol in ("ouch", "ouch42", "ouch50"):
        if dictionary_dir is not None:
            raise ValueError("dictionary_dir (FIX data dictionaries) applies to fix only")
        from feedhandler.protocols.ouch_events import OuchLiveDecoder
        dec = OuchLiveDecoder(protocol, symbols=symbols)
    else:
        raise ValueError(f"{protocol!r} is not a TCP session protocol (fix, ouch, ouch42, ouch50)")
    return TcpSessionFramer(dec, max_ooo_segments=max_ooo_segments, max_ooo_bytes=max_ooo_bytes)


def live_session_stats(TcpSessionFramer framer):
    """The common feed counters (``LiveFeed.stats``: packets, messages, gaps, duplicates, ...) of a FIX /
    OUCH session framer so far, with ``tcp`` (reassembly) and ``session`` (the decoder's statistics,
    shaped as ``replay_stream``'s) in full."""
    st = framer.progress() or {}
    tcp = st.get("tcp") or framer.reassembler.stats
    d = {"packets": tcp.get("frames", 0), "moldudp64_packets": 0, "gaps_filled": 0, "out_of_order":
         tcp.get("ooo_segments", 0), "resets": 0, "tcp": tcp, "session": st, "decoded": framer.decoded}
    if st.get("protocol") == "fix":
        f = st["fix"]
        d.update(messages=int(f["messages"]), gaps=int(f["seq_gaps"]), lost_messages=int(f["seq_gap_messages"]),
                 duplicates=int(f["duplicates"]), resets=int(f["seq_resets"]),
                 gaps_filled=int(f["possdup_filled"]))
    elif st:
        so, o = st["soupbintcp"], st["ouch"]
        d.update(messages=int(o["messages"]), gaps=sum(len(s.get("gaps", [])) for s in st["sessions"].values()),
                 lost_messages=int(so["gap_messages"]), duplicates=int(so["duplicates"]))
    else:
        d.update(messages=0, gaps=0, lost_messages=0, duplicates=0)
    return d


# ---- frame builders for tests and synthetic captures (pure Python, not a hot path) ----------------
def _csum16(b):
    import struct as _st
    if len(b) % 2:
        b += b"\0"
    t = sum(_st.unpack(f"!{len(b) // 2}H", b))
    while t >> 16:
        t = (t & 0xFFFF) + (t >> 16)
    return (~t) & 0xFFFF


def build_tcp_frame(payload, src="10.1.0.2", dst="10.1.0.1", sport=40000, dport=9000, seq=0, ack=0,
                    flags=TCP_ACK | TCP_PSH, *, window=65535, ident=0):
    """An Ethernet II / IPv4 / TCP frame (valid IP and TCP checksums) carrying ``payload``."""
    import ipaddress, struct as _st
    from feedhandler.capture.pcapwriter import ipv4_checksum
    sa, da = ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed
    payload = bytes(payload)
    tcp = _st.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, flags, window, 0, 0)
    pseudo = sa + da + _st.pack("!BBH", 0, 6, len(tcp) + len(payload))
    c = _csum16(pseudo + tcp + payload)
    tcp = tcp[:16] + _st.pack("!H", c) + tcp[18:]
    tot = 20 + len(tcp) + len(payload)
    ip = _st.pack("!BBHHHBBH4s4s", 0x45, 0, tot, ident & 0xFFFF, 0x4000, 64, 6, 0, sa, da)
    ip = ip[:10] + _st.pack("!H", ipv4_checksum(ip)) + ip[12:]
    return b"\x02\x00\x00\x00\x00\x01" + b"\x02\x00\x00\x00\x00\x02" + b"\x08\x00" + ip + tcp + payload


class TcpConversation:
    """Builds the frames of one TCP connection (handshake, data both ways, FIN) with real sequence numbers.

    ``send(ts_ns, side, data)`` -> frames; side "c" (client -> server) or "s". ``frames`` holds
    [(ts_ns, frame)] in order; tests reorder / duplicate / drop them to exercise the reassembler.
    """

    def __init__(self, client=("10.1.0.2", 40000), server=("10.1.0.1", 9000), isn_c=1000, isn_s=500000,
                 mss=1460):
        self.c, self.s = client, server
        self.seq = {"c": isn_c & 0xFFFFFFFF, "s": isn_s & 0xFFFFFFFF}
        self.mss = mss
        self.frames = []

    def _frame(self, side, payload, flags):
        a, b = (self.c, self.s) if side == "c" else (self.s, self.c)
        other = "s" if side == "c" else "c"
        return build_tcp_frame(payload, a[0], b[0], a[1], b[1], self.seq[side], self.seq[other], flags)

    def handshake(self, ts):
        self.frames.append((ts, self._frame("c", b"", TCP_SYN)))
        self.seq["c"] = (self.seq["c"] + 1) & 0xFFFFFFFF
        self.frames.append((ts + 1000, build_tcp_frame(b"", self.s[0], self.c[0], self.s[1], self.c[1],
                                                      self.seq["s"], self.seq["c"], TCP_SYN | TCP_ACK)))
        self.seq["s"] = (self.seq["s"] + 1) & 0xFFFFFFFF
        self.frames.append((ts + 2000, self._frame("c", b"", TCP_ACK)))

    def send(self, ts, side, data):
        data = bytes(data)
        for i in range(0, len(data), self.mss):
            chunk = data[i:i + self.mss]
            self.frames.append((ts, self._frame(side, chunk, TCP_ACK | TCP_PSH)))
            self.seq[side] = (self.seq[side] + len(chunk)) & 0xFFFFFFFF

    def close(self, ts):
        for side in list(self.seq):      # "c" then "s"
            self.frames.append((ts, self._frame(side, b"", TCP_FIN | TCP_ACK)))
            self.seq[side] = (self.seq[side] + 1) & 0xFFFFFFFF
