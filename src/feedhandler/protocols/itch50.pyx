# distutils: sources = csrc/record.c
"""NASDAQ TotalView-ITCH 5.0 decoder: a batch of framed messages in, normalized tick records out.

The hot path is :c:func:`fh_itch50_decode`, an ``fh_decode_fn`` (fh/decoder.h): a ``nogil`` loop that
switches on the type byte, checks the exact message length, loads fields with ``fh_load_beNN`` at
the offsets generated from the field table (fh/itch50_wire.h) and fills zeroed 64-byte slots. It
never allocates, raises or touches Python; unknown types, wrong lengths and empty messages are skipped
and counted (fh/itch50.h).

Mapping (fh/record.h layouts)
-----------------------------
Every record: ``hd.instrument_id`` = stock locate, ``hd.ts_event`` = ``midnight_ns`` + the 48-bit
timestamp, ``hd.publisher_id`` from the decoder, ``ts_recv`` and ``sequence`` (low 32 bits) from the
``fh_msg``. MBO and trade records carry ``flags``: ``F_BAD_TS_RECV`` when the message has no capture
clock, ``F_MAYBE_BAD_BOOK`` after a gap, ``F_LAST`` on the last record of the message. (Our own record
layouts have no flags field; those bits are not recorded for them.) Prices become 1e-9 units:
price(4) x 100000, price(8) x 10 (a price(8) too large for int64 becomes ``FH_UNDEF_PRICE`` and is
counted in ``price_overflow``).

===  =====================================================================================
A F  mbo 'A', side B->'B' S->'A' (else 'N'), price, size, order_id; F: ext.attribution = MPID
E    mbo 'F', size = executed shares, price undefined, side 'N', ext.match_number
C    mbo 'F', price = execution price, ext.match_number; F_NONPRINTABLE when printable == 'N'
X    mbo 'C', size = cancelled shares, price undefined, side 'N'
D    mbo 'C', size 0, F_WHOLE_ORDER (the book supplies size, price and side)
U    mbo 'C' (old order, F_WHOLE_ORDER) then mbo 'A' (new order, new price and size, side 'N':
     the book takes the side of the replaced order); F_LAST only on the second
P    trade 'T', side = aggressor (ITCH B, a resting buy, -> 'A'; S -> 'B'), order_id, match_number
Q    trade 'T', side 'N', match_number, ``depth`` = the cross type character (O, C, H, I) as its
     code; ITCH sends shares as u64: more than UINT32_MAX saturates ``size`` and is counted in
     ``cross_shares_saturated``
B S R H Y L V W K J h N   the matching feedhandler record (broken_trade, system_event, ...)
I    noii + noii_prices;  O: dlcr + dlcr_collars (two records each)
===  =====================================================================================
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t, INT64_MAX, UINT32_MAX
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

import numpy as np

from feedhandler import records as _records
from feedhandler.includes.endian cimport fh_load_be16, fh_load_be32, fh_load_be48, fh_load_be64
from feedhandler.includes.msg cimport (FH_MSG_AFTER_GAP, FH_MSG_TS_MASK, FH_MSG_TS_NONE, fh_decode_fn,
                                       fh_msg)
from feedhandler.includes.record cimport *
from feedhandler.protocols.itch50_wire cimport *

__all__ = ["Itch50Decoder", "Itch50FramingError", "MAX_RECORDS_PER_MSG"]

MAX_RECORDS_PER_MSG = FH_ITCH50_MAX_RECORDS_PER_MSG
cdef enum:
    _PRICE4_MULT = 100000  # price(4), 4 implied decimals -> 1e-9 units
    _PRICE8_MULT = 10      # price(8), 8 implied decimals -> 1e-9 units


class Itch50FramingError(ValueError):
    """A BinaryFILE buffer whose length prefixes do not add up (truncated or corrupt)."""


# ---------------------------------------------------------------------------------------------------
# Hot path: record builders (pure C, inlined) and the decode loop.

cdef inline uint64_t _ts_event(const fh_itch50_ctx *c, const uint8_t *p) noexcept nogil:
    return c.midnight_ns + fh_load_be48(p + FH_ITCH50_OFF_TIMESTAMP)


cdef inline int64_t _price4(const uint8_t *p) noexcept nogil:
    return <int64_t>fh_load_be32(p) * _PRICE4_MULT


cdef inline int64_t _price8(fh_itch50_ctx *c, const uint8_t *p) noexcept nogil:
    cdef uint64_t v = fh_load_be64(p)
    if v > <uint64_t>(INT64_MAX // _PRICE8_MULT):
        c.counters.price_overflow += 1
        return FH_UNDEF_PRICE
    return <int64_t>(v * _PRICE8_MULT)


cdef inline char _add_side(uint8_t b) noexcept nogil:
    # ITCH buy/sell indicator of the resting order -> book side. Selects, not branches: buy or sell
    # is random from one add to the next (perf: a mispredict on about every other add).
    cdef char s = FH_SIDE_ASK if b == b'S' else FH_SIDE_NONE
    return FH_SIDE_BID if b == b'B' else s


cdef inline char _aggressor_side(uint8_t b) noexcept nogil:
    # ITCH P names the resting order's side; DBN trades name the aggressor's.
    if b == b'B':
        return FH_SIDE_ASK
    if b == b'S':
        return FH_SIDE_BID
    return FH_SIDE_NONE


cdef inline fh_mbo *_mbo(fh_tick *r, const fh_itch50_ctx *c, const fh_msg *m, const uint8_t *p,
                         uint8_t flags, char action, char side, uint64_t order_id, int64_t price,
                         uint32_t size) noexcept nogil:
    memset(r, 0, sizeof(fh_tick))
    cdef fh_mbo *o = &r.mbo
    o.hd.length = FH_DBN_MBO_LENGTH
    o.hd.rtype = FH_RTYPE_MBO
    o.hd.publisher_id = c.publisher_id
    o.hd.instrument_id = fh_load_be16(p + FH_ITCH50_OFF_STOCK_LOCATE)
    o.hd.ts_event = _ts_event(c, p)
    o.order_id = order_id
    o.price = price
    o.size = size
    o.flags = flags
    o.channel_id = c.channel_id
    o.action = action
    o.side = side
    o.ts_recv = m.ts_recv
    o.sequence = <uint32_t>m.sequence
    return o


cdef inline fh_trade *_trade(fh_tick *r, const fh_itch50_ctx *c, const fh_msg *m, const uint8_t *p,
                             uint8_t flags, char side, int64_t price, uint32_t size) noexcept nogil:
    memset(r, 0, sizeof(fh_tick))
    cdef fh_trade *o = &r.trade
    o.hd.length = FH_DBN_TRADE_LENGTH
    o.hd.rtype = FH_RTYPE_TRADE
    o.hd.publisher_id = c.publisher_id
    o.hd.instrument_id = fh_load_be16(p + FH_ITCH50_OFF_STOCK_LOCATE)
    o.hd.ts_event = _ts_event(c, p)
    o.price = price
    o.size = size
    o.action = FH_ACTION_TRADE
    o.side = side
    o.flags = flags
    o.ts_recv = m.ts_recv
    o.sequence = <uint32_t>m.sequence
    return o


cdef inline void _own(fh_tick *r, uint8_t rtype, const fh_itch50_ctx *c, const uint8_t *p) noexcept nogil:
    # Header of one of our own records; the caller sets ts_recv, sequence and the body.
    memset(r, 0, sizeof(fh_tick))
    r.hd.length = FH_OWN_LENGTH
    r.hd.rtype = rtype
    r.hd.publisher_id = c.publisher_id
    r.hd.instrument_id = fh_load_be16(p + FH_ITCH50_OFF_STOCK_LOCATE)
    r.hd.ts_event = _ts_event(c, p)


cdef size_t fh_itch50_decode(void *ctx, const fh_msg *msgs, size_t n, fh_tick *out, size_t cap,
                             size_t *n_out) noexcept nogil:
    """Decode msgs[0..n) into out[0..cap) while FH_ITCH50_MAX_RECORDS_PER_MSG slots are free.

    Returns the number of messages consumed (decoded or counted as rejected); *n_out = records written.
    Needing 2 free slots per message (not FH_DECODE_MAX_RECORDS_PER_MSG) consumes at least as much as
    fh/decoder.h promises.
    """
    cdef fh_itch50_ctx *c = <fh_itch50_ctx *>ctx
    cdef fh_itch50_counters *cnt = &c.counters
    cdef size_t i = 0, k = 0
    cdef const fh_msg *m
    cdef const uint8_t *p
    cdef uint32_t L
    cdef uint8_t t, base, last
    cdef uint64_t u
    cdef fh_tick *r
    cdef fh_mbo *o
    cdef fh_trade *tr

    while i < n and k + FH_ITCH50_MAX_RECORDS_PER_MSG <= cap:
        m = &msgs[i]
        i += 1
        L = m.len
        if L == 0:
            cnt.empty += 1
            continue
        p = m.data
        t = p[0]
        base = FH_F_BAD_TS_RECV if (m.flags & FH_MSG_TS_MASK) == FH_MSG_TS_NONE else 0
        if m.flags & FH_MSG_AFTER_GAP:
            base |= FH_F_MAYBE_BAD_BOOK
        last = base | FH_F_LAST
        r = &out[k]

        # Cython turns this chain of comparisons with constants into a C switch.
        if t == FH_ITCH50_TYPE_ADD_ORDER:
            if L != FH_ITCH50_ADD_ORDER_LEN:
                cnt.bad_length[t] += 1
                continue
            _mbo(r, c, m, p, last, FH_ACTION_ADD, _add_side(p[FH_ITCH50_ADD_ORDER_OFF_BUY_SELL_INDICATOR]),
                 fh_load_be64(p + FH_ITCH50_ADD_ORDER_OFF_ORDER_REFERENCE_NUMBER),
                 _price4(p + FH_ITCH50_ADD_ORDER_OFF_PRICE),
                 fh_load_be32(p + FH_ITCH50_ADD_ORDER_OFF_SHARES))
            k += 1
        elif t == FH_ITCH50_TYPE_ORDER_DELETE:
            if L != FH_ITCH50_ORDER_DELETE_LEN:
                cnt.bad_length[t] += 1
                continue
            _mbo(r, c, m, p, last | FH_F_WHOLE_ORDER, FH_ACTION_CANCEL, FH_SIDE_NONE,
                 fh_load_be64(p + FH_ITCH50_ORDER_DELETE_OFF_ORDER_REFERENCE_NUMBER), FH_UNDEF_PRICE, 0)
            k += 1
        elif t == FH_ITCH50_TYPE_ORDER_REPLACE:
            if L != FH_ITCH50_ORDER_REPLACE_LEN:
                cnt.bad_length[t] += 1
                continue
            _mbo(r, c, m, p, base | FH_F_WHOLE_ORDER, FH_ACTION_CANCEL, FH_SIDE_NONE,
                 fh_load_be64(p + FH_ITCH50_ORDER_REPLACE_OFF_ORIGINAL_ORDER_REFERENCE_NUMBER), FH_UNDEF_PRICE, 0)
            _mbo(r + 1, c, m, p, last, FH_ACTION_ADD, FH_SIDE_NONE,
                 fh_load_be64(p + FH_ITCH50_ORDER_REPLACE_OFF_NEW_ORDER_REFERENCE_NUMBER),
                 _price4(p + FH_ITCH50_ORDER_REPLACE_OFF_PRICE),
                 fh_load_be32(p + FH_ITCH50_ORDER_REPLACE_OFF_SHARES))
            k += 2
        elif t == FH_ITCH50_TYPE_ORDER_EXECUTED:
            if L != FH_ITCH50_ORDER_EXECUTED_LEN:
                cnt.bad_length[t] += 1
                continue
            o = _mbo(r, c, m, p, last, FH_ACTION_FILL, FH_SIDE_NONE,
                     fh_load_be64(p + FH_ITCH50_ORDER_EXECUTED_OFF_ORDER_REFERENCE_NUMBER), FH_UNDEF_PRICE,
                     fh_load_be32(p + FH_ITCH50_ORDER_EXECUTED_OFF_EXECUTED_SHARES))
            o.ext.match_number = fh_load_be64(p + FH_ITCH50_ORDER_EXECUTED_OFF_MATCH_NUMBER)
            k += 1
        elif t == FH_ITCH50_TYPE_ORDER_CANCEL:
            if L != FH_ITCH50_ORDER_CANCEL_LEN:
                cnt.bad_length[t] += 1
                continue
            _mbo(r, c, m, p, last, FH_ACTION_CANCEL, FH_SIDE_NONE,
                 fh_load_be64(p + FH_ITCH50_ORDER_CANCEL_OFF_ORDER_REFERENCE_NUMBER), FH_UNDEF_PRICE,
                 fh_load_be32(p + FH_ITCH50_ORDER_CANCEL_OFF_CANCELLED_SHARES))
            k += 1
        elif t == FH_ITCH50_TYPE_ADD_ORDER_MPID:
            if L != FH_ITCH50_ADD_ORDER_MPID_LEN:
                cnt.bad_length[t] += 1
                continue
            o = _mbo(r, c, m, p, last, FH_ACTION_ADD,
                     _add_side(p[FH_ITCH50_ADD_ORDER_MPID_OFF_BUY_SELL_INDICATOR]),
                     fh_load_be64(p + FH_ITCH50_ADD_ORDER_MPID_OFF_ORDER_REFERENCE_NUMBER),
                     _price4(p + FH_ITCH50_ADD_ORDER_MPID_OFF_PRICE),
                     fh_load_be32(p + FH_ITCH50_ADD_ORDER_MPID_OFF_SHARES))
            memcpy(o.ext.attribution, p + FH_ITCH50_ADD_ORDER_MPID_OFF_ATTRIBUTION, 4)
            k += 1
        elif t == FH_ITCH50_TYPE_ORDER_EXECUTED_WITH_PRICE:
            if L != FH_ITCH50_ORDER_EXECUTED_WITH_PRICE_LEN:
                cnt.bad_length[t] += 1
                continue
            if p[FH_ITCH50_ORDER_EXECUTED_WITH_PRICE_OFF_PRINTABLE] == b'N':
                last |= FH_F_NONPRINTABLE
            o = _mbo(r, c, m, p, last, FH_ACTION_FILL, FH_SIDE_NONE,
                     fh_load_be64(p + FH_ITCH50_ORDER_EXECUTED_WITH_PRICE_OFF_ORDER_REFERENCE_NUMBER),
                     _price4(p + FH_ITCH50_ORDER_EXECUTED_WITH_PRICE_OFF_EXECUTION_PRICE),
                     fh_load_be32(p + FH_ITCH50_ORDER_EXECUTED_WITH_PRICE_OFF_EXECUTED_SHARES))
            o.ext.match_number = fh_load_be64(p + FH_ITCH50_ORDER_EXECUTED_WITH_PRICE_OFF_MATCH_NUMBER)
            k += 1
        elif t == FH_ITCH50_TYPE_TRADE:
            if L != FH_ITCH50_TRADE_LEN:
                cnt.bad_length[t] += 1
                continue
            tr = _trade(r, c, m, p, last, _aggressor_side(p[FH_ITCH50_TRADE_OFF_BUY_SELL_INDICATOR]),
                        _price4(p + FH_ITCH50_TRADE_OFF_PRICE), fh_load_be32(p + FH_ITCH50_TRADE_OFF_SHARES))
            tr.order_id = fh_load_be64(p + FH_ITCH50_TRADE_OFF_ORDER_REFERENCE_NUMBER)
            tr.match_number = fh_load_be64(p + FH_ITCH50_TRADE_OFF_MATCH_NUMBER)
            k += 1
        elif t == FH_ITCH50_TYPE_CROSS_TRADE:
            if L != FH_ITCH50_CROSS_TRADE_LEN:
                cnt.bad_length[t] += 1
                continue
            u = fh_load_be64(p + FH_ITCH50_CROSS_TRADE_OFF_SHARES)
            if u > UINT32_MAX:
                u = UINT32_MAX
                cnt.cross_shares_saturated += 1
            tr = _trade(r, c, m, p, last, FH_SIDE_NONE, _price4(p + FH_ITCH50_CROSS_TRADE_OFF_CROSS_PRICE),
                        <uint32_t>u)
            tr.match_number = fh_load_be64(p + FH_ITCH50_CROSS_TRADE_OFF_MATCH_NUMBER)
            tr.depth = p[FH_ITCH50_CROSS_TRADE_OFF_CROSS_TYPE]
            k += 1
        elif t == FH_ITCH50_TYPE_BROKEN_TRADE:
            if L != FH_ITCH50_BROKEN_TRADE_LEN:
                cnt.bad_length[t] += 1
                continue
            _own(r, FH_RTYPE_BROKEN_TRADE, c, p)
            r.broken_trade.ts_recv = m.ts_recv
            r.broken_trade.sequence = <uint32_t>m.sequence
            r.broken_trade.match_number = fh_load_be64(p + FH_ITCH50_BROKEN_TRADE_OFF_MATCH_NUMBER)
            k += 1
        elif t == FH_ITCH50_TYPE_SYSTEM_EVENT:
            if L != FH_ITCH50_SYSTEM_EVENT_LEN:
                cnt.bad_length[t] += 1
                continue
            _own(r, FH_RTYPE_SYSTEM_EVENT, c, p)
            r.system_event.ts_recv = m.ts_recv
            r.system_event.sequence = <uint32_t>m.sequence
            r.system_event.event_code = <char>p[FH_ITCH50_SYSTEM_EVENT_OFF_EVENT_CODE]
            k += 1
        elif t == FH_ITCH50_TYPE_STOCK_DIRECTORY:
            if L != FH_ITCH50_STOCK_DIRECTORY_LEN:
                cnt.bad_length[t] += 1
                continue
            _own(r, FH_RTYPE_STOCK_DIRECTORY, c, p)
            r.stock_directory.ts_recv = m.ts_recv
            r.stock_directory.sequence = <uint32_t>m.sequence
            r.stock_directory.round_lot_size = fh_load_be32(p + FH_ITCH50_STOCK_DIRECTORY_OFF_ROUND_LOT_SIZE)
            r.stock_directory.etp_leverage_factor = fh_load_be32(
                p + FH_ITCH50_STOCK_DIRECTORY_OFF_ETP_LEVERAGE_FACTOR)
            memcpy(r.stock_directory.symbol, p + FH_ITCH50_STOCK_DIRECTORY_OFF_STOCK, 8)
            r.stock_directory.market_category = <char>p[FH_ITCH50_STOCK_DIRECTORY_OFF_MARKET_CATEGORY]
            r.stock_directory.financial_status = <char>p[FH_ITCH50_STOCK_DIRECTORY_OFF_FINANCIAL_STATUS_INDICATOR]
            r.stock_directory.round_lots_only = <char>p[FH_ITCH50_STOCK_DIRECTORY_OFF_ROUND_LOTS_ONLY]
            r.stock_directory.issue_classification = <char>p[FH_ITCH50_STOCK_DIRECTORY_OFF_ISSUE_CLASSIFICATION]
            memcpy(r.stock_directory.issue_subtype, p + FH_ITCH50_STOCK_DIRECTORY_OFF_ISSUE_SUB_TYPE, 2)
            r.stock_directory.authenticity = <char>p[FH_ITCH50_STOCK_DIRECTORY_OFF_AUTHENTICITY]
            r.stock_directory.short_sale_threshold = <char>p[
                FH_ITCH50_STOCK_DIRECTORY_OFF_SHORT_SALE_THRESHOLD_INDICATOR]
            r.stock_directory.ipo_flag = <char>p[FH_ITCH50_STOCK_DIRECTORY_OFF_IPO_FLAG]
            r.stock_directory.luld_ref_price_tier = <char>p[FH_ITCH50_STOCK_DIRECTORY_OFF_LULD_REFERENCE_PRICE_TIER]
            r.stock_directory.etp_flag = <char>p[FH_ITCH50_STOCK_DIRECTORY_OFF_ETP_FLAG]
            r.stock_directory.inverse_indicator = <char>p[FH_ITCH50_STOCK_DIRECTORY_OFF_INVERSE_INDICATOR]
            k += 1
        elif t == FH_ITCH50_TYPE_STOCK_TRADING_ACTION:
            if L != FH_ITCH50_STOCK_TRADING_ACTION_LEN:
                cnt.bad_length[t] += 1
                continue
            _own(r, FH_RTYPE_TRADING_ACTION, c, p)
            r.trading_action.ts_recv = m.ts_recv
            r.trading_action.sequence = <uint32_t>m.sequence
            r.trading_action.trading_state = <char>p[FH_ITCH50_STOCK_TRADING_ACTION_OFF_TRADING_STATE]
            r.trading_action.reserved = <char>p[FH_ITCH50_STOCK_TRADING_ACTION_OFF_RESERVED]
            memcpy(r.trading_action.reason, p + FH_ITCH50_STOCK_TRADING_ACTION_OFF_REASON, 4)
            k += 1
        elif t == FH_ITCH50_TYPE_REG_SHO_RESTRICTION:
            if L != FH_ITCH50_REG_SHO_RESTRICTION_LEN:
                cnt.bad_length[t] += 1
                continue
            _own(r, FH_RTYPE_REG_SHO, c, p)
            r.reg_sho.ts_recv = m.ts_recv
            r.reg_sho.sequence = <uint32_t>m.sequence
            r.reg_sho.action = <char>p[FH_ITCH50_REG_SHO_RESTRICTION_OFF_REG_SHO_ACTION]
            k += 1
        elif t == FH_ITCH50_TYPE_MARKET_PARTICIPANT_POSITION:
            if L != FH_ITCH50_MARKET_PARTICIPANT_POSITION_LEN:
                cnt.bad_length[t] += 1
                continue
            _own(r, FH_RTYPE_MPP, c, p)
            r.mpp.ts_recv = m.ts_recv
            r.mpp.sequence = <uint32_t>m.sequence
            memcpy(r.mpp.mpid, p + FH_ITCH50_MARKET_PARTICIPANT_POSITION_OFF_MPID, 4)
            r.mpp.primary_market_maker = <char>p[FH_ITCH50_MARKET_PARTICIPANT_POSITION_OFF_PRIMARY_MARKET_MAKER]
            r.mpp.market_maker_mode = <char>p[FH_ITCH50_MARKET_PARTICIPANT_POSITION_OFF_MARKET_MAKER_MODE]
            r.mpp.market_participant_state = <char>p[
                FH_ITCH50_MARKET_PARTICIPANT_POSITION_OFF_MARKET_PARTICIPANT_STATE]
            k += 1
        elif t == FH_ITCH50_TYPE_MWCB_DECLINE_LEVEL:
            if L != FH_ITCH50_MWCB_DECLINE_LEVEL_LEN:
                cnt.bad_length[t] += 1
                continue
            _own(r, FH_RTYPE_MWCB_DECLINE, c, p)
            r.mwcb_decline.ts_recv = m.ts_recv
            r.mwcb_decline.sequence = <uint32_t>m.sequence
            r.mwcb_decline.level1 = _price8(c, p + FH_ITCH50_MWCB_DECLINE_LEVEL_OFF_LEVEL1)
            r.mwcb_decline.level2 = _price8(c, p + FH_ITCH50_MWCB_DECLINE_LEVEL_OFF_LEVEL2)
            r.mwcb_decline.level3 = _price8(c, p + FH_ITCH50_MWCB_DECLINE_LEVEL_OFF_LEVEL3)
            k += 1
        elif t == FH_ITCH50_TYPE_MWCB_STATUS:
            if L != FH_ITCH50_MWCB_STATUS_LEN:
                cnt.bad_length[t] += 1
                continue
            _own(r, FH_RTYPE_MWCB_STATUS, c, p)
            r.mwcb_status.ts_recv = m.ts_recv
            r.mwcb_status.sequence = <uint32_t>m.sequence
            r.mwcb_status.breached_level = <char>p[FH_ITCH50_MWCB_STATUS_OFF_BREACHED_LEVEL]
            k += 1
        elif t == FH_ITCH50_TYPE_IPO_QUOTING_PERIOD_UPDATE:
            if L != FH_ITCH50_IPO_QUOTING_PERIOD_UPDATE_LEN:
                cnt.bad_length[t] += 1
                continue
            _own(r, FH_RTYPE_IPO_QUOTING, c, p)
            r.ipo_quoting.ts_recv = m.ts_recv
            r.ipo_quoting.sequence = <uint32_t>m.sequence
            r.ipo_quoting.ipo_price = _price4(p + FH_ITCH50_IPO_QUOTING_PERIOD_UPDATE_OFF_IPO_PRICE)
            r.ipo_quoting.release_time = fh_load_be32(
                p + FH_ITCH50_IPO_QUOTING_PERIOD_UPDATE_OFF_IPO_QUOTATION_RELEASE_TIME)
            r.ipo_quoting.release_qualifier = <char>p[
                FH_ITCH50_IPO_QUOTING_PERIOD_UPDATE_OFF_IPO_QUOTATION_RELEASE_QUALIFIER]
            k += 1
        elif t == FH_ITCH50_TYPE_LULD_AUCTION_COLLAR:
            if L != FH_ITCH50_LULD_AUCTION_COLLAR_LEN:
                cnt.bad_length[t] += 1
                continue
            _own(r, FH_RTYPE_LULD_COLLAR, c, p)
            r.luld_collar.ts_recv = m.ts_recv
            r.luld_collar.sequence = <uint32_t>m.sequence
            r.luld_collar.reference_price = _price4(
                p + FH_ITCH50_LULD_AUCTION_COLLAR_OFF_AUCTION_COLLAR_REFERENCE_PRICE)
            r.luld_collar.upper_price = _price4(p + FH_ITCH50_LULD_AUCTION_COLLAR_OFF_UPPER_AUCTION_COLLAR_PRICE)
            r.luld_collar.lower_price = _price4(p + FH_ITCH50_LULD_AUCTION_COLLAR_OFF_LOWER_AUCTION_COLLAR_PRICE)
            r.luld_collar.extension = fh_load_be32(p + FH_ITCH50_LULD_AUCTION_COLLAR_OFF_AUCTION_COLLAR_EXTENSION)
            k += 1
        elif t == FH_ITCH50_TYPE_OPERATIONAL_HALT:
            if L != FH_ITCH50_OPERATIONAL_HALT_LEN:
                cnt.bad_length[t] += 1
                continue
            _own(r, FH_RTYPE_OPERATIONAL_HALT, c, p)
            r.operational_halt.ts_recv = m.ts_recv
            r.operational_halt.sequence = <uint32_t>m.sequence
            r.operational_halt.market_code = <char>p[FH_ITCH50_OPERATIONAL_HALT_OFF_MARKET_CODE]
            r.operational_halt.halt_action = <char>p[FH_ITCH50_OPERATIONAL_HALT_OFF_OPERATIONAL_HALT_ACTION]
            k += 1
        elif t == FH_ITCH50_TYPE_NOII:
            if L != FH_ITCH50_NOII_LEN:
                cnt.bad_length[t] += 1
                continue
            _own(r, FH_RTYPE_NOII, c, p)
            r.noii.ts_recv = m.ts_recv
            r.noii.sequence = <uint32_t>m.sequence
            r.noii.paired_shares = fh_load_be64(p + FH_ITCH50_NOII_OFF_PAIRED_SHARES)
            r.noii.imbalance_shares = fh_load_be64(p + FH_ITCH50_NOII_OFF_IMBALANCE_SHARES)
            r.noii.current_reference_price = _price4(p + FH_ITCH50_NOII_OFF_CURRENT_REFERENCE_PRICE)
            r.noii.imbalance_direction = <char>p[FH_ITCH50_NOII_OFF_IMBALANCE_DIRECTION]
            r.noii.cross_type = <char>p[FH_ITCH50_NOII_OFF_CROSS_TYPE]
            r.noii.price_variation_indicator = <char>p[FH_ITCH50_NOII_OFF_PRICE_VARIATION_INDICATOR]
            _own(r + 1, FH_RTYPE_NOII_PRICES, c, p)
            r[1].noii_prices.ts_recv = m.ts_recv
            r[1].noii_prices.sequence = <uint32_t>m.sequence
            r[1].noii_prices.far_price = _price4(p + FH_ITCH50_NOII_OFF_FAR_PRICE)
            r[1].noii_prices.near_price = _price4(p + FH_ITCH50_NOII_OFF_NEAR_PRICE)
            k += 2
        elif t == FH_ITCH50_TYPE_RPII:
            if L != FH_ITCH50_RPII_LEN:
                cnt.bad_length[t] += 1
                continue
            _own(r, FH_RTYPE_RPII, c, p)
            r.rpii.ts_recv = m.ts_recv
            r.rpii.sequence = <uint32_t>m.sequence
            r.rpii.interest_flag = <char>p[FH_ITCH50_RPII_OFF_INTEREST_FLAG]
            k += 1
        elif t == FH_ITCH50_TYPE_DLCR:
            if L != FH_ITCH50_DLCR_LEN:
                cnt.bad_length[t] += 1
                continue
            _own(r, FH_RTYPE_DLCR, c, p)
            r.dlcr.ts_recv = m.ts_recv
            r.dlcr.sequence = <uint32_t>m.sequence
            r.dlcr.near_execution_time = fh_load_be64(p + FH_ITCH50_DLCR_OFF_NEAR_EXECUTION_TIME)
            r.dlcr.near_execution_price = _price4(p + FH_ITCH50_DLCR_OFF_NEAR_EXECUTION_PRICE)
            r.dlcr.minimum_allowable_price = _price4(p + FH_ITCH50_DLCR_OFF_MINIMUM_ALLOWABLE_PRICE)
            r.dlcr.open_eligibility_status = <char>p[FH_ITCH50_DLCR_OFF_OPEN_ELIGIBILITY_STATUS]
            _own(r + 1, FH_RTYPE_DLCR_COLLARS, c, p)
            r[1].dlcr_collars.ts_recv = m.ts_recv
            r[1].dlcr_collars.sequence = <uint32_t>m.sequence
            r[1].dlcr_collars.maximum_allowable_price = _price4(p + FH_ITCH50_DLCR_OFF_MAXIMUM_ALLOWABLE_PRICE)
            r[1].dlcr_collars.lower_price_range_collar = _price4(p + FH_ITCH50_DLCR_OFF_LOWER_PRICE_RANGE_COLLAR)
            r[1].dlcr_collars.upper_price_range_collar = _price4(p + FH_ITCH50_DLCR_OFF_UPPER_PRICE_RANGE_COLLAR)
            k += 2
        else:
            cnt.unknown[t] += 1
            continue
        cnt.messages[t] += 1

    cnt.records += k
    n_out[0] = k
    return i


# ---------------------------------------------------------------------------------------------------
# BinaryFILE framing for the Python conveniences (not the live path: that is framing/).

cdef Py_ssize_t _count_binaryfile(const uint8_t *buf, Py_ssize_t n, Py_ssize_t *two_record) noexcept nogil:
    """Number of messages in a BinaryFILE buffer, or -(offset + 1) of the first truncated frame.

    *two_record receives how many frames start with a type that maps to two records (U, I, O)."""
    cdef Py_ssize_t off = 0, count = 0, twos = 0
    cdef uint16_t ln
    cdef uint8_t t
    while off < n:
        if off + 2 > n:
            return -(off + 1)
        ln = fh_load_be16(buf + off)
        if off + 2 + ln > n:
            return -(off + 1)
        if ln:
            t = buf[off + 2]
            twos += (t == FH_ITCH50_TYPE_ORDER_REPLACE) | (t == FH_ITCH50_TYPE_NOII) | (t == FH_ITCH50_TYPE_DLCR)
        off += 2 + ln
        count += 1
    two_record[0] = twos
    return count


cdef void _frame_binaryfile(const uint8_t *buf, fh_msg *msgs, Py_ssize_t count, uint64_t ts_recv,
                            uint64_t first_sequence, uint16_t flags, uint16_t channel) noexcept nogil:
    cdef Py_ssize_t off = 0, j
    cdef uint16_t ln
    for j in range(count):
        ln = fh_load_be16(buf + off)
        msgs[j].data = buf + off + 2
        msgs[j].len = ln
        msgs[j].channel = channel
        msgs[j].flags = flags
        msgs[j].ts_recv = ts_recv
        msgs[j].sequence = first_sequence + <uint64_t>j
        off += 2 + ln


cdef Py_ssize_t _decode_all(Itch50Decoder d, const fh_msg *msgs, size_t n, fh_tick *out, size_t cap,
                            size_t per_call, size_t *calls) noexcept nogil:
    """Drive d.fn until msgs[0..n) are consumed, offering at most per_call output slots per call.

    Returns the records written, or -1 if a call made no progress (per_call below
    FH_ITCH50_MAX_RECORDS_PER_MSG). cap must hold every record plus FH_ITCH50_MAX_RECORDS_PER_MSG
    spare slots (2 * n always does).
    """
    cdef size_t done = 0, k = 0, got, room, used
    calls[0] = 0
    while done < n:
        room = cap - k
        if room > per_call:
            room = per_call
        got = 0
        used = d.fn(d.ctx, msgs + done, n - done, out + k, room, &got)
        calls[0] += 1
        if used == 0:
            return -1
        done += used
        k += got
    return <Py_ssize_t>k


cdef fh_tick *_tick_ptr(object arr) except NULL:
    # arr: a non-empty, C-contiguous TICK_DTYPE array from feedhandler.records.empty (64-byte aligned).
    cdef uint8_t[::1] raw = arr.view(np.uint8).reshape(-1)
    if raw.shape[0] == 0:
        raise ValueError("empty output buffer")
    return <fh_tick *>&raw[0]


cdef class Itch50Decoder:
    """One ITCH 5.0 decoder: configuration, counters and the native decode function.

    Parameters
    ----------
    midnight_ns : int
        ns since the UNIX epoch of midnight, exchange local time (US/Eastern), of the session day;
        ``ts_event = midnight_ns + message timestamp``.
    publisher_id : int
        Written to every record's ``publisher_id`` (u16).
    channel_id : int
        Written to MBO records' ``channel_id`` (u8).

    Notes
    -----
    Pipelines use the ``cdef`` fields ``ctx`` and ``fn`` (see itch50.pxd) from nogil code. The Python
    methods below are conveniences for tests and tools; they still decode in one native call per batch.
    One decoder belongs to one thread.
    """

    def __cinit__(self):
        memset(&self.state, 0, sizeof(self.state))
        self.ctx = &self.state
        self.fn = fh_itch50_decode

    def __init__(self, midnight_ns=0, publisher_id=0, channel_id=0):
        self.state.midnight_ns = midnight_ns
        self.state.publisher_id = publisher_id
        self.state.channel_id = channel_id

    @property
    def midnight_ns(self):
        return self.state.midnight_ns

    @midnight_ns.setter
    def midnight_ns(self, uint64_t value):
        self.state.midnight_ns = value

    @property
    def publisher_id(self):
        return self.state.publisher_id

    @property
    def channel_id(self):
        return self.state.channel_id

    def counters(self):
        """Counters since creation or :meth:`reset_counters`.

        Returns
        -------
        dict
            ``decoded`` (int), ``messages`` ({type letter: decoded count}), ``unknown`` (int) and
            ``unknown_by_type``, ``bad_length`` (int) and ``bad_length_by_type``, ``empty``,
            ``records``, ``cross_shares_saturated``, ``price_overflow``. Per-type dicts list only
            non-zero entries, keyed by ``chr(type byte)``. ``decoded + unknown + bad_length + empty``
            is the number of messages handed to the decoder.
        """
        cdef fh_itch50_counters *c = &self.state.counters
        messages, unknown, bad = {}, {}, {}
        for t in range(256):
            if c.messages[t]:
                messages[chr(t)] = c.messages[t]
            if c.unknown[t]:
                unknown[chr(t)] = c.unknown[t]
            if c.bad_length[t]:
                bad[chr(t)] = c.bad_length[t]
        return {
            "decoded": sum(messages.values()),
            "messages": messages,
            "unknown": sum(unknown.values()),
            "unknown_by_type": unknown,
            "bad_length": sum(bad.values()),
            "bad_length_by_type": bad,
            "empty": c.empty,
            "records": c.records,
            "cross_shares_saturated": c.cross_shares_saturated,
            "price_overflow": c.price_overflow,
        }

    def reset_counters(self):
        """Zero every counter."""
        memset(&self.state.counters, 0, sizeof(self.state.counters))

    def decode_messages(self, messages, ts_recv=0, first_sequence=1, flags=FH_MSG_TS_NONE, channel=0,
                        out_cap=None):
        """Decode a list of single messages (bytes) in one native call.

        Parameters
        ----------
        messages : sequence of bytes
            One ITCH message each (no length prefix).
        ts_recv, flags : int or sequence of int
            The ``fh_msg`` capture time and ``FH_MSG_*`` flags, for all messages or one per message.
        first_sequence : int
            Sequence number of the first message; the others follow consecutively.
        channel : int
            ``fh_msg.channel`` (not copied into records).
        out_cap : int, optional
            Offer the decode function at most this many output slots per call (exercises the
            batch-resume contract of fh/decoder.h); the result is the same for any value >= 2.

        Returns
        -------
        numpy.ndarray
            ``TICK_DTYPE`` records (rejected messages produce none; see :meth:`counters`).
        """
        msgs_list = [m if type(m) is bytes else bytes(m) for m in messages]
        cdef Py_ssize_t n = len(msgs_list), j
        ts_list = [ts_recv] * n if isinstance(ts_recv, int) else list(ts_recv)
        fl_list = [flags] * n if isinstance(flags, int) else list(flags)
        if len(ts_list) != n or len(fl_list) != n:
            raise ValueError("ts_recv and flags must be ints or have one entry per message")
        cdef fh_msg *msgs = <fh_msg *>malloc(max(n, 1) * sizeof(fh_msg))
        if msgs == NULL:
            raise MemoryError()
        cdef Py_ssize_t k
        cdef size_t calls = 0, per_call = <size_t>-1 if out_cap is None else <size_t>out_cap
        cdef fh_tick *out
        try:
            for j in range(n):
                b = msgs_list[j]
                msgs[j].data = <const uint8_t *>PyBytes_AS_STRING(b)
                msgs[j].len = <uint32_t>PyBytes_GET_SIZE(b)
                msgs[j].channel = channel
                msgs[j].flags = fl_list[j]
                msgs[j].ts_recv = ts_list[j]
                msgs[j].sequence = first_sequence + j
            arr = _records.empty(FH_ITCH50_MAX_RECORDS_PER_MSG * max(n, 1))
            out = _tick_ptr(arr)
            with nogil:
                k = _decode_all(self, msgs, n, out, FH_ITCH50_MAX_RECORDS_PER_MSG * n, per_call, &calls)
        finally:
            free(msgs)
        if k < 0:
            raise ValueError(f"out_cap={out_cap} is below MAX_RECORDS_PER_MSG={MAX_RECORDS_PER_MSG}: no progress")
        self.last_calls = calls
        return arr[:k].copy()

    def decode_binaryfile(self, data, ts_recv=0, first_sequence=1, flags=FH_MSG_TS_NONE, channel=0):
        """Decode a NASDAQ BinaryFILE buffer (messages each preceded by a big-endian u16 length).

        Parameters are as for :meth:`decode_messages` (scalars only). Message i gets sequence
        ``first_sequence + i``. Raises :class:`Itch50FramingError` (decoding nothing) when the buffer
        ends inside a frame.
        """
        cdef const uint8_t[::1] buf = memoryview(data).cast("B")
        cdef Py_ssize_t nbytes = buf.shape[0]
        cdef const uint8_t *p = &buf[0] if nbytes else <const uint8_t *>b""
        cdef Py_ssize_t count, twos = 0, cap
        cdef uint64_t c_ts = ts_recv, c_seq = first_sequence
        cdef uint16_t c_flags = flags, c_channel = channel
        with nogil:
            count = _count_binaryfile(p, nbytes, &twos)
        if count < 0:
            raise Itch50FramingError(f"BinaryFILE frame truncated at byte offset {-count - 1}")
        cdef fh_msg *msgs = <fh_msg *>malloc(max(count, 1) * sizeof(fh_msg))
        if msgs == NULL:
            raise MemoryError()
        cdef Py_ssize_t k
        cdef size_t calls = 0
        cdef fh_tick *out
        try:
            # Records needed <= count + twos; the decode function wants 2 free slots before each
            # message (also before rejects, which write none), so 2 spare slots always suffice.
            cap = count + twos + FH_ITCH50_MAX_RECORDS_PER_MSG
            arr = _records.empty(cap)
            out = _tick_ptr(arr)
            with nogil:
                _frame_binaryfile(p, msgs, count, c_ts, c_seq, c_flags, c_channel)
                k = _decode_all(self, msgs, count, out, cap, <size_t>-1, &calls)
        finally:
            free(msgs)
        if k < 0:  # cannot happen: see the capacity rule above
            raise AssertionError("decoder made no progress")
        self.last_calls = calls
        return arr[:k]

    def bench_decode(self, data, Py_ssize_t repeats=1, Py_ssize_t batch=1024):
        """Time the decode function alone over a BinaryFILE buffer (for bench/ scripts, not tests).

        Frames the buffer once, then decodes it ``repeats`` times in batches of ``batch`` messages into
        one reused output buffer. Returns ``(messages decoded, records written, seconds)``.
        """
        cdef const uint8_t[::1] buf = memoryview(data).cast("B")
        cdef Py_ssize_t nbytes = buf.shape[0]
        if nbytes == 0 or batch <= 0:
            raise ValueError("need a non-empty buffer and batch > 0")
        cdef Py_ssize_t twos = 0
        cdef Py_ssize_t count = _count_binaryfile(&buf[0], nbytes, &twos)
        if count < 0:
            raise Itch50FramingError(f"BinaryFILE frame truncated at byte offset {-count - 1}")
        cdef fh_msg *msgs = <fh_msg *>malloc(max(count, 1) * sizeof(fh_msg))
        if msgs == NULL:
            raise MemoryError()
        arr = _records.empty(FH_ITCH50_MAX_RECORDS_PER_MSG * batch)
        cdef fh_tick *out = _tick_ptr(arr)
        cdef size_t cap = FH_ITCH50_MAX_RECORDS_PER_MSG * batch, done, got, total_rec = 0, total_msg = 0
        cdef size_t step
        cdef Py_ssize_t rep
        cdef timespec t0, t1
        try:
            _frame_binaryfile(&buf[0], msgs, count, 0, 1, FH_MSG_TS_NONE, 0)
            with nogil:
                clock_gettime(CLOCK_MONOTONIC, &t0)
                for rep in range(repeats):
                    done = 0
                    while done < <size_t>count:
                        step = <size_t>count - done
                        if step > <size_t>batch:
                            step = batch
                        got = 0
                        done += self.fn(self.ctx, msgs + done, step, out, cap, &got)
                        total_rec += got
                    total_msg += done
                clock_gettime(CLOCK_MONOTONIC, &t1)
        finally:
            free(msgs)
        return total_msg, total_rec, (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9


def _native_constants():
    """The C values the pure-Python reference hard-codes (tests check they agree)."""
    return {
        "F_LAST": FH_F_LAST,
        "F_BAD_TS_RECV": FH_F_BAD_TS_RECV,
        "F_MAYBE_BAD_BOOK": FH_F_MAYBE_BAD_BOOK,
        "F_WHOLE_ORDER": FH_F_WHOLE_ORDER,
        "F_NONPRINTABLE": FH_F_NONPRINTABLE,
        "MSG_TS_NONE": FH_MSG_TS_NONE,
        "MSG_TS_MASK": FH_MSG_TS_MASK,
        "MSG_AFTER_GAP": FH_MSG_AFTER_GAP,
        "UNDEF_PRICE": FH_UNDEF_PRICE,
        "DBN_MBO_LENGTH": FH_DBN_MBO_LENGTH,
        "DBN_TRADE_LENGTH": FH_DBN_TRADE_LENGTH,
        "OWN_LENGTH": FH_OWN_LENGTH,
    }


def _native_lengths():
    """{type letter: length} as compiled into the decoder (from fh/itch50_wire.h)."""
    return {
        chr(FH_ITCH50_TYPE_SYSTEM_EVENT): FH_ITCH50_SYSTEM_EVENT_LEN,
        chr(FH_ITCH50_TYPE_STOCK_DIRECTORY): FH_ITCH50_STOCK_DIRECTORY_LEN,
        chr(FH_ITCH50_TYPE_STOCK_TRADING_ACTION): FH_ITCH50_STOCK_TRADING_ACTION_LEN,
        chr(FH_ITCH50_TYPE_REG_SHO_RESTRICTION): FH_ITCH50_REG_SHO_RESTRICTION_LEN,
        chr(FH_ITCH50_TYPE_MARKET_PARTICIPANT_POSITION): FH_ITCH50_MARKET_PARTICIPANT_POSITION_LEN,
        chr(FH_ITCH50_TYPE_MWCB_DECLINE_LEVEL): FH_ITCH50_MWCB_DECLINE_LEVEL_LEN,
        chr(FH_ITCH50_TYPE_MWCB_STATUS): FH_ITCH50_MWCB_STATUS_LEN,
        chr(FH_ITCH50_TYPE_IPO_QUOTING_PERIOD_UPDATE): FH_ITCH50_IPO_QUOTING_PERIOD_UPDATE_LEN,
        chr(FH_ITCH50_TYPE_LULD_AUCTION_COLLAR): FH_ITCH50_LULD_AUCTION_COLLAR_LEN,
        chr(FH_ITCH50_TYPE_OPERATIONAL_HALT): FH_ITCH50_OPERATIONAL_HALT_LEN,
        chr(FH_ITCH50_TYPE_ADD_ORDER): FH_ITCH50_ADD_ORDER_LEN,
        chr(FH_ITCH50_TYPE_ADD_ORDER_MPID): FH_ITCH50_ADD_ORDER_MPID_LEN,
        chr(FH_ITCH50_TYPE_ORDER_EXECUTED): FH_ITCH50_ORDER_EXECUTED_LEN,
        chr(FH_ITCH50_TYPE_ORDER_EXECUTED_WITH_PRICE): FH_ITCH50_ORDER_EXECUTED_WITH_PRICE_LEN,
        chr(FH_ITCH50_TYPE_ORDER_CANCEL): FH_ITCH50_ORDER_CANCEL_LEN,
        chr(FH_ITCH50_TYPE_ORDER_DELETE): FH_ITCH50_ORDER_DELETE_LEN,
        chr(FH_ITCH50_TYPE_ORDER_REPLACE): FH_ITCH50_ORDER_REPLACE_LEN,
        chr(FH_ITCH50_TYPE_TRADE): FH_ITCH50_TRADE_LEN,
        chr(FH_ITCH50_TYPE_CROSS_TRADE): FH_ITCH50_CROSS_TRADE_LEN,
        chr(FH_ITCH50_TYPE_BROKEN_TRADE): FH_ITCH50_BROKEN_TRADE_LEN,
        chr(FH_ITCH50_TYPE_NOII): FH_ITCH50_NOII_LEN,
        chr(FH_ITCH50_TYPE_RPII): FH_ITCH50_RPII_LEN,
        chr(FH_ITCH50_TYPE_DLCR): FH_ITCH50_DLCR_LEN,
    }
