# feedhandler.books.mbp: price-level (MBP, multi-depth) books per instrument, fed by fh_mbp_update records
# (CME MDP 3.0 MDIncrementalRefreshBook / SnapshotFullRefresh). Outright and implied books are kept
# apart. One owner thread; apply() runs one nogil loop per batch.
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t

from feedhandler.includes.record cimport fh_tick

ctypedef struct mbp_level:
    int64_t price            # 1e-9 units
    uint64_t size
    uint32_t orders

ctypedef struct mbp_book:
    uint32_t instrument_id
    uint8_t used
    uint8_t stale            # a sequence gap may have lost updates; cleared by a snapshot
    uint8_t n[4]             # levels in use per side: [outright bid, outright ask, implied bid, implied ask]
    mbp_level *levels        # 4 * depth levels, side s at levels[s * depth]

cimport cython


@cython.final
cdef class MbpBookSet:
    cdef mbp_book *books
    cdef mbp_level *pool
    cdef uint32_t depth
    cdef uint32_t mask
    cdef uint32_t count
    cdef uint32_t limit
    cdef uint64_t cnt[8]         # COUNTER_NAMES

    # commands
    cdef int apply_one(self, const fh_tick *t) noexcept nogil           # 1: a book changed
    cdef int apply_to(self, mbp_book *b, const fh_tick *t) noexcept nogil   # an mbp_update, its book known
    cdef size_t apply_ticks(self, const fh_tick *ticks, size_t n) noexcept nogil
    # queries
    cdef mbp_book *find(self, uint32_t instrument_id) noexcept nogil
    cdef mbp_book *_get(self, uint32_t instrument_id) noexcept nogil   # find or add
