"""The order gateway: ZeroMQ ROUTER frontend, inproc DEALER backend, N worker threads, one engine thread.

Data path of one request::

    client DEALER ──tcp──► ROUTER (frontend) ══ zmq.proxy (C, own thread) ══ DEALER (backend, inproc)
        ──► worker k (DEALER): drain a burst (<= 64), per request auth (HMAC) → parse/validate → dedup
            → risk → the burst's accepted orders appended to the engine's input queue (one entry per burst)
        ──► engine thread (worker 0): drain the queue, ONE engine.submit_many per drain (one journal
            commit: journaled before applied and acknowledged), replies built from the events
        ◄── reply [identity, json] on worker 0's socket ──► proxy ──► ROUTER ──► the client
            then, after the replies of the batch: execution reports to other owners, market data (PUB)

Wire format (client → gateway), one ZeroMQ multipart message::

    [api_key, ts_ns (ASCII decimal), signature (hex HMAC-SHA256, see engine.auth), body (JSON)]

Gateway → client: ``[json]``; a reply carries the request's ``rid``; unsolicited execution reports
(fills of resting orders, caused by another client's order) have ``"type": "exec"``.

Threads and ownership
- The proxy thread owns the frontend and backend sockets. Each worker owns one DEALER (requests in,
  replies out) and one PULL outbox (``inproc://<name>-out-<k>``) that it forwards to its DEALER.
- The engine has ONE owner thread (one book, one thread): by default the gateway's worker 0, which is
  also a worker. Other workers append bursts to :class:`OrderPipeline`'s input queue (a deque: appends
  and pops are atomic) and ring worker 0's doorbell (``inproc://<name>-bell``, one empty message); a
  burst that worker 0 receives itself is applied at once, with no thread hop. Replies and execution
  reports leave on worker 0's own DEALER: the proxy's ROUTER routes by the identity frame, so any worker
  socket reaches any client, and one sender keeps each client's messages in engine order. Nothing
  holds a lock around the engine on this path (the engine lock only serves the inline mode below).
- When something else owns the engine (:meth:`OrderPipeline.start`: a dedicated engine thread), every
  worker only parses and queues, and the engine thread's replies go to the client's worker outbox
  (chosen by a hash of the identity, again one path per client) through a thread-local PUSH.
- With no engine thread at all (an OrderPipeline used on its own, or after the gateway stopped), calls
  run inline under the engine lock.
- Backpressure: at most ``max_pending`` orders may be queued or inside the engine; beyond that a request
  is answered ``busy`` (never dropped silently; the client retries with backoff). ZeroMQ high-water
  marks (``hwm``) bound every socket queue. While worker 0 is inside the engine, requests that the
  proxy hands to worker 0 wait in its socket queue (bounded by the HWM); the other workers keep
  answering, with ``busy`` once the engine queue is full.
- :class:`OrderPipeline` is the transport-independent part (validate, dedup, risk, engine, routing of
  events to owning accounts, market data). The FIX and OUCH acceptors call its blocking
  :meth:`~OrderPipeline.handle_many`, which goes through the same input queue and waits.

Measured costs and the benchmark: see bench/bench_gateway.py.
"""
from __future__ import annotations

import collections
import itertools
import json
import threading
import time
from collections import OrderedDict
from typing import Callable

import zmq

from engine.auth import AuthError, Authenticator
from engine.risk import RiskManager
from engine.zmqio import recv_frames as _recv_frames, send2 as _send2



def _int_like(o):
    """json fallback for numpy integers (what OPT_SERIALIZE_NUMPY does in orjson)."""
    if hasattr(o, "__index__"):
        return o.__index__()
    raise TypeError(f"{type(o).__name__} is not JSON serializable")


_json_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=_int_like).encode

try:  # optional: orjson encodes a reply ~10x and decodes ~3x faster than json here (bench/bench_gateway.py)
    import orjson as _orjson
except ImportError:  # pragma: no cover - the fallback is exercised where orjson is not installed
    _orjson = None


