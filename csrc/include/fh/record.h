/* fh/record.h - the normalized tick record: one 64-byte slot for every protocol.
 *
 * This header is the single definition of every record layout. Cython sees it through
 * src/feedhandler/includes/record.pxd; numpy dtypes are built at import time from the descriptor
 * table that csrc/record.c derives from these structs with offsetof/sizeof (fh_record_descs()),
 * so no layout is ever typed a second time by hand. tests/test_record_layout.py checks that the
 * descriptor table covers every byte of every struct.
 *
 * Layout rules
 * - Every record starts with the 16-byte DBN RecordHeader (fh_record_header). `length` is the size
 *   of the DBN-compatible part in 4-byte units, exactly as DBN defines it, so writing a record as
 *   DBN means writing its first length*4 bytes.
 * - Where Databento's DBN has a layout (MBO, trade), the record IS that layout (same field order,
 *   sizes and offsets), followed by feedhandler extension fields that fill the rest of the slot.
 *   Where DBN has none (or its layout is larger than a slot), the record is ours, with an rtype in
 *   the 0xE0-0xFF range that DBN leaves unused.
 * - Prices are int64 fixed point with 1e-9 units (FH_PRICE_SCALE); FH_UNDEF_PRICE means "no price".
 * - Times are uint64 nanoseconds since the UNIX epoch: ts_event from the exchange, ts_recv from the
 *   capture clock.
 */
#ifndef FH_RECORD_H
#define FH_RECORD_H

#include <stddef.h>
#include <stdint.h>

#define FH_TICK_SIZE 64               /* bytes per ring slot and per record in every batch */
#define FH_PRICE_SCALE 1000000000LL   /* price_raw units per 1.0 of currency */
#define FH_UNDEF_PRICE INT64_MAX      /* DBN's UNDEF_PRICE */
#define FH_UNDEF_TIMESTAMP UINT64_MAX /* DBN's UNDEF_TIMESTAMP */

/* ---- rtypes (DBN values where the layout is DBN's) ------------------------------------------ */
#define FH_RTYPE_TRADE 0x00            /* DBN Mbp0 / TradeMsg */
#define FH_RTYPE_MBO 0xA0              /* DBN MboMsg */
/* feedhandler's own records (rtypes DBN does not use) */
#define FH_RTYPE_GAP 0xE0              /* sequencing: a gap opened, was filled, or was given up on */
#define FH_RTYPE_SYSTEM_EVENT 0xE1     /* ITCH S */
#define FH_RTYPE_STOCK_DIRECTORY 0xE2  /* ITCH R: symbol <-> instrument_id */
#define FH_RTYPE_TRADING_ACTION 0xE3   /* ITCH H */
#define FH_RTYPE_REG_SHO 0xE4          /* ITCH Y */
#define FH_RTYPE_MPP 0xE5              /* ITCH L: market participant position */
#define FH_RTYPE_MWCB_DECLINE 0xE6     /* ITCH V */
#define FH_RTYPE_MWCB_STATUS 0xE7      /* ITCH W */
#define FH_RTYPE_IPO_QUOTING 0xE8      /* ITCH K */
#define FH_RTYPE_LULD_COLLAR 0xE9      /* ITCH J */
#define FH_RTYPE_OPERATIONAL_HALT 0xEA /* ITCH h */
#define FH_RTYPE_NOII 0xEB             /* ITCH I, part 1: shares, direction, current reference */
#define FH_RTYPE_NOII_PRICES 0xEC      /* ITCH I, part 2: far and near prices */
#define FH_RTYPE_RPII 0xED             /* ITCH N */
#define FH_RTYPE_DLCR 0xEE             /* ITCH O, part 1 */
#define FH_RTYPE_DLCR_COLLARS 0xEF     /* ITCH O, part 2 */
#define FH_RTYPE_BROKEN_TRADE 0xF0     /* ITCH B */
#define FH_RTYPE_ORDER_EVENT 0xF1      /* order entry (OUCH 4.2/5.0, FIX D/F/G/8/9): one lifecycle event */
/* 0xF1-0xFF: reserved for the other protocols (OUCH, FIX, MDP3 reference data) */
/* CME MDP 3.0 and the publisher (taken from the top of the range down, to stay clear of OUCH/FIX taking 0xF1 up) */
#define FH_RTYPE_BBO 0xFB              /* top of book after a change (feedhandler run|replay --publish-what bbo) */
#define FH_RTYPE_MBP_UPDATE 0xFC       /* one price-level change of an MBP book (MDP3 book entries) */
#define FH_RTYPE_STATISTIC 0xFD        /* session/daily statistics, volume, price limits */
#define FH_RTYPE_SECURITY_STATUS 0xFE  /* trading status of an instrument or a security group */
#define FH_RTYPE_INSTRUMENT_DEF 0xFF   /* security definition: symbol, tick size, display factor */

