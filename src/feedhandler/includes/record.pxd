# Cython view of csrc/include/fh/record.h (the single definition of every record layout).
# Field lists here only let Cython name the fields; sizes and offsets come from the C header, and
# tests/test_record_layout.py checks this view against the C descriptor table.
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

cdef extern from "fh/record.h" nogil:
    enum:
        FH_TICK_SIZE
        FH_RTYPE_TRADE
        FH_RTYPE_MBO
        FH_RTYPE_GAP
        FH_RTYPE_SYSTEM_EVENT
        FH_RTYPE_STOCK_DIRECTORY
        FH_RTYPE_TRADING_ACTION
        FH_RTYPE_REG_SHO
        FH_RTYPE_MPP
        FH_RTYPE_MWCB_DECLINE
        FH_RTYPE_MWCB_STATUS
        FH_RTYPE_IPO_QUOTING
        FH_RTYPE_LULD_COLLAR
        FH_RTYPE_OPERATIONAL_HALT
        FH_RTYPE_NOII
        FH_RTYPE_NOII_PRICES
        FH_RTYPE_RPII
        FH_RTYPE_DLCR
        FH_RTYPE_DLCR_COLLARS
        FH_RTYPE_BROKEN_TRADE
        FH_RTYPE_MBP_UPDATE
        FH_RTYPE_STATISTIC
        FH_RTYPE_SECURITY_STATUS
        FH_RTYPE_INSTRUMENT_DEF
        FH_RTYPE_ORDER_EVENT
        FH_OE_PROTO_OUCH42
        FH_OE_PROTO_OUCH50
        FH_OE_PROTO_FIX42
        FH_OE_PROTO_FIX44
        FH_OE_F_FROM_EXCHANGE
        FH_OE_F_POSS_DUP
        FH_OE_F_UNKNOWN_ORDER
        FH_OE_F_LATENCY
        FH_OE_F_AFTER_GAP
        FH_F_LAST
        FH_F_TOB
        FH_F_SNAPSHOT
        FH_F_MBP
        FH_F_BAD_TS_RECV
        FH_F_MAYBE_BAD_BOOK
        FH_F_WHOLE_ORDER
        FH_F_NONPRINTABLE
        FH_F_DBN_MASK
        FH_GAP_OPENED
        FH_GAP_FILLED
        FH_GAP_LOST
        FH_GAP_RESET
        FH_DBN_MBO_LENGTH
        FH_DBN_TRADE_LENGTH
        FH_OWN_LENGTH
    const int64_t FH_PRICE_SCALE
    const int64_t FH_UNDEF_PRICE
    const uint64_t FH_UNDEF_TIMESTAMP
    const char FH_ACTION_ADD, FH_ACTION_CANCEL, FH_ACTION_MODIFY, FH_ACTION_CLEAR
    const char FH_ACTION_TRADE, FH_ACTION_FILL, FH_ACTION_NONE
    const char FH_SIDE_BID, FH_SIDE_ASK, FH_SIDE_NONE
    const char FH_MBP_ACTION_DELETE_THRU, FH_MBP_ACTION_DELETE_FROM, FH_MBP_ACTION_OVERLAY
    const char FH_STAT_HIGH_LIMIT, FH_STAT_LOW_LIMIT, FH_STAT_MAX_VARIATION
    const int64_t FH_UNDEF_QUANTITY

    ctypedef struct fh_record_header:
        uint8_t length
        uint8_t rtype
        uint16_t publisher_id
        uint32_t instrument_id
        uint64_t ts_event

    ctypedef union _fh_mbo_ext:
        uint64_t match_number
        char attribution[8]

    ctypedef struct fh_mbo:
        fh_record_header hd
        uint64_t order_id
        int64_t price
        uint32_t size
        uint8_t flags
        uint8_t channel_id
        char action
        char side
        uint64_t ts_recv
        int32_t ts_in_delta
        uint32_t sequence
        _fh_mbo_ext ext

    ctypedef struct fh_trade:
        fh_record_header hd
        int64_t price
        uint32_t size
        char action
        char side
        uint8_t flags
        uint8_t depth
        uint64_t ts_recv
        int32_t ts_in_delta
        uint32_t sequence
        uint64_t order_id
        uint64_t match_number

    ctypedef struct fh_gap:
        fh_record_header hd
        uint64_t ts_recv
        uint64_t first_missing
        uint64_t count
        uint32_t channel
        uint8_t kind
        char session[10]

    ctypedef struct fh_system_event:
        fh_record_header hd
        uint64_t ts_recv
        uint32_t sequence
        char event_code

    ctypedef struct fh_stock_directory:
        fh_record_header hd
        uint64_t ts_recv
        uint32_t sequence
        uint32_t round_lot_size
        uint32_t etp_leverage_factor
        char symbol[8]
        char market_category
        char financial_status
        char round_lots_only
        char issue_classification
        char issue_subtype[2]
        char authenticity
        char short_sale_threshold
        char ipo_flag
        char luld_ref_price_tier
        char etp_flag
        char inverse_indicator

    ctypedef struct fh_trading_action:
        fh_record_header hd
        uint64_t ts_recv
        uint32_t sequence
        char trading_state
        char reserved
        char reason[4]

    ctypedef struct fh_reg_sho:
        fh_record_header hd
        uint64_t ts_recv
        uint32_t sequence
        char action

    ctypedef struct fh_mpp:
        fh_record_header hd
        uint64_t ts_recv
        uint32_t sequence
        char mpid[4]
        char primary_market_maker
        char market_maker_mode
        char market_participant_state

    ctypedef struct fh_mwcb_decline:
        fh_record_header hd
        uint64_t ts_recv
        int64_t level1
        int64_t level2
        int64_t level3
        uint32_t sequence

    ctypedef struct fh_mwcb_status:
        fh_record_header hd
        uint64_t ts_recv
        uint32_t sequence
        char breached_level

    ctypedef struct fh_ipo_quoting:
        fh_record_header hd
        uint64_t ts_recv
        int64_t ipo_price
        uint32_t sequence
        uint32_t release_time
        char release_qualifier

    ctypedef struct fh_luld_collar:
        fh_record_header hd
        uint64_t ts_recv
        int64_t reference_price
        int64_t upper_price
        int64_t lower_price
        uint32_t sequence
        uint32_t extension

    ctypedef struct fh_operational_halt:
        fh_record_header hd
        uint64_t ts_recv
        uint32_t sequence
        char market_code
        char halt_action

    ctypedef struct fh_noii:
        fh_record_header hd
        uint64_t ts_recv
        uint64_t paired_shares
        uint64_t imbalance_shares
        int64_t current_reference_price
        uint32_t sequence
        char imbalance_direction
        char cross_type
        char price_variation_indicator

    ctypedef struct fh_noii_prices:
        fh_record_header hd
        uint64_t ts_recv
        int64_t far_price
        int64_t near_price
        uint32_t sequence

    ctypedef struct fh_rpii:
        fh_record_header hd
        uint64_t ts_recv
        uint32_t sequence
        char interest_flag

    ctypedef struct fh_dlcr:
        fh_record_header hd
        uint64_t ts_recv
        uint64_t near_execution_time
        int64_t near_execution_price
        int64_t minimum_allowable_price
        uint32_t sequence
        char open_eligibility_status

    ctypedef struct fh_dlcr_collars:
        fh_record_header hd
        uint64_t ts_recv
        int64_t maximum_allowable_price
        int64_t lower_price_range_collar
        int64_t upper_price_range_collar
        uint32_t sequence

    ctypedef struct fh_broken_trade:
        fh_record_header hd
        uint64_t ts_recv
        uint64_t match_number
        uint32_t sequence

    ctypedef struct fh_mbp_update:
        fh_record_header hd
        uint64_t ts_recv
        int64_t price
        uint32_t size
        uint32_t number_of_orders
        uint32_t rpt_seq
        uint32_t sequence
        uint8_t level
        char action
        char side
        uint8_t flags
        char entry_type
        uint8_t implied
        uint8_t channel_id
        uint8_t match_event

    ctypedef struct fh_statistic:
        fh_record_header hd
        uint64_t ts_recv
        int64_t price
        int64_t quantity
        uint32_t rpt_seq
        uint32_t sequence
        char stat_type
        char action
        uint8_t open_close_settl_flag
        uint8_t settl_price_type
        uint16_t trading_date
        uint8_t flags
        uint8_t channel_id
        uint16_t template_id

    ctypedef struct fh_security_status:
        fh_record_header hd
        uint64_t ts_recv
        uint32_t sequence
        uint16_t trade_date
        uint8_t trading_status
        uint8_t halt_reason
        uint8_t trading_event
        uint8_t match_event
        char security_group[6]
        char asset[6]
        uint8_t channel_id
        uint8_t flags

    ctypedef struct fh_instrument_def:
        fh_record_header hd
        int64_t min_price_increment
        int64_t display_factor
        char symbol[20]
        char update_action
        char instrument_class
        uint8_t put_or_call
        uint8_t market_segment_id
        int64_t strike_price

    const char FH_OE_NEW, FH_OE_ACCEPTED, FH_OE_REPLACE_REQ, FH_OE_REPLACED, FH_OE_CANCEL_REQ
    const char FH_OE_CANCELED, FH_OE_MODIFY_REQ, FH_OE_MODIFIED, FH_OE_EXECUTED, FH_OE_BROKEN
    const char FH_OE_REJECTED, FH_OE_CANCEL_REJECT, FH_OE_RESTATED, FH_OE_OTHER

    ctypedef struct fh_order_event:
        fh_record_header hd
        uint64_t ts_recv
        uint64_t order_id
        int64_t price
        uint32_t client_ref
        uint32_t size
        uint32_t leaves_qty
        uint32_t sequence
        uint32_t latency_ns
        char event
        char side
        uint8_t protocol
        uint8_t flags

    ctypedef union fh_tick:
        fh_record_header hd
        fh_mbo mbo
        fh_trade trade
        fh_gap gap
        fh_system_event system_event
        fh_stock_directory stock_directory
        fh_trading_action trading_action
        fh_reg_sho reg_sho
        fh_mpp mpp
        fh_mwcb_decline mwcb_decline
        fh_mwcb_status mwcb_status
        fh_ipo_quoting ipo_quoting
        fh_luld_collar luld_collar
        fh_operational_halt operational_halt
        fh_noii noii
        fh_noii_prices noii_prices
        fh_rpii rpii
        fh_dlcr dlcr
        fh_dlcr_collars dlcr_collars
        fh_broken_trade broken_trade
        fh_mbp_update mbp_update
        fh_statistic statistic
        fh_security_status security_status
        fh_instrument_def instrument_def
        fh_order_event order_event
        uint8_t raw[64]

    ctypedef struct fh_field_desc:
        const char *name
        uint16_t offset
        uint16_t size
        uint16_t count
        char kind

    ctypedef struct fh_record_desc:
        const char *name
        uint8_t rtype
        uint16_t size
        uint16_t dbn_length
        const fh_field_desc *fields
        uint16_t nfields

    const fh_record_desc *fh_record_descs(size_t *n)
