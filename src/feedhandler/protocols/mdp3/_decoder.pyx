# cython: language_level=3
"""Native CME MDP 3.0 decoder: UDP payloads (binary packet header + SBE messages) to tick records.

Contract
- One decoder belongs to one thread. decode_* copy what they need into records and keep no pointer to
  the caller's buffers.
- The hot loop (_decode_msgs) is C under nogil over an array of fh_msg, one per UDP payload, in the
  shape of fh_decode_fn (fh/decoder.h). It never reads past a length it has checked, never raises,
  and counts every reject with a reason (counters()).
- Layouts come only from the generated tables (fh/mdp3_v<N>.h, tools/gen_mdp3.py); this file is
  written against roles (field names), once for every schema version. Decimals are integer mantissas
  scaled to 1e-9 units, never floats.

Sequencing done here, per channel (fh_msg.channel, 256 channels):
- packets: MsgSeqNum must grow by one. Lower numbers are A/B duplicates (first copy wins) or late
  packets (not applied; books cannot go back). A higher number first makes the decoder look up to
  REORDER_WINDOW payloads ahead in the batch for the missing ones (the other feed's copy) and decode
  those first; what is still missing is a gap (an FH_GAP_LOST record: MDP 3.0 UDP has no
  retransmission). A jump back to 1 is a feed restart (FH_GAP_RESET).
- instruments: RptSeq must grow by one per instrument. Entries already applied (RptSeq <= last) are
  dropped; a jump marks the instrument stale (an FH_GAP_OPENED record with its instrument_id) and its
  book records carry FH_F_MAYBE_BAD_BOOK until a snapshot (SnapshotFullRefresh) recovers it (an
  FH_GAP_FILLED record; counted as a recovery). Snapshots of healthy instruments are ignored.
- MBO books: MDIncrementalRefreshOrderBook carries no RptSeq, so any packet gap makes every MBO book
  stale (as feedhandler.books.mbo.BookSet does) until its SnapshotFullRefreshOrderBook (mbo_recoveries).

Records (feedhandler.records names; instrument_id = SecurityID, ts_event = TransactTime)
- MDIncrementalRefreshBook: mbp_update per entry (implied flag for 'E'/'F'), then mbo per order entry
  (price/side/instrument from the entry its ReferenceID names; ext.match_number = MDOrderPriority;
  deletes carry FH_F_WHOLE_ORDER). MDIncrementalRefreshOrderBook: mbo per entry.
- MDIncrementalRefreshTradeSummary: trade per entry (match_number = MDTradeEntryID, side = aggressor),
  then trade records with action 'F' and order_id for the order-level fills. They are information:
  books take the orders' new state from the book messages and must not apply fills twice.
- Volume, SessionStatistics, DailyStatistics, LimitsBanding ('H', 'L', 'V'): statistic.
- SecurityStatus: security_status. MDInstrumentDefinition*: instrument_def (ts_event = LastUpdateTime).
- SnapshotFullRefresh: mbp_update 'R' (clear) then an 'A' per book entry, statistic per other entry,
  security_status; all FH_F_SNAPSHOT. SnapshotFullRefreshOrderBook: mbo 'R' on chunk 1, then 'A's.
- ChannelReset: gap FH_GAP_RESET (instrument 0). AdminHeartbeat: counted only.
- F_LAST on the last record of a message whose MatchEventIndicator has EndOfEvent (bit 7).
"""
from cpython.pycapsule cimport PyCapsule_New
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t, INT64_MAX, UINT32_MAX
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset

import numpy as np

from feedhandler.includes.endian cimport fh_load_le16, fh_load_le32, fh_load_le64
from feedhandler.includes.msg cimport fh_msg, FH_MSG_TS_MASK, FH_MSG_TS_NONE, FH_MSG_TS_SW
from feedhandler.includes.record cimport (
    fh_tick, fh_mbo, fh_trade, fh_gap, fh_mbp_update, fh_statistic, fh_security_status, fh_instrument_def,
    FH_RTYPE_MBO, FH_RTYPE_TRADE, FH_RTYPE_GAP, FH_RTYPE_MBP_UPDATE, FH_RTYPE_STATISTIC,
    FH_RTYPE_SECURITY_STATUS, FH_RTYPE_INSTRUMENT_DEF, FH_DBN_MBO_LENGTH, FH_DBN_TRADE_LENGTH,
    FH_OWN_LENGTH, FH_UNDEF_PRICE, FH_F_LAST, FH_F_SNAPSHOT, FH_F_MBP, FH_F_BAD_TS_RECV,
    FH_F_MAYBE_BAD_BOOK, FH_F_WHOLE_ORDER, FH_GAP_OPENED, FH_GAP_FILLED, FH_GAP_LOST, FH_GAP_RESET,
)
from feedhandler.protocols.mdp3.mdp3_layout cimport *

# ---- counters (index into _Ctx.counters; names in COUNTER_NAMES) ------------------------------
cdef enum:
    C_PACKETS = 0           # payloads given
    C_PACKETS_OK            # payloads accepted in sequence
    C_PACKET_TRUNCATED      # shorter than the 12-byte binary packet header
    C_PACKET_DUPLICATE      # A/B: same MsgSeqNum seen already (first copy won)
    C_PACKET_LATE           # lower MsgSeqNum never seen: arrived after its gap was declared
    C_PACKET_REORDERED      # taken ahead of a later packet of its channel (A/B interleaving)
    C_PACKET_GAPS           # gaps opened
    C_PACKET_MISSING        # packets lost in those gaps
    C_PACKET_RESETS         # MsgSeqNum went back to 1
    C_MESSAGES              # SBE messages framed
    C_MSG_BAD_SIZE          # MsgSize < 10 or past the end of the packet (rest of packet dropped)
    C_MSG_TRUNCATED         # root block or groups run past MsgSize
    C_MSG_BAD_BLOCK_LENGTH  # block length below the schema's (root or group)
    C_MSG_UNKNOWN_SCHEMA    # schemaId/version not known
    C_MSG_UNKNOWN_TEMPLATE  # templateId not in the schema (skipped by MsgSize)
    C_MSG_VERSION_FALLBACK  # newer version decoded with the newest older schema (blockLength steps)
    C_MSG_SKIPPED           # known template the decoder does not normalize (QuoteRequest, ...)
    C_HEARTBEATS
    C_CHANNEL_RESETS
    C_BOOK
    C_ORDER_BOOK
    C_TRADE_SUMMARY
    C_VOLUME
    C_SESSION_STATS
    C_DAILY_STATS
    C_LIMITS
    C_STATUS
    C_DEFINITIONS
    C_SNAPSHOTS
    C_SNAPSHOT_ORDER_BOOKS
    C_ENTRIES_BAD           # group entries without a usable SecurityID / ReferenceID / side
    C_RPTSEQ_DUPLICATE      # entries dropped: RptSeq already applied
    C_RPTSEQ_GAPS           # instruments gone stale on a RptSeq jump
    C_STALE_RECORDS         # book records emitted with FH_F_MAYBE_BAD_BOOK
    C_RECOVERIES            # stale instruments recovered from a snapshot (MBP book, statistics)
    C_MBO_RECOVERIES        # stale MBO books recovered from SnapshotFullRefreshOrderBook
    C_SNAPSHOTS_IGNORED     # snapshots of instruments that needed none
    C_INSTRUMENT_TABLE_FULL # instruments not tracked (table full)
    C_PRICE_OVERFLOW        # decimal mantissa out of range for 1e-9 units
    C_RECORDS               # records written
    C_OUTPUT_OVERFLOW       # records lost because the packet bound was wrong (a bug: never expected)
    C_SNAPSHOT_RESYNCS      # snapshot-channel MsgSeqNum jumps (joined mid-loop, a loop restart, a loss)
    C_LATE_JOINS            # instruments first seen with RptSeq > 1 under late_join (stale until a snapshot)
    C_NCOUNTERS

COUNTER_NAMES = (
    "packets", "packets_ok", "packet_truncated", "packet_duplicate", "packet_late", "packet_reordered",
    "packet_gaps",
    "packet_missing", "packet_resets", "messages", "msg_bad_size", "msg_truncated",
    "msg_bad_block_length", "msg_unknown_schema", "msg_unknown_template", "msg_version_fallback",
    "msg_skipped", "heartbeats", "channel_resets", "book", "order_book", "trade_summary", "volume",
    "session_stats", "daily_stats", "limits", "status", "definitions", "snapshots",
    "snapshot_order_books", "entries_bad", "rptseq_duplicate", "rptseq_gaps", "stale_records",
    "recoveries", "mbo_recoveries", "snapshots_ignored", "instrument_table_full", "price_overflow", "records",
    "output_overflow", "snapshot_resyncs", "late_joins",
)
# Counters that are rejects (something malformed or unknown was skipped); the rest are events.
REJECT_COUNTERS = (
    "packet_truncated", "msg_bad_size", "msg_truncated", "msg_bad_block_length",
    "msg_unknown_schema", "msg_unknown_template", "entries_bad",
)

