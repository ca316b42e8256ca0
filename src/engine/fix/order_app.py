"""FIX order entry: NewOrderSingle / OrderCancelRequest / OrderCancelReplaceRequest into the gateway's
OrderPipeline, ExecutionReports and OrderCancelRejects back, per the FIX 4.2 and 4.4 specifications.

What the counterparty gets (``v`` = the session's version):

=====================  =======================================================================================
request / event        answer
=====================  =======================================================================================
D accepted             8: 150=0 39=0, 11 = the D's ClOrdID
D rejected             8: 150=8 39=8, 103=OrdRejReason (always), 58=reason text, 37=NONE
D with a used ClOrdID  8: 150=8 39=8 103=6 (duplicate order); nothing reaches the exchange
D, 38 not an integer   8: 150=8 39=8 103=13 (4.4) / 0 (4.2); never truncated
fill                   8: 150=F (4.4) / 1|2 (4.2), 39=1|2, 32/31 LastQty/LastPx, 14/151/6 after the fill;
                       11 = the order's current ClOrdID (the replacement's after a replace)
F done                 8: 150=4 39=4, 11 = the F's ClOrdID, 41 = the order's ClOrdID it named
G done                 8: 150=5, 39 = the order's status (4.4: 0|1|2; 4.2: 5 Replaced), 11 = the G's
                       ClOrdID (the order's ClOrdID from now on), 41 = the previous one
F/G refused            9: 39 = the order's status (8 when unknown), 434 = 1|2, 102=CxlRejReason:
                       1 unknown order, 0 too late (order done), 6 (4.4) duplicate ClOrdID, else 2 (4.2) /
                       99 (4.4); 58 = reason text
IOC remainder, STP     8: 150=4 39=4 (unsolicited, 11 = the order's ClOrdID); expiry: 150=C 39=C
D with PossResend=Y    8: the order's status (4.4: 150=I; 4.2: 20=3 status) when its ClOrdID is known
=====================  =======================================================================================

Identifiers are checked before anything is sequenced: ClOrdID (11) and OrigClOrdID (41) longer than
``MAX_CLORDID_BYTES`` are refused with the reject above (never reach the exchange, so they cost no
exchange sequence number); the inbound MsgSeqNum is consumed by the answer.

State (what decides the answers) is the session's outbound message store: every ExecutionReport and
OrderCancelReject is stored before it is sent, and :meth:`OrderApplication.bind` rebuilds the order
table (OrderID -> ClOrdID, quantities), the ClOrdIDs the session has used and the ExecID counter by
replaying that store. So a restart keeps cancel-by-OrigClOrdID, duplicate detection and ExecIDs. Events
for a session that is logged out are sequenced into its store as well and reach the counterparty by
resend after its next Logon.
"""
from __future__ import annotations

import logging

from engine.fix.session import BusinessReject, FixSession, UnsupportedMessageType
from engine.fix.message import split_fields, utc_timestamp

_log = logging.getLogger("engine.fix")

PRICE_SCALE = 1_000_000_000
#: longest ClOrdID / OrigClOrdID (bytes) accepted; the exchange's identifier limit (gateway JSON alike)
MAX_CLORDID_BYTES = 64


def price_to_raw(v: bytes) -> int:
    """Decimal string -> int 1e-9 units, exactly (no float). Raises ValueError."""
    s = v.decode("ascii").strip()
    neg = s.startswith("-")
    if neg:
        s = s[1:]
    whole, _, frac = s.partition(".")
    if not (whole or frac) or (whole and not whole.isdigit()) or (frac and not frac.isdigit()) or len(frac) > 9:
        raise ValueError(f"bad decimal {v!r}")
    raw = int(whole or "0") * PRICE_SCALE + int((frac + "000000000")[:9])
    return -raw if neg else raw


def raw_to_price(raw: int) -> str:
    sign = "-" if raw < 0 else ""
    raw = abs(raw)
    whole, frac = divmod(raw, PRICE_SCALE)
    fs = f"{frac:09d}".rstrip("0")
    return f"{sign}{whole}.{fs}" if fs else f"{sign}{whole}"