/* ---- MBO actions and sides (DBN's characters) ---------------------------------------------- */
#define FH_ACTION_ADD 'A'
#define FH_ACTION_CANCEL 'C'
#define FH_ACTION_MODIFY 'M'
#define FH_ACTION_CLEAR 'R'
#define FH_ACTION_TRADE 'T'
#define FH_ACTION_FILL 'F'
#define FH_ACTION_NONE 'N'
#define FH_SIDE_BID 'B'
#define FH_SIDE_ASK 'A'
#define FH_SIDE_NONE 'N'

/* ---- flags (DBN's bits 2..7; bits 0..1 are reserved by DBN and used privately here) --------- */
#define FH_F_LAST 0x80             /* DBN F_LAST: last record of an event for this instrument */
#define FH_F_TOB 0x40              /* DBN F_TOB */
#define FH_F_SNAPSHOT 0x20         /* DBN F_SNAPSHOT */
#define FH_F_MBP 0x10              /* DBN F_MBP */
#define FH_F_BAD_TS_RECV 0x08      /* DBN F_BAD_TS_RECV: ts_recv is missing or not from a capture clock */
#define FH_F_MAYBE_BAD_BOOK 0x04   /* DBN F_MAYBE_BAD_BOOK: a sequence gap may have lost events */
#define FH_F_WHOLE_ORDER 0x02      /* private: the event removes the whole order; the decoder did not
                                      know its size and the book fills `size` in (ITCH D, U) */
#define FH_F_NONPRINTABLE 0x01     /* private: execution not to be printed to time and sales (ITCH C) */
#define FH_F_DBN_MASK 0xFC         /* the bits DBN defines */

/* ---- the header every record starts with (DBN RecordHeader) -------------------------------- */
typedef struct fh_record_header {
    uint8_t length;         /* DBN-compatible size in 4-byte units */
    uint8_t rtype;          /* FH_RTYPE_* */
    uint16_t publisher_id;  /* DBN publisher (0 when unknown) */
    uint32_t instrument_id; /* venue instrument id (ITCH stock locate, MDP3 security id, ...) */
    uint64_t ts_event;      /* exchange time, ns since UNIX epoch */
} fh_record_header;

/* Order-by-order event. Bytes 0..55 are exactly DBN's MboMsg. */
typedef struct fh_mbo {
    fh_record_header hd;
    uint64_t order_id;
    int64_t price;          /* 1e-9 units; FH_UNDEF_PRICE when the decoder does not know it */
    uint32_t size;
    uint8_t flags;          /* FH_F_* */
    uint8_t channel_id;     /* feed line / session index */
    char action;            /* FH_ACTION_* */
    char side;              /* FH_SIDE_* */
    uint64_t ts_recv;
    int32_t ts_in_delta;
    uint32_t sequence;      /* low 32 bits of the venue sequence number */
    /* --- feedhandler extension (not written to DBN) --- */
    union {
        uint64_t match_number;   /* fills: the venue's match / trade id */
        char attribution[8];     /* adds: MPID attribution (ITCH F), NUL padded */
    } ext;
} fh_mbo;

