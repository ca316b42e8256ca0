/* fh/book.h - per-instrument order-by-order (L3) books fed by normalized fh_tick records.
 *
 * Why C under a Cython owner: the book is the hot path of the whole product and must be callable
 * from C capture loops, from Cython (feedhandler.books.mbo.BookSet owns one fh_bookset) and from the C test
 * harness that runs it under ASan/UBSan. Python never enters fh_bookset_apply.
 *
 * Threading: an fh_bookset is owned by exactly one thread. Nothing here locks; queries must come from
 * the owning thread (or after it stopped). Ownership: fh_bookset_apply reads and ENRICHES the caller's
 * records in place (fills in side, price and size the decoder did not know) and keeps no pointer to
 * them after it returns.
 *
 * Semantics per MBO action (records from the ITCH decoder, see record.h):
 *   'A' add at the tail of its price level. side 'N' = the second half of a replace (ITCH U): the
 *       order takes the side of the order removed by the immediately preceding record, which must be
 *       a 'C' with FH_F_WHOLE_ORDER on the same instrument; the record's side is filled in.
 *   'F' fill `size` shares of a resting order (removed at 0); fills in side, and price when
 *       FH_UNDEF_PRICE.
 *   'C' cancel: FH_F_WHOLE_ORDER removes the whole order and fills in size/price/side; otherwise a
 *       partial cancel of `size` shares (fills in price and side).
 *   'M' modify (DBN): new price/size; a price change or size increase loses priority; size 0 removes.
 *   'R' clear the instrument's book (and its stale mark). 'T', 'N': no book change.
 *   fh_gap FH_GAP_LOST marks every book stale, including books created later (their adds may have
 *   been lost) until an 'R' clears them; FH_F_MAYBE_BAD_BOOK on an MBO/trade record marks its
 *   instrument's book stale. Other rtypes are counted and ignored.
 * Bad input never crashes and never corrupts a book: it is skipped (or applied as far as it is
 * consistent, e.g. an over-fill removes the order) and counted by reason (fh_book_counter_names).
 * Order ids are unique per bookset (feed-wide, as in ITCH); an event whose instrument_id differs from
 * the resting order's is rejected and counted.
 */
#ifndef FH_BOOK_H
#define FH_BOOK_H

#include <stddef.h>
#include <stdint.h>

#include "fh/record.h"

#define FH_BOOK_BID 0
#define FH_BOOK_ASK 1

/* Counters, indices into fh_bookset_counters(); names in fh_book_counter_names (same order). */
#define FH_BOOK_COUNTERS(X)                                                                     \
    X(RECORDS, "records")                    /* every record passed to apply */                 \
    X(ADDS, "adds")                          /* orders added (including replace adds) */        \
    X(REPLACES, "replaces")                  /* adds with side 'N' that took the old side */    \
    X(FILLS, "fills")                        /* fills applied (partial or full) */              \
    X(CANCELS, "cancels")                    /* partial cancels applied */                      \
    X(DELETES, "deletes")                    /* whole-order cancels applied */                  \
    X(MODIFIES, "modifies")                  /* modifies applied */                             \
    X(CLEARS, "clears")                      /* 'R' records */                                  \
    X(TRADES, "trades")                      /* MBO 'T' records (no book change) */             \
    X(NONES, "nones")                        /* MBO 'N' records (no book change) */             \
    X(TRADE_RECORDS, "trade_records")        /* rtype trade (no book change) */                 \
    X(IGNORED, "ignored")                    /* other rtypes */                                 \
    X(GAPS_LOST, "gaps_lost")                /* fh_gap FH_GAP_LOST: every book marked stale */  \
    X(MAYBE_BAD_BOOK, "maybe_bad_book")      /* records flagged FH_F_MAYBE_BAD_BOOK */          \
    X(UNKNOWN_ORDER, "unknown_order")        /* fill/cancel/modify of an order not in a book */ \
    X(DUPLICATE_ADD, "duplicate_add")        /* add of an order id that is live (skipped) */    \
    X(SIZE_UNDERFLOW, "size_underflow")      /* fill/cancel above remaining size (removed) */   \
    X(ZERO_SIZE_ADD, "zero_size_add")        /* add of 0 shares (skipped) */                    \
    X(BAD_PRICE, "bad_price")                /* add/modify without a price (skipped) */         \
    X(BAD_SIDE, "bad_side")                  /* add with a side that is not B/A/N (skipped) */  \
    X(REPLACE_WITHOUT_DELETE, "replace_without_delete") /* side 'N' add not after a delete */  \
    X(INSTRUMENT_MISMATCH, "instrument_mismatch") /* event names another instrument (skipped) */ \
    X(CROSSED, "crossed")                    /* add/modify left best bid >= best ask (kept) */  \
    X(BAD_ACTION, "bad_action")              /* unknown MBO action (skipped) */                 \
    X(NO_MEMORY, "no_memory")                /* allocation failed: event skipped */             \
    X(BBO_EVENTS, "bbo_events")              /* BBO changes recorded */                         \
    X(BBO_EVENTS_DROPPED, "bbo_events_dropped") /* BBO changes lost to a failed allocation */

enum {
#define FH_BOOK_X_ENUM(id, name) FH_BOOK_C_##id,
    FH_BOOK_COUNTERS(FH_BOOK_X_ENUM)
#undef FH_BOOK_X_ENUM
    FH_BOOK_NCOUNTERS
};
extern const char *const fh_book_counter_names[FH_BOOK_NCOUNTERS];

typedef struct fh_bookset fh_bookset;