cdef enum:
    NCHANNELS = 256
    PACKET_HEADER = 12      # bytes: MsgSeqNum u32 + SendingTime u64
    SBE_HEADER = 8          # bytes: blockLength, templateId, schemaId, version (u16 each)
    MAX_REFS = 256          # book entries remembered for ReferenceID (numInGroup is a u8)
    REORDER_WINDOW = 32     # payloads searched ahead (same batch) for a missing MsgSeqNum

cdef enum:
    I_USED = 1
    I_HAS_RPT = 2
    I_STALE = 4             # MBP book and statistics need a snapshot
    I_MBO_STALE = 8         # MBO book needs a SnapshotFullRefreshOrderBook

ctypedef struct _Inst:
    int32_t security_id
    uint32_t rpt_seq
    uint32_t flags
    uint32_t mbo_epoch      # gap_epoch when its MBO book was last known good

ctypedef struct _Chan:
    uint64_t expected       # next MsgSeqNum
    uint64_t seen           # bit i: expected-1-i was accepted (duplicate detection, 64 packets)
    uint32_t init

ctypedef struct _Group:
    const uint8_t *p        # first entry
    uint32_t n              # entries
    uint32_t block_length   # bytes per entry (from the wire)

ctypedef struct _Ref:
    int64_t price
    int32_t security_id
    char side

cdef enum:
    NVERSIONS = 64          # wire schema versions counted one by one (higher ones share the last slot)

ctypedef struct _Ctx:
    uint64_t counters[C_NCOUNTERS]
    uint64_t by_version[NVERSIONS]   # messages per wire schema version (ver >= NVERSIONS: last slot)
    uint16_t decoded_as[NVERSIONS]   # wire version -> the compiled-in version that decoded it (0: none)
    _Chan chan[NCHANNELS]
    _Inst *inst
    uint32_t inst_mask
    uint32_t inst_count
    uint32_t inst_limit
    uint32_t enabled        # bit i: fh_mdp3_schemas[i] is enabled
    uint32_t apply_all_snapshots
    uint32_t late_join      # an instrument first seen with RptSeq > 1 lost its earlier updates: stale
    uint32_t gap_epoch      # packet gaps so far: any of them may have lost MBO-only messages
    uint8_t snapshot_chan[NCHANNELS]  # 1: a snapshot (market recovery) channel: jumps resynchronise
    # per-packet state while decoding
    uint64_t ts_recv
    int32_t ts_in_delta     # DBN: ts_recv - SendingTime of the packet (0 without a capture clock)
    uint32_t seq
    uint8_t channel
    uint8_t rflags          # flags every record of this packet gets (FH_F_BAD_TS_RECV)
    fh_tick *out
    size_t n_out
    size_t cap
    fh_tick scratch         # where records go if a packet ever outgrew its bound (counted)
    _Ref refs[MAX_REFS]

cdef int64_t POW10[19]
POW10[0] = 1
for _i in range(1, 19):
    POW10[_i] = POW10[_i - 1] * 10


# ---- field access through the generated tables ------------------------------------------------
cdef inline bint _get(const uint8_t *blk, const fh_mdp3_field *f, int64_t *out) noexcept nogil:
    """Load the field into *out; False when the template has none or the value is null."""
    cdef uint8_t t = f.type
    cdef int64_t v = 0
    cdef const uint8_t *p
    if t == FH_MDP3_T_NONE:
        return False
    if t == FH_MDP3_T_CONST:
        out[0] = f.null_or_const
        return True
    p = blk + f.offset
    if t == FH_MDP3_T_U8 or t == FH_MDP3_T_CHAR:
        v = p[0]
    elif t == FH_MDP3_T_I8:
        v = <int8_t>p[0]
    elif t == FH_MDP3_T_U16:
        v = fh_load_le16(p)
    elif t == FH_MDP3_T_I16:
        v = <int16_t>fh_load_le16(p)
    elif t == FH_MDP3_T_U32:
        v = fh_load_le32(p)
    elif t == FH_MDP3_T_I32:
        v = <int32_t>fh_load_le32(p)
    else:  # U64, I64: the same 64 bits; nulls are stored the same way by the generator
        v = <int64_t>fh_load_le64(p)
    if f.optional and v == f.null_or_const:
        return False
    out[0] = v
    return True


cdef inline int64_t _geti(const uint8_t *blk, const fh_mdp3_field *f, int64_t dflt) noexcept nogil:
    cdef int64_t v = 0
    if _get(blk, f, &v):
        return v
    return dflt


cdef inline uint32_t _u32(int64_t v) noexcept nogil:
    """A quantity clamped into uint32 (null/negative -> 0, larger -> UINT32_MAX)."""
    if v <= 0:
        return 0
    if v > <int64_t>UINT32_MAX:
        return UINT32_MAX
    return <uint32_t>v


cdef inline int64_t _price(_Ctx *c, const uint8_t *blk, const fh_mdp3_field *f) noexcept nogil:
    """A decimal (PRICE, PRICE9, Decimal9, FLOAT...) in 1e-9 units; FH_UNDEF_PRICE when null."""
    cdef int64_t m = 0, mul
    cdef int e
    if not _get(blk, f, &m):
        return FH_UNDEF_PRICE
    e = 9 + f.exponent
    if e == 0:
        return m
    if e > 0:
        if e > 18:
            c.counters[C_PRICE_OVERFLOW] += 1
            return FH_UNDEF_PRICE
        mul = POW10[e]
        if m > INT64_MAX // mul or m < -(INT64_MAX // mul):
            c.counters[C_PRICE_OVERFLOW] += 1
            return FH_UNDEF_PRICE
        return m * mul
    if -e > 18:
        return 0
    return m // POW10[-e]


cdef inline void _chars(char *dst, size_t cap, const uint8_t *blk, const fh_mdp3_field *f) noexcept nogil:
    cdef size_t n
    if f.type != FH_MDP3_T_CHAR:
        return
    n = f.length
    if n > cap:
        n = cap
    memcpy(dst, blk + f.offset, n)


# ---- instruments --------------------------------------------------------------------------------
cdef inline _Inst *_inst(_Ctx *c, int32_t sid) noexcept nogil:
    cdef uint32_t h = (<uint32_t>sid * <uint32_t>2654435761) & c.inst_mask
    cdef _Inst *e
    while True:
        e = &c.inst[h]
        if e.flags & I_USED:
            if e.security_id == sid:
                return e
        else:
            if c.inst_count >= c.inst_limit:
                c.counters[C_INSTRUMENT_TABLE_FULL] += 1
                return NULL
            e.flags = I_USED
            e.security_id = sid
            e.rpt_seq = 0
            e.mbo_epoch = 0   # after a gap, a book first seen now may have lost its adds
            c.inst_count += 1
            return e
        h = (h + 1) & c.inst_mask


cdef inline fh_tick *_slot(_Ctx *c, uint8_t rtype, uint8_t length, uint32_t iid, uint64_t ts_event) noexcept nogil:
    cdef fh_tick *t
    if c.n_out < c.cap:
        t = &c.out[c.n_out]
        c.n_out += 1
        c.counters[C_RECORDS] += 1
    else:
        t = &c.scratch
        c.counters[C_OUTPUT_OVERFLOW] += 1
    memset(t, 0, sizeof(fh_tick))
    t.hd.length = length
    t.hd.rtype = rtype
    t.hd.instrument_id = iid
    t.hd.ts_event = ts_event
    return t


cdef void _gap(_Ctx *c, uint8_t kind, uint32_t iid, uint64_t first, uint64_t count, uint64_t ts) noexcept nogil:
    cdef fh_tick *t = _slot(c, FH_RTYPE_GAP, FH_OWN_LENGTH, iid, ts)
    t.gap.ts_recv = c.ts_recv
    t.gap.first_missing = first
    t.gap.count = count
    t.gap.channel = c.channel
    t.gap.kind = kind
    memcpy(t.gap.session, b"MDP3      ", 10)


