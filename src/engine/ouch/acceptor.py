"""OUCH 4.2 over SoupBinTCP: a TCP acceptor that feeds orders into the gateway's OrderPipeline.

Per user (SoupBinTCP username -> gateway account) there is one sequenced stream of server messages:
every OUCH message sent to the user gets the next sequence number and is kept (in memory, and appended
to ``<store_dir>/<user>.soup`` when a directory is given), so a client can log in again asking for any
sequence number and receive every message from there on (the SoupBinTCP re-login/replay). Requested
sequence 0 means "only new messages". Heartbeats: the server sends 'H' after ``heartbeat_s`` without
output and drops a client silent for ``timeout_s``. Logout Request ('O') ends the connection; End of
Session ('Z') is sent to connected clients on stop().

Order semantics (OUCH 4.2): Accepted echoes the entered time in force, firm, display and capacity; order
tokens are day-unique per user (an Enter Order or Replace with a used token is ignored and counted in
``stats["duplicate_tokens"]``); Cancel Order with shares > 0 reduces the order to that size and is
answered with Canceled carrying the decrement; cancels/replaces of unknown or finished tokens are ignored
(``stats["ignored_requests"]``).

State: the token map and the live orders (token, open shares, echoed fields) are rebuilt at start from
the stored streams (a message is stored before it is written), and :meth:`OuchAcceptor.catch_up` reports
the events the exchange journaled that no stored message reports (a crash in between), taken from
``EngineManager.recovered_events``.

Limits: a Login Request within ``LOGIN_TIMEOUT_S`` (10 s) of connecting; SoupBinTCP packets of at most
``MAX_PACKET_BYTES`` (1024) - a longer one closes the connection before its payload is buffered.

Threading: everything runs on one asyncio loop; fills caused by other clients arrive from gateway
worker threads through ``loop.call_soon_threadsafe``. Orders never hold the loop: each request goes to the
pipeline asynchronously (``OrderPipeline.handle_async``) and its answer comes back through the loop; until
then that connection reads nothing more (a user's messages are answered in the order of its requests),
while the loop serves every other user. With several shard servers an order for a stalled shard holds up
only its own user, for at most the router's timeout.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import struct
import threading
import time
from pathlib import Path

from feedhandler.protocols import ouch42, soupbintcp as soup

_log = logging.getLogger("engine.ouch")

#: seconds a connection may take to send a valid Login Request before it is closed
LOGIN_TIMEOUT_S = 10.0
#: largest SoupBinTCP packet (length field value) accepted from a client; the largest OUCH 4.2 input
#: (Enter Order, 49 bytes) and the Login Request (47 bytes) fit many times over. A longer packet ends the
#: connection before its payload is buffered.
MAX_PACKET_BYTES = 1024
#: seconds stop() waits for requests still with the exchange (their answers stored and sent) before it stops
STOP_GRACE_S = 5.0

_REJECT = {"unknown_symbol": b"S", "max_qty": b"Z", "price_band": b"X", "bad_price": b"X", "max_notional": b"Z",
           "bad_qty": b"Z", "busy": b"O", "rate_limited": b"O"}
#: marker of a request's reply in the routed-event queue (see OuchAcceptor._submit)
_REPLY = object()
_CANCEL_REASON = {"user": b"U", "ioc": b"I", "fok": b"I", "stp": b"Q", "expired": b"T"}


def _ns_since_midnight(ns: int | None = None) -> int:
    ns = time.time_ns() if ns is None else ns
    return ns % 86_400_000_000_000


class SoupStream:
    """The sequenced server messages of one user (1-based sequence numbers)."""

    def __init__(self, session: str, path: Path | None = None):
        self.session = session
        self.msgs: list[bytes] = []
        self.path = path
        self._f = None
        if path is not None:
            if path.exists():
                data = path.read_bytes()
                pos = 0
                while pos + 2 <= len(data):
                    (n,) = struct.unpack_from(">H", data, pos)
                    if n == 0 or pos + 2 + n > len(data):
                        break   # torn tail (a message is never empty: zeros are bytes never written)
                    self.msgs.append(data[pos + 2 : pos + 2 + n])
                    pos += 2 + n
                if pos < len(data):
                    # cut it off, or the messages appended from now on would be read as its rest after the
                    # next restart, shifting every later sequence number
                    with open(path, "r+b") as f:
                        f.truncate(pos)
                    _log.warning("%s: a torn last message (%d bytes) was cut off", path, len(data) - pos)
            self._f = open(path, "ab")

    def append(self, msg: bytes) -> int:
        self.msgs.append(msg)
        if self._f is not None:
            self._f.write(struct.pack(">H", len(msg)) + msg)
            self._f.flush()
        return len(self.msgs)

    @property
    def next_seq(self) -> int:
        return len(self.msgs) + 1

    def close(self):
        if self._f is not None:
            self._f.close()


class OuchAcceptor:
    """SoupBinTCP server speaking OUCH 4.2 into an :class:`engine.gateway.OrderPipeline`.

    Parameters
    ----------
    pipeline : OrderPipeline
    users : dict
        username -> (password, account).
    host, port : listen address (port 0: any free port; read :attr:`port` after start()).
    session : str
        SoupBinTCP session name (<= 10 characters).
    store_dir : path, optional
        Where the sequenced streams are persisted.
    """

    def __init__(self, pipeline, users: dict[str, tuple[str, str]], host="127.0.0.1", port=0,
                 session: str | None = None, store_dir=None, heartbeat_s: float = 1.0, timeout_s: float = 15.0,
                 login_timeout_s: float = LOGIN_TIMEOUT_S, max_packet_bytes: int = MAX_PACKET_BYTES,
                 asynchronous: bool = True):
        #: hand requests to the engine thread without waiting (see _submit). The exchange turns it off when its
        #: engine is one in-process shard: nothing can stall alone, and waiting inline saves a loop hop per order
        self.asynchronous = asynchronous
        self.login_timeout_s = login_timeout_s
        self.max_packet_bytes = max_packet_bytes
        self.pipeline = pipeline
        self.users = users
        self.host, self.port = host, port
        self.session = session or time.strftime("%Y%m%d", time.gmtime()) + "01"
        self.store_dir = Path(store_dir) if store_dir else None
        if self.store_dir:
            self.store_dir.mkdir(parents=True, exist_ok=True)
        self.heartbeat_s, self.timeout_s = heartbeat_s, timeout_s
        self.streams: dict[str, SoupStream] = {}
        self.conns: dict[str, asyncio.StreamWriter] = {}
        self._last_out: dict[str, float] = {}
        self._tokens: dict[str, dict[str, int]] = {}   # user -> every token used today -> order id (0: none)
        self._by_oid: dict[int, dict] = {}              # order_id -> live state (token, leaves, echoed fields)
        self._entered: dict[tuple[str, str], dict] = {}  # (user, token) -> entered fields, while entering
        self._reported: set = set()                     # identities of the exchange events reported
        self._routed: collections.deque = collections.deque()   # routed events not yet reported
        self._waiting: set = set()                      # futures of the requests still with the exchange
        self.loop: asyncio.AbstractEventLoop | None = None
        self._server = None
        self._thread = None
        self._hb_task = None
        self.stats = {"logins": 0, "rejected_logins": 0, "messages_in": 0, "bad_messages": 0,
                      "timeouts": 0, "protocol_errors": 0, "unexpected_packets": 0, "disconnects": 0,
                      "duplicate_tokens": 0, "ignored_requests": 0, "orphan_events": 0, "bad_stored_messages": 0,
                      "login_timeouts": 0, "oversized_packets": 0, "caught_up": 0,
                      "unknown_outcomes": 0}
        if self.store_dir:
            for user in self.users:
                self._recover(user)
            engine = getattr(pipeline, "engine", None)
            self.catch_up(getattr(engine, "recovered_events", None) or ())

    # ---- lifecycle -------------------------------------------------------------------------
    async def start_async(self):
        self.loop = asyncio.get_running_loop()
        self._conn_tasks: set = set()

        async def on_conn(reader, writer):
            task = asyncio.current_task()
            self._conn_tasks.add(task)
            try:
                await self._on_conn(reader, writer)
            finally:
                self._conn_tasks.discard(task)

        self._server = await asyncio.start_server(on_conn, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self._hb_task = asyncio.create_task(self._heartbeats())
        for user, (_, account) in self.users.items():
            self.pipeline.register_sink(account, lambda ev, u=user: self._route(u, ev))
        return self

    async def stop_async(self):
        if self._hb_task:
            self._hb_task.cancel()
        for user, w in list(self.conns.items()):
            try:
                w.write(soup.packet(soup.END_OF_SESSION))
                w.close()
            except Exception:  # noqa: BLE001 - the peer may already be gone; we are closing anyway
                pass
        self.conns.clear()
        for t in list(self._conn_tasks):
            t.cancel()
        if self._conn_tasks:
            await asyncio.gather(*self._conn_tasks, return_exceptions=True)
        if self._server:
            self._server.close()
            await self._server.wait_closed()
        for user, (_, account) in self.users.items():
            self.pipeline.register_sink(account, None)
        for s in self.streams.values():
            s.close()

    def start(self) -> "OuchAcceptor":
        ready = threading.Event()

        def run():
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self.start_async())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.stop_async())
            loop.close()

        self._thread = threading.Thread(target=run, name="ouch-acceptor", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    async def _quiesce(self, grace_s: float) -> None:
        """Wait (at most ``grace_s``) until no request is with the exchange."""
        end = time.monotonic() + grace_s
        while self._waiting and time.monotonic() < end:
            await asyncio.sleep(0.01)

    def stop(self):
        """Stop the loop thread, after the requests still with the exchange are answered (stored: at most
        ``STOP_GRACE_S``; an answer missing from a stream is caught up from the journal at the next start)."""
        if self._thread is not None and self.loop is not None:
            try:
                if threading.current_thread() is self._thread:
                    raise RuntimeError("stop() on the acceptor's own loop")
                asyncio.run_coroutine_threadsafe(self._quiesce(STOP_GRACE_S), self.loop).result(STOP_GRACE_S + 1)
            except Exception as e:  # noqa: BLE001 - the loop already gone or the wait timed out: stop anyway
                _log.warning("OUCH: stopping with requests still unanswered (%s)", type(e).__name__)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self._thread = None

    def stream(self, user: str) -> SoupStream:
        s = self.streams.get(user)
        if s is None:
            path = self.store_dir / f"{user}-{self.session}.soup" if self.store_dir else None
            s = self.streams[user] = SoupStream(self.session, path)
        return s

    # ---- connections ---------------------------------------------------------------------------
    async def _heartbeats(self):
        while True:
            await asyncio.sleep(min(0.2, self.heartbeat_s / 2))
            now = time.monotonic()
            for user, w in list(self.conns.items()):
                if now - self._last_out.get(user, 0) >= self.heartbeat_s:
                    self._write(user, soup.packet(soup.SERVER_HEARTBEAT))

    def _write(self, user: str, data: bytes):
        w = self.conns.get(user)
        if w is not None and not w.is_closing():
            w.write(data)
            self._last_out[user] = time.monotonic()

    async def _on_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        framer = soup.Framer()
        user = None
        login_deadline = time.monotonic() + self.login_timeout_s
        try:
            while True:
                wait = self.timeout_s if user is not None else login_deadline - time.monotonic()
                try:
                    if wait <= 0:
                        raise asyncio.TimeoutError
                    data = await asyncio.wait_for(reader.read(65536), wait)
                except asyncio.TimeoutError:
                    if user is None:
                        self.stats["login_timeouts"] += 1   # no Login Request within login_timeout_s
                    else:
                        self.stats["timeouts"] += 1         # no client heartbeat within timeout_s
                    break
                if not data:
                    break
                packets = framer.feed(data)
                buf = framer.buf
                if (len(buf) >= 2 and ((buf[0] << 8) | buf[1]) > self.max_packet_bytes) or any(
                        len(p) + 1 > self.max_packet_bytes for _, p in packets):
                    self.stats["oversized_packets"] += 1
                    _log.info("OUCH: packet longer than %d bytes, connection closed", self.max_packet_bytes)
                    break
                for ptype, payload in packets:
                    if user is None:
                        if ptype != soup.LOGIN_REQUEST:
                            self.stats["unexpected_packets"] += 1
                            return
                        user = self._login(payload, writer)
                        if user is None:
                            await writer.drain()
                            return
                    elif ptype == soup.UNSEQUENCED_DATA:
                        pending = self._on_ouch(user, payload)
                        if pending is not None:
                            await pending        # this user's next request after this one's answer
                    elif ptype == soup.CLIENT_HEARTBEAT:
                        pass
                    elif ptype == soup.LOGOUT_REQUEST:
                        return
                    else:
                        self.stats["unexpected_packets"] += 1
                        return
                await writer.drain()
        except ConnectionError:
            self.stats["disconnects"] += 1
        except soup.SoupError:
            self.stats["protocol_errors"] += 1    # malformed SoupBinTCP framing: the session ends
        finally:
            if user is not None and self.conns.get(user) is writer:
                del self.conns[user]
            writer.close()

    def _login(self, payload: bytes, writer) -> str | None:
        try:
            user, pw, sess, seq = soup.parse_login_request(payload)
        except soup.SoupError:
            writer.write(soup.login_rejected(soup.REJECT_NOT_AUTHORIZED))
            self.stats["rejected_logins"] += 1
            return None
        cred = self.users.get(user)
        if cred is None or cred[0] != pw:
            writer.write(soup.login_rejected(soup.REJECT_NOT_AUTHORIZED))
            self.stats["rejected_logins"] += 1
            return None
        if (sess and sess != self.session) or user in self.conns:
            writer.write(soup.login_rejected(soup.REJECT_SESSION_UNAVAILABLE))
            self.stats["rejected_logins"] += 1
            return None
        st = self.stream(user)
        start = st.next_seq if seq == 0 or seq > st.next_seq else seq
        self.conns[user] = writer
        self.stats["logins"] += 1
        self._write(user, soup.login_accepted(self.session, start))
        for msg in st.msgs[start - 1 :]:
            self._write(user, soup.sequenced(msg))
        return user

    # ---- OUCH -> pipeline ------------------------------------------------------------------------
    def _send(self, user: str, name: str, **fields):
        msg = ouch42.encode(name, timestamp=_ns_since_midnight(), **fields)
        self.stream(user).append(msg)            # stored (and flushed) before it is written
        self._write(user, soup.sequenced(msg))

    def _handle(self, account, user, req) -> dict:
        try:
            return self.pipeline.finish(self.pipeline.handle(account, ("ouch", user), req))
        except Exception as e:  # noqa: BLE001 - a failing pipeline costs this request a reject, not the session
            _log.exception("OUCH: pipeline failed on %s", req.get("rid"))
            return {"status": "rejected", "reason": "engine_error", "text": type(e).__name__}

    def _submit(self, account, user, req, then) -> "asyncio.Future | None":
        """Hand ``req`` to the pipeline; ``then(reply)`` answers it on the loop: now when the pipeline answers
        at once (refused at the edge, busy, an engine run inline) or when called off the acceptor's loop (None
        is returned), else when the engine thread delivers it; the future returned is done after that."""
        loop = self.loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:          # called off the loop (tests drive _on_ouch directly): answered now
            running = None
        if running is None or running is not loop or not self.asynchronous:
            then(self._handle(account, user, req))
            return None
        done = loop.create_future()

        def answer(reply: dict) -> None:                  # the loop
            try:
                then(self.pipeline.finish(reply))
            except Exception:  # noqa: BLE001 - a failing answer costs this request, never the connection
                _log.exception("OUCH %s: answering %s failed", user, req.get("rid"))
            finally:
                if not done.done():
                    done.set_result(None)

        def deliver(_i: int, reply: dict) -> None:       # engine thread
            # through the routed-event queue, in the exchange's order: a fill of the order just accepted
            # (routed from another user's request) is never reported before the Accepted
            self._routed.append((_REPLY, lambda: answer(reply)))
            loop.call_soon_threadsafe(self._drain_routed)

        try:
            replies = self.pipeline.handle_async([(account, ("ouch", user), req, None)], deliver)
        except Exception as e:  # noqa: BLE001 - a failing pipeline costs this request a reject, not the session
            _log.exception("OUCH: pipeline failed on %s", req.get("rid"))
            replies = [{"status": "rejected", "reason": "engine_error", "text": type(e).__name__}]
        if replies[0] is not None:
            then(self.pipeline.finish(replies[0]))
            return None
        self._waiting.add(done)
        done.add_done_callback(self._waiting.discard)
        return done

    def _on_ouch(self, user: str, msg: bytes) -> "asyncio.Future | None":
        """One OUCH message of ``user``; a future when its answer comes later (see _submit)."""
        self.stats["messages_in"] += 1
        account = self.users[user][1]
        try:
            name, f = ouch42.decode(msg, "in")
        except ouch42.OuchError:
            self.stats["bad_messages"] += 1
            return
        tokens = self._tokens.setdefault(user, {})
        if name == "enter_order":
            tok = f["order_token"].decode("latin-1")
            if tok in tokens:
                # OUCH 4.2: order tokens are day-unique per account; an Enter Order with a used token is ignored
                self.stats["duplicate_tokens"] += 1
                _log.info("OUCH %s: duplicate order token %r ignored", user, tok)
                return
            tokens[tok] = 0
            side = {b"B": "B", b"S": "S", b"T": "S", b"E": "S"}.get(f["side"])
            if side is None:
                self._send(user, "rejected", order_token=tok, reason=b"O")
                return
            tif = f["time_in_force"]
            req = {"type": "new", "rid": f"ouch-{user}-{tok}", "client_order_id": tok,
                   "symbol": f["stock"].decode("latin-1"), "side": side, "qty": f["shares"],
                   "price": f["price"] * ouch42.PRICE_TO_RAW, "order_type": "limit",
                   "tif": "ioc" if tif == ouch42.TIF_IOC else "day",
                   "post_only": f["display"] == b"P"}
            # what the Accepted message echoes (the entered values, per the specification)
            self._entered[(user, tok)] = {"tif": tif, "firm": f["firm"], "display": f["display"],
                                          "capacity": f["capacity"], "intermarket_sweep": f["intermarket_sweep"],
                                          "minimum_quantity": f["minimum_quantity"], "cross_type": f["cross_type"]}

            def entered(reply: dict) -> None:
                try:
                    if reply.get("dup"):
                        self.stats["duplicate_tokens"] += 1
                        return
                    self._events(user, reply, tok)
                finally:
                    self._entered.pop((user, tok), None)
            return self._submit(account, user, req, entered)
        tok_field = "existing_order_token" if name == "replace_order" else "order_token"
        tok = f[tok_field].decode("latin-1")
        oid = tokens.get(tok)
        st = self._by_oid.get(oid) if oid else None
        if st is None or st["token"] != tok or st["leaves"] <= 0:
            # OUCH 4.2: a cancel/replace/modify naming an unknown or no longer live token is ignored
            self.stats["ignored_requests"] += 1
            return
        if name == "cancel_order":
            if f["shares"] == 0:
                req = {"type": "cancel", "order_id": oid, "rid": f"ouch-{user}-x-{tok}-{time.monotonic_ns()}"}
            elif f["shares"] >= st["leaves"]:
                self.stats["ignored_requests"] += 1     # the new size is not smaller: no effect
                return
            else:
                # partial cancel: the order's size becomes ``shares``; answered with Canceled (decrement)
                req = {"type": "amend", "order_id": oid, "new_price": None, "new_qty": f["shares"],
                       "rid": f"ouch-{user}-x-{tok}-{time.monotonic_ns()}"}
                st["pending"] = ("partial_cancel", None)
        elif name == "replace_order":
            new_tok = f["replacement_order_token"].decode("latin-1")
            if new_tok in tokens:
                self.stats["duplicate_tokens"] += 1
                _log.info("OUCH %s: replace with used token %r ignored", user, new_tok)
                return
            tokens[new_tok] = 0
            req = {"type": "amend", "order_id": oid, "new_price": f["price"] * ouch42.PRICE_TO_RAW,
                   "new_qty": f["shares"], "client_order_id": new_tok, "rid": f"ouch-{user}-u-{new_tok}"}
            st["pending"] = ("replace", (new_tok, f["time_in_force"], f["display"]))
        else:
            req = {"type": "amend", "order_id": oid, "new_price": None, "new_qty": f["shares"],
                   "rid": f"ouch-{user}-m-{tok}-{time.monotonic_ns()}"}
            st["pending"] = ("modify", None)

        def done(reply: dict) -> None:
            try:
                self._events(user, reply, tok)
            finally:
                st.pop("pending", None)
        return self._submit(account, user, req, done)

    def _route(self, user: str, ev: dict) -> None:
        # engine/gateway threads: queued in exchange order, drained on the loop
        self._routed.append((user, ev))
        self.loop.call_soon_threadsafe(self._drain_routed)

    def _drain_routed(self, before: dict | None = None) -> None:
        """Report queued routed events (fills caused by other users); with ``before`` ({order id: exchange
        seq}) only those of these orders that precede that seq: a request's own events are reported after
        them, so an order's messages follow the exchange's order (a partial cancel's decrement and the
        open shares count a fill that happened before it)."""
        q = self._routed
        if before is None:
            while q:
                user, ev = q.popleft()
                if user is _REPLY:
                    ev()                     # a waiting request's answer (it logs its own failures)
                else:
                    self._on_event(user, ev)
            return
        keep = []
        for _ in range(len(q)):
            user, ev = q.popleft()
            if user is _REPLY:
                keep.append((user, ev))      # another request's answer: its turn comes in a full drain
                continue
            seq = before.get(ev.get("order_id"))
            if seq is not None and ev.get("seq", 0) < seq:
                self._on_event(user, ev)
            else:
                keep.append((user, ev))
        q.extendleft(reversed(keep))

    def _events(self, user, reply, tok):
        evs = reply.get("events") or []
        if evs and self._routed:
            before: dict = {}
            for ev in evs:
                if ev.get("seq") and ev.get("order_id"):
                    before.setdefault(ev["order_id"], ev["seq"])
            if before:
                self._drain_routed(before)
        if reply.get("status") in ("rejected", "busy") and not evs:
            oid = self._tokens.get(user, {}).get(tok)
            if not oid:
                self._send(user, "rejected", order_token=tok, reason=_REJECT.get(reply.get("reason"), b"O"))
            else:
                self._send(user, "cancel_reject", order_token=tok)
            return
        for ev in evs:
            self._on_event(user, ev)

    def _on_event(self, user: str, ev: dict):
        if ev.get("type") == "unknown":
            # the exchange does not know the outcome yet (a shard that did not answer in time): nothing is
            # sent now; the settled outcome comes later as the order's routed events (Exchange._on_settled)
            self.stats["unknown_outcomes"] += 1
            return
        key = self._event_key(ev)
        if key is not None:
            self._reported.add(key)
        t = ev["type"]
        oid = ev.get("order_id", 0)
        st = self._by_oid.get(oid)
        if t == "accepted":
            tok = ev.get("client_order_id") or ""
            ent = self._entered.get((user, tok), {})
            tif = ent.get("tif", ouch42.TIF_SYSTEM_HOURS)
            disp = ent.get("display", b"Y")
            cap = ent.get("capacity", b"A")
            st = self._by_oid[oid] = {"user": user, "token": tok, "side": ev["side"].encode(),
                                      "stock": ev["symbol"], "price": ev["price"] // ouch42.PRICE_TO_RAW,
                                      "tif": tif, "firm": ent.get("firm", b""),
                                      "display": disp if disp.strip() else b"Y",
                                      "capacity": cap if cap.strip() else b"A", "leaves": ev["qty"]}
            self._tokens.setdefault(user, {})[tok] = oid
            self._send(user, "accepted", order_token=tok, side=st["side"], shares=ev["qty"],
                       stock=ev["symbol"], price=st["price"], time_in_force=tif, firm=st["firm"],
                       display=st["display"], order_reference_number=oid, capacity=st["capacity"],
                       intermarket_sweep=ent.get("intermarket_sweep", b"N") or b"N",
                       minimum_quantity=ent.get("minimum_quantity", 0),
                       cross_type=ent.get("cross_type", b"N") or b"N", order_state=b"L",
                       bbo_weight_indicator=b" ")
            return
        if st is None:
            if t == "rejected":
                tok = ev.get("client_order_id") or ""
                self._send(user, "rejected", order_token=tok, reason=_REJECT.get(ev.get("reason"), b"O"))
            else:
                self.stats["orphan_events"] += 1
            return
        if t == "fill":
            st["leaves"] = ev.get("leaves_qty", max(st["leaves"] - ev["qty"], 0))
            self._send(user, "executed", order_token=st["token"], executed_shares=ev["qty"],
                       execution_price=ev["price"] // ouch42.PRICE_TO_RAW,
                       liquidity_flag=b"A" if ev.get("liquidity") == "maker" else b"R",
                       match_number=ev.get("trade_id", 0))
        elif t in ("canceled", "expired"):
            st["leaves"] = 0
            self._send(user, "canceled", order_token=st["token"], decrement_shares=ev["qty"],
                       reason=_CANCEL_REASON.get(ev.get("reason") or ("expired" if t == "expired" else "user"), b"U"))
        elif t == "replaced":
            kind, arg = st.get("pending") or ("modify", None)
            before = st["leaves"]
            st["leaves"] = ev.get("leaves_qty", ev["qty"])
            if kind == "partial_cancel":
                # OUCH 4.2 Cancel Order with shares > 0: the order is reduced; answered with Canceled
                self._send(user, "canceled", order_token=st["token"], decrement_shares=max(before - st["leaves"], 0),
                           reason=b"U")
            elif kind == "replace":
                new_tok, tif, disp = arg
                prev = st["token"]
                st["token"] = new_tok
                st["price"] = ev["price"] // ouch42.PRICE_TO_RAW
                st["tif"] = tif
                if disp.strip():
                    st["display"] = disp
                self._tokens[user][new_tok] = oid
                self._send(user, "replaced", replacement_order_token=new_tok, side=st["side"],
                           shares=st["leaves"], stock=ev["symbol"], price=st["price"], time_in_force=tif,
                           firm=st["firm"], display=st["display"], order_reference_number=oid,
                           capacity=st["capacity"], intermarket_sweep=b"N", minimum_quantity=0, cross_type=b"N",
                           order_state=b"L", previous_order_token=prev, bbo_weight_indicator=b" ")
            else:
                self._send(user, "order_modified", order_token=st["token"], side=st["side"], shares=st["leaves"])
        elif t == "rejected":
            self._send(user, "cancel_reject", order_token=st["token"])

    def state(self) -> dict:
        """Everything that decides this acceptor's answers, canonical (for state hashes): every user's
        tokens, the live orders and the events reported."""
        def plain(v):
            return v.decode("latin-1") if isinstance(v, bytes) else v
        return {"tokens": {u: sorted(t.items()) for u, t in sorted(self._tokens.items())},
                "orders": sorted((oid, sorted((k, plain(v)) for k, v in st.items() if k != "pending"))
                                 for oid, st in self._by_oid.items()),
                "reported": sorted(repr(k) for k in self._reported),
                "streams": {u: self.stream(u).next_seq for u in sorted(self.users)}}

    def state_hash(self) -> str:
        import hashlib
        import json
        return hashlib.sha256(json.dumps(self.state(), sort_keys=True).encode()).hexdigest()

    # ---- recovery ---------------------------------------------------------------------------------
    def _recover(self, user: str) -> None:
        """Rebuild ``user``'s token map and live orders from its stored stream (the sequenced messages we
        sent): tokens stay used for the day, a resting order's token can be canceled after a restart."""
        tokens = self._tokens.setdefault(user, {})
        for msg in self.stream(user).msgs:
            try:
                name, f = ouch42.decode(msg, "out")
            except ouch42.OuchError:
                self.stats["bad_stored_messages"] += 1
                continue
            if name == "accepted":
                tok = f["order_token"].decode("latin-1")
                oid = f["order_reference_number"]
                tokens[tok] = oid
                self._reported.add(("accepted", oid))
                self._by_oid[oid] = {"user": user, "token": tok, "side": f["side"],
                                     "stock": f["stock"].decode("latin-1"), "price": f["price"],
                                     "tif": f["time_in_force"], "firm": f["firm"], "display": f["display"],
                                     "capacity": f["capacity"], "leaves": f["shares"]}
            elif name == "replaced":
                oid = f["order_reference_number"]
                tok = f["replacement_order_token"].decode("latin-1")
                tokens[tok] = oid
                st = self._by_oid.get(oid)
                if st is not None:
                    st.update(token=tok, leaves=f["shares"], price=f["price"], tif=f["time_in_force"],
                              display=f["display"])
                self._reported.add(("replaced", oid, f["shares"]))
            elif name == "rejected":
                tokens.setdefault(f["order_token"].decode("latin-1"), 0)
            elif name in ("canceled", "executed", "order_modified"):
                oid = tokens.get(f["order_token"].decode("latin-1"))
                st = self._by_oid.get(oid) if oid else None
                if st is None:
                    continue
                if name == "canceled":
                    st["leaves"] = max(st["leaves"] - f["decrement_shares"], 0)
                    self._reported.add(("done", oid) if st["leaves"] == 0 else ("replaced", oid, st["leaves"]))
                elif name == "executed":
                    st["leaves"] = max(st["leaves"] - f["executed_shares"], 0)
                    self._reported.add(("fill", oid, f["match_number"]))
                else:
                    st["leaves"] = f["shares"]
                    self._reported.add(("replaced", oid, f["shares"]))

    @staticmethod
    def _event_key(ev: dict):
        """Identity of an exchange event, as its stored report gives it back (see _recover)."""
        t, oid = ev.get("type"), ev.get("order_id")
        if t == "accepted":
            return ("accepted", oid)
        if t == "fill":
            return ("fill", oid, ev.get("trade_id", 0))
        if t in ("canceled", "expired"):
            return ("done", oid)
        if t == "replaced":
            return ("replaced", oid, ev.get("leaves_qty", 0))
        return None

    def catch_up(self, events) -> int:
        """Report the exchange's events (journal replay at start, ``EngineManager.recovered_events``) of
        the users' accounts that no stored message reports: the hook for a crash between the exchange's
        journal write and this acceptor's store. Returns how many were reported."""
        by_account = {acct: user for user, (_, acct) in self.users.items()}
        n = 0
        for ev in events:
            key = self._event_key(ev)
            user = by_account.get(ev.get("account"))
            if key is None or user is None or key in self._reported:
                continue
            st = self._by_oid.get(ev.get("order_id"))
            if ev["type"] == "replaced" and st is not None:
                new_tok = ev.get("request_client_order_id") or ""
                if new_tok and new_tok != st["token"]:
                    st["pending"] = ("replace", (new_tok, st["tif"], b" "))
            self._on_event(user, ev)
            if st is not None:
                st.pop("pending", None)
            self.stats["caught_up"] += 1
            n += 1
        return n
