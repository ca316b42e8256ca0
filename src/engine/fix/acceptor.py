"""FIX acceptor: asyncio TCP server in front of :class:`engine.fix.session.FixSession` objects, plus the
two applications: :class:`OrderApplication` (orders into the gateway's OrderPipeline, ExecutionReports
back) and :class:`EchoApplication` (QuickFIX's acceptance-test application: reflects NewOrderSingle and
SecurityDefinition, used by the acceptance scenarios).

A connection is bound to a session by its first message: BeginString, SenderCompID (the counterparty)
and TargetCompID (us) must name a configured session that is not already connected; otherwise the
connection is closed without an answer (as QuickFIX does).

Orders do not hold the event loop: the order application hands each request to the pipeline
asynchronously (``OrderPipeline.handle_async``) and answers it when the engine thread delivers the outcome
(:meth:`FixSession.hold` / :meth:`FixSession.resume`). Meanwhile that session reads nothing more (its
later messages are answered after it, in order), and every other session is served: with several shard
servers, an order for a stalled shard holds up only its own session, for at most the router's timeout.

Limits (each closes the connection, counted in ``FixAcceptor.stats`` / ``FixSession.oversized``):

=========================  ==========  =============================================================
``LOGON_TIMEOUT_S``        10 s        from accept to a completed Logon
``MAX_PRELOGON_BYTES``     16 KiB      bytes a connection may send before its Logon is complete
``MAX_MESSAGE_BYTES``      1 MiB       one message of a logged-on session (engine.fix.session)
``MAX_CLORDID_BYTES``      64          ClOrdID / OrigClOrdID: longer is a reject (engine.fix.order_app),
                                       the connection stays up
=========================  ==========  =============================================================
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from feedhandler.protocols import fix as _fix
from feedhandler.protocols.fix_dictionary import FixDictionary
from engine.fix.message import Framer, split_fields
from engine.fix.order_app import (MAX_CLORDID_BYTES, PRICE_SCALE, OrderApplication, price_to_raw,  # noqa: F401
                                  raw_to_price)
from engine.fix.session import MAX_MESSAGE_BYTES, FixSession, UnsupportedMessageType
from engine.fix.store import FileStore, MemoryStore

_log = logging.getLogger("engine.fix")

#: seconds an accepted TCP connection may take to complete a valid Logon before it is closed
LOGON_TIMEOUT_S = 10.0
#: bytes an unauthenticated connection may send before its Logon is complete; more closes it
MAX_PRELOGON_BYTES = 16_384
#: seconds stop() waits for orders still with the exchange (their reports stored and sent) before it stops
STOP_GRACE_S = 5.0

@dataclass
class SessionConfig:
    begin_string: str          # "FIX.4.4" / "FIX.4.2"
    our_comp_id: str           # SenderCompID of what we send
    their_comp_id: str         # the counterparty's SenderCompID
    account: str = ""          # gateway account of this session (OrderApplication)


class EchoApplication:
    """QuickFIX's acceptance-test application (``src/at_application.h`` of QuickFIX), behaving as it does:

    - NewOrderSingle, SecurityDefinition and Email are reflected; every other application message is
      an unsupported message type (Business Message Reject);
    - a NewOrderSingle with PossResend=Y whose ClOrdID this session already reflected is not reflected
      again; the remembered ClOrdIDs of a session are forgotten at its logout;
    - the reflection is the message QuickFIX would build from the parsed one: header fields in header
      order (8, 9, 35, then by tag; PossDupFlag and OrigSendingTime removed as ``Session::send`` does),
      body fields in tag order with each repeating group right after its NoXXX field, a group's fields
      in the dictionary's order (unknown ones after, by tag).
    """

    REFLECT = (b"D", b"d", b"C")

    def __init__(self):
        self.seen: dict[bytes, set] = {}      # session target -> reflected ClOrdIDs

    def on_logon(self, s):
        pass

    def on_logout(self, s):
        self.seen.pop(s.target, None)

    def from_app(self, s: FixSession, m):
        if m.msgtype not in self.REFLECT:
            raise UnsupportedMessageType()
        if m.msgtype == b"D":
            key = m.get(11)
            seen = self.seen.setdefault(s.target, set())
            if m.get(97) == b"Y" and key in seen:
                return
            seen.add(key)
        hdr_tags = s.dd.header_tags
        extra = [(t, v) for t, v in m.fields[3:]
                 if t in hdr_tags and t not in (8, 9, 35, 34, 49, 52, 56, 43, 122, 10)]
        mdef = s.dd.messages.get(m.msgtype.decode("latin-1"))
        s.send(m.msgtype, tag_order(m.body(hdr_tags), mdef.groups if mdef is not None else {}), extra)


def tag_order(body: list, groups: dict) -> list:
    """A message body in QuickFIX's serialization order: top-level fields by tag number, each repeating
    group's entries right after its NoXXX field (see :class:`EchoApplication`)."""
    top: list = []
    i, n = 0, len(body)
    while i < n:
        t, v = body[i]
        i += 1
        g = groups.get(t)
        entries: list = []
        if g is not None:
            i, entries = _group_entries(body, i, g)
        top.append((t, v, entries))
    top.sort(key=lambda f: f[0])                       # stable: a repeated tag keeps its order
    out: list = []
    for t, v, entries in top:
        out.append((t, v))
        for e in entries:
            out.extend(e)
    return out


