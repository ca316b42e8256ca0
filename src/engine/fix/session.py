"""FIX 4.2/4.4 session layer (acceptor side), transport independent ("sans I/O").

The transport calls :meth:`FixSession.data_received`, :meth:`FixSession.on_timer` (about every
100 ms) and :meth:`FixSession.connection_lost`; the session calls ``send(bytes)`` and
``disconnect()``. Behaviour follows the FIX session specification as QuickFIX implements it, so the
QuickFIX acceptance scenarios (``../shared/data/fix/acceptance``) describe it:

- framing and validation: BodyLength and CheckSum checked (bad ones are ignored, as are messages whose
  first three fields are not 8, 9, 35); data dictionary validation (required tags, tags not defined
  for the message type, empty values, enum values, data formats, repeated tags, header/body order,
  repeating group counts) answered with session Reject (35=3) and the QuickFIX reason texts;
- Logon (first message must be a Logon, else disconnect), Heartbeat, TestRequest, ResendRequest served
  from the persistent store (admin messages replaced by SequenceReset-GapFill, application messages
  resent with PossDupFlag=Y and OrigSendingTime), SequenceReset (gap fill and reset), Reject, Logout;
- sequence numbers: too high -> ResendRequest and the message is queued until the gap is filled; too
  low without PossDupFlag -> Logout and disconnect; PossDup checks of OrigSendingTime;
- SendingTime accuracy (``max_latency_s``) and CompID checks -> Reject + Logout;
- heartbeats and TestRequests when the line is quiet, disconnect after 2.4 heartbeat intervals.

Held messages: an application may answer a message later (``from_app`` calls :meth:`FixSession.hold`, then
:meth:`FixSession.resume` with the continuation on the session's thread when its outcome is known: the order
application does so while the exchange's engine works on an order). Until then the session processes none
of its later inbound messages (they wait, in order, in a backlog; the transport stops reading, see
:attr:`FixSession.held`), and the held message's MsgSeqNum is consumed only after its continuation ran (its
answers stored and sent), exactly as when the application answers at once. So a session's answers keep
the order of its requests; other sessions are not held.

Sequence numbers live in the store (``engine.fix.store.FileStore`` persists them across restarts).
"""
from __future__ import annotations

import logging
import time
from typing import Callable

from feedhandler.protocols import fix as _fix
from feedhandler.protocols.fix_dictionary import FixDictionary
from engine.fix.message import Framer, encode, parse_utc_timestamp, split_fields, utc_timestamp

_log = logging.getLogger("engine.fix")

REJECT_TEXT = {
    0: "Invalid tag number",
    1: "Required tag missing",
    2: "Tag not defined for this message type",
    3: "Undefined Tag",
    4: "Tag specified without a value",
    5: "Value is incorrect (out of range) for this tag",
    6: "Incorrect data format for value",
    7: "Decryption problem",
    8: "Signature problem",
    9: "CompID problem",
    10: "SendingTime accuracy problem",
    11: "Invalid MsgType",
    13: "Tag appears more than once",
    14: "Tag specified out of required order",
    15: "Repeating group fields out of order",
    16: "Incorrect NumInGroup count for repeating group",
}
#: largest FIX message (BodyLength + header + trailer) a session accepts; a longer one ends the connection
#: (its bytes are never buffered past this). See engine.fix.acceptor for all the acceptor's limits.
MAX_MESSAGE_BYTES = 1_048_576
ADMIN_TYPES = frozenset({b"0", b"1", b"2", b"3", b"4", b"5", b"A"})
TRAILER_TAGS = frozenset({93, 89, 10})


class SessionReject(Exception):
    """A message fails session-level validation: answer with Reject (35=3)."""

    def __init__(self, reason: int, tag: int | None = None):
        super().__init__(REJECT_TEXT.get(reason, str(reason)))
        self.reason = reason
        self.tag = tag


class UnsupportedMessageType(Exception):
    """Raised by an application for a valid message type it does not handle (Business Reject 380=3)."""


