"""The order gateway: ZeroMQ ROUTER frontend, inproc DEALER backend, N worker threads.

Data path of one request::

    client DEALER ──tcp──► ROUTER (frontend) ══ zmq.proxy (C, own thread) ══ DEALER (backend, inproc)
        ──► worker k (DEALER): drain a burst (<= 64), per request auth (HMAC) → parse/validate → dedup
            → risk, then the burst's orders as ONE engine.submit_many under the engine lock
        ◄── reply [identity, json] on the worker's own socket ──► proxy ──► ROUTER ──► the client

Wire format (client → gateway), one ZeroMQ multipart message::

    [api_key, ts_ns (ASCII decimal), signature (hex HMAC-SHA256, see engine.auth), body (JSON)]

Gateway → client: ``[json]``; a reply carries the request's ``rid``; unsolicited execution reports
(fills of resting orders, caused by another client's order) have ``"type": "exec"``.

Threads and ownership
- The proxy thread owns the frontend and backend sockets. Each worker owns one DEALER (requests in,
  replies out) and one PULL (``inproc://<name>-out-<k>``): other threads that must send to a client
  (FIX/OUCH acceptors delivering fills to ZeroMQ clients) push ``[identity, json]`` there through a
  thread-local PUSH socket and the worker forwards it. No socket is ever used by two threads.
- :class:`OrderPipeline` is the transport-independent part (validate, dedup, risk, engine, routing of
  events to owning accounts, market data). The FIX and OUCH acceptors call the same pipeline.
- The engine is called synchronously under one lock (an EngineManager is owned by one thread at a time),
  one batch per worker burst; when more than ``max_pending`` requests are already waiting for it the
  request is answered ``busy`` instead of queueing without bound. (EngineManager's own async mode,
  submit_nowait/events, would add a thread hop to every ACK; not used, not measured.)
  ZeroMQ high-water marks (``hwm``) bound every socket queue.
"""
from __future__ import annotations

import itertools
import json
import threading
import time
from collections import OrderedDict
from typing import Callable

import zmq

from engine.auth import AuthError, Authenticator
from engine.risk import RiskManager

_dumps = json.JSONEncoder(separators=(",", ":")).encode
_loads = json.loads

SIDES = {"B": "B", "S": "S", "buy": "B", "sell": "S", "BUY": "B", "SELL": "S", "1": "B", "2": "S"}
_PENDING = object()


class GatewayStats:
    """Counters bumped by workers; read by a monitor. Plain ints: the GIL makes += atomic enough for
    statistics (a lost increment under contention is acceptable, a lock per request is not)."""

    __slots__ = ("requests", "acks", "rejects", "busy", "auth_failures", "dups", "execs_routed", "bad_requests")

    def __init__(self):
        for s in self.__slots__:
            setattr(self, s, 0)

    def as_dict(self) -> dict:
        return {s: getattr(self, s) for s in self.__slots__}


