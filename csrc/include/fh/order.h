/* fh/order.h - the fixed-size order-entry, execution-event and resting-order records of the matching
 * engine (src/engine/matching.pyx).
 *
 * Single definition: Cython sees these structs through src/engine/matching.pxd, numpy dtypes are built
 * from the descriptor table below (fh_order_descs(), offsets from offsetof), and
 * tests/test_matching_layout.py checks that the table covers every byte of every struct.
 *
 * Ownership: the engine reads a caller-owned array of fh_order_req and appends fh_exec records to a
 * buffer it owns; the caller copies them out after each batch. The records hold only integers
 * (prices 1e-9 fixed point like fh/record.h, quantities in shares/contracts, times in ns since the UNIX
 * epoch), so they can be journaled, hashed and compared byte for byte.
 */
#ifndef FH_ORDER_H
#define FH_ORDER_H

#include <stddef.h>
#include <stdint.h>

#include "fh/record.h"

/* ---- request kinds ------------------------------------------------------------------------- */
#define FH_ORD_NEW 1
#define FH_ORD_CANCEL 2
#define FH_ORD_AMEND 3
#define FH_ORD_EOD 4           /* end of day: expire resting DAY orders of instrument_id */

/* ---- order types, times in force, flags, self-trade prevention ----------------------------- */
#define FH_OT_LIMIT 1
#define FH_OT_MARKET 2
#define FH_TIF_DAY 1
#define FH_TIF_GTC 2
#define FH_TIF_IOC 3
#define FH_TIF_FOK 4
#define FH_OF_POST_ONLY 0x01   /* never take liquidity */
#define FH_OF_REPRICE 0x02     /* post-only that would cross: reprice one tick away instead of reject */
#define FH_STP_CANCEL_NEWEST 1
#define FH_STP_CANCEL_OLDEST 2
#define FH_STP_CANCEL_BOTH 3
#define FH_ORD_BUY 'B'
#define FH_ORD_SELL 'S'
#define FH_MAX_QTY 0x7FFFFFFFu /* quantities are uint32; larger orders are rejected (bad_qty) */

/* ---- execution event types, liquidity, reasons --------------------------------------------- */
#define FH_EX_ACCEPTED 1
#define FH_EX_REJECTED 2
#define FH_EX_FILL 3
#define FH_EX_CANCELED 4
#define FH_EX_REPLACED 5
#define FH_EX_EXPIRED 6
#define FH_LIQ_NONE 0
#define FH_LIQ_MAKER 1
#define FH_LIQ_TAKER 2
/* reason codes; the strings are engine.matching.REASONS[code] */
#define FH_R_NONE 0
#define FH_R_BAD_QTY 1
#define FH_R_BAD_PRICE 2
#define FH_R_BAD_SIDE 3
#define FH_R_BAD_TYPE 4
#define FH_R_BAD_TIF 5
#define FH_R_WOULD_CROSS 6
#define FH_R_FOK 7
#define FH_R_IOC 8
#define FH_R_STP 9
#define FH_R_USER 10
#define FH_R_UNKNOWN_ORDER 11
#define FH_R_NOT_OWNER 12
#define FH_R_EOD 13
#define FH_R_BAD_REQUEST 14
#define FH_R_UNKNOWN_SYMBOL 15
#define FH_R_BUSY 16
#define FH_R_BAD_INSTRUMENT 17
#define FH_R_BAD_KIND 18
#define FH_R_COUNT 19

/* One input to the engine (64 bytes). */
typedef struct fh_order_req {
    uint64_t seq;           /* input sequence number assigned by the manager (journal order) */
    uint64_t ts_recv;       /* gateway receive time, ns; echoed as ts_event, never read by matching */
    uint64_t order_id;      /* NEW: id assigned by the manager; CANCEL/AMEND: the target order */
    int64_t price;          /* NEW: limit price (ignored for market); AMEND: new price or FH_UNDEF_PRICE */
    uint32_t qty;           /* NEW: order quantity; AMEND: new open (leaves) quantity, 0 = unchanged */
    uint32_t account;       /* account number (the manager maps account names to numbers) */
    uint32_t instrument_id; /* book index */
    uint8_t kind;           /* FH_ORD_* */
    char side;              /* FH_ORD_BUY / FH_ORD_SELL */
    uint8_t order_type;     /* FH_OT_* */
    uint8_t tif;            /* FH_TIF_* */
    uint8_t flags;          /* FH_OF_* */
    uint8_t stp;            /* FH_STP_* */
    uint8_t _reserved[6];
    uint64_t user_tag;      /* opaque to the engine (the manager keeps its client order id handle here) */
} fh_order_req;

/* One output of the engine (80 bytes). */
typedef struct fh_exec {
    uint64_t seq;           /* input sequence that caused the event */
    uint64_t ts_event;      /* the causing request's ts_recv */
    uint64_t order_id;
    uint64_t contra_order_id; /* fills: the other side's order; 0 otherwise */
    uint64_t trade_id;      /* fills: (instrument_id << 40) | n; 0 otherwise */
    int64_t price;          /* fills: trade price; others: the order's (current) price */
    uint32_t qty;           /* fills: fill qty; accepted/replaced: open qty; canceled/expired: qty removed */
    uint32_t leaves_qty;    /* open quantity after the event */
    uint32_t cum_qty;       /* filled quantity after the event */
    uint32_t account;
    uint32_t contra_account;
    uint32_t instrument_id;
    uint8_t type;           /* FH_EX_* */
    char side;              /* this order's side */
    uint8_t liquidity;      /* FH_LIQ_* */
    uint8_t reason;         /* FH_R_* */
    uint8_t _reserved[4];
} fh_exec;