class BusinessReject(Exception):
    def __init__(self, reason: int, text: str, ref_id: bytes | None = None):
        super().__init__(text)
        self.reason, self.text, self.ref_id = reason, text, ref_id


class InvalidMessage(Exception):
    """Structurally broken message (QuickFIX InvalidMessage): ignored."""


class Msg:
    """A received message: ordered fields plus first-occurrence lookup."""

    __slots__ = ("raw", "fields", "_first", "msgtype", "begin")

    def __init__(self, raw: bytes, fields: list[tuple[int, bytes]]):
        self.raw = raw
        self.fields = fields
        first: dict[int, bytes] = {}
        for t, v in fields:
            first.setdefault(t, v)
        self._first = first
        self.begin = fields[0][1]
        self.msgtype = fields[2][1]

    def get(self, tag: int, default=None):
        return self._first.get(tag, default)

    def has(self, tag: int) -> bool:
        return tag in self._first

    @property
    def seq(self) -> int | None:
        v = self._first.get(34)
        try:
            return int(v) if v is not None else None
        except ValueError:
            return None

    def body(self, header_tags) -> list[tuple[int, bytes]]:
        return [(t, v) for t, v in self.fields[3:] if t not in header_tags and t not in TRAILER_TAGS]


def validate(d: FixDictionary, m: Msg) -> None:
    """Data dictionary validation in QuickFIX's order; raises SessionReject."""
    hdr_tags, fields = d.header_tags, m.fields
    # structure: header fields first, then body, then trailer
    in_body = False
    in_trailer = False
    for t, _ in fields[3:]:
        if t in TRAILER_TAGS:
            in_trailer = True
        elif t in hdr_tags:
            if in_body or in_trailer:
                raise SessionReject(14, t)
        else:
            if in_trailer:
                raise SessionReject(14, t)
            in_body = True
    mdef = d.messages.get(m.msgtype.decode("latin-1"))
    if mdef is None:
        raise SessionReject(11)
    # required fields
    for t in d.header.fields:
        if t in d.header.required and t not in m._first and t not in (10,):
            raise SessionReject(1, t)
    body = m.body(hdr_tags)
    body_tags = {t for t, _ in body}
    for t in mdef.fields:
        if t in mdef.required and t not in body_tags:
            raise SessionReject(1, t)
    # header then body field checks
    seen: set[int] = set()
    for t, v in fields[3:]:
        if t in TRAILER_TAGS or t not in hdr_tags:
            continue
        _check_field(d, t, v, seen)
    _check_body(d, mdef, body)


def _check_field(d: FixDictionary, t: int, v: bytes, seen: set | None) -> None:
    if seen is not None:
        if t in seen:
            raise SessionReject(13, t)
        seen.add(t)
    if v == b"":
        raise SessionReject(4, t)
    f = d.fields.get(t)
    if f is None:
        raise SessionReject(0, t)
    if not d.is_valid_format(t, v):
        raise SessionReject(6, t)
    if f.enums and f.type not in ("MULTIPLEVALUESTRING", "MULTIPLESTRINGVALUE", "MULTIPLECHARVALUE"):
        if v.decode("latin-1") not in f.enums:
            raise SessionReject(5, t)


def _check_body(d: FixDictionary, mdef, body: list) -> None:
    allowed = set(mdef.fields)
    seen: set[int] = set()
    i = 0
    n = len(body)
    while i < n:
        t, v = body[i]
        _check_field(d, t, v, seen)
        if t not in allowed:
            raise SessionReject(2, t)
        i += 1
        g = mdef.groups.get(t)
        if g is not None:
            i = _check_group(d, g, int(v), body, i)


def _check_group(d: FixDictionary, g, count: int, body: list, i: int) -> int:
    members = set(g.fields)
    entries = 0
    seen: set[int] = set()
    n = len(body)
    while i < n and body[i][0] in members:
        t, v = body[i]
        if t == g.delimiter:
            entries += 1
            seen = set()
        elif entries == 0:
            raise SessionReject(15, t)
        _check_field(d, t, v, seen)
        i += 1
        sub = g.groups.get(t)
        if sub is not None:
            i = _check_group(d, sub, int(v), body, i)
    if entries != count:
        raise SessionReject(16, g.counter)
    return i


