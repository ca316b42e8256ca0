# The feed core's producer loop, for the Cython modules that plug a source, a framer and a decoder
# into it (pipeline.Feed, capture.live._live.LiveFeed, framing.*).
#
# One packet's way: source.next(pkts) -> framer (set_input / run / finish: packets in, fh_msg out,
# in sequence order) -> decoder (an fh_decode_fn and its ctx, fh/decoder.h) -> 64-byte records, into
# the caller's batch (Producer.read) or a Ring (Producer.start: a native producer thread).
#
# Contract: one thread drives a producer at a time. Frames returned by the source stay valid until its
# next call; the framer's messages may point into them (or into the framer's own buffers) and stay
# valid until the framer's next run/finish. The decoder copies what it needs into records.
from libc.stdint cimport uint64_t
from feedhandler.includes.msg cimport fh_decode_fn, fh_msg
from feedhandler.includes.record cimport fh_tick
from feedhandler.includes.pcap cimport fh_pkt
from feedhandler.includes.ring cimport fh_ring
from feedhandler.includes.latency cimport FH_LAT_BUCKETS

cdef extern from "<pthread.h>" nogil:
    ctypedef unsigned long pthread_t

# A packet source: fills pkts[0..cap) with the next frames and returns how many. A live source waits up
# to timeout_ms for traffic and returns 0 when nothing is ready; a file source ignores timeout_ms and
# returns 0 only at the end of its input.
ctypedef size_t (*fh_source_next_fn)(void *src, fh_pkt *pkts, size_t cap, int timeout_ms) noexcept nogil
ctypedef void (*fh_source_wake_fn)(void *src) noexcept nogil

# A sink on the receive thread (latency mode): applies n records in place (the books: BookSet's
# fh_bookset_apply, MbpBookSet's apply_ticks) before they are published to the ring. Returns n.
ctypedef size_t (*fh_sink_fn)(void *ctx, fh_tick *ticks, size_t n) noexcept nogil

# A framer (MoldUDP64 sequencing, the CME packet header's plain UDP, ...): packets in, messages out.
ctypedef void (*fh_framer_input_fn)(void *fr, const fh_pkt *pkts, size_t n) noexcept nogil
ctypedef int (*fh_framer_done_fn)(void *fr) noexcept nogil
ctypedef size_t (*fh_framer_run_fn)(void *fr, const fh_msg **msgs) noexcept nogil

cdef struct framer_ops:
    void *fr
    fh_framer_input_fn set_input    # a new batch of packets (the previous one is consumed)
    fh_framer_done_fn input_done    # the batch is consumed
    fh_framer_run_fn run            # next messages of the batch (0: consumed, nothing pending)
    fh_framer_run_fn finish         # end of input: what is still held (call until 0)

cdef class Framer:
    """Base of the framers the producer drives (framing.moldudp64.MoldUdp64Framer,
    framing.cme_packets.CmePacketFramer, framing.tcp.TcpSessionFramer): ``ops`` is filled by the
    subclass. ``failure``: an exception the framer stopped on (its ops cannot raise); the producer
    ends the input and re-raises it from read() / join()."""
    cdef framer_ops ops
    cdef public object failure

cdef enum:
    PRODUCER_MAX_SINKS = 4

cdef enum producer_wire:
    WIRE_TS_RECV = 0    # "wire" = the record's ts_recv (the capture clock: kernel stamp or user clock)
    WIRE_TS_EVENT = 1   # "wire" = the record's ts_event (a sender that writes its clock into the
                        # messages: bench/latency_tools.c; ITCH timestamps are ns since midnight)

cdef enum producer_mode:
    PRODUCER_FILE = 0   # source 0 = end of input; stop() abandons the rest
    PRODUCER_LIVE = 1   # source 0 = nothing ready (publish what we have); stop() ends the input, and
                        # what was received is framed, decoded and published before the ring closes

cdef struct producer:
    producer_mode mode
    fh_source_next_fn src_next
    fh_source_wake_fn src_wake
    void *src_ctx
    framer_ops fr
    fh_pkt *pkts                # pkt_cap frames: the source's batch
    size_t pkt_cap
    const fh_msg *msgs          # the framer's current output
    size_t n_msgs
    size_t i_msgs
    fh_decode_fn fn             # NULL: framing only (the framer's records, e.g. gaps, still come out)
    void *ctx
    int stop                    # set by Producer.stop() (atomic)
    int src_eof
    int finished                # every record has been produced
    int error                   # 1: the decoder made no progress with all the room given; 2: framer stuck
    uint64_t records            # records written
    uint64_t publishes          # ring publishes (thread)
    fh_ring *ring
    fh_tick *local              # thread batch (ring wrap)
    int lat_on                  # record wire (ts_recv) -> ring latencies
    uint64_t lat_ring[FH_LAT_BUCKETS]
    # latency mode (run to completion on the receive thread, Producer.start(latency=True))
    int spin                    # busy poll: the source is asked with timeout 0
    uint64_t spin_ns            # > 0: wait in the source once idle this long (0: never sleep)
    uint64_t idle_since         # CLOCK_MONOTONIC ns the current idle spell began (0: not idle)
    uint64_t spins_slept        # source waits entered after the spin budget
    size_t src_cap              # frames per source call (latency mode: small, a packet is applied at once)
    size_t n_sinks
    fh_sink_fn sinks[PRODUCER_MAX_SINKS]
    void *sink_ctx[PRODUCER_MAX_SINKS]
    producer_wire wire
    uint64_t lat_book[FH_LAT_BUCKETS]       # wire -> book per book message (MBO and trade records)
    uint64_t lat_book_pkt[FH_LAT_BUCKETS]   # wire -> book per packet (one sample per distinct wire stamp)
    uint64_t applied                        # records applied by the sinks
    uint64_t fanout_dropped                 # records the ring had no room for (a slow fan-out reader)

# Frames and decodes into out[0..cap); returns the records written. FILE: until out is full or the
# input ends. LIVE: returns as soon as the source has nothing more ready (or after one idle wait).
cdef size_t producer_fill(producer *c, fh_tick *out, size_t cap) noexcept nogil

cdef class Producer:
    cdef producer core
    cdef pthread_t thread
    cdef bint started, joined
    cdef object framer_obj, dec, src_obj, ring_obj, sink_objs
    cdef _plug(self, Framer framer, decoder, producer_mode mode)
    cdef _raise_error(self)
    cdef _raise_failure(self)
    cdef void _stop_and_join(self) noexcept
