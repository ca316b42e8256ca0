# The Feed's native core, for other Cython modules that drive the same framing -> decoder path from
# another packet source (live capture): fill a feed_core with a source function, an fh_framer and a
# decoder, then call feed_fill() in nogil code. Contract: one thread drives a core at a time; packets
# returned by src_next stay valid until its next call (the framer may point into them until then).
from libc.stdint cimport uint64_t
from feedhandler.includes.msg cimport fh_decode_fn, fh_msg
from feedhandler.includes.record cimport fh_tick
from feedhandler.includes.pcap cimport fh_filesrc, fh_pkt
from feedhandler.includes.moldudp64 cimport fh_framer
from feedhandler.includes.ring cimport fh_ring

cdef extern from "<pthread.h>" nogil:
    ctypedef unsigned long pthread_t

# Next batch of frames from a capture source: fills pkts[0..cap), returns how many (0: end of input).
ctypedef size_t (*fh_source_next_fn)(void *src, fh_pkt *pkts, size_t cap) noexcept nogil

cdef struct feed_core:
    fh_source_next_fn src_next
    void *src_ctx
    fh_framer *fr
    fh_pkt *pkts                # pkt_cap frames, the source's batch
    size_t pkt_cap
    const fh_msg *msgs          # the framer's current output
    size_t n_msgs
    size_t i_msgs
    fh_decode_fn fn             # NULL: framing only (gap records are still produced)
    void *ctx
    int src_eof
    int finished                # every record has been produced
    int error                   # 1: the decoder made no progress with all the room given; 2: framer stuck
    uint64_t records            # records written
    int stop                    # set by Feed.stop() (atomic)
    fh_ring *ring
    fh_tick *local              # producer-thread batch

# Frames and decodes until out[0..cap) is full or the input ends; returns records written.
cdef size_t feed_fill(feed_core *c, fh_tick *out, size_t cap) noexcept nogil

cdef class Feed:
    cdef feed_core core
    cdef fh_filesrc *src
    cdef pthread_t thread
    cdef bint started, joined
    cdef object dec
    cdef object ring_obj
    cdef object path
    cdef object _midnight_ns
    cdef _set_decoder(self, decoder)
    cdef _raise_error(self)
