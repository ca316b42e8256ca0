# Cython view of csrc/include/fh/ring.h: the SPSC ring of 64-byte tick slots.
# The threading/ownership contract is at the top of fh/ring.h. The data-path functions (claim,
# publish, push, peek, wait, release, close, stats) are static inline in the header, so a module that
# cimports them needs no extra C source; the lifecycle functions (create, attach, destroy) live in
# csrc/ring.c: make rings through feedhandler.ring.Ring (its `.ring` pointer) or compile csrc/ring.c.
from libc.stdint cimport uint64_t
from feedhandler.includes.record cimport fh_tick

cdef extern from "fh/ring.h" nogil:
    ctypedef enum fh_ring_overflow:
        FH_RING_BLOCK
        FH_RING_DROP

    enum:
        FH_RING_VERSION
        FH_RING_LINE
        FH_RING_NAME_MAX
    const uint64_t FH_RING_MAX_CAPACITY
    const uint64_t FH_RING_FOREVER

    ctypedef struct fh_ring:
        pass

    ctypedef struct fh_ring_stats:
        uint64_t capacity
        uint64_t published
        uint64_t consumed
        uint64_t dropped
        uint64_t producer_waits
        uint64_t consumer_empty_polls

    # lifecycle (csrc/ring.c): 0 or -errno
    int fh_ring_create(fh_ring **out, uint64_t capacity, fh_ring_overflow policy)
    int fh_ring_create_shm(fh_ring **out, const char *name, uint64_t capacity, fh_ring_overflow policy)
    int fh_ring_attach_shm(fh_ring **out, const char *name)
    void fh_ring_destroy(fh_ring *r)
    const char *fh_ring_strerror(int err)

    # geometry (any thread)
    uint64_t fh_ring_capacity(const fh_ring *r)
    fh_ring_overflow fh_ring_policy(const fh_ring *r)
    const char *fh_ring_name(const fh_ring *r)
    const fh_tick *fh_ring_slots(const fh_ring *r)

    # producer
    uint64_t fh_ring_claim(fh_ring *r, uint64_t want, fh_tick **first)
    void fh_ring_publish(fh_ring *r, uint64_t n)
    uint64_t fh_ring_push(fh_ring *r, const fh_tick *src, uint64_t n)
    uint64_t fh_ring_push_for(fh_ring *r, const fh_tick *src, uint64_t n, uint64_t timeout_ns)
    void fh_ring_close(fh_ring *r)

    # consumer
    uint64_t fh_ring_peek(fh_ring *r, uint64_t max, const fh_tick **first)
    uint64_t fh_ring_wait(fh_ring *r, uint64_t max, const fh_tick **first)
    uint64_t fh_ring_wait_for(fh_ring *r, uint64_t max, const fh_tick **first, uint64_t timeout_ns)
    void fh_ring_release(fh_ring *r, uint64_t n)
    uint64_t fh_ring_readable(fh_ring *r)

    # any thread
    int fh_ring_is_closed(const fh_ring *r)
    int fh_ring_is_finished(const fh_ring *r)
    void fh_ring_get_stats(const fh_ring *r, fh_ring_stats *out)
