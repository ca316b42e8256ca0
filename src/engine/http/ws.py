"""WebSocket hub: authenticated connections, channels, bounded per-connection queues.

Protocol (JSON text frames)::

    -> {"op": "auth", "token": "<JWT>"}                                      (web UI)
    -> {"op": "auth", "api_key": k, "ts": "<ns>", "nonce": n, "signature": s}  (programs; s signs
       METHOD "WS", target "/ws", nonce, empty body: engine.http.auth.sign_request)
    -> {"op": "auth", "user_id": "MM"}                                       (--insecure-dev-auth only)
    <- {"type": "auth", "code": 0, "msg": "ok", "data": {"account": "MM"}}
    -> {"op": "subscribe", "channels": ["order_updates", "trades", "depth.AAPL", "bbo.AAPL"]}
    <- {"type": "subscribed", "code": 0, "msg": "ok", "data": {"channels": [...]}}
    <- {"channel": "trades", "seq": 7, "data": {...}}
    <- {"channel": "depth.AAPL", "type": "snapshot", "seq": 41, "data": {"bids": [[px, qty]], "asks": [...]}}
    <- {"channel": "depth.AAPL", "type": "update", "seq": 42, "data": {"bids": [[px, "0"]], "asks": []}}

Public channels (no auth needed): ``trades`` (every symbol), ``trades.{symbol}``, ``depth.{symbol}``
(top :data:`DEPTH_LEVELS` levels: a snapshot, then changed levels, quantity "0" = level gone) and
``bbo.{symbol}``. Private: ``order_updates`` (the account's own order events, whichever door sent them).
``balance_updates`` (the account's balance changes: ``{"asset", "available", "locked", "engine_seq"}``,
absolute values after the request that changed them, decimal strings: the quote asset in its units, base
assets as quantities; one message per changed (account, asset) per request, after that request's
replies) when ``[accounts]`` is enabled, else answered UNSUPPORTED.

Sequence numbers: one counter per stream (``trades``: all trades; ``trades.S``, ``depth.S``, ``bbo.S`` per
symbol; ``order_updates`` and ``balance_updates`` per account), assigned in engine order; consecutive
numbers on a connection mean nothing was missed (a gap means resubscribe; a depth gap: take the new snapshot).

Ordering across the private channels: ``order_updates`` and ``balance_updates`` messages also carry
``user_seq``, ONE counter per account shared by both channels, in engine order: a request's order events,
then the balance changes it caused, then the next request's (engine.gateway.balances.publish_with_balances).
A client subscribed to both merges them by ``user_seq`` (consecutive across both = nothing missed); a
balance message's values are the balances after every order event with a smaller ``user_seq``.

Backpressure: each connection has a bounded queue of encoded frames (``queue_size``). A consumer that lets
it fill is disconnected with close code 1008 and the reason ``slow consumer``; nothing is buffered without
bound and nothing is dropped silently (a connection either sees every message of its channels or is closed).
"""
from __future__ import annotations

import asyncio
import threading

from engine.gateway import dumpb
from engine.http.codec import SIDE_NAME, amount_str, price_str

DEPTH_LEVELS = 20
_STATUS = {"accepted": "ACCEPTED", "canceled": "CANCELED", "expired": "EXPIRED", "replaced": "REPLACED",
           "rejected": "REJECTED"}


