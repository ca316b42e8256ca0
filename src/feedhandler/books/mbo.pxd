# feedhandler.books.mbo: per-instrument L3 order books. The core is C (csrc/include/fh/book.h, csrc/book.c);
# BookSet owns one fh_bookset. Other Cython code cimports this module and calls bookset_apply()
# from nogil loops (the C lives in this extension, so callers need not link csrc/book.c).
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t

from feedhandler.includes.record cimport fh_tick

cdef extern from "fh/book.h" nogil:
    enum:
        FH_BOOK_BID
        FH_BOOK_ASK
        FH_BOOK_NCOUNTERS
    const char *const fh_book_counter_names[]

    ctypedef struct fh_bookset:
        pass

    ctypedef struct fh_bbo:
        int64_t bid_px
        uint64_t bid_sz
        uint32_t bid_count
        uint32_t ask_count
        int64_t ask_px
        uint64_t ask_sz

    ctypedef struct fh_book_summary:
        uint32_t instrument_id
        uint8_t stale
        int64_t bid_px
        uint64_t bid_sz
        int64_t ask_px
        uint64_t ask_sz
        uint64_t live_orders

    ctypedef struct fh_book_depth_level:
        int64_t price
        uint64_t size
        uint64_t count

    ctypedef struct fh_bbo_event:
        uint32_t instrument_id
        uint64_t ts_event
        uint64_t ts_recv
        int64_t bid_px
        uint64_t bid_sz
        int64_t ask_px
        uint64_t ask_sz

    fh_bookset *fh_bookset_new(uint32_t max_instruments, uint32_t depth_hint, int track_bbo_events)
    void fh_bookset_free(fh_bookset *bs)
    size_t fh_bookset_apply(fh_bookset *bs, fh_tick *ticks, size_t n)
    const uint64_t *fh_bookset_counters(const fh_bookset *bs)
    uint64_t fh_bookset_live_orders(const fh_bookset *bs)
    size_t fh_bookset_instrument_count(const fh_bookset *bs)
    int fh_bookset_bbo(const fh_bookset *bs, uint32_t instrument_id, fh_bbo *out)
    int fh_bookset_stale(const fh_bookset *bs, uint32_t instrument_id)
    size_t fh_bookset_summaries(const fh_bookset *bs, fh_book_summary *out, size_t cap)
    size_t fh_bookset_depth(const fh_bookset *bs, uint32_t instrument_id, int side,
                            fh_book_depth_level *out, size_t n)
    size_t fh_bookset_level_orders(const fh_bookset *bs, uint32_t instrument_id, int side, int64_t price,
                                   uint64_t *order_ids, uint32_t *sizes, size_t cap)
    int fh_bookset_queue_position(const fh_bookset *bs, uint64_t order_id, uint64_t *shares_ahead,
                                  uint64_t *orders_ahead)
    int fh_bookset_order(const fh_bookset *bs, uint64_t order_id, uint32_t *instrument_id, int *side,
                         int64_t *price, uint32_t *size)
    const fh_bbo_event *fh_bookset_bbo_events(fh_bookset *bs, size_t *n)
    void fh_bookset_bbo_events_drain(fh_bookset *bs)
    int fh_bookset_check(const fh_bookset *bs)
    size_t fh_bookset_memory(const fh_bookset *bs)

    ctypedef struct fh_book_store_stats:
        uint64_t ref_orders
        uint64_t table_orders
        uint32_t ref_pages
        uint32_t pages
    void fh_bookset_store_stats(const fh_bookset *bs, fh_book_store_stats *out)


cdef class BookSet:
    cdef fh_bookset *bs
    cdef readonly uint32_t max_instruments
    cdef readonly bint track_bbo_events
    cdef bint busy      # apply/consume running without the GIL: Python calls on this BookSet raise
    cdef int _enter(self) except -1


# Apply n records to the books, enriching them in place (see fh/book.h). Returns n.
cdef size_t bookset_apply(BookSet b, fh_tick *ticks, size_t n) noexcept nogil