/* Trade print. Bytes 0..47 are exactly DBN's TradeMsg (Mbp0). */
typedef struct fh_trade {
    fh_record_header hd;
    int64_t price;
    uint32_t size;
    char action;            /* 'T' */
    char side;              /* aggressor side, FH_SIDE_* ('N' when unknown, e.g. crosses) */
    uint8_t flags;
    uint8_t depth;
    uint64_t ts_recv;
    int32_t ts_in_delta;
    uint32_t sequence;
    /* --- feedhandler extension --- */
    uint64_t order_id;      /* resting order involved, 0 when none (ITCH P carries one) */
    uint64_t match_number;
} fh_trade;

/* Sequencing event (ours): emitted in stream order when a gap opens, is filled, or is given up on. */
#define FH_GAP_OPENED 1    /* messages first_missing .. first_missing+count-1 are missing */
#define FH_GAP_FILLED 2    /* a previously reported range arrived late and was applied in order */
#define FH_GAP_LOST 3      /* the range never arrived; books of this channel may be stale */
#define FH_GAP_RESET 4     /* the session restarted (new MoldUDP64 session / end of session) */
typedef struct fh_gap {
    fh_record_header hd;    /* instrument_id 0: channel-wide */
    uint64_t ts_recv;
    uint64_t first_missing; /* sequence number */
    uint64_t count;         /* messages */
    uint32_t channel;
    uint8_t kind;           /* FH_GAP_* */
    uint8_t _reserved[3];
    char session[10];       /* MoldUDP64 session, space padded (not NUL terminated) */
    uint8_t _reserved2[6];
} fh_gap;

/* ---- ITCH 5.0 reference and status records (ours) ----------------------------------------- */
typedef struct fh_system_event {
    fh_record_header hd;
    uint64_t ts_recv;
    uint32_t sequence;
    char event_code;        /* O S Q M E C */
    uint8_t _reserved[3];
} fh_system_event;

typedef struct fh_stock_directory {
    fh_record_header hd;    /* instrument_id = stock locate */
    uint64_t ts_recv;
    uint32_t sequence;
    uint32_t round_lot_size;
    uint32_t etp_leverage_factor;
    char symbol[8];         /* space padded, as on the wire */
    char market_category;
    char financial_status;
    char round_lots_only;
    char issue_classification;
    char issue_subtype[2];
    char authenticity;
    char short_sale_threshold;
    char ipo_flag;
    char luld_ref_price_tier;
    char etp_flag;
    char inverse_indicator;
} fh_stock_directory;

typedef struct fh_trading_action {
    fh_record_header hd;
    uint64_t ts_recv;
    uint32_t sequence;
    char trading_state;     /* H P Q T */
    char reserved;
    char reason[4];
    uint8_t _reserved[6];
} fh_trading_action;

typedef struct fh_reg_sho {
    fh_record_header hd;
    uint64_t ts_recv;
    uint32_t sequence;
    char action;            /* 0 1 2 */
    uint8_t _reserved[3];
} fh_reg_sho;

typedef struct fh_mpp {
    fh_record_header hd;
    uint64_t ts_recv;
    uint32_t sequence;
    char mpid[4];
    char primary_market_maker;
    char market_maker_mode;
    char market_participant_state;
    uint8_t _reserved[5];
} fh_mpp;

typedef struct fh_mwcb_decline {
    fh_record_header hd;
    uint64_t ts_recv;
    int64_t level1;         /* 1e-9 units */
    int64_t level2;
    int64_t level3;
    uint32_t sequence;
    uint8_t _reserved[4];
} fh_mwcb_decline;

typedef struct fh_mwcb_status {
    fh_record_header hd;
    uint64_t ts_recv;
    uint32_t sequence;
    char breached_level;    /* 1 2 3 */
    uint8_t _reserved[3];
} fh_mwcb_status;

