"""FIX acceptor: asyncio TCP server in front of :class:`engine.fix.session.FixSession` objects, plus the
two applications: :class:`OrderApplication` (orders into the gateway's OrderPipeline, ExecutionReports
back) and :class:`EchoApplication` (QuickFIX's acceptance-test application: reflects NewOrderSingle and
SecurityDefinition, used by the acceptance scenarios).

A connection is bound to a session by its first message: BeginString, SenderCompID (the counterparty)
and TargetCompID (us) must name a configured session that is not already connected; otherwise the
connection is closed without an answer (as QuickFIX does).
"""
from __future__ import annotations

import asyncio
import itertools
import threading
from dataclasses import dataclass
from pathlib import Path

from feedhandler.protocols import fix as _fix
from feedhandler.protocols.fix_dictionary import FixDictionary
from engine.fix.message import Framer, split_fields, utc_timestamp
from engine.fix.session import BusinessReject, FixSession, UnsupportedMessageType
from engine.fix.store import FileStore, MemoryStore

PRICE_SCALE = 1_000_000_000


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


@dataclass
class SessionConfig:
    begin_string: str          # "FIX.4.4" / "FIX.4.2"
    our_comp_id: str           # SenderCompID of what we send
    their_comp_id: str         # the counterparty's SenderCompID
    account: str = ""          # gateway account of this session (OrderApplication)


class EchoApplication:
    """QuickFIX acceptance-test application: reflect NewOrderSingle / SecurityDefinition, reject the rest."""

    REFLECT = (b"D", b"d")

    def __init__(self):
        self.seen: set = set()

    def on_logon(self, s):
        pass

    def on_logout(self, s):
        pass

    def from_app(self, s: FixSession, m):
        if m.msgtype not in self.REFLECT:
            raise UnsupportedMessageType()
        key = m.get(11)
        if m.get(97) == b"Y" and key in self.seen:
            return
        self.seen.add(key)
        hdr_tags = s.dd.header_tags
        extra = [(t, v) for t, v in m.fields[3:]
                 if t in hdr_tags and t not in (8, 9, 35, 34, 49, 52, 56, 43, 122, 10)]
        s.send(m.msgtype, m.body(hdr_tags), extra)


