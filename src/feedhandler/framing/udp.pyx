# distutils: sources = csrc/pcap.c csrc/net.c
# cython: language_level=3, boundscheck=False, wraparound=False
"""UDP payloads of a capture file, in batches: the framing stage of UDP feeds other than MoldUDP64
(CME MDP 3.0 today).

One packet's way: ``fh_filesrc`` (csrc/pcap.c: pcap / pcapng, gzip, format from the bytes) ->
``fh_net_udp`` (csrc/net.c: Ethernet/VLAN/IPv4/UDP) -> the payload is copied into this reader's batch
buffer, with its offset, length, capture time and channel. One :meth:`UdpBatches.read` runs that loop
in nogil C for up to ``batch_packets`` packets (or ``batch_bytes`` of payload) and hands the whole batch
to Python as numpy arrays, shaped for ``Mdp3Decoder.decode_buffer(buf, offsets, lengths, ts_recv,
channel)``: Python enters once per batch, never per packet.

Channels (sequencing domains). Each UDP destination port is a feed; the A and B copies of one CME
channel are different ports that must share a channel so that the decoder arbitrates them (first copy
wins, duplicates dropped). ``channels={port: n}`` fixes the channel of given ports; every other port
gets the channel of its A/B partner when one was already seen -- by default ports that differ by
``ab_offset`` = 1000 (CME's convention: incremental A 14310, B 15310) -- and otherwise the next free
channel number (in order of first appearance, after the fixed ones). ``ab_offset=0`` disables pairing.

Ownership: the arrays :meth:`read` returns are views of this reader's buffers and stay valid until
the next ``read`` or ``close``; copy them to keep them. One thread per reader.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy
from feedhandler.includes.pcap cimport (
    FH_SRC_EEMPTY, FH_SRC_EFORMAT, FH_SRC_N_DAMAGE, fh_file_format_name, fh_filesrc, fh_filesrc_close,
    fh_filesrc_damage_name, filesrc_damage, fh_filesrc_next, fh_filesrc_open, fh_filesrc_stats, fh_filesrc_stats_get, fh_pkt,
)
from feedhandler.framing.ab_channels cimport ab_channel
from feedhandler.includes.net cimport FH_NET_N_REASONS, FH_NET_NOT_UDP, FH_NET_OK, fh_net_reason_name, fh_net_udp, fh_udp


import os

import numpy as np

from feedhandler.errors import CaptureError, CaptureFormatError

__all__ = ["UdpBatches"]

cdef enum:
    PKT_BATCH = 1024          # fh_pkt slots asked of the file source per call
    MAX_UDP_PAYLOAD = 65536   # bytes: a UDP payload never exceeds this (16-bit length)
    NO_CHANNEL = 0xFFFF
    N_DAMAGE = 12             # FH_SRC_N_DAMAGE (checked in __init__)
    N_NET = 11                # FH_NET_N_REASONS (checked in __init__)


cdef struct udp_core:
    fh_filesrc *src
    fh_pkt pkts[PKT_BATCH]
    size_t n_pkts              # packets in pkts
    size_t pos                 # next packet of pkts to look at
    int eof
    # filters and channel map
    int port_filter            # -1: every port
    uint32_t ab_offset
    uint16_t next_channel
    uint16_t chan_of[65536]    # port -> channel, NO_CHANNEL unassigned
    # counters
    uint64_t frames
    uint64_t udp
    uint64_t kept
    uint64_t other_port
    uint64_t payload_bytes
    uint64_t net_reject[N_NET]
    uint64_t tcp               # IPv4 TCP frames (among net_reject["not_udp"]): reported, not decoded


cdef size_t _fill(udp_core *c, uint8_t *buf, size_t buf_cap, uint64_t *off, uint32_t *ln, uint64_t *ts,
                  uint16_t *ch, size_t max_pkts, size_t *used_out) noexcept nogil:
    """Copy the next UDP payloads into buf until max_pkts, the buffer is full, or the input ends."""
    cdef size_t n = 0, used = 0
    cdef fh_udp u
    cdef const fh_pkt *p
    cdef int rc
    while n < max_pkts:
        if c.pos == c.n_pkts:
            if c.eof:
                break
            c.n_pkts = fh_filesrc_next(c.src, c.pkts, PKT_BATCH)
            c.pos = 0
            if c.n_pkts == 0:
                c.eof = 1
                break
        p = &c.pkts[c.pos]
        rc = fh_net_udp(p.data, p.caplen, p.linktype, &u)
        if rc != FH_NET_OK:
            c.frames += 1
            c.pos += 1
            if rc > 0 and rc < N_NET:
                c.net_reject[rc] += 1
            if rc == FH_NET_NOT_UDP and u.ip_proto == 6:      # TCP (fh_net_udp says which protocol)
                c.tcp += 1
            continue
        if c.port_filter >= 0 and u.dst_port != c.port_filter:
            c.frames += 1
            c.udp += 1
            c.other_port += 1
            c.pos += 1
            continue
        if u.len > buf_cap - used:
            break                   # the batch is full; this packet starts the next one (pkts stay valid)
        c.frames += 1
        c.udp += 1
        c.pos += 1
        memcpy(buf + used, u.payload, u.len)
        off[n] = used
        ln[n] = u.len
        ts[n] = p.ts_ns
        ch[n] = ab_channel(c.chan_of, c.ab_offset, &c.next_channel, u.dst_port)
        used += u.len
        n += 1
    c.kept += n
    c.payload_bytes += used
    used_out[0] = used
    return n


cdef class UdpBatches:
    """Batches of UDP payloads from a pcap / pcapng (gzip too) file; see the module docstring.

    Parameters
    ----------
    path : capture file.
    batch_packets : most payloads per batch (default 8192).
    batch_bytes : payload buffer size (default 8 MiB, at least 64 KiB: one UDP payload always fits).
    channels : {udp_port: channel} fixed channels (channel < 65535).
    ab_offset : ports that differ by this share a channel (default 1000; 0: no pairing).
    udp_port : keep only datagrams to this destination port.
    """

    cdef udp_core *c
    cdef object path
    cdef object _buf, _off, _len, _ts, _ch
    cdef size_t batch_packets

    def __cinit__(self):
        self.c = NULL

    def __init__(self, path, int batch_packets=8192, Py_ssize_t batch_bytes=8 << 20, channels=None,
                 int ab_offset=1000, udp_port=None):
        cdef char err[256]
        cdef int rc
        cdef udp_core *c
        if FH_SRC_N_DAMAGE != N_DAMAGE or FH_NET_N_REASONS != N_NET:
            raise RuntimeError("fh/pcap.h or fh/net.h reason counts changed: update framing/udp.pyx")
        if batch_packets < 1:
            raise ValueError("batch_packets must be positive")
        if ab_offset < 0 or ab_offset > 65535:
            raise ValueError("ab_offset must be 0..65535")
        self.path = os.fspath(path)
        c = <udp_core *>calloc(1, sizeof(udp_core))
        if c == NULL:
            raise MemoryError()
        self.c = c
        for i in range(65536):
            c.chan_of[i] = NO_CHANNEL
        c.port_filter = -1 if udp_port is None else int(udp_port)
        c.ab_offset = ab_offset
        top = -1
        for port, chan in dict(channels or {}).items():
            port, chan = int(port), int(chan)
            if not 0 <= port < 65536 or not 0 <= chan < NO_CHANNEL:
                raise ValueError(f"bad channel mapping {port}={chan} (port 0..65535, channel 0..65534)")
            c.chan_of[port] = chan
            top = max(top, chan)
        c.next_channel = top + 1
        bpath = self.path.encode()
        rc = fh_filesrc_open(&c.src, bpath, err, sizeof(err))
        if rc != 0:
            msg = err.decode("utf-8", "replace")
            if rc == FH_SRC_EFORMAT or rc == FH_SRC_EEMPTY:
                raise CaptureFormatError(f"{self.path}: {msg}")
            if -10000 < rc < 0:
                raise CaptureError(-rc, msg, self.path)
            raise CaptureError(msg)
        self.batch_packets = batch_packets
        self._buf = np.empty(max(batch_bytes, MAX_UDP_PAYLOAD), np.uint8)
        self._off = np.empty(batch_packets, np.uint64)
        self._len = np.empty(batch_packets, np.uint32)
        self._ts = np.empty(batch_packets, np.uint64)
        self._ch = np.empty(batch_packets, np.uint16)

    def __dealloc__(self):
        self._close()

    cdef void _close(self) noexcept:
        if self.c != NULL:
            if self.c.src != NULL:
                fh_filesrc_close(self.c.src)
            free(self.c)
            self.c = NULL

    def close(self):
        self._close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._close()

    def read(self):
        """The next batch ``(buf, offsets, lengths, ts_recv, channel)`` or None at the end of the file.

        Payload i is ``buf[offsets[i] : offsets[i] + lengths[i]]``. Views valid until the next call.
        """
        if self.c == NULL:
            raise ValueError("read from a closed UdpBatches")
        cdef uint8_t[::1] buf = self._buf
        cdef uint64_t[::1] off = self._off
        cdef uint32_t[::1] ln = self._len
        cdef uint64_t[::1] ts = self._ts
        cdef uint16_t[::1] ch = self._ch
        cdef size_t n, used = 0
        with nogil:
            n = _fill(self.c, &buf[0], buf.shape[0], &off[0], &ln[0], &ts[0], &ch[0], self.batch_packets, &used)
        if n == 0:
            return None
        return self._buf[:used], self._off[:n], self._len[:n], self._ts[:n], self._ch[:n]

    def channels(self):
        """{udp_port: channel} of the ports seen or fixed so far."""
        if self.c == NULL:
            return {}
        return {p: int(self.c.chan_of[p]) for p in range(65536) if self.c.chan_of[p] != NO_CHANNEL}

    def progress(self):
        """(bytes read, file size) for a progress line."""
        if self.c == NULL:
            return 0, 0
        cdef const fh_filesrc_stats *s = fh_filesrc_stats_get(self.c.src)
        return int(s.bytes_read), int(s.total_bytes)

    def stats(self):
        """Counters: file (format, gzip, damage by reason), frames, udp, kept, non-UDP frames by reason."""
        if self.c == NULL:
            raise ValueError("stats of a closed UdpBatches")
        cdef const fh_filesrc_stats *s = fh_filesrc_stats_get(self.c.src)
        cdef int i
        damage = {fh_filesrc_damage_name(i).decode(): int(s.damage[i]) for i in range(N_DAMAGE)}
        rejects = {fh_net_reason_name(i).decode(): int(self.c.net_reject[i]) for i in range(1, N_NET)}
        return {
            "format": fh_file_format_name(s.format).decode(), "gzip": bool(s.gzip),
            "total_bytes": int(s.total_bytes), "bytes_read": int(s.bytes_read),
            "file_packets": int(s.packets), "frames": int(self.c.frames), "udp": int(self.c.udp),
            "kept": int(self.c.kept), "other_port": int(self.c.other_port),
            "payload_bytes": int(self.c.payload_bytes), "file_damage": damage, "link_rejects": rejects,
            "tcp_frames": int(self.c.tcp),
            **{k: v for k, v in filesrc_damage(s).items() if k != "file_damage"},
        }
