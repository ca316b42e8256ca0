# CME A/B channel assignment shared by the UDP framers (framing/udp.pyx, framing/cme_packets.pyx): each
# UDP destination port is a feed; a port not fixed yet takes the channel of its A/B partner (a port
# ab_offset away, CME's convention 14310/15310) when that one has a channel, else the next free one.
from libc.stdint cimport uint16_t, uint32_t

cdef enum:
    AB_NO_CHANNEL = 0xFFFF


cdef inline uint16_t ab_channel(uint16_t *chan_of, uint32_t ab_offset, uint16_t *next_channel,
                                uint16_t port) noexcept nogil:
    """The channel of port (assigned on first sight and remembered in chan_of[65536])."""
    cdef uint16_t ch = chan_of[port]
    cdef uint32_t p = port
    if ch != AB_NO_CHANNEL:
        return ch
    if ab_offset:
        if p >= ab_offset and chan_of[p - ab_offset] != AB_NO_CHANNEL:
            ch = chan_of[p - ab_offset]
        elif p + ab_offset < 65536 and chan_of[p + ab_offset] != AB_NO_CHANNEL:
            ch = chan_of[p + ab_offset]
    if ch == AB_NO_CHANNEL:
        ch = next_channel[0]
        next_channel[0] += 1
    chan_of[port] = ch
    return ch