/* A resting order as it appears in snapshots (48 bytes). */
typedef struct fh_order {
    uint64_t order_id;
    int64_t price;
    uint64_t ts_event;      /* ts_recv of the request that gave it its time priority */
    uint32_t leaves_qty;
    uint32_t cum_qty;
    uint32_t account;
    uint32_t instrument_id;
    char side;
    uint8_t tif;
    uint8_t flags;
    uint8_t stp;
    uint8_t _reserved[4];
} fh_order;

_Static_assert(sizeof(fh_order_req) == 64, "fh_order_req is one cache line");
_Static_assert(sizeof(fh_exec) == 80, "fh_exec layout");
_Static_assert(sizeof(fh_order) == 48, "fh_order layout");

/* Descriptor table of the three layouts (same shape as fh_record_descs()). Static storage in an
 * inline function so that every translation unit can include this header without defining symbols. */
static inline const fh_record_desc *fh_order_descs(size_t *n) {
#define FH_OFLD(T, f, k) {#f, (uint16_t)offsetof(T, f), (uint16_t)sizeof(((T *)0)->f), 1, k}
#define FH_OPAD(T, f) {#f, (uint16_t)offsetof(T, f), 1, (uint16_t)sizeof(((T *)0)->f), 'V'}
    static const fh_field_desc req_fields[] = {
        FH_OFLD(fh_order_req, seq, 'u'), FH_OFLD(fh_order_req, ts_recv, 'u'),
        FH_OFLD(fh_order_req, order_id, 'u'), FH_OFLD(fh_order_req, price, 'i'),
        FH_OFLD(fh_order_req, qty, 'u'), FH_OFLD(fh_order_req, account, 'u'),
        FH_OFLD(fh_order_req, instrument_id, 'u'), FH_OFLD(fh_order_req, kind, 'u'),
        FH_OFLD(fh_order_req, side, 'c'), FH_OFLD(fh_order_req, order_type, 'u'),
        FH_OFLD(fh_order_req, tif, 'u'), FH_OFLD(fh_order_req, flags, 'u'), FH_OFLD(fh_order_req, stp, 'u'),
        FH_OPAD(fh_order_req, _reserved), FH_OFLD(fh_order_req, user_tag, 'u'),
    };
    static const fh_field_desc exec_fields[] = {
        FH_OFLD(fh_exec, seq, 'u'), FH_OFLD(fh_exec, ts_event, 'u'), FH_OFLD(fh_exec, order_id, 'u'),
        FH_OFLD(fh_exec, contra_order_id, 'u'), FH_OFLD(fh_exec, trade_id, 'u'), FH_OFLD(fh_exec, price, 'i'),
        FH_OFLD(fh_exec, qty, 'u'), FH_OFLD(fh_exec, leaves_qty, 'u'), FH_OFLD(fh_exec, cum_qty, 'u'),
        FH_OFLD(fh_exec, account, 'u'), FH_OFLD(fh_exec, contra_account, 'u'),
        FH_OFLD(fh_exec, instrument_id, 'u'), FH_OFLD(fh_exec, type, 'u'), FH_OFLD(fh_exec, side, 'c'),
        FH_OFLD(fh_exec, liquidity, 'u'), FH_OFLD(fh_exec, reason, 'u'), FH_OPAD(fh_exec, _reserved),
    };
    static const fh_field_desc order_fields[] = {
        FH_OFLD(fh_order, order_id, 'u'), FH_OFLD(fh_order, price, 'i'), FH_OFLD(fh_order, ts_event, 'u'),
        FH_OFLD(fh_order, leaves_qty, 'u'), FH_OFLD(fh_order, cum_qty, 'u'), FH_OFLD(fh_order, account, 'u'),
        FH_OFLD(fh_order, instrument_id, 'u'), FH_OFLD(fh_order, side, 'c'), FH_OFLD(fh_order, tif, 'u'),
        FH_OFLD(fh_order, flags, 'u'), FH_OFLD(fh_order, stp, 'u'), FH_OPAD(fh_order, _reserved),
    };
#define FH_ON(a) ((uint16_t)(sizeof(a) / sizeof((a)[0])))
    static const fh_record_desc descs[] = {
        {"order_req", 0, (uint16_t)sizeof(fh_order_req), 0, req_fields, FH_ON(req_fields)},
        {"exec", 0, (uint16_t)sizeof(fh_exec), 0, exec_fields, FH_ON(exec_fields)},
        {"order", 0, (uint16_t)sizeof(fh_order), 0, order_fields, FH_ON(order_fields)},
    };
#undef FH_OFLD
#undef FH_OPAD
#undef FH_ON
    *n = sizeof(descs) / sizeof(descs[0]);
    return descs;
}

#endif
