# Cython view of the ITCH 5.0 decoder: its C state (csrc/include/fh/itch50.h), its fh_decode_fn and the
# extension type that owns one decoder. Wire constants are in itch50_wire.pxd (generated).
#
# A pipeline stage drives a decoder without Python per batch:
#     from feedhandler.protocols.itch50 cimport Itch50Decoder
#     cdef Itch50Decoder dec = Itch50Decoder(midnight_ns, publisher_id, channel_id)
#     consumed = dec.fn(dec.ctx, msgs, n, out, cap, &n_out)     # nogil
from libc.stdint cimport uint8_t, uint16_t, uint64_t

from feedhandler.includes.msg cimport fh_decode_fn, fh_msg
from feedhandler.includes.record cimport fh_tick


cdef extern from "fh/itch50.h" nogil:
    enum:
        FH_ITCH50_MAX_RECORDS_PER_MSG

    ctypedef struct fh_itch50_counters:
        uint64_t messages[256]
        uint64_t unknown[256]
        uint64_t bad_length[256]
        uint64_t empty
        uint64_t records
        uint64_t cross_shares_saturated
        uint64_t price_overflow

    ctypedef struct fh_itch50_ctx:
        uint64_t midnight_ns
        uint16_t publisher_id
        uint8_t channel_id
        fh_itch50_counters counters


# The decode function (an fh_decode_fn; ctx is an fh_itch50_ctx *). Never fails: see fh/decoder.h.
cdef size_t fh_itch50_decode(void *ctx, const fh_msg *msgs, size_t n, fh_tick *out, size_t cap,
                             size_t *n_out) noexcept nogil


cdef class Itch50Decoder:
    # --- what a pipeline uses (fields) ---
    cdef void *ctx           # &self.state, stable for the object's lifetime
    cdef fh_decode_fn fn     # fh_itch50_decode
    cdef fh_itch50_ctx state # configuration and counters (owned by the one decoding thread)
    # --- Python conveniences ---
    cdef readonly uint64_t last_calls  # fn calls made by the last decode_messages/decode_binaryfile