def qty_to_int(v: bytes | None) -> int:
    """A FIX Qty that must be a whole number of shares: '10' and '10.0' are 10; '10.5' raises ValueError."""
    if v is None:
        raise ValueError("missing quantity")
    raw = price_to_raw(v)
    if raw % PRICE_SCALE:
        raise ValueError(f"quantity {v.decode('latin-1')} is not a whole number")
    if raw <= 0:
        raise ValueError(f"quantity {v.decode('latin-1')} is not positive")
    return raw // PRICE_SCALE


class RequestRefused(Exception):
    """A request refused before it reaches the exchange: (OrdRejReason/CxlRejReason kind, text)."""

    def __init__(self, kind: str, text: str, order=None):
        super().__init__(text)
        self.kind, self.text, self.order = kind, text, order


# exchange reasons -> OrdRejReason (4.4 values; 4.2 has 0..8 only, see _ord_rej)
_ORD_REJ = {"unknown_symbol": 1, "bad_instrument": 1, "max_qty": 3, "max_notional": 3, "max_position": 3,
            "price_band": 3, "max_open_orders": 3, "rate_limited": 3, "busy": 99, "duplicate": 6,
            "bad_qty": 13, "bad_price": 99, "unknown_order": 5, "eod": 2}


class _Order:
    __slots__ = ("order_id", "session", "clid", "symbol", "side", "qty", "price", "cum", "notional", "leaves",
                 "status")

    def __init__(self, order_id, session, clid, symbol="", side="1", qty=0, price=0):
        self.order_id, self.session, self.clid = order_id, session, clid
        self.symbol, self.side, self.qty, self.price = symbol, side, qty, price
        self.cum = self.notional = 0
        self.leaves = qty
        self.status = "0"

    @property
    def done(self) -> bool:
        return self.status in ("2", "4", "C", "8")

    def avg_px(self) -> int:
        return self.notional // self.cum if self.cum else 0


