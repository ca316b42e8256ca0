"""FIX 4.2 / 4.4 over reassembled TCP: session sequencing, market data ticks and order events.

Pipeline per connection direction (a ``framing.tcp.TcpStream``):

1. framing and validation by the gateway's native parser (``protocols.fix.split``: BeginString,
   BodyLength, CheckSum; garbled bytes, bad BodyLength and bad CheckSum are counted by reason), once
   per contiguous piece of the stream (a TCP hole ends a piece; framing rescans for ``8=`` after it);
2. one ``nogil`` pass over every valid message (``_scan``) that walks the tag=value fields and keeps
   the session and order fields (34, 43, 97, 123, 36, 52, 60, 11, 41, 37, 150, 39, 54, 38, 44, 31,
   32, 151, 55, 434) and, for W/X, the NoMDEntries(268) entries. Which tags belong to a repeating group
   (and the group's delimiter) comes from the FIX42/FIX44 data dictionaries when they are available
   (``dictionary_dir`` or ``$FH_FIX_SPEC_DIR`` or ``../shared/data/fix/spec``), else from the same
   values built in (a test checks they agree with the dictionaries);
3. session sequencing per direction: MsgSeqNum gaps (an ``fh_gap`` record, FH_GAP_OPENED), PossDup
   resends that fill a gap (counted; FH_GAP_FILLED when the whole range arrived), duplicates without
   PossDup (counted), SequenceReset (4) GapFill / Reset and Logon with ResetSeqNumFlag;
4. market data: W (snapshot) and X (incremental) entries of type 0/1 become ``fh_mbo`` ticks when
   they carry MDEntryID (278), else ``fh_mbp_update`` ticks (level from MDPriceLevel 1023 or
   MDEntryPositionNo 290); type 2 (trade) becomes ``fh_trade``. Instruments map through a native
   symbol table: a given mapping first; then the session's own reference data, SecurityList (35=y,
   NoRelatedSym) and SecurityDefinition (35=d): Symbol (55) -> SecurityID (48) when numeric, fits
   uint32 and is free, else an assigned id; each such symbol gets one ``fh_instrument_def`` record
   placed ahead of the connection's records (the reference messages of a batch are read before its
   records are made, so a definition arriving late still names every record of its symbol);
   otherwise ids from 1 in order of first appearance;
5. orders: D/F/G from the client and 8/9 from the exchange become ``fh_order_event`` records with
   lifecycles keyed by ClOrdID (OrigClOrdID links cancel / replace chains) and order->ack latency.

Every message is also counted by MsgType (``msg_type_counts()``, ``stats["fix"]["by_msg_type"]``).

Prices are int64 1e-9 units parsed from the decimal text (never through float); quantities are
integers (a fractional part is truncated and counted). Times: SendingTime / TransactTime parsed to
ns since the epoch.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t, int32_t, UINT32_MAX
from libc.stdlib cimport malloc, free, calloc
from libc.string cimport memset, memcpy, memcmp
from feedhandler.includes.record cimport (fh_tick, fh_order_event, fh_mbo, fh_trade, fh_mbp_update, fh_gap,
                                          fh_instrument_def, FH_RTYPE_INSTRUMENT_DEF, FH_RTYPE_ORDER_EVENT, FH_RTYPE_MBO, FH_RTYPE_TRADE,
                                          FH_RTYPE_MBP_UPDATE, FH_RTYPE_GAP, FH_OWN_LENGTH,
                                          FH_DBN_MBO_LENGTH, FH_DBN_TRADE_LENGTH, FH_UNDEF_PRICE,
                                          FH_UNDEF_TIMESTAMP, FH_OE_PROTO_FIX42, FH_OE_PROTO_FIX44,
                                          FH_OE_F_FROM_EXCHANGE, FH_OE_F_POSS_DUP, FH_OE_F_UNKNOWN_ORDER,
                                          FH_OE_F_LATENCY, FH_OE_F_AFTER_GAP, FH_F_SNAPSHOT, FH_F_MBP,
                                          FH_F_LAST, FH_GAP_OPENED, FH_GAP_FILLED)
from feedhandler.framing.tcp cimport TcpStream

import os
from pathlib import Path

import numpy as np

from feedhandler.protocols import fix as _fix

# ---- constants ----------------------------------------------------------------------------------
cdef enum:
    MAXTAG = 8192               # tags >= this are never group members here (user-defined range)
    MAXTAG_BYTES = 1024         # MAXTAG / 8
    MAX_ENTRIES = 256           # NoMDEntries entries decoded per message; more are counted, skipped
    SYM_CAP = 1 << 14           # symbol table slots (power of two); full table -> instrument 0
    SYM_LEN = 24                # bytes of a symbol kept (longer ones are truncated and counted)

# message kinds (index into the group bitmaps)
cdef enum:
    K_OTHER = 0
    K_D = 1
    K_F = 2
    K_G = 3
    K_8 = 4
    K_9 = 5
    K_W = 6
    K_X = 7
    K_SEQRESET = 8
    K_LOGON = 9
    K_N = 10
KIND_TYPES = ("", "D", "F", "G", "8", "9", "W", "X", "4", "A")

# NoMDEntries delimiters and entry tags as the FIX 4.2 and 4.4 dictionaries define them
BUILTIN_MD = {
    "FIX.4.2": {"W": 269, "X": 279},
    "FIX.4.4": {"W": 269, "X": 279},
}

cdef struct span_t:
    int64_t off                 # offset in the stream (streams may exceed 2 GiB)
    int32_t len

cdef struct entry_t:
    char action                 # 279: '0' new '1' change '2' delete (0 when absent)
    char type                   # 269
    int64_t px                  # 270, FH_UNDEF_PRICE when absent
    int64_t size                # 271
    int32_t level               # 1023 or 290 (0 absent)
    span_t id                   # 278
    span_t sym                  # 55 inside the entry (X)
    uint64_t ts                 # 273 MDEntryTime is time-only: not used; 60 in entry (4.4): ns

cdef struct fmsg_t:
    uint8_t kind
    uint8_t version             # 2: FIX.4.2, 4: FIX.4.4, 0 other
    uint8_t possdup
    uint8_t gapfill
    uint8_t reset
    char exectype
    char ordstatus
    char side
    char msgtype[2]
    uint64_t seq
    uint64_t newseqno
    uint64_t sending_time
    uint64_t transact_time
    span_t clordid, origclordid, orderid, symbol
    int64_t qty, price, lastpx, lastqty, leaves, cumqty
    uint8_t has_leaves
    uint8_t frac_qty            # a quantity had a fractional part (truncated)
    int32_t n_entries           # W/X
    int32_t first_entry         # index into the entry array
    int32_t bad_field           # a malformed field or number was seen


cdef inline int64_t _parse_int(const uint8_t *p, int32_t n, int *ok) noexcept nogil:
    cdef int32_t i = 0
    cdef int64_t v = 0
    cdef int neg = 0
    if n > 0 and p[0] == 45:
        neg = 1
        i = 1
    if i >= n or n - i > 18:
        ok[0] = 0
        return 0
    while i < n:
        if p[i] < 48 or p[i] > 57:
            ok[0] = 0
            return 0
        v = v * 10 + (p[i] - 48)
        i += 1
    return -v if neg else v


cdef inline int64_t _parse_px(const uint8_t *p, int32_t n, int *ok) noexcept nogil:
    """Decimal text -> 1e-9 fixed point (digits past the 9th decimal are truncated)."""
    cdef int32_t i = 0, nd = 0, fd = 0
    cdef int64_t ip = 0, fp = 0
    cdef int neg = 0, dot = 0
    if n > 0 and (p[0] == 45 or p[0] == 43):
        neg = p[0] == 45
        i = 1
    if i >= n:
        ok[0] = 0
        return FH_UNDEF_PRICE
    while i < n:
        if p[i] == 46 and not dot:
            dot = 1
        elif 48 <= p[i] <= 57:
            if dot:
                if fd < 9:
                    fp = fp * 10 + (p[i] - 48)
                    fd += 1
            else:
                nd += 1
                if nd > 9:                      # > 999,999,999.x does not fit int64 at 1e-9
                    ok[0] = 0
                    return FH_UNDEF_PRICE
                ip = ip * 10 + (p[i] - 48)
        else:
            ok[0] = 0
            return FH_UNDEF_PRICE
        i += 1
    while fd < 9:
        fp *= 10
        fd += 1
    ip = ip * 1000000000 + fp
    return -ip if neg else ip


cdef inline int64_t _parse_qty(const uint8_t *p, int32_t n, int *ok, uint8_t *frac) noexcept nogil:
    cdef int32_t i
    for i in range(n):
        if p[i] == 46:
            for j in range(i + 1, n):
                if p[j] != 48:
                    frac[0] = 1
            return _parse_int(p, i, ok)
    return _parse_int(p, n, ok)


cdef inline int64_t _days_from_civil(int64_t y, int64_t m, int64_t d) noexcept nogil:
    y -= m <= 2
    cdef int64_t era = (y if y >= 0 else y - 399) // 400
    cdef int64_t yoe = y - era * 400
    cdef int64_t doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    cdef int64_t doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


cdef uint64_t _parse_ts(const uint8_t *p, int32_t n) noexcept nogil:
    """UTCTimestamp YYYYMMDD-HH:MM:SS[.f{1,9}] -> ns since the epoch; 0 when malformed."""
    cdef int32_t i
    cdef int64_t y, mo, d, h, mi, s, frac = 0, fd = 0
    if n < 17 or p[8] != 45 or p[11] != 58 or p[14] != 58:
        return 0
    for i in range(17):
        if i != 8 and i != 11 and i != 14 and not (48 <= p[i] <= 57):
            return 0
    y = (p[0] - 48) * 1000 + (p[1] - 48) * 100 + (p[2] - 48) * 10 + (p[3] - 48)
    mo = (p[4] - 48) * 10 + (p[5] - 48)
    d = (p[6] - 48) * 10 + (p[7] - 48)
    h = (p[9] - 48) * 10 + (p[10] - 48)
    mi = (p[12] - 48) * 10 + (p[13] - 48)
    s = (p[15] - 48) * 10 + (p[16] - 48)
    if mo < 1 or mo > 12 or d < 1 or d > 31 or h > 23 or mi > 59 or s > 60:
        return 0
    if n > 17:
        if p[17] != 46 or n == 18 or n > 27:
            return 0
        for i in range(18, n):
            if not (48 <= p[i] <= 57):
                return 0
            frac = frac * 10 + (p[i] - 48)
            fd += 1
        while fd < 9:
            frac *= 10
            fd += 1
    return <uint64_t> ((_days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s) * 1000000000 + frac)


cdef inline uint64_t _fnv64(const uint8_t *p, Py_ssize_t n) noexcept nogil:
    cdef uint64_t h = 14695981039346656037ULL
    cdef Py_ssize_t i
    for i in range(n):
        h = (h ^ p[i]) * 1099511628211ULL
    return h


# ---- native symbol table (open addressing; one per FixStreamDecoder) ----------------------------
cdef struct symslot_t:
    uint32_t id                 # 0: empty
    uint8_t len
    char sym[SYM_LEN]


cdef uint32_t _sym_lookup(symslot_t *tab, uint32_t *next_id, uint32_t *used, const uint8_t *p, int32_t n,
                          int assign, uint64_t *truncated) noexcept nogil:
    """Instrument id of a symbol (0: unknown / table full). ``next_id`` generates new ids (reference
    data may have moved it past large SecurityIDs); ``used`` counts occupied slots (capacity)."""
    cdef uint64_t h
    cdef uint32_t i, probes = 0
    if n <= 0:
        return 0
    if n > SYM_LEN:
        truncated[0] += 1
        n = SYM_LEN
    h = _fnv64(p, n)
    i = <uint32_t> (h & (SYM_CAP - 1))
    while probes < SYM_CAP:
        if tab[i].id == 0:
            if not assign or used[0] >= SYM_CAP - 1 or next_id[0] == UINT32_MAX:
                return 0
            tab[i].id = next_id[0]
            next_id[0] += 1
            used[0] += 1
            tab[i].len = <uint8_t> n
            memcpy(tab[i].sym, p, n)
            return tab[i].id
        if tab[i].len == n and memcmp(tab[i].sym, p, n) == 0:
            return tab[i].id
        i = (i + 1) & (SYM_CAP - 1)
        probes += 1
    return 0


# ---- field scan (nogil) -------------------------------------------------------------------------
cdef struct grp_t:
    uint8_t member[K_N][MAXTAG_BYTES]     # bit set: tag is a repeating-group member in that message kind
    int32_t md_delim[K_N]                # NoMDEntries delimiter (W, X)


cdef inline int _is_member(const grp_t *g, int kind, int64_t tag) noexcept nogil:
    if tag < 0 or tag >= MAXTAG:
        return 0
    return (g.member[kind][tag >> 3] >> (tag & 7)) & 1


cdef int _kind(const uint8_t *v, int32_t n) noexcept nogil:
    if n != 1:
        return K_OTHER
    if v[0] == 68: return K_D
    if v[0] == 70: return K_F
    if v[0] == 71: return K_G
    if v[0] == 56: return K_8
    if v[0] == 57: return K_9
    if v[0] == 87: return K_W
    if v[0] == 88: return K_X
    if v[0] == 52: return K_SEQRESET
    if v[0] == 65: return K_LOGON
    return K_OTHER


cdef void _scan(const uint8_t *buf, int64_t start, int64_t end, const grp_t *g42, const grp_t *g44,
                fmsg_t *m, entry_t *ents, int32_t *n_ents, int32_t ents_cap, uint64_t *entries_dropped) noexcept nogil:
    """Walk the fields of one validated message buf[start:end] into *m (and W/X entries into ents)."""
    cdef int64_t i = start, ts, vs
    cdef int32_t vn
    cdef int64_t tag
    cdef const uint8_t *v
    cdef int ok = 1
    cdef const grp_t *g = g44
    cdef int kind = K_OTHER
    cdef entry_t *e = NULL
    cdef int in_group = 0
    cdef int32_t delim = 0
    memset(m, 0, sizeof(fmsg_t))
    m.price = m.lastpx = FH_UNDEF_PRICE
    m.side = 0
    m.first_entry = n_ents[0]
    while i < end:
        ts = i
        tag = 0
        while i < end and 48 <= buf[i] <= 57 and i - ts < 9:
            tag = tag * 10 + (buf[i] - 48)
            i += 1
        if i >= end or buf[i] != 61 or i == ts:
            m.bad_field = 1
            return
        i += 1
        vs = i
        while i < end and buf[i] != 1:
            i += 1
        vn = <int32_t> (i - vs) if i - vs < 0x7FFFFFFF else 0x7FFFFFFF
        v = buf + vs
        i += 1
        if tag == 8:
            if vn == 7 and memcmp(v, b"FIX.4.2", 7) == 0:
                m.version = 2
                g = g42
            elif vn == 7 and memcmp(v, b"FIX.4.4", 7) == 0:
                m.version = 4
            continue
        if tag == 35:
            kind = _kind(v, vn)
            m.kind = <uint8_t> kind
            m.msgtype[0] = <char> v[0] if vn > 0 else 0
            m.msgtype[1] = <char> v[1] if vn > 1 else 0
            delim = g.md_delim[kind]
            continue
        if kind == K_W or kind == K_X:
            if tag == 268:
                in_group = 1
                continue
            if in_group and _is_member(g, kind, tag):
                if tag == delim:
                    if n_ents[0] >= ents_cap or m.n_entries >= MAX_ENTRIES:
                        entries_dropped[0] += 1
                        e = NULL
                    else:
                        e = &ents[n_ents[0]]
                        memset(e, 0, sizeof(entry_t))
                        e.px = FH_UNDEF_PRICE
                        e.id.off = -1
                        e.sym.off = -1
                        n_ents[0] += 1
                        m.n_entries += 1
                if e == NULL:
                    continue
                if tag == 279:
                    e.action = <char> v[0] if vn else 0
                elif tag == 269:
                    e.type = <char> v[0] if vn else 0
                elif tag == 270:
                    e.px = _parse_px(v, vn, &ok)
                elif tag == 271:
                    e.size = _parse_qty(v, vn, &ok, &m.frac_qty)
                elif tag == 1023 or (tag == 290 and e.level == 0):
                    e.level = <int32_t> _parse_int(v, vn, &ok)
                elif tag == 278:
                    e.id.off = vs
                    e.id.len = vn
                elif tag == 55:
                    e.sym.off = vs
                    e.sym.len = vn
                continue
        elif _is_member(g, kind, tag):
            continue                        # a repeating-group field of D/F/G/8/9: not an order field
        if tag == 34:
            m.seq = <uint64_t> _parse_int(v, vn, &ok)
        elif tag == 43:
            m.possdup = vn == 1 and v[0] == 89
        elif tag == 123:
            m.gapfill = vn == 1 and v[0] == 89
        elif tag == 141:
            m.reset = vn == 1 and v[0] == 89
        elif tag == 36:
            m.newseqno = <uint64_t> _parse_int(v, vn, &ok)
        elif tag == 52:
            m.sending_time = _parse_ts(v, vn)
        elif tag == 60:
            m.transact_time = _parse_ts(v, vn)
        elif tag == 11:
            m.clordid.off = vs; m.clordid.len = vn
        elif tag == 41:
            m.origclordid.off = vs; m.origclordid.len = vn
        elif tag == 37:
            m.orderid.off = vs; m.orderid.len = vn
        elif tag == 55:
            m.symbol.off = vs; m.symbol.len = vn
        elif tag == 150:
            m.exectype = <char> v[0] if vn else 0
        elif tag == 39:
            m.ordstatus = <char> v[0] if vn else 0
        elif tag == 54:
            m.side = <char> v[0] if vn else 0
        elif tag == 38:
            m.qty = _parse_qty(v, vn, &ok, &m.frac_qty)
        elif tag == 44:
            m.price = _parse_px(v, vn, &ok)
        elif tag == 31:
            m.lastpx = _parse_px(v, vn, &ok)
        elif tag == 32:
            m.lastqty = _parse_qty(v, vn, &ok, &m.frac_qty)
        elif tag == 151:
            m.leaves = _parse_qty(v, vn, &ok, &m.frac_qty)
            m.has_leaves = 1
        elif tag == 14:
            m.cumqty = _parse_qty(v, vn, &ok, &m.frac_qty)
    if not ok:
        m.bad_field = 1


def _spec_dir(dictionary_dir=None):
    cands = [dictionary_dir, os.environ.get("FH_FIX_SPEC_DIR"),
             Path(__file__).resolve().parents[3].parent / "shared" / "data" / "fix" / "spec"]
    for c in cands:
        if c and (Path(c) / "FIX44.xml").is_file():
            return Path(c)
    return None


_GROUP_CACHE = {}


def group_tables(dictionary_dir=None, builtin=False):
    """{begin_string: {msgtype: (member tags, NoMDEntries delimiter or None)}} from the dictionaries.

    Falls back to the built-in NoMDEntries definitions (no other group members) when no dictionary
    directory is found or ``builtin`` is true; the second value says which was used ("dictionary" /
    "builtin"). Dictionaries are parsed once per directory.
    """
    d = None if builtin else _spec_dir(dictionary_dir)
    if d is not None and str(d) in _GROUP_CACHE:
        return _GROUP_CACHE[str(d)], "dictionary"
    out = {}
    if d is None:
        for bs, md in BUILTIN_MD.items():
            out[bs] = {}
            for t in KIND_TYPES[1:]:
                mem = set()
                if t in md:
                    mem = {md[t], 269, 270, 271, 272, 273, 278, 279, 280, 290, 1023, 55, 48, 22, 346}
                out[bs][t] = (mem, md.get(t))
        return out, "builtin"
    from feedhandler.protocols.fix_dictionary import FixDictionary
    for bs, fname in (("FIX.4.2", "FIX42.xml"), ("FIX.4.4", "FIX44.xml")):
        fd = FixDictionary.load(d / fname)
        out[bs] = {}
        for t in KIND_TYPES[1:]:
            md = fd.messages.get(t)
            if md is None:
                out[bs][t] = (set(), None)
                continue
            mem = set()
            stack = list(md.groups.values())
            while stack:
                gd = stack.pop()
                mem.update(gd.fields)
                mem.add(gd.delimiter)
                stack.extend(gd.groups.values())
            mem -= {268} if t in ("W", "X") else set()
            top = set(md.fields) - mem
            delim = md.groups[268].delimiter if 268 in md.groups else None
            out[bs][t] = (mem - top if t not in ("W", "X") else mem, delim)
    _GROUP_CACHE[str(d)] = out
    return out, "dictionary"


# exec types -> order events (FIX 4.2 and 4.4 share these values; 4.2 fills are ExecType 1/2)
_EXEC_EVENT = {ord("0"): ord("A"), ord("1"): ord("E"), ord("2"): ord("E"), ord("F"): ord("E"),
               ord("4"): ord("C"), ord("3"): ord("C"), ord("C"): ord("C"), ord("5"): ord("R"),
               ord("8"): ord("J"), ord("H"): ord("B"), ord("D"): ord("S"), ord("6"): ord("O"),
               ord("E"): ord("O"), ord("A"): ord("O"), ord("I"): ord("S"), ord("7"): ord("O"),
               ord("9"): ord("O"), ord("B"): ord("O"), ord("G"): ord("E")}


cdef inline char _fix_side(char s) noexcept nogil:
    if s == 49:                 # '1' buy
        return 66
    if s == 50 or s == 53 or s == 54:   # '2' sell, '5' sell short, '6' sell short exempt
        return 65
    return 78


_EMIT_COUNTERS = ('messages', 'bad_field', 'frac_qty', 'no_seq', 'seq_resets', 'seq_gaps', 'seq_gap_messages', 'possdup', 'possdup_filled', 'duplicates', 'md_entries', 'mbo', 'mbp', 'trades', 'md_other_entries', 'other_messages', 'unknown_order', 'order_events', 'md_clears')


cdef class FixStreamDecoder:
    """FIX sessions of a capture -> ticks (MBO / MBP / trades), order events and gap records."""
    cdef grp_t *g42
    cdef grp_t *g44
    cdef symslot_t *syms
    cdef uint32_t next_sym
    cdef uint32_t n_syms                # occupied symbol table slots
    cdef uint64_t *mt_counts            # messages per MsgType: [c0 & 127][c1 & 127] (c1 0: one-char type)
    cdef public dict reference          # symbol -> reference data seen in the stream (35=d / 35=y)
    cdef uint64_t sym_truncated
    cdef uint64_t entries_dropped
    cdef public dict stats
    cdef public dict orders
    cdef public str groups_source
    cdef dict given_symbols
    cdef dict _seq_state                # conn -> session sequencing state (see _emit)
    cdef public Py_ssize_t term_cap     # live: orders kept after a terminal event (0: every order, replay)
    cdef public uint64_t term_seq       # terminal events so far (an order's state holds the number of its own)
    cdef public uint64_t term_evicted   # entries dropped from ``orders`` (see sweep_terminal)
    cdef Py_ssize_t term_sweep_at

    def __cinit__(self):
        self.g42 = <grp_t *> calloc(1, sizeof(grp_t))
        self.g44 = <grp_t *> calloc(1, sizeof(grp_t))
        self.syms = <symslot_t *> calloc(SYM_CAP, sizeof(symslot_t))
        self.mt_counts = <uint64_t *> calloc(128 * 128, sizeof(uint64_t))
        if self.g42 == NULL or self.g44 == NULL or self.syms == NULL or self.mt_counts == NULL:
            raise MemoryError()
        self.next_sym = 1
        self.n_syms = 0

    def __dealloc__(self):
        free(self.g42)
        free(self.g44)
        free(self.syms)
        free(self.mt_counts)

    def __init__(self, dictionary_dir=None, symbols=None, builtin_groups=False):
        tables, self.groups_source = group_tables(dictionary_dir, builtin_groups)
        cdef grp_t *g
        for bs, g_ptr in (("FIX.4.2", 0), ("FIX.4.4", 1)):
            g = self.g42 if g_ptr == 0 else self.g44
            for kind in range(1, K_N):
                mem, delim = tables[bs][KIND_TYPES[kind]]
                for t in mem:
                    if 0 <= t < MAXTAG:
                        g.member[kind][t >> 3] |= 1 << (t & 7)
                g.md_delim[kind] = delim or 0
        self.given_symbols = None
        if symbols:
            # pre-load the table with the given ids: insert in id order so lookups return them
            self.given_symbols = dict(symbols)
            for s, iid in sorted(symbols.items(), key=lambda kv: kv[1]):
                self._preload(s.encode() if isinstance(s, str) else bytes(s), iid)
        self.orders = {}
        self._seq_state = {}
        self.term_cap = 0
        self.term_seq = self.term_evicted = 0
        self.term_sweep_at = 0
        self.reference = {}
        self.stats = {k: 0 for k in ("messages", "bad_field", "garbled", "bad_body_length", "bad_checksum",
                                     "truncated_tail", "holes", "seq_gaps", "seq_gap_messages", "possdup",
                                     "possdup_filled", "duplicates", "seq_resets", "md_entries", "mbo", "mbp",
                                     "trades", "md_other_entries", "md_clears", "order_events", "unknown_order",
                                     "frac_qty", "other_messages", "entries_dropped", "symbols_truncated",
                                     "no_seq", "ref_messages", "ref_symbols", "ref_redefined",
                                     "ref_nonnumeric_ids", "ref_id_collisions", "ref_premapped")}

    cdef _preload(self, bytes s, uint32_t iid):
        cdef int32_t n = min(len(s), SYM_LEN)
        if self.n_syms >= SYM_CAP - 1:
            raise OverflowError(f"FIX symbol table full ({SYM_CAP - 1} symbols)")
        cdef uint64_t h = _fnv64(<const uint8_t *> s, n)
        cdef uint32_t i = <uint32_t> (h & (SYM_CAP - 1))
        while self.syms[i].id != 0:
            i = (i + 1) & (SYM_CAP - 1)
        self.syms[i].id = iid
        self.syms[i].len = <uint8_t> n
        memcpy(self.syms[i].sym, <const char *> s, n)
        self.n_syms += 1
        if iid >= self.next_sym:
            self.next_sym = iid + 1 if iid < 0xFFFFFFFF else iid

    def forget_conn(self, int conn):
        """(FixLiveDecoder) Connection ``conn`` is closed and decoded: drop its sequencing state (its
        orders are dropped by the caller, see ``FixLiveDecoder``)."""
        self._seq_state.pop(conn, None)

    def msg_type_counts(self):
        """{MsgType: messages} over everything decoded so far (two-character types kept whole;
        longer ones are counted under their first two characters; "?" when 35 was missing)."""
        cdef Py_ssize_t i
        out = {}
        for i in range(128 * 128):
            if self.mt_counts[i]:
                c0, c1 = i >> 7, i & 127
                key = "?" if c0 == 0 else (chr(c0) + (chr(c1) if c1 else ""))
                out[key] = out.get(key, 0) + int(self.mt_counts[i])
        return dict(sorted(out.items()))

    def _apply_reference(self, refs, live=False):
        """Map the symbols of reference data messages to instrument ids; returns [(iid, symbol, ts)]
        of the symbols defined for the first time (one fh_instrument_def record each).

        refs: [(symbol, security_id, security_id_source, sending_time_ns, msg_type)] in stream order.
        A symbol already in the table (caller's map, or seen earlier on another connection) keeps its
        id. Otherwise a numeric SecurityID that fits uint32 and is not taken becomes the id; the other
        symbols get ids from the table's generator, in reference data order, after every numeric id.
        ``live``: a symbol that already had an id from its first appearance (records were made before
        its reference data arrived) keeps it and is counted in ``stats["ref_after_use"]``.
        """
        existing = {}
        cdef uint32_t i
        for i in range(SYM_CAP):
            if self.syms[i].id:
                existing[bytes(self.syms[i].sym[:self.syms[i].len])] = self.syms[i].id
        used = set(existing.values())
        first = {}
        for sym, secid, src, ts, mt in refs:
            key = sym[:SYM_LEN]
            if key.decode("ascii", "replace") in self.reference or key in first:
                self.stats["ref_redefined"] += 1
                continue
            first[key] = (sym, secid, src, ts, mt)
        ids = {}
        later = []
        for key, (sym, secid, src, ts, mt) in first.items():
            if key in existing:
                ids[key] = existing[key]
                self.stats["ref_premapped"] += 1
                if live and (self.given_symbols is None
                             or (key not in self.given_symbols
                                 and key.decode("ascii", "replace") not in self.given_symbols)):
                    self.stats["ref_after_use"] = self.stats.get("ref_after_use", 0) + 1
                continue
            v = int(secid) if secid.isdigit() and len(secid) <= 10 else 0
            if 0 < v < 0xFFFFFFFF and v not in used:
                ids[key] = v
                used.add(v)
                self._preload(key, v)
            else:
                if 0 < v < 0xFFFFFFFF:
                    self.stats["ref_id_collisions"] += 1        # the id is taken by another symbol
                else:
                    self.stats["ref_nonnumeric_ids"] += 1       # not numeric, 0, or wider than uint32
                later.append(key)
        for key in later:
            while self.next_sym in used:
                self.next_sym += 1
            v = self.next_sym
            ids[key] = v
            used.add(v)
            self._preload(key, v)
        defs = []
        for key, (sym, secid, src, ts, mt) in first.items():
            self.reference[key.decode("ascii", "replace")] = {
                "instrument_id": int(ids[key]), "security_id": secid.decode("ascii", "replace"),
                "security_id_source": src.decode("ascii", "replace"), "msg_type": mt}
            defs.append((ids[key], key, ts))
        self.stats["ref_symbols"] += len(defs)
        return defs

    def symbol_map(self):
        cdef uint32_t i
        out = {}
        for i in range(SYM_CAP):
            if self.syms[i].id:
                out[self.syms[i].sym[:self.syms[i].len].decode("ascii", "replace")] = self.syms[i].id
        return out

    def frame_stream(self, TcpStream s):
        """[(start, end)] of the valid messages of one stream (framing reasons counted)."""
        out = []
        data = s.data
        rows_buf = np.empty((min(max(16, len(data) // 40 + 16), 1 << 20), 3), dtype=np.int64)   # rows per split call
        for start, end in s.pieces():
            if start > 0:
                self.stats["holes"] += 1
            mv = memoryview(data)[start:end]
            pos = 0
            while True:
                k, consumed = _fix.split(mv[pos:], rows_buf, True)
                rows = rows_buf[:k]
                sts = rows[:, 0]
                ok = rows[sts == 0]
                if len(ok):
                    out.append(ok[:, 1:3] + (start + pos))
                self.stats["garbled"] += int(np.count_nonzero(sts == 2))
                self.stats["bad_body_length"] += int(np.count_nonzero(sts == 3))
                self.stats["bad_checksum"] += int(np.count_nonzero(sts == 4))
                pos += consumed
                if k < rows_buf.shape[0] or consumed == 0:
                    break
            if pos < end - start and bytes(mv[pos:]).strip(b"\0 \r\n"):
                self.stats["truncated_tail"] += 1
        if not out:
            return np.zeros((0, 2), dtype=np.int64)
        return np.ascontiguousarray(np.concatenate(out), dtype=np.int64)

    def decode_pair(self, TcpStream client, TcpStream server, int conn=0, out=None):
        """Ticks and order events of one connection; returns a TICK_DTYPE array ordered by ts_recv."""
        from feedhandler import records
        parts = []
        sides = [(client, 0), (server, 1)]
        for s, from_server in sides:
            if s is None:
                continue
            spans = self.frame_stream(s)
            if len(spans) == 0:
                continue
            ts = s.ts_at(spans[:, 1])
            parts.append((s, from_server, spans, ts))
        if not parts:
            return records.empty(0)
        # merge both directions by capture time (stable: a direction keeps its order)
        allrows = []
        for pi, (s, fs, spans, ts) in enumerate(parts):
            allrows.append(np.stack([np.full(len(spans), pi), np.arange(len(spans)), ts.astype(np.int64)], axis=1))
        rows = np.concatenate(allrows)
        order = np.lexsort((rows[:, 1], rows[:, 0], rows[:, 2]))
        rows = rows[order]
        return self._decode_rows(parts, rows, conn)

    def decode_live_rows(self, list parts, rows, int conn):
        """(FixLiveDecoder) Records of the messages ``rows`` (part, span, ts_recv) in row order, with
        the live reference data rule; sequencing state carries over between calls per ``conn``."""
        recs = self._decode_rows(parts, rows, conn, True)
        if self.term_cap:
            self.sweep_terminal()
        return recs

    cdef object _decode_rows(self, list parts, object rows, int conn, bint live=False):
        """Records of the messages ``rows`` (part index, span index, ts_recv) of one connection, in
        row order. Whole capture (``live`` false): every reference data message of the rows is applied
        before any record is made and the definitions come first. Live: reference data applies from
        its message on (records before it keep what was known), its definitions are placed right
        after it."""
        from feedhandler import records
        cdef Py_ssize_t n = len(rows), i, k = 0, cap, ne = 0, a
        cdef fmsg_t *msgs = <fmsg_t *> malloc(max(n, 1) * sizeof(fmsg_t))
        cdef int32_t ents_cap = 0
        cdef entry_t *ents = NULL
        cdef const uint8_t[::1] mv
        cdef int64_t[:, ::1] r = np.ascontiguousarray(rows, dtype=np.int64)
        cdef int64_t[:, ::1] sp
        cdef int32_t n_ents = 0
        cdef fmsg_t *m
        if live:
            # a bound from the messages' own bytes (the streams hold the whole session)
            total_bytes = sum(int(np.sum(p[2][:, 1] - p[2][:, 0])) for p in parts)
        else:
            total_bytes = sum(len(p[0].data) for p in parts)
        ents_cap = <int32_t> min(total_bytes // 6 + 16, 1 << 26)   # an entry takes >= 6 bytes ("269=0|")
        ents = <entry_t *> malloc(ents_cap * sizeof(entry_t))
        if msgs == NULL or ents == NULL:
            free(msgs); free(ents)
            raise MemoryError()
        try:
            # 1. native scan, one pass per part (a direction; live: the messages one packet completed)
            for pi in range(len(parts)):
                s, fs, spans, ts = parts[pi]
                mv = s.data
                sp = spans
                if mv.shape[0] == 0:
                    continue
                with nogil:
                    for i in range(n):
                        if r[i, 0] == pi:
                            _scan(&mv[0], sp[r[i, 1], 0], sp[r[i, 1], 1], self.g42, self.g44,
                                  &msgs[i], ents, &n_ents, ents_cap, &self.entries_dropped)
            # 2. per-MsgType counts and reference data (35=d SecurityDefinition, 35=y SecurityList)
            refs = []
            ref_at = []                 # live: (message index, its reference entries)
            for i in range(n):
                m = &msgs[i]
                self.mt_counts[(m.msgtype[0] & 127) * 128 + (m.msgtype[1] & 127)] += 1
                if (m.msgtype[0] == 100 or m.msgtype[0] == 121) and m.msgtype[1] == 0 and not m.bad_field:
                    s, fs, spans, ts = parts[r[i, 0]]
                    sp = spans
                    e_ = _ref_entries(bytes(s.data[sp[r[i, 1], 0]:sp[r[i, 1], 1]]),
                                      m.msgtype[0] == 121, m.sending_time)
                    refs.extend(e_)
                    ref_at.append((i, e_))
                    self.stats["ref_messages"] += 1
            seqst = self._seq_state.get(conn)
            if seqst is None:
                seqst = self._seq_state[conn] = [[0, 0], [set(), set()]]
            if not live:
                defs = self._apply_reference(refs) if refs else []
                # 3. instrument definitions first (before any record that uses them), then session + md +
                #    orders (records)
                cap = 2 * n + n_ents + 16 + len(defs)
                out = records.empty(cap)
                k = _write_defs(out, defs)
                k = self._emit(parts, r, msgs, ents, 0, n, out, conn, k, seqst)
            else:
                cap = 2 * n + n_ents + 16 + len(refs)
                out = records.empty(cap)
                a = 0
                for i, e_ in ref_at:
                    k = self._emit(parts, r, msgs, ents, a, i + 1, out, conn, k, seqst)
                    defs = self._apply_reference(e_, True) if e_ else []
                    k += _write_defs(out[k:], defs)
                    a = i + 1
                k = self._emit(parts, r, msgs, ents, a, n, out, conn, k, seqst)
        finally:
            free(msgs)
            free(ents)
        self.stats["entries_dropped"] = self.entries_dropped
        self.stats["symbols_truncated"] = self.sym_truncated
        return out[:k]

    cdef Py_ssize_t _emit(self, list parts, int64_t[:, ::1] r, fmsg_t *msgs, entry_t *ents, Py_ssize_t i0,
                          Py_ssize_t i1, object out, int conn, Py_ssize_t k0, list seqst) except -1:
        """Records of the scanned messages i0..i1-1 into out[k0:]; returns the index after the last one.
        ``seqst`` = [[next expected MsgSeqNum per direction (0: unknown)], [open gap MsgSeqNums per
        direction]], the connection's session sequencing state (kept between calls)."""
        cdef uint8_t[::1] raw = out.view(np.uint8)
        cdef Py_ssize_t i, j, k = k0
        cdef fmsg_t *m
        cdef entry_t *e
        cdef fh_tick *t
        cdef fh_order_event *oe
        cdef uint64_t ts_recv, expected, lat
        cdef const uint8_t *base
        cdef const uint8_t[::1] mv
        cdef int pi, fs
        cdef uint32_t iid
        cdef char side
        cdef list st
        cdef uint64_t cnt[19]                        # counters, named by _EMIT_COUNTERS
        cdef uint64_t expct[2]                       # next expected MsgSeqNum per direction (0: unknown)
        cdef int assign = self.given_symbols is None
        cdef int32_t pos_b = 0, pos_a = 0
        memset(cnt, 0, sizeof(cnt))
        expct[0] = seqst[0][0]
        expct[1] = seqst[0][1]
        missing = seqst[1]                           # MsgSeqNums of open gaps per direction
        if i1 <= i0:
            return k0
        bufs = []
        cdef size_t[::1] ptrs = np.zeros(len(parts), dtype=np.uintp)
        cdef int32_t[::1] fsv = np.zeros(len(parts), dtype=np.int32)
        for pi in range(len(parts)):
            mv = parts[pi][0].data
            bufs.append(mv)
            ptrs[pi] = <size_t> &mv[0] if mv.shape[0] else 0
            fsv[pi] = parts[pi][1]
        try:
            k = self._emit_loop(r, msgs, ents, i0, i1, raw, conn, k, ptrs, fsv, expct, missing, cnt, assign)
        finally:
            seqst[0][0] = expct[0]
            seqst[0][1] = expct[1]
        for j in range(19):
            self.stats[_EMIT_COUNTERS[j]] += cnt[j]
        return k

    cdef Py_ssize_t _emit_loop(self, int64_t[:, ::1] r, fmsg_t *msgs, entry_t *ents, Py_ssize_t i0,
                               Py_ssize_t i1, uint8_t[::1] raw, int conn, Py_ssize_t k, size_t[::1] ptrs,
                               int32_t[::1] fsv, uint64_t *expct, list missing, uint64_t *cnt,
                               int assign) except -1:
        cdef Py_ssize_t i, j
        cdef fmsg_t *m
        cdef entry_t *e
        cdef fh_tick *t
        cdef fh_order_event *oe
        cdef uint64_t ts_recv, expected, lat
        cdef const uint8_t *base
        cdef int pi, fs
        cdef uint32_t iid
        cdef char side
        cdef list st
        cdef int32_t pos_b = 0, pos_a = 0
        for i in range(i0, i1):
            m = &msgs[i]
            pi = <int> r[i, 0]
            fs = fsv[pi]
            base = <const uint8_t *> ptrs[pi]
            ts_recv = <uint64_t> r[i, 2]
            cnt[0] += 1
            if m.bad_field:
                cnt[1] += 1
                continue
            if m.frac_qty:
                cnt[2] += 1
            # ---- session sequencing ----
            sq1 = missing[fs]
            after_gap = 0
            if m.seq == 0:
                cnt[3] += 1
            elif m.kind == K_SEQRESET and not m.gapfill:
                cnt[4] += 1
                expct[fs] = m.newseqno
                sq1.clear()
            elif m.kind == K_LOGON and m.reset:
                cnt[4] += 1
                expct[fs] = m.seq + 1
                sq1.clear()
            else:
                expected = expct[fs]
                if expected == 0 or m.seq == expected:
                    expct[fs] = m.seq + 1
                elif m.seq > expected:
                    if not m.possdup:
                        cnt[5] += 1
                        cnt[6] += m.seq - expected
                        sq1.update(range(expected, min(m.seq, expected + 1000000)))
                        t = <fh_tick *> &raw[k * 64]
                        memset(t, 0, 64)
                        t.gap.hd.length = FH_OWN_LENGTH
                        t.gap.hd.rtype = FH_RTYPE_GAP
                        t.gap.hd.ts_event = m.sending_time
                        t.gap.ts_recv = ts_recv
                        t.gap.first_missing = expected
                        t.gap.count = m.seq - expected
                        t.gap.channel = conn * 2 + fs
                        t.gap.kind = FH_GAP_OPENED
                        memcpy(t.gap.session, b"FIX       ", 10)
                        k += 1
                        after_gap = 1
                        expct[fs] = m.seq + 1
                    else:
                        expct[fs] = m.seq + 1
                else:
                    if m.possdup:
                        cnt[7] += 1
                        if m.seq in sq1:
                            sq1.discard(m.seq)
                            cnt[8] += 1
                            if not sq1:
                                t = <fh_tick *> &raw[k * 64]
                                memset(t, 0, 64)
                                t.gap.hd.length = FH_OWN_LENGTH
                                t.gap.hd.rtype = FH_RTYPE_GAP
                                t.gap.ts_recv = ts_recv
                                t.gap.first_missing = m.seq
                                t.gap.channel = conn * 2 + fs
                                t.gap.kind = FH_GAP_FILLED
                                memcpy(t.gap.session, b"FIX       ", 10)
                                k += 1
                        else:
                            if m.kind != K_SEQRESET:
                                pass
                    else:
                        cnt[9] += 1
                        continue                    # a duplicate without PossDup is not applied
                if m.kind == K_SEQRESET and m.gapfill and m.newseqno > expct[fs]:
                    expct[fs] = m.newseqno
            if m.possdup and m.seq and m.seq >= expct[fs]:
                cnt[7] += 1
            # ---- market data ----
            if m.kind == K_W or m.kind == K_X:
                iid_msg = 0
                if m.symbol.len > 0:
                    iid_msg = _sym_lookup(self.syms, &self.next_sym, &self.n_syms, base + m.symbol.off, m.symbol.len,
                                          assign, &self.sym_truncated)
                if m.kind == K_W and m.n_entries > 0:
                    # a snapshot replaces the book: a Clear record first (DBN convention)
                    e = &ents[m.first_entry]
                    t = <fh_tick *> &raw[k * 64]
                    memset(t, 0, 64)
                    if e.id.off >= 0:
                        t.mbo.hd.length = FH_DBN_MBO_LENGTH
                        t.mbo.hd.rtype = FH_RTYPE_MBO
                        t.mbo.hd.instrument_id = iid_msg
                        t.mbo.hd.ts_event = m.transact_time or m.sending_time
                        t.mbo.price = FH_UNDEF_PRICE
                        t.mbo.action = 82
                        t.mbo.side = 78
                        t.mbo.flags = FH_F_SNAPSHOT
                        t.mbo.channel_id = <uint8_t> conn
                        t.mbo.ts_recv = ts_recv
                        t.mbo.sequence = <uint32_t> m.seq
                    else:
                        t.mbp_update.hd.length = FH_OWN_LENGTH
                        t.mbp_update.hd.rtype = FH_RTYPE_MBP_UPDATE
                        t.mbp_update.hd.instrument_id = iid_msg
                        t.mbp_update.hd.ts_event = m.transact_time or m.sending_time
                        t.mbp_update.ts_recv = ts_recv
                        t.mbp_update.price = FH_UNDEF_PRICE
                        t.mbp_update.sequence = <uint32_t> m.seq
                        t.mbp_update.action = 82
                        t.mbp_update.side = 78
                        t.mbp_update.flags = FH_F_MBP | FH_F_SNAPSHOT
                        t.mbp_update.channel_id = <uint8_t> conn
                    cnt[18] += 1
                    k += 1
                pos_b = pos_a = 0               # snapshot entries without a level: their order per side
                for j in range(m.first_entry, m.first_entry + m.n_entries):
                    e = &ents[j]
                    cnt[10] += 1
                    if e.sym.off >= 0:
                        iid = _sym_lookup(self.syms, &self.next_sym, &self.n_syms, base + e.sym.off, e.sym.len,
                                          assign, &self.sym_truncated)
                    else:
                        iid = iid_msg
                    if e.type == 48 or e.type == 49:
                        side = 66 if e.type == 48 else 65
                        t = <fh_tick *> &raw[k * 64]
                        memset(t, 0, 64)
                        if e.id.off >= 0:
                            t.mbo.hd.length = FH_DBN_MBO_LENGTH
                            t.mbo.hd.rtype = FH_RTYPE_MBO
                            t.mbo.hd.instrument_id = iid
                            t.mbo.hd.ts_event = m.transact_time or m.sending_time
                            t.mbo.order_id = _fnv64(base + e.id.off, e.id.len)
                            t.mbo.price = e.px
                            t.mbo.size = <uint32_t> (e.size if e.size > 0 else 0)
                            t.mbo.side = side
                            t.mbo.action = (b"A" if m.kind == K_W or e.action == 48 else
                                            (b"M" if e.action == 49 else b"C"))[0]
                            t.mbo.flags = (FH_F_SNAPSHOT if m.kind == K_W else 0) | (
                                FH_F_LAST if j == m.first_entry + m.n_entries - 1 else 0)
                            t.mbo.channel_id = <uint8_t> conn
                            t.mbo.ts_recv = ts_recv
                            t.mbo.sequence = <uint32_t> m.seq
                            cnt[11] += 1
                        else:
                            t.mbp_update.hd.length = FH_OWN_LENGTH
                            t.mbp_update.hd.rtype = FH_RTYPE_MBP_UPDATE
                            t.mbp_update.hd.instrument_id = iid
                            t.mbp_update.hd.ts_event = m.transact_time or m.sending_time
                            t.mbp_update.ts_recv = ts_recv
                            t.mbp_update.price = e.px
                            t.mbp_update.size = <uint32_t> (e.size if e.size > 0 else 0)
                            t.mbp_update.sequence = <uint32_t> m.seq
                            if m.kind == K_W and e.level == 0:
                                if side == 66:
                                    pos_b += 1
                                    e.level = pos_b
                                else:
                                    pos_a += 1
                                    e.level = pos_a
                            t.mbp_update.level = <uint8_t> (e.level if 0 < e.level < 256 else 0)
                            t.mbp_update.action = (b"A" if m.kind == K_W or e.action == 48 else
                                                   (b"M" if e.action == 49 else b"C"))[0]
                            t.mbp_update.side = side
                            t.mbp_update.entry_type = e.type
                            t.mbp_update.flags = FH_F_MBP | (FH_F_SNAPSHOT if m.kind == K_W else 0)
                            t.mbp_update.channel_id = <uint8_t> conn
                            cnt[12] += 1
                        k += 1
                    elif e.type == 50:
                        t = <fh_tick *> &raw[k * 64]
                        memset(t, 0, 64)
                        t.trade.hd.length = FH_DBN_TRADE_LENGTH
                        t.trade.hd.rtype = FH_RTYPE_TRADE
                        t.trade.hd.instrument_id = iid
                        t.trade.hd.ts_event = m.transact_time or m.sending_time
                        t.trade.price = e.px
                        t.trade.size = <uint32_t> (e.size if e.size > 0 else 0)
                        t.trade.action = 84
                        t.trade.side = 78
                        t.trade.ts_recv = ts_recv
                        t.trade.sequence = <uint32_t> m.seq
                        cnt[13] += 1
                        k += 1
                    else:
                        cnt[14] += 1
                continue
            # ---- orders ----
            if m.kind < K_D or m.kind > K_9:
                cnt[15] += 1
                continue
            oe = <fh_order_event *> &raw[k * 64]
            memset(oe, 0, 64)
            oe.hd.length = FH_OWN_LENGTH
            oe.hd.rtype = FH_RTYPE_ORDER_EVENT
            oe.ts_recv = ts_recv
            oe.sequence = <uint32_t> m.seq
            oe.protocol = FH_OE_PROTO_FIX42 if m.version == 2 else FH_OE_PROTO_FIX44
            oe.price = m.price
            oe.size = <uint32_t> (m.qty if m.qty > 0 else 0)
            oe.side = _fix_side(m.side)
            if m.possdup:
                oe.flags |= FH_OE_F_POSS_DUP
            if after_gap:
                oe.flags |= FH_OE_F_AFTER_GAP
            if fs:
                oe.flags |= FH_OE_F_FROM_EXCHANGE
                oe.hd.ts_event = m.transact_time or m.sending_time
            else:
                oe.hd.ts_event = FH_UNDEF_TIMESTAMP
            cl = bytes(base[m.clordid.off:m.clordid.off + m.clordid.len]) if m.clordid.len else b""
            orig = bytes(base[m.origclordid.off:m.origclordid.off + m.origclordid.len]) if m.origclordid.len else b""
            oe.client_ref = <uint32_t> (_fnv64(base + m.clordid.off, m.clordid.len) & 0xFFFFFFFF) if m.clordid.len else 0
            if m.orderid.len:
                oe.order_id = _fnv64(base + m.orderid.off, m.orderid.len)
            key = (conn, cl)
            # state: [instrument_id, side, price, leaves, order_id, pending_ts, terminal event number (0:
            #         not terminal), state of the order a cancel / replace request named (or None)]
            if m.kind == K_D:
                ev = 78
                iid = _sym_lookup(self.syms, &self.next_sym, &self.n_syms, base + m.symbol.off, m.symbol.len,
                                  assign, &self.sym_truncated) if m.symbol.len else 0
                st = [iid, oe.side, m.price, m.qty, 0, ts_recv, 0, None]
                self.orders[key] = st
            elif m.kind == K_F or m.kind == K_G:
                ev = 88 if m.kind == K_F else 80
                st0 = self.orders.get((conn, orig))
                if st0 is None:
                    st0 = [0, oe.side, m.price, m.qty, 0, 0, 0, None]
                    oe.flags |= FH_OE_F_UNKNOWN_ORDER
                    cnt[16] += 1
                st = list(st0)
                st[5] = ts_recv
                st[6] = 0
                st[7] = st0                         # (marked done when this request's order is)
                self.orders[key] = st
            else:
                if m.kind == K_9:
                    ev = 75
                else:
                    ev = _EXEC_EVENT.get(m.exectype, 79)
                st = self.orders.get(key)
                if st is None and orig:
                    st = self.orders.get((conn, orig))
                    if st is not None:
                        self.orders[key] = st
                if st is None:
                    st = [0, oe.side, m.price, 0, 0, 0, 0, None]
                    if m.symbol.len:
                        st[0] = _sym_lookup(self.syms, &self.next_sym, &self.n_syms, base + m.symbol.off, m.symbol.len,
                                            assign, &self.sym_truncated)
                    self.orders[key] = st
                    oe.flags |= FH_OE_F_UNKNOWN_ORDER
                    cnt[16] += 1
                if m.orderid.len:
                    st[4] = oe.order_id
                if ev == 69 or ev == 66:
                    oe.size = <uint32_t> (m.lastqty if m.lastqty > 0 else 0)
                    oe.price = m.lastpx
                if ev == 82:
                    st[2] = m.price
                    st[1] = oe.side if oe.side != 78 else st[1]
                if m.has_leaves:
                    st[3] = m.leaves
                elif ev == 69:
                    st[3] = max(0, st[3] - m.lastqty)
                elif ev == 67 or ev == 74:
                    st[3] = 0
                if st[5] and ev in (65, 82, 67, 74, 75):
                    lat = ts_recv - <uint64_t> st[5] if ts_recv >= <uint64_t> st[5] else 0
                    oe.latency_ns = <uint32_t> (lat if lat < 0xFFFFFFFF else 0xFFFFFFFF)
                    oe.flags |= FH_OE_F_LATENCY
                    st[5] = 0
            if oe.side == 78:
                oe.side = st[1]
            if oe.price == FH_UNDEF_PRICE and ev != 69:
                oe.price = st[2]
            oe.event = ev
            oe.hd.instrument_id = <uint32_t> st[0]
            oe.order_id = <uint64_t> st[4]
            oe.leaves_qty = <uint32_t> max(0, st[3])
            if fs and (ev == 82 or ((ev == 67 or ev == 69 or ev == 74) and st[3] <= 0)):
                # a terminal state (or, replaced: the order it replaced is done); see sweep_terminal
                self.term_seq += 1
                if ev != 82:
                    st[6] = self.term_seq
                if st[7] is not None:               # the order a cancel / replace request named
                    (<list> st[7])[6] = self.term_seq
                    st[7] = None
            cnt[17] += 1
            k += 1
        return k

    def sweep_terminal(self, bint force=False):
        """(live, ``term_cap``) Drop from ``orders`` the orders that reached a terminal state (canceled,
        fully filled, rejected; or replaced / canceled by a later ClOrdID: the entry of the order the
        request named) more than ``term_cap`` terminal events ago and have no request pending: the
        last ``term_cap`` stay for a late message (a cancel reject, a PossDup resend). Runs when the
        map reaches twice ``term_cap`` entries, then twice what the last sweep left (amortised: the
        messages pay nothing but numbering the terminal events); the entries dropped are counted in
        ``term_evicted``. Returns how many were dropped."""
        if not self.term_cap or (not force and len(self.orders) < max(2 * self.term_cap, self.term_sweep_at)):
            return 0
        cdef uint64_t limit = self.term_seq - self.term_cap if self.term_seq > <uint64_t> self.term_cap else 0
        n = len(self.orders)
        self.orders = {k: v for k, v in self.orders.items() if not (0 < v[6] <= limit and not v[5])}
        self.term_evicted += n - len(self.orders)
        self.term_sweep_at = 2 * len(self.orders)
        return n - len(self.orders)


def _ref_entries(bytes msg, bint is_list, uint64_t sending_time):
    """[(Symbol 55, SecurityID 48, SecurityIDSource 22, sending_time, msg type)] of one validated
    reference data message: the top-level instrument of a SecurityDefinition (35=d), or every
    NoRelatedSym (146) entry of a SecurityList (35=y; each Symbol starts an entry). Entries without a
    symbol are dropped. Only these rare messages are parsed here, in Python."""
    out = []
    cur = None
    in_group = False
    for f in msg.split(b"\x01"):
        tag, sep, val = f.partition(b"=")
        if not sep:
            continue
        if tag == b"146":
            in_group = True
        elif tag == b"55":
            if is_list:
                if not in_group:
                    continue
                cur = [val, b"", b""]
                out.append(cur)
            elif cur is None:
                cur = [val, b"", b""]
                out.append(cur)
            elif not cur[0]:
                cur[0] = val
        elif tag == b"48" and cur is not None and not cur[1]:
            cur[1] = val
        elif tag == b"22" and cur is not None and not cur[2]:
            cur[2] = val
        elif not is_list and cur is None and tag in (b"48", b"22"):
            cur = [b"", val if tag == b"48" else b"", val if tag == b"22" else b""]
            out.append(cur)
    mt = "y" if is_list else "d"
    return [(c[0], c[1], c[2], sending_time, mt) for c in out if c[0]]


cdef Py_ssize_t _write_defs(object out, list defs) except -1:
    """fh_instrument_def records for (instrument_id, symbol, ts_event) at out[0:len(defs)]. FIX
    reference data gives symbol and id only: tick size unknown (FH_UNDEF_PRICE), display factor 0
    (unknown), class 'X' (other), put_or_call 255, strike FH_UNDEF_PRICE."""
    cdef uint8_t[::1] raw = out.view(np.uint8)
    cdef fh_instrument_def *d
    cdef Py_ssize_t k = 0
    cdef bytes sym
    for iid, sym, ts in defs:
        d = <fh_instrument_def *> &raw[k * 64]
        memset(d, 0, 64)
        d.hd.length = FH_OWN_LENGTH
        d.hd.rtype = FH_RTYPE_INSTRUMENT_DEF
        d.hd.instrument_id = <uint32_t> iid
        d.hd.ts_event = <uint64_t> ts if ts else FH_UNDEF_TIMESTAMP
        d.min_price_increment = FH_UNDEF_PRICE
        d.display_factor = 0
        memcpy(d.symbol, <const char *> sym, min(len(sym), 20))
        d.update_action = 65
        d.instrument_class = 88
        d.put_or_call = 255
        d.market_segment_id = 0
        d.strike_price = FH_UNDEF_PRICE
        k += 1
    return k


def _fix_direction(streams_pair, dec):
    """(client, server): the side that sends D/F/G is the client; the side sending 8/9/W/X the server."""
    c, s = streams_pair
    def score(st):
        if st is None:
            return 0
        d = bytes(st.data[:65536])
        return (d.count(b"\x0135=D\x01") + d.count(b"\x0135=F\x01") + d.count(b"\x0135=G\x01")
                - d.count(b"\x0135=8\x01") - d.count(b"\x0135=W\x01") - d.count(b"\x0135=X\x01"))
    if score(s) > score(c):
        return s, c
    return c, s


def replay_stream(path, protocol="fix", *, symbols=None, dictionary_dir=None, max_ooo_segments=1024,
                  max_ooo_bytes=4 << 20):
    """Decode a FIX 4.2 / 4.4 capture into ticks, order events and gap records.

    Parameters
    ----------
    path : str or os.PathLike
        pcap / pcapng capture of FIX sessions over TCP.
    protocol : str
        "fix" (FIX 4.2 and 4.4 are told apart per message by BeginString).
    symbols : dict, optional
        {symbol: instrument_id}; it takes precedence. Symbols defined by the session's own reference
        data (SecurityDefinition 35=d, SecurityList 35=y) get their numeric SecurityID (48) as id when
        it is numeric, fits uint32 and is free, else an assigned one, and an ``fh_instrument_def``
        record ahead of the records of their connection; other symbols get ids in order of first
        appearance.
    dictionary_dir : str, optional
        Directory holding FIX42.xml / FIX44.xml (repeating groups); default: $FH_FIX_SPEC_DIR or
        ../shared/data/fix/spec, else the built-in NoMDEntries definitions.

    Returns
    -------
    (records, stats) : (numpy.ndarray of TICK_DTYPE, dict)
        stats["fix"]["by_msg_type"] = {MsgType: messages}; stats["reference"] = {symbol:
        {"instrument_id", "security_id", "security_id_source", "msg_type"}}.
    """
    from feedhandler.framing.tcp import Reassembler
    r = Reassembler(max_ooo_segments=max_ooo_segments, max_ooo_bytes=max_ooo_bytes)
    r.feed_file(path)
    return decode_streams(r, symbols=symbols, dictionary_dir=dictionary_dir)


def decode_streams(reassembler, *, symbols=None, dictionary_dir=None):
    """The records and stats of ``replay_stream`` from a Reassembler that has seen the whole capture
    (``replay_stream`` and the feed core's ``TcpSessionFramer`` both end here). Needs the whole
    capture: see ``replay_stream``'s symbol and reference-data rules and the merge by capture time."""
    from feedhandler.framing.tcp import pair_streams
    r = reassembler
    streams = r.finish()
    dec = FixStreamDecoder(dictionary_dir, symbols)
    outs = []
    for conn, pair in enumerate(pair_streams(streams)):
        c, s = _fix_direction(pair, dec)
        outs.append(dec.decode_pair(c, s, conn))
    from feedhandler import records
    if len(outs) == 1:
        recs = outs[0]                  # one connection: already in capture-time order
    else:
        recs = records.concat(outs) if outs else records.empty(0)
        if len(recs):
            recs = recs[np.argsort(_ts_recv(recs), kind="stable")]
    fx = dict(dec.stats)
    fx["by_msg_type"] = dec.msg_type_counts()
    stats = {"protocol": "fix", "tcp": r.stats, "fix": fx, "symbols": dec.symbol_map(),
             "reference": dict(dec.reference), "groups": dec.groups_source, "records": len(recs)}
    return recs, stats


def _ts_recv(recs):
    """ts_recv of mixed records (each layout keeps it at its own offset)."""
    from feedhandler import records
    b = np.ascontiguousarray(recs).view(np.uint8).reshape(-1, 64)
    out = np.zeros(len(recs), dtype=np.uint64)
    rt = b[:, 1]
    for name in ("mbo", "trade", "mbp_update", "order_event", "gap"):
        sel = rt == records.RTYPE[name]
        if sel.any():
            off = records.DTYPES[name].fields["ts_recv"][1]
            out[sel] = np.ascontiguousarray(b[sel, off:off + 8]).view("<u8").ravel()
    return out


# ---- synthetic captures -------------------------------------------------------------------------
def _fix_msg(begin, mtype, seq, sender, target, ts_ns, body, possdup=False):
    import time
    t = time.gmtime(ts_ns // 1_000_000_000)
    st = time.strftime("%Y%m%d-%H:%M:%S", t).encode() + b".%06d" % ((ts_ns // 1000) % 1_000_000)
    hdr = [(49, sender), (56, target), (34, str(seq).encode()), (52, st)]
    if possdup:
        hdr.append((43, b"Y"))
    parts = [b"35=" + mtype + b"\x01"]
    for tag, val in sorted(hdr, key=lambda x: x[0]) + list(body):
        parts.append(b"%d=%s\x01" % (tag, val if isinstance(val, bytes) else str(val).encode()))
    rest = b"".join(parts)
    msg = b"8=" + begin + b"\x019=%d\x01" % len(rest) + rest
    return msg + b"10=%03d\x01" % (sum(msg) & 255)


# Reference data synth emits with reference_data=True: (symbol, SecurityID, SecurityIDSource).
# GOOG has an ISIN (not numeric: an assigned id); ESZ6 comes in its own SecurityDefinition.
SYNTH_REFERENCE = ((b"AAPL", b"1001", b"8"), (b"MSFT", b"1002", b"8"), (b"IBM", b"1003", b"8"),
                   (b"GOOG", b"US38259P5089", b"4"))
SYNTH_SECDEF = (b"ESZ6", b"5501", b"8")


def synth_messages(n, seed=0, begin=b"FIX.4.4", t0=1_700_000_000_000_000_000, reference_data=False):
    """[(ts_ns, side 'c'|'s', message bytes)] of one FIX session: logon, orders with acks, fills,
    cancels, replaces, rejects, market data (W snapshots, X incrementals with MBO and MBP entries).
    With ``reference_data`` the exchange sends, right after the logons, a SecurityList (35=y) of
    SYNTH_REFERENCE and a SecurityDefinition (35=d) of SYNTH_SECDEF (without it the output is
    unchanged, byte for byte)."""
    import random
    rnd = random.Random(seed)
    syms = [b"AAPL", b"MSFT", b"IBM", b"ESZ6", b"GOOG"]
    out = []
    seq = {"c": 1, "s": 1}
    ts = t0
    def send(side, mtype, body, **kw):
        nonlocal ts
        ts += rnd.randint(2_000, 200_000)
        snd, tgt = (b"CLIENT", b"EXCH") if side == "c" else (b"EXCH", b"CLIENT")
        out.append((ts, side, _fix_msg(begin, mtype, seq[side], snd, tgt, ts, body, **kw)))
        seq[side] += 1
    send("c", b"A", [(98, 0), (108, 30)])
    send("s", b"A", [(98, 0), (108, 30)])
    if reference_data:
        grp = []
        for sym, sid, src in SYNTH_REFERENCE:
            grp += [(55, sym), (48, sid), (22, src)]
        send("s", b"y", [(320, b"REQ1"), (322, b"SL1"), (560, 0), (146, len(SYNTH_REFERENCE))] + grp)
        sym, sid, src = SYNTH_SECDEF
        send("s", b"d", [(320, b"REQ2"), (322, b"SD1"), (323, 1), (55, sym), (48, sid), (22, src),
                         (167, b"FUT")])
    live = {}
    md_live = {}          # symbol -> {MDEntryID: (MDEntryType, price)} of the incremental feed
    next_entry = [1]
    oid = 0
    clid = 0
    def px(p):
        return b"%d.%02d" % (p // 100, p % 100)
    while len(out) < n:
        r = rnd.random()
        if r < 0.35:
            # Incremental refresh consistent with a book per symbol around a mid of 100.00: bids below
            # the mid, offers above; changes and deletes refer to live entry ids (MBO) or to levels
            # that exist (MBP), so a replay never builds a crossed or dangling book.
            sym = rnd.choice(syms)
            book = md_live.setdefault(sym, {})
            ents = []
            for _ in range(rnd.randint(1, 4)):
                typ = rnd.choice([b"0", b"1", b"0", b"1", b"2"])
                if typ == b"2":  # trade print near the mid
                    ents += [(279, b"0"), (269, typ), (55, sym), (270, px(10000 + rnd.randint(-5, 5))),
                             (271, rnd.randint(1, 500)), (290, 1)]
                    continue
                if rnd.random() < 0.5:  # order-level entry (MDEntryID)
                    ids = [k for k, v in book.items() if v[0] == typ]
                    act = b"0" if not ids or rnd.random() < 0.5 else rnd.choice([b"1", b"2"])
                    if act == b"0":
                        eid = b"E%d" % next_entry[0]
                        next_entry[0] += 1
                        off = rnd.randint(1, 50)
                        book[eid] = (typ, 10000 - off if typ == b"0" else 10000 + off)
                    else:
                        eid = rnd.choice(ids)
                    price = book[eid][1]
                    if act == b"2":
                        del book[eid]
                    ents += [(279, act), (269, typ), (55, sym), (270, px(price)), (271, rnd.randint(1, 500)),
                             (278, eid)]
                else:  # price-level entry (MDPriceLevel): level n sits n ticks from the mid
                    lvl = rnd.randint(1, 5)
                    act = rnd.choice([b"0", b"1", b"2"])
                    price = 10000 - lvl if typ == b"0" else 10000 + lvl
                    ents += [(279, act), (269, typ), (55, sym), (270, px(price)), (271, rnd.randint(1, 500)),
                             (290, lvl)]
            send("s", b"X", [(262, b"md1"), (268, sum(1 for t, _ in ents if t == 279))] + ents)
        elif r < 0.40:
            sym = rnd.choice(syms)
            ents = []
            for lvl in range(1, rnd.randint(2, 4)):
                for typ in (b"0", b"1"):
                    ents += [(269, typ), (270, px(10000 + (lvl if typ == b"1" else -lvl))), (271, rnd.randint(1, 900))]
            send("s", b"W", [(262, b"md1"), (55, sym), (268, len(ents) // 3)] + ents)
        elif r < 0.65 or not live:
            clid += 1
            cl = b"C%d" % clid
            sym = rnd.choice(syms)
            qty = rnd.randint(1, 10) * 100
            p = rnd.randint(9000, 11000)
            side = rnd.choice([b"1", b"2"])
            send("c", b"D", [(11, cl), (21, b"1"), (55, sym), (54, side), (60, b"20231114-22:13:20.000"),
                             (38, qty), (40, b"2"), (44, px(p))])
            if rnd.random() < 0.08:
                send("s", b"8", [(37, b"NONE"), (11, cl), (17, b"X%d" % clid), (150, b"8"), (39, b"8"),
                                 (55, sym), (54, side), (38, qty), (151, 0), (14, 0), (6, 0)])
                continue
            oid += 1
            live[cl] = [b"O%d" % oid, sym, side, qty, p, 0]
            send("s", b"8", [(37, live[cl][0]), (11, cl), (17, b"X%da" % clid), (150, b"0"), (39, b"0"),
                             (55, sym), (54, side), (38, qty), (44, px(p)), (151, qty), (14, 0), (6, 0)])
        else:
            cl = rnd.choice(list(live))
            o, sym, side, qty, p, cum = live[cl]
            rr = rnd.random()
            if rr < 0.45:
                fq = min(qty - cum, rnd.randint(1, 5) * 100)
                cum += fq
                done = cum >= qty
                send("s", b"8", [(37, o), (11, cl), (17, b"F%d" % rnd.randint(1, 10**9)),
                                 (150, b"F" if begin == b"FIX.4.4" else (b"2" if done else b"1")),
                                 (39, b"2" if done else b"1"), (55, sym), (54, side), (38, qty),
                                 (31, px(p)), (32, fq), (151, qty - cum), (14, cum), (6, px(p))])
                if done:
                    del live[cl]
                else:
                    live[cl][5] = cum
            elif rr < 0.75:
                clid += 1
                ncl = b"C%d" % clid
                send("c", b"F", [(41, cl), (11, ncl), (55, sym), (54, side), (60, b"20231114-22:13:20.000"), (38, qty)])
                if rnd.random() < 0.1:
                    send("s", b"9", [(37, o), (11, ncl), (41, cl), (39, b"0"), (434, b"1")])
                else:
                    send("s", b"8", [(37, o), (11, ncl), (41, cl), (17, b"K%d" % clid), (150, b"4"), (39, b"4"),
                                     (55, sym), (54, side), (38, qty), (151, 0), (14, cum), (6, 0)])
                    del live[cl]
            else:
                clid += 1
                ncl = b"C%d" % clid
                np_ = p + rnd.randint(-50, 50)
                send("c", b"G", [(41, cl), (11, ncl), (21, b"1"), (55, sym), (54, side),
                                 (60, b"20231114-22:13:20.000"), (38, qty), (40, b"2"), (44, px(np_))])
                send("s", b"8", [(37, o), (11, ncl), (41, cl), (17, b"R%d" % clid), (150, b"5"), (39, b"5"),
                                 (55, sym), (54, side), (38, qty), (44, px(np_)), (151, qty - cum), (14, cum), (6, 0)])
                live[ncl] = [o, sym, side, qty, np_, cum]
                del live[cl]
    return out


def synth(path, n=1000, seed=0, *, begin=b"FIX.4.4", mss=1460, t0=1_700_000_000_000_000_000,
          reference_data=False):
    """Write a pcap of one FIX session (``n`` messages, see ``synth_messages``; ``reference_data``:
    a SecurityList and a SecurityDefinition after the logons) over a real TCP connection (handshake,
    segments of up to ``mss`` bytes, FIN). Returns the message list."""
    from feedhandler.framing.tcp import TcpConversation
    from feedhandler.capture.pcapwriter import write_pcap
    msgs = synth_messages(n, seed, begin, t0, reference_data)
    conv = TcpConversation(client=("10.2.0.2", 51000), server=("10.2.0.1", 9878), mss=mss,
                           isn_c=seed * 7919 + 1000, isn_s=0xFFFFF000)
    conv.handshake(t0 - 10_000)
    # batch consecutive messages of one side sent within the same 50 us into one write (as a kernel would)
    i = 0
    while i < len(msgs):
        ts, side, m = msgs[i]
        data = m
        j = i + 1
        while j < len(msgs) and msgs[j][1] == side and msgs[j][0] - ts < 50_000 and len(data) < mss:
            data += msgs[j][2]
            j += 1
        conv.send(msgs[j - 1][0], side, data)
        i = j
    conv.close(msgs[len(msgs) - 1][0] + 1000 if msgs else t0)
    write_pcap(path, conv.frames, nanosecond=True)
    return msgs


# ---- incremental decoding (the feed core's live mode) ----------------------------------------------
HOLD_MESSAGES = 10000           # messages held per connection while its client side is undecided
TRIM_BYTES = 1 << 20            # a stream drops the bytes already decoded once they reach this
SWEEP_MIN = 4096                # order lifecycle entries before those of closed connections are swept
TERMINAL_ORDERS = 1 << 16       # live: terminal orders kept per decoder for late messages (then dropped)


class FixLiveDecoder:
    """FIX sessions decoded as the packets arrive: the incremental session decoder of
    ``framing.tcp.TcpSessionFramer`` (``feedhandler run --file`` / ``--iface``, ``LiveFeed(source, "fix")``).

    Same framing, validation, sequencing, market data and order lifecycle code as ``replay_stream``
    (``FixStreamDecoder``); what needs the whole capture there is defined here for a live feed:

    * **order**: the reassembler reports, packet by packet, which stream grew (``Reassembler.track``);
      the messages a packet completed are decoded in packet order. Both directions and every
      connection therefore interleave as they were captured (replay sorts by the capture time of the
      segment completing each message: the same order on a capture whose time stamps do not go back,
      except that replay puts, at equal time stamps, the client's message first).
    * **symbol ids**: the given map first; reference data (SecurityList 35=y, SecurityDefinition 35=d)
      gives its numeric SecurityID as id to symbols not seen before, **from that message on**, with
      the ``fh_instrument_def`` record placed right after it (replay: every record of the connection
      is named by it and the definitions come first, at ts_recv 0). A symbol already used before its
      reference data arrived keeps the id it got at first appearance (ids from 1, across the
      capture), is counted in ``fix.ref_after_use``, and its definition record carries that id.
    * **client side**: the side sending D/F/G is the client, the side sending 8/9/W/X the exchange
      (as replay, on the first 64 KiB of each direction), decided at the first such message; the
      messages before it (logons, heartbeats) are held until then, at most ``HOLD_MESSAGES`` per
      connection (then the SYN / port rule of ``pair_streams`` decides), and at the end of the input.
    * **bad input**: garbled bytes, bad BodyLength, bad CheckSum, fields that do not parse, TCP holes
      and a truncated message at a hole or at the end are counted in ``stats["fix"]`` as replay counts
      them; a message split across packets waits for its last byte.

    Memory: once a decided connection's stream holds ``trim_bytes`` (default ``TRIM_BYTES``) of bytes
    already framed and decoded, it drops them (``TcpStream.discard``): a long session keeps about that
    much per direction, plus an incomplete message (replay keeps every byte). A connection whose two
    directions are ``closed`` (FIN both ways with every byte before them delivered, or an RST) is
    retired once its last bytes are decoded: a truncated tail is counted as at the end of the input,
    messages still held are decided and decoded then (not at the end of the input), its sequencing
    state and parse state are dropped, its streams leave the reassembler (``Reassembler.retire``: their
    counters stay in the statistics) and its order lifecycle entries (keyed by connection, so nothing
    can refer to them any more) are swept once the map holds ``sweep_min`` entries (default
    ``SWEEP_MIN``; then twice what the previous sweep left). Every counter is the one it would have been:
    retirement changes memory only. Within a connection, an order that reached a terminal state
    (canceled, fully filled, rejected; or replaced / canceled by a later ClOrdID: its OrigClOrdID entry)
    stays while it is among the last ``dec.term_cap`` (default ``TERMINAL_ORDERS``) terminal orders,
    for a late message; older ones leave the map at the next sweep (``FixStreamDecoder.sweep_terminal``;
    counted in ``live["orders_evicted"]``: a message naming one after that is an unknown order, which
    replay would have known). (A connection seen in one direction only is never retired: replay
    would pair a later reverse stream with it.)
    """

    def __init__(self, symbols=None, dictionary_dir=None):
        from feedhandler.framing.tcp import LiveConnections
        self.dec = FixStreamDecoder(dictionary_dir, symbols)
        self.dec.stats["ref_after_use"] = 0
        self.dec.term_cap = TERMINAL_ORDERS     # (dec.term_cap: set before the first packet to change it)
        self.conns = LiveConnections()
        self.parse = {}             # stream -> [next byte to frame, piece start, piece counted, holes done]
        self.side = {}              # connection -> (client, server) once decided
        self.held = {}              # connection -> [(stream, spans, ts)] while undecided
        self.held_n = {}
        self.records = 0
        self.rows_buf = np.empty((4096, 3), dtype=np.int64)
        self.trim_bytes = TRIM_BYTES
        self.trimmed = 0
        self.mark_no = 0                # marks seen so far: the order of the packets
        self.closing = set()            # connections with a FIN / RST seen, not retired yet
        self.dead = set()               # retired connections whose orders are not swept yet
        self.sweep_min = SWEEP_MIN
        self.sweep_at = 0                   # (and twice what the last sweep left)
        self.retired = 0

    # -- framing ------------------------------------------------------------------------------------
    def _split(self, st, ps, limit, out):
        """Frame st.data[ps[0]:limit]; complete messages' spans into out; ps[0] moves past them."""
        stats = self.dec.stats
        rows_buf = self.rows_buf
        start = ps[0]
        pos = 0
        mv = memoryview(st.data)[start:limit]
        try:
            while True:
                k, consumed = _fix.split(mv[pos:], rows_buf, True)
                rows = rows_buf[:k]
                sts = rows[:, 0]
                ok = rows[sts == 0]
                if len(ok):
                    out.append(ok[:, 1:3] + (start + pos))
                stats["garbled"] += int(np.count_nonzero(sts == 2))
                stats["bad_body_length"] += int(np.count_nonzero(sts == 3))
                stats["bad_checksum"] += int(np.count_nonzero(sts == 4))
                pos += consumed
                if k < rows_buf.shape[0] or consumed == 0:
                    break
        finally:
            mv.release()
        ps[0] = start + pos

    def _tail(self, st, ps, end):
        """The piece ends at ``end`` (a hole, or the end of the input): leftover bytes are a truncated message."""
        if ps[0] < end and bytes(st.data[ps[0]:end]).strip(b"\0 \r\n"):
            self.dec.stats["truncated_tail"] += 1

    def _frame(self, st, end, nholes):
        ps = self.parse.get(st)
        if ps is None:
            # [next byte to frame, piece start, piece state (0 first piece, 1 after a hole, 2 counted),
            #  holes done]; offsets into st.data (they move down when the stream discards bytes)
            ps = self.parse[st] = [0, 0, 0, 0]
        out = []
        while True:
            off = st.holes[ps[3]][0] if ps[3] < nholes else None
            limit = end if off is None else off
            if limit > ps[1] and ps[2] == 1:
                self.dec.stats["holes"] += 1     # a piece after a hole (counted once it has bytes)
                ps[2] = 2
            if limit > ps[0]:
                self._split(st, ps, limit, out)
            if off is None:
                break
            if off > ps[1]:
                self._tail(st, ps, off)
                ps[0] = ps[1] = off
                ps[2] = 1
            ps[3] += 1
        if not out:
            return None
        return np.ascontiguousarray(np.concatenate(out), dtype=np.int64)

    def _trim(self, marks):
        """Let the streams of decided connections drop the bytes framed and decoded (``trim_bytes`` at a time)."""
        seen = set()
        for st, _end, _nh in marks:
            if st in seen:
                continue
            seen.add(st)
            ps = self.parse.get(st)
            if ps is None or ps[0] < self.trim_bytes or self.conns.index[st] not in self.side:
                continue
            n = ps[0]
            st.discard(n)
            ps[0] -= n
            ps[1] -= n
            self.trimmed += n

    # -- sides ----------------------------------------------------------------------------------------
    def _decide(self, i, final):
        c, s = self.conns.oriented(i)
        def score(st):
            if st is None:
                return 0
            d = bytes(st.data[:65536])
            return (d.count(b"\x0135=D\x01") + d.count(b"\x0135=F\x01") + d.count(b"\x0135=G\x01")
                    - d.count(b"\x0135=8\x01") - d.count(b"\x0135=W\x01") - d.count(b"\x0135=X\x01"))
        if not (final or score(c) != 0 or score(s) != 0 or self.held_n.get(i, 0) >= HOLD_MESSAGES):
            return False
        self.side[i] = _fix_direction((c, s), self.dec)
        return True

    def feed_marks(self, reassembler, marks):
        """Records of the messages completed by the packets behind ``marks`` (Reassembler.take_marks).

        Each stream is framed once per call, up to its last mark; a message belongs to the first mark
        (packet) whose length covers its last byte, and the messages are decoded in mark order: the
        order of the packets that completed them, whatever the batching. Closed connections are then
        retired (see the class docstring)."""
        self.conns.update(reassembler.streams, reassembler.n_created)
        base = self.mark_no
        self.mark_no += len(marks)
        by_stream = {}
        for g, (st, end, nh) in enumerate(marks):
            e = by_stream.get(st)
            if e is None:
                e = by_stream[st] = [[], [], 0]
            e[0].append(base + g)
            e[1].append(end)
            e[2] = nh
        chunks = []
        for st, (gs, ends, nh) in by_stream.items():
            spans = self._frame(st, ends[len(ends) - 1], nh)
            if spans is None:
                continue
            k = np.searchsorted(np.asarray(ends, dtype=np.int64), spans[:, 1], side="left")
            np.minimum(k, len(gs) - 1, out=k)
            gidx = np.asarray(gs, dtype=np.int64)[k]
            ts = st.ts_at(spans[:, 1])
            i = self.conns.index[st]
            if i in self.side:
                chunks.append((i, st, spans, ts, gidx))
                continue
            self.held.setdefault(i, []).append((st, spans, ts, gidx))
            self.held_n[i] = self.held_n.get(i, 0) + len(spans)
        for i in list(self.held):
            if self._decide(i, False):
                chunks.extend((i,) + e for e in self.held.pop(i))
                self.held_n.pop(i, None)
        recs = self._decode(chunks)
        self._trim(marks)
        if reassembler.closing is not None:
            late = self._retire(reassembler)
            if late is not None:
                from feedhandler import records
                recs = records.concat([recs, late]) if len(recs) else late
        return recs

    def _retire(self, reassembler):
        """Retire the closed connections (class docstring); the records of messages they still held."""
        idx = self.conns.index
        for st in reassembler.take_closing():
            i = idx.get(st)
            if i is not None:
                self.closing.add(i)
        if not self.closing:
            return None
        late = []
        for i in sorted(self.closing):
            if i not in self.conns.pairs:
                self.closing.discard(i)
                continue
            cs = self.conns.closed(i)
            if cs is None:
                continue
            self.closing.discard(i)
            if i in self.held:
                self._decide(i, True)
                r = self._decode([(i,) + e for e in self.held.pop(i)])
                if len(r):
                    late.append(r)
            for st in cs:
                ps = self.parse.pop(st, None)
                if ps is not None and len(st.data) > ps[1]:
                    self._tail(st, ps, len(st.data))
            self.side.pop(i, None)
            self.held_n.pop(i, None)
            self.dec.forget_conn(i)
            self.conns.retire(i)
            reassembler.retire(cs)
            self.dead.add(i)
            self.retired += 1
        if self.dead and len(self.dec.orders) >= max(self.sweep_min, self.sweep_at):
            dead = self.dead
            self.dec.orders = {k: v for k, v in self.dec.orders.items() if k[0] not in dead}
            dead.clear()
            self.sweep_at = 2 * len(self.dec.orders)
        if not late:
            return None
        from feedhandler import records
        return late[0] if len(late) == 1 else records.concat(late)

    def _decode(self, chunks):
        """Records of the messages of ``chunks`` [(connection, stream, spans, ts, mark index per message)]
        in mark order; consecutive messages of one connection are decoded in one call."""
        from feedhandler import records
        if not chunks:
            return records.empty(0)
        if len(chunks) == 1:                # the common live case: one stream's messages of one packet batch
            i, st, spans, ts, _g = chunks[0]
            c, s = self.side[i]
            n = len(spans)
            rows = np.empty((n, 3), dtype=np.int64)
            rows[:, 0] = 0
            rows[:, 1] = np.arange(n)
            rows[:, 2] = ts
            recs = self.dec.decode_live_rows([(st, 1 if st is s else 0, spans, None)], rows, i)
            self.records += len(recs)
            return recs
        conn = np.concatenate([np.full(len(c[2]), c[0], dtype=np.int64) for c in chunks])
        cid = np.concatenate([np.full(len(c[2]), j, dtype=np.int64) for j, c in enumerate(chunks)])
        row = np.concatenate([np.arange(len(c[2]), dtype=np.int64) for c in chunks])
        ts = np.concatenate([c[3].astype(np.int64) for c in chunks])
        gidx = np.concatenate([c[4] for c in chunks])
        order = np.argsort(gidx, kind="stable")
        conn, cid, row, ts = conn[order], cid[order], row[order], ts[order]
        cuts = np.concatenate([[0], np.flatnonzero(np.diff(conn)) + 1, [len(conn)]])
        outs = []
        for a, b in zip(cuts[:-1].tolist(), cuts[1:].tolist()):
            i = int(conn[a])
            c, s = self.side[i]
            ids, local = np.unique(cid[a:b], return_inverse=True)
            parts = []
            for j in ids.tolist():
                st = chunks[j][1]
                parts.append((st, 1 if st is s else 0, chunks[j][2], None))
            rows = np.stack([local.astype(np.int64).ravel(), row[a:b], ts[a:b]], axis=1)
            recs = self.dec.decode_live_rows(parts, rows, i)
            if len(recs):
                outs.append(recs)
        if not outs:
            return records.empty(0)
        recs = outs[0] if len(outs) == 1 else records.concat(outs)
        self.records += len(recs)
        return recs

    def finish(self, reassembler):
        """The end of the input: gaps become holes, truncated tails are counted, held messages decoded.
        Returns (records, stats) (stats as ``decode_streams``'s, with ``live``)."""
        from feedhandler import records
        reassembler.finish()
        outs = [self.feed_marks(reassembler, reassembler.take_marks())]
        for st, ps in self.parse.items():
            if len(st.data) > ps[1]:
                self._tail(st, ps, len(st.data))
        chunks = []
        for i in sorted(self.held):
            self._decide(i, True)
            chunks.extend((i,) + e for e in self.held[i])
        self.held.clear()
        self.held_n.clear()
        outs.append(self._decode(chunks))
        outs = [o for o in outs if len(o)]
        recs = records.concat(outs) if len(outs) > 1 else (outs[0] if outs else records.empty(0))
        return recs, self.snapshot(reassembler)

    def snapshot(self, reassembler):
        """Statistics so far, shaped as ``decode_streams``'s (``records``: records emitted so far)."""
        dec = self.dec
        fx = dict(dec.stats)
        fx["by_msg_type"] = dec.msg_type_counts()
        return {"protocol": "fix", "tcp": reassembler.stats, "fix": fx, "symbols": dec.symbol_map(),
                "reference": dict(dec.reference), "groups": dec.groups_source, "records": self.records,
                "live": {"held_messages": int(sum(self.held_n.values())),
                         "connections": self.conns.n_pairs, "bytes_discarded": self.trimmed,
                         "connections_retired": self.retired, "connections_open": len(self.conns.pairs),
                         "tombstones_evicted": reassembler.retirement["tombstones_evicted"],
                         "order_entries": len(self.dec.orders), "orders_evicted": int(self.dec.term_evicted)}}