def _group_entries(body: list, i: int, g) -> tuple[int, list]:
    members = set(g.fields)
    rank = {t: k for k, t in enumerate(g.fields)}
    entries: list = []
    cur: list | None = None
    n = len(body)
    while i < n and body[i][0] in members:
        t, v = body[i]
        i += 1
        if t == g.delimiter or cur is None:
            cur = []
            entries.append(cur)
        sub = g.groups.get(t)
        nested: list = []
        if sub is not None:
            i, nested = _group_entries(body, i, sub)
        cur.append((t, v, nested))
    out = []
    for e in entries:
        e.sort(key=lambda f: (rank.get(f[0], len(rank)), f[0]))
        flat: list = []
        for t, v, nested in e:
            flat.append((t, v))
            for ne in nested:
                flat.extend(ne)
        out.append(flat)
    return i, out


class FixAcceptor:
    """TCP acceptor for a set of FIX sessions (asyncio, one event loop).

    Parameters
    ----------
    sessions : list[SessionConfig]
    app : EchoApplication | OrderApplication
    spec_dir : str | Path
        Directory with FIX42.xml / FIX44.xml.
    store_dir : str | Path, optional
        Persistent message stores (sequence numbers survive restarts); None: in memory.
    host, port : where to listen (port 0: any free port, see :attr:`port` after start).
    reset_on_disconnect, reset_on_logon : bool
        QuickFIX's ResetOnDisconnect / ResetOnLogon: both sequence numbers (and the stored messages) back
        to 1 when a connection ends / when a Logon arrives. Order entry uses neither (the stored
        messages are what a reconnecting counterparty gets by resend).
    logon_timeout_s : float
        An accepted connection that has not completed a Logon within this time is closed
        (``LOGON_TIMEOUT_S``).
    max_prelogon_bytes : int
        Bytes an unauthenticated connection may send before its Logon is complete (``MAX_PRELOGON_BYTES``);
        more closes it, so nothing is buffered past this for a connection nobody has identified.
    max_message_bytes : int
        Largest FIX message of a logged-on session (``engine.fix.session.MAX_MESSAGE_BYTES``); a longer
        one ends the connection.
    max_clordid_bytes : int
        Longest ClOrdID / OrigClOrdID the order application takes (``MAX_CLORDID_BYTES``); longer is
        refused with a reject.
    fsync : bool
        fsync the session stores on every write (the Exchange sets it from the journal's policy).

    ``stats`` counts the connections closed by each limit.
    """

    def __init__(self, sessions: list[SessionConfig], app, spec_dir, store_dir=None, host="127.0.0.1",
                 port=0, reset_on_disconnect=False, max_latency_s=120, fsync=False, reset_on_logon=False,
                 logon_timeout_s: float = LOGON_TIMEOUT_S, max_prelogon_bytes: int = MAX_PRELOGON_BYTES,
                 max_message_bytes: int = MAX_MESSAGE_BYTES, max_clordid_bytes: int = MAX_CLORDID_BYTES):
        self.app = app
        if hasattr(app, "max_clordid_bytes"):
            app.max_clordid_bytes = max_clordid_bytes
        self.host, self.port = host, port
        self.logon_timeout_s = logon_timeout_s
        self.max_prelogon_bytes = max_prelogon_bytes
        self.stats = {"connections": 0, "logon_timeouts": 0, "prelogon_overflows": 0, "unknown_sessions": 0}
        dicts: dict[str, FixDictionary] = {}
        self.sessions: dict[tuple[bytes, bytes, bytes], FixSession] = {}
        for c in sessions:
            if c.begin_string not in dicts:
                fname = "FIX" + c.begin_string.split(".", 1)[1].replace(".", "") + ".xml"
                dicts[c.begin_string] = FixDictionary.load(Path(spec_dir) / fname)
            sid = f"{c.begin_string}-{c.our_comp_id}-{c.their_comp_id}"
            store = FileStore(store_dir, sid, fsync=fsync) if store_dir else MemoryStore()
            s = FixSession(dicts[c.begin_string], c.our_comp_id, c.their_comp_id, store, app,
                           reset_on_disconnect=reset_on_disconnect, max_latency_s=max_latency_s,
                           reset_on_logon=reset_on_logon, max_message_bytes=max_message_bytes)
            self.sessions[(c.begin_string.encode(), c.our_comp_id.encode(), c.their_comp_id.encode())] = s
            if hasattr(app, "bind"):
                app.bind(s)
        if hasattr(app, "catch_up"):
            # reports the exchange journaled but no session store holds (a crash in between)
            engine = getattr(getattr(app, "pipeline", None), "engine", None)
            app.catch_up(getattr(engine, "recovered_events", None) or ())
        self._server = None
        self._timer = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread = None

    async def start_async(self):
        self.loop = asyncio.get_running_loop()
        if isinstance(self.app, OrderApplication):
            self.app._loop_call = self.loop.call_soon_threadsafe
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
        self._timer = asyncio.create_task(self._tick())
        return self

    async def stop_async(self):
        if self._timer:
            self._timer.cancel()
        for s in self.sessions.values():
            s.disconnect()
        for t in list(self._conn_tasks):
            t.cancel()
        if self._conn_tasks:
            await asyncio.gather(*self._conn_tasks, return_exceptions=True)
        if self._server:
            self._server.close()
            await self._server.wait_closed()
        if hasattr(self.app, "unbind_all"):
            self.app.unbind_all()
        for s in self.sessions.values():
            s.store.close()

    def start(self) -> "FixAcceptor":
        """Run the acceptor on its own event loop thread."""
        ready = threading.Event()

        def run():
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self.start_async())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.stop_async())
            loop.close()

        self._thread = threading.Thread(target=run, name="fix-acceptor", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    async def _quiesce(self, grace_s: float) -> None:
        """Wait (at most ``grace_s``) until no session has an order with the exchange."""
        end = time.monotonic() + grace_s
        while any(s.held for s in self.sessions.values()) and time.monotonic() < end:
            await asyncio.sleep(0.01)

    def stop(self) -> None:
        """Stop the acceptor's loop thread, after the orders still with the exchange are answered (their
        reports stored: at most ``STOP_GRACE_S``; a report missing from a store is caught up from the
        journal at the next start, see OrderApplication.catch_up)."""
        if self._thread is not None and self.loop is not None:
            try:
                if threading.current_thread() is self._thread:
                    raise RuntimeError("stop() on the acceptor's own loop")
                asyncio.run_coroutine_threadsafe(self._quiesce(STOP_GRACE_S), self.loop).result(STOP_GRACE_S + 1)
            except Exception as e:  # noqa: BLE001 - the loop already gone or the wait timed out: stop anyway
                _log.warning("FIX: stopping with orders still unanswered (%s)", type(e).__name__)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self._thread = None

    async def _tick(self):
        while True:
            await asyncio.sleep(0.1)
            for s in self.sessions.values():
                s.on_timer()

    async def _on_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.stats["connections"] += 1
        framer = Framer()
        session = None
        closed = False
        deadline = time.monotonic() + self.logon_timeout_s
        received = 0

        def close():
            nonlocal closed
            if not closed:
                closed = True
                writer.close()

        try:
            while not closed:
                if session is None or not session.logged_on:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        self.stats["logon_timeouts"] += 1
                        _log.info("FIX: no Logon within %.1f s, connection closed", self.logon_timeout_s)
                        break
                    try:
                        data = await asyncio.wait_for(reader.read(65536), left)
                    except asyncio.TimeoutError:
                        continue           # the deadline check above closes it
                    received += len(data)
                    if received > self.max_prelogon_bytes and (session is None or not session.logged_on):
                        self.stats["prelogon_overflows"] += 1
                        _log.info("FIX: %d bytes before a Logon (limit %d), connection closed", received,
                                  self.max_prelogon_bytes)
                        break
                else:
                    data = await reader.read(65536)
                if not data:
                    break
                if session is None:
                    # identify the session from the first whole message
                    msgs = framer.feed(data)
                    if not msgs:
                        continue
                    st, raw = msgs[0]
                    fields = split_fields(raw) if st == _fix.OK else None
                    f = dict(reversed(fields)) if fields else {}
                    key = (f.get(8, b""), f.get(56, b""), f.get(49, b""))
                    session = self.sessions.get(key)
                    if session is None or session.connected:
                        self.stats["unknown_sessions"] += 1
                        session = None
                        break
                    session.connection_made(writer.write, close)
                    rest = b"".join(r for _, r in msgs) + bytes(framer.buf)
                    session.data_received(rest)
                else:
                    session.data_received(data)
                if session.held:
                    # a message waits for the exchange (an order whose shard is slow): this connection reads
                    # nothing more until it is answered; the loop serves the other sessions meanwhile
                    released = asyncio.get_running_loop().create_future()
                    session.when_released(lambda f=released: f.done() or f.set_result(None))
                    await released
                    if session.close_transport is not close:
                        session = None          # another connection took the session over meanwhile
                        break
                if not session.connected:
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if session is not None and session.connected and session.close_transport is close:
                session.connection_lost()
            close()