typedef struct fh_ipo_quoting {
    fh_record_header hd;
    uint64_t ts_recv;
    int64_t ipo_price;      /* 1e-9 units */
    uint32_t sequence;
    uint32_t release_time;  /* seconds since midnight */
    char release_qualifier; /* A C */
    uint8_t _reserved[7];
} fh_ipo_quoting;

typedef struct fh_luld_collar {
    fh_record_header hd;
    uint64_t ts_recv;
    int64_t reference_price;
    int64_t upper_price;
    int64_t lower_price;
    uint32_t sequence;
    uint32_t extension;
} fh_luld_collar;

typedef struct fh_operational_halt {
    fh_record_header hd;
    uint64_t ts_recv;
    uint32_t sequence;
    char market_code;       /* Q B X */
    char halt_action;       /* H T */
    uint8_t _reserved[2];
} fh_operational_halt;

typedef struct fh_noii {
    fh_record_header hd;
    uint64_t ts_recv;
    uint64_t paired_shares;
    uint64_t imbalance_shares;
    int64_t current_reference_price;
    uint32_t sequence;
    char imbalance_direction;   /* B S N O P */
    char cross_type;            /* O C H A */
    char price_variation_indicator;
    uint8_t _reserved[1];
} fh_noii;

typedef struct fh_noii_prices {
    fh_record_header hd;
    uint64_t ts_recv;
    int64_t far_price;
    int64_t near_price;
    uint32_t sequence;
    uint8_t _reserved[4];
} fh_noii_prices;

typedef struct fh_rpii {
    fh_record_header hd;
    uint64_t ts_recv;
    uint32_t sequence;
    char interest_flag;     /* B S A N */
    uint8_t _reserved[3];
} fh_rpii;

typedef struct fh_dlcr {
    fh_record_header hd;
    uint64_t ts_recv;
    uint64_t near_execution_time;   /* as on the wire */
    int64_t near_execution_price;
    int64_t minimum_allowable_price;
    uint32_t sequence;
    char open_eligibility_status;   /* N Y */
    uint8_t _reserved[3];
} fh_dlcr;

typedef struct fh_dlcr_collars {
    fh_record_header hd;
    uint64_t ts_recv;
    int64_t maximum_allowable_price;
    int64_t lower_price_range_collar;
    int64_t upper_price_range_collar;
    uint32_t sequence;
    uint8_t _reserved[4];
} fh_dlcr_collars;

typedef struct fh_broken_trade {
    fh_record_header hd;
    uint64_t ts_recv;
    uint64_t match_number;
    uint32_t sequence;
    uint8_t _reserved[4];
} fh_broken_trade;

/* ---- CME MDP 3.0 records (ours; DBN's Mbp1Msg is 80 bytes and does not fit a slot) ---------- */
#define FH_MBP_ACTION_DELETE_THRU 'D'  /* MDP3 DeleteThru: remove every level of the side */
#define FH_MBP_ACTION_DELETE_FROM 'F'  /* MDP3 DeleteFrom: remove levels 1..level of the side */
#define FH_MBP_ACTION_OVERLAY 'O'      /* MDP3 Overlay: replace the level */

/* One price-level update: action (FH_ACTION_ADD/MODIFY/CANCEL/CLEAR or FH_MBP_ACTION_*) at `level`
 * (1-based) of side `side` of the outright book (implied == 0) or the implied book (implied == 1). */
typedef struct fh_mbp_update {
    fh_record_header hd;    /* instrument_id = MDP3 SecurityID, ts_event = TransactTime */
    uint64_t ts_recv;
    int64_t price;          /* 1e-9 units; FH_UNDEF_PRICE when the wire value is null */
    uint32_t size;          /* 0 when null */
    uint32_t number_of_orders; /* 0 when null (implied levels carry none) */
    uint32_t rpt_seq;       /* per-instrument sequence (MDP3 RptSeq) */
    uint32_t sequence;      /* low 32 bits of the packet sequence (MDP3 MsgSeqNum) */
    uint8_t level;          /* 1-based price level (MDPriceLevel) */
    char action;
    char side;              /* FH_SIDE_BID / FH_SIDE_ASK */
    uint8_t flags;          /* FH_F_* (FH_F_MBP always; FH_F_SNAPSHOT from the snapshot loop) */
    char entry_type;        /* wire MDEntryType: '0' bid, '1' offer, 'E' implied bid, 'F' implied offer */
    uint8_t implied;        /* 1: implied book */
    uint8_t channel_id;
    uint8_t match_event;    /* MDP3 MatchEventIndicator bits */
    uint8_t _reserved[8];
} fh_mbp_update;

