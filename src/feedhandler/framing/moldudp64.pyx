# distutils: sources = csrc/net.c csrc/moldudp64.c
"""MoldUDP64 framing as a stage of the feed core: Ethernet/VLAN/IPv4/UDP (csrc/net.c), MoldUDP64
sequencing with a reorder window and gap records (csrc/moldudp64.c), one fh_msg per message.

:class:`MoldUdp64Framer` owns an ``fh_framer`` and hands the producer loop its ``framer_ops``; its
``stats()`` are the framing counters a feed reports. One thread drives it (the producer's).
"""
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from feedhandler.includes.msg cimport fh_msg
from feedhandler.includes.pcap cimport fh_pkt
from feedhandler.includes.net cimport FH_NET_N_REASONS, fh_net_reason_name
from feedhandler.includes.moldudp64 cimport (
    FH_MOLD_MAX_FILTER, FH_MOLD_MAX_WINDOW, FH_MOLD_N_MALFORMED, FH_MOLD_SESSION_LEN,
    fh_framer, fh_framer_config, fh_framer_finish, fh_framer_free, fh_framer_input_done,
    fh_framer_missing_copy, fh_framer_n_sessions, fh_framer_new, fh_framer_run, fh_framer_session,
    fh_framer_set_input, fh_framer_stats, fh_framer_stats_get, fh_missing_range, fh_mold_malformed_name,
)

import ipaddress

DEFAULT_REORDER_WINDOW = 64     # packets


cdef void _set_input(void *f, const fh_pkt *pkts, size_t n) noexcept nogil:
    fh_framer_set_input(<fh_framer *>f, pkts, n)


cdef int _input_done(void *f) noexcept nogil:
    return fh_framer_input_done(<const fh_framer *>f)


cdef size_t _run(void *f, const fh_msg **msgs) noexcept nogil:
    return fh_framer_run(<fh_framer *>f, msgs)


cdef size_t _finish(void *f, const fh_msg **msgs) noexcept nogil:
    return fh_framer_finish(<fh_framer *>f, msgs)


cdef class MoldUdp64Framer(Framer):
    """MoldUDP64 framing and sequencing.

    Parameters
    ----------
    reorder_window : int
        Packets held while waiting for a hole to fill (0..4096); a hole not filled when the window
        overflows (or at end of input) is reported lost.
    reorder_window_messages : int, optional
        Also bound the window by the messages held (whichever bound is hit first).
    sequencing : bool
        False: no sequencing (every message in arrival order, numbered on per session).
    udp_port, group : optional
        Keep only UDP datagrams to this destination port / IPv4 address.
    channel_filter : iterable of int or str, optional
        Keep only these channels: indices (sessions in order of appearance) or session names.
    publisher_id : int
        DBN publisher id of the gap records.
    """

    def __cinit__(self):
        self.fr = NULL

    def __init__(self, *, reorder_window=DEFAULT_REORDER_WINDOW, reorder_window_messages=None,
                 sequencing=True, udp_port=None, group=None, channel_filter=None, publisher_id=0):
        cdef fh_framer_config cfg
        if not 0 <= int(reorder_window) <= FH_MOLD_MAX_WINDOW:
            raise ValueError(f"reorder_window must be 0..{FH_MOLD_MAX_WINDOW} packets, not {reorder_window}")
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
        self.fr = fh_framer_new(&cfg)
        if self.fr == NULL:
            raise MemoryError()
        self.ops.fr = self.fr
        self.ops.set_input = _set_input
        self.ops.input_done = _input_done
        self.ops.run = _run
        self.ops.finish = _finish

    def __dealloc__(self):
        if self.fr != NULL:
            fh_framer_free(self.fr)
            self.fr = NULL

    def missing_ranges(self):
        """Sequence ranges given up on: [(session, first_seq, last_seq)] (inclusive), oldest first."""
        cdef size_t n = fh_framer_missing_copy(self.fr, NULL, 0)
        cdef fh_missing_range *buf
        out = []
        if n == 0:
            return out
        buf = <fh_missing_range *>malloc(n * sizeof(fh_missing_range))
        if buf == NULL:
            raise MemoryError()
        try:
            n = min(n, fh_framer_missing_copy(self.fr, buf, n))
            for i in range(n):
                out.append((PyBytes_FromStringAndSize(buf[i].session, FH_MOLD_SESSION_LEN).decode("latin-1"),
                            buf[i].first, buf[i].last))
        finally:
            free(buf)
        return out

    def sessions(self):
        """MoldUDP64 session names by channel index."""
        cdef size_t n = fh_framer_n_sessions(self.fr)
        return [PyBytes_FromStringAndSize(fh_framer_session(self.fr, <uint16_t>i), FH_MOLD_SESSION_LEN)
                .decode("latin-1") for i in range(n)]

    def stats(self):
        """Framing counters (a snapshot; safe while the producer runs)."""
        cdef const fh_framer_stats *f = fh_framer_stats_get(self.fr)
        rejects = {fh_net_reason_name(i).decode(): f.net_reject[i] for i in range(1, FH_NET_N_REASONS)}
        malformed = {fh_mold_malformed_name(i).decode(): f.malformed[i] for i in range(FH_MOLD_N_MALFORMED)}
        return {
            "packets": f.packets, "link_rejects": rejects, "udp_datagrams": f.udp_datagrams,
            "filtered": f.filtered, "moldudp64_packets": f.mold_packets, "heartbeats": f.heartbeats,
            "end_of_session": f.end_of_session, "messages": f.messages, "duplicates": f.duplicate_messages,
            "duplicate_packets": f.duplicate_packets, "out_of_order": f.out_of_order, "reordered": f.reordered,
            "gaps": f.gaps, "gaps_filled": f.gaps_filled, "gaps_lost": f.gaps_lost,
            "filled_messages": f.filled_messages, "lost_messages": f.lost_messages, "resets": f.resets,
            "after_end_of_session": f.after_end_of_session, "filtered_sessions": f.filtered_sessions,
            "malformed": malformed, "held_max": f.held_max, "held_slots": f.held_slots,
            "zero_sequence_packets": f.zero_sequence_packets, "hold_failed": f.hold_failed,
            "gap_records": f.records,
        }
