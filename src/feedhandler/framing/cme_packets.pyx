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

The messages point into the source's frames (no copy): they are valid until the source's next batch,
which the producer loop asks for only once they are decoded. One thread drives a framer.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, realloc
from libc.string cimport memset

from feedhandler.includes.msg cimport FH_MSG_TS_MASK, fh_msg
from feedhandler.includes.pcap cimport fh_pkt
from feedhandler.includes.net cimport FH_NET_N_REASONS, FH_NET_OK, fh_net_reason_name, fh_net_udp, fh_udp
from feedhandler.includes.endian cimport fh_load_be16

import ipaddress

cdef enum:
    NO_CHANNEL = 0xFFFF
    N_NET = 16


cdef inline int _is_tcp(const fh_pkt *p) noexcept nogil:
    """Is the frame IPv4 TCP? (Asked only of frames fh_net_udp rejected: Ethernet with up to 4 VLAN
    tags, Linux SLL / SLL2, raw IPv4, BSD loopback.)"""
    cdef uint32_t off = 0, et = 0, k
    cdef const uint8_t *d = p.data
    if p.linktype == 1:
        if p.caplen < 14:
            return 0
        et = fh_load_be16(d + 12)
        off = 14
        k = 0
        while (et == 0x8100 or et == 0x88A8) and k < 4 and p.caplen >= off + 4:
            et = fh_load_be16(d + off + 2)
            off += 4
            k += 1
        if et != 0x0800:
            return 0
    elif p.linktype == 113:
        if p.caplen < 16 or fh_load_be16(d + 14) != 0x0800:
            return 0
        off = 16
    elif p.linktype == 276:
        if p.caplen < 20 or fh_load_be16(d) != 0x0800:
            return 0
        off = 20
    elif p.linktype == 101 or p.linktype == 228:
        off = 0
    elif p.linktype == 0:
        off = 4
    else:
        return 0
    return p.caplen >= off + 20 and (d[off] >> 4) == 4 and d[off + 9] == 6


cdef inline uint16_t _channel(cme_framer *c, uint16_t port) noexcept nogil:
    cdef uint16_t ch = c.chan_of[port]
    cdef uint32_t p = port
    if ch != NO_CHANNEL:
        return ch
    if c.ab_offset:
        if p >= c.ab_offset and c.chan_of[p - c.ab_offset] != NO_CHANNEL:
            ch = c.chan_of[p - c.ab_offset]
        elif p + c.ab_offset < 65536 and c.chan_of[p + c.ab_offset] != NO_CHANNEL:
            ch = c.chan_of[p + c.ab_offset]
    if ch == NO_CHANNEL:
        ch = c.next_channel
        c.next_channel += 1
    c.chan_of[port] = ch
    return ch


cdef void _set_input(void *f, const fh_pkt *pkts, size_t n) noexcept nogil:
    cdef cme_framer *c = <cme_framer *>f
    cdef fh_msg *grown
    if n > c.msg_cap:
        grown = <fh_msg *>realloc(c.msgs, n * sizeof(fh_msg))
        if grown == NULL:
            n = c.msg_cap           # (never: the producer's batch is fixed) frame what fits, say so below
        else:
            c.msgs = grown
            c.msg_cap = n
    c.pkts = pkts
    c.n_pkts = n
    c.pos = 0


cdef int _input_done(void *f) noexcept nogil:
    cdef cme_framer *c = <cme_framer *>f
    return c.pos >= c.n_pkts


cdef size_t _run(void *f, const fh_msg **msgs) noexcept nogil:
    """Every UDP payload of the input batch, in arrival order (sequencing is the decoder's)."""
    cdef cme_framer *c = <cme_framer *>f
    cdef size_t n = 0
    cdef fh_udp u
    cdef const fh_pkt *p
    cdef fh_msg *m
    cdef int rc
    while c.pos < c.n_pkts:
        p = &c.pkts[c.pos]
        c.pos += 1
        c.frames += 1
        rc = fh_net_udp(p.data, p.caplen, p.linktype, &u)
        if rc != FH_NET_OK:
            if rc > 0 and rc < N_NET:
                c.net_reject[rc] += 1
            if _is_tcp(p):
                c.tcp += 1
            continue
        c.udp += 1
        if c.port_filter >= 0 and u.dst_port != c.port_filter:
            c.other_port += 1
            continue
        if c.dst_ip and u.dst_ip != c.dst_ip:
            c.other_group += 1
            continue
        m = &c.msgs[n]
        m.data = u.payload
        m.len = u.len
        m.channel = _channel(c, u.dst_port)
        m.flags = p.flags & FH_MSG_TS_MASK
        m.ts_recv = p.ts_ns
        m.sequence = 0
        c.payload_bytes += u.len
        n += 1
    c.kept += n
    msgs[0] = c.msgs
    return n


cdef size_t _finish(void *f, const fh_msg **msgs) noexcept nogil:
    return 0                        # nothing is held: the decoder sequences


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
    """

    def __cinit__(self):
        self.c = NULL

    def __init__(self, *, channels=None, int ab_offset=1000, udp_port=None, group=None):
        if FH_NET_N_REASONS > N_NET:
            raise RuntimeError("fh/net.h has more reject reasons than framing/cme_packets.pyx counts")
        if ab_offset < 0 or ab_offset > 65535:
            raise ValueError("ab_offset must be 0..65535")
        if udp_port is not None and not 0 < int(udp_port) < 65536:
            raise ValueError(f"udp_port must be 1..65535, not {udp_port}")
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
        self.c.port_filter = -1 if udp_port is None else int(udp_port)
        self.c.dst_ip = 0 if group is None else int(ipaddress.IPv4Address(group))
        self.c.ab_offset = ab_offset
        self.ops.fr = self.c
        self.ops.set_input = _set_input
        self.ops.input_done = _input_done
        self.ops.run = _run
        self.ops.finish = _finish

    def __dealloc__(self):
        if self.c != NULL:
            free(self.c.msgs)
            free(self.c)
            self.c = NULL

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
                "link_rejects": rejects}
