# CME MDP 3.0 UDP framing as a feed-core Framer (feedhandler.core.producer).
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from feedhandler.core.producer cimport Framer
from feedhandler.includes.msg cimport fh_msg
from feedhandler.includes.pcap cimport fh_pkt

cdef struct cme_held:
    uint8_t *buf                # a copy of the payload (the source's frame is gone by the time it is used)
    uint32_t cap
    uint32_t len
    uint32_t seq
    uint16_t channel
    uint16_t flags
    uint64_t ts_recv
    int state                   # 0 free, 1 held, 2 handed out in the last run (free at the next)

cdef struct cme_seq:
    uint32_t expected
    int init

cdef struct cme_framer:
    const fh_pkt *pkts          # the input batch
    size_t n_pkts
    size_t pos                  # input consumed up to here
    fh_msg *msgs                # one per kept payload
    size_t msg_cap
    int port_filter             # -1: every port
    uint32_t dst_ip             # 0: every destination
    uint32_t ab_offset
    uint16_t next_channel
    uint16_t chan_of[65536]     # port -> channel, 0xFFFF unassigned
    uint64_t frames
    uint64_t udp
    uint64_t kept
    uint64_t other_port
    uint64_t other_group
    uint64_t payload_bytes
    uint64_t tcp                # IPv4 TCP frames (among net_reject["not_udp"]): reported, not decoded
    uint64_t net_reject[16]
    # A/B hold: a packet ahead of its channel's next MsgSeqNum waits (copied) for the other line's copy
    uint32_t window             # packets held at most (0: no hold, the decoder's in-batch look-ahead only)
    cme_held *held              # 2 * window slots: held ones, and those handed out in the current run
    uint32_t n_slots
    uint32_t n_held
    uint32_t n_handed           # slots handed out in the current run (free at the next)
    cme_seq seqs[256]           # by channel & 0xFF (as the decoder's channels)
    uint64_t held_packets       # packets that waited
    uint64_t hold_filled        # held packets released in order once their hole was filled
    uint64_t hold_given_up      # held packets released out of order (window full, or end of input)
    uint64_t held_max
    # snapshot (market recovery) ports: passed on only while the gate is open, never held
    uint8_t is_snapshot[65536]  # port -> 1 for a snapshot port
    int snapshot_open           # the gate: set by the owner (a monitor thread), read by the producer
    uint64_t snapshot_kept      # snapshot packets passed on
    uint64_t snapshot_skipped   # snapshot packets dropped while the gate was shut (not joined)

cdef class CmePacketFramer(Framer):
    cdef cme_framer *c