/* A statistic (MDP3 session/daily statistics, volume, limits; also non-book snapshot entries). */
#define FH_STAT_HIGH_LIMIT 'H'     /* LimitsBanding HighLimitPrice */
#define FH_STAT_LOW_LIMIT 'L'      /* LimitsBanding LowLimitPrice */
#define FH_STAT_MAX_VARIATION 'V'  /* LimitsBanding MaxPriceVariation */
#define FH_UNDEF_QUANTITY INT64_MAX
typedef struct fh_statistic {
    fh_record_header hd;
    uint64_t ts_recv;
    int64_t price;          /* 1e-9 units; FH_UNDEF_PRICE when none */
    int64_t quantity;       /* FH_UNDEF_QUANTITY when none */
    uint32_t rpt_seq;
    uint32_t sequence;
    char stat_type;         /* wire MDEntryType ('4' open, '6' settle, '7' high, '8' low, 'B' cleared
                               volume, 'C' open interest, 'e' volume, ...) or FH_STAT_* */
    char action;            /* FH_ACTION_ADD / MODIFY / CANCEL */
    uint8_t open_close_settl_flag; /* 255 when null */
    uint8_t settl_price_type;      /* bits as on the wire */
    uint16_t trading_date;  /* days since UNIX epoch, 65535 when null */
    uint8_t flags;
    uint8_t channel_id;
    uint16_t template_id;
    uint8_t _reserved[6];
} fh_statistic;

/* Trading status of one instrument (instrument_id != 0) or of a whole security group (0). */
typedef struct fh_security_status {
    fh_record_header hd;
    uint64_t ts_recv;
    uint32_t sequence;
    uint16_t trade_date;    /* days since UNIX epoch, 65535 when null */
    uint8_t trading_status; /* SecurityTradingStatus (255 null) */
    uint8_t halt_reason;
    uint8_t trading_event;  /* SecurityTradingEvent */
    uint8_t match_event;
    char security_group[6]; /* NUL padded, as on the wire */
    char asset[6];
    uint8_t channel_id;
    uint8_t flags;
    uint8_t _reserved[16];
} fh_security_status;

/* Security definition (MDP3 MDInstrumentDefinition*): maps instrument_id to a symbol. */
typedef struct fh_instrument_def {
    fh_record_header hd;    /* ts_event = LastUpdateTime */
    int64_t min_price_increment; /* 1e-9 units, FH_UNDEF_PRICE when null */
    int64_t display_factor; /* 1e-9 units */
    char symbol[20];        /* NUL padded */
    char update_action;     /* 'A' add, 'D' delete, 'M' modify */
    char instrument_class;  /* 'F' future, 'O' option, 'S' spread, 'X' other */
    uint8_t put_or_call;    /* 0 put, 1 call, 255 n/a */
    uint8_t market_segment_id;
    int64_t strike_price;   /* 1e-9 units, FH_UNDEF_PRICE unless an option */
} fh_instrument_def;

