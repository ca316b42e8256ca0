# distutils: sources = csrc/net.c
"""CME MDP 3.0 framing as a stage of the feed core: each UDP payload (the binary packet header --
MsgSeqNum, SendingTime -- and its messages) becomes one fh_msg with its sequencing channel, for the
MDP3 decoder, which arbitrates the A and B copies of a channel and sequences packets (first copy wins,
duplicates dropped, a look-ahead for the other line's copy, then a gap) and instruments (RptSeq).

Channels. Each UDP destination port is a feed; the A and B copies of one CME channel are different
ports that must share a channel. ``channels={port: n}`` fixes the channel of given ports; every other
port gets the channel of its A/B partner when one was already seen -- ports that differ by
``ab_offset`` (CME's convention: incremental A 14310, B 15310, so 1000 by default) -- and otherwise the
next free channel (in order of first appearance, after the fixed ones). ``ab_offset=0``: no pairing.

A/B hold (``window`` > 0): a packet whose MsgSeqNum is ahead of its channel's next one is copied and
held until the missing packets arrive (usually the other line's copy, a few packets behind) and is then
handed on in order; when ``window`` packets are held (or at the end of the input) the held packets of
that channel are handed on as they are, and the decoder declares the gap. So the order the decoder sees
does not depend on how the packets were batched: a live capture (batches of whatever is ready) and a
replay of the same packets give the same records. ``window=0`` leaves arbitration to the decoder's
look-ahead within a batch.

Snapshot ports (``snapshot_ports``, CME's market recovery groups). Their packets pass only while the
snapshot gate is open (:meth:`CmePacketFramer.open_snapshots`): a live handler joins the snapshot group
on a gap and leaves it once recovered, and a network that forwards only joined groups delivers nothing
in between; on a veth or a mirror port every frame arrives anyway, so the gate is what makes "left"
true. They are never held: a snapshot loop has no holes worth waiting for (the decoder, told which channels
are snapshot channels, resynchronises on them instead of declaring gaps).

Other messages point into the source's frames (no copy): they are valid until the source's next batch,
which the producer loop asks for only once they are decoded. One thread drives a framer.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcpy, memset

from feedhandler.includes.msg cimport FH_MSG_TS_MASK, fh_msg
from feedhandler.includes.pcap cimport fh_pkt
from feedhandler.framing.ab_channels cimport ab_channel
from feedhandler.includes.net cimport FH_NET_N_REASONS, FH_NET_NOT_UDP, FH_NET_OK, fh_net_reason_name, fh_net_udp, fh_udp
from feedhandler.includes.endian cimport fh_load_le32

import ipaddress

cdef enum:
    NO_CHANNEL = 0xFFFF
    N_NET = 16
    PACKET_HEADER = 12          # MsgSeqNum u32 + SendingTime u64
    MAX_WINDOW = 4096

DEFAULT_WINDOW = 64             # packets


cdef void _set_input(void *f, const fh_pkt *pkts, size_t n) noexcept nogil:
    cdef cme_framer *c = <cme_framer *>f
    cdef fh_msg *grown
    if n + 2 * c.window + 1 > c.msg_cap:
        grown = <fh_msg *>realloc(c.msgs, (n + 2 * c.window + 1) * sizeof(fh_msg))
        if grown == NULL:
            n = 0 if c.msg_cap < 2 * c.window + 1 else c.msg_cap - 2 * c.window - 1   # (out of memory)
        else:
            c.msgs = grown
            c.msg_cap = n + 2 * c.window + 1
    c.pkts = pkts
    c.n_pkts = n
    c.pos = 0


cdef int _input_done(void *f) noexcept nogil:
    cdef cme_framer *c = <cme_framer *>f
    return c.pos >= c.n_pkts


cdef inline void _free_handed_out(cme_framer *c) noexcept nogil:
    cdef uint32_t i
    for i in range(c.n_slots):
        if c.held[i].state == 2:
            c.held[i].state = 0
    c.n_handed = 0


cdef inline void _emit_held(cme_framer *c, cme_held *h, size_t *n) noexcept nogil:
    cdef fh_msg *m = &c.msgs[n[0]]
    m.data = h.buf
    m.len = h.len
    m.channel = h.channel
    m.flags = h.flags
    m.ts_recv = h.ts_recv
    m.sequence = 0
    h.state = 2
    c.n_held -= 1
    c.n_handed += 1
    n[0] += 1


cdef void _drain(cme_framer *c, uint16_t channel, size_t *n) noexcept nogil:
    """Hand on the held packets of channel that are next in sequence."""
    cdef cme_seq *q = &c.seqs[channel & 0xFF]
    cdef uint32_t i
    cdef bint found = True
    while found and c.n_held:
        found = False
        for i in range(c.n_slots):
            if c.held[i].state == 1 and (c.held[i].channel & 0xFF) == (channel & 0xFF) and c.held[i].seq == q.expected:
                _emit_held(c, &c.held[i], n)
                c.hold_filled += 1
                q.expected += 1
                found = True
                break


cdef void _give_up(cme_framer *c, uint16_t channel, size_t *n) noexcept nogil:
    """Hand on every held packet of channel in MsgSeqNum order (the decoder sees and reports the gap)."""
    cdef cme_seq *q = &c.seqs[channel & 0xFF]
    cdef uint32_t i, best
    cdef int k
    while True:
        k = -1
        for i in range(c.n_slots):
            if c.held[i].state == 1 and (c.held[i].channel & 0xFF) == (channel & 0xFF):
                if k < 0 or c.held[i].seq < best:
                    k = <int>i
                    best = c.held[i].seq
        if k < 0:
            return
        _emit_held(c, &c.held[k], n)
        c.hold_given_up += 1
        if best >= q.expected:
            q.expected = best + 1


cdef int _hold(cme_framer *c, const fh_udp *u, const fh_pkt *p, uint16_t ch, uint32_t seq) noexcept nogil:
    """Copy the packet into a free slot; 0 when no slot is free (or no memory)."""
    cdef uint32_t i
    cdef uint8_t *b
    cdef cme_held *h
    for i in range(c.n_slots):
        h = &c.held[i]
        if h.state != 0:
            continue
        if h.cap < u.len:
            b = <uint8_t *>realloc(h.buf, u.len)
            if b == NULL:
                return 0
            h.buf = b
            h.cap = u.len
        memcpy(h.buf, u.payload, u.len)
        h.len = u.len
        h.seq = seq
        h.channel = ch
        h.flags = p.flags & FH_MSG_TS_MASK
        h.ts_recv = p.ts_ns
        h.state = 1
        c.n_held += 1
        c.held_packets += 1
        if c.n_held > c.held_max:
            c.held_max = c.n_held
        return 1
    return 0


cdef size_t _run(void *f, const fh_msg **msgs) noexcept nogil:
    """Every UDP payload of the input batch, in arrival order, except that packets ahead of their
    channel's sequence wait (up to ``window``) for the missing ones (module docstring)."""
    cdef cme_framer *c = <cme_framer *>f
    cdef size_t n = 0
    cdef fh_udp u
    cdef const fh_pkt *p
    cdef fh_msg *m
    cdef int rc
    cdef uint16_t ch
    cdef uint32_t seq
    cdef cme_seq *q
    _free_handed_out(c)
    # Bounds: a packet adds at most 1 + window messages (itself and the held ones it releases), so n
    # stays below msg_cap (input + 2 window + 1); a new hold happens only while fewer than window slots
    # are held and fewer than window were handed out in this run, so 2 window slots always suffice.
    while c.pos < c.n_pkts and n + c.window + 1 < c.msg_cap and (c.window == 0 or c.n_handed < c.window):
        p = &c.pkts[c.pos]
        c.pos += 1
        c.frames += 1
        rc = fh_net_udp(p.data, p.caplen, p.linktype, &u)
        if rc != FH_NET_OK:
            if rc > 0 and rc < N_NET:
                c.net_reject[rc] += 1
            if rc == FH_NET_NOT_UDP and u.ip_proto == 6:      # TCP (fh_net_udp says which protocol)
                c.tcp += 1
            continue
        c.udp += 1
        if c.port_filter >= 0 and u.dst_port != c.port_filter:
            c.other_port += 1
            continue
        if c.dst_ip and u.dst_ip != c.dst_ip:
            c.other_group += 1
            continue
        if c.is_snapshot[u.dst_port]:
            if not c.snapshot_open:
                c.snapshot_skipped += 1
                continue
            c.snapshot_kept += 1
        ch = ab_channel(c.chan_of, c.ab_offset, &c.next_channel, u.dst_port)
        c.kept += 1
        c.payload_bytes += u.len
        if c.window and u.len >= PACKET_HEADER and not c.is_snapshot[u.dst_port]:
            seq = fh_load_le32(u.payload)
            q = &c.seqs[ch & 0xFF]
            if q.init and seq > q.expected:
                if _hold(c, &u, p, ch, seq):
                    if c.n_held >= c.window:        # the window is full: the hole is lost
                        _give_up(c, ch, &n)
                    continue
                _give_up(c, ch, &n)                 # (no memory for a copy) hand on what waits, then this
            elif q.init and seq == 1 and q.expected > 2:
                _give_up(c, ch, &n)                 # the sender restarted: what waited belongs to before
                q.expected = 1
            if not q.init:
                q.init = 1
                q.expected = seq
            if seq >= q.expected:
                q.expected = seq + 1
        m = &c.msgs[n]
        m.data = u.payload
        m.len = u.len
        m.channel = ch
        m.flags = p.flags & FH_MSG_TS_MASK
        m.ts_recv = p.ts_ns
        m.sequence = 0
        n += 1
        if c.n_held:
            _drain(c, ch, &n)
    msgs[0] = c.msgs
    return n