class OrderPipeline:
    """Validate → dedup → risk → engine → route events. Transport independent and thread safe.

    Parameters
    ----------
    engine : engine.manager.EngineManager (or anything with ``submit(req) -> list[event]``)
    risk : RiskManager, optional
    marketdata : engine.marketdata.MarketDataPublisher, optional
        Gets every event list (book updates and trades published as tick records).
    max_pending : int
        Requests allowed to wait for the engine lock before new ones are answered ``busy``.
    dedup_size : int
        How many recent (account, client order id) outcomes are remembered for idempotent retries.
    portfolio : engine.portfolio.PortfolioManager, optional
        Answers ``{"type": "query", "what": "position"}`` (marked to the book first).
    latency : engine.latency.LatencyMonitor, optional
        Gets the stage stamps gateway_recv, risk_done, ring_enqueue, match_done (and ack_sent, added
        by the transport through :meth:`finish`) of every order that reached the engine.
    """

    def __init__(self, engine, risk: RiskManager | None = None, marketdata=None,
                 max_pending: int = 1024, dedup_size: int = 100_000, portfolio=None, latency=None):
        self.engine = engine
        self.latency = latency
        self._stamp_buf: list = []
        self._stamp_lock = threading.Lock()
        self.risk = risk or RiskManager()
        self.marketdata = marketdata
        self.portfolio = portfolio
        self.max_pending = max_pending
        self.stats = GatewayStats()
        self._engine_lock = threading.Lock()
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._dedup: OrderedDict = OrderedDict()
        self._dedup_size = dedup_size
        self._dedup_lock = threading.Lock()
        self._sinks: dict[str, Callable[[dict], None]] = {}
        self._owner_by_clid: dict[tuple[str, str], int] = {}
        self.zmq_route: Callable[[str, dict], bool] | None = None
        self._rid = itertools.count(1)

    # ---- routing of executions to the owning client ------------------------------------------------
    def register_sink(self, account: str, sink: Callable[[dict], None] | None) -> None:
        """Deliver ``account``'s events that other requests cause to ``sink`` (thread safe callable)."""
        if sink is None:
            self._sinks.pop(account, None)
        else:
            self._sinks[account] = sink

    def route(self, account: str, event: dict) -> bool:
        sink = self._sinks.get(account)
        if sink is not None:
            sink(event)
            return True
        if self.zmq_route is not None:
            return self.zmq_route(account, event)
        return False

    # ---- the request path ------------------------------------------------------------------------
    def handle(self, account: str, client, req: dict, ts_recv: int | None = None) -> dict:
        """Process one parsed request of ``account``; return the reply dict for the requester.

        Events of the request that belong to other accounts (maker fills) are routed through
        :meth:`route`; events of the requester are in ``reply["events"]``.
        """
        return self.handle_many([(account, client, req, ts_recv)])[0]

    def handle_many(self, items: list[tuple]) -> list[dict]:
        """Process a burst of ``(account, client, req, ts_recv)`` in order; one reply per item.

        Validation, dedup and risk run per request; everything that passes goes to the engine as ONE
        ``submit_many`` batch under one lock acquisition (one journal batch), so a burst costs one
        engine call, not one per order.
        """
        st = self.stats
        replies: list = [None] * len(items)
        batch = []   # (index, account, client, rid, key, ereq, t_recv, t_risk)
        for i, (account, client, req, ts_recv) in enumerate(items):
            st.requests += 1
            t_recv = ts_recv if ts_recv is not None else time.time_ns()
            rid = req.get("rid")
            kind = req.get("type")
            if kind == "hello":
                replies[i] = {"rid": rid, "status": "ok", "account": account}
                continue
            if kind == "query":
                replies[i] = self._query(account, rid, req)
                continue
            try:
                ereq = self._to_engine(account, req)
            except (KeyError, ValueError, TypeError) as e:
                st.bad_requests += 1
                replies[i] = {"rid": rid, "status": "rejected", "reason": "bad_request", "text": str(e)}
                continue
            # idempotent retries: (account, client order id) for new orders, (account, rid) otherwise
            key = (account, ereq["client_order_id"]) if kind == "new" else (account, "rid", rid)
            if key[-1] is not None:
                with self._dedup_lock:
                    prev = self._dedup.get(key)
                    if prev is None:
                        self._dedup[key] = _PENDING
                        if len(self._dedup) > self._dedup_size:
                            self._dedup.popitem(last=False)
                if prev is not None:
                    st.dups += 1
                    if prev is _PENDING:
                        replies[i] = {"rid": rid, "status": "pending"}
                    else:
                        out = dict(prev)
                        out["dup"] = True
                        out["rid"] = rid
                        replies[i] = out
                    continue
            reason = self.risk.check(client if client is not None else account, account, ereq)
            if reason is not None:
                st.rejects += 1
                replies[i] = self._remember(key, {"rid": rid, "status": "rejected", "reason": reason})
                continue
            ereq["ts_recv"] = t_recv
            batch.append((i, account, rid, key, ereq, t_recv, time.time_ns()))
        if not batch:
            return replies
        with self._pending_lock:
            room = self.max_pending - self._pending
            if room < len(batch):
                for i, account, rid, key, *_ in batch[max(room, 0):]:
                    st.busy += 1
                    replies[i] = self._remember(key, {"rid": rid, "status": "busy", "reason": "busy"})
                batch = batch[: max(room, 0)]
            self._pending += len(batch)
        if not batch:
            return replies
        try:
            with self._engine_lock:
                t_enq = time.time_ns()
                reqs = [b[4] for b in batch]
                if len(reqs) > 1 and hasattr(self.engine, "submit_many"):
                    results = self.engine.submit_many(reqs)
                else:
                    results = [self.engine.submit(r) for r in reqs]
                t_match = time.time_ns()
                # risk and ownership state must follow the engine in the same order
                for events in results:
                    for ev in events:
                        self.risk.on_event(ev)
                        if ev["type"] == "accepted":
                            self._owner_by_clid[(ev["account"], ev["client_order_id"])] = ev["order_id"]
                    if self.marketdata is not None:
                        self.marketdata.publish(events)
        finally:
            with self._pending_lock:
                self._pending -= len(batch)
        for (i, account, rid, key, ereq, t_recv, t_risk), events in zip(batch, results):
            own = []
            for ev in events:
                if ev.get("account") == account:
                    own.append(ev)
                else:
                    st.execs_routed += 1
                    self.route(ev["account"], ev)
            stamps = (t_recv, t_risk, t_enq, t_match) if self.latency is not None else None
            if own and own[0]["type"] == "rejected":
                st.rejects += 1
                reply = {"rid": rid, "status": "rejected", "reason": own[0].get("reason", ""), "events": own}
            else:
                st.acks += 1
                reply = {"rid": rid, "status": "ack", "events": own}
            self._remember(key, reply)
            reply["_stamps"] = stamps
            replies[i] = reply
        return replies

    def _remember(self, key, reply: dict) -> dict:
        if key[-1] is not None:
            with self._dedup_lock:
                if reply["status"] == "busy" or reply.get("reason") == "rate_limited":
                    self._dedup.pop(key, None)   # nothing reached the engine: a retry must be tried again
                else:
                    self._dedup[key] = dict(reply)
        return reply

    def finish(self, reply: dict, ack_sent_ns: int | None = None) -> dict:
        """Strip transport-private keys from a reply; record latency stamps with ``ack_sent``."""
        stamps = reply.pop("_stamps", None)
        if stamps is not None and self.latency is not None:
            buf = self._stamp_buf
            buf.append(stamps + ((time.time_ns() if ack_sent_ns is None else ack_sent_ns),))
            if len(buf) >= 256:
                self.flush_latency()
        return reply

    def flush_latency(self) -> None:
        """Record buffered stage stamps (batched: one vectorized histogram update per 256 orders)."""
        if self.latency is None:
            return
        with self._stamp_lock:
            buf, self._stamp_buf = self._stamp_buf, []
        if buf:
            self.latency.record_many(buf)

    def _to_engine(self, account: str, req: dict) -> dict:
        kind = req["type"]
        if kind == "new":
            order_type = req.get("order_type", "limit")
            price = 0 if order_type == "market" else int(req["price"])
            return {
                "type": "new",
                "account": account,
                "client_order_id": str(req.get("client_order_id") or f"gw-{next(self._rid)}"),
                "symbol": str(req["symbol"]),
                "side": SIDES[req["side"]],
                "price": price,
                "qty": int(req["qty"]),
                "order_type": order_type,
                "tif": req.get("tif", "day"),
                "post_only": bool(req.get("post_only", False)),
            }
        if kind in ("cancel", "amend"):
            oid = req.get("order_id")
            if oid is None:
                orig = str(req["orig_client_order_id"])
                oid = self._owner_by_clid.get((account, orig))
                if oid is None:
                    raise ValueError(f"unknown orig_client_order_id {orig!r}")
            out = {"type": kind, "account": account, "order_id": int(oid),
                   "client_order_id": str(req.get("client_order_id") or "")}
            if "symbol" in req:
                out["symbol"] = str(req["symbol"])
            if kind == "amend":
                np_, nq = req.get("new_price"), req.get("new_qty")
                out["new_price"] = None if np_ is None else int(np_)
                out["new_qty"] = None if nq is None else int(nq)
                if out["new_price"] is None and out["new_qty"] is None:
                    raise ValueError("amend needs new_price or new_qty")
            return out
        raise ValueError(f"unknown request type {kind!r}")

    def _query(self, account, rid, req) -> dict:
        what = req.get("what")
        if what == "book":
            with self._engine_lock:
                bids, asks = self.engine.book(req["symbol"], int(req.get("depth", 10)))
            return {"rid": rid, "status": "ok", "bids": bids, "asks": asks}
        if what == "position":
            if self.portfolio is not None:
                with self._engine_lock:
                    if hasattr(self.portfolio, "mark"):
                        self.portfolio.mark(self.engine)
                    rep = self.portfolio.report(account)
                return {"rid": rid, "status": "ok", "portfolio": rep}
            sym = req.get("symbol")
            return {"rid": rid, "status": "ok", "position": self.risk.position(account, sym)}
        return {"rid": rid, "status": "rejected", "reason": "bad_request", "text": f"unknown query {what!r}"}