cdef inline uint32_t _check_rpt(_Ctx *c, int32_t sid, int64_t rpt, uint64_t ts, bint *drop) noexcept nogil:
    """RptSeq bookkeeping for one incremental entry; returns extra record flags."""
    cdef _Inst *e = _inst(c, sid)
    drop[0] = False
    if e == NULL:
        return 0
    if rpt < 0:
        return FH_F_MAYBE_BAD_BOOK if e.flags & I_STALE else 0
    if not (e.flags & I_HAS_RPT):
        e.flags |= I_HAS_RPT
        e.rpt_seq = <uint32_t>rpt
        if c.late_join and rpt > 1:
            # joined after the instrument's first rpt - 1 updates: its books are unknown until a
            # snapshot (SnapshotFullRefresh, SnapshotFullRefreshOrderBook) rebuilds them
            c.counters[C_LATE_JOINS] += 1
            _gap(c, FH_GAP_OPENED, <uint32_t>sid, 1, <uint32_t>rpt - 1, ts)
            e.flags |= I_STALE | I_MBO_STALE
            c.counters[C_STALE_RECORDS] += 1
            return FH_F_MAYBE_BAD_BOOK
        return 0
    if <uint32_t>rpt <= e.rpt_seq and not (e.flags & I_STALE):
        c.counters[C_RPTSEQ_DUPLICATE] += 1
        drop[0] = True
        return 0
    if <uint32_t>rpt != e.rpt_seq + 1 and not (e.flags & I_STALE):
        c.counters[C_RPTSEQ_GAPS] += 1
        _gap(c, FH_GAP_OPENED, <uint32_t>sid, e.rpt_seq + 1, <uint32_t>rpt - e.rpt_seq - 1, ts)
        e.flags |= I_STALE | I_MBO_STALE
    e.rpt_seq = <uint32_t>rpt
    if e.flags & I_STALE:
        c.counters[C_STALE_RECORDS] += 1
        return FH_F_MAYBE_BAD_BOOK
    return 0


cdef inline bint _mbo_stale(_Ctx *c, _Inst *e) noexcept nogil:
    """The MBO book of e needs a SnapshotFullRefreshOrderBook: a RptSeq gap, or a packet gap since
    its last MBO snapshot (MDIncrementalRefreshOrderBook carries no RptSeq, so a lost packet may
    have held orders of any instrument)."""
    return (e.flags & I_MBO_STALE) != 0 or e.mbo_epoch != c.gap_epoch


cdef inline uint32_t _stale_flags(_Ctx *c, int32_t sid, uint32_t bit) noexcept nogil:
    cdef _Inst *e = _inst(c, sid)
    cdef bint stale
    if e == NULL:
        return 0
    if bit == I_MBO_STALE:
        stale = _mbo_stale(c, e)
    else:
        stale = (e.flags & bit) != 0
    if stale:
        c.counters[C_STALE_RECORDS] += 1
        return FH_F_MAYBE_BAD_BOOK
    return 0


cdef inline char _mbp_action(int64_t a) noexcept nogil:
    if a == 0:
        return b'A'
    if a == 1:
        return b'M'
    if a == 2:
        return b'C'
    if a == 3:
        return b'D'  # FH_MBP_ACTION_DELETE_THRU
    if a == 4:
        return b'F'  # FH_MBP_ACTION_DELETE_FROM
    if a == 5:
        return b'O'  # FH_MBP_ACTION_OVERLAY
    return b'N'


cdef inline char _book_side(int64_t et) noexcept nogil:
    if et == b'0' or et == b'E':
        return b'B'
    if et == b'1' or et == b'F':
        return b'A'
    return b'N'


# ---- one record per kind of entry ---------------------------------------------------------------
cdef fh_tick *_mbp(_Ctx *c, const fh_mdp3_template *t, const uint8_t *e, uint64_t ts, uint8_t mei,
                   uint8_t flags, int64_t rpt) noexcept nogil:
    cdef int64_t et = _geti(e, &t.entry[FH_MDP3_G_MDEntryType], 0)
    cdef int32_t sid = <int32_t>_geti(e, &t.entry[FH_MDP3_G_SecurityID], 0)
    cdef fh_tick *r = _slot(c, FH_RTYPE_MBP_UPDATE, FH_OWN_LENGTH, <uint32_t>sid, ts)
    cdef int64_t v
    r.mbp_update.ts_recv = c.ts_recv
    r.mbp_update.price = _price(c, e, &t.entry[FH_MDP3_G_MDEntryPx])
    v = _geti(e, &t.entry[FH_MDP3_G_MDEntrySize], 0)
    r.mbp_update.size = _u32(v)
    v = _geti(e, &t.entry[FH_MDP3_G_NumberOfOrders], 0)
    r.mbp_update.number_of_orders = _u32(v)
    r.mbp_update.rpt_seq = <uint32_t>rpt
    r.mbp_update.sequence = c.seq
    r.mbp_update.level = <uint8_t>_geti(e, &t.entry[FH_MDP3_G_MDPriceLevel], 0)
    if et == b'J':
        r.mbp_update.action = b'R'
    elif flags & FH_F_SNAPSHOT:
        r.mbp_update.action = b'A'
    else:
        r.mbp_update.action = _mbp_action(_geti(e, &t.entry[FH_MDP3_G_MDUpdateAction], -1))
    r.mbp_update.side = _book_side(et)
    r.mbp_update.flags = flags | FH_F_MBP | c.rflags
    r.mbp_update.entry_type = <char>et
    r.mbp_update.implied = 1 if (et == b'E' or et == b'F') else 0
    r.mbp_update.channel_id = c.channel
    r.mbp_update.match_event = mei
    return r


cdef fh_tick *_stat(_Ctx *c, const fh_mdp3_template *t, const uint8_t *e, uint64_t ts, uint8_t flags,
                    char stat_type, const fh_mdp3_field *px) noexcept nogil:
    cdef int32_t sid = <int32_t>_geti(e, &t.entry[FH_MDP3_G_SecurityID], 0)
    cdef fh_tick *r = _slot(c, FH_RTYPE_STATISTIC, FH_OWN_LENGTH, <uint32_t>sid, ts)
    cdef int64_t a
    r.statistic.ts_recv = c.ts_recv
    r.statistic.price = _price(c, e, px)
    r.statistic.quantity = _geti(e, &t.entry[FH_MDP3_G_MDEntrySize], INT64_MAX)
    r.statistic.rpt_seq = <uint32_t>_geti(e, &t.entry[FH_MDP3_G_RptSeq], 0)
    r.statistic.sequence = c.seq
    r.statistic.stat_type = stat_type
    a = _geti(e, &t.entry[FH_MDP3_G_MDUpdateAction], 0)
    r.statistic.action = b'A' if flags & FH_F_SNAPSHOT else _mbp_action(a)
    r.statistic.open_close_settl_flag = <uint8_t>_geti(e, &t.entry[FH_MDP3_G_OpenCloseSettlFlag], 255)
    r.statistic.settl_price_type = <uint8_t>_geti(e, &t.entry[FH_MDP3_G_SettlPriceType], 0)
    r.statistic.trading_date = <uint16_t>_geti(e, &t.entry[FH_MDP3_G_TradingReferenceDate], 65535)
    r.statistic.flags = flags | c.rflags
    r.statistic.channel_id = c.channel
    r.statistic.template_id = t.id
    return r


# ---- messages -----------------------------------------------------------------------------------
cdef void _book(_Ctx *c, const fh_mdp3_template *t, const uint8_t *root, _Group *ent, _Group *ords) noexcept nogil:
    cdef uint64_t ts = <uint64_t>_geti(root, &t.root[FH_MDP3_R_TransactTime], 0)
    cdef uint8_t mei = <uint8_t>_geti(root, &t.root[FH_MDP3_R_MatchEventIndicator], 0)
    cdef uint32_t i, nref
    cdef const uint8_t *e
    cdef int64_t rpt, ref, act, v
    cdef int32_t sid
    cdef bint drop = False
    cdef uint32_t fl
    cdef fh_tick *r
    nref = ent.n if ent.n < MAX_REFS else MAX_REFS
    for i in range(ent.n):
        e = ent.p + <size_t>i * ent.block_length
        sid = <int32_t>_geti(e, &t.entry[FH_MDP3_G_SecurityID], 0)
        rpt = _geti(e, &t.entry[FH_MDP3_G_RptSeq], -1)
        if i < MAX_REFS:
            c.refs[i].security_id = sid
            c.refs[i].price = _price(c, e, &t.entry[FH_MDP3_G_MDEntryPx])
            c.refs[i].side = _book_side(_geti(e, &t.entry[FH_MDP3_G_MDEntryType], 0))
        fl = _check_rpt(c, sid, rpt, ts, &drop)
        if drop:
            if i < MAX_REFS:
                c.refs[i].side = 0  # its order entries are dropped too
            continue
        _mbp(c, t, e, ts, mei, <uint8_t>fl, rpt if rpt >= 0 else 0)
    # MBO part of the message (schema 9+): each order entry points at a book entry (1-based)
    for i in range(ords.n):
        e = ords.p + <size_t>i * ords.block_length
        ref = _geti(e, &t.order[FH_MDP3_G_ReferenceID], 0)
        if ref < 1 or ref > nref:
            c.counters[C_ENTRIES_BAD] += 1
            continue
        if c.refs[ref - 1].side == 0:
            continue
        sid = c.refs[ref - 1].security_id
        r = _slot(c, FH_RTYPE_MBO, FH_DBN_MBO_LENGTH, <uint32_t>sid, ts)
        r.mbo.order_id = <uint64_t>_geti(e, &t.order[FH_MDP3_G_OrderID], 0)
        r.mbo.price = c.refs[ref - 1].price
        v = _geti(e, &t.order[FH_MDP3_G_MDDisplayQty], 0)
        r.mbo.size = _u32(v)
        r.mbo.flags = <uint8_t>(c.rflags | _stale_flags(c, sid, I_MBO_STALE))
        r.mbo.channel_id = c.channel
        act = _geti(e, &t.order[FH_MDP3_G_OrderUpdateAction], -1)
        r.mbo.action = b'A' if act == 0 else (b'M' if act == 1 else (b'C' if act == 2 else b'N'))
        if act == 2:
            r.mbo.flags |= FH_F_WHOLE_ORDER
        r.mbo.side = c.refs[ref - 1].side
        r.mbo.ts_recv = c.ts_recv
        r.mbo.ts_in_delta = c.ts_in_delta
        r.mbo.sequence = c.seq
        r.mbo.ext.match_number = <uint64_t>_geti(e, &t.order[FH_MDP3_G_MDOrderPriority], 0)


