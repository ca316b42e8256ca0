"""The dict edge of one shard's matching engine, in native code: request dicts -> ``fh_order_req``
records -> journal -> :class:`engine.matching.Engine` -> ``fh_exec`` records -> event dicts.

:class:`ShardCore` is the base of :class:`engine.manager.ShardEngine` (which adds recovery, snapshots and
queries). Everything a request goes through on its way to the book is here, typed, with no intermediate
Python rows or tuples: one validation of the dict writes the C record in place, the journal gets those
64 bytes, the engine applies the buffer, and each event dict is built straight from its ``fh_exec``.

The gateway measured why this matters: on this machine an order request runs after an idle wake-up, with
cold caches, and then costs about twice what the same Python code costs in a hot loop, so the size of the
code a request touches counts as much as its speed (bench/README.md, gateway section).

Semantics (unchanged from the Python version it replaces, see manager.pyi): a request that cannot become a
record is answered with one ``rejected`` event and is neither sequenced nor journaled; state (account
numbers, per-symbol order counters) changes only for requests that pass; ids are deterministic functions of
the input sequence.
"""
import struct
import time

from engine.matching import REASONS
from engine import limits as _limits

from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, realloc
from libc.string cimport memset

from engine.matching cimport (Engine, fh_exec, fh_order_req, FH_EX_CANCELED, FH_EX_EXPIRED, FH_EX_FILL,
                              FH_EX_REJECTED, FH_LIQ_TAKER, FH_ORD_AMEND, FH_ORD_CANCEL, FH_ORD_EOD,
                              FH_ORD_NEW, FH_OF_POST_ONLY, FH_OF_REPRICE, FH_OT_MARKET)

DEF ID_SHIFT = 40
cdef uint64_t ID_MASK = (<uint64_t>1 << ID_SHIFT) - 1
cdef object MAX_QTY = 0x7FFFFFFF
cdef object INT64_MIN = -(2 ** 63)
cdef object INT64_END = 2 ** 63
cdef object UINT64_END = 2 ** 64
cdef Py_ssize_t MAX_ID_BYTES = _limits.MAX_ID_BYTES
cdef Py_ssize_t MAX_ACCOUNT_BYTES = _limits.MAX_ACCOUNT_BYTES
cdef Py_ssize_t MAX_KEY_BYTES = 2 * _limits.MAX_ID_BYTES


cdef inline bint _too_long(str s, Py_ssize_t limit):
    """UTF-8 length above limit (ASCII strings: no encoding)."""
    return len(s) > limit or (not s.isascii() and len(s.encode()) > limit)
cdef int64_t UNDEF_PRICE = 0x7FFFFFFFFFFFFFFF

# string <-> code tables of the dict API (engine.orders holds the same, checked against fh/order.h by
# tests/test_matching_layout.py; these are imported from there, not retyped)
from engine import orders as O

cdef dict KIND = O.KIND
cdef dict ORDER_TYPE = O.ORDER_TYPE
cdef dict TIF = O.TIF
cdef dict STP = O.STP
cdef dict SIDES = {"B": "B", "S": "S", "BUY": "B", "SELL": "S"}
cdef list TYPE_NAME = [O.EXEC_TYPE_NAME.get(i, "") for i in range(256)]
cdef list LIQ_NAME = [O.LIQUIDITY_NAME.get(i, "") for i in range(256)]
cdef list REASON_NAME = [REASONS[i] if i < len(REASONS) else "" for i in range(256)]
cdef list SIDE_STR = [chr(i) for i in range(256)]
_STR = struct.Struct("<H")


#: journal record types: b"R" (version 1: record, account, client order id) and b"Q" (version 2: the same
#: plus the request's dedup key, which replay needs to rebuild the gateway's duplicate-request memory)
REC_V1 = b"R"
REC_V2 = b"Q"


class JournalWriteFailed(RuntimeError):
    """The journal could not take a batch: nothing of it was sequenced or applied (the state is rolled
    back), but the file may hold part of it, so the owner must stop (recovery decides what was written)."""


class BadRequest(ValueError):
    """A request dict that cannot become an order record (answered with a rejected event, not journaled)."""

    def __init__(self, reason: str, text: str):
        super().__init__(text)
        self.reason = reason


def pack_str(s: str) -> bytes:
    """A journal string: little-endian u16 length, UTF-8 bytes."""
    b = s.encode()
    return _STR.pack(len(b)) + b


