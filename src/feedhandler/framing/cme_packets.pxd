# CME MDP 3.0 UDP framing as a feed-core Framer (feedhandler.core.producer).
from libc.stdint cimport uint16_t, uint32_t, uint64_t
from feedhandler.core.producer cimport Framer
from feedhandler.includes.msg cimport fh_msg
from feedhandler.includes.pcap cimport fh_pkt

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

cdef class CmePacketFramer(Framer):
    cdef cme_framer *c