cdef void _order_book(_Ctx *c, const fh_mdp3_template *t, const uint8_t *root, _Group *ent) noexcept nogil:
    cdef uint64_t ts = <uint64_t>_geti(root, &t.root[FH_MDP3_R_TransactTime], 0)
    cdef uint32_t i
    cdef const uint8_t *e
    cdef int64_t act, v
    cdef int32_t sid
    cdef char side
    cdef fh_tick *r
    for i in range(ent.n):
        e = ent.p + <size_t>i * ent.block_length
        side = _book_side(_geti(e, &t.entry[FH_MDP3_G_MDEntryType], 0))
        if side == b'N':
            c.counters[C_ENTRIES_BAD] += 1
            continue
        sid = <int32_t>_geti(e, &t.entry[FH_MDP3_G_SecurityID], 0)
        r = _slot(c, FH_RTYPE_MBO, FH_DBN_MBO_LENGTH, <uint32_t>sid, ts)
        r.mbo.order_id = <uint64_t>_geti(e, &t.entry[FH_MDP3_G_OrderID], 0)
        r.mbo.price = _price(c, e, &t.entry[FH_MDP3_G_MDEntryPx])
        v = _geti(e, &t.entry[FH_MDP3_G_MDDisplayQty], 0)
        r.mbo.size = _u32(v)
        r.mbo.flags = <uint8_t>(c.rflags | _stale_flags(c, sid, I_MBO_STALE))
        r.mbo.channel_id = c.channel
        act = _geti(e, &t.entry[FH_MDP3_G_MDUpdateAction], -1)
        r.mbo.action = b'A' if act == 0 else (b'M' if act == 1 else (b'C' if act == 2 else b'N'))
        if act == 2:
            r.mbo.flags |= FH_F_WHOLE_ORDER
        r.mbo.side = side
        r.mbo.ts_recv = c.ts_recv
        r.mbo.ts_in_delta = c.ts_in_delta
        r.mbo.sequence = c.seq
        r.mbo.ext.match_number = <uint64_t>_geti(e, &t.entry[FH_MDP3_G_MDOrderPriority], 0)


cdef void _trade_summary(_Ctx *c, const fh_mdp3_template *t, const uint8_t *root, _Group *ent,
                         _Group *ords) noexcept nogil:
    cdef uint64_t ts = <uint64_t>_geti(root, &t.root[FH_MDP3_R_TransactTime], 0)
    cdef uint32_t i, k = 0, left = 0
    cdef const uint8_t *e = NULL
    cdef const uint8_t *o
    cdef int64_t v, rpt, aggr, trade_id = 0
    cdef int64_t px = FH_UNDEF_PRICE
    cdef int32_t sid = 0
    cdef bint drop = False
    cdef fh_tick *r
    for i in range(ent.n):
        e = ent.p + <size_t>i * ent.block_length
        sid = <int32_t>_geti(e, &t.entry[FH_MDP3_G_SecurityID], 0)
        rpt = _geti(e, &t.entry[FH_MDP3_G_RptSeq], -1)
        _check_rpt(c, sid, rpt, ts, &drop)
        if i < MAX_REFS:
            c.refs[i].side = 0 if drop else 1   # fills of a dropped (already applied) trade go too
        if drop:
            continue
        r = _slot(c, FH_RTYPE_TRADE, FH_DBN_TRADE_LENGTH, <uint32_t>sid, ts)
        r.trade.price = _price(c, e, &t.entry[FH_MDP3_G_MDEntryPx])
        v = _geti(e, &t.entry[FH_MDP3_G_MDEntrySize], 0)
        r.trade.size = _u32(v)
        v = _geti(e, &t.entry[FH_MDP3_G_MDUpdateAction], 0)
        r.trade.action = b'C' if v == 2 else b'T'   # Delete: trade cancel (bust)
        aggr = _geti(e, &t.entry[FH_MDP3_G_AggressorSide], 0)
        r.trade.side = b'B' if aggr == 1 else (b'A' if aggr == 2 else b'N')
        r.trade.flags = c.rflags
        r.trade.ts_recv = c.ts_recv
        r.trade.ts_in_delta = c.ts_in_delta
        r.trade.sequence = c.seq
        r.trade.match_number = <uint64_t>_geti(e, &t.entry[FH_MDP3_G_MDTradeEntryID], 0)
    # Order-level fills: NumberOfOrders of each trade entry says how many of them are its own.
    cdef bint keep = True
    i = 0
    for k in range(ords.n):
        o = ords.p + <size_t>k * ords.block_length
        while left == 0 and i < ent.n:
            e = ent.p + <size_t>i * ent.block_length
            v = _geti(e, &t.entry[FH_MDP3_G_NumberOfOrders], 0)
            left = <uint32_t>(v if v > 0 else 0)
            sid = <int32_t>_geti(e, &t.entry[FH_MDP3_G_SecurityID], 0)
            px = _price(c, e, &t.entry[FH_MDP3_G_MDEntryPx])
            trade_id = _geti(e, &t.entry[FH_MDP3_G_MDTradeEntryID], 0)
            keep = i >= MAX_REFS or c.refs[i].side != 0
            i += 1
        if e == NULL:
            c.counters[C_ENTRIES_BAD] += 1
            continue
        if not keep:
            if left > 0:
                left -= 1
            continue
        # An order's share of the trade: a trade record with order_id set and action 'F'. It is
        # information, not a book event: the order's new state comes in the book messages
        # (order entries of MDIncrementalRefreshBook / OrderBook), so books must not apply it twice.
        r = _slot(c, FH_RTYPE_TRADE, FH_DBN_TRADE_LENGTH, <uint32_t>sid, ts)
        r.trade.order_id = <uint64_t>_geti(o, &t.order[FH_MDP3_G_OrderID], 0)
        r.trade.price = px
        v = _geti(o, &t.order[FH_MDP3_G_LastQty], 0)
        r.trade.size = _u32(v)
        r.trade.flags = c.rflags
        r.trade.action = b'F'
        r.trade.side = b'N'
        r.trade.ts_recv = c.ts_recv
        r.trade.ts_in_delta = c.ts_in_delta
        r.trade.sequence = c.seq
        r.trade.match_number = <uint64_t>trade_id
        if left > 0:
            left -= 1


cdef void _stats(_Ctx *c, const fh_mdp3_template *t, const uint8_t *root, _Group *ent) noexcept nogil:
    cdef uint64_t ts = <uint64_t>_geti(root, &t.root[FH_MDP3_R_TransactTime], 0)
    cdef uint32_t i
    cdef const uint8_t *e
    cdef int64_t rpt
    cdef int32_t sid
    cdef bint drop = False
    cdef uint32_t fl
    for i in range(ent.n):
        e = ent.p + <size_t>i * ent.block_length
        sid = <int32_t>_geti(e, &t.entry[FH_MDP3_G_SecurityID], 0)
        rpt = _geti(e, &t.entry[FH_MDP3_G_RptSeq], -1)
        fl = _check_rpt(c, sid, rpt, ts, &drop)
        if drop:
            continue
        if t.kind == FH_MDP3_K_LIMITS:
            _stat(c, t, e, ts, <uint8_t>fl, b'H', &t.entry[FH_MDP3_G_HighLimitPrice])
            _stat(c, t, e, ts, <uint8_t>fl, b'L', &t.entry[FH_MDP3_G_LowLimitPrice])
            _stat(c, t, e, ts, <uint8_t>fl, b'V', &t.entry[FH_MDP3_G_MaxPriceVariation])
        else:
            _stat(c, t, e, ts, <uint8_t>fl, <char>_geti(e, &t.entry[FH_MDP3_G_MDEntryType], 0),
                  &t.entry[FH_MDP3_G_MDEntryPx])


