"""OUCH 4.2 and 5.0 order-entry sessions -> normalized order-event records (fh_order_event, rtype 0xF1).

Pipeline: capture file -> ``framing.tcp`` (reassembly) -> ``framing.soupbintcp_stream`` (SoupBinTCP
packets, sequence numbers from Login Accepted) -> a batch of ``fh_msg`` -> ``_decode`` (nogil,
table driven: field offsets come from ``ouch42.TABLE`` / ``ouch50_spec.TABLE``, never typed here) ->
the lifecycle pass, which keys every order by (connection, token) for 4.2 and (connection,
UserRefNum) for 5.0 and writes one record per order message:

=========  ==========================================================  ==========================
event      OUCH message                                                record fields
=========  ==========================================================  ==========================
N          Enter Order (in)                                            size, price, side, symbol
A          Accepted (out)                                              latency from the Enter
P / R      Replace Order (in) / Replaced (out)                         new size / price
X / C      Cancel Order (in) / Canceled, AIQ Canceled (out)            canceled qty, leaves
m / M      Modify Order (in) / Order Modified (out)                    new qty
E / B      Executed / Broken Trade (out)                               executed qty and price
J / K      Rejected / Cancel Reject (out)                              latency from the request
S / O      Priority update, Restated / Cancel Pending (out)
=========  ==========================================================  ==========================

Rejected messages (unknown type, wrong fixed length, appendage length that does not match the
packet, appendage entries that overrun) are counted by reason in the stats and produce no record.
System events, mass-cancel / order-entry / account-query messages are counted, not recorded.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t, int32_t, int16_t
from libc.stdlib cimport malloc, free
from libc.string cimport memset, memcpy
from feedhandler.includes.msg cimport fh_msg
from feedhandler.includes.record cimport (fh_tick, fh_order_event, FH_RTYPE_ORDER_EVENT, FH_OWN_LENGTH,
                                          FH_UNDEF_PRICE, FH_UNDEF_TIMESTAMP, FH_OE_PROTO_OUCH42,
                                          FH_OE_PROTO_OUCH50, FH_OE_F_FROM_EXCHANGE, FH_OE_F_POSS_DUP,
                                          FH_OE_F_UNKNOWN_ORDER, FH_OE_F_LATENCY, FH_OE_F_AFTER_GAP)

import numpy as np

cdef extern from "fh/endian.h" nogil:
    uint16_t fh_load_be16(const void *p)
    uint32_t fh_load_be32(const void *p)
    uint64_t fh_load_be64(const void *p)

# ---- reject reasons -----------------------------------------------------------------------------
cdef enum:
    R_OK = 0
    R_EMPTY
    R_UNKNOWN_TYPE
    R_BAD_LENGTH
    R_BAD_APPENDAGE_LENGTH
    R_BAD_APPENDAGE
    R_N
REASONS = ("ok", "empty", "unknown_type", "bad_length", "bad_appendage_length", "bad_appendage")

# ---- layout table, filled at import from the protocol field tables ------------------------------
cdef struct lay_t:
    int16_t size            # fixed bytes (type byte and appendage length included); 0: unknown type
    uint8_t has_app
    char event              # FH_OE_* or 0 (not an order event)
    int16_t o_ts, o_ref, o_ref2, o_qty, o_price, o_side, o_symbol, o_order_ref, o_clordid
    uint8_t ref_size        # 4 (UserRefNum) or 14 (token)
    uint8_t price_size      # 4 (4.2 u32) or 8 (5.0 i64)

cdef lay_t _LAY[2][2][256]      # [version 0=4.2 1=5.0][from_server][type byte]

_ROLE = {
    "timestamp": "o_ts", "order_token": "o_ref", "user_ref_num": "o_ref",
    "replacement_order_token": "o_ref", "existing_order_token": "o_ref2", "previous_order_token": "o_ref2",
    "orig_user_ref_num": "o_ref2", "shares": "o_qty", "quantity": "o_qty", "executed_shares": "o_qty",
    "decrement_shares": "o_qty", "price": "o_price", "execution_price": "o_price", "side": "o_side",
    "stock": "o_symbol", "symbol": "o_symbol", "order_reference_number": "o_order_ref",
    "cl_ord_id": "o_clordid",
}
# (version, direction, type) -> event; anything absent is a session message (counted, not recorded)
_EVENTS = {
    ("in", b"O"): b"N", ("in", b"U"): b"P", ("in", b"X"): b"X", ("in", b"M"): b"m",
    ("out", b"A"): b"A", ("out", b"U"): b"R", ("out", b"C"): b"C", ("out", b"D"): b"C", ("out", b"E"): b"E",
    ("out", b"B"): b"B", ("out", b"J"): b"J", ("out", b"I"): b"K", ("out", b"P"): b"O", ("out", b"T"): b"S",
    ("out", b"M"): b"M", ("out", b"R"): b"S",
}


def _load_tables():
    from feedhandler.protocols import ouch42, ouch50_spec
    memset(_LAY, 0, sizeof(_LAY))
    cdef lay_t *L
    for ver, table in ((0, ouch42.TABLE), (1, ouch50_spec.TABLE)):
        for (direction, t), (name, fields) in table.items():
            L = &_LAY[ver][1 if direction == "out" else 0][t[0]]
            roles = {"o_ts": -1, "o_ref": -1, "o_ref2": -1, "o_qty": -1, "o_price": -1, "o_side": -1,
                     "o_symbol": -1, "o_order_ref": -1, "o_clordid": -1}
            off = 1
            has_app = 0
            for f, kind, n in fields:
                r = _ROLE.get(f)
                if r is not None and roles[r] < 0:
                    roles[r] = off
                    if r == "o_ref":
                        L.ref_size = n
                    if r == "o_price":
                        L.price_size = n
                if kind == "a":
                    has_app = 1
                off += n
            L.size = off
            L.has_app = has_app
            L.event = _EVENTS.get((direction, t), b"\0")[0]
            L.o_ts, L.o_ref, L.o_ref2 = roles["o_ts"], roles["o_ref"], roles["o_ref2"]
            L.o_qty, L.o_price, L.o_side = roles["o_qty"], roles["o_price"], roles["o_side"]
            L.o_symbol, L.o_order_ref, L.o_clordid = roles["o_symbol"], roles["o_order_ref"], roles["o_clordid"]

_load_tables()

# ---- native decode ------------------------------------------------------------------------------
cdef struct dec_t:
    uint8_t status          # R_*
    char event              # 0: session message
    uint8_t type
    uint8_t from_server
    uint32_t ref            # 5.0 UserRefNum
    uint32_t ref2           # 5.0 OrigUserRefNum
    int32_t tok             # 4.2: offset of the token in the message (-1 none)
    int32_t tok2
    int32_t sym             # offset of the 8-byte symbol (-1 none)
    uint32_t qty
    char side
    int64_t price           # 1e-9 units or FH_UNDEF_PRICE
    uint64_t ts             # exchange ns since midnight (0 none)
    uint64_t order_ref


cdef int _appendages_ok(const uint8_t *p, Py_ssize_t n) noexcept nogil:
    """1 when a TagValue block of n bytes parses exactly (each entry: len(1) tag(1) value(len-1))."""
    cdef Py_ssize_t i = 0
    while i < n:
        if p[i] < 1 or i + 1 + p[i] > n:
            return 0
        i += 1 + p[i]
    return 1


cdef void _decode(int ver, const fh_msg *m, const uint8_t *from_server, Py_ssize_t n, dec_t *out) noexcept nogil:
    """Decode n OUCH messages (table driven); never reads past m[i].len."""
    cdef Py_ssize_t i
    cdef const uint8_t *p
    cdef const lay_t *L
    cdef dec_t *d
    cdef uint32_t ln, alen
    for i in range(n):
        d = &out[i]
        memset(d, 0, sizeof(dec_t))
        d.tok = d.tok2 = d.sym = -1
        d.price = FH_UNDEF_PRICE
        d.side = 78   # 'N'
        d.from_server = from_server[i]
        p = m[i].data
        ln = m[i].len
        if ln == 0:
            d.status = R_EMPTY
            continue
        d.type = p[0]
        L = &_LAY[ver][from_server[i]][p[0]]
        if L.size == 0:
            d.status = R_UNKNOWN_TYPE
            continue
        if L.has_app:
            if ln < <uint32_t> L.size:
                d.status = R_BAD_LENGTH
                continue
            alen = fh_load_be16(p + L.size - 2)
            if ln != L.size + alen:
                d.status = R_BAD_APPENDAGE_LENGTH
                continue
            if not _appendages_ok(p + L.size, alen):
                d.status = R_BAD_APPENDAGE
                continue
        elif ln != <uint32_t> L.size:
            d.status = R_BAD_LENGTH
            continue
        d.event = L.event
        if L.o_ts >= 0:
            d.ts = fh_load_be64(p + L.o_ts)
        if L.o_ref >= 0:
            if L.ref_size == 4:
                d.ref = fh_load_be32(p + L.o_ref)
            else:
                d.tok = L.o_ref
        if L.o_ref2 >= 0:
            if L.ref_size == 4 or ver == 1:
                d.ref2 = fh_load_be32(p + L.o_ref2)
            else:
                d.tok2 = L.o_ref2
        if L.o_qty >= 0:
            d.qty = fh_load_be32(p + L.o_qty)
        if L.o_price >= 0:
            if L.price_size == 8:
                d.price = (<int64_t> fh_load_be64(p + L.o_price)) * 100000
            else:
                d.price = (<int64_t> fh_load_be32(p + L.o_price)) * 100000
        if L.o_side >= 0:
            d.side = <char> p[L.o_side]
        if L.o_symbol >= 0:
            d.sym = L.o_symbol
        if L.o_order_ref >= 0:
            d.order_ref = fh_load_be64(p + L.o_order_ref)


cdef inline char _side(char s) noexcept nogil:
    if s == 66:                         # 'B' buy
        return 66
    if s == 83 or s == 84 or s == 69:   # 'S' sell, 'T' sell short, 'E' sell short exempt
        return 65
    return 78


cdef inline uint32_t _fnv32(const uint8_t *p, Py_ssize_t n) noexcept nogil:
    cdef uint32_t h = 2166136261u
    cdef Py_ssize_t i
    for i in range(n):
        h = (h ^ p[i]) * 16777619u
    return h


# ---- lifecycle pass ------------------------------------------------------------------------------
cdef class OuchEventDecoder:
    """Turns SoupBinTCP data packets (``SoupSessions.messages()``) into order-event records.

    ``version``: "4.2" or "5.0". ``symbols``: optional {symbol: instrument_id}; without it ids are
    assigned from 1 in order of first appearance (``symbol_map``).
    """
    cdef public int ver
    cdef public dict orders
    cdef public dict symbol_map
    cdef public bint fixed_symbols
    cdef public dict stats
    cdef public object midnight
    cdef public Py_ssize_t term_cap     # live: orders kept after a terminal event (0: every order, replay)
    cdef public uint64_t term_seq       # terminal events so far (an order's state holds the number of its own)
    cdef public uint64_t term_evicted   # entries dropped from ``orders`` (see sweep_terminal)
    cdef Py_ssize_t term_sweep_at

    def __init__(self, version="5.0", symbols=None):
        self.ver = 1 if str(version) in ("5.0", "50", "ouch50") else 0
        self.orders = {}
        self.fixed_symbols = symbols is not None
        self.symbol_map = dict(symbols or {})
        self.midnight = {}
        self.term_cap = 0
        self.term_seq = self.term_evicted = 0
        self.term_sweep_at = 0
        self.stats = {"messages": 0, "records": 0, "session_messages": 0, "unknown_order": 0,
                      "rejects": {r: 0 for r in REASONS[1:]}, "unknown_symbol": 0}

    def decode(self, sessions, table=None):
        """Records (TICK_DTYPE array) for the rows of ``table`` (default: every message of ``sessions``)."""
        from feedhandler import records
        if table is None:
            table = sessions.messages()
        cdef Py_ssize_t n = len(table), i, k = 0
        out = records.empty(n)
        if n == 0:
            return out
        streams = sessions.streams
        cdef fh_msg *msgs = <fh_msg *> malloc(n * sizeof(fh_msg))
        cdef dec_t *dec = <dec_t *> malloc(n * sizeof(dec_t))
        cdef uint8_t *fs = <uint8_t *> malloc(n)
        cdef const uint8_t[::1] mv
        if msgs == NULL or dec == NULL or fs == NULL:
            free(msgs); free(dec); free(fs)
            raise MemoryError()
        cdef const int64_t[::1] c_off = np.ascontiguousarray(table["off"], dtype=np.int64)
        cdef const uint32_t[::1] c_len = np.ascontiguousarray(table["len"], dtype=np.uint32)
        cdef const uint32_t[::1] c_str = np.ascontiguousarray(table["stream"], dtype=np.uint32)
        cdef const uint64_t[::1] c_ts = np.ascontiguousarray(table["ts_recv"], dtype=np.uint64)
        cdef const uint64_t[::1] c_seq = np.ascontiguousarray(table["seq"], dtype=np.uint64)
        cdef const uint8_t[::1] c_fl = np.ascontiguousarray(table["flags"], dtype=np.uint8)
        cdef const uint32_t[::1] c_conn = np.ascontiguousarray(table["conn"], dtype=np.uint32)
        cdef const uint8_t[::1] c_fs = np.ascontiguousarray(table["from_server"], dtype=np.uint8)
        cdef size_t[::1] ptr
        cdef size_t[::1] size
        cdef Py_ssize_t si
        try:
            keep = []
            ns = len(streams)
            ptr = np.zeros(max(ns, 1), dtype=np.uintp)
            size = np.zeros(max(ns, 1), dtype=np.uintp)
            for si in range(ns):
                if len(streams[si].data):
                    mv = streams[si].data
                    keep.append(mv)
                    ptr[si] = <size_t> &mv[0]
                    size[si] = mv.shape[0]
            for i in range(n):
                si = c_str[i]
                if si >= ns or <size_t> c_off[i] + c_len[i] > size[si]:
                    raise ValueError(f"message {i} lies outside its stream")
                msgs[i].data = <const uint8_t *> ptr[si] + <size_t> c_off[i]
                msgs[i].len = c_len[i]
                msgs[i].channel = <uint16_t> c_conn[i]
                msgs[i].flags = c_fl[i]
                msgs[i].ts_recv = c_ts[i]
                msgs[i].sequence = c_seq[i]
                fs[i] = c_fs[i]
            with nogil:
                _decode(self.ver, msgs, fs, n, dec)
            k = self._lifecycle(msgs, dec, n, out)
        finally:
            free(msgs); free(dec); free(fs)
        self.stats["messages"] += n
        self.stats["records"] += k
        if self.term_cap:
            self.sweep_terminal()
        return out[:k]

    cdef Py_ssize_t _lifecycle(self, const fh_msg *m, const dec_t *d, Py_ssize_t n, object out) except -1:
        cdef uint8_t[::1] raw = out.view(np.uint8)
        cdef fh_order_event *r
        cdef Py_ssize_t i, k = 0
        cdef const dec_t *x
        cdef list st
        cdef uint64_t lat
        cdef int proto = FH_OE_PROTO_OUCH50 if self.ver else FH_OE_PROTO_OUCH42
        from feedhandler.pipeline import midnight_ns_for_ts
        rej = self.stats["rejects"]
        for i in range(n):
            x = &d[i]
            if x.status != R_OK:
                rej[REASONS[x.status]] += 1
                continue
            if x.event == 0:
                self.stats["session_messages"] += 1
                continue
            conn = m[i].channel
            key = self._key(conn, &m[i], x.tok, x.ref)
            r = <fh_order_event *> &raw[k * 64]
            memset(r, 0, 64)
            r.hd.length = FH_OWN_LENGTH
            r.hd.rtype = FH_RTYPE_ORDER_EVENT
            r.ts_recv = m[i].ts_recv
            r.sequence = <uint32_t> m[i].sequence
            r.event = x.event
            r.protocol = proto
            r.price = x.price
            r.size = x.qty
            r.side = _side(x.side)
            if x.from_server:
                r.flags |= FH_OE_F_FROM_EXCHANGE
                mid = self.midnight.get(conn)
                if mid is None:
                    mid = self.midnight[conn] = midnight_ns_for_ts(m[i].ts_recv) if m[i].ts_recv else 0
                r.hd.ts_event = <uint64_t> mid + x.ts
            else:
                r.hd.ts_event = FH_UNDEF_TIMESTAMP
            if m[i].flags & 0x01:
                r.flags |= FH_OE_F_POSS_DUP
            if m[i].flags & 0x02:
                r.flags |= FH_OE_F_AFTER_GAP
            r.client_ref = x.ref if self.ver else (_fnv32(m[i].data + x.tok, 14) if x.tok >= 0 else 0)
            # state: [instrument_id, side, price, leaves, order_ref, pending_ts, terminal event number (0: not)]
            ev = x.event
            if ev == 78:                                    # N: Enter Order
                iid = self._instrument(&m[i], x.sym)
                st = [iid, r.side, x.price, 0, 0, m[i].ts_recv, 0]
                self.orders[key] = st
            elif ev == 80 or ev == 82:                      # P replace request / R replaced
                old = self._key(conn, &m[i], x.tok2, x.ref2)
                st0 = self.orders.get(old)
                st = self.orders.get(key)
                if st is None:
                    st = list(st0) if st0 is not None else [0, 78, FH_UNDEF_PRICE, 0, 0, 0, 0]
                    st[6] = 0
                    self.orders[key] = st
                    if st0 is None:
                        r.flags |= FH_OE_F_UNKNOWN_ORDER
                        self.stats["unknown_order"] += 1
                if ev == 80:
                    st[5] = m[i].ts_recv
                    if r.side == 78:
                        r.side = st[1]
                else:
                    if x.sym >= 0:
                        st[0] = self._instrument(&m[i], x.sym)
                    st[1] = r.side
                    st[2] = x.price
                    st[3] = x.qty
                    st[4] = x.order_ref
                    if st0 is not None and old != key:
                        self.orders.pop(old, None)
            else:
                st = self.orders.get(key)
                if st is None:
                    st = [self._instrument(&m[i], x.sym) if x.sym >= 0 else 0, r.side, x.price, 0, 0, 0, 0]
                    self.orders[key] = st
                    r.flags |= FH_OE_F_UNKNOWN_ORDER
                    self.stats["unknown_order"] += 1
                if ev == 65:                                # A accepted
                    st[1] = r.side
                    st[2] = x.price
                    st[3] = x.qty
                    st[4] = x.order_ref
                    if x.sym >= 0 and st[0] == 0:
                        st[0] = self._instrument(&m[i], x.sym)
                elif ev == 67:                              # C canceled (qty = decrement)
                    st[3] = max(0, st[3] - x.qty)
                elif ev == 69:                              # E executed
                    st[3] = max(0, st[3] - x.qty)
                elif ev == 77:                              # M modified: qty is the new open qty
                    st[3] = x.qty
                    if r.side != 78:
                        st[1] = r.side
                elif ev == 88 or ev == 109:                 # X cancel request / m modify request
                    st[5] = m[i].ts_recv
                elif ev == 83:                              # S priority update / restated
                    if x.price != FH_UNDEF_PRICE:
                        st[2] = x.price
                    if x.order_ref:
                        st[4] = x.order_ref
                elif ev == 74:                              # J rejected
                    st[3] = 0
                if r.side == 78:
                    r.side = st[1]
                if r.price == FH_UNDEF_PRICE and ev != 69:
                    r.price = st[2]
            if x.from_server and st[5] and (ev == 65 or ev == 82 or ev == 67 or ev == 74 or ev == 75 or ev == 77):
                lat = m[i].ts_recv - <uint64_t> st[5] if m[i].ts_recv >= <uint64_t> st[5] else 0
                r.latency_ns = <uint32_t> (lat if lat < 0xFFFFFFFF else 0xFFFFFFFF)
                r.flags |= FH_OE_F_LATENCY
                st[5] = 0
            r.hd.instrument_id = <uint32_t> st[0]
            r.order_id = <uint64_t> st[4]
            r.leaves_qty = <uint32_t> st[3]
            if ev == 78:
                r.leaves_qty = x.qty
            if x.from_server and (ev == 67 or ev == 69 or ev == 74) and st[3] == 0:
                self.term_seq += 1              # a terminal state: see sweep_terminal
                st[6] = self.term_seq
            k += 1
        return k

    def sweep_terminal(self, bint force=False):
        """(live, ``term_cap``) Drop from ``orders`` the orders that reached a terminal state (canceled
        to 0, fully executed, rejected) more than ``term_cap`` terminal events ago and are still done
        (no open quantity, no request pending): the last ``term_cap`` stay for a late message. Runs
        when the map reaches twice ``term_cap`` entries, then twice what the last sweep left
        (amortised); the entries dropped are counted in ``term_evicted``. Returns how many."""
        if not self.term_cap or (not force and len(self.orders) < max(2 * self.term_cap, self.term_sweep_at)):
            return 0
        cdef uint64_t limit = self.term_seq - self.term_cap if self.term_seq > <uint64_t> self.term_cap else 0
        n = len(self.orders)
        self.orders = {k: v for k, v in self.orders.items()
                       if not (0 < v[6] <= limit and v[3] == 0 and v[5] == 0)}
        self.term_evicted += n - len(self.orders)
        self.term_sweep_at = 2 * len(self.orders)
        return n - len(self.orders)

    cdef object _key(self, int conn, const fh_msg *m, int32_t tok, uint32_t ref):
        if self.ver:
            return (conn, ref)
        if tok < 0:
            return (conn, b"")
        return (conn, m.data[tok:tok + 14])

    cdef uint32_t _instrument(self, const fh_msg *m, int32_t sym) except? 0:
        if sym < 0:
            return 0
        s = m.data[sym:sym + 8].rstrip(b" ").decode("ascii", "replace")
        iid = self.symbol_map.get(s)
        if iid is None:
            if self.fixed_symbols:
                self.stats["unknown_symbol"] += 1
                return 0
            iid = self.symbol_map[s] = len(self.symbol_map) + 1
        return iid


def detect_version(sessions, table=None, sample=64):
    """"4.2" or "5.0": the version whose decoder rejects fewer of the first ``sample`` messages."""
    if table is None:
        table = sessions.messages()
    t = table[:sample]
    best, best_bad = "5.0", None
    for v in ("5.0", "4.2"):
        d = OuchEventDecoder(v)
        d.decode(sessions, t)
        bad = sum(d.stats["rejects"].values())
        if best_bad is None or bad < best_bad:
            best, best_bad = v, bad
    return best


def replay_stream(path, protocol="ouch50", *, symbols=None, max_ooo_segments=1024, max_ooo_bytes=4 << 20):
    """Decode an OUCH-over-SoupBinTCP capture into order-event records.

    Parameters
    ----------
    path : str or os.PathLike
        pcap / pcapng capture (optionally gzipped) of one or more SoupBinTCP sessions.
    protocol : {"ouch42", "ouch50", "ouch"}
        "ouch" detects the version from the first messages.
    symbols : dict, optional
        {symbol: instrument_id}; without it ids are assigned in order of first appearance.

    Returns
    -------
    (records, stats) : (numpy.ndarray of TICK_DTYPE, dict)
        Records are fh_order_event slots in capture-time order; stats holds the TCP, SoupBinTCP and
        OUCH counters, the logins and the symbol map.
    """
    from feedhandler.framing.tcp import Reassembler
    r = Reassembler(max_ooo_segments=max_ooo_segments, max_ooo_bytes=max_ooo_bytes)
    r.feed_file(path)
    return decode_streams(r, protocol, symbols=symbols)


def decode_streams(reassembler, protocol="ouch50", *, symbols=None):
    """The records and stats of ``replay_stream`` from a Reassembler that has seen the whole capture
    (``replay_stream`` and the feed core's ``TcpSessionFramer`` both end here). Needs the whole
    capture: the version ("ouch") is told from the first messages of every session, and the
    sessions' messages are merged by capture time."""
    from feedhandler.framing.tcp import pair_streams
    from feedhandler.framing.soupbintcp_stream import SoupSessions
    r = reassembler
    streams = r.finish()
    sess = SoupSessions()
    for c, s in pair_streams(streams):
        sess.add_pair(c, s)
    table = sess.messages()
    if protocol in ("ouch", "auto"):
        version = detect_version(sess, table)
    else:
        version = "4.2" if protocol in ("ouch42", "4.2") else "5.0"
    dec = OuchEventDecoder(version, symbols)
    recs = dec.decode(sess, table)
    stats = {"protocol": "ouch42" if version == "4.2" else "ouch50", "tcp": r.stats,
             "soupbintcp": dict(sess.counters), "sessions": sess.sessions, "logins": sess.logins,
             "ouch": dec.stats, "symbols": dict(dec.symbol_map), "records": len(recs)}
    return recs, stats


# ---- synthetic captures -------------------------------------------------------------------------
def synth_messages(n, seed=0, version="4.2"):
    """[(dt_ns, side 'c'|'s', soup packet bytes)] of one OUCH session over SoupBinTCP: login, orders
    with accepts, partial fills, cancels, replaces, rejects, heartbeats, end of session, logout."""
    import random
    from feedhandler.protocols import soupbintcp as sb
    rnd = random.Random(seed)
    v5 = str(version) in ("5.0", "50", "ouch50")
    if v5:
        from feedhandler.protocols import ouch50_spec as spec
    else:
        from feedhandler.protocols import ouch42 as spec
    syms = ["AAPL", "MSFT", "IBM", "QQQ", "SPY"]
    out = [(0, "c", sb.login_request("TRADER", "secret", "", 1)),
           (30_000, "s", sb.login_accepted("SESSION01", 1))]
    live = {}
    ref = 0
    oref = 1000
    t = 34_200 * 10**9 + seed      # ns since midnight (09:30)
    def enc(name, **kw):
        return spec.encode(name, **kw)
    def tok(i):
        return ("T%013d" % i) if not v5 else i
    while len(out) < n:
        t += rnd.randint(5_000, 300_000)
        r = rnd.random()
        if r < 0.05:
            out.append((rnd.randint(1000, 50_000), "s", sb.packet(b"H")))
            out.append((rnd.randint(1000, 50_000), "c", sb.packet(b"R")))
            continue
        if r < 0.45 or not live:
            ref += 1
            sym, side = rnd.choice(syms), rnd.choice(["B", "S"])
            qty, px = rnd.randint(1, 20) * 100, rnd.randint(100_000, 2_000_000)
            if v5:
                m = enc("enter_order", user_ref_num=ref, side=side, quantity=qty, symbol=sym, price=px,
                        time_in_force="0", display="Y", capacity="A", intermarket_sweep="N", cross_type="N",
                        cl_ord_id="CL%d" % ref, appendages=[("firm", "FIRM")] if rnd.random() < 0.5 else [])
            else:
                m = enc("enter_order", order_token=tok(ref), side=side, shares=qty, stock=sym, price=px,
                        time_in_force=0, firm="FIRM", display="Y", capacity="A", intermarket_sweep="N",
                        cross_type="N", customer_type="R")
            out.append((rnd.randint(1000, 50_000), "c", sb.unsequenced(m)))
            lat = rnd.randint(20_000, 120_000)
            if rnd.random() < 0.07:
                m = (enc("order_rejected", timestamp=t, user_ref_num=ref, reason=1, cl_ord_id="CL%d" % ref) if v5
                     else enc("rejected", timestamp=t, order_token=tok(ref), reason="S"))
                out.append((lat, "s", sb.sequenced(m)))
                continue
            oref += 1
            live[ref] = [sym, side, qty, px, oref]
            if v5:
                m = enc("order_accepted", timestamp=t, user_ref_num=ref, side=side, quantity=qty, symbol=sym,
                        price=px, time_in_force="0", display="Y", order_reference_number=oref, capacity="A",
                        intermarket_sweep="N", cross_type="N", order_state="L", cl_ord_id="CL%d" % ref,
                        appendages=[("bbo_weight_indicator", "0")])
            else:
                m = enc("accepted", timestamp=t, order_token=tok(ref), side=side, shares=qty, stock=sym, price=px,
                        time_in_force=0, firm="FIRM", display="Y", order_reference_number=oref, capacity="A",
                        intermarket_sweep="N", cross_type="N", order_state="L", bbo_weight_indicator=" ")
            out.append((lat, "s", sb.sequenced(m)))
            continue
        k = rnd.choice(list(live))
        sym, side, qty, px, o = live[k]
        rr = rnd.random()
        if rr < 0.45:
            fq = min(qty, rnd.randint(1, 5) * 100)
            m = (enc("order_executed", timestamp=t, user_ref_num=k, quantity=fq, price=px, liquidity_flag="A",
                     match_number=rnd.randint(1, 10**12)) if v5 else
                 enc("executed", timestamp=t, order_token=tok(k), executed_shares=fq, execution_price=px,
                     liquidity_flag="A", match_number=rnd.randint(1, 10**12)))
            out.append((rnd.randint(1000, 80_000), "s", sb.sequenced(m)))
            live[k][2] -= fq
            if live[k][2] <= 0:
                del live[k]
        elif rr < 0.75:
            m = enc("cancel_order", user_ref_num=k, quantity=0) if v5 else enc("cancel_order", order_token=tok(k), shares=0)
            out.append((rnd.randint(1000, 50_000), "c", sb.unsequenced(m)))
            m = (enc("order_canceled", timestamp=t, user_ref_num=k, quantity=qty, reason="U") if v5 else
                 enc("canceled", timestamp=t, order_token=tok(k), decrement_shares=qty, reason="U"))
            out.append((rnd.randint(20_000, 120_000), "s", sb.sequenced(m)))
            del live[k]
        else:
            ref += 1
            npx = px + rnd.randint(-500, 500)
            if v5:
                m = enc("replace_order", orig_user_ref_num=k, user_ref_num=ref, quantity=qty, price=npx,
                        time_in_force="0", display="Y", intermarket_sweep="N", cl_ord_id="CL%d" % ref)
            else:
                m = enc("replace_order", existing_order_token=tok(k), replacement_order_token=tok(ref), shares=qty,
                        price=npx, time_in_force=0, display="Y", intermarket_sweep="N")
            out.append((rnd.randint(1000, 50_000), "c", sb.unsequenced(m)))
            oref += 1
            if v5:
                m = enc("order_replaced", timestamp=t, orig_user_ref_num=k, user_ref_num=ref, side=side, quantity=qty,
                        symbol=sym, price=npx, time_in_force="0", display="Y", order_reference_number=oref,
                        capacity="A", intermarket_sweep="N", cross_type="N", order_state="L", cl_ord_id="CL%d" % ref)
            else:
                m = enc("replaced", timestamp=t, replacement_order_token=tok(ref), side=side, shares=qty, stock=sym,
                        price=npx, time_in_force=0, firm="FIRM", display="Y", order_reference_number=oref,
                        capacity="A", intermarket_sweep="N", cross_type="N", order_state="L",
                        previous_order_token=tok(k), bbo_weight_indicator=" ")
            out.append((rnd.randint(20_000, 120_000), "s", sb.sequenced(m)))
            del live[k]
            live[ref] = [sym, side, qty, npx, oref]
    out.append((10_000, "s", sb.packet(b"Z")))
    out.append((10_000, "c", sb.packet(b"O")))
    return out


def synth(path, n=1000, seed=0, version="4.2", *, t0=1_700_000_000_000_000_000, mss=1460):
    """Write a pcap of one OUCH ``version`` session over SoupBinTCP over TCP; returns the packet list."""
    from feedhandler.framing.tcp import TcpConversation
    from feedhandler.capture.pcapwriter import write_pcap
    pk = synth_messages(n, seed, version)
    conv = TcpConversation(client=("10.3.0.2", 52000), server=("10.3.0.1", 15000), mss=mss,
                           isn_c=seed * 104729 + 77, isn_s=0xFFFFFF00 - seed)
    ts = t0
    conv.handshake(ts)
    ts += 10_000
    for dt, side, p in pk:
        ts += dt
        conv.send(ts, side, p)
    conv.close(ts + 1000)
    write_pcap(path, conv.frames, nanosecond=True)
    return pk


# ---- incremental decoding (the feed core's live mode) ----------------------------------------------
DETECT_SAMPLE = 64              # messages held to tell the OUCH version ("ouch"), as detect_version's sample


class OuchLiveDecoder:
    """OUCH over SoupBinTCP decoded as the packets arrive: the incremental session decoder of
    ``framing.tcp.TcpSessionFramer`` (``feedhandler run --file`` / ``--iface``).

    Same SoupBinTCP framing (``soupbintcp_stream.split``), session numbering and OUCH decoder
    (``OuchEventDecoder``) as ``replay_stream``; the whole-capture rules become:

    * **order**: packets complete SoupBinTCP packets in packet order (``Reassembler.track``), both
      directions and every connection interleaved as captured (replay sorts by capture time: the same
      on a capture whose time stamps do not go back; at equal stamps replay puts the client first).
    * **version** (``"ouch"``): told by ``detect_version`` from the first ``DETECT_SAMPLE`` data
      messages of the capture, which are held until then (or until the end of the input), as replay
      tells it from the first messages of its capture-time table; "ouch42" / "ouch50" hold nothing.
    * **sides**: the SYN tells the client (else the larger port, as ``pair_streams``), decided at the
      first bytes of a connection; its index is that of the stream seen first (replay: the client's).
    * **sessions**: a Login Accepted is matched with the latest Login Request of its connection so far
      (replay: the connection's last one); sequenced packets are numbered from it as in replay. The
      highest sequence number of a session name, shared by its connections, moves in packet order
      (replay: connection after connection, so two connections of one session open at the same time
      are numbered there as a reconnection: the second one's packets as replays).
    * **bad input**: bad packet types and lengths, truncated packets at a hole or at the end, TCP holes
      are counted as replay counts them. After a bad packet (and after a TCP hole) framing looks for
      the resync point replay finds on the whole stream: where the bytes received so far cannot decide
      it (a candidate's chain of packets runs into the end of what has arrived), the stream stops there
      and holds the bytes back until enough arrive (at most a chain of ``RESYNC_CHAIN`` packets of up
      to 65 537 bytes), or until a hole, its connection's close or the end of the input makes the
      piece final; so the same bytes are skipped, with the same counters, as replay skips. While a
      stream is held back, its connection's packets from the first held one on wait too (both
      directions: the order lifecycle sees them in packet order) and the connection's streams keep
      their bytes (no trimming). Remaining differences, on a damaged stream only: the held packets come
      out later than the other connections' packets that arrived meanwhile (record order across
      connections; the records themselves are replay's), and a Login Request that arrives during the
      hold is applied before a held Login Accepted (the login tuple names it).
    * symbol ids: the given map, else from 1 in order of first appearance (as replay).

    Memory: once a stream holds ``trim_bytes`` of bytes already decoded (and the version is known),
    it drops them (``TcpStream.discard``), as ``FixLiveDecoder`` does. Once the version is known, a
    connection whose two directions are ``closed`` (FIN both ways with every byte before them
    delivered, or an RST) is retired after its last bytes are decoded, as ``FixLiveDecoder`` retires
    them: a truncated packet left in a stream is counted as at the end of the input, the parse,
    sides, sequencing and midnight state go, the streams leave the reassembler (their counters stay)
    and the order lifecycle entries of retired connections are swept once the map holds
    ``sweep_min`` entries. The counters are those without retirement. Within a connection, an order
    that reached a terminal state (canceled to 0, fully executed, rejected) stays while it is among
    the last ``term_cap`` (default ``fix_stream.TERMINAL_ORDERS``) terminal orders, for a late message;
    older ones leave the map at the next sweep (``OuchEventDecoder.sweep_terminal``; counted in
    ``live["orders_evicted"]``: a message naming one after that is an unknown order, which replay
    would have known). What stays per connection: its
    Login Request / Accepted tuples in ``logins`` (part of the statistics, as replay's).
    """

    def __init__(self, protocol="ouch", symbols=None):
        from feedhandler.framing.tcp import LiveConnections
        from feedhandler.framing.soupbintcp_stream import SoupSessions
        self.protocol = protocol
        self.symbols = symbols
        self.conns = LiveConnections()
        self.sess = SoupSessions()          # counters, sessions, logins (filled here, incrementally)
        self.streams = []                   # as SoupSessions.streams: the "stream" column indexes it
        self.sidx = {}
        self.parse = {}                     # stream -> [pos, piece start, piece counted, holes done]
        self.side = {}                      # connection -> (client, server, conn id)
        self.seq = {}                       # connection -> sequencing state
        self.dec = None
        from feedhandler.protocols.fix_stream import TERMINAL_ORDERS
        self.term_cap = TERMINAL_ORDERS     # (set before the first packet to change it)
        if protocol not in ("ouch", "auto"):
            self.dec = OuchEventDecoder("4.2" if protocol in ("ouch42", "4.2") else "5.0", symbols)
            self.dec.term_cap = self.term_cap
        self.held = []                      # tables held while the version is undecided
        self.held_n = 0
        self.records = 0
        from feedhandler.protocols.fix_stream import TRIM_BYTES
        self.trim_bytes = TRIM_BYTES        # a stream drops the bytes already decoded once they reach this
        self.trimmed = 0
        self.mark_no = 0                    # marks seen so far: the order of the packets
        self._final = False                 # framing the last bytes of closed streams (finish, retire)
        self.hist = {}                      # stream -> (marks, ends) since it stopped at an undecided resync
        self.holding = set()                # connections with a stream held back (see _hold)
        self.cheld = {}                     # connection -> packets waiting for the held stream
        from feedhandler.protocols.fix_stream import SWEEP_MIN
        self.closing = set()                # connections with a FIN / RST seen, not retired yet
        self.dead = set()                   # conn ids (order keys) of retired connections not swept yet
        self.sweep_min = SWEEP_MIN
        self.sweep_at = 0                   # (and twice what the last sweep left)
        self.retired = 0

    # -- framing ------------------------------------------------------------------------------------
    def _frame(self, st, end, nholes, from_server):
        """(payload_off, payload_len, type, reason, after_hole) rows of the packets completed up to ``end``."""
        from feedhandler.framing.soupbintcp_stream import split, packet_status, TRUNCATED, REASONS as SREASONS
        ps = self.parse.get(st)
        if ps is None:
            # [next byte, piece start, piece state, holes done]; offsets into st.data (they move down
            # when the stream discards bytes). Piece state: 0 first piece, 1 after a hole (not counted
            # yet), 3 counted, resync point not decided yet, 4 resynchronised, no packet yet, 2 done.
            ps = self.parse[st] = [0, 0, 0, 0, 0]
        c = self.sess.counters
        out = []
        while True:
            off = st.holes[ps[3]][0] if ps[3] < nholes else None
            limit = end if off is None else off
            if limit > ps[0]:
                state = ps[2]
                if state == 1:
                    c["holes"] += 1
                    state = 3
                resync_first = state == 3
                # the piece is final at a hole or at the end of the input; else a resync point that
                # the bytes so far cannot decide waits for more (split's ``final``)
                final = off is not None or self._final
                rows, consumed = split(st.data, ps[0], limit, from_server, resync_first, final)
                # stopped before the end at a bad packet whose resync point is not decided yet (not a
                # packet still incomplete): the bytes from ``consumed`` are held back
                ps[4] = 0
                if not final and consumed < limit:
                    if resync_first and not rows.shape[0] and consumed == ps[0]:
                        ps[4] = 1               # the resync point after a hole
                    else:
                        ck = packet_status(st.data, consumed, limit, from_server)
                        ps[4] = 1 if ck != 0 and ck != TRUNCATED else 0
                r5 = np.zeros((rows.shape[0], 5), np.int64)
                r5[:, :4] = rows
                reasons = rows[:, 3]
                ok = np.nonzero(reasons == 0)[0]
                bad = reasons[reasons != 0]
                if resync_first and (rows.shape[0] or consumed > ps[0]):
                    state = 4
                    # the bytes skipped to resynchronize right after the hole are the hole's, not errors
                    if rows.shape[0] and reasons[0] != 0:
                        bad = reasons[1:][reasons[1:] != 0]
                if state == 4 and len(ok):
                    r5[ok[0], 4] = 1
                    state = 2
                ps[2] = state
                c["packets"] += len(ok)
                for reason, cnt in zip(*np.unique(bad, return_counts=True)):
                    c[SREASONS[int(reason)]] += int(cnt)
                ps[0] = consumed
                out.append(r5)
            if off is None:
                break
            if off > ps[1]:
                if ps[0] < off:
                    c["truncated"] += 1
                ps[0] = ps[1] = off
                ps[2] = 1
            ps[3] += 1
        return np.concatenate(out) if out else None

    # -- sessions -----------------------------------------------------------------------------------
    def _stream_index(self, st):
        si = self.sidx.get(st)
        if si is None:
            si = self.sidx[st] = len(self.streams)
            self.streams.append(st)
        return si

    def _client(self, i, st, rows, gidx, out):
        """Client packets of one call (vectorized): unsequenced data rows into ``out``; Login Requests
        returned as [(mark, payload)] for the connection's numbering (a Login Accepted reads the latest)."""
        from feedhandler.framing.soupbintcp_stream import F_AFTER_GAP
        c = self.sess.counters
        ok = rows[:, 3] == 0
        t = rows[:, 2]
        data = ok & (t == 85)
        c["unsequenced"] += int(data.sum())
        c["client_heartbeats"] += int((ok & (t == 82)).sum())
        c["logout"] += int((ok & (t == 79)).sum())
        login = ok & (t == 76)
        c["login_requests"] += int(login.sum())
        c["debug"] += int((ok & (t != 85) & (t != 76) & (t != 82) & (t != 79)).sum())
        if data.any():
            flags = np.where(rows[data, 4] != 0, F_AFTER_GAP, 0).astype(np.uint8)
            out.append((st, 0, rows[data, 0], rows[data, 1], np.zeros(int(data.sum()), np.uint64), flags,
                        gidx[data]))
        return [(int(gidx[k]), bytes(st.data[rows[k, 0]:rows[k, 0] + rows[k, 1]])) for k in np.flatnonzero(login)]

    def _apply_login_requests(self, q, logins, before):
        while logins and logins[0][0] < before:
            p = logins.pop(0)[1]
            q["req_sess"] = p[16:26].strip().decode("ascii", "replace")
            s_ = p[26:46].strip()
            q["req_seq"] = int(s_) if s_.isdigit() else 0

    def _server(self, i, st, rows, gidx, out, logins):
        """Server packets of one call: sequenced data numbered from Login Accepted as
        ``SoupSessions.add_pair`` numbers them (runs of 'S' packets vectorized)."""
        from feedhandler.framing.soupbintcp_stream import F_AFTER_GAP, F_DUP, F_NO_LOGIN
        q = self.seq[i]
        conn = self.side[i][2]
        c = self.sess.counters
        ok_idx = np.flatnonzero(rows[:, 3] == 0)
        r = rows[ok_idx]
        g = gidx[ok_idx]
        t = r[:, 2]
        special = np.flatnonzero((t != 83) | (r[:, 4] != 0))
        pos = 0
        bounds = special.tolist() + [len(r)]
        for sp in bounds:
            if sp > pos:                                    # a run of 'S' packets
                m = sp - pos
                c["sequenced"] += m
                flags = np.zeros(m, np.uint8)
                seqs = np.zeros(m, np.uint64)
                if q["gap_flag"]:
                    flags[0] |= F_AFTER_GAP
                    q["gap_flag"] = False
                if not q["have"]:
                    c["no_login_sequenced"] += m
                    flags |= F_NO_LOGIN
                else:
                    sq = q["nxt"] + np.arange(m, dtype=np.int64)
                    dup = sq <= q["last"]
                    nd = int(dup.sum())
                    c["duplicates"] += nd
                    flags[dup] |= F_DUP
                    if nd < m:
                        q["last"] = int(sq[m - 1])
                        if q["st"] is not None:
                            q["st"]["last_seq"] = q["last"]
                    q["nxt"] += m
                    seqs = sq.astype(np.uint64)
                out.append((st, 1, r[pos:sp, 0], r[pos:sp, 1], seqs, flags, g[pos:sp]))
            if sp == len(r):
                break
            # one packet that is not plain sequenced data, or the first after a TCP hole
            off, ln, ty, after = int(r[sp, 0]), int(r[sp, 1]), int(t[sp]), int(r[sp, 4])
            pos = sp + 1
            if after:
                q["have"] = False
                q["gap_flag"] = True
            if ty == 83:
                c["sequenced"] += 1
                fl = 0
                if q["gap_flag"]:
                    fl |= F_AFTER_GAP
                    q["gap_flag"] = False
                seq = 0
                if not q["have"]:
                    c["no_login_sequenced"] += 1
                    fl |= F_NO_LOGIN
                else:
                    if q["nxt"] <= q["last"]:
                        fl |= F_DUP
                        c["duplicates"] += 1
                    else:
                        q["last"] = q["nxt"]
                        if q["st"] is not None:
                            q["st"]["last_seq"] = q["last"]
                    seq = q["nxt"]
                    q["nxt"] += 1
                out.append((st, 1, r[sp:sp + 1, 0], r[sp:sp + 1, 1], np.array([seq], np.uint64),
                            np.array([fl], np.uint8), g[sp:sp + 1]))
            elif ty == 65:
                self._apply_login_requests(q, logins, int(g[sp]))
                if q["st"] is not None:
                    q["st"]["last_seq"] = q["last"]
                c["login_accepted"] += 1
                p = bytes(st.data[off:off + ln])
                sess = p[:10].strip().decode("ascii", "replace")
                s_ = p[10:30].strip()
                q["nxt"] = int(s_) if s_.isdigit() else 0
                q["have"] = q["nxt"] > 0
                ss = q["st"] = self.sess.sessions.setdefault(sess, {"last_seq": 0, "logins": 0, "gaps": []})
                ss["logins"] += 1
                q["last"] = ss["last_seq"]
                if q["last"] and q["nxt"] > q["last"] + 1:
                    ss["gaps"].append((q["last"] + 1, q["nxt"] - q["last"] - 1))
                    c["gap_messages"] += q["nxt"] - q["last"] - 1
                    q["gap_flag"] = True
                if q["req_seq"] and q["req_seq"] != q["nxt"]:
                    c["requested_seq_mismatch"] += 1
                self.sess.logins.append((conn, q["req_sess"], q["req_seq"], sess, q["nxt"]))
            elif ty == 74:
                self._apply_login_requests(q, logins, int(g[sp]))
                c["login_rejected"] += 1
                self.sess.logins.append((conn, q["req_sess"], q["req_seq"], None, 0))
            elif ty == 72:
                c["server_heartbeats"] += 1
            elif ty == 90:
                c["end_of_session"] += 1
            else:
                c["debug"] += 1

    def _hold(self, out):
        """While a stream of a connection is held back at an undecided resync point (``hist``), the
        connection's packets from the first held mark on wait (both directions: the order lifecycle
        sees them in packet order, as replay does); released, with their marks, once it is decided."""
        cut = {}
        for st, h in self.hist.items():
            i = self.conns.index[st]
            if h[0] and (i not in cut or h[0][0] < cut[i]):
                cut[i] = h[0][0]
        res = []
        held = self.cheld
        for item in out:
            i = self.conns.index[item[0]]
            if i in self.holding:
                held.setdefault(i, []).append(item)
            else:
                res.append(item)
        for i in list(self.holding):
            items = held.pop(i, [])
            c = cut.get(i)
            if c is None:
                self.holding.discard(i)
                res.extend(items)
                continue
            keep = []
            for st, fs, off, ln, seq, fl, g in items:
                early = g < c
                if early.all():
                    res.append((st, fs, off, ln, seq, fl, g))
                elif not early.any():
                    keep.append((st, fs, off, ln, seq, fl, g))
                else:
                    late = ~early
                    res.append((st, fs, off[early], ln[early], seq[early], fl[early], g[early]))
                    keep.append((st, fs, off[late], ln[late], seq[late], fl[late], g[late]))
            if keep:
                held[i] = keep
        return res

    def _table(self, marks):
        """MSG_DTYPE rows of the data packets completed by ``marks``, in the order of the packets that
        completed them (each stream framed once per call; a packet belongs to the first mark covering it)."""
        from feedhandler.framing.soupbintcp_stream import MSG_DTYPE
        base = self.mark_no
        self.mark_no += len(marks)
        by_stream = {}
        for gi, (st, end, nh) in enumerate(marks):
            e = by_stream.get(st)
            if e is None:
                e = by_stream[st] = [[], [], 0]
            e[0].append(base + gi)
            e[1].append(end)
            e[2] = nh
        per_conn = {}
        hist = self.hist
        for st, (gs, ends, nh) in by_stream.items():
            h = hist.get(st)
            if h is not None:               # marks since the stream stopped at an undecided resync point
                gs = h[0] + gs
                ends = h[1] + ends
            i = self.conns.index[st]
            if i not in self.side:
                cl, sv = self.conns.oriented(i)
                self.side[i] = (cl, sv, (cl if cl is not None else sv).conn)
                self.seq[i] = {"nxt": 0, "last": 0, "have": False, "gap_flag": False, "st": None,
                               "req_sess": None, "req_seq": None, "logins": []}
            cl, sv, _ = self.side[i]
            from_server = st is sv if sv is not None else (cl is not None and st is not cl)
            rows = self._frame(st, ends[len(ends) - 1], nh, from_server)
            ps = self.parse[st]
            if ps[4]:
                # held back: keep the marks of the bytes after the stop, so that the packets there take
                # the mark (packet order) that completed them once the resync point is decided
                keep = [j for j in range(len(ends)) if ends[j] > ps[0]]
                hist[st] = ([gs[j] for j in keep], [ends[j] for j in keep])
                self.holding.add(i)
            elif h is not None:
                del hist[st]
            if rows is None or not rows.shape[0]:
                continue
            k = np.searchsorted(np.asarray(ends, dtype=np.int64), rows[:, 0] + rows[:, 1], side="left")
            np.minimum(k, len(gs) - 1, out=k)
            per_conn.setdefault(i, []).append((st, bool(from_server), rows, np.asarray(gs, dtype=np.int64)[k]))
        out = []
        for i, items in per_conn.items():
            q = self.seq[i]
            for st, fs, rows, g in items:
                if not fs:
                    q["logins"].extend(self._client(i, st, rows, g, out))
            q["logins"].sort(key=lambda x: x[0])
            for st, fs, rows, g in items:
                if fs:
                    self._server(i, st, rows, g, out, q["logins"])
            self._apply_login_requests(q, q["logins"], self.mark_no)
        if self.holding:
            out = self._hold(out)
        n = sum(len(o[2]) for o in out)
        tab = np.zeros(n, dtype=MSG_DTYPE)
        if not n:
            return tab
        gidx = np.empty(n, np.int64)
        k = 0
        where = {}                          # stream -> row slices (one ts_at call per stream)
        for st, fs, off, ln, seq, fl, g in out:
            m = len(off)
            sl = slice(k, k + m)
            tab["off"][sl] = off
            tab["len"][sl] = ln
            tab["seq"][sl] = seq
            tab["flags"][sl] = fl
            tab["from_server"][sl] = fs
            tab["ptype"][sl] = b"S" if fs else b"U"
            tab["conn"][sl] = self.side[self.conns.index[st]][2]
            tab["stream"][sl] = self._stream_index(st)
            where.setdefault(st, []).append(np.arange(k, k + m))
            gidx[sl] = g
            k += m
        for st, idx in where.items():
            ix = np.concatenate(idx)
            tab["ts_recv"][ix] = st.ts_at(tab["off"][ix].astype(np.int64) + tab["len"][ix].astype(np.int64))
        return tab[np.argsort(gidx, kind="stable")]

    def _decode(self, table, final=False):
        from feedhandler import records
        if self.dec is None:
            if len(table):
                self.held.append(table)
                self.held_n += len(table)
            if self.held_n < DETECT_SAMPLE and not final:
                return records.empty(0)
            table = np.concatenate(self.held) if self.held else table[:0]
            self.held = []
            self.held_n = 0
            self.dec = OuchEventDecoder(detect_version(self, table[:DETECT_SAMPLE], DETECT_SAMPLE), self.symbols)
            self.dec.term_cap = self.term_cap
        if not len(table):
            return records.empty(0)
        recs = self.dec.decode(self, table)
        self.records += len(recs)
        return recs

    def feed_marks(self, reassembler, marks):
        """Records of the packets completed by the segments behind ``marks`` (Reassembler.take_marks)."""
        self.conns.update(reassembler.streams, reassembler.n_created)
        recs = self._decode(self._table(marks))
        if self.dec is not None:            # (held tables point into the streams: no trimming before)
            seen = set()
            for st, _e, _h in marks:
                ps = self.parse.get(st)
                if st in seen or ps is None or ps[0] < self.trim_bytes:
                    continue
                if self.holding and self.conns.index[st] in self.holding:
                    continue                # (packets held back point into both streams: see _hold)
                seen.add(st)
                n = ps[0]
                st.discard(n)
                ps[0] -= n
                ps[1] -= n
                self.trimmed += n
            if reassembler.closing is not None:
                late = self._retire(reassembler)
                if late is not None and len(late):
                    from feedhandler import records
                    recs = records.concat([recs, late]) if len(recs) else late
        return recs

    def _retire(self, reassembler):
        """Retire the closed connections (class docstring; the version is known: no table is held).
        Returns the records of their last bytes framed as final (bytes held back at an undecided resync
        point), or None."""
        idx = self.conns.index
        for st in reassembler.take_closing():
            i = idx.get(st)
            if i is not None:
                self.closing.add(i)
        if not self.closing:
            return None
        ready = []
        for i in sorted(self.closing):
            if i not in self.conns.pairs:
                self.closing.discard(i)
                continue
            cs = self.conns.closed(i)
            if cs is not None:
                self.closing.discard(i)
                ready.append((i, cs))
        if not ready:
            return None
        recs = None
        marks = []
        for i, cs in ready:
            for st in cs:
                ps = self.parse.get(st)
                if ps is not None and ps[0] < len(st.data):
                    marks.append((st, len(st.data), len(st.holes)))
        if marks:
            self._final = True
            try:
                recs = self._decode(self._table(marks))
            finally:
                self._final = False
        gone = set()
        for i, cs in ready:
            for st in cs:
                ps = self.parse.pop(st, None)
                if ps is not None and len(st.data) > ps[1] and ps[0] < len(st.data):
                    self.sess.counters["truncated"] += 1
                gone.add(st)
            side = self.side.pop(i, None)
            self.seq.pop(i, None)
            if side is not None:
                self.dead.add(side[2])
                self.dec.midnight.pop(side[2], None)
            self.conns.retire(i)
            reassembler.retire(cs)
            self.retired += 1
        if gone:
            self.streams = [x for x in self.streams if x not in gone]
            self.sidx = {x: k for k, x in enumerate(self.streams)}
        if self.dead and len(self.dec.orders) >= max(self.sweep_min, self.sweep_at):
            dead = self.dead
            self.dec.orders = {k: v for k, v in self.dec.orders.items() if k[0] not in dead}
            dead.clear()
            self.sweep_at = 2 * len(self.dec.orders)
        return recs

    def finish(self, reassembler):
        """The end of the input: gaps become holes, truncated packets counted, held messages decoded."""
        from feedhandler import records
        reassembler.finish()
        self.conns.update(reassembler.streams, reassembler.n_created)
        marks = reassembler.take_marks()
        # bytes held back (an undecided resync point) or a truncated tail: framed once more as final
        marks += [(st, len(st.data), len(st.holes)) for st, ps in self.parse.items() if ps[0] < len(st.data)]
        self._final = True
        try:
            table = self._table(marks)
        finally:
            self._final = False
        for st, ps in self.parse.items():
            if len(st.data) > ps[1] and ps[0] < len(st.data):
                self.sess.counters["truncated"] += 1
        recs = self._decode(table, True)
        return recs, self.snapshot(reassembler)

    def snapshot(self, reassembler):
        """Statistics so far, shaped as ``decode_streams``'s (``records``: records emitted so far)."""
        dec = self.dec
        version = dec.ver if dec is not None else None
        return {"protocol": "ouch50" if version == 1 else ("ouch42" if version == 0 else self.protocol),
                "tcp": reassembler.stats, "soupbintcp": dict(self.sess.counters),
                "sessions": self.sess.sessions, "logins": self.sess.logins,
                "ouch": dec.stats if dec is not None else OuchEventDecoder("5.0").stats,
                "symbols": dict(dec.symbol_map) if dec is not None else {}, "records": self.records,
                "live": {"held_messages": self.held_n, "connections": self.conns.n_pairs,
                         "version_decided": dec is not None, "bytes_discarded": self.trimmed,
                         "connections_retired": self.retired, "connections_open": len(self.conns.pairs),
                         "tombstones_evicted": reassembler.retirement["tombstones_evicted"],
                         "order_entries": len(dec.orders) if dec is not None else 0,
                         "orders_evicted": int(dec.term_evicted) if dec is not None else 0}}