class OrderApplication:
    """NewOrderSingle / OrderCancelRequest / OrderCancelReplaceRequest -> OrderPipeline -> ExecutionReports."""

    SIDE_IN = {b"1": "B", b"2": "S"}
    SIDE_OUT = {"B": "1", "S": "2"}
    TIF_IN = {b"0": "day", b"1": "gtc", b"3": "ioc", b"4": "fok"}

    def __init__(self, pipeline, accounts: dict[str, str], loop_call=None):
        self.pipeline = pipeline
        self.accounts = accounts          # their_comp_id -> account
        self._exec_ids = itertools.count(1)
        self._orders: dict[int, dict] = {}     # order_id -> {clid, qty, cum, notional, symbol, side, price}
        self._sessions: dict[str, FixSession] = {}
        self._loop_call = loop_call

    # session events
    def on_logon(self, s: FixSession):
        acct = self.accounts.get(s.target.decode(), s.target.decode())
        self._sessions[acct] = s
        self.pipeline.register_sink(acct, lambda ev, a=acct: self._deliver(a, ev))

    def on_logout(self, s: FixSession):
        acct = self.accounts.get(s.target.decode(), s.target.decode())
        if self._sessions.get(acct) is s:
            del self._sessions[acct]
            self.pipeline.register_sink(acct, None)

    def _deliver(self, acct, ev):
        # called from gateway worker threads: hop onto the session's event loop
        if self._loop_call is not None:
            self._loop_call(self._send_event, acct, ev)
        else:
            self._send_event(acct, ev)

    def _send_event(self, acct, ev):
        s = self._sessions.get(acct)
        if s is not None:
            self._exec_report(s, ev)

    def from_app(self, s: FixSession, m):
        acct = self.accounts.get(s.target.decode(), s.target.decode())
        t = m.msgtype
        try:
            if t == b"D":
                req = {"type": "new", "client_order_id": m.get(11).decode(), "symbol": m.get(55).decode(),
                       "side": self.SIDE_IN[m.get(54)], "qty": int(price_to_raw(m.get(38)) // PRICE_SCALE),
                       "order_type": "market" if m.get(40) == b"1" else "limit",
                       "price": price_to_raw(m.get(44)) if m.get(40) != b"1" else 0,
                       "tif": self.TIF_IN.get(m.get(59, b"0"), "day"),
                       "post_only": b"6" in (m.get(18) or b"").split(b" ")}
                req["rid"] = "fix-" + req["client_order_id"]
            elif t in (b"F", b"G"):
                req = {"type": "cancel" if t == b"F" else "amend", "orig_client_order_id": m.get(41).decode(),
                       "client_order_id": m.get(11).decode(), "rid": f"fix-{t.decode()}-{m.get(11).decode()}"}
                if m.get(37):
                    try:
                        req["order_id"] = int(m.get(37))
                    except ValueError:
                        pass
                if t == b"G":
                    req["new_qty"] = int(price_to_raw(m.get(38)) // PRICE_SCALE) if m.get(38) else None
                    req["new_price"] = price_to_raw(m.get(44)) if m.get(44) else None
            else:
                raise UnsupportedMessageType()
        except (KeyError, TypeError, ValueError, AttributeError):
            raise BusinessReject(0, "Invalid order fields", m.get(11)) from None
        reply = self.pipeline.handle(acct, s.target, req)
        events = reply.get("events", [])
        self.pipeline.finish(reply)
        if reply.get("status") in ("busy", "rejected") and not events:
            reason = reply.get("reason", "rejected")
            if t == b"D":
                self._send_reject(s, req, reason)
            else:
                self._cancel_reject(s, m, reason)
            return
        for ev in events:
            if ev["type"] == "rejected" and t != b"D":
                self._cancel_reject(s, m, ev.get("reason", ""))
            else:
                self._exec_report(s, ev, orig=m.get(41).decode() if t in (b"F", b"G") else None)

    def _send_reject(self, s, req, reason):
        body = [(37, "NONE"), (11, req["client_order_id"]), (17, f"X{next(self._exec_ids)}")]
        if s.begin == b"FIX.4.2":
            body.append((20, "0"))
        body += [(150, "8"), (39, "8"), (55, req["symbol"]), (54, self.SIDE_OUT[req["side"]]),
                 (151, 0), (14, 0), (6, 0), (58, reason)]
        s.send_app(b"8", body)

    def _cancel_reject(self, s, m, reason):
        body = [(37, m.get(37) or b"NONE"), (11, m.get(11)), (41, m.get(41)), (39, "8"),
                (434, "1" if m.msgtype == b"F" else "2"), (102, "1" if "unknown" in reason else "99"), (58, reason)]
        s.send_app(b"9", body)

    def _exec_report(self, s: FixSession, ev: dict, orig: str | None = None):
        oid = ev["order_id"]
        st = self._orders.get(oid)
        if st is None:
            st = self._orders[oid] = {"clid": ev.get("client_order_id", ""), "qty": ev.get("qty", 0), "cum": 0,
                                      "notional": 0}
        t = ev["type"]
        fix42 = s.begin == b"FIX.4.2"
        last_qty = last_px = 0
        if t == "accepted":
            exec_type = ord_status = "0"
        elif t == "fill":
            st["cum"] += ev["qty"]
            st["notional"] += ev["qty"] * ev["price"]
            last_qty, last_px = ev["qty"], ev["price"]
            done = ev.get("leaves_qty", 0) == 0
            ord_status = "2" if done else "1"
            exec_type = ord_status if fix42 else "F"
        elif t in ("canceled", "expired"):
            exec_type = ord_status = "4" if t == "canceled" else "C"
        elif t == "replaced":
            exec_type = ord_status = "5"
            st["qty"] = ev.get("qty", st["qty"])
            if ev.get("client_order_id"):
                st["clid"] = ev["client_order_id"]
        else:  # rejected
            exec_type = ord_status = "8"
        cum = ev.get("cum_qty", st["cum"])
        avg = st["notional"] // st["cum"] if st["cum"] else 0
        body = [(37, oid), (11, ev.get("client_order_id") or st["clid"])]
        if orig:
            body.append((41, orig))
        body.append((17, f"E{next(self._exec_ids)}"))
        if fix42:
            body.append((20, "0"))
        body += [(150, exec_type), (39, ord_status), (55, ev.get("symbol", "")),
                 (54, self.SIDE_OUT.get(ev.get("side"), "1")), (38, st["qty"])]
        if ev.get("price"):
            body.append((44, raw_to_price(ev["price"])))
        if t == "fill":
            body += [(32, last_qty), (31, raw_to_price(last_px))]
            if ev.get("trade_id") and not fix42:
                body.append((880, ev["trade_id"]))   # TrdMatchID (FIX 4.4)
        body += [(151, ev.get("leaves_qty", 0)), (14, cum), (6, raw_to_price(avg)), (60, utc_timestamp())]
        if ev.get("reason"):
            body.append((58, ev["reason"]))
        s.send_app(b"8", body)


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
    """

    def __init__(self, sessions: list[SessionConfig], app, spec_dir, store_dir=None, host="127.0.0.1",
                 port=0, reset_on_disconnect=False, max_latency_s=120, fsync=False):
        self.app = app
        self.host, self.port = host, port
        dicts: dict[str, FixDictionary] = {}
        self.sessions: dict[tuple[bytes, bytes, bytes], FixSession] = {}
        for c in sessions:
            if c.begin_string not in dicts:
                fname = "FIX" + c.begin_string.split(".", 1)[1].replace(".", "") + ".xml"
                dicts[c.begin_string] = FixDictionary.load(Path(spec_dir) / fname)
            sid = f"{c.begin_string}-{c.our_comp_id}-{c.their_comp_id}"
            store = FileStore(store_dir, sid, fsync=fsync) if store_dir else MemoryStore()
            s = FixSession(dicts[c.begin_string], c.our_comp_id, c.their_comp_id, store, app,
                           reset_on_disconnect=reset_on_disconnect, max_latency_s=max_latency_s)
            self.sessions[(c.begin_string.encode(), c.our_comp_id.encode(), c.their_comp_id.encode())] = s
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

    def stop(self) -> None:
        if self._thread is not None and self.loop is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self._thread = None

    async def _tick(self):
        while True:
            await asyncio.sleep(0.1)
            for s in self.sessions.values():
                s.on_timer()

    async def _on_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        framer = Framer()
        session = None
        closed = False

        def close():
            nonlocal closed
            if not closed:
                closed = True
                writer.close()

        try:
            while not closed:
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
                        session = None
                        break
                    session.connection_made(writer.write, close)
                    rest = b"".join(r for _, r in msgs) + bytes(framer.buf)
                    session.data_received(rest)
                else:
                    session.data_received(data)
                if session is not None and not session.connected:
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if session is not None and session.connected:
                session.connection_lost()
            close()