def order_update(ev: dict) -> dict:
    t = ev.get("type")
    if t == "fill":
        status = "FILLED" if not ev.get("leaves_qty") else "PARTIALLY_FILLED"
    elif t == "canceled" and ev.get("leaves_qty"):
        status = "REDUCED"
    else:
        status = _STATUS.get(t, str(t).upper())
    out = {"status": status, "order_id": str(ev.get("order_id", 0)), "cid": ev.get("client_order_id") or "",
           "symbol": ev.get("symbol", ""), "side": SIDE_NAME.get(ev.get("side"), ev.get("side")),
           "leaves_qty": str(ev.get("leaves_qty", 0)), "filled_qty": str(ev.get("cum_qty", 0)),
           "ts": int(ev.get("ts_event") or 0) // 1_000_000}
    if ev.get("price"):
        out["price"] = price_str(ev["price"])
    if t == "fill":
        out.update(last_qty=str(ev["qty"]), last_price=price_str(ev["price"]), trade_id=str(ev["trade_id"]),
                   liquidity=str(ev.get("liquidity", "")).upper())
    elif t == "rejected":
        out["reason"] = str(ev.get("reason", "")).upper()
    return out


def _levels(rows) -> dict:
    return {int(r[0]): int(r[1]) for r in rows}


class Conn:
    __slots__ = ("ws", "transport", "account", "queue", "writer", "subs", "closed", "reason", "sent")

    def __init__(self, ws, queue_size: int, transport=None):
        self.ws = ws
        self.transport = transport
        self.account: str | None = None
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=queue_size)
        self.writer: asyncio.Task | None = None
        self.subs: set[str] = set()
        self.closed = False
        self.reason = ""
        self.sent = 0