cdef void _status(_Ctx *c, const fh_mdp3_template *t, const uint8_t *root) noexcept nogil:
    cdef fh_tick *r = _slot(c, FH_RTYPE_SECURITY_STATUS, FH_OWN_LENGTH,
                            <uint32_t>_geti(root, &t.root[FH_MDP3_R_SecurityID], 0),
                            <uint64_t>_geti(root, &t.root[FH_MDP3_R_TransactTime], 0))
    r.security_status.ts_recv = c.ts_recv
    r.security_status.sequence = c.seq
    r.security_status.trade_date = <uint16_t>_geti(root, &t.root[FH_MDP3_R_TradeDate], 65535)
    r.security_status.trading_status = <uint8_t>_geti(root, &t.root[FH_MDP3_R_SecurityTradingStatus], 255)
    r.security_status.halt_reason = <uint8_t>_geti(root, &t.root[FH_MDP3_R_HaltReason], 255)
    r.security_status.trading_event = <uint8_t>_geti(root, &t.root[FH_MDP3_R_SecurityTradingEvent], 255)
    r.security_status.match_event = <uint8_t>_geti(root, &t.root[FH_MDP3_R_MatchEventIndicator], 0)
    _chars(r.security_status.security_group, 6, root, &t.root[FH_MDP3_R_SecurityGroup])
    _chars(r.security_status.asset, 6, root, &t.root[FH_MDP3_R_Asset])
    r.security_status.channel_id = c.channel
    r.security_status.flags = c.rflags


cdef void _definition(_Ctx *c, const fh_mdp3_template *t, const uint8_t *root) noexcept nogil:
    cdef fh_tick *r = _slot(c, FH_RTYPE_INSTRUMENT_DEF, FH_OWN_LENGTH,
                            <uint32_t>_geti(root, &t.root[FH_MDP3_R_SecurityID], 0),
                            <uint64_t>_geti(root, &t.root[FH_MDP3_R_LastUpdateTime], 0))
    r.instrument_def.min_price_increment = _price(c, root, &t.root[FH_MDP3_R_MinPriceIncrement])
    r.instrument_def.display_factor = _price(c, root, &t.root[FH_MDP3_R_DisplayFactor])
    _chars(r.instrument_def.symbol, 20, root, &t.root[FH_MDP3_R_Symbol])
    r.instrument_def.update_action = <char>_geti(root, &t.root[FH_MDP3_R_SecurityUpdateAction], 0)
    if t.kind == FH_MDP3_K_DEF_FUTURE:
        r.instrument_def.instrument_class = b'F'
    elif t.kind == FH_MDP3_K_DEF_OPTION:
        r.instrument_def.instrument_class = b'O'
    elif t.kind == FH_MDP3_K_DEF_SPREAD:
        r.instrument_def.instrument_class = b'S'
    else:
        r.instrument_def.instrument_class = b'X'
    r.instrument_def.put_or_call = <uint8_t>_geti(root, &t.root[FH_MDP3_R_PutOrCall], 255)
    r.instrument_def.market_segment_id = <uint8_t>_geti(root, &t.root[FH_MDP3_R_MarketSegmentID], 0)
    r.instrument_def.strike_price = _price(c, root, &t.root[FH_MDP3_R_StrikePrice])


cdef void _snapshot(_Ctx *c, const fh_mdp3_template *t, const uint8_t *root, _Group *ent) noexcept nogil:
    cdef int32_t sid = <int32_t>_geti(root, &t.root[FH_MDP3_R_SecurityID], 0)
    cdef int64_t rpt = _geti(root, &t.root[FH_MDP3_R_RptSeq], 0)
    cdef uint64_t ts = <uint64_t>_geti(root, &t.root[FH_MDP3_R_TransactTime], 0)
    cdef _Inst *st = _inst(c, sid)
    cdef bint was_stale
    cdef uint32_t i
    cdef int64_t et, v = 0
    cdef const uint8_t *e
    cdef fh_tick *r
    if st != NULL and (st.flags & I_HAS_RPT) and not (st.flags & I_STALE) and not c.apply_all_snapshots:
        c.counters[C_SNAPSHOTS_IGNORED] += 1
        return
    was_stale = st != NULL and (st.flags & I_STALE) != 0
    # clear the instrument's price-level books, then rebuild them from the entries
    r = _slot(c, FH_RTYPE_MBP_UPDATE, FH_OWN_LENGTH, <uint32_t>sid, ts)
    r.mbp_update.ts_recv = c.ts_recv
    r.mbp_update.price = FH_UNDEF_PRICE
    r.mbp_update.rpt_seq = <uint32_t>rpt
    r.mbp_update.sequence = c.seq
    r.mbp_update.action = b'R'
    r.mbp_update.side = b'N'
    r.mbp_update.flags = FH_F_SNAPSHOT | FH_F_MBP | c.rflags
    r.mbp_update.channel_id = c.channel
    for i in range(ent.n):
        e = ent.p + <size_t>i * ent.block_length
        et = _geti(e, &t.entry[FH_MDP3_G_MDEntryType], 0)
        # snapshot entries carry no SecurityID: it is the root's
        if et == b'0' or et == b'1' or et == b'E' or et == b'F':
            r = _mbp(c, t, e, ts, 0, FH_F_SNAPSHOT, rpt)
            r.hd.instrument_id = <uint32_t>sid
        else:
            r = _stat(c, t, e, ts, FH_F_SNAPSHOT, <char>et, &t.entry[FH_MDP3_G_MDEntryPx])
            r.hd.instrument_id = <uint32_t>sid
            r.statistic.rpt_seq = <uint32_t>rpt
    if _get(root, &t.root[FH_MDP3_R_MDSecurityTradingStatus], &v):
        r = _slot(c, FH_RTYPE_SECURITY_STATUS, FH_OWN_LENGTH, <uint32_t>sid, ts)
        r.security_status.ts_recv = c.ts_recv
        r.security_status.sequence = c.seq
        r.security_status.trade_date = <uint16_t>_geti(root, &t.root[FH_MDP3_R_TradeDate], 65535)
        r.security_status.trading_status = <uint8_t>v
        r.security_status.halt_reason = 255
        r.security_status.trading_event = 255
        r.security_status.channel_id = c.channel
        r.security_status.flags = FH_F_SNAPSHOT | c.rflags
    if st != NULL:
        st.flags = (st.flags | I_HAS_RPT) & ~I_STALE
        st.rpt_seq = <uint32_t>rpt
    if was_stale:
        c.counters[C_RECOVERIES] += 1
        _gap(c, FH_GAP_FILLED, <uint32_t>sid, 0, 0, ts)


cdef void _snapshot_orders(_Ctx *c, const fh_mdp3_template *t, const uint8_t *root, _Group *ent) noexcept nogil:
    cdef int32_t sid = <int32_t>_geti(root, &t.root[FH_MDP3_R_SecurityID], 0)
    cdef uint64_t ts = <uint64_t>_geti(root, &t.root[FH_MDP3_R_TransactTime], 0)
    cdef int64_t chunk = _geti(root, &t.root[FH_MDP3_R_CurrentChunk], 1)
    cdef int64_t nchunks = _geti(root, &t.root[FH_MDP3_R_NoChunks], 1)
    cdef _Inst *st = _inst(c, sid)
    cdef uint32_t i
    cdef const uint8_t *e
    cdef int64_t v
    cdef char side
    cdef fh_tick *r
    if st != NULL and not _mbo_stale(c, st) and (st.flags & I_HAS_RPT) and not c.apply_all_snapshots:
        c.counters[C_SNAPSHOTS_IGNORED] += 1
        return
    if chunk <= 1:
        r = _slot(c, FH_RTYPE_MBO, FH_DBN_MBO_LENGTH, <uint32_t>sid, ts)
        r.mbo.price = FH_UNDEF_PRICE
        r.mbo.flags = FH_F_SNAPSHOT | c.rflags
        r.mbo.channel_id = c.channel
        r.mbo.action = b'R'
        r.mbo.side = b'N'
        r.mbo.ts_recv = c.ts_recv
        r.mbo.ts_in_delta = c.ts_in_delta
        r.mbo.sequence = c.seq
    for i in range(ent.n):
        e = ent.p + <size_t>i * ent.block_length
        side = _book_side(_geti(e, &t.entry[FH_MDP3_G_MDEntryType], 0))
        if side == b'N':
            c.counters[C_ENTRIES_BAD] += 1
            continue
        r = _slot(c, FH_RTYPE_MBO, FH_DBN_MBO_LENGTH, <uint32_t>sid, ts)
        r.mbo.order_id = <uint64_t>_geti(e, &t.entry[FH_MDP3_G_OrderID], 0)
        r.mbo.price = _price(c, e, &t.entry[FH_MDP3_G_MDEntryPx])
        v = _geti(e, &t.entry[FH_MDP3_G_MDDisplayQty], 0)
        r.mbo.size = _u32(v)
        r.mbo.flags = FH_F_SNAPSHOT | c.rflags
        r.mbo.channel_id = c.channel
        r.mbo.action = b'A'
        r.mbo.side = side
        r.mbo.ts_recv = c.ts_recv
        r.mbo.ts_in_delta = c.ts_in_delta
        r.mbo.sequence = c.seq
        r.mbo.ext.match_number = <uint64_t>_geti(e, &t.entry[FH_MDP3_G_MDOrderPriority], 0)
    if chunk >= nchunks and st != NULL:
        if _mbo_stale(c, st):
            c.counters[C_MBO_RECOVERIES] += 1
        st.flags &= ~I_MBO_STALE
        st.mbo_epoch = c.gap_epoch