/* Best bid and offer of one instrument; FH_UNDEF_PRICE and 0 for an empty side. */
typedef struct fh_bbo {
    int64_t bid_px;
    uint64_t bid_sz;     /* shares at the best bid */
    uint32_t bid_count;  /* orders at the best bid */
    uint32_t ask_count;
    int64_t ask_px;
    uint64_t ask_sz;
} fh_bbo;

/* One row of fh_bookset_summaries (numpy: BookSet.bbo_all()). */
typedef struct fh_book_summary {
    uint32_t instrument_id;
    uint8_t stale;
    uint8_t _reserved[3];
    int64_t bid_px;
    uint64_t bid_sz;
    int64_t ask_px;
    uint64_t ask_sz;
    uint64_t live_orders;
} fh_book_summary;

/* One price level of a depth snapshot. */
typedef struct fh_book_depth_level {
    int64_t price;
    uint64_t size;       /* shares */
    uint64_t count;      /* orders */
} fh_book_depth_level;

/* A BBO change (track_bbo_events). Recorded after the record that changed the book; the delete half
 * of a replace is not reported when the add half follows it (also across apply calls: a whole-order
 * cancel that ends a batch is reported when the next batch starts with something else, or when the
 * events are queried or drained first), so the events never depend on where batches split. */
typedef struct fh_bbo_event {
    uint32_t instrument_id;
    uint32_t _reserved;
    uint64_t ts_event;
    uint64_t ts_recv;
    int64_t bid_px;
    uint64_t bid_sz;
    int64_t ask_px;
    uint64_t ask_sz;
} fh_bbo_event;

/* max_instruments: instrument ids below it are looked up in a direct table (4 bytes an id); others
 * go through a hash map. depth_hint: price levels a side is expected to hold (sizes the directory of
 * its price ladder; any depth works). track_bbo_events: record fh_bbo_event rows. Returns NULL when
 * out of memory.
 * Cost: an event at or above a side's best price reads no other part of the side; elsewhere an insert
 * or a removal of a price level moves at most one block of the side's ladder (book.c), however far
 * from the top the level is. */
fh_bookset *fh_bookset_new(uint32_t max_instruments, uint32_t depth_hint, int track_bbo_events);
void fh_bookset_free(fh_bookset *bs);

/* Apply n records in order, enriching them in place. Never fails: problems are counted. Returns n. */
size_t fh_bookset_apply(fh_bookset *bs, fh_tick *ticks, size_t n);

/* ---- queries (owning thread) ---- */
const uint64_t *fh_bookset_counters(const fh_bookset *bs);
uint64_t fh_bookset_live_orders(const fh_bookset *bs);
size_t fh_bookset_instrument_count(const fh_bookset *bs);
/* 1 when the instrument has a book, 0 otherwise (out then holds an empty BBO). */
int fh_bookset_bbo(const fh_bookset *bs, uint32_t instrument_id, fh_bbo *out);
/* 1 when the instrument's book may be wrong (a gap lost events). */
int fh_bookset_stale(const fh_bookset *bs, uint32_t instrument_id);
/* One row per book in creation order; writes min(cap, count) rows, returns the row count written. */
size_t fh_bookset_summaries(const fh_bookset *bs, fh_book_summary *out, size_t cap);
/* Up to n levels of one side (FH_BOOK_BID / FH_BOOK_ASK), best first; returns levels written. */
size_t fh_bookset_depth(const fh_bookset *bs, uint32_t instrument_id, int side, fh_book_depth_level *out,
                        size_t n);
/* Orders at one price level in queue order: writes up to cap (order_id, size) pairs, returns the
 * number of orders at the level (may exceed cap). */
size_t fh_bookset_level_orders(const fh_bookset *bs, uint32_t instrument_id, int side, int64_t price,
                               uint64_t *order_ids, uint32_t *sizes, size_t cap);
/* Shares and orders ahead of order_id in its level's queue; -1 when the order is not live. */
int fh_bookset_queue_position(const fh_bookset *bs, uint64_t order_id, uint64_t *shares_ahead,
                              uint64_t *orders_ahead);
/* A live order: its instrument, side, price and remaining size; -1 when the order is not live. */
int fh_bookset_order(const fh_bookset *bs, uint64_t order_id, uint32_t *instrument_id, int *side,
                     int64_t *price, uint32_t *size);
/* BBO events recorded since the last drain (valid until the next apply or drain). Not const: it
 * settles a report pending from the end of the last batch (see fh_bbo_event). */
const fh_bbo_event *fh_bookset_bbo_events(fh_bookset *bs, size_t *n);
void fh_bookset_bbo_events_drain(fh_bookset *bs);
/* Walk every structure and check its invariants (sorted levels, level totals, FIFO links, hash
 * table, live counts). Returns 0 when consistent, else a nonzero code naming the first violation.
 * O(everything): for tests. */
int fh_bookset_check(const fh_bookset *bs);
/* Bytes currently allocated by the bookset (pools, tables, level arrays, event buffer). */
size_t fh_bookset_memory(const fh_bookset *bs);

/* Where the live orders are kept (see book.c, "order nodes"): orders whose id indexes a ref page
 * directly (ids below 2^32 that are dense enough, as ITCH order reference numbers are), and orders
 * found through the fallback hash table (ids beyond the pages' reach, or too sparse for pages). */
typedef struct fh_book_store_stats {
    uint64_t ref_orders;     /* live orders in ref pages */
    uint64_t table_orders;   /* live orders in the fallback table */
    uint32_t ref_pages;      /* ref pages in use (FH_BOOK_REF_PAGE orders each) */
    uint32_t pages;          /* node pages allocated: ref, heap and free */
} fh_book_store_stats;
#define FH_BOOK_REF_PAGE 1024   /* order ids per ref page */
void fh_bookset_store_stats(const fh_bookset *bs, fh_book_store_stats *out);

#endif