/* ---- order-entry events (ours): OUCH 4.2 / 5.0 and FIX order sessions ----------------------- */
#define FH_OE_NEW 'N'           /* order sent by the client (OUCH O, FIX D) */
#define FH_OE_ACCEPTED 'A'      /* exchange acknowledged the order (OUCH A, FIX 8 ExecType 0) */
#define FH_OE_REPLACE_REQ 'P'   /* client asked to replace (OUCH U, FIX G) */
#define FH_OE_REPLACED 'R'      /* replace done (OUCH U out, FIX 8 ExecType 5) */
#define FH_OE_CANCEL_REQ 'X'    /* client asked to cancel / reduce (OUCH X, FIX F) */
#define FH_OE_CANCELED 'C'      /* order (partly) canceled (OUCH C, FIX 8 ExecType 4) */
#define FH_OE_MODIFY_REQ 'm'    /* OUCH 5.0 M (modify) */
#define FH_OE_MODIFIED 'M'      /* OUCH 5.0 M out (order modified) */
#define FH_OE_EXECUTED 'E'      /* fill (OUCH E, FIX 8 ExecType 1/2/F) */
#define FH_OE_BROKEN 'B'        /* trade broken (OUCH B, FIX 8 ExecType H) */
#define FH_OE_REJECTED 'J'      /* order rejected (OUCH J, FIX 8 ExecType 8) */
#define FH_OE_CANCEL_REJECT 'K' /* cancel/replace rejected (FIX 9, OUCH 5.0 cancel reject) */
#define FH_OE_RESTATED 'S'      /* restatement / priority update / other status (OUCH 5.0 T, FIX 8 D) */
#define FH_OE_OTHER 'O'         /* any other order-entry message that belongs to an order */
#define FH_OE_PROTO_OUCH42 1
#define FH_OE_PROTO_OUCH50 2
#define FH_OE_PROTO_FIX42 3
#define FH_OE_PROTO_FIX44 4
#define FH_OE_F_FROM_EXCHANGE 0x01  /* outbound from the exchange (else client -> exchange) */
#define FH_OE_F_POSS_DUP 0x02       /* FIX PossDupFlag / a resent OUCH sequenced message */
#define FH_OE_F_UNKNOWN_ORDER 0x04  /* no earlier event of this order in the capture */
#define FH_OE_F_LATENCY 0x08        /* latency_ns is set (first ack/reject after the request) */
#define FH_OE_F_AFTER_GAP 0x10      /* a sequence or TCP gap preceded this message in its direction */

/* One order-entry event. client_ref is the OUCH 5.0 UserRefNum, or a 32-bit FNV-1a hash of the
 * OUCH 4.2 token / FIX ClOrdID (a join key for analysis; the decoder tracks lifecycles on the full
 * identifiers). latency_ns: for the first ack/reject of a request, ts_recv(ack) - ts_recv(request),
 * saturated at UINT32_MAX (4.29 s). */
typedef struct fh_order_event {
    fh_record_header hd;    /* instrument_id from the symbol map (0 unknown); ts_event: exchange time
                               or FH_UNDEF_TIMESTAMP when the message carries none */
    uint64_t ts_recv;
    uint64_t order_id;      /* exchange order reference (OUCH order ref, FIX OrderID hash), 0 unknown */
    int64_t price;          /* 1e-9 units; FH_UNDEF_PRICE when none */
    uint32_t client_ref;
    uint32_t size;          /* order qty (N/A/R/P), executed qty (E/B), canceled qty (C) */
    uint32_t leaves_qty;    /* open qty after the event, as tracked */
    uint32_t sequence;      /* SoupBinTCP sequence / FIX MsgSeqNum (low 32 bits), 0 unsequenced */
    uint32_t latency_ns;
    char event;             /* FH_OE_* */
    char side;              /* FH_SIDE_BID / FH_SIDE_ASK / FH_SIDE_NONE */
    uint8_t protocol;       /* FH_OE_PROTO_* */
    uint8_t flags;          /* FH_OE_F_* */
} fh_order_event;

/* Best bid and offer of one instrument after a change of its top of book (ours). Made from the books'
 * BBO events (fh/book.h fh_bbo_event) by the market-data publisher (feedhandler/publish.py) for
 * `--publish-what bbo`; not a decoder output. Sizes saturate at UINT32_MAX shares. */