cdef void _channel_reset(_Ctx *c, const fh_mdp3_template *t, const uint8_t *root) noexcept nogil:
    cdef uint32_t i
    c.counters[C_CHANNEL_RESETS] += 1
    for i in range(c.inst_mask + 1):
        if c.inst[i].flags & I_USED:
            c.inst[i].flags = I_USED  # books restart empty: no RptSeq expectation, not stale
            c.inst[i].mbo_epoch = c.gap_epoch
    _gap(c, FH_GAP_RESET, 0, 0, 0, <uint64_t>_geti(root, &t.root[FH_MDP3_R_TransactTime], 0))


cdef inline size_t _flags_offset(uint8_t rtype) noexcept nogil:
    # offsetof() of each record's flags, taken on a real object (a NULL base is UB)
    cdef fh_tick z
    cdef char *base = <char *>&z
    if rtype == FH_RTYPE_MBO:
        return <size_t>(<char *>&z.mbo.flags - base)
    if rtype == FH_RTYPE_TRADE:
        return <size_t>(<char *>&z.trade.flags - base)
    if rtype == FH_RTYPE_MBP_UPDATE:
        return <size_t>(<char *>&z.mbp_update.flags - base)
    if rtype == FH_RTYPE_STATISTIC:
        return <size_t>(<char *>&z.statistic.flags - base)
    if rtype == FH_RTYPE_SECURITY_STATUS:
        return <size_t>(<char *>&z.security_status.flags - base)
    return 0  # records without a flags field (instrument_def, gap): nothing to mark


# ---- framing ------------------------------------------------------------------------------------
cdef const fh_mdp3_schema *_schema(_Ctx *c, uint16_t sid, uint16_t ver) noexcept nogil:
    cdef int i
    cdef const fh_mdp3_schema *best = NULL
    for i in range(FH_MDP3_NSCHEMAS):
        if not (c.enabled >> i) & 1 or fh_mdp3_schemas[i].schema_id != sid:
            continue
        if fh_mdp3_schemas[i].version == ver:
            return &fh_mdp3_schemas[i]
        if fh_mdp3_schemas[i].version < ver:
            best = &fh_mdp3_schemas[i]   # ascending: the newest older one wins
    if best != NULL:
        c.counters[C_MSG_VERSION_FALLBACK] += 1
    return best


cdef inline void _count_version(_Ctx *c, uint16_t ver, const fh_mdp3_schema *s) noexcept nogil:
    cdef uint16_t k = ver if ver < NVERSIONS else NVERSIONS - 1
    c.by_version[k] += 1
    if s != NULL:
        c.decoded_as[k] = s.version


cdef void _message(_Ctx *c, const uint8_t *b, size_t n) noexcept nogil:
    cdef uint16_t bl, tid, sid, ver
    cdef const fh_mdp3_schema *s
    cdef const fh_mdp3_template *t
    cdef const fh_mdp3_group *g
    cdef size_t pos, need
    cdef uint32_t gi, gbl, num
    cdef _Group ent, ords
    cdef size_t first = c.n_out
    cdef int64_t mei = 0
    cdef uint8_t k
    cdef size_t fo
    c.counters[C_MESSAGES] += 1
    if n < SBE_HEADER:
        c.counters[C_MSG_TRUNCATED] += 1
        return
    bl = fh_load_le16(b)
    tid = fh_load_le16(b + 2)
    sid = fh_load_le16(b + 4)
    ver = fh_load_le16(b + 6)
    s = _schema(c, sid, ver)
    _count_version(c, ver, s)
    if s == NULL:
        c.counters[C_MSG_UNKNOWN_SCHEMA] += 1
        return
    t = s.by_id[tid] if tid < FH_MDP3_MAX_TEMPLATE_ID else NULL
    if t == NULL:
        c.counters[C_MSG_UNKNOWN_TEMPLATE] += 1
        return
    if bl < t.block_length:
        c.counters[C_MSG_BAD_BLOCK_LENGTH] += 1
        return
    if <size_t>SBE_HEADER + bl > n:
        c.counters[C_MSG_TRUNCATED] += 1
        return
    pos = SBE_HEADER + bl
    ent.p = NULL; ent.n = 0; ent.block_length = 0
    ords.p = NULL; ords.n = 0; ords.block_length = 0
    # walk every group first, so that a malformed message emits nothing at all
    for gi in range(t.ngroups):
        g = &t.groups[gi]
        if ver < g.since_version:
            continue
        if pos + g.dim_size > n:
            c.counters[C_MSG_TRUNCATED] += 1
            return
        gbl = fh_load_le16(b + pos)
        num = b[pos + g.num_offset] if g.num_size == 1 else fh_load_le16(b + pos + g.num_offset)
        if num > 0 and gbl < g.block_length:
            c.counters[C_MSG_BAD_BLOCK_LENGTH] += 1
            return
        pos += g.dim_size
        need = <size_t>num * gbl
        if need > n - pos:
            c.counters[C_MSG_TRUNCATED] += 1
            return
        if g.role == FH_MDP3_GROUP_ENTRIES:
            ent.p = b + pos; ent.n = num; ent.block_length = gbl
        elif g.role == FH_MDP3_GROUP_ORDERS:
            ords.p = b + pos; ords.n = num; ords.block_length = gbl
        pos += need
    b += SBE_HEADER
    k = t.kind
    if k == FH_MDP3_K_BOOK:
        c.counters[C_BOOK] += 1
        _book(c, t, b, &ent, &ords)
    elif k == FH_MDP3_K_ORDER_BOOK:
        c.counters[C_ORDER_BOOK] += 1
        _order_book(c, t, b, &ent)
    elif k == FH_MDP3_K_TRADE_SUMMARY:
        c.counters[C_TRADE_SUMMARY] += 1
        _trade_summary(c, t, b, &ent, &ords)
    elif k == FH_MDP3_K_VOLUME:
        c.counters[C_VOLUME] += 1
        _stats(c, t, b, &ent)
    elif k == FH_MDP3_K_SESSION_STATS:
        c.counters[C_SESSION_STATS] += 1
        _stats(c, t, b, &ent)
    elif k == FH_MDP3_K_DAILY_STATS:
        c.counters[C_DAILY_STATS] += 1
        _stats(c, t, b, &ent)
    elif k == FH_MDP3_K_LIMITS:
        c.counters[C_LIMITS] += 1
        _stats(c, t, b, &ent)
    elif k == FH_MDP3_K_STATUS:
        c.counters[C_STATUS] += 1
        _status(c, t, b)
    elif k == FH_MDP3_K_DEF_FUTURE or k == FH_MDP3_K_DEF_OPTION or k == FH_MDP3_K_DEF_SPREAD \
            or k == FH_MDP3_K_DEF_OTHER:
        c.counters[C_DEFINITIONS] += 1
        _definition(c, t, b)
    elif k == FH_MDP3_K_SNAPSHOT:
        c.counters[C_SNAPSHOTS] += 1
        _snapshot(c, t, b, &ent)
    elif k == FH_MDP3_K_SNAPSHOT_ORDER_BOOK:
        c.counters[C_SNAPSHOT_ORDER_BOOKS] += 1
        _snapshot_orders(c, t, b, &ent)
    elif k == FH_MDP3_K_CHANNEL_RESET:
        _channel_reset(c, t, b)
    elif k == FH_MDP3_K_HEARTBEAT:
        c.counters[C_HEARTBEATS] += 1
    else:
        c.counters[C_MSG_SKIPPED] += 1
    # DBN F_LAST: the last record of a message that ends a Globex event (MatchEventIndicator bit 7)
    if c.n_out > first and _get(b, &t.root[FH_MDP3_R_MatchEventIndicator], &mei) and (mei & 0x80):
        fo = _flags_offset(c.out[c.n_out - 1].hd.rtype)
        if fo:
            (<uint8_t *>&c.out[c.n_out - 1])[fo] |= FH_F_LAST


cdef inline int32_t _delta(uint64_t ts_recv, uint64_t sending) noexcept nogil:
    cdef int64_t d
    if ts_recv == 0:
        return 0
    d = <int64_t>(ts_recv - sending)
    if d > 2147483647 or d < -2147483647:
        return 0
    return <int32_t>d


cdef inline size_t _packet_bound(uint32_t plen) noexcept nogil:
    # Records one packet can produce. Only groups whose wire block length is at least the schema's
    # are read, and the densest source is MDIncrementalRefreshLimitsBanding (3 records per 32-byte
    # entry); per-message records (snapshot clear + status, gaps) cost more bytes than that. So
    # plen/10 + 4 (a 1500-byte packet: 154 slots). _slot() still checks, and counts output_overflow.
    return plen // 10 + 4


