# Cython view of csrc/include/fh/order.h (order-entry, execution and resting-order records) and the
# native state of the matching engine. Sizes and offsets come from the C header; tests/test_matching_layout.py
# checks the numpy dtypes (engine.orders) against the C descriptor table.
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from feedhandler.includes.record cimport fh_record_desc

cdef extern from "fh/order.h" nogil:
    enum:
        FH_ORD_NEW
        FH_ORD_CANCEL
        FH_ORD_AMEND
        FH_ORD_EOD
        FH_OT_LIMIT
        FH_OT_MARKET
        FH_TIF_DAY
        FH_TIF_GTC
        FH_TIF_IOC
        FH_TIF_FOK
        FH_OF_POST_ONLY
        FH_OF_REPRICE
        FH_STP_CANCEL_NEWEST
        FH_STP_CANCEL_OLDEST
        FH_STP_CANCEL_BOTH
        FH_ORD_BUY
        FH_ORD_SELL
        FH_EX_ACCEPTED
        FH_EX_REJECTED
        FH_EX_FILL
        FH_EX_CANCELED
        FH_EX_REPLACED
        FH_EX_EXPIRED
        FH_LIQ_NONE
        FH_LIQ_MAKER
        FH_LIQ_TAKER
        FH_R_NONE
        FH_R_BAD_QTY
        FH_R_BAD_PRICE
        FH_R_BAD_SIDE
        FH_R_BAD_TYPE
        FH_R_BAD_TIF
        FH_R_WOULD_CROSS
        FH_R_FOK
        FH_R_IOC
        FH_R_STP
        FH_R_USER
        FH_R_UNKNOWN_ORDER
        FH_R_NOT_OWNER
        FH_R_EOD
        FH_R_BAD_REQUEST
        FH_R_UNKNOWN_SYMBOL
        FH_R_BUSY
        FH_R_BAD_INSTRUMENT
        FH_R_BAD_KIND
        FH_R_COUNT
    const uint32_t FH_MAX_QTY

    ctypedef struct fh_order_req:
        uint64_t seq
        uint64_t ts_recv
        uint64_t order_id
        int64_t price
        uint32_t qty
        uint32_t account
        uint32_t instrument_id
        uint8_t kind
        char side
        uint8_t order_type
        uint8_t tif
        uint8_t flags
        uint8_t stp
        uint64_t user_tag

    ctypedef struct fh_exec:
        uint64_t seq
        uint64_t ts_event
        uint64_t order_id
        uint64_t contra_order_id
        uint64_t trade_id
        int64_t price
        uint32_t qty
        uint32_t leaves_qty
        uint32_t cum_qty
        uint32_t account
        uint32_t contra_account
        uint32_t instrument_id
        uint8_t type
        char side
        uint8_t liquidity
        uint8_t reason

    ctypedef struct fh_order:
        uint64_t order_id
        int64_t price
        uint64_t ts_event
        uint32_t leaves_qty
        uint32_t cum_qty
        uint32_t account
        uint32_t instrument_id
        char side
        uint8_t tif
        uint8_t flags
        uint8_t stp

    const fh_record_desc *fh_order_descs(size_t *n)


# ---- native engine state (one owner thread) ----------------------------------------------------
cdef struct Order:
    uint64_t order_id
    int64_t price
    uint64_t ts_event
    uint32_t leaves
    uint32_t cum
    uint32_t account
    uint32_t instrument_id
    int32_t prev            # pool index in the level FIFO, -1 at the ends
    int32_t next            # doubles as the free-list link
    char side
    uint8_t tif
    uint8_t flags
    uint8_t stp

cdef struct Level:
    int64_t key             # price for bids, -price for asks: both sides sorted ascending, best last
    int64_t price
    uint64_t qty            # sum of leaves
    uint32_t count
    int32_t head
    int32_t tail

cdef struct Side:
    Level *lv
    int32_t n
    int32_t cap

cdef struct Book:
    Side bids
    Side asks
    uint64_t trades         # trades so far (the n of trade ids)
    int64_t tick
    uint32_t instrument_id

cdef struct IdMap:          # open addressing order_id -> pool index; lookups only, never iterated
    uint64_t *keys          # 0 = empty slot (order ids are never 0)
    int32_t *vals
    uint64_t mask
    uint64_t used


cdef class Engine:
    cdef Book *books
    cdef uint32_t n_books
    cdef Order *pool
    cdef int32_t pool_cap
    cdef int32_t free_head
    cdef IdMap ids
    cdef fh_exec *out
    cdef size_t n_out
    cdef size_t cap_out
    cdef bint busy          # set (under the GIL) while a batch runs without the GIL

    # commands
    cdef int run(self, const fh_order_req *reqs, size_t n) except -1 nogil
    # internals (all return 0 ok, -1 out of memory unless stated)
    cdef fh_exec *_emit(self, const fh_order_req *r, uint8_t typ, uint64_t order_id, char side,
                        int64_t price, uint32_t qty, uint32_t leaves, uint32_t cum,
                        uint32_t account, uint8_t reason) noexcept nogil
    cdef int _reject(self, const fh_order_req *r, uint8_t reason) noexcept nogil
    cdef int32_t _alloc(self) noexcept nogil
    cdef int _rest(self, Book *b, const Order *o) noexcept nogil
    cdef void _unlink(self, Book *b, int32_t idx) noexcept nogil
    cdef bint _fok_fillable(self, Book *b, const Order *t, bint market) noexcept nogil
    cdef int _match(self, Book *b, Order *t, const fh_order_req *r, bint market) noexcept nogil
    cdef int _post_only_price(self, Book *b, Order *t) noexcept nogil
    cdef int _new(self, Book *b, const fh_order_req *r) noexcept nogil
    cdef int _find_own(self, Book *b, const fh_order_req *r) noexcept nogil
    cdef int _cancel(self, Book *b, const fh_order_req *r) noexcept nogil
    cdef int _amend(self, Book *b, const fh_order_req *r) noexcept nogil
    cdef int _expire_side(self, Book *b, Side *s, const fh_order_req *r) noexcept nogil
    cdef object _contiguous(self, reqs)
    cdef size_t _run_buffer(self, reqs, bint timed, uint64_t *ns_out, size_t ns_len) except? 0
    # queries
    cdef size_t count_orders(self) noexcept nogil