class WsHub:
    """Fan-out of engine events to WebSocket connections. ``on_events`` runs on the engine thread (a
    listener of :class:`engine.http.views.EventTap`); everything else on the HTTP event loop."""

    def __init__(self, engine, symbols: list[str], queue_size: int = 1024):
        self.engine = engine
        self.symbols = list(symbols)
        self.queue_size = queue_size
        self.loop: asyncio.AbstractEventLoop | None = None
        self.loop_thread: int | None = None         # threading.get_ident() of the loop's thread
        self.conns: set[Conn] = set()
        self.subs: dict[str, set[Conn]] = {}
        self.acct_subs: dict[str, set[Conn]] = {}
        self.bal_subs: dict[str, set[Conn]] = {}
        self.balance_quote: str | None = None      # the quote asset when balances are on (engine.accounts)
        self._bal_seq: dict[str, int] = {}
        # engine-thread state: mirrors of the top levels and the stream counters
        self._eng_books: dict[str, tuple[dict, dict]] = {}
        self._pending: list = []
        self._pending_lock = threading.Lock()
        self._scheduled = False
        self._trade_seq = 0
        self._sym_trade_seq: dict[str, int] = {}
        self._depth_seq: dict[str, int] = {}
        self._acct_seq: dict[str, int] = {}
        self._user_seq: dict[str, int] = {}     # per account, shared by order_updates and balance_updates
        # loop-side mirrors (consistent with the last dispatched update): snapshots for new subscribers
        self.books: dict[str, tuple[dict, dict, int]] = {}
        self._ready: dict[str, asyncio.Event] = {}
        self.after_dispatch = None          # called on the loop after each hand-off is dispatched
        self.stats = {"connections": 0, "messages_sent": 0, "slow_disconnects": 0, "dispatch_batches": 0,
                      "auth_failures": 0}

    # ---- engine thread -----------------------------------------------------------------------------
    def _watch(self, sym: str) -> None:
        """Engine thread (through ``pipeline.in_engine``): start following ``sym``'s book. Its snapshot goes
        into the same ordered hand-off as the updates, so the loop's mirror never sees them out of order."""
        if sym in self._eng_books:
            return
        bids, asks = self.engine.book(sym, DEPTH_LEVELS)
        nb, na = _levels(bids), _levels(asks)
        self._eng_books[sym] = (nb, na)
        seq = self._depth_seq.setdefault(sym, 0)
        self.hand_off([("s", sym, seq, dict(nb), dict(na))])

    async def ensure_watched(self, sym: str, in_engine) -> None:
        """Event loop: make sure the engine thread follows ``sym`` and the loop's mirror of it is current.
        Books are only followed once someone asked for one (the engine thread pays per followed symbol)."""
        if sym in self.books:
            return
        ev = self._ready.get(sym)
        if ev is None:
            ev = self._ready[sym] = asyncio.Event()
            await asyncio.get_running_loop().run_in_executor(None, in_engine, lambda: self._watch(sym))
        await ev.wait()

    def on_events(self, events: list[dict]) -> None:
        """Engine thread: number the messages of one request's events (engine order), hand them to the loop.

        Every stream's counter advances whoever listens; a message goes to the loop only when its channel
        has a subscriber now (read without a lock: a subscription that races with the event gets it or
        not, as it would by arriving a moment earlier or later; its first message starts its sequence)."""
        out = []
        touched = []
        acct_subs = self.acct_subs
        subs = self.subs
        for ev in events:
            t = ev.get("type")
            acct = ev.get("account")
            if acct:
                s = self._acct_seq.get(acct, 0) + 1
                self._acct_seq[acct] = s
                u = self._user_seq.get(acct, 0) + 1
                self._user_seq[acct] = u
                if acct_subs.get(acct):
                    out.append(("o", acct, s, ev, u))
            if t == "fill" and ev.get("liquidity") == "taker":
                sym = ev.get("symbol", "")
                self._trade_seq += 1
                ss = self._sym_trade_seq.get(sym, 0) + 1
                self._sym_trade_seq[sym] = ss
                if subs.get("trades") or subs.get("trades." + sym):
                    out.append(("t", sym, self._trade_seq, ss, ev))
            sym = ev.get("symbol")
            if t != "rejected" and sym in self._eng_books and sym not in touched:
                touched.append(sym)
        for sym in touched:
            bids, asks = self.engine.book(sym, DEPTH_LEVELS)
            nb, na = _levels(bids), _levels(asks)
            ob, oa = self._eng_books[sym]
            db = _diff(ob, nb)
            da = _diff(oa, na)
            if db or da:
                self._eng_books[sym] = (nb, na)
                seq = self._depth_seq[sym] + 1
                self._depth_seq[sym] = seq
                bbo_changed = _top(ob, True) != _top(nb, True) or _top(oa, False) != _top(na, False)
                out.append(("d", sym, seq, db, da, (_top(nb, True), _top(na, False)) if bbo_changed else None))
        if out or threading.get_ident() != self.loop_thread:
            self.hand_off(out)       # from another thread even when empty: the loop's after_dispatch runs
        elif self.after_dispatch is not None:
            # the engine runs on the loop, inside one callback, and the views are applied (engine.http.server
            # applies them before this): what waits for them can be answered now
            self.after_dispatch()

    def on_balance(self, ev: dict) -> None:
        """Engine thread: number one account's balance event (engine order) and hand it to the loop."""
        acct = ev.get("account")
        s = self._bal_seq.get(acct, 0) + 1
        self._bal_seq[acct] = s
        u = self._user_seq.get(acct, 0) + 1
        self._user_seq[acct] = u
        if self.bal_subs.get(acct):         # nobody listens: counted only (see on_events)
            self.hand_off([("b", acct, s, ev, u)])

    def hand_off(self, out: list) -> None:
        """Any thread: items for :meth:`_dispatch` on the loop, in order (one wake-up per burst)."""
        if self.loop is None:
            return
        with self._pending_lock:
            self._pending.extend(out)
            if self._scheduled:
                return
            self._scheduled = True
        try:
            if threading.get_ident() == self.loop_thread:     # the engine thread is the loop: no wake-up
                self.loop.call_soon(self._dispatch)
            else:
                self.loop.call_soon_threadsafe(self._dispatch)
        except RuntimeError:        # the loop is closed (stopping)
            self._scheduled = False

    # ---- event loop ----------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        with self._pending_lock:
            items, self._pending = self._pending, []
            self._scheduled = False
        self.stats["dispatch_batches"] += 1
        try:
            self._dispatch_items(items)
        finally:
            if self.after_dispatch is not None:
                self.after_dispatch()

    def _dispatch_items(self, items: list) -> None:
        for it in items:
            kind = it[0]
            if kind == "r":                 # a reply for an HTTP request (engine.http.server)
                fut = it[1]
                if not fut.done():
                    fut.set_result(it[2])
            elif kind == "f":               # a call for the loop, in engine order (engine.http.server)
                it[1](it[2])
            elif kind == "o":
                _, acct, seq, ev, u = it
                conns = self.acct_subs.get(acct)
                if conns:
                    self._fan(conns, {"channel": "order_updates", "seq": seq, "user_seq": u,
                                      "data": order_update(ev)})
            elif kind == "b":
                _, acct, seq, ev, u = it
                conns = self.bal_subs.get(acct)
                if conns:
                    q = ev["asset"] == self.balance_quote
                    self._fan(conns, {"channel": "balance_updates", "seq": seq, "user_seq": u, "data": {
                        "asset": ev["asset"], "available": amount_str(ev["available"], q),
                        "locked": amount_str(ev["locked"], q), "engine_seq": ev.get("seq", 0)}})
            elif kind == "t":
                _, sym, seq, sseq, ev = it
                data = {"trade_id": str(ev["trade_id"]), "symbol": sym, "price": price_str(ev["price"]),
                        "qty": str(ev["qty"]), "taker_side": SIDE_NAME.get(ev.get("side"), ev.get("side")),
                        "ts": int(ev.get("ts_event") or 0) // 1_000_000}
                c = self.subs.get("trades")
                if c:
                    self._fan(c, {"channel": "trades", "seq": seq, "data": data})
                c = self.subs.get("trades." + sym)
                if c:
                    self._fan(c, {"channel": "trades." + sym, "seq": sseq, "data": data})
            elif kind == "s":
                _, sym, seq, b, a = it
                self.books[sym] = (b, a, seq)
                ev = self._ready.get(sym)
                if ev is not None:
                    ev.set()
            else:
                _, sym, seq, db, da, bbo = it
                if sym not in self.books or self.books[sym][2] >= seq:
                    continue
                b, a, _ = self.books[sym]
                _apply(b, db)
                _apply(a, da)
                self.books[sym] = (b, a, seq)
                c = self.subs.get("depth." + sym)
                if c:
                    self._fan(c, {"channel": "depth." + sym, "type": "update", "seq": seq,
                                  "data": {"bids": _rows(db, True), "asks": _rows(da, False)}})
                c = self.subs.get("bbo." + sym)
                if c and bbo is not None:
                    self._fan(c, {"channel": "bbo." + sym, "seq": seq, "data": _bbo(*bbo)})

    def _fan(self, conns, msg: dict) -> None:
        frame = dumpb(msg).decode()
        for conn in list(conns):
            self.send(conn, frame)

    def send(self, conn: Conn, frame: str) -> None:
        if conn.closed:
            return
        try:
            conn.queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.stats["slow_disconnects"] += 1
            self.kick(conn, f"slow consumer: {conn.queue.maxsize} messages queued")

    def kick(self, conn: Conn, reason: str) -> None:
        """Close a connection with code 1008 and ``reason`` (never blocks the loop on a stuck peer)."""
        if conn.closed:
            return
        conn.closed = True
        conn.reason = reason
        self._unsubscribe_all(conn)
        asyncio.ensure_future(self._close(conn, 1008, reason))

    async def _close(self, conn: Conn, code: int, reason: str) -> None:
        if conn.writer is not None:
            conn.writer.cancel()
        try:
            await asyncio.wait_for(conn.ws.close(code=code, message=reason.encode()[:120]), 1.0)
        except (asyncio.TimeoutError, ConnectionError, RuntimeError):
            pass
        finally:
            tr = conn.transport
            if tr is not None and not tr.is_closing():
                tr.abort()          # a peer that does not read even the close frame

    async def writer(self, conn: Conn) -> None:
        q, ws = conn.queue, conn.ws
        while True:
            frame = await q.get()
            await ws.send_str(frame)
            conn.sent += 1
            self.stats["messages_sent"] += 1

    def add(self, conn: Conn) -> None:
        self.conns.add(conn)
        self.stats["connections"] += 1
        conn.writer = asyncio.ensure_future(self.writer(conn))

    def remove(self, conn: Conn) -> None:
        self.conns.discard(conn)
        self._unsubscribe_all(conn)
        conn.closed = True
        if conn.writer is not None:
            conn.writer.cancel()

    def _unsubscribe_all(self, conn: Conn) -> None:
        for ch in conn.subs:
            if ch == "order_updates":
                self.acct_subs.get(conn.account, set()).discard(conn)
            elif ch == "balance_updates":
                self.bal_subs.get(conn.account, set()).discard(conn)
            else:
                self.subs.get(ch, set()).discard(conn)
        conn.subs = set()

    def subscribe(self, conn: Conn, channels) -> tuple[list[str], list[tuple[str, str]]]:
        """Subscribe ``conn``; returns (accepted channels, [(channel, error code)]). Depth subscribers get
        their snapshot queued at once, before any update (the loop-side mirror is current here)."""
        ok, bad = [], []
        for ch in channels:
            if not isinstance(ch, str) or len(ch) > 64:
                bad.append((str(ch)[:64], "INVALID_PARAMETER"))
                continue
            name, _, sym = ch.partition(".")
            if ch == "order_updates":
                if conn.account is None:
                    bad.append((ch, "UNAUTHORIZED"))
                    continue
                self.acct_subs.setdefault(conn.account, set()).add(conn)
            elif ch == "balance_updates":
                if self.balance_quote is None:
                    bad.append((ch, "UNSUPPORTED"))
                    continue
                if conn.account is None:
                    bad.append((ch, "UNAUTHORIZED"))
                    continue
                self.bal_subs.setdefault(conn.account, set()).add(conn)
            elif ch == "trades" or (name in ("trades", "depth", "bbo") and sym):
                if sym and sym not in self.symbols:
                    bad.append((ch, "UNKNOWN_SYMBOL"))
                    continue
                self.subs.setdefault(ch, set()).add(conn)
            else:
                bad.append((ch, "INVALID_PARAMETER"))
                continue
            conn.subs.add(ch)
            ok.append(ch)
        return ok, bad

    def snapshots(self, conn: Conn, channels: list[str]) -> None:
        for ch in channels:
            name, _, sym = ch.partition(".")
            if name == "depth":
                b, a, seq = self.books.get(sym, ({}, {}, 0))
                self.send(conn, dumpb({"channel": ch, "type": "snapshot", "seq": seq,
                                       "data": {"bids": _rows(b, True), "asks": _rows(a, False)}}).decode())
            elif name == "bbo":
                b, a, seq = self.books.get(sym, ({}, {}, 0))
                self.send(conn, dumpb({"channel": ch, "type": "snapshot", "seq": seq,
                                       "data": _bbo(_top(b, True), _top(a, False))}).decode())

    def unsubscribe(self, conn: Conn, channels) -> list[str]:
        out = []
        for ch in channels:
            if ch in conn.subs:
                conn.subs.discard(ch)
                if ch == "order_updates":
                    self.acct_subs.get(conn.account, set()).discard(conn)
                elif ch == "balance_updates":
                    self.bal_subs.get(conn.account, set()).discard(conn)
                else:
                    self.subs.get(ch, set()).discard(conn)
                out.append(ch)
        return out

    async def close_all(self) -> None:
        for conn in list(self.conns):
            conn.closed = True
            await self._close(conn, 1001, "exchange stopping")


def _diff(old: dict, new: dict) -> dict:
    d = {px: q for px, q in new.items() if old.get(px) != q}
    for px in old:
        if px not in new:
            d[px] = 0
    return d


def _apply(side: dict, delta: dict) -> None:
    for px, q in delta.items():
        if q:
            side[px] = q
        else:
            side.pop(px, None)


def _rows(side: dict, bids: bool) -> list:
    return [[price_str(px), str(q)] for px, q in sorted(side.items(), reverse=bids)]


def _top(side: dict, bids: bool):
    if not side:
        return None
    px = max(side) if bids else min(side)
    return (px, side[px])


def _bbo(bid, ask) -> dict:
    return {"bid": price_str(bid[0]) if bid else None, "bid_qty": str(bid[1]) if bid else None,
            "ask": price_str(ask[0]) if ask else None, "ask_qty": str(ask[1]) if ask else None}