cdef inline void _enter(_Ctx *c, const fh_msg *m) noexcept nogil:
    """Per-packet context every record of this packet gets."""
    c.ts_recv = m.ts_recv
    c.channel = <uint8_t>m.channel
    c.rflags = FH_F_BAD_TS_RECV if (m.flags & FH_MSG_TS_MASK) == FH_MSG_TS_NONE else 0
    c.seq = fh_load_le32(m.data)
    c.ts_in_delta = _delta(c.ts_recv, fh_load_le64(m.data + 4))


cdef void _frame(_Ctx *c, const uint8_t *p, uint32_t plen) noexcept nogil:
    """Split an accepted packet into its messages (MsgSize framing) and decode each."""
    cdef size_t pos = PACKET_HEADER
    cdef uint32_t msz
    c.counters[C_PACKETS_OK] += 1
    while pos < plen:
        if plen - pos < 2:
            c.counters[C_MSG_BAD_SIZE] += 1
            return
        msz = fh_load_le16(p + pos)
        if msz < 2 + SBE_HEADER or msz > plen - pos:
            c.counters[C_MSG_BAD_SIZE] += 1
            return
        _message(c, p + pos + 2, msz - 2)
        pos += msz


cdef inline int _find_ahead(const fh_msg *msgs, size_t i, size_t n, uint64_t ahead, uint16_t channel,
                            uint64_t want) noexcept nogil:
    """k such that msgs[i + k] (not yet taken, k < REORDER_WINDOW) is packet `want` of `channel`."""
    cdef size_t k
    for k in range(REORDER_WINDOW):
        if i + k >= n:
            return -1
        if (ahead >> k) & 1 or msgs[i + k].channel != channel or msgs[i + k].len < PACKET_HEADER:
            continue
        if fh_load_le32(msgs[i + k].data) == want:
            return <int>k
    return -1


cdef size_t _decode_msgs(_Ctx *c, const fh_msg *msgs, size_t n, fh_tick *out, size_t cap,
                         size_t *n_out) noexcept nogil:
    """fh_decode_fn: one fh_msg per UDP payload (binary packet header + messages).

    A packet is decoded whole or not at all: it needs plen/10 + 4 free slots (154 for 1500 bytes),
    more than fh/decoder.h's per-message FH_DECODE_MAX_RECORDS_PER_MSG; callers pass cap >= 320
    (two packets: reordering decodes a later payload before the current one).
    A/B: the A and B copies of a channel share msgs[].channel. When a packet skips ahead, the next
    REORDER_WINDOW payloads of the batch are searched for the missing ones (the other feed's copy
    is often just behind) and those are decoded first; only then is a gap declared.
    """
    cdef size_t i = 0
    cdef const fh_msg *m
    cdef const fh_msg *m2
    cdef uint64_t seq, d
    cdef uint64_t ahead = 0     # bit k: msgs[i + k] was already decoded out of order
    cdef int k
    cdef bint retry = False
    cdef _Chan *ch
    c.out = out
    c.n_out = 0
    c.cap = cap
    while i < n:
        if ahead & 1:
            i += 1
            ahead >>= 1
            continue
        m = &msgs[i]
        if cap - c.n_out < _packet_bound(m.len):
            break
        i += 1
        ahead >>= 1             # from here: bit k <-> msgs[i + k]; m is msgs[i - 1]
        c.counters[C_PACKETS] += 1
        if m.len < PACKET_HEADER:
            c.counters[C_PACKET_TRUNCATED] += 1
            continue
        _enter(c, m)
        seq = c.seq
        ch = &c.chan[c.channel]
        if c.snapshot_chan[c.channel] and ch.init and seq != ch.expected:
            # a snapshot loop: joined mid-loop, restarted, or a packet lost. No incremental data is
            # lost (a missed snapshot comes round again): resynchronise, no gap, no stale books
            d = ch.expected - 1 - seq
            # (the other line's copy is a duplicate; 1 again after more is the loop starting over)
            if seq < ch.expected and d < 64 and (ch.seen >> d) & 1 and not (seq == 1 and ch.expected > 2):
                c.counters[C_PACKET_DUPLICATE] += 1
                continue
            c.counters[C_SNAPSHOT_RESYNCS] += 1
            ch.expected = seq + 1
            ch.seen = 1
            _frame(c, m.data, m.len)
            continue
        if not ch.init:
            ch.init = 1
            ch.expected = seq + 1
            ch.seen = 1
        elif seq == ch.expected:
            ch.expected += 1
            ch.seen = (ch.seen << 1) | 1
        elif seq < ch.expected:
            d = ch.expected - 1 - seq
            if d < 64 and (ch.seen >> d) & 1:
                c.counters[C_PACKET_DUPLICATE] += 1
                continue
            if seq != 1:
                c.counters[C_PACKET_LATE] += 1
                continue
            # a first packet not seen before: the sender restarted its numbers (weekly start)
            c.counters[C_PACKET_RESETS] += 1
            _gap(c, FH_GAP_RESET, 0, seq, 0, fh_load_le64(m.data + 4))
            ch.expected = 2
            ch.seen = 1
        else:
            while seq > ch.expected:
                k = _find_ahead(msgs, i, n, ahead, m.channel, ch.expected)
                if k < 0:
                    break
                m2 = &msgs[i + k]
                if cap - c.n_out < _packet_bound(m2.len) + _packet_bound(m.len):
                    # no room for both: stop here and let the caller pass m again with a fresh
                    # buffer; a buffer too small for two packets even when empty cannot reorder
                    retry = c.n_out > 0
                    break
                ahead |= (<uint64_t>1) << k
                c.counters[C_PACKETS] += 1
                c.counters[C_PACKET_REORDERED] += 1
                _enter(c, m2)
                ch.expected += 1
                ch.seen = (ch.seen << 1) | 1
                _frame(c, m2.data, m2.len)
                _enter(c, m)
            if retry:
                # m is handed back undecoded; the payloads taken ahead of it are in the channel's
                # duplicate window, so passing them again drops them (counted as duplicates)
                c.counters[C_PACKETS] -= 1
                i -= 1
                break
            if seq == ch.expected:
                ch.expected += 1
                ch.seen = (ch.seen << 1) | 1
            else:
                d = seq - ch.expected
                c.counters[C_PACKET_GAPS] += 1
                c.counters[C_PACKET_MISSING] += d
                c.gap_epoch += 1
                _gap(c, FH_GAP_LOST, 0, ch.expected, d, fh_load_le64(m.data + 4))
                ch.seen = ((ch.seen << (d + 1)) if d < 63 else 0) | 1
                ch.expected = seq + 1
        _frame(c, m.data, m.len)
    n_out[0] = c.n_out
    return i


cdef size_t fh_mdp3_decode(void *ctx, const fh_msg *msgs, size_t n, fh_tick *out, size_t cap,
                           size_t *n_out) noexcept nogil:
    return _decode_msgs(<_Ctx *>ctx, msgs, n, out, cap, n_out)


def schema_versions():
    """The (schema_id, version) pairs compiled in, ascending."""
    return [(fh_mdp3_schemas[i].schema_id, fh_mdp3_schemas[i].version) for i in range(FH_MDP3_NSCHEMAS)]


def template_name(int version, int template_id):
    """Name of a template in a compiled-in schema version (None if unknown)."""
    for i in range(FH_MDP3_NSCHEMAS):
        if fh_mdp3_schemas[i].version == version and 0 <= template_id < FH_MDP3_MAX_TEMPLATE_ID:
            if fh_mdp3_schemas[i].by_id[template_id] != NULL:
                return fh_mdp3_schemas[i].by_id[template_id].name.decode()
    return None