def dumpb(obj) -> bytes:
    """The gateway protocol's JSON encoder (compact; orjson when installed, else json): object -> bytes."""
    if _orjson is not None:
        try:
            return _orjson.dumps(obj, option=_orjson.OPT_SERIALIZE_NUMPY)
        except TypeError:
            pass    # what orjson refuses (ints beyond 64 bits, non-str keys): json's rules apply
    return _json_encode(obj).encode()


#: The gateway protocol's JSON decoder (bytes -> object); raises ValueError on bad input.
loads = _orjson.loads if _orjson is not None else json.loads

SIDES = {"B": "B", "S": "S", "buy": "B", "sell": "S", "BUY": "B", "SELL": "S", "1": "B", "2": "S"}
_PENDING = object()
# zmq's flags are enum.IntFlag: every "|" or "&" on them is a Python-level enum call (~1 us here), so the
# hot path uses plain ints (and engine.zmqio's sends)
_NOBLOCK, _EVENTS, _POLLIN = int(zmq.NOBLOCK), int(zmq.EVENTS), int(zmq.POLLIN)


_ORDER_ENDS = ("fill", "canceled", "expired")   # with leaves_qty 0: the order left the book
_CALL = object()   # engine-queue marker of a call (query) run by the engine thread


class _Waiter:
    """Collects the replies of one blocking handle_many() from the engine thread."""

    __slots__ = ("out", "ev", "n")

    def __init__(self, n: int):
        self.out: list = []
        self.ev = threading.Event()
        self.n = n

    def deliver(self, i: int, reply) -> None:
        self.out.append((i, reply))
        if len(self.out) >= self.n:
            self.ev.set()

    def wait(self) -> None:
        self.ev.wait()


def _run_call(fn: Callable, waiter: "_Waiter") -> None:
    """Engine thread: run a call (query) for another thread; its exception goes back to the caller."""
    try:
        waiter.deliver(0, (True, fn()))
    except Exception as e:
        waiter.deliver(0, (False, e))


class GatewayStats:
    """Counters bumped by workers; read by a monitor. Plain ints: the GIL makes += atomic enough for
    statistics (a lost increment under contention is acceptable, a lock per request is not)."""

    __slots__ = ("requests", "acks", "rejects", "busy", "auth_failures", "dups", "execs_routed", "bad_requests",
                 "engine_errors")

    def __init__(self):
        for s in self.__slots__:
            setattr(self, s, 0)

    def as_dict(self) -> dict:
        return {s: getattr(self, s) for s in self.__slots__}