typedef struct fh_bbo_update {
    fh_record_header hd;    /* ts_event: of the record that changed the top */
    uint64_t ts_recv;       /* of that record (capture clock) */
    int64_t bid_px;         /* 1e-9 units; FH_UNDEF_PRICE: no bid */
    int64_t ask_px;         /* 1e-9 units; FH_UNDEF_PRICE: no offer */
    uint32_t bid_sz;        /* shares at the best bid (0: none) */
    uint32_t ask_sz;
    uint32_t sequence;      /* per publisher, counts BBO records */
    uint8_t flags;          /* FH_F_LAST on every record (one event each) */
    uint8_t _reserved[3];
} fh_bbo_update;

/* One ring slot: any record. */
typedef union fh_tick {
    fh_record_header hd;
    fh_mbo mbo;
    fh_trade trade;
    fh_gap gap;
    fh_system_event system_event;
    fh_stock_directory stock_directory;
    fh_trading_action trading_action;
    fh_reg_sho reg_sho;
    fh_mpp mpp;
    fh_mwcb_decline mwcb_decline;
    fh_mwcb_status mwcb_status;
    fh_ipo_quoting ipo_quoting;
    fh_luld_collar luld_collar;
    fh_operational_halt operational_halt;
    fh_noii noii;
    fh_noii_prices noii_prices;
    fh_rpii rpii;
    fh_dlcr dlcr;
    fh_dlcr_collars dlcr_collars;
    fh_broken_trade broken_trade;
    fh_mbp_update mbp_update;
    fh_statistic statistic;
    fh_security_status security_status;
    fh_instrument_def instrument_def;
    fh_order_event order_event;
    fh_bbo_update bbo;
    uint8_t raw[FH_TICK_SIZE];
} fh_tick;

_Static_assert(sizeof(fh_record_header) == 16, "DBN RecordHeader is 16 bytes");
_Static_assert(offsetof(fh_mbo, ext) == 56, "DBN MboMsg is 56 bytes");
_Static_assert(offsetof(fh_trade, order_id) == 48, "DBN TradeMsg is 48 bytes");
_Static_assert(sizeof(fh_tick) == FH_TICK_SIZE, "a tick is one 64-byte slot");
_Static_assert(sizeof(fh_bbo_update) == 56, "a BBO update is 56 bytes of its slot");
_Static_assert(sizeof(fh_mbp_update) == 64 && sizeof(fh_statistic) == 64, "MDP3 records fill a slot");
_Static_assert(sizeof(fh_security_status) == 64 && sizeof(fh_instrument_def) == 64, "MDP3 records fill a slot");
_Static_assert(sizeof(fh_order_event) == 64, "order events fill a slot");
_Static_assert(_Alignof(fh_tick) == 8, "ticks are 8-byte aligned");

/* DBN lengths (in 4-byte units) of the DBN-compatible records. */
#define FH_DBN_MBO_LENGTH (56 / 4)
#define FH_DBN_TRADE_LENGTH (48 / 4)
/* Length of our own records: the whole slot. */
#define FH_OWN_LENGTH (FH_TICK_SIZE / 4)

/* ---- descriptor table (csrc/record.c): numpy dtypes and DBN writers are derived from it ---- */
typedef struct fh_field_desc {
    const char *name;
    uint16_t offset;        /* bytes from the start of the record */
    uint16_t size;          /* bytes of one element */
    uint16_t count;         /* elements (arrays: > 1) */
    char kind;              /* 'u' unsigned int, 'i' signed int, 'c' char / char array, 'V' padding */
} fh_field_desc;

typedef struct fh_record_desc {
    const char *name;       /* "mbo", "trade", ... (the Python-facing name) */
    uint8_t rtype;
    uint16_t size;          /* sizeof(struct) */
    uint16_t dbn_length;    /* bytes that are DBN-compatible (0: not a DBN record) */
    const fh_field_desc *fields;
    uint16_t nfields;
} fh_record_desc;

/* All record layouts; *n receives their number. Static storage, safe from any thread. */
const fh_record_desc *fh_record_descs(size_t *n);

#endif