def reject_event(req: dict, reason: str, text: str) -> dict:
    """The one event answering a request that never reached the engine."""
    return {"type": "rejected", "seq": 0, "order_id": int(req.get("order_id") or 0)
            if isinstance(req.get("order_id"), int) else 0,
            "client_order_id": str(req.get("client_order_id", "")), "request_client_order_id":
            str(req.get("client_order_id", "")), "account": str(req.get("account", "")),
            "symbol": str(req.get("symbol", "")), "side": str(req.get("side", "")), "price": 0, "qty": 0,
            "leaves_qty": 0, "cum_qty": 0, "trade_id": 0, "liquidity": "", "contra_account": "",
            "contra_order_id": 0, "reason": reason, "text": text, "ts_event": 0}


cdef object _int(dict req, str key, object default):
    v = req.get(key, default)
    if v is None:
        raise BadRequest("bad_request", f"missing {key}")
    if type(v) is int:
        return v
    if isinstance(v, bool) or not hasattr(v, "__index__") or isinstance(v, float):
        raise BadRequest("bad_request", f"{key} must be an int (1e-9 fixed point for prices), got {v!r}")
    return v.__index__()     # numpy integers


cdef int _enum(dict req, str key, dict table, str default) except -1:
    v = req.get(key, default)
    if not isinstance(v, str) or v.lower() not in table:
        raise BadRequest("bad_request", f"{key} must be one of {sorted(table)}, got {v!r}")
    return table[v.lower()]