cdef class Mdp3Decoder:
    """CME MDP 3.0 packets (UDP payloads) to tick records, with channel and RptSeq sequencing.

    Parameters
    ----------
    schemas : iterable of int, optional
        Schema versions to accept (default: every compiled-in version, see ``schema_versions()``).
        Messages of other versions are decoded with the newest older enabled one (blockLength steps
        over extension fields) or counted as ``msg_unknown_schema``.
    max_instruments : int
        Instruments tracked for RptSeq (power of two is used internally; more are counted).
    apply_all_snapshots : bool
        Emit every snapshot, not only those of instruments that are stale or not yet seen.
    snapshot_channels : iterable of int
        Channels (fh_msg.channel) that carry a snapshot loop (market recovery): a MsgSeqNum jump there
        resynchronises (``snapshot_resyncs``) instead of opening a gap that would stale every MBO book.
    late_join : bool
        The feed is joined mid-session (a live run with snapshot groups): an instrument whose first
        incremental carries RptSeq > 1 missed its earlier updates, so it is stale from the start (a
        gap record for RptSeq 1..n-1, ``late_joins``, its records flagged FH_F_MAYBE_BAD_BOOK) until the
        snapshot loop rebuilds its books, exactly as after a RptSeq gap. Off (the default), the first
        RptSeq seen is taken as the instrument's start, as a replay of a capture that starts mid-session
        wants.
    """
    cdef _Ctx *c
    cdef object _keep

    def __cinit__(self, schemas=None, int max_instruments=65536, bint apply_all_snapshots=False,
                  snapshot_channels=(), bint late_join=False):
        cdef uint32_t cap = 1
        while cap < <uint32_t>max_instruments * 2:
            cap <<= 1
        self.c = <_Ctx *>calloc(1, sizeof(_Ctx))
        if self.c == NULL:
            raise MemoryError()
        self.c.inst = <_Inst *>calloc(cap, sizeof(_Inst))
        if self.c.inst == NULL:
            raise MemoryError()
        self.c.inst_mask = cap - 1
        self.c.inst_limit = <uint32_t>max_instruments
        self.c.apply_all_snapshots = apply_all_snapshots
        self.c.late_join = late_join
        for ch in snapshot_channels or ():
            if not 0 <= int(ch) < NCHANNELS:
                raise ValueError(f"snapshot channel must be 0..{NCHANNELS - 1}, not {ch}")
            self.c.snapshot_chan[int(ch)] = 1
        wanted = None if schemas is None else set(int(v) for v in schemas)
        for i in range(FH_MDP3_NSCHEMAS):
            if wanted is None or fh_mdp3_schemas[i].version in wanted:
                self.c.enabled |= 1u << i
        if wanted is not None:
            known = {fh_mdp3_schemas[i].version for i in range(FH_MDP3_NSCHEMAS)}
            if wanted - known:
                raise ValueError(f"unknown MDP3 schema versions {sorted(wanted - known)}; known: {sorted(known)}")

    def __dealloc__(self):
        if self.c != NULL:
            free(self.c.inst)
            free(self.c)

    def decode_fn(self):
        """``(fn, ctx)`` PyCapsules for a native pipeline: ``fn`` ("fh_decode_fn") is the decoder in
        the shape of fh/decoder.h, taking one fh_msg per UDP payload; ``ctx`` ("fh_mdp3_ctx") is this
        decoder's state. Valid while this object lives; one thread at a time."""
        return (PyCapsule_New(<void *>fh_mdp3_decode, b"fh_decode_fn", NULL),
                PyCapsule_New(<void *>self.c, b"fh_mdp3_ctx", NULL))

    def counters(self):
        """Counters since creation (or reset()): a dict name -> int."""
        return {name: self.c.counters[i] for i, name in enumerate(COUNTER_NAMES)}

    def schema_usage(self):
        """Schema versions seen on the wire: {wire version: {"messages": n, "decoded_as": version or None}}.
        ``decoded_as`` differs from the wire version when no compiled-in schema has that version and the
        newest older one decoded it (a fallback: fields added since are skipped by blockLength);
        ``None``: no schema could decode it (counted in ``msg_unknown_schema``)."""
        out = {}
        for v in range(NVERSIONS):
            if self.c.by_version[v]:
                out[v] = {"messages": int(self.c.by_version[v]),
                          "decoded_as": int(self.c.decoded_as[v]) if self.c.decoded_as[v] else None}
        return out

    def rejects(self):
        """Sum of the reject counters (malformed or unknown input that was skipped)."""
        return sum(self.c.counters[COUNTER_NAMES.index(n)] for n in REJECT_COUNTERS)

    def stale_instruments(self, book="any"):
        """Security ids whose book is stale (waiting for a snapshot), ascending.

        book: "mbp" (price levels and statistics: SnapshotFullRefresh), "mbo" (order book:
        SnapshotFullRefreshOrderBook) or "any".
        """
        cdef uint32_t bits = {"mbp": I_STALE, "mbo": I_MBO_STALE, "any": I_STALE | I_MBO_STALE}[book]
        out = []
        for i in range(self.c.inst_mask + 1):
            if not (self.c.inst[i].flags & I_USED):
                continue
            if (self.c.inst[i].flags & bits & I_STALE) or ((bits & I_MBO_STALE) and _mbo_stale(self.c, &self.c.inst[i])):
                out.append(self.c.inst[i].security_id)
        return sorted(out)

    def stale_count(self):
        """How many instruments wait for a snapshot (MBP or MBO book): ``len(stale_instruments())``
        in one native pass, cheap enough for a monitor to ask every few milliseconds while the decoder
        runs on another thread (a snapshot of flags that thread may be changing: a monitor's view)."""
        cdef uint32_t i, n = 0
        cdef _Ctx *c = self.c
        with nogil:
            for i in range(c.inst_mask + 1):
                if (c.inst[i].flags & I_USED) and ((c.inst[i].flags & I_STALE) or _mbo_stale(c, &c.inst[i])):
                    n += 1
        return n

    def reset(self):
        """Forget sequencing state and counters."""
        memset(self.c.counters, 0, sizeof(self.c.counters))
        memset(self.c.by_version, 0, sizeof(self.c.by_version))
        memset(self.c.decoded_as, 0, sizeof(self.c.decoded_as))
        memset(self.c.chan, 0, sizeof(self.c.chan))
        memset(self.c.inst, 0, (self.c.inst_mask + 1) * sizeof(_Inst))
        self.c.inst_count = 0
        self.c.gap_epoch = 0

    def decode_packets(self, payloads, ts_recv=None, channel=0):
        """Decode a list of UDP payloads (bytes) into a numpy array of TICK_DTYPE records.

        ts_recv: one uint64 ns stamp per payload (array-like) or None (records get F_BAD_TS_RECV);
        channel: an int for all payloads or one per payload (A/B copies share a channel).
        """
        payloads = list(payloads)
        lengths = np.fromiter((len(p) for p in payloads), dtype=np.uint32, count=len(payloads))
        offsets = np.zeros(len(payloads), dtype=np.uint64)
        if len(payloads) > 1:
            np.cumsum(lengths[: len(payloads) - 1], out=offsets[1:])
        return self.decode_buffer(b"".join(payloads), offsets, lengths, ts_recv, channel)

    def decode_buffer(self, const uint8_t[::1] buf, offsets, lengths, ts_recv=None, channel=0):
        """Decode payloads laid out in one buffer: payload i is buf[offsets[i]:offsets[i]+lengths[i]]."""
        from feedhandler.records import empty
        cdef const uint64_t[::1] off = np.ascontiguousarray(offsets, dtype=np.uint64)
        cdef const uint32_t[::1] ln = np.ascontiguousarray(lengths, dtype=np.uint32)
        cdef size_t n = off.shape[0]
        cdef size_t i, done = 0, got = 0, cap, total
        if ln.shape[0] != n:
            raise ValueError("offsets and lengths differ in length")
        ts = None if ts_recv is None else np.ascontiguousarray(ts_recv, dtype=np.uint64)
        ch = np.ascontiguousarray(np.broadcast_to(np.asarray(channel, dtype=np.uint16), (n,)))
        if ts is not None and ts.shape[0] != n:
            raise ValueError("ts_recv must have one stamp per payload")
        cdef const uint64_t[::1] tsv = ts if ts is not None else np.zeros(1, dtype=np.uint64)
        cdef const uint16_t[::1] chv = ch if n else np.zeros(1, dtype=np.uint16)
        cdef bint have_ts = ts is not None
        for i in range(n):
            if off[i] + ln[i] > <uint64_t>buf.shape[0]:
                raise ValueError(f"payload {i} runs past the end of the buffer")
        msgs_arr = np.zeros(max(n, 1) * sizeof(fh_msg), dtype=np.uint8)
        cdef fh_msg *msgs = <fh_msg *><size_t>msgs_arr.ctypes.data
        cdef const uint8_t *base = &buf[0] if buf.shape[0] else NULL
        for i in range(n):
            msgs[i].data = base + off[i]
            msgs[i].len = ln[i]
            msgs[i].channel = chv[i]
            msgs[i].flags = FH_MSG_TS_SW if have_ts else FH_MSG_TS_NONE
            msgs[i].ts_recv = tsv[i] if have_ts else 0
            msgs[i].sequence = 0
        total = buf.shape[0]
        cap = total // 8 + 64
        out = empty(cap)
        cdef fh_tick *op
        cdef size_t k, wrote = 0
        while done < n:
            if cap - got < _packet_bound(ln[done]):
                cap = max(cap * 2, got + _packet_bound(ln[done]))
                bigger = empty(cap)
                # copy bytes, not fields: TICK_DTYPE's `raw` overlaps the header fields and numpy's
                # field-wise structured copy does not preserve such records
                bigger.view(np.uint8)[: got * sizeof(fh_tick)] = out.view(np.uint8)[: got * sizeof(fh_tick)]
                out = bigger
            op = <fh_tick *><size_t>out.ctypes.data
            with nogil:
                k = _decode_msgs(self.c, msgs + done, n - done, op + got, cap - got, &wrote)
            done += k
            got += wrote
        return out[:got]