class OrderPipeline:
    """Validate → dedup → risk → engine input queue → engine thread → route events. Transport independent
    and thread safe. The engine is called by one owner thread (:meth:`attach` / :meth:`start`), or
    inline under a lock when there is none.

    Parameters
    ----------
    engine : engine.manager.EngineManager (or anything with ``submit(req) -> list[event]``)
    risk : RiskManager, optional
    marketdata : engine.marketdata.MarketDataPublisher, optional
        Gets every event list (book updates and trades published as tick records).
    max_pending : int
        Orders allowed in the engine input queue (or inside the engine) before new ones are answered
        ``busy``.
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
        # the engine's input queue: bursts of accepted orders (and query calls), consumed by the owner
        self._inq: collections.deque = collections.deque()
        self._owner: threading.Thread | None = None     # the engine thread (see attach)
        self._bell: Callable[[], None] | None = None     # wakes the owner after an append
        self._thread: threading.Thread | None = None     # own engine thread (start), if any
        self._wake = threading.Event()
        self._stopping = False

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
        """Process a burst of ``(account, client, req, ts_recv)`` in order; one reply per item (blocking).

        Validation, dedup and risk run per request in the calling thread; everything that passes goes to
        the engine as ONE ``submit_many`` batch (one journal commit): through the engine thread's input
        queue when an engine thread owns the engine (:meth:`attach`, :meth:`start`), else inline under
        the engine lock.
        """
        replies, batch = self._prepare(items)
        if batch:
            if self._owner is None or self._owner is threading.current_thread():
                if self._inq and self._owner is not None:
                    self.drain()             # engine order: what was queued before goes first
                self._run_inline([(batch, replies.__setitem__)])
            else:
                w = _Waiter(len(batch))
                self._enqueue((batch, w.deliver))
                self._wait(w)
                for i, reply in w.out:
                    replies[i] = reply
        return replies

    def handle_async(self, items: list[tuple], deliver: Callable[[int, dict], None]) -> list:
        """Like :meth:`handle_many`, without waiting for the engine.

        Returns one entry per item: the reply for requests answered at once (hello, query, bad request,
        dedup, risk and busy rejects, and everything when no engine thread runs), ``None`` for requests
        queued for the engine thread, which calls ``deliver(index, reply)`` for each of them as soon as
        its batch is journaled and applied (market data is published after the replies of a batch). Called
        by the engine thread itself, the burst is applied at once (after what is queued): no thread hop.
        """
        if self._owner is None:
            return self.handle_many(items)
        replies, batch = self._prepare(items)
        if batch:
            if self._owner is threading.current_thread():
                if self._inq:
                    self.drain()
                self._run([(batch, deliver)])
            else:
                self._enqueue((batch, deliver))
        return replies

    # ---- the engine thread -----------------------------------------------------------------------
    def attach(self, bell: Callable[[], None]) -> None:
        """Make the CALLING thread the engine thread: from now on only it calls the engine, consuming the
        input queue in :meth:`drain`; ``bell()`` is called (from any thread) after every append so
        that it wakes up. The gateway's first worker attaches itself; :meth:`start` runs a dedicated one."""
        if self._owner is not None:
            raise RuntimeError(f"the engine is already owned by {self._owner.name}")
        self._bell = bell
        self._owner = threading.current_thread()

    def detach(self) -> None:
        """Engine thread: give the engine up (later calls run inline again), answering what is queued."""
        if self._owner is not threading.current_thread():
            raise RuntimeError("detach() is for the engine thread")
        self._owner = None
        self._bell = None
        with self._engine_lock:
            self.drain()

    def drain(self, max_batch: int = 1024) -> int:
        """Engine thread: apply everything queued, at most ``max_batch`` orders per engine call (one
        journal commit per call); returns the number of orders applied."""
        q = self._inq
        total = 0
        while q:
            items, n = [], 0
            while q and n < max_batch:
                it = q.popleft()
                items.append(it)
                n += 1 if it[0] is _CALL else len(it[0])
            self._run(items)
            total += n
        return total

    def start(self) -> "OrderPipeline":
        """Run a dedicated engine thread (when no gateway worker owns the engine). Idempotent."""
        if self._thread is None and self._owner is None:
            ready = threading.Event()
            self._stopping = False

            def loop():
                self.attach(self._wake.set)
                ready.set()
                try:
                    while not self._stopping:
                        self._wake.wait(0.1)
                        self._wake.clear()
                        self.drain()
                finally:
                    self.detach()
            self._thread = threading.Thread(target=loop, name="engine", daemon=True)
            self._thread.start()
            ready.wait()
        return self

    def stop(self) -> None:
        """Stop the engine thread of :meth:`start` after answering what is queued. Idempotent."""
        t = self._thread
        if t is None:
            return
        self._stopping = True
        self._wake.set()
        t.join()
        self._thread = None

    def _enqueue(self, item) -> None:
        self._inq.append(item)
        bell = self._bell
        if bell is not None:
            bell()

    def _wait(self, w: "_Waiter") -> None:
        """Wait for the engine thread; if it went away meanwhile, apply the queue here."""
        while not w.ev.wait(0.05):
            if self._owner is None:
                with self._engine_lock:
                    self.drain()

    def _run_inline(self, items: list) -> None:
        with self._engine_lock:
            self._run(items)

    def _run(self, items: list) -> None:
        """Engine owner: apply queued bursts in order; calls (queries) run between them."""
        pending = []
        for it in items:
            if it[0] is _CALL:
                if pending:
                    self._run_orders(pending)
                    pending = []
                _run_call(it[1], it[2])
            else:
                pending.append(it)
        if pending:
            self._run_orders(pending)

    def _run_orders(self, items: list) -> None:
        batch = [b for it in items for b in it[0]]
        t_enq = batch[0][7]
        try:
            results = self._execute(batch)
        finally:
            self._release(len(batch))
        t_match = time.time_ns()
        k = 0
        for sub, deliver in items:
            m = len(sub)
            self._complete(sub, results[k : k + m], t_enq, t_match, deliver)
            k += m
        self._publish(results)         # after the ACKs: public data never delays the owner's reply

    # ---- the parts of one batch ----------------------------------------------------------------
    def _prepare(self, items: list[tuple]) -> tuple[list, list]:
        """Validate, dedup and risk-check; reserve engine queue room (else ``busy``).

        Returns (replies with None where the request goes to the engine, batch entries
        ``(index, account, rid, key, ereq, t_recv, t_risk, t_enq)``)."""
        st = self.stats
        replies: list = [None] * len(items)
        batch = []
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
                        out = loads(prev)
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
            batch.append([i, account, rid, key, ereq, t_recv, time.time_ns(), 0])
        if not batch:
            return replies, batch
        with self._pending_lock:     # a counter, held for two integer operations
            room = self.max_pending - self._pending
            if room < len(batch):
                for i, account, rid, key, *_ in batch[max(room, 0):]:
                    st.busy += 1
                    replies[i] = self._remember(key, {"rid": rid, "status": "busy", "reason": "busy"})
                batch = batch[: max(room, 0)]
            self._pending += len(batch)
        t_enq = time.time_ns()
        for b in batch:
            b[7] = t_enq
        return replies, batch

    def _release(self, n: int) -> None:
        with self._pending_lock:
            self._pending -= n

    def _execute(self, batch: list) -> list:
        """Engine owner only: one engine call for the batch; risk and ownership state follow it in order."""
        reqs = [b[4] for b in batch]
        try:
            if len(reqs) > 1 and hasattr(self.engine, "submit_many"):
                results = self.engine.submit_many(reqs)
            else:
                results = [self.engine.submit(r) for r in reqs]
        except Exception as e:  # a failing engine answers every request instead of dropping it
            self.stats.engine_errors += 1
            return [[{"type": "rejected", "account": b[1], "reason": "engine_error", "text": repr(e)}]
                    for b in batch]
        owner = self._owner_by_clid
        risk = self.risk
        on_events = getattr(risk, "on_events", None)
        for events in results:
            if on_events is not None:
                on_events(events)            # one risk lock per request's events
            else:
                for ev in events:
                    risk.on_event(ev)
            for ev in events:
                t = ev["type"]
                if t == "accepted":
                    owner[(ev["account"], ev["client_order_id"])] = ev["order_id"]
                elif t in _ORDER_ENDS and not ev.get("leaves_qty"):
                    k = (ev.get("account"), ev.get("client_order_id"))    # the order is gone: so is its name
                    if owner.get(k) == ev.get("order_id"):
                        del owner[k]
        return results

    def _complete(self, batch: list, results: list, t_enq: int, t_match: int, deliver) -> None:
        """Build each request's reply (own events), route other accounts' events, deliver the replies."""
        st = self.stats
        lat = self.latency is not None
        for (i, account, rid, key, ereq, t_recv, t_risk, t_q), events in zip(batch, results):
            own = []
            for ev in events:
                if ev.get("account") == account:
                    own.append(ev)
                else:
                    st.execs_routed += 1
                    self.route(ev["account"], ev)
            if own and own[0]["type"] == "rejected":
                st.rejects += 1
                reply = {"rid": rid, "status": "rejected", "reason": own[0].get("reason", ""), "events": own}
            elif own and own[0]["type"] == "unknown":   # a shard did not answer in time: settled later
                reply = {"rid": rid, "status": "unknown", "reason": own[0].get("reason", ""), "events": own}
            else:
                st.acks += 1
                reply = {"rid": rid, "status": "ack", "events": own}
            self._remember(key, reply)
            reply["_stamps"] = (t_recv, t_risk, t_q, t_match) if lat else None
            deliver(i, reply)

    def _publish(self, results: list) -> None:
        md = self.marketdata
        if md is not None:
            for events in results:
                md.publish(events)

    def _remember(self, key, reply: dict) -> dict:
        """Keep a request's outcome for its retries, as encoded bytes: the memory holds up to ``dedup_size``
        of them for the process's lifetime, and bytes are invisible to the cyclic garbage collector, where
        the dicts and lists of the reply would make every full collection walk all of them (measured: ~25%
        of the request path's time once the memory is full)."""
        if key[-1] is not None:
            if reply["status"] == "busy" or reply.get("reason") == "rate_limited":
                with self._dedup_lock:
                    self._dedup.pop(key, None)   # nothing reached the engine: a retry must be tried again
            else:
                body = dumpb(reply)
                with self._dedup_lock:
                    self._dedup[key] = body
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

    def in_engine(self, fn: Callable[[], object]):
        """Run ``fn()`` where the engine may be touched: in the engine thread when it runs (the caller
        waits), else under the engine lock. For queries, never for the order path."""
        if self._owner is None or threading.current_thread() is self._owner:
            with self._engine_lock:
                return fn()
        w = _Waiter(1)
        self._enqueue((_CALL, fn, w))
        self._wait(w)
        ok, value = w.out[0][1]
        if not ok:
            raise value
        return value

    def _query(self, account, rid, req) -> dict:
        what = req.get("what")
        if what == "book":
            sym, depth = req["symbol"], int(req.get("depth", 10))
            bids, asks = self.in_engine(lambda: self.engine.book(sym, depth))
            return {"rid": rid, "status": "ok", "bids": bids, "asks": asks}
        if what == "position":
            if self.portfolio is not None:
                def report():
                    if hasattr(self.portfolio, "mark"):
                        self.portfolio.mark(self.engine)
                    return self.portfolio.report(account)
                return {"rid": rid, "status": "ok", "portfolio": self.in_engine(report)}
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
        self._engine_worker = False
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
        # worker 0 becomes the engine thread unless something else already owns the engine
        self._engine_worker = self.pipeline._owner is None
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
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(out, zmq.POLLIN)
        bell = None
        owner = k == 0 and self._engine_worker
        if owner:
            # the engine thread: other workers append to the pipeline's input queue and ring this bell
            bell = ctx.socket(zmq.PULL)
            bell.setsockopt(zmq.LINGER, 0)
            bell.bind(f"inproc://{self.name}-bell")
            poller.register(bell, zmq.POLLIN)
            self._tls.sock = sock           # replies and execution reports leave on this socket
            self.pipeline.attach(self._ring)
        self._ready.wait()
        handle = self._handle
        drain = self.pipeline.drain
        try:
            while not self._stop.is_set():
                ready = dict(poller.poll(100))
                if sock in ready:
                    # drain a burst without polling again; the burst goes to the engine as one batch
                    burst = [_recv_frames(sock)]
                    # more already queued? (one EVENTS check per burst entry; a failing NOBLOCK recv raises)
                    while len(burst) < 64 and sock.getsockopt(_EVENTS) & _POLLIN:
                        burst.append(_recv_frames(sock))
                    handle(sock, burst)
                if bell is not None and bell in ready:
                    while bell.getsockopt(_EVENTS) & _POLLIN:
                        bell.recv()
                    drain()
                if out in ready:
                    n = 0
                    while n < 64 and out.getsockopt(_EVENTS) & _POLLIN:
                        sock.send_multipart(out.recv_multipart())
                        n += 1
            if owner:
                self.pipeline.detach()       # answers what is queued; later calls run inline
            while out.getsockopt(_EVENTS) & _POLLIN:   # replies the engine answered while stopping
                sock.send_multipart(out.recv_multipart(), zmq.NOBLOCK)
        except zmq.Again:
            pass
        finally:
            if owner and self.pipeline._owner is threading.current_thread():
                self.pipeline.detach()
            self._tls.__dict__.pop("sock", None)
            sock.close(linger=0)
            out.close(linger=0)
            if bell is not None:
                bell.close(linger=0)

    def _ring(self) -> None:
        """Wake the engine thread (worker 0) after an append to the pipeline's input queue."""
        s = getattr(self._tls, "bell", None)
        if s is None:
            s = self.ctx.socket(zmq.PUSH)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.SNDHWM, 1024)
            s.connect(f"inproc://{self.name}-bell")
            self._tls.bell = s
            with self._push_lock:
                self._push_socks.append(s)
        try:
            s.send(b"", _NOBLOCK)
        except zmq.Again:
            pass   # 1024 rings pending: the engine thread is awake and will find the item

    def _handle(self, sock, burst: list[list[bytes]]):
        ts_recv = time.time_ns()
        st = self.pipeline.stats
        items, idents = [], []
        for frames in burst:
            ident = frames[0]
            if len(frames) != 5:
                st.bad_requests += 1
                _send2(sock, ident, dumpb({"status": "rejected", "reason": "bad_frames"}))
                continue
            _, key, ts, sig, body = frames
            try:
                account = self.auth.verify(key, ts, sig, body)
            except AuthError as e:
                st.auth_failures += 1
                _send2(sock, ident, dumpb({"status": "rejected", "reason": e.reason}))
                continue
            try:
                req = loads(body)
                if not isinstance(req, dict):
                    raise ValueError("body is not an object")
            except ValueError:
                st.bad_requests += 1
                _send2(sock, ident, dumpb({"status": "rejected", "reason": "bad_json"}))
                continue
            self._identities[account] = ident
            items.append((account, ident, req, ts_recv))
            idents.append(ident)
        if not items:
            return
        send = self._send_reply

        def deliver(i: int, reply: dict, idents=idents) -> None:   # engine thread
            send(idents[i], reply)

        replies = self.pipeline.handle_async(items, deliver)
        for ident, reply in zip(idents, replies):
            if reply is None or reply.get("status") == "pending":
                continue  # in the engine (the engine thread answers), or the first copy of a retry is
            stamps = reply.pop("_stamps", None)
            _send2(sock, ident, dumpb(reply))
            if stamps is not None:
                reply["_stamps"] = stamps
                self.pipeline.finish(reply)

    # ---- messages from other threads to ZeroMQ clients -------------------------------------------
    def _out_socket(self, ident: bytes) -> zmq.Socket:
        """This thread's PUSH into the outbox of the worker that serves ``ident``.

        One worker per client identity (a hash), so the engine thread's replies and execution reports
        of one client leave in the order the engine produced them."""
        own = getattr(self._tls, "sock", None)
        if own is not None:
            return own      # the engine thread's own worker socket: no extra hop
        socks = getattr(self._tls, "outs", None)
        if socks is None:
            socks = []
            for k in range(self.n_workers):
                s = self.ctx.socket(zmq.PUSH)
                s.setsockopt(zmq.LINGER, 0)
                s.setsockopt(zmq.SNDHWM, self.hwm)
                s.connect(f"inproc://{self.name}-out-{k}")
                socks.append(s)
            self._tls.outs = socks
            with self._push_lock:
                self._push_socks.extend(socks)
        return socks[hash(ident) % len(socks)]

    def _send_reply(self, ident: bytes, reply: dict) -> None:
        """Engine thread: the reply of a queued request, through its worker's outbox, to the client."""
        stamps = reply.pop("_stamps", None)
        try:
            _send2(self._out_socket(ident), ident, dumpb(reply), _NOBLOCK)
        except zmq.Again:
            self.pipeline.stats.busy += 1   # outbox full (HWM): the client retries and gets the dedup reply
            return
        if stamps is not None:
            reply["_stamps"] = stamps
            self.pipeline.finish(reply)

    def _route_to_identity(self, account: str, event: dict) -> bool:
        ident = self._identities.get(account)
        if ident is None:
            return False
        msg = dict(event)
        msg["type"] = "exec"
        msg["exec_type"] = event["type"]
        try:
            _send2(self._out_socket(ident), ident, dumpb(msg), _NOBLOCK)
        except zmq.Again:
            self.pipeline.stats.busy += 1
            return False
        return True

    @property
    def identities(self) -> dict[str, bytes]:
        return dict(self._identities)