cdef class ShardCore:
    """Typed state of one shard's request path (see the module docstring); subclassed by ShardEngine."""

    #: ``on_journaled(rows)``, set on an instance (None: off): called by :meth:`submit_many` once the batch is
    #: sequenced and committed to the journal and BEFORE the engine applies it, with one ``(request index,
    #: seq, order_id, ts_ns)`` per sequenced request (``ts_ns``: the commit time). The HTTP gateway answers
    #: 202 from it (engine.gateway.pipeline ``journaled``). It must not touch the shard.
    on_journaled = None

    def __dealloc__(self):
        free(self.buf)

    cdef int _reserve(self, size_t n) except -1:
        cdef fh_order_req *grown
        if n > self.cap:
            grown = <fh_order_req *>realloc(self.buf, n * sizeof(fh_order_req))
            if grown == NULL:
                raise MemoryError()
            self.buf = grown
            self.cap = n
        return 0

    cdef uint32_t _account(self, str name) except? 0xFFFFFFFF:
        """Account number for a (validated) name; new names get the next number (journaled input only)."""
        num = self.accounts.get(name)
        if num is None:
            num = len(self.account_names)
            self.accounts[name] = num
            self.account_names.append(name)
        return num

    cdef int _to_record(self, dict req, fh_order_req *r, list metas) except -1:
        """Validate one request and write it into ``*r`` (zeroed by the caller); append (account, clid)
        to ``metas``. Raises BadRequest, leaving the state unchanged."""
        cdef int kind = _enum(req, "type", KIND, "new")
        cdef int otype, tif, stp
        cdef uint8_t flags = 0
        cdef Py_ssize_t inst
        cdef bint reprice
        clid = req.get("client_order_id", "")
        if clid is None:
            clid = ""
        elif not isinstance(clid, str):
            clid = str(clid)
        if _too_long(clid, MAX_ID_BYTES):
            raise BadRequest("bad_request", f"client_order_id longer than {MAX_ID_BYTES} bytes")
        key = req.get("dedup_key") or ""
        if not isinstance(key, str) or _too_long(key, MAX_KEY_BYTES):
            raise BadRequest("bad_request", "dedup_key must be a str of at most 128 bytes")
        ts = _int(req, "ts_recv", 0)
        if not 0 <= ts < UINT64_END:
            raise BadRequest("bad_request", "ts_recv out of range")
        r.ts_recv = ts if ts else time.time_ns()
        if kind == FH_ORD_EOD:
            sym = req.get("symbol")
            if not isinstance(sym, str) or sym not in self.inst:
                raise BadRequest("unknown_symbol", f"unknown symbol {sym!r}")
            r.instrument_id = self.inst[sym]
            r.kind = kind
            r.side = b"B"
            metas.append(("", clid, key))
            return 0
        acct = req.get("account")
        if not isinstance(acct, str):
            raise BadRequest("bad_request", f"account must be a str, got {acct!r}")
        if _too_long(acct, MAX_ACCOUNT_BYTES):
            raise BadRequest("bad_request", f"account longer than {MAX_ACCOUNT_BYTES} bytes")
        if kind == FH_ORD_NEW:
            sym = req.get("symbol")
            if not isinstance(sym, str) or sym not in self.inst:
                raise BadRequest("unknown_symbol", f"unknown symbol {sym!r}")
            side = SIDES.get(str(req.get("side", "")).upper())
            if side is None:
                raise BadRequest("bad_request", f"side must be 'B' or 'S', got {req.get('side')!r}")
            otype = _enum(req, "order_type", ORDER_TYPE, "limit")
            qty = _int(req, "qty", None)
            price = _int(req, "price", 0 if otype == FH_OT_MARKET else None)
            if not 0 < qty <= MAX_QTY or not INT64_MIN <= price < INT64_END:
                raise BadRequest("bad_request", "qty or price out of range")
            if req.get("post_only", False):
                flags |= FH_OF_POST_ONLY
                mode = req.get("post_only_mode")
                if mode is None:
                    reprice = self.reprice
                elif mode in ("reject", "reprice"):
                    reprice = mode == "reprice"
                else:
                    raise BadRequest("bad_request", f"post_only_mode must be reject or reprice, got {mode!r}")
                if reprice:
                    flags |= FH_OF_REPRICE
            inst = self.inst[sym]
            tif = _enum(req, "tif", TIF, "day")
            stp = _enum(req, "stp", STP, "none") if "stp" in req else self.stp
            r.account = self._account(acct)
            n = self.next_n[inst] + 1
            self.next_n[inst] = n
            r.order_id = ((<uint64_t>self.symbol_ids[inst] + 1) << ID_SHIFT) | <uint64_t>n
            r.price = price
            r.qty = qty
            r.instrument_id = inst
            r.kind = kind
            r.side = b"B" if side == "B" else b"S"
            r.order_type = otype
            r.tif = tif
            r.flags = flags
            r.stp = stp
            metas.append((acct, clid, key))
            return 0
        oid = _int(req, "order_id", None)
        li = self.local_of_global.get((oid >> ID_SHIFT) - 1)
        if li is None:
            raise BadRequest("unknown_order", f"order id {oid} belongs to no symbol of this engine")
        r.price = 0
        r.qty = 0
        if kind == FH_ORD_AMEND:
            new_price = req.get("new_price")
            new_qty = req.get("new_qty")
            if new_price is None and new_qty is None:
                raise BadRequest("bad_request", "amend needs new_price and/or new_qty")
            if new_price is None:
                r.price = UNDEF_PRICE
            else:
                p = _int(req, "new_price", None)
                if not INT64_MIN <= p < INT64_END:
                    raise BadRequest("bad_request", "new_price out of range")
                r.price = p
            if new_qty is not None:
                q = _int(req, "new_qty", None)
                if not 0 < q <= MAX_QTY:
                    raise BadRequest("bad_request", "new_qty must be 1..2**31-1")
                r.qty = q
        r.order_id = oid
        r.account = self._account(acct)
        r.instrument_id = li
        r.kind = kind
        r.side = b"B"
        metas.append((acct, clid, key))
        return 0

    def submit_many(self, list reqs, tokens=None):
        """Validate, sequence, journal (one commit), apply. Events per request, in order.

        Sequence numbers (and the per-symbol order counters and account numbers the batch created)
        become the shard's state only once the journal took the batch: if writing it fails, they are
        rolled back and :class:`JournalWriteFailed` is raised (the caller must stop; nothing applied)."""
        cdef Py_ssize_t n = len(reqs), i, k = 0, j
        cdef list out = [None] * n
        cdef list metas = []
        cdef list index = []
        cdef fh_order_req *r
        cdef unsigned long long seq0 = self.seq
        cdef Py_ssize_t n_names = len(self.account_names)
        journal = self.journal
        next_n0 = list(self.next_n) if journal is not None else None
        self._reserve(n if n else 1)
        for i in range(n):
            req = reqs[i]
            r = &self.buf[k]
            memset(r, 0, sizeof(fh_order_req))      # padding included: the journal stores these bytes
            try:
                if type(req) is not dict:
                    raise BadRequest("bad_request", "request must be a dict")
                self._to_record(<dict>req, r, metas)
            except BadRequest as e:
                ev = reject_event(req if isinstance(req, dict) else {}, e.reason, str(e))
                if tokens is not None:
                    ev["token"] = tokens[i]
                out[i] = [ev]
                continue
            r.seq = seq0 + <unsigned long long>k + 1
            index.append(i)
            k += 1
        if k == 0:
            return out
        if journal is not None:
            append = journal.append
            try:
                for j in range(k):
                    acct, clid, key = metas[j]
                    append(REC_V2 + PyBytes_FromStringAndSize(<char *>&self.buf[j], sizeof(fh_order_req))
                           + pack_str(acct or "") + pack_str(clid) + pack_str(key))
                journal.commit()  # durable per policy BEFORE the engine applies anything
            except BaseException as e:
                pending = getattr(journal, "_pending", None)
                if pending is not None:
                    journal.records -= len(pending)
                    pending.clear()
                self.next_n[:] = next_n0
                for name in self.account_names[n_names:]:
                    self.accounts.pop(name, None)
                del self.account_names[n_names:]
                raise JournalWriteFailed(f"journal write failed at seq {seq0 + 1}: {e!r}") from e
        self.seq = seq0 + <unsigned long long>k
        hook = self.on_journaled
        if hook is not None:
            ts = time.time_ns()
            hook([(index[j], self.buf[j].seq, self.buf[j].order_id, ts) for j in range(k)])
        sub_tokens = [tokens[i] for i in index] if tokens is not None else None
        per = self._apply(self.buf, k, metas, sub_tokens)
        for j in range(k):
            out[<Py_ssize_t>index[j]] = per[j]
        return out

    def apply_records(self, recs, list metas):
        """Apply sequenced records that are already journaled (a REQ_DTYPE array or bytes: recovery and
        hot standby); event dicts per record."""
        cdef Py_buffer view
        cdef size_t n
        PyObject_GetBuffer(recs, &view, PyBUF_SIMPLE)
        try:
            if <size_t>view.len % sizeof(fh_order_req) != 0:
                raise ValueError("request buffer is not a whole number of fh_order_req records")
            n = <size_t>view.len // sizeof(fh_order_req)
            if n != <size_t>len(metas):
                raise ValueError("one (account, client order id, dedup key) per record")
            return self._apply(<const fh_order_req *>view.buf, n, metas, None)
        finally:
            PyBuffer_Release(&view)

    cdef list _apply(self, const fh_order_req *p, size_t n, list metas, tokens):
        """Note client order ids, run the engine over p[0:n] (GIL released), build the event dicts."""
        cdef Engine eng = self.engine
        cdef size_t i, n_out
        cdef const fh_exec *e
        cdef uint64_t first_seq, tid
        cdef dict clordid = self.clordid
        cdef list names = self.account_names
        cdef Py_ssize_t n_names = len(names)
        cdef list symbols = self.symbols
        cdef list symbol_ids = self.symbol_ids
        cdef list per = [[] for _ in range(n)]
        cdef list mine
        cdef dict ev
        for i in range(n):
            if p[i].kind == FH_ORD_NEW:
                clordid[p[i].order_id] = metas[i][1]
        if eng.busy:
            raise RuntimeError("Engine entered from two threads at once (an Engine has one owner)")
        eng.busy = True
        eng.n_out = 0
        try:
            with nogil:
                eng.run(p, n)
        finally:
            eng.busy = False
        n_out = eng.n_out
        first_seq = p[0].seq if n else 0
        for j in range(n_out):
            e = &eng.out[j]
            i = <size_t>(e.seq - first_seq)
            req_clid = metas[i][1]
            sym = symbols[e.instrument_id]
            tid = e.trade_id
            if tid:
                tid = (<uint64_t>symbol_ids[e.instrument_id] << ID_SHIFT) | (tid & ID_MASK)
            oid = e.order_id
            clid = clordid.get(oid, req_clid if e.order_id == p[i].order_id else "")
            ev = {"type": TYPE_NAME[e.type], "seq": e.seq, "order_id": oid, "client_order_id": clid,
                  "request_client_order_id": req_clid,
                  "account": names[e.account] if e.account < n_names else "",
                  "symbol": sym, "side": SIDE_STR[<uint8_t>e.side], "price": e.price, "qty": e.qty,
                  "leaves_qty": e.leaves_qty, "cum_qty": e.cum_qty, "trade_id": tid,
                  "liquidity": LIQ_NAME[e.liquidity],
                  "contra_account": names[e.contra_account] if e.contra_account and e.contra_account < n_names
                  else "",
                  "contra_order_id": e.contra_order_id, "reason": REASON_NAME[e.reason], "ts_event": e.ts_event}
            if tokens is not None:
                ev["token"] = tokens[i]
            if e.type == FH_EX_FILL and e.liquidity == FH_LIQ_TAKER:
                self.last_trades[sym] = (e.price, e.qty)
            if ((e.type == FH_EX_FILL or e.type == FH_EX_CANCELED or e.type == FH_EX_EXPIRED) and e.leaves_qty == 0) \
                    or (e.type == FH_EX_REJECTED and p[i].kind == FH_ORD_NEW):
                clordid.pop(oid, None)
            mine = <list>per[i]
            mine.append(ev)
        return per
