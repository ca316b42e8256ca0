# Cython view of csrc/include/fh/msg.h and fh/decoder.h.
from libc.stdint cimport uint16_t, uint32_t, uint64_t, uint8_t
from feedhandler.includes.record cimport fh_tick

cdef extern from "fh/msg.h" nogil:
    enum:
        FH_MSG_TS_NONE
        FH_MSG_TS_USER
        FH_MSG_TS_SW
        FH_MSG_TS_HW
        FH_MSG_TS_MASK
        FH_MSG_AFTER_GAP

    ctypedef struct fh_msg:
        const uint8_t *data
        uint32_t len
        uint16_t channel
        uint16_t flags
        uint64_t ts_recv
        uint64_t sequence

cdef extern from "fh/decoder.h" nogil:
    enum:
        FH_DECODE_MAX_RECORDS_PER_MSG
    ctypedef size_t (*fh_decode_fn)(void *ctx, const fh_msg *msgs, size_t n, fh_tick *out, size_t cap,
                                    size_t *n_out) noexcept nogil