class OrderApplication:
    """NewOrderSingle / OrderCancelRequest / OrderCancelReplaceRequest -> OrderPipeline -> ExecutionReports.

    Parameters
    ----------
    pipeline : engine.gateway.OrderPipeline
    accounts : dict
        Counterparty CompID (their SenderCompID) -> gateway account.
    """

    SIDE_IN = {b"1": "B", b"2": "S"}
    SIDE_OUT = {"B": "1", "S": "2"}
    TIF_IN = {b"0": "day", b"1": "gtc", b"3": "ioc", b"4": "fok"}

    def __init__(self, pipeline, accounts: dict[str, str], loop_call=None):
        self.pipeline = pipeline
        self.accounts = accounts          # their_comp_id -> account
        self._exec_n = 0
        self._orders: dict[int, _Order] = {}
        self._clids: dict[bytes, dict[str, int]] = {}      # session target -> ClOrdID -> order id (0: none)
        self._sessions: dict[str, FixSession] = {}         # account -> session
        self._loop_call = loop_call
        self._reported: set = set()       # identities of the exchange events reported (see _event_key)
        self.stats = {"rejects": 0, "cancel_rejects": 0, "duplicates": 0, "refused": 0, "reports": 0,
                      "orphan_events": 0, "caught_up": 0}

    def _account(self, s: FixSession) -> str:
        t = s.target.decode()
        return self.accounts.get(t, t)

    # ---- binding and recovery --------------------------------------------------------------------
    def bind(self, s: FixSession) -> None:
        """Adopt a configured session (called once by the acceptor at construction): its account's
        events are routed to it whether it is logged on or not, and its order state is rebuilt from its
        stored outbound messages."""
        acct = self._account(s)
        self._sessions[acct] = s
        self._clids.setdefault(s.target, {})
        self._recover(s)
        self.pipeline.register_sink(acct, lambda ev, a=acct: self._deliver(a, ev))

    def unbind_all(self) -> None:
        for acct in self._sessions:
            self.pipeline.register_sink(acct, None)

    def _recover(self, s: FixSession) -> None:
        clids = self._clids[s.target]
        fix42 = s.begin == b"FIX.4.2"
        for raw in s.store.history():
            fields = split_fields(raw)
            if fields is None:
                continue
            f: dict[int, bytes] = {}
            for t, v in fields:
                f.setdefault(t, v)
            mt = f.get(35)
            if mt not in (b"8", b"9"):
                continue
            clid = f.get(11, b"").decode("latin-1")
            orig = f.get(41, b"").decode("latin-1")
            eid = f.get(17, b"")
            if eid[:1] == b"E" and eid[1:].isdigit():
                self._exec_n = max(self._exec_n, int(eid[1:]))
            try:
                oid = int(f.get(37, b"0"))
            except ValueError:
                oid = 0
            if clid:
                clids.setdefault(clid, oid)
            if mt == b"9" or not oid:
                continue
            o = self._orders.get(oid)
            et = f.get(150, b"")
            if o is None:
                o = self._orders[oid] = _Order(oid, s.target, orig or clid, f.get(55, b"").decode("latin-1"),
                                              f.get(54, b"1").decode("latin-1"))
                if orig:
                    clids.setdefault(orig, oid)
            if et == b"5" or (et == b"0" and not orig):
                o.clid = clid            # a replacement's ClOrdID names the order from now on
            try:
                o.qty = int(f.get(38, b"0"))
                o.cum = int(f.get(14, b"0"))
                o.leaves = int(f.get(151, b"0"))
                o.notional = price_to_raw(f.get(6, b"0")) * o.cum
                if f.get(44):
                    o.price = price_to_raw(f[44])
            except ValueError:
                pass
            st = f.get(39, b"0").decode("latin-1")
            if st == "5" and fix42:
                st = "1" if o.cum else "0"
            o.status = st
            key = self._report_key(oid, et, f)
            if key is not None:
                self._reported.add(key)

    @staticmethod
    def _report_key(oid: int, exec_type: bytes, f: dict):
        """Identity of the exchange event a stored ExecutionReport reported (None: not an event's report)."""
        if exec_type == b"0":
            return ("accepted", oid)
        if exec_type in (b"F", b"1", b"2"):
            return ("fill", oid, int(f.get(14, b"0")))
        if exec_type in (b"4", b"C"):
            return ("done", oid)
        if exec_type == b"5":
            return ("replaced", oid, f.get(11, b"").decode("latin-1"))
        return None

    @staticmethod
    def _event_key(ev: dict):
        """The same identity for an exchange event (fills are told apart by the CumQty after them)."""
        t, oid = ev.get("type"), ev.get("order_id")
        if t == "accepted":
            return ("accepted", oid)
        if t == "fill":
            return ("fill", oid, ev.get("cum_qty", 0))
        if t in ("canceled", "expired"):
            return ("done", oid)
        if t == "replaced":
            return ("replaced", oid, ev.get("request_client_order_id") or "")
        return None

    def catch_up(self, events) -> int:
        """Report the exchange's events that no stored report covers: the hook for a crash between the
        exchange journaling an event and this application storing its report. ``events`` are the
        exchange's events in sequence order, regenerated by journal replay at start
        (``EngineManager.recovered_events``); those of accounts bound to a session and not yet reported
        are reported now (stored, and sent or resent after the next Logon). Returns how many."""
        n = 0
        for ev in events:
            key = self._event_key(ev)
            if key is None or key in self._reported:
                continue
            oid = ev["order_id"]
            o = self._orders.get(oid)
            s = None
            if o is not None:
                s = next((x for x in self._sessions.values() if x.target == o.session), None)
            s = s or self._sessions.get(ev.get("account"))
            if s is None:
                continue
            request = None
            if o is not None and ev.get("request_client_order_id") and ev["request_client_order_id"] != o.clid \
                    and ev["type"] in ("replaced", "canceled"):
                request = (ev["request_client_order_id"], o.clid)
                self._clids.setdefault(s.target, {})[request[0]] = oid
            self._on_event(s, ev, request)
            self.stats["caught_up"] += 1
            n += 1
        return n

    # ---- session events --------------------------------------------------------------------------
    def on_logon(self, s: FixSession):
        if self._account(s) not in self._sessions:     # a session the acceptor did not bind (tests)
            self.bind(s)

    def on_logout(self, s: FixSession):
        pass     # the session stays bound: its events are stored and resent after the next Logon

    def _deliver(self, acct, ev):
        # called from gateway worker threads: hop onto the session's event loop
        if self._loop_call is not None:
            self._loop_call(self._send_event, acct, ev)
        else:
            self._send_event(acct, ev)

    def _send_event(self, acct, ev):
        o = self._orders.get(ev.get("order_id"))
        s = None
        if o is not None:
            s = next((x for x in self._sessions.values() if x.target == o.session), None)
        s = s or self._sessions.get(acct)
        if s is None:
            self.stats["orphan_events"] += 1
            _log.warning("FIX: event for account %s without a session: %s", acct, ev.get("type"))
            return
        self._on_event(s, ev, None)

    # ---- requests ---------------------------------------------------------------------------------
    def from_app(self, s: FixSession, m):
        t = m.msgtype
        if t not in (b"D", b"F", b"G"):
            raise UnsupportedMessageType()
        clids = self._clids.setdefault(s.target, {})
        clid_b = m.get(11)
        if clid_b is None:
            raise BusinessReject(5, "Conditionally required field missing (11)")
        try:
            self._check_id(clid_b, 11)
            clid = clid_b.decode("ascii")
            if t == b"D":
                if clid in clids:
                    if (m.get(97) == b"Y" or m.get(43) == b"Y") and clids[clid] in self._orders:
                        self._status_report(s, self._orders[clids[clid]])   # a PossResend of an order we have
                        return
                    raise RequestRefused("duplicate", f"duplicate ClOrdID {clid}")
                self._new_order(s, m, clid, clids)
            else:
                self._cancel_replace(s, m, clid, clids)
        except RequestRefused as e:
            self.stats["refused"] += 1
            if e.kind == "duplicate":
                self.stats["duplicates"] += 1
            if t == b"D":
                self._reject_new(s, m, e.kind, e.text)
            else:
                self._cancel_reject(s, m, e.order, e.kind, e.text)

    @staticmethod
    def _check_id(v: bytes, tag: int) -> None:
        if len(v) > MAX_CLORDID_BYTES:
            raise RequestRefused("too_long", f"tag {tag} longer than {MAX_CLORDID_BYTES} bytes ({len(v)})")
        try:
            v.decode("ascii")
        except UnicodeDecodeError:
            raise RequestRefused("bad_id", f"tag {tag} is not ASCII") from None

    def _new_order(self, s, m, clid, clids):
        side = self.SIDE_IN.get(m.get(54))
        if side is None:
            raise RequestRefused("unsupported", f"Side {m.get(54, b'').decode('latin-1')} not supported")
        try:
            qty = qty_to_int(m.get(38))
        except ValueError as e:
            raise RequestRefused("bad_qty", str(e)) from None
        market = m.get(40) == b"1"
        try:
            price = 0 if market else price_to_raw(m.get(44) or b"")
        except ValueError:
            raise RequestRefused("bad_price", "Price (44) missing or malformed") from None
        sym = m.get(55, b"").decode("latin-1")
        tif = self.TIF_IN.get(m.get(59, b"0"))
        if tif is None:
            raise RequestRefused("unsupported", f"TimeInForce {m.get(59).decode('latin-1')} not supported")
        req = {"type": "new", "client_order_id": clid, "symbol": sym, "side": side, "qty": qty,
               "order_type": "market" if market else "limit", "price": price, "tif": tif,
               "post_only": b"6" in (m.get(18) or b"").split(b" "), "rid": "fix-" + clid}
        clids[clid] = 0                      # used from now on, whatever the outcome
        reply = self._handle(s, req)
        events = reply.get("events") or []
        if reply.get("dup"):
            raise RequestRefused("duplicate", f"duplicate ClOrdID {clid}")
        if not events:
            self._reject_new(s, m, reply.get("reason") or "rejected", reply.get("text") or reply.get("reason", ""))
            return
        for ev in events:
            if ev["type"] == "accepted":
                clids[clid] = ev["order_id"]
                self._orders[ev["order_id"]] = _Order(ev["order_id"], s.target, clid, ev.get("symbol", sym),
                                                      self.SIDE_OUT.get(ev.get("side"), "1"), ev.get("qty", qty),
                                                      ev.get("price", price))
            if ev["type"] == "rejected" and ev.get("order_id") not in self._orders:
                self._reject_new(s, m, ev.get("reason") or "rejected", ev.get("text") or ev.get("reason", ""))
            else:
                self._on_event(s, ev, None)

    def _cancel_replace(self, s, m, clid, clids):
        t = m.msgtype
        orig_b = m.get(41)
        if orig_b is None:
            raise RequestRefused("unknown_order", "OrigClOrdID (41) missing")
        self._check_id(orig_b, 41)
        orig = orig_b.decode("ascii")
        if clid in clids:
            raise RequestRefused("duplicate", f"duplicate ClOrdID {clid}")
        oid = clids.get(orig) or 0
        o = self._orders.get(oid)
        if o is None:
            clids[clid] = 0
            raise RequestRefused("unknown_order", f"unknown order {orig}")
        clids[clid] = oid
        if o.done:
            raise RequestRefused("too_late", f"order {orig} is already {'filled' if o.status == '2' else 'done'}", o)
        req = {"type": "cancel" if t == b"F" else "amend", "order_id": oid, "client_order_id": clid,
               "rid": f"fix-{t.decode()}-{clid}"}
        if t == b"G":
            try:
                new_qty = qty_to_int(m.get(38)) if m.get(38) else None
            except ValueError as e:
                raise RequestRefused("bad_qty", str(e), o) from None
            try:
                new_price = price_to_raw(m.get(44)) if m.get(44) else None
            except ValueError:
                raise RequestRefused("bad_price", "Price (44) malformed", o) from None
            if new_qty is not None:
                # FIX OrderQty is the order's total: it cannot go to or below what is already filled
                if new_qty <= o.cum:
                    raise RequestRefused("too_late", f"OrderQty {new_qty} not above CumQty {o.cum}", o)
            if new_qty == o.qty:
                new_qty = None
            if new_price == o.price:
                new_price = None
            # the exchange's amend takes the new open quantity (leaves); FIX OrderQty is the order's total
            req["new_qty"] = None if new_qty is None else new_qty - o.cum
            req["new_price"] = new_price
            if new_qty is None and new_price is None:
                self._replaced_report(s, o, clid, orig)      # nothing to change: the replace is a no-op
                return
        reply = self._handle(s, req)
        events = reply.get("events") or []
        if not events:
            self._cancel_reject(s, m, o, reply.get("reason") or "rejected", reply.get("text") or "")
            return
        for ev in events:
            if ev["type"] == "rejected" and ev.get("order_id") in (oid, 0):
                self._cancel_reject(s, m, o, ev.get("reason") or "rejected", ev.get("text") or "")
            else:
                self._on_event(s, ev, (clid, orig) if ev.get("order_id") == oid else None)

    def _handle(self, s, req) -> dict:
        try:
            return self.pipeline.finish(self.pipeline.handle(self._account(s), s.target, req))
        except Exception as e:  # noqa: BLE001 - a failing pipeline costs this request a reject, never the session
            _log.exception("FIX: pipeline failed on %s", req.get("rid"))
            return {"status": "rejected", "reason": "engine_error", "text": f"{type(e).__name__}"}

    # ---- answers ------------------------------------------------------------------------------------
    def _exec_id(self) -> str:
        self._exec_n += 1
        return f"E{self._exec_n}"

    @staticmethod
    def _ord_rej(s: FixSession, kind: str) -> int:
        code = _ORD_REJ.get(kind, 99)
        if s.begin == b"FIX.4.2" and code > 8:
            code = 0     # FIX 4.2 has no 'Other': Broker option
        return code

    @staticmethod
    def _cxl_rej(s: FixSession, kind: str) -> int:
        fix42 = s.begin == b"FIX.4.2"
        if kind == "unknown_order":
            return 1
        if kind == "too_late":
            return 0
        if kind == "duplicate" and not fix42:
            return 6
        return 2 if fix42 else 99

    def _reject_new(self, s, m, kind: str, text: str):
        self.stats["rejects"] += 1
        clid = m.get(11, b"")[:MAX_CLORDID_BYTES]
        body = [(37, "NONE"), (11, clid), (17, self._exec_id())]
        if s.begin == b"FIX.4.2":
            body.append((20, "0"))
        body += [(150, "8"), (39, "8"), (103, self._ord_rej(s, kind))]
        body.append((55, m.get(55) or "[N/A]"))
        body.append((54, m.get(54) or "1"))
        if m.get(38) is not None:
            body.append((38, m.get(38)))
        body += [(151, 0), (14, 0), (6, 0), (60, utc_timestamp()), (58, text or kind)]
        s.send_app(b"8", body)

    def _cancel_reject(self, s, m, o: _Order | None, kind: str, text: str):
        self.stats["cancel_rejects"] += 1
        if o is None and kind not in ("duplicate", "too_long", "bad_id"):
            kind = "unknown_order"
        body = [(37, o.order_id if o is not None else "NONE"), (11, m.get(11, b"")[:MAX_CLORDID_BYTES]),
                (41, (m.get(41) or b"NONE")[:MAX_CLORDID_BYTES]), (39, o.status if o is not None else "8"),
                (434, "1" if m.msgtype == b"F" else "2"), (102, self._cxl_rej(s, kind)), (58, text or kind)]
        s.send_app(b"9", body)

    def _status_report(self, s, o: _Order):
        fix42 = s.begin == b"FIX.4.2"
        body = [(37, o.order_id), (11, o.clid), (17, self._exec_id())]
        body += [(20, "3"), (150, o.status)] if fix42 else [(150, "I")]
        body += [(39, o.status)] + self._order_fields(o) + [(60, utc_timestamp())]
        s.send_app(b"8", body)

    def _order_fields(self, o: _Order) -> list:
        out = [(55, o.symbol), (54, o.side), (38, o.qty)]
        if o.price:
            out.append((44, raw_to_price(o.price)))
        return out

    def _replaced_report(self, s, o: _Order, clid: str, orig: str):
        fix42 = s.begin == b"FIX.4.2"
        o.clid = clid
        self._reported.add(("replaced", o.order_id, clid))
        body = [(37, o.order_id), (11, clid), (41, orig), (17, self._exec_id())]
        if fix42:
            body.append((20, "0"))
        body += [(150, "5"), (39, "5" if fix42 else o.status)] + self._order_fields(o)
        body += [(151, o.leaves), (14, o.cum), (6, raw_to_price(o.avg_px())), (60, utc_timestamp())]
        s.send_app(b"8", body)

    def _on_event(self, s: FixSession, ev: dict, request: tuple[str, str] | None):
        """One engine event of an order -> ExecutionReport. ``request``: (ClOrdID, OrigClOrdID) when the
        event answers this session's cancel/replace request."""
        oid = ev["order_id"]
        o = self._orders.get(oid)
        t = ev["type"]
        if o is None:
            # an order this session did not enter (another transport of the same account)
            o = self._orders[oid] = _Order(oid, s.target, ev.get("client_order_id", ""), ev.get("symbol", ""),
                                           self.SIDE_OUT.get(ev.get("side"), "1"), ev.get("qty", 0),
                                           ev.get("price", 0))
            self._clids.setdefault(s.target, {}).setdefault(o.clid, oid)
        fix42 = s.begin == b"FIX.4.2"
        if t == "rejected":
            return          # rejects of requests are answered by the request path
        if t == "replaced":
            clid, orig = request if request else (ev.get("request_client_order_id") or o.clid, o.clid)
            if ev.get("price"):
                o.price = ev["price"]
            o.leaves = ev.get("leaves_qty", o.leaves)
            o.qty = o.cum + o.leaves
            self._replaced_report(s, o, clid, orig)
            return
        last = []
        if t == "accepted":
            exec_type = o.status = "0"
            o.leaves = ev.get("leaves_qty", ev.get("qty", o.qty)) or o.qty
        elif t == "fill":
            o.cum += ev["qty"]
            o.notional += ev["qty"] * ev["price"]
            o.leaves = ev.get("leaves_qty", 0)
            o.status = "2" if o.leaves == 0 else "1"
            exec_type = o.status if fix42 else "F"
            last = [(32, ev["qty"]), (31, raw_to_price(ev["price"]))]
        elif t in ("canceled", "expired"):
            exec_type = o.status = "4" if t == "canceled" else "C"
            o.leaves = 0
        else:
            _log.warning("FIX: unknown event type %r", t)
            return
        clid = o.clid
        body = [(37, oid), (11, request[0] if request and t == "canceled" else clid)]
        if request and t == "canceled":
            body.append((41, request[1]))
        body.append((17, self._exec_id()))
        if fix42:
            body.append((20, "0"))
        body += [(150, exec_type), (39, o.status)] + self._order_fields(o) + last
        body += [(151, o.leaves), (14, o.cum), (6, raw_to_price(o.avg_px())), (60, utc_timestamp())]
        if t in ("canceled", "expired") and ev.get("reason"):
            body.append((58, ev["reason"]))
        self.stats["reports"] += 1
        key = self._event_key(ev)
        if key is not None:
            self._reported.add(key)
        s.send_app(b"8", body)
