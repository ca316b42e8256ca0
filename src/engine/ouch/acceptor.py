"""OUCH 4.2 over SoupBinTCP: a TCP acceptor that feeds orders into the gateway's OrderPipeline.

Per user (SoupBinTCP username -> gateway account) there is one sequenced stream of server messages:
every OUCH message sent to the user gets the next sequence number and is kept (in memory, and appended
to ``<store_dir>/<user>.soup`` when a directory is given), so a client can log in again asking for any
sequence number and receive every message from there on (the SoupBinTCP re-login/replay). Requested
sequence 0 means "only new messages". Heartbeats: the server sends 'H' after ``heartbeat_s`` without
output and drops a client silent for ``timeout_s``. Logout Request ('O') ends the connection; End of
Session ('Z') is sent to connected clients on stop().

Threading: everything runs on one asyncio loop; fills caused by other clients arrive from gateway
worker threads through ``loop.call_soon_threadsafe``.
"""
from __future__ import annotations

import asyncio
import struct
import threading
import time
from pathlib import Path

from feedhandler.protocols import ouch42, soupbintcp as soup

_REJECT = {"unknown_symbol": b"S", "max_qty": b"Z", "price_band": b"X", "bad_price": b"X", "max_notional": b"Z",
           "bad_qty": b"Z", "busy": b"O", "rate_limited": b"O"}
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
                    if pos + 2 + n > len(data):
                        break   # torn tail
                    self.msgs.append(data[pos + 2 : pos + 2 + n])
                    pos += 2 + n
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
                 session: str | None = None, store_dir=None, heartbeat_s: float = 1.0, timeout_s: float = 15.0):
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
        self._orders: dict[str, dict] = {}       # user -> {token: order_id}
        self._by_oid: dict[int, dict] = {}        # order_id -> state
        self.loop: asyncio.AbstractEventLoop | None = None
        self._server = None
        self._thread = None
        self._hb_task = None
        self.stats = {"logins": 0, "rejected_logins": 0, "messages_in": 0, "bad_messages": 0,
                      "timeouts": 0, "protocol_errors": 0, "unexpected_packets": 0, "disconnects": 0}

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
            self.pipeline.register_sink(account, lambda ev, u=user: self.loop.call_soon_threadsafe(self._on_event, u, ev))
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

    def stop(self):
        if self._thread is not None and self.loop is not None:
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
        try:
            while True:
                try:
                    data = await asyncio.wait_for(reader.read(65536), self.timeout_s)
                except asyncio.TimeoutError:
                    self.stats["timeouts"] += 1       # no client heartbeat within timeout_s
                    break
                if not data:
                    break
                for ptype, payload in framer.feed(data):
                    if user is None:
                        if ptype != soup.LOGIN_REQUEST:
                            self.stats["unexpected_packets"] += 1
                            return
                        user = self._login(payload, writer)
                        if user is None:
                            await writer.drain()
                            return
                    elif ptype == soup.UNSEQUENCED_DATA:
                        self._on_ouch(user, payload)
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
        self.stream(user).append(msg)
        self._write(user, soup.sequenced(msg))

    def _on_ouch(self, user: str, msg: bytes):
        self.stats["messages_in"] += 1
        account = self.users[user][1]
        try:
            name, f = ouch42.decode(msg, "in")
        except ouch42.OuchError:
            self.stats["bad_messages"] += 1
            return
        tokens = self._orders.setdefault(user, {})
        if name == "enter_order":
            tok = f["order_token"].decode("ascii", "replace")
            side = {b"B": "B", b"S": "S", b"T": "S", b"E": "S"}.get(f["side"])
            if side is None:
                self._send(user, "rejected", order_token=tok, reason=b"O")
                return
            req = {"type": "new", "rid": f"ouch-{user}-{tok}", "client_order_id": tok,
                   "symbol": f["stock"].decode("ascii", "replace"), "side": side, "qty": f["shares"],
                   "price": f["price"] * ouch42.PRICE_TO_RAW, "order_type": "limit",
                   "tif": "ioc" if f["time_in_force"] == ouch42.TIF_IOC else "day",
                   "post_only": f["display"] == b"P"}
            self._pending_enter = {"token": tok, "stock": f["stock"], "firm": f["firm"], "display": f["display"],
                                    "capacity": f["capacity"], "tif": f["time_in_force"], "user": user}
            reply = self.pipeline.finish(self.pipeline.handle(account, ("ouch", user), req))
            if reply.get("dup"):
                return   # OUCH: a duplicate token is ignored
            self._events(user, reply, tok)
        elif name in ("cancel_order", "replace_order", "modify_order"):
            tok_field = "existing_order_token" if name == "replace_order" else "order_token"
            tok = f[tok_field].decode("ascii", "replace")
            oid = tokens.get(tok)
            if oid is None:
                return   # unknown token: OUCH ignores it
            if name == "cancel_order" and f["shares"] == 0:
                req = {"type": "cancel", "order_id": oid, "rid": f"ouch-{user}-x-{tok}-{time.monotonic_ns()}"}
            elif name == "replace_order":
                new_tok = f["replacement_order_token"].decode("ascii", "replace")
                req = {"type": "amend", "order_id": oid, "new_price": f["price"] * ouch42.PRICE_TO_RAW,
                       "new_qty": f["shares"], "client_order_id": new_tok, "rid": f"ouch-{user}-u-{new_tok}"}
                self._by_oid[oid]["prev_token"] = tok
                self._by_oid[oid]["new_token"] = new_tok
            else:
                req = {"type": "amend", "order_id": oid, "new_price": None, "new_qty": f["shares"],
                       "rid": f"ouch-{user}-m-{tok}-{time.monotonic_ns()}"}
            reply = self.pipeline.finish(self.pipeline.handle(account, ("ouch", user), req))
            self._events(user, reply, tok)

    def _events(self, user, reply, tok):
        evs = reply.get("events") or []
        if reply.get("status") in ("rejected", "busy") and not evs:
            if tok not in self._orders.get(user, {}):
                self._send(user, "rejected", order_token=tok, reason=_REJECT.get(reply.get("reason"), b"O"))
            return
        for ev in evs:
            self._on_event(user, ev)

    def _on_event(self, user: str, ev: dict):
        t = ev["type"]
        oid = ev.get("order_id", 0)
        st = self._by_oid.get(oid)
        if t == "accepted":
            pend = getattr(self, "_by_oid_pending", None) or {}
            st = self._by_oid[oid] = dict(pend, token=ev.get("client_order_id") or pend.get("token", ""),
                                          side=ev["side"], price=ev["price"])
            self._orders.setdefault(user, {})[st["token"]] = oid
            self._send(user, "accepted", order_token=st["token"], side=ev["side"], shares=ev["qty"],
                       stock=ev["symbol"], price=ev["price"] // ouch42.PRICE_TO_RAW,
                       time_in_force=st.get("tif", ouch42.TIF_SYSTEM_HOURS), firm=st.get("firm", b""),
                       display=st.get("display", b"Y") if st.get("display", b" ") != b" " else b"Y",
                       order_reference_number=oid, capacity=st.get("capacity", b"A") if st.get("capacity", b" ") != b" " else b"A",
                       intermarket_sweep=b"N", minimum_quantity=0, cross_type=b"N", order_state=b"L",
                       bbo_weight_indicator=b" ")
            return
        if st is None:
            if t == "rejected":
                tok = ev.get("client_order_id") or ""
                self._send(user, "rejected", order_token=tok, reason=_REJECT.get(ev.get("reason"), b"O"))
            return
        if t == "fill":
            self._send(user, "executed", order_token=st["token"], executed_shares=ev["qty"],
                       execution_price=ev["price"] // ouch42.PRICE_TO_RAW,
                       liquidity_flag=b"A" if ev.get("liquidity") == "maker" else b"R",
                       match_number=ev.get("trade_id", 0))
        elif t in ("canceled", "expired"):
            self._send(user, "canceled", order_token=st["token"], decrement_shares=ev["qty"],
                       reason=_CANCEL_REASON.get(ev.get("reason") or ("expired" if t == "expired" else "user"), b"U"))
        elif t == "replaced":
            new_tok = st.pop("new_token", None)
            prev = st.pop("prev_token", st["token"])
            if new_tok:
                self._orders[user].pop(prev, None)
                st["token"] = new_tok
                self._orders[user][new_tok] = oid
                self._send(user, "replaced", replacement_order_token=new_tok, side=st["side"],
                           shares=ev.get("leaves_qty", ev["qty"]), stock=ev["symbol"],
                           price=ev["price"] // ouch42.PRICE_TO_RAW, time_in_force=st.get("tif", 99999),
                           firm=st.get("firm", b""), display=b"Y", order_reference_number=oid, capacity=b"A",
                           intermarket_sweep=b"N", minimum_quantity=0, cross_type=b"N", order_state=b"L",
                           previous_order_token=prev, bbo_weight_indicator=b" ")
            else:
                self._send(user, "order_modified", order_token=st["token"], side=st["side"],
                           shares=ev.get("leaves_qty", ev["qty"]))
        elif t == "rejected":
            self._send(user, "cancel_reject", order_token=st["token"])