cdef size_t _finish(void *f, const fh_msg **msgs) noexcept nogil:
    """End of input: every held packet, channel by channel in MsgSeqNum order (then 0)."""
    cdef cme_framer *c = <cme_framer *>f
    cdef size_t n = 0
    cdef uint32_t i
    _free_handed_out(c)
    if c.msg_cap < c.window + 1:
        return 0
    for i in range(c.n_slots):
        if c.held[i].state == 1:
            _give_up(c, c.held[i].channel, &n)
    msgs[0] = c.msgs
    return n


cdef class CmePacketFramer(Framer):
    """UDP payloads of CME MDP 3.0 feeds, one message each, with their A/B channel (module docstring).

    Parameters
    ----------
    channels : {udp_port: channel}, optional
        Fixed channels (channel < 65535).
    ab_offset : int
        Ports that differ by this share a channel (default 1000; 0: no pairing).
    udp_port : int, optional
        Keep only datagrams to this destination port.
    group : str, optional
        Keep only datagrams to this IPv4 destination (a multicast group).
    window : int
        Packets held at most while a channel waits for a missing MsgSeqNum (0..4096; 0: no hold).
    snapshot_ports : iterable of int, optional
        Snapshot (market recovery) ports: passed on only while :meth:`open_snapshots` is on (module
        docstring); shut at first.
    """

    def __cinit__(self):
        self.c = NULL

    def __init__(self, *, channels=None, int ab_offset=1000, udp_port=None, group=None, int window=DEFAULT_WINDOW,
                 snapshot_ports=()):
        if FH_NET_N_REASONS > N_NET:
            raise RuntimeError("fh/net.h has more reject reasons than framing/cme_packets.pyx counts")
        if ab_offset < 0 or ab_offset > 65535:
            raise ValueError("ab_offset must be 0..65535")
        if not 0 <= window <= MAX_WINDOW:
            raise ValueError(f"window must be 0..{MAX_WINDOW} packets, not {window}")
        if udp_port is not None and not 0 < int(udp_port) < 65536:
            raise ValueError(f"udp_port must be 1..65535, not {udp_port}")
        snaps = sorted({int(p) for p in snapshot_ports or ()})
        for p in snaps:
            if not 0 < p < 65536:
                raise ValueError(f"snapshot port must be 1..65535, not {p}")
        fixed = {}
        for port, chan in dict(channels or {}).items():
            port, chan = int(port), int(chan)
            if not 0 <= port < 65536 or not 0 <= chan < NO_CHANNEL:
                raise ValueError(f"bad channel mapping {port}={chan} (port 0..65535, channel 0..65534)")
            fixed[port] = chan
        self.c = <cme_framer *>calloc(1, sizeof(cme_framer))
        if self.c == NULL:
            raise MemoryError()
        for i in range(65536):
            self.c.chan_of[i] = NO_CHANNEL
        for port, chan in fixed.items():
            self.c.chan_of[port] = chan
        self.c.next_channel = max(fixed.values(), default=-1) + 1
        for p in snaps:
            self.c.is_snapshot[p] = 1
        self.c.port_filter = -1 if udp_port is None else int(udp_port)
        self.c.dst_ip = 0 if group is None else int(ipaddress.IPv4Address(group))
        self.c.ab_offset = ab_offset
        self.c.window = window
        self.c.n_slots = 2 * window
        if window:
            self.c.held = <cme_held *>calloc(2 * window, sizeof(cme_held))
            if self.c.held == NULL:
                raise MemoryError()
        self.c.msg_cap = 2 * window + 2
        self.c.msgs = <fh_msg *>calloc(self.c.msg_cap, sizeof(fh_msg))
        if self.c.msgs == NULL:
            raise MemoryError()
        self.ops.fr = self.c
        self.ops.set_input = _set_input
        self.ops.input_done = _input_done
        self.ops.run = _run
        self.ops.finish = _finish

    def __dealloc__(self):
        if self.c != NULL:
            if self.c.held != NULL:
                for i in range(self.c.n_slots):
                    free(self.c.held[i].buf)
                free(self.c.held)
            free(self.c.msgs)
            free(self.c)
            self.c = NULL

    def open_snapshots(self, bint on):
        """Open (True) or shut (False) the snapshot gate. Any thread: the producer reads the flag at
        each snapshot packet; packets already framed are not called back."""
        self.c.snapshot_open = 1 if on else 0

    @property
    def snapshots_open(self):
        return bool(self.c.snapshot_open)

    def snapshot_ports(self):
        return [p for p in range(65536) if self.c.is_snapshot[p]]

    def channels(self):
        """{udp_port: channel} of the ports seen or fixed so far."""
        return {p: int(self.c.chan_of[p]) for p in range(65536) if self.c.chan_of[p] != NO_CHANNEL}

    def sessions(self):
        """Channel names by channel index: the ports of each channel joined by "/" (A/B: "14310/15310")."""
        by = {}
        for p, ch in self.channels().items():
            by.setdefault(ch, []).append(str(p))
        return ["/".join(by.get(ch, [])) for ch in range(max(by, default=-1) + 1)]

    def stats(self):
        """Framing counters: frames, udp, kept (payloads), other_port, other_group, payload_bytes,
        tcp_frames, link_rejects {reason: n}."""
        rejects = {fh_net_reason_name(i).decode(): int(self.c.net_reject[i]) for i in range(1, FH_NET_N_REASONS)}
        return {"frames": int(self.c.frames), "udp": int(self.c.udp), "kept": int(self.c.kept),
                "other_port": int(self.c.other_port), "other_group": int(self.c.other_group),
                "payload_bytes": int(self.c.payload_bytes), "tcp_frames": int(self.c.tcp),
                "link_rejects": rejects, "window": int(self.c.window), "held_packets": int(self.c.held_packets),
                "hold_filled": int(self.c.hold_filled), "hold_given_up": int(self.c.hold_given_up),
                "held_max": int(self.c.held_max), "snapshot_kept": int(self.c.snapshot_kept),
                "snapshot_skipped": int(self.c.snapshot_skipped)}