class Gateway:
    """ZeroMQ front of an :class:`OrderPipeline`.

    Parameters
    ----------
    pipeline : OrderPipeline
    auth : Authenticator
    endpoint : str
        Frontend ROUTER bind address, e.g. ``tcp://127.0.0.1:5555`` (port 0 / ``tcp://127.0.0.1:*``
        picks a free port; read :attr:`endpoint` after :meth:`start`).
    workers : int
        Worker threads.
    hwm : int
        Send/receive high-water mark (messages) of every gateway socket.
    """

    _ids = itertools.count()

    def __init__(self, pipeline: OrderPipeline, auth: Authenticator, endpoint: str = "tcp://127.0.0.1:5555",
                 workers: int = 2, hwm: int = 10_000, ctx: zmq.Context | None = None):
        self.pipeline = pipeline
        self.auth = auth
        self.endpoint = endpoint
        self.n_workers = workers
        self.hwm = hwm
        self.ctx = ctx or zmq.Context.instance()
        self.name = f"gw{next(self._ids)}-{id(self):x}"
        self._threads: list[threading.Thread] = []
        self._identities: dict[str, bytes] = {}
        self._tls = threading.local()
        self._push_socks: list[zmq.Socket] = []
        self._push_lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Barrier(workers + 2)
        pipeline.zmq_route = self._route_to_identity

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "Gateway":
        front = self.ctx.socket(zmq.ROUTER)
        front.setsockopt(zmq.SNDHWM, self.hwm)
        front.setsockopt(zmq.RCVHWM, self.hwm)
        front.setsockopt(zmq.ROUTER_MANDATORY, 0)   # unknown identity (client gone): drop, counted below
        front.setsockopt(zmq.LINGER, 0)
        if self.endpoint.endswith(":0"):
            self.endpoint = self.endpoint[:-2] + ":*"
        front.bind(self.endpoint)
        self.endpoint = front.getsockopt_string(zmq.LAST_ENDPOINT)
        back = self.ctx.socket(zmq.DEALER)
        back.setsockopt(zmq.SNDHWM, self.hwm)
        back.setsockopt(zmq.RCVHWM, self.hwm)
        back.setsockopt(zmq.LINGER, 0)
        back.bind(f"inproc://{self.name}-back")
        ctl = self.ctx.socket(zmq.PAIR)
        ctl.bind(f"inproc://{self.name}-ctl")
        self._front, self._back, self._ctl_server = front, back, ctl
        t = threading.Thread(target=self._proxy, name=f"{self.name}-proxy", daemon=True)
        self._threads.append(t)
        t.start()
        for k in range(self.n_workers):
            t = threading.Thread(target=self._worker, args=(k,), name=f"{self.name}-w{k}", daemon=True)
            self._threads.append(t)
            t.start()
        self._ready.wait()
        return self

    def stop(self) -> None:
        """Stop workers and proxy; close every socket this object created. Idempotent."""
        if self._stop.is_set():
            return
        self._stop.set()
        ctl = self.ctx.socket(zmq.PAIR)
        ctl.connect(f"inproc://{self.name}-ctl")
        ctl.send(b"TERMINATE")
        for t in self._threads:
            t.join(timeout=5)
        ctl.close(linger=0)
        with self._push_lock:
            for s in self._push_socks:
                s.close(linger=0)
            self._push_socks.clear()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- threads -----------------------------------------------------------------------------
    def _proxy(self):
        self._ready.wait()
        try:
            zmq.proxy_steerable(self._front, self._back, None, self._ctl_server)
        except zmq.ContextTerminated:
            pass
        finally:
            for s in (self._front, self._back, self._ctl_server):
                s.close(linger=0)

    def _worker(self, k: int):
        ctx = self.ctx
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.SNDHWM, self.hwm)
        sock.setsockopt(zmq.RCVHWM, self.hwm)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(f"inproc://{self.name}-back")
        out = ctx.socket(zmq.PULL)
        out.setsockopt(zmq.LINGER, 0)
        out.bind(f"inproc://{self.name}-out-{k}")
        self._tls.sock = sock
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(out, zmq.POLLIN)
        self._ready.wait()
        handle = self._handle
        try:
            while not self._stop.is_set():
                ready = dict(poller.poll(100))
                if sock in ready:
                    # drain a burst without polling again; the burst goes to the engine as one batch
                    burst = [sock.recv_multipart()]
                    # more already queued? (EVENTS is a cheap check; a failing NOBLOCK recv raises)
                    while len(burst) < 64 and sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                        burst.append(sock.recv_multipart())
                    if burst:
                        handle(sock, burst)
                if out in ready:
                    n = 0
                    while n < 64 and out.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                        sock.send_multipart(out.recv_multipart())
                        n += 1
        finally:
            sock.close(linger=0)
            out.close(linger=0)

    def _handle(self, sock, burst: list[list[bytes]]):
        ts_recv = time.time_ns()
        st = self.pipeline.stats
        items, idents = [], []
        for frames in burst:
            ident = frames[0]
            if len(frames) != 5:
                st.bad_requests += 1
                sock.send_multipart([ident, _dumps({"status": "rejected", "reason": "bad_frames"}).encode()])
                continue
            _, key, ts, sig, body = frames
            try:
                account = self.auth.verify(key, ts, sig, body)
            except AuthError as e:
                st.auth_failures += 1
                sock.send_multipart([ident, _dumps({"status": "rejected", "reason": e.reason}).encode()])
                continue
            try:
                req = _loads(body)
                if not isinstance(req, dict):
                    raise ValueError("body is not an object")
            except ValueError:
                st.bad_requests += 1
                sock.send_multipart([ident, _dumps({"status": "rejected", "reason": "bad_json"}).encode()])
                continue
            self._identities[account] = ident
            items.append((account, ident, req, ts_recv))
            idents.append(ident)
        if not items:
            return
        replies = self.pipeline.handle_many(items)
        for ident, reply in zip(idents, replies):
            if reply.get("status") == "pending":
                continue  # the first copy of this retry is still in the engine; its reply will come
            stamps = reply.pop("_stamps", None)
            sock.send_multipart([ident, _dumps(reply).encode()])
            if stamps is not None:
                reply["_stamps"] = stamps
                self.pipeline.finish(reply)

    # ---- unsolicited messages to ZeroMQ clients ------------------------------------------------
    def _route_to_identity(self, account: str, event: dict) -> bool:
        ident = self._identities.get(account)
        if ident is None:
            return False
        msg = dict(event)
        msg["type"] = "exec"
        msg["exec_type"] = event["type"]
        frames = [ident, _dumps(msg).encode()]
        sock = getattr(self._tls, "sock", None)
        if sock is None:
            sock = getattr(self._tls, "push", None)
            if sock is None:
                sock = self.ctx.socket(zmq.PUSH)
                sock.setsockopt(zmq.LINGER, 0)
                sock.setsockopt(zmq.SNDHWM, self.hwm)
                for k in range(self.n_workers):
                    sock.connect(f"inproc://{self.name}-out-{k}")
                self._tls.push = sock
                with self._push_lock:
                    self._push_socks.append(sock)
        try:
            sock.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:
            self.pipeline.stats.busy += 1
            return False
        return True

    @property
    def identities(self) -> dict[str, bytes]:
        return dict(self._identities)