class FixSession:
    """One FIX session (acceptor). See the module documentation for the behaviour.

    Parameters
    ----------
    dictionary : FixDictionary
    sender_comp_id, target_comp_id : str
        Our CompID (49 on what we send) and the counterparty's.
    store : MemoryStore | FileStore
    app : object
        ``on_logon(session)``, ``on_logout(session)``, ``from_app(session, msg)`` (may raise
        UnsupportedMessageType / BusinessReject / SessionReject).
    reset_on_disconnect : bool
        Reset both sequence numbers when the connection ends (QuickFIX ResetOnDisconnect).
    max_latency_s : int
        Largest accepted |SendingTime - now| (s); 0 disables the check.
    """

    def __init__(self, dictionary: FixDictionary, sender_comp_id: str, target_comp_id: str, store, app,
                 reset_on_disconnect: bool = False, max_latency_s: int = 120, logout_timeout_s: float = 2.0,
                 clock: Callable[[], int] = time.time_ns, reset_on_logon: bool = False,
                 max_message_bytes: int = MAX_MESSAGE_BYTES):
        self.dd = dictionary
        self.begin = dictionary.begin_string.encode()
        self.sender = sender_comp_id.encode()
        self.target = target_comp_id.encode()
        self.store = store
        self.app = app
        self.reset_on_disconnect = reset_on_disconnect
        self.reset_on_logon = reset_on_logon
        self.max_message_bytes = max_message_bytes
        self.app_errors = 0          # application callbacks that raised (answered with a Business Reject)
        self.oversized = 0           # connections ended for a message longer than max_message_bytes
        self.max_latency_ns = max_latency_s * 1_000_000_000
        self.logout_timeout_ns = int(logout_timeout_s * 1e9)
        self.clock = clock
        self.send_bytes: Callable[[bytes], None] = lambda b: None
        self.close_transport: Callable[[], None] = lambda: None
        self.framer = Framer()
        self.ignored = 0
        self._held = None            # the message whose answer the application gives later (hold/resume)
        self._backlog: list = []     # (status, raw) framed while a message is held, in arrival order
        self._release_waiters: list = []
        self._reset_state()

    # ---- state ---------------------------------------------------------------------------------
    def _reset_state(self):
        self.connected = False
        self.received_logon = False
        self.sent_logon = False
        self.sent_logout = False
        self.sent_logout_ns = 0
        self.received_reset = False
        self.resend_range: tuple[int, int] | None = None
        self.queue: dict[int, Msg] = {}
        self.hb_int_ns = 0
        self.last_sent_ns = self.last_recv_ns = self.clock()
        self.test_requests = 0
        self.framer = Framer()
        self._backlog = []           # a held message stays held across connections: its answer is stored

    @property
    def next_sender(self) -> int:
        return self.store.next_sender

    @property
    def next_target(self) -> int:
        return self.store.next_target

    def _set_target(self, n: int):
        self.store.set_seqnums(self.store.next_sender, n)

    def _incr_target(self):
        self.store.set_seqnums(self.store.next_sender, self.store.next_target + 1)

    @property
    def logged_on(self) -> bool:
        return self.received_logon and self.sent_logon

    # ---- transport events ------------------------------------------------------------------------
    def connection_made(self, send: Callable[[bytes], None], close: Callable[[], None]) -> None:
        self._reset_state()
        self.connected = True
        self.send_bytes = send
        self.close_transport = close

    def connection_lost(self) -> None:
        was = self.logged_on
        self.connected = False
        if self.reset_on_disconnect:
            self.store.reset()
        self.received_logon = self.sent_logon = False
        if was and hasattr(self.app, "on_logout"):
            self.app.on_logout(self)

    def disconnect(self) -> None:
        if self.connected:
            self.connected = False
            self.close_transport()
            self.connection_lost()

    def data_received(self, data: bytes) -> None:
        for status, raw in self.framer.feed(data):
            if not self.connected:
                return
            if len(raw) > self.max_message_bytes:
                self._oversized()
                return
            if self._held is not None or self._backlog:
                self._backlog.append((status, raw))     # after the held message, in order
            else:
                self._on_raw(status, raw)
        if self.connected and len(self.framer.buf) > self.max_message_bytes:
            self._oversized()      # an incomplete message already longer than the limit: never buffered on

    # ---- messages answered later (see the module documentation) ----------------------------------
    @property
    def held(self) -> bool:
        """True while a message's answer is pending: the transport should not read more until
        :meth:`when_released` calls back (what it read meanwhile waits in the backlog)."""
        return self._held is not None

    def hold(self, m: Msg) -> None:
        """Application, inside ``from_app(session, m)``: ``m`` is answered later by :meth:`resume`."""
        if self._held is not None:
            raise RuntimeError("a FIX session holds one message at a time")
        self._held = m

    def when_released(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` once no message is held (at once when none is)."""
        if self._held is None:
            fn()
        else:
            self._release_waiters.append(fn)

    def resume(self, m: Msg, cont: Callable[[], None]) -> None:
        """Application, on the session's thread: ``cont()`` answers the held message ``m`` (exceptions as
        from ``from_app``); then its MsgSeqNum is consumed and the messages that waited are processed."""
        if self._held is not m:
            raise RuntimeError("resume() of a message that is not held")
        self._held = None
        try:
            self._next(m, cont=cont)
        finally:
            self._pump()             # what waited is processed (and the transport released) whatever happened

    def _pump(self) -> None:
        q = self._backlog
        while q and self._held is None:
            if not self.connected:
                q.clear()
                break
            status, raw = q.pop(0)
            self._on_raw(status, raw)
        if self._held is None and self._release_waiters:
            waiters, self._release_waiters = self._release_waiters, []
            for fn in waiters:
                fn()

    def _oversized(self):
        self.oversized += 1
        _log.warning("FIX %s: message longer than %d bytes, connection closed",
                     self.target.decode("latin-1"), self.max_message_bytes)
        self.framer.buf.clear()
        self.disconnect()

    # ---- sending ---------------------------------------------------------------------------------
    def _header(self, seq: int, now: int | None = None) -> list:
        return [(34, seq), (49, self.sender), (52, utc_timestamp(now)), (56, self.target)]

    def send(self, msgtype: bytes, body: list, extra_header: list = (), transmit: bool = True) -> int:
        """Send an admin or application message with the next sequence number. The message is stored
        (for resends) before it is written; ``transmit=False`` only stores it (QuickFIX's behaviour for an
        application message while the session is not logged on: the counterparty gets it by resend)."""
        seq = self.store.next_sender
        raw = encode(self.begin, msgtype, self._header(seq) + list(extra_header), body)
        self.store.save(seq, raw)
        self.store.set_seqnums(seq + 1, self.store.next_target)
        if transmit:
            self._write(raw)
        return seq

    def _write(self, raw: bytes):
        self.last_sent_ns = self.clock()
        if self.connected:
            self.send_bytes(raw)

    def _send_logout(self, text: str | None = None):
        self.send(b"5", [(58, text)] if text else [])
        self.sent_logout = True
        self.sent_logout_ns = self.clock()

    def _reject(self, m: Msg, reason: int, tag: int | None = None, text: str | None = None):
        seq = m.seq
        body = []
        if seq is not None:
            body.append((45, seq))
        if text is None:
            text = REJECT_TEXT.get(reason)
        if text:
            body.append((58, text))
        if tag is not None:
            body.append((371, tag))
        if m.msgtype:
            body.append((372, m.msgtype))
        if self.begin > b"FIX.4.2" or reason <= 11:
            body.append((373, reason))
        if m.msgtype not in (b"A", b"4") and seq == self.next_target:
            self._incr_target()
        if not self.received_logon:
            raise InvalidMessage("reject while not logged on")
        self.send(b"3", body, self._reverse_route(m))

    def _business_reject(self, m: Msg, reason: int, text: str, ref_id=None):
        body = [(45, m.seq)]
        if text:
            body.append((58, text))
        body.append((372, m.msgtype))
        if ref_id is not None:
            body.append((379, ref_id))
        body.append((380, reason))
        self.send(b"j", body, self._reverse_route(m))

    _REVERSE = {115: 128, 128: 115, 116: 129, 129: 116, 144: 145, 145: 144}

    def _reverse_route(self, m: Msg) -> list:
        """OnBehalfOf* <-> DeliverTo* of the message being answered (FIX routing, as QuickFIX does)."""
        out = []
        for t, v in m.fields[3:]:
            r = self._REVERSE.get(t)
            if r is not None and v and t in self.dd.header_tags:
                out.append((r, v))
        return out

    # ---- receiving ---------------------------------------------------------------------------------
    def _on_raw(self, status: int, raw: bytes):
        fields = split_fields(raw) if status == _fix.OK else None
        if fields is None or len(fields) < 4 or [f[0] for f in fields[:3]] != [8, 9, 35] or fields[-1][0] != 10:
            self.ignored += 1
            if not self.received_logon and fields and any(t == 35 and v == b"A" for t, v in fields):
                self.disconnect()  # an invalid Logon ends the connection
            return
        m = Msg(raw, fields)
        if not self.received_logon:
            if m.begin != self.begin or m.msgtype != b"A":
                self.disconnect()
                return
            if m.get(49) != self.target or m.get(56) != self.sender:
                self.disconnect()
                return
        self.last_recv_ns = self.clock()
        self._next(m)

    def _next(self, m: Msg, queued: bool = False, cont: Callable[[], None] | None = None):
        try:
            if cont is not None:         # the application's answer to a held message (see resume)
                cont()
                if m.seq == self.next_target:
                    self._incr_target()
                self._next_queued()
                return
            if m.begin != self.begin:
                if m.msgtype == b"5":
                    self._on_logout(m)
                else:
                    self._send_logout("Incorrect BeginString")
                    self._incr_target()
                return
            validate(self.dd, m)
            t = m.msgtype
            if t == b"A":
                self._on_logon(m)
            elif t == b"0":
                if self._verify(m):
                    self._incr_target()
                    self._next_queued()
            elif t == b"1":
                if self._verify(m):
                    self.send(b"0", [(112, m.get(112))])
                    self._incr_target()
                    self._next_queued()
            elif t == b"4":
                self._on_sequence_reset(m)
            elif t == b"5":
                self._on_logout(m)
            elif t == b"2":
                self._on_resend_request(m)
            elif t == b"3":
                if self._verify(m, False, True):
                    self._incr_target()
                    self._next_queued()
            else:
                if self._verify(m):
                    if self._held is m:
                        return           # answered later: resume() consumes its MsgSeqNum
                    self._incr_target()
                    self._next_queued()
        except SessionReject as e:
            if m.msgtype == b"A" and not self.received_logon:
                self.disconnect()
                return
            self._reject(m, e.reason, e.tag)
        except UnsupportedMessageType:
            if self.begin >= b"FIX.4.2":
                if m.seq == self.next_target:
                    self._incr_target()
                self._business_reject(m, 3, "Unsupported Message Type")
            else:
                self._reject(m, 11)
        except BusinessReject as e:
            if m.seq == self.next_target:
                self._incr_target()
            self._business_reject(m, e.reason, e.text, e.ref_id)
        except InvalidMessage:
            self.disconnect()
            return
        except Exception as e:  # noqa: BLE001 - an application bug costs this message a reject, never the session
            self.app_errors += 1
            _log.exception("FIX %s: application failed on MsgSeqNum %s (%s)", self.target.decode("latin-1"),
                           m.seq, m.msgtype.decode("latin-1"))
            if not self.connected or not self.received_logon:
                self.disconnect()
                return
            if m.seq == self.next_target:
                self._incr_target()      # the message was processed (and answered): its number is consumed
            self._business_reject(m, 0, f"Application error: {type(e).__name__}")
        if not queued:
            self._next_queued()

    def _from_callback(self, m: Msg):
        if m.msgtype not in ADMIN_TYPES:
            self.app.from_app(self, m)

    def _good_time(self, m: Msg) -> bool:
        if not self.max_latency_ns:
            return True
        ts = parse_utc_timestamp(m.get(52, b""))
        return ts is not None and abs(self.clock() - ts) <= self.max_latency_ns

    def _valid_logon_state(self, t: bytes) -> bool:
        if t == b"A" and self.received_reset:
            return True
        if (t == b"A" and not self.received_logon) or (t != b"A" and self.received_logon):
            return True
        if t == b"5" and self.sent_logon:
            return True
        if t != b"5" and self.sent_logout:
            return True
        return t in (b"4", b"3")

    def _verify(self, m: Msg, check_high: bool = True, check_low: bool = True) -> bool:
        seq = m.seq
        if not self._valid_logon_state(m.msgtype):
            self.disconnect()
            return False
        if not self._good_time(m):
            self._reject(m, 10)
            self._send_logout()
            return False
        if m.get(49) != self.target or m.get(56) != self.sender:
            self._reject(m, 9)
            self._send_logout()
            return False
        if check_high and seq is not None and seq > self.next_target:
            self._target_too_high(m)
            return False
        if check_low and seq is not None and seq < self.next_target:
            self._target_too_low(m)
            return False
        if (check_high or check_low) and self.resend_range is not None and seq >= self.resend_range[1]:
            self.resend_range = None
        self.test_requests = 0
        self._from_callback(m)
        return True

    def _target_too_high(self, m: Msg):
        seq = m.seq
        self.queue[seq] = m
        if self.resend_range is not None and seq >= self.resend_range[0]:
            return
        begin = self.next_target
        self.send(b"2", [(7, begin), (16, 0 if self.begin >= b"FIX.4.2" else 999999)])
        self.resend_range = (begin, seq - 1)

    def _target_too_low(self, m: Msg):
        if m.get(43) != b"Y":
            text = f"MsgSeqNum too low, expecting {self.next_target} but received {m.seq}"
            self._send_logout(text)
            self.disconnect()
            return
        if m.msgtype != b"4":
            orig = m.get(122)
            if orig is None:
                self._reject(m, 1, 122)
                return
            o, s = parse_utc_timestamp(orig), parse_utc_timestamp(m.get(52, b""))
            if o is not None and s is not None and o > s:
                self._reject(m, 10)
                self._send_logout()

    def _next_queued(self):
        while self.connected and self._held is None and self.next_target in self.queue:
            m = self.queue.pop(self.next_target)
            if m.msgtype in (b"A", b"2"):
                self._incr_target()
            else:
                self._next(m, queued=True)
        # drop stale entries
        for s in [s for s in self.queue if s < self.next_target]:
            del self.queue[s]

    def _on_logon(self, m: Msg):
        if m.get(141) == b"Y":
            self.received_reset = True
            self.store.reset()
        elif self.reset_on_logon:
            self.store.reset()           # QuickFIX ResetOnLogon=Y (acceptor): both numbers back to 1
        if not self._verify(m, False, True):
            return
        self.received_logon = True
        try:
            hb = int(m.get(108, b"30"))
        except ValueError:
            hb = 30
        self.hb_int_ns = hb * 1_000_000_000
        body = [(98, 0), (108, hb)]
        if self.received_reset:
            body.append((141, "Y"))
        logon_seq = self.send(b"A", body)
        self.sent_logon = True
        self.received_reset = False
        seq = m.seq
        if seq is not None and seq > self.next_target and m.get(141) != b"Y":
            self._target_too_high(m)
        else:
            self._incr_target()
            self._next_queued()
        if self.logged_on and hasattr(self.app, "on_logon"):
            self.app.on_logon(self)
        # FIX 4.4 NextExpectedMsgSeqNum (789): what the counterparty missed is retransmitted at once
        nxt = m.get(789)
        if self.logged_on and nxt is not None and nxt.isdigit() and 0 < int(nxt) < logon_seq:
            self._retransmit(int(nxt), logon_seq - 1)   # everything before our Logon response

    def _on_logout(self, m: Msg):
        if not self._verify(m, False, False):
            return
        if not self.sent_logout:
            self._send_logout()
        self._incr_target()
        self.disconnect()

    def _on_sequence_reset(self, m: Msg):
        gap_fill = m.get(123) == b"Y"
        if not self._verify(m, gap_fill, gap_fill):
            return
        try:
            new = int(m.get(36))
        except (TypeError, ValueError):
            raise SessionReject(1, 36) from None
        if new > self.next_target:
            self._set_target(new)
            self._next_queued()
        elif new < self.next_target:
            self._reject(m, 5)

    def _on_resend_request(self, m: Msg):
        if not self._verify(m, False, False):
            return
        self._retransmit(int(m.get(7)), int(m.get(16)))
        seq = m.seq
        if seq == self.next_target:
            self._incr_target()
            self._next_queued()

    def _retransmit(self, begin: int, end: int):
        """Resend stored messages begin..end (0: everything): application messages themselves (PossDupFlag,
        OrigSendingTime), admin messages and holes as SequenceReset-GapFill."""
        last_sent = self.next_sender - 1
        if end == 0 or end > last_sent:
            end = last_sent
        gap_begin = 0
        current = begin
        last = begin - 1
        for seq, raw in self.store.get(begin, end):
            fields = split_fields(raw)
            if fields is None:
                continue
            old = Msg(raw, fields)
            if seq != current and not gap_begin:
                gap_begin = current
            if old.msgtype in ADMIN_TYPES:
                if not gap_begin:
                    gap_begin = seq
            else:
                if gap_begin:
                    self._gap_fill(gap_begin, seq)
                self._resend(old, seq)
                gap_begin = 0
            current = seq + 1
            last = seq
        if gap_begin:
            self._gap_fill(gap_begin, last + 1)
        if end > last:
            self._gap_fill(begin if last < begin else last + 1, min(end + 1, self.next_sender))

    def _gap_fill(self, begin: int, new_seq: int):
        now = self.clock()
        hdr = [(34, begin), (43, "Y"), (49, self.sender), (52, utc_timestamp(now)), (56, self.target),
               (122, utc_timestamp(now))]
        self._write(encode(self.begin, b"4", hdr, [(36, new_seq), (123, "Y")]))

    def _resend(self, old: Msg, seq: int):
        hdr_tags = self.dd.header_tags
        extra = [(t, v) for t, v in old.fields[3:]
                 if t in hdr_tags and t not in (8, 9, 35, 34, 49, 52, 56, 43, 122, 10)]
        hdr = [(34, seq), (43, "Y"), (49, self.sender), (52, utc_timestamp()), (56, self.target),
               (122, old.get(52))] + extra
        self._write(encode(self.begin, old.msgtype, hdr, old.body(hdr_tags)))

    # ---- timers --------------------------------------------------------------------------------
    def on_timer(self) -> None:
        if not self.connected:
            return
        now = self.clock()
        if self.sent_logout and now - self.sent_logout_ns >= self.logout_timeout_ns:
            self.disconnect()
            return
        if not self.received_logon or not self.hb_int_ns:
            return
        hb = self.hb_int_ns
        since_recv = now - self.last_recv_ns
        since_sent = now - self.last_sent_ns
        if since_recv < hb and since_sent < hb:
            return
        if since_recv >= hb * 24 // 10:
            self.disconnect()
            return
        if since_recv >= hb * 12 * (self.test_requests + 1) // 10:
            self.send(b"1", [(112, "TEST")])
            self.test_requests += 1
        elif since_sent >= hb and self.test_requests == 0:
            self.send(b"0", [])

    # ---- application API -------------------------------------------------------------------------
    def send_app(self, msgtype: bytes, body: list, extra_header: list = ()) -> int:
        """Send an application message. While the session is not logged on it is sequenced and stored
        only: the counterparty sees the gap at its next Logon and gets it by ResendRequest (or at once with
        NextExpectedMsgSeqNum), as QuickFIX does. Returns its MsgSeqNum."""
        return self.send(msgtype, body, extra_header, transmit=self.logged_on)
