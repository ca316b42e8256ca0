/* record.c - descriptor table of every record layout in fh/record.h.
 *
 * Offsets and sizes come from the compiler (offsetof/sizeof), never typed by hand. Python builds its
 * numpy dtypes from this table (feedhandler.records), and the DBN writer uses dbn_length. A test
 * (tests/test_record_layout.py) checks that each record's fields cover every byte of its struct.
 * Static data; safe from any thread.
 */
#include "fh/record.h"

#define FLD(T, f, k) {#f, (uint16_t)offsetof(T, f), (uint16_t)sizeof(((T *)0)->f), 1, k}
#define NAMED(T, name, f, k) {name, (uint16_t)offsetof(T, f), (uint16_t)sizeof(((T *)0)->f), 1, k}
#define ARR(T, f, elt, k) \
    {#f, (uint16_t)offsetof(T, f), (uint16_t)sizeof(elt), (uint16_t)(sizeof(((T *)0)->f) / sizeof(elt)), k}
#define PAD(T, f) {#f, (uint16_t)offsetof(T, f), 1, (uint16_t)sizeof(((T *)0)->f), 'V'}
#define HEADER(T)                                   \
    NAMED(T, "length", hd.length, 'u'),             \
    NAMED(T, "rtype", hd.rtype, 'u'),               \
    NAMED(T, "publisher_id", hd.publisher_id, 'u'), \
    NAMED(T, "instrument_id", hd.instrument_id, 'u'), \
    NAMED(T, "ts_event", hd.ts_event, 'u')
#define N(a) ((uint16_t)(sizeof(a) / sizeof((a)[0])))

static const fh_field_desc mbo_fields[] = {
    HEADER(fh_mbo), FLD(fh_mbo, order_id, 'u'), FLD(fh_mbo, price, 'i'), FLD(fh_mbo, size, 'u'),
    FLD(fh_mbo, flags, 'u'), FLD(fh_mbo, channel_id, 'u'), FLD(fh_mbo, action, 'c'), FLD(fh_mbo, side, 'c'),
    FLD(fh_mbo, ts_recv, 'u'), FLD(fh_mbo, ts_in_delta, 'i'), FLD(fh_mbo, sequence, 'u'),
    NAMED(fh_mbo, "match_number", ext.match_number, 'u'),
    {"attribution", (uint16_t)offsetof(fh_mbo, ext.attribution), 1, 8, 'c'},
};
static const fh_field_desc trade_fields[] = {
    HEADER(fh_trade), FLD(fh_trade, price, 'i'), FLD(fh_trade, size, 'u'), FLD(fh_trade, action, 'c'),
    FLD(fh_trade, side, 'c'), FLD(fh_trade, flags, 'u'), FLD(fh_trade, depth, 'u'), FLD(fh_trade, ts_recv, 'u'),
    FLD(fh_trade, ts_in_delta, 'i'), FLD(fh_trade, sequence, 'u'), FLD(fh_trade, order_id, 'u'),
    FLD(fh_trade, match_number, 'u'),
};
static const fh_field_desc gap_fields[] = {
    HEADER(fh_gap), FLD(fh_gap, ts_recv, 'u'), FLD(fh_gap, first_missing, 'u'), FLD(fh_gap, count, 'u'),
    FLD(fh_gap, channel, 'u'), FLD(fh_gap, kind, 'u'), PAD(fh_gap, _reserved), ARR(fh_gap, session, char, 'c'),
    PAD(fh_gap, _reserved2),
};
static const fh_field_desc system_event_fields[] = {
    HEADER(fh_system_event), FLD(fh_system_event, ts_recv, 'u'), FLD(fh_system_event, sequence, 'u'),
    FLD(fh_system_event, event_code, 'c'), PAD(fh_system_event, _reserved),
};
static const fh_field_desc stock_directory_fields[] = {
    HEADER(fh_stock_directory), FLD(fh_stock_directory, ts_recv, 'u'), FLD(fh_stock_directory, sequence, 'u'),
    FLD(fh_stock_directory, round_lot_size, 'u'), FLD(fh_stock_directory, etp_leverage_factor, 'u'),
    ARR(fh_stock_directory, symbol, char, 'c'), FLD(fh_stock_directory, market_category, 'c'),
    FLD(fh_stock_directory, financial_status, 'c'), FLD(fh_stock_directory, round_lots_only, 'c'),
    FLD(fh_stock_directory, issue_classification, 'c'), ARR(fh_stock_directory, issue_subtype, char, 'c'),
    FLD(fh_stock_directory, authenticity, 'c'), FLD(fh_stock_directory, short_sale_threshold, 'c'),
    FLD(fh_stock_directory, ipo_flag, 'c'), FLD(fh_stock_directory, luld_ref_price_tier, 'c'),
    FLD(fh_stock_directory, etp_flag, 'c'), FLD(fh_stock_directory, inverse_indicator, 'c'),
};
static const fh_field_desc trading_action_fields[] = {
    HEADER(fh_trading_action), FLD(fh_trading_action, ts_recv, 'u'), FLD(fh_trading_action, sequence, 'u'),
    FLD(fh_trading_action, trading_state, 'c'), FLD(fh_trading_action, reserved, 'c'),
    ARR(fh_trading_action, reason, char, 'c'), PAD(fh_trading_action, _reserved),
};
static const fh_field_desc reg_sho_fields[] = {
    HEADER(fh_reg_sho), FLD(fh_reg_sho, ts_recv, 'u'), FLD(fh_reg_sho, sequence, 'u'),
    FLD(fh_reg_sho, action, 'c'), PAD(fh_reg_sho, _reserved),
};
static const fh_field_desc mpp_fields[] = {
    HEADER(fh_mpp), FLD(fh_mpp, ts_recv, 'u'), FLD(fh_mpp, sequence, 'u'), ARR(fh_mpp, mpid, char, 'c'),
    FLD(fh_mpp, primary_market_maker, 'c'), FLD(fh_mpp, market_maker_mode, 'c'),
    FLD(fh_mpp, market_participant_state, 'c'), PAD(fh_mpp, _reserved),
};
static const fh_field_desc mwcb_decline_fields[] = {
    HEADER(fh_mwcb_decline), FLD(fh_mwcb_decline, ts_recv, 'u'), FLD(fh_mwcb_decline, level1, 'i'),
    FLD(fh_mwcb_decline, level2, 'i'), FLD(fh_mwcb_decline, level3, 'i'), FLD(fh_mwcb_decline, sequence, 'u'),
    PAD(fh_mwcb_decline, _reserved),
};
static const fh_field_desc mwcb_status_fields[] = {
    HEADER(fh_mwcb_status), FLD(fh_mwcb_status, ts_recv, 'u'), FLD(fh_mwcb_status, sequence, 'u'),
    FLD(fh_mwcb_status, breached_level, 'c'), PAD(fh_mwcb_status, _reserved),
};
static const fh_field_desc ipo_quoting_fields[] = {
    HEADER(fh_ipo_quoting), FLD(fh_ipo_quoting, ts_recv, 'u'), FLD(fh_ipo_quoting, ipo_price, 'i'),
    FLD(fh_ipo_quoting, sequence, 'u'), FLD(fh_ipo_quoting, release_time, 'u'),
    FLD(fh_ipo_quoting, release_qualifier, 'c'), PAD(fh_ipo_quoting, _reserved),
};
static const fh_field_desc luld_collar_fields[] = {
    HEADER(fh_luld_collar), FLD(fh_luld_collar, ts_recv, 'u'), FLD(fh_luld_collar, reference_price, 'i'),
    FLD(fh_luld_collar, upper_price, 'i'), FLD(fh_luld_collar, lower_price, 'i'),
    FLD(fh_luld_collar, sequence, 'u'), FLD(fh_luld_collar, extension, 'u'),
};
static const fh_field_desc operational_halt_fields[] = {
    HEADER(fh_operational_halt), FLD(fh_operational_halt, ts_recv, 'u'), FLD(fh_operational_halt, sequence, 'u'),
    FLD(fh_operational_halt, market_code, 'c'), FLD(fh_operational_halt, halt_action, 'c'),
    PAD(fh_operational_halt, _reserved),
};
static const fh_field_desc noii_fields[] = {
    HEADER(fh_noii), FLD(fh_noii, ts_recv, 'u'), FLD(fh_noii, paired_shares, 'u'),
    FLD(fh_noii, imbalance_shares, 'u'), FLD(fh_noii, current_reference_price, 'i'), FLD(fh_noii, sequence, 'u'),
    FLD(fh_noii, imbalance_direction, 'c'), FLD(fh_noii, cross_type, 'c'),
    FLD(fh_noii, price_variation_indicator, 'c'), PAD(fh_noii, _reserved),
};
static const fh_field_desc noii_prices_fields[] = {
    HEADER(fh_noii_prices), FLD(fh_noii_prices, ts_recv, 'u'), FLD(fh_noii_prices, far_price, 'i'),
    FLD(fh_noii_prices, near_price, 'i'), FLD(fh_noii_prices, sequence, 'u'), PAD(fh_noii_prices, _reserved),
};
static const fh_field_desc rpii_fields[] = {
    HEADER(fh_rpii), FLD(fh_rpii, ts_recv, 'u'), FLD(fh_rpii, sequence, 'u'), FLD(fh_rpii, interest_flag, 'c'),
    PAD(fh_rpii, _reserved),
};
static const fh_field_desc dlcr_fields[] = {
    HEADER(fh_dlcr), FLD(fh_dlcr, ts_recv, 'u'), FLD(fh_dlcr, near_execution_time, 'u'),
    FLD(fh_dlcr, near_execution_price, 'i'), FLD(fh_dlcr, minimum_allowable_price, 'i'),
    FLD(fh_dlcr, sequence, 'u'), FLD(fh_dlcr, open_eligibility_status, 'c'), PAD(fh_dlcr, _reserved),
};
static const fh_field_desc dlcr_collars_fields[] = {
    HEADER(fh_dlcr_collars), FLD(fh_dlcr_collars, ts_recv, 'u'), FLD(fh_dlcr_collars, maximum_allowable_price, 'i'),
    FLD(fh_dlcr_collars, lower_price_range_collar, 'i'), FLD(fh_dlcr_collars, upper_price_range_collar, 'i'),
    FLD(fh_dlcr_collars, sequence, 'u'), PAD(fh_dlcr_collars, _reserved),
};
static const fh_field_desc broken_trade_fields[] = {
    HEADER(fh_broken_trade), FLD(fh_broken_trade, ts_recv, 'u'), FLD(fh_broken_trade, match_number, 'u'),
    FLD(fh_broken_trade, sequence, 'u'), PAD(fh_broken_trade, _reserved),
};

static const fh_field_desc mbp_update_fields[] = {
    HEADER(fh_mbp_update), FLD(fh_mbp_update, ts_recv, 'u'), FLD(fh_mbp_update, price, 'i'),
    FLD(fh_mbp_update, size, 'u'), FLD(fh_mbp_update, number_of_orders, 'u'), FLD(fh_mbp_update, rpt_seq, 'u'),
    FLD(fh_mbp_update, sequence, 'u'), FLD(fh_mbp_update, level, 'u'), FLD(fh_mbp_update, action, 'c'),
    FLD(fh_mbp_update, side, 'c'), FLD(fh_mbp_update, flags, 'u'), FLD(fh_mbp_update, entry_type, 'c'),
    FLD(fh_mbp_update, implied, 'u'), FLD(fh_mbp_update, channel_id, 'u'), FLD(fh_mbp_update, match_event, 'u'),
    PAD(fh_mbp_update, _reserved),
};
static const fh_field_desc statistic_fields[] = {
    HEADER(fh_statistic), FLD(fh_statistic, ts_recv, 'u'), FLD(fh_statistic, price, 'i'),
    FLD(fh_statistic, quantity, 'i'), FLD(fh_statistic, rpt_seq, 'u'), FLD(fh_statistic, sequence, 'u'),
    FLD(fh_statistic, stat_type, 'c'), FLD(fh_statistic, action, 'c'), FLD(fh_statistic, open_close_settl_flag, 'u'),
    FLD(fh_statistic, settl_price_type, 'u'), FLD(fh_statistic, trading_date, 'u'), FLD(fh_statistic, flags, 'u'),
    FLD(fh_statistic, channel_id, 'u'), FLD(fh_statistic, template_id, 'u'), PAD(fh_statistic, _reserved),
};
static const fh_field_desc security_status_fields[] = {
    HEADER(fh_security_status), FLD(fh_security_status, ts_recv, 'u'), FLD(fh_security_status, sequence, 'u'),
    FLD(fh_security_status, trade_date, 'u'), FLD(fh_security_status, trading_status, 'u'),
    FLD(fh_security_status, halt_reason, 'u'), FLD(fh_security_status, trading_event, 'u'),
    FLD(fh_security_status, match_event, 'u'), ARR(fh_security_status, security_group, char, 'c'),
    ARR(fh_security_status, asset, char, 'c'), FLD(fh_security_status, channel_id, 'u'),
    FLD(fh_security_status, flags, 'u'), PAD(fh_security_status, _reserved),
};
static const fh_field_desc instrument_def_fields[] = {
    HEADER(fh_instrument_def), FLD(fh_instrument_def, min_price_increment, 'i'),
    FLD(fh_instrument_def, display_factor, 'i'), ARR(fh_instrument_def, symbol, char, 'c'),
    FLD(fh_instrument_def, update_action, 'c'), FLD(fh_instrument_def, instrument_class, 'c'),
    FLD(fh_instrument_def, put_or_call, 'u'), FLD(fh_instrument_def, market_segment_id, 'u'),
    FLD(fh_instrument_def, strike_price, 'i'),
};

static const fh_field_desc order_event_fields[] = {
    HEADER(fh_order_event), FLD(fh_order_event, ts_recv, 'u'), FLD(fh_order_event, order_id, 'u'),
    FLD(fh_order_event, price, 'i'), FLD(fh_order_event, client_ref, 'u'), FLD(fh_order_event, size, 'u'),
    FLD(fh_order_event, leaves_qty, 'u'), FLD(fh_order_event, sequence, 'u'), FLD(fh_order_event, latency_ns, 'u'),
    FLD(fh_order_event, event, 'c'), FLD(fh_order_event, side, 'c'), FLD(fh_order_event, protocol, 'u'),
    FLD(fh_order_event, flags, 'u'),
};

static const fh_field_desc bbo_fields[] = {
    HEADER(fh_bbo_update), FLD(fh_bbo_update, ts_recv, 'u'), FLD(fh_bbo_update, bid_px, 'i'),
    FLD(fh_bbo_update, ask_px, 'i'), FLD(fh_bbo_update, bid_sz, 'u'), FLD(fh_bbo_update, ask_sz, 'u'),
    FLD(fh_bbo_update, sequence, 'u'), FLD(fh_bbo_update, flags, 'u'), PAD(fh_bbo_update, _reserved),
};

#define DESC(name, rtype, T, dbn, f) {name, rtype, (uint16_t)sizeof(T), dbn, f, N(f)}
static const fh_record_desc descs[] = {
    DESC("mbo", FH_RTYPE_MBO, fh_mbo, 56, mbo_fields),
    DESC("trade", FH_RTYPE_TRADE, fh_trade, 48, trade_fields),
    DESC("gap", FH_RTYPE_GAP, fh_gap, 0, gap_fields),
    DESC("system_event", FH_RTYPE_SYSTEM_EVENT, fh_system_event, 0, system_event_fields),
    DESC("stock_directory", FH_RTYPE_STOCK_DIRECTORY, fh_stock_directory, 0, stock_directory_fields),
    DESC("trading_action", FH_RTYPE_TRADING_ACTION, fh_trading_action, 0, trading_action_fields),
    DESC("reg_sho", FH_RTYPE_REG_SHO, fh_reg_sho, 0, reg_sho_fields),
    DESC("mpp", FH_RTYPE_MPP, fh_mpp, 0, mpp_fields),
    DESC("mwcb_decline", FH_RTYPE_MWCB_DECLINE, fh_mwcb_decline, 0, mwcb_decline_fields),
    DESC("mwcb_status", FH_RTYPE_MWCB_STATUS, fh_mwcb_status, 0, mwcb_status_fields),
    DESC("ipo_quoting", FH_RTYPE_IPO_QUOTING, fh_ipo_quoting, 0, ipo_quoting_fields),
    DESC("luld_collar", FH_RTYPE_LULD_COLLAR, fh_luld_collar, 0, luld_collar_fields),
    DESC("operational_halt", FH_RTYPE_OPERATIONAL_HALT, fh_operational_halt, 0, operational_halt_fields),
    DESC("noii", FH_RTYPE_NOII, fh_noii, 0, noii_fields),
    DESC("noii_prices", FH_RTYPE_NOII_PRICES, fh_noii_prices, 0, noii_prices_fields),
    DESC("rpii", FH_RTYPE_RPII, fh_rpii, 0, rpii_fields),
    DESC("dlcr", FH_RTYPE_DLCR, fh_dlcr, 0, dlcr_fields),
    DESC("dlcr_collars", FH_RTYPE_DLCR_COLLARS, fh_dlcr_collars, 0, dlcr_collars_fields),
    DESC("broken_trade", FH_RTYPE_BROKEN_TRADE, fh_broken_trade, 0, broken_trade_fields),
    DESC("mbp_update", FH_RTYPE_MBP_UPDATE, fh_mbp_update, 0, mbp_update_fields),
    DESC("statistic", FH_RTYPE_STATISTIC, fh_statistic, 0, statistic_fields),
    DESC("security_status", FH_RTYPE_SECURITY_STATUS, fh_security_status, 0, security_status_fields),
    DESC("instrument_def", FH_RTYPE_INSTRUMENT_DEF, fh_instrument_def, 0, instrument_def_fields),
    DESC("order_event", FH_RTYPE_ORDER_EVENT, fh_order_event, 0, order_event_fields),
    DESC("bbo", FH_RTYPE_BBO, fh_bbo_update, 0, bbo_fields),
};

const fh_record_desc *fh_record_descs(size_t *n) {
    *n = sizeof(descs) / sizeof(descs[0]);
    return descs;
}
