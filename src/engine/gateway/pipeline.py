"""OrderPipeline: the transport-independent request path (validate -> engine thread: dedup, risk,
sequence + journal + apply -> replies, routing of events to owning accounts, market data).

Threads: any thread calls :meth:`OrderPipeline.handle_many` / :meth:`OrderPipeline.handle_async`; the
stateless part (:mod:`engine.gateway.validation`, the per-API-key rate limit) runs in the calling thread;
everything that reads or changes the state machine (:mod:`engine.gateway.state`: retry memory, name map,
risk; then the engine) runs on ONE engine thread, in sequence order: the owner set by :meth:`attach`
(the gateway's worker 0) or :meth:`start` (a dedicated thread), else inline under the engine lock.
Other threads append bursts to the engine's input queue (a deque: appends and pops are atomic) and ring
the owner's bell.

Failure isolation: an exception while handling one request becomes an error reply to that request
(``internal_error``, counted in ``stats.errors``); a failing sink or market-data publisher is logged and
counted, never fatal. An exception of the engine itself (the journal, the matching engine, the state
bookkeeping after an engine call) is fatal: :attr:`OrderPipeline.on_fatal` runs (by default: one log line
on stderr, then the process exits with status 70, so a supervisor restarts it and the journal rebuilds
the same state), and an in-process pipeline whose ``on_fatal`` returns answers ``engine_failed`` from
then on instead of silently answering nothing.

Per-shard lanes: with several shards that answer on their own (shard processes, shard servers:
``engine.lanes_useful``), the engine thread hands each shard's part of a batch to that shard's lane
(EngineManager.submit_lanes: one FIFO worker per shard) and waits at most ``lane_grace_s`` for it. A part
still unanswered then (a stalled or dead shard) completes later on the engine thread (its replies, risk and
retry memory); meanwhile that shard's later requests wait in ``_blocked`` (their decisions depend on its
outcome) and the other shards' requests go on. Per shard, requests are decided, sequenced and answered in
arrival order, as with one engine call per batch.

Backpressure: at most ``max_pending`` orders queued or inside the engine; beyond that ``busy``.
"""
from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
import sys
import threading
import time
from typing import Callable

from engine.gateway import balances
from engine.gateway.codec import dumpb, loads
from engine.gateway.state import ORDER_ENDS as _ORDER_ENDS, OrderState
from engine.gateway.validation import BadRequest, check_rid, validate
from engine.limits import MAX_BOOK_DEPTH, MAX_RID_BYTES, MAX_SYMBOL_BYTES
from engine.risk import RiskManager
from engine.shards import ShardTimeout, ShardUnavailable

#: a query of a symbol whose shard server is stalled or down: a reject of that query only
_SHARD_ERRORS = (ShardTimeout, ShardUnavailable)

log = logging.getLogger("engine.gateway")

#: exit status of a process whose engine thread failed (see :func:`exit_on_engine_failure`)
EXIT_ENGINE_FAILURE = 70
_CALL = object()   # engine-queue marker of a call (query) run by the engine thread
_LATE = object()   # engine-queue marker of a shard's answer that came after the lane grace (see _run_lanes)
_ORDER_KINDS = frozenset(("new", "cancel", "amend"))
_RID_FAST = MAX_RID_BYTES // 4      # a str this short is within MAX_RID_BYTES of UTF-8 whatever it holds


def exit_on_engine_failure(exc: BaseException) -> None:
    """The default fatal handler: one log line, then end the process (status 70) without running
    anything else that could touch the half-applied state. Restarting replays the journal."""
    msg = f"engine thread failed: {exc!r}; exiting with status {EXIT_ENGINE_FAILURE} (restart to recover)"
    log.critical(msg, exc_info=exc)
    try:
        sys.stderr.write("feedhandler: " + msg + "\n")
        sys.stderr.flush()
    finally:
        os._exit(EXIT_ENGINE_FAILURE)


class EngineFailed(RuntimeError):
    """Raised to the caller of a request whose engine call failed fatally (after on_fatal returned)."""


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
                 "engine_errors", "errors", "too_large", "rate_limited", "sink_errors")

    def __init__(self):
        for s in self.__slots__:
            setattr(self, s, 0)

    def as_dict(self) -> dict:
        return {s: getattr(self, s) for s in self.__slots__}


def _isolated_engine_errors() -> tuple:
    """Engine exceptions that concern one call only (a remote shard that did not answer in time)."""
    out = []
    for mod in ("engine.shards", "engine.manager"):      # where the shard transports live
        try:
            cls = getattr(__import__(mod, fromlist=["ShardTimeout"]), "ShardTimeout", None)
        except ImportError:
            continue
        if cls is not None and cls not in out:
            out.append(cls)
    return tuple(out)


class OrderPipeline:
    """Validate → engine thread (dedup, risk, engine) → route events. Transport independent, thread safe.

    Parameters
    ----------
    engine : engine.manager.EngineManager (or anything with ``submit(req) -> list[event]``)
    risk : RiskManager, optional
    marketdata : engine.marketdata.MarketDataPublisher, optional
    max_pending : int
        Orders allowed in the engine input queue (or inside the engine) before ``busy``.
    dedup_size : int
        Outcomes remembered per account for idempotent retries (engine.gateway.state.DedupMemory).
    portfolio : engine.portfolio.PortfolioManager, optional
        Answers ``{"type": "query", "what": "position"}`` (marked to the book first).
    latency : engine.latency.LatencyMonitor, optional
        Gets the stage stamps gateway_recv, risk_done, ring_enqueue, match_done (and ack_sent, added by
        the transport through :meth:`finish`) of every order that reached the engine.
    state : engine.gateway.state.OrderState, optional
        The gateway's state, kept up to date elsewhere (a hot standby feeds the events of the journal it
        follows to ``OrderState.rebuild`` as it goes); ``risk``, ``dedup_size`` and ``accounts`` are then
        its own.
    accounts : engine.accounts.Accounts, optional
        Balances (off by default): orders are checked against them, fills/cancels/amends move them, admin
        requests (``{"type": "admin", "op": ...}`` from an account in ``admins``) change them through the
        journal; ``{"type": "query", "what": "balances"}`` reads them, and every change is routed to its
        account as a ``balance`` event (see engine.gateway.balances).
    admins : iterable of str
        The accounts allowed to send admin requests.

    Construction rebuilds the state machine's gateway part from ``engine.take_replayed()`` (the events of
    the engine's journal recovery) when the engine has it.
    """

    #: called with the exception when the engine thread fails (see the module docstring)
    on_fatal: Callable[[BaseException], None] = staticmethod(exit_on_engine_failure)
    #: with per-shard lanes: how long the engine thread waits for a shard's part of a batch before it goes
    #: on with the other shards' requests (the part's answer is then handled when it comes)
    lane_grace_s: float = 0.02

    def __init__(self, engine, risk: RiskManager | None = None, marketdata=None,
                 max_pending: int = 1024, dedup_size: int = 100_000, portfolio=None, latency=None,
                 state: OrderState | None = None, accounts=None, admins=()):
        self.engine = engine
        self.latency = latency
        self._stamp_buf: list = []
        self._stamp_lock = threading.Lock()
        if state is not None:    # built elsewhere (a hot standby follows the journal with one): taken over
            self.risk = state.risk
            self.state = state
        else:
            self.risk = risk or RiskManager()
            self.state = OrderState(self.risk, dedup_size, accounts)
        self.admins = frozenset(admins)
        balances.wire(self)       # market buys' protection prices (balances on)
        self.marketdata = marketdata
        self.portfolio = portfolio
        self.max_pending = max_pending
        self.stats = GatewayStats()
        self.failed: BaseException | None = None
        self._isolated = _isolated_engine_errors()
        self._engine_lock = threading.Lock()
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._sinks: dict[str, Callable[[dict], None]] = {}
        self.zmq_route: Callable[[str, dict], bool] | None = None
        # engine thread: also given every ``balance`` event (the HTTP gateway's balance_updates), without
        # taking it from the account's sink / ZeroMQ connection
        self.balance_listeners: list[Callable[[dict], None]] = []
        self._inq: collections.deque = collections.deque()
        self._owner: threading.Thread | None = None
        self._bell: Callable[[], None] | None = None
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._stopping = False
        self._balance_out: list = []     # balance events of the current engine batch (engine thread)
        # per-shard lanes (engine thread): shard -> requests held back while a call to it is in flight
        self._blocked: dict[int, list] = {}
        self._sync = False
        self.rebuilt = self._recover()

    SNAPSHOT = "gateway-snapshot.json"

    @property
    def engine(self):
        return self._engine

    @engine.setter
    def engine(self, engine) -> None:
        self._engine = engine
        self._submit_many = getattr(engine, "submit_many", None)   # looked up once, not per batch
        # several shards that answer on their own (other processes, shard servers): per-shard lanes
        lanes = getattr(engine, "lanes_useful", False) is True
        self._submit_lanes = getattr(engine, "submit_lanes", None) if lanes else None
        self._route_shard = getattr(engine, "route_shard", None) if lanes else None
        # the early "journaled" answers of handle_async(..., journaled=): only where the engine can call
        # back between the journal commit and the matching (one in-process shard)
        hook = getattr(engine, "set_journaled_hook", None)
        self.early_acks = bool(hook is not None and hook(self._on_journaled))
        self._early: tuple | None = None

    def _recover(self) -> int:
        """Rebuild the state from the engine's journal recovery (after a gateway snapshot, if any)."""
        take = getattr(self.engine, "take_replayed", None)
        if take is None:
            return 0
        replayed = take()
        jd = getattr(self.engine, "journal_dir", None)
        path = os.path.join(jd, self.SNAPSHOT) if jd else None
        n_markers = sum(1 for ev in replayed if ev.get("type") == "request")
        if path and os.path.exists(path):
            with open(path) as f:
                snap = json.load(f)
            if snap.get("version") != 1:
                raise ValueError(f"{path}: gateway snapshot version {snap.get('version')!r} unknown (this build "
                                 "reads version 1)")
            if snap["seq"] + n_markers != self.engine.seq:
                raise ValueError(f"{path} was taken at seq {snap['seq']}, but the engine's snapshot is at seq "
                                 f"{self.engine.seq - n_markers}: snapshot the exchange with "
                                 "OrderPipeline.snapshot(), which writes both")
            self.state.load(snap["state"])
        elif jd and n_markers != getattr(self.engine, "seq", n_markers):
            raise ValueError(f"{jd}: the engine recovered from a snapshot but there is no {self.SNAPSHOT}: the "
                             "gateway's state (risk, retry memory, names) cannot be rebuilt; snapshot with "
                             "OrderPipeline.snapshot()")
        return self.state.rebuild(replayed)

    def snapshot(self) -> str:
        """Snapshot the engine (journal_dir/snapshot.npz per shard) and the gateway's state at the same
        sequence point (journal_dir/gateway-snapshot.json, atomically); recovery then replays only the
        journal after them. Returns the gateway snapshot's path."""
        jd = getattr(self.engine, "journal_dir", None)
        if not jd:
            raise ValueError("snapshot() needs an engine with a journal_dir")
        path = os.path.join(jd, self.SNAPSHOT)

        def both():
            self.engine.snapshot()
            data = json.dumps({"version": 1, "seq": self.engine.seq, "state": self.state.export()})
            tmp = path + ".tmp"
            with open(tmp, "w") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        self.in_engine(both)
        return path

    @property
    def _owner_by_clid(self) -> dict:
        return self.state.owner_by_clid

    def state_hash(self) -> str:
        """sha256 over the engine's state hash and the gateway's state (risk, retry memory, name map):
        equal to the hash of a pipeline rebuilt offline from the same journal."""
        def both():
            return self.engine.state_hash() + self.state.digest()
        return hashlib.sha256(self.in_engine(both).encode()).hexdigest()

    # ---- routing of executions to the owning client ------------------------------------------------
    def register_sink(self, account: str, sink: Callable[[dict], None] | None) -> None:
        """Deliver ``account``'s events that other requests cause to ``sink`` (thread safe callable)."""
        if sink is None:
            self._sinks.pop(account, None)
        else:
            self._sinks[account] = sink

    def route(self, account: str, event: dict) -> bool:
        if self.balance_listeners and event.get("type") == "balance":
            for fn in self.balance_listeners:
                try:
                    fn(event)
                except Exception as e:   # noqa: BLE001 - a listener never stops the delivery or the engine
                    self.stats.sink_errors += 1
                    log.error("a balance listener failed: %r", e)
        try:
            sink = self._sinks.get(account)
            if sink is not None:
                sink(event)
                return True
            if self.zmq_route is not None:
                return self.zmq_route(account, event)
        except Exception as e:   # one session's failure is not the exchange's
            self.stats.sink_errors += 1
            log.error("delivering an event to %s failed: %r", account, e)
        return False

    # ---- the request path ------------------------------------------------------------------------
    def handle(self, account: str, client, req: dict, ts_recv: int | None = None) -> dict:
        """Process one parsed request of ``account``; return the reply dict for the requester."""
        return self.handle_many([(account, client, req, ts_recv)])[0]

    def handle_many(self, items: list[tuple]) -> list[dict]:
        """Process a burst of ``(account, client, req, ts_recv[, nbytes, nonce])`` in order; one reply per
        item (blocking). ``client`` keys the rate limit (the API key), ``nbytes`` is the request's size,
        ``nonce`` names a request without client order id or rid in the retry memory (its signature)."""
        replies, batch = self._prepare(items)
        if batch:
            if self._owner is None or self._owner is threading.current_thread():
                if self._inq and self._owner is not None:
                    self.drain()             # engine order: what was queued before goes first
                self._sync = True            # the replies are returned here: no part left in flight
                try:
                    self._run_inline([(batch, replies.__setitem__)])
                finally:
                    self._sync = False
            else:
                w = _Waiter(len(batch))
                self._enqueue((batch, w.deliver))
                self._wait(w)
                for i, reply in w.out:
                    replies[i] = reply
        return replies

    def handle_async(self, items: list[tuple], deliver: Callable[[int, dict], None],
                     journaled: Callable[[int, int, int, int], None] | None = None, queue: bool = False) -> list:
        """Like :meth:`handle_many`, without waiting for the engine: ``None`` for requests queued for the
        engine thread, which calls ``deliver(index, reply)`` for each of them.

        ``journaled(index, seq, order_id, ts_ns)``, when given and :attr:`early_acks` is true, is called on
        the engine thread as soon as a request is sequenced and committed to the journal, BEFORE the engine
        matches it (``deliver`` follows with the outcome). Requests refused before sequencing (retry memory,
        risk, balances, validation) get no ``journaled`` call, only ``deliver``. It must be quick and must not
        raise (an exception is counted in ``stats.sink_errors`` and logged).

        ``queue``: on the engine thread itself, queue the requests for its next :meth:`drain` (rung through
        the bell) instead of running them now: an event loop that owns the engine gathers the requests of
        one iteration into one engine batch (one journal commit)."""
        if self._owner is None:
            return self.handle_many(items)
        replies, batch = self._prepare(items)
        if batch:
            if journaled is not None and self.early_acks:
                for b in batch:
                    b[8] = journaled
            if self._owner is threading.current_thread() and not queue:
                if self._inq:
                    self.drain()
                self._run([(batch, deliver)])
            else:
                self._enqueue((batch, deliver))
        return replies

    # ---- the engine thread -----------------------------------------------------------------------
    def attach(self, bell: Callable[[], None]) -> None:
        """Make the CALLING thread the engine thread (see the module docstring)."""
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
        """Engine thread: apply everything queued, at most ``max_batch`` orders per engine call."""
        q = self._inq
        total = 0
        while q:
            items, n = [], 0
            while q and n < max_batch:
                it = q.popleft()
                items.append(it)
                n += 1 if it[0] is _CALL or it[0] is _LATE else len(it[0])
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
            elif it[0] is _LATE:
                if pending:
                    self._run_orders(pending)
                    pending = []
                self._late_part(it[1], it[2], it[3])
            else:
                pending.append(it)
        if pending:
            self._run_orders(pending)

    def _run_orders(self, items: list) -> None:
        if self._submit_lanes is not None and not self._sync and self._owner is threading.current_thread():
            self._run_lanes([(b, deliver) for sub, deliver in items for b in sub])
            return
        batch = [b for it in items for b in it[0]]
        t_enq = batch[0][7]
        try:
            outcomes = self._execute(batch)
        except Exception as e:
            outcomes = self._fail(batch, e)
        finally:
            self._release(len(batch))
        t_match = time.time_ns()
        replies: list = [None] * len(batch)
        k = 0
        try:
            for sub, deliver in items:
                m = len(sub)
                self._complete(sub, outcomes, k, replies, t_enq, t_match, deliver)
                k += m
        except Exception as e:
            if self.failed is None:
                self._fatal(e)      # the state may be half noted: stop
            raise
        # after the ACKs: public data never delays the owner's reply; with balances, each request's events
        # then its balance changes, request by request (engine order on every stream: engine.gateway.balances)
        if self._balance_out:
            balances.publish_with_balances(self, outcomes)
        else:
            self._publish(outcomes)

    def _fatal(self, exc: BaseException) -> None:
        self.failed = exc
        self.stats.engine_errors += 1
        self.on_fatal(exc)

    def _fail(self, batch: list, exc: BaseException) -> list:
        """The engine failed under this batch: fatal (on_fatal), and every request of it is answered."""
        if self.failed is None:
            self._fatal(exc)
        return [("reply", {"status": "rejected", "reason": "engine_failed", "text": repr(exc)[:200]})
                for _ in batch]

    # ---- the parts of one batch ----------------------------------------------------------------
    def _prepare(self, items: list[tuple]) -> tuple[list, list]:
        """Stateless checks in the calling thread; reserve engine queue room (else ``busy``).

        Returns (replies with None where the request goes to the engine, batch entries
        ``[index, account, rid, key, ereq, t_recv, t_risk, t_enq]``)."""
        st = self.stats
        replies: list = [None] * len(items)
        batch = []
        risk = self.risk
        for i, item in enumerate(items):
            st.requests += 1
            if len(item) == 6:       # the ZeroMQ front: request size and signature too
                account, client, req, ts_recv, nbytes, nonce = item
            else:
                account, client, req, ts_recv = item
                nbytes, nonce = 0, None
            rid = req.get("rid") if isinstance(req, dict) else None
            try:
                if rid is not None and not (type(rid) is str and len(rid) <= _RID_FAST):
                    check_rid(rid)
            except BadRequest as e:     # not echoed: a reply is never larger than the limits allow
                st.bad_requests += 1
                replies[i] = {"rid": None, "status": "rejected", "reason": e.reason, "text": str(e)}
                continue
            try:
                if self.failed is not None:
                    replies[i] = {"rid": rid, "status": "rejected", "reason": "engine_failed"}
                    continue
                if not isinstance(req, dict):
                    raise BadRequest("a request is a JSON object")
                kind = req.get("type")
                if type(kind) is not str:
                    raise BadRequest("type must be a string")
                payer = client if client is not None else account      # the rate limit's key
                if kind not in _ORDER_KINDS:
                    if nbytes and risk.edge_limits and risk.take(payer, account, nbytes, orders=0) is not None:
                        st.rate_limited += 1
                        replies[i] = {"rid": rid, "status": "rejected", "reason": "rate_limited"}
                    elif kind == "hello":
                        replies[i] = {"rid": rid, "status": "ok", "account": account}
                    elif kind == "query":
                        replies[i] = self._query(account, rid, req)
                    elif kind == "admin":
                        replies[i] = balances.admin_request(self, account, rid, req)
                    else:
                        raise BadRequest(f"unknown request type {kind!r}"[:80])
                    continue
                t_recv = ts_recv if ts_recv is not None else time.time_ns()
                ereq = validate(account, req, nonce, True, t_recv)   # rid checked above
                if risk.edge_limits and risk.take(payer, account, nbytes) is not None:
                    st.rate_limited += 1
                    st.rejects += 1
                    replies[i] = {"rid": rid, "status": "rejected", "reason": "rate_limited"}
                    continue
            except BadRequest as e:
                st.bad_requests += 1
                replies[i] = {"rid": rid, "status": "rejected", "reason": e.reason, "text": str(e)}
                continue
            except Exception as e:    # a bug on this request's path: its sender gets an error, nobody else
                st.errors += 1
                log.exception("request of %s failed", account)
                replies[i] = {"rid": rid, "status": "rejected",
                              "reason": "internal_error", "text": type(e).__name__}
                continue
            batch.append([i, account, rid, ereq["dedup_key"], ereq, t_recv, time.time_ns(), 0, None])
        if not batch:
            return replies, batch
        with self._pending_lock:     # a counter, held for two integer operations
            room = self.max_pending - self._pending
            if room < len(batch):
                for b in batch[max(room, 0):]:
                    st.busy += 1
                    replies[b[0]] = {"rid": b[2], "status": "busy", "reason": "busy"}
                batch = batch[: max(room, 0)]
            self._pending += len(batch)
        t_enq = time.time_ns()
        for b in batch:
            b[7] = t_enq
        return replies, batch

    def _release(self, n: int) -> None:
        with self._pending_lock:
            self._pending -= n

    def _execute(self, batch: list, in_flight: list | None = None) -> list:
        """Engine owner only: the state machine's decisions in sequence order (retry memory, name map, risk),
        then ONE engine call for what passed. One outcome per entry: ``("events", events)``, ``("dup",
        encoded first outcome)``, ``("same", j)`` (a retry of entry j of this batch) or ``("reply", dict)``.

        With ``in_flight`` (a list: per-shard lanes, see :meth:`_run_lanes`) the engine call waits at most
        ``lane_grace_s`` for each shard; the outcome of an entry whose shard has not answered yet is None,
        and ``(shard, [entry index...], future)`` of each such part is appended to ``in_flight``."""
        state = self.state
        memory = state.dedup._by        # read here, written by OrderState.remember (this thread only)
        check = self.risk.check_and_reserve
        acc = state.accounts
        n = len(batch)
        outcomes: list = [None] * n
        reqs, idx = [], []
        first: dict = {}
        early = False
        for j, b in enumerate(batch):
            account, key, ereq = b[1], b[3], b[4]
            if key is not None:
                m = memory.get(account)
                prev = m.get(key) if m is not None else None
                if prev is not None:
                    outcomes[j] = ("dup", prev)
                    continue
                k = (account, key)
                f = first.get(k)
                if f is not None:
                    outcomes[j] = ("same", f)
                    continue
            if "orig_client_order_id" in ereq or acc is not None:
                refused = state.decide(account, ereq, j + 1 < n)
            else:                       # OrderState.decide without a name to resolve
                reason = check(account, ereq, j + 1 < n)
                refused = None if reason is None else (reason, "")
            if refused is not None:
                out = {"status": "rejected", "reason": refused[0]}
                if refused[1]:
                    out["text"] = refused[1]
                outcomes[j] = ("reply", out)
                continue
            if key is not None and n > 1:
                first[(account, key)] = j
            reqs.append(ereq)
            idx.append(j)
            if b[8] is not None:
                early = True
        if not reqs:
            return outcomes
        if early:
            self._early = (batch, idx)
        try:
            submit_many = self._submit_many
            if in_flight is not None:
                results, parts = self._submit_lanes(reqs, self.lane_grace_s)
                for k, pos, fut in parts:
                    in_flight.append((k, [idx[p] for p in pos], fut))
            elif submit_many is not None:
                results = submit_many(reqs)
            else:
                results = [self.engine.submit(r) for r in reqs]
        except self._isolated as e:
            # a remote shard did not answer in time: the outcome is unknown (it may have been journaled and
            # applied), so it is neither a reject nor remembered; the sender is told so
            self.stats.engine_errors += 1
            for j in idx:
                outcomes[j] = ("reply", {"status": "unknown", "reason": "outcome_unknown", "text": repr(e)[:200]})
            return outcomes
        finally:
            self._early = None
            if n > 1:
                self.risk.clear_reservations()
            if acc is not None:
                acc.clear_reservations()
        self._note(idx, results, outcomes)
        return outcomes

    def _note(self, idx: list, results: list, outcomes: list) -> None:
        """OrderState.note, inlined (the request path's cost counts): risk, then the name map; the outcome
        of entry idx[n] is results[n] (None: its shard has not answered yet, noted when it does)."""
        state = self.state
        acc = state.accounts
        on_events = self.risk.on_events
        owner = state.owner_by_clid
        for j, events in zip(idx, results):
            if events is None:
                continue
            on_events(events)
            if acc is not None:           # OrderState.note's balance part
                acc.on_events(events)
                balances.after_events(self, acc, events)
            for ev in events:
                t = ev["type"]
                if t == "accepted":
                    clid = ev.get("client_order_id")
                    if clid:
                        owner[(ev["account"], clid)] = ev["order_id"]
                elif t in _ORDER_ENDS and not ev.get("leaves_qty"):
                    k = (ev.get("account"), ev.get("client_order_id"))
                    if owner.get(k) == ev.get("order_id"):
                        del owner[k]
            outcomes[j] = ("events", events)

    # ---- per-shard lanes (several shards in other processes) ---------------------------------------
    def _lane_of(self, b: list) -> int | None:
        """The shard of a batch entry (None: not routable, refused by the decision anyway)."""
        ereq = b[4]
        orig = ereq.get("orig_client_order_id")
        if orig is not None:
            oid = self.state.owner_by_clid.get((b[1], orig))
            return None if oid is None else self._route_shard({"type": "cancel", "order_id": oid})
        return self._route_shard(ereq)

    def _run_lanes(self, entries: list) -> None:
        """Engine thread, several shards that answer on their own: a shard that does not answer within
        ``lane_grace_s`` holds up only its own requests. Its part stays in flight (its lane, FIFO), and
        until its outcome is known every later request for that shard waits in ``_blocked`` (its decisions,
        risk and retry memory, depend on that outcome); requests for the other shards go on. When the part
        answers (or times out: "unknown"), :meth:`_late_part` completes it on this thread and runs what
        waited, in arrival order."""
        blocked = self._blocked
        run = []
        for e in entries:
            k = self._lane_of(e[0]) if blocked else None
            if k is not None and k in blocked:
                blocked[k].append(e)
            else:
                run.append(e)
        if not run:
            return
        batch = [b for b, _ in run]
        in_flight: list = []
        try:
            outcomes = self._execute(batch, in_flight)
        except Exception as e:
            outcomes = self._fail(batch, e)
            in_flight = []
        lane_of_j = {}
        for k, js, fut in in_flight:
            blocked.setdefault(k, [])
            for j in js:
                lane_of_j[j] = k
        for j, out in enumerate(outcomes):
            if out is not None and out[0] == "same" and out[1] in lane_of_j:
                outcomes[j] = None        # a retry of a request in flight: decided again after its outcome
                blocked[lane_of_j[out[1]]].append(run[j])
        for k, js, fut in in_flight:
            part = [run[j] for j in js]
            fut.add_done_callback(lambda f, k=k, part=part: self._enqueue((_LATE, k, part, f)))
        self._complete_lanes(run, outcomes, batch[0][7])

    def _complete_lanes(self, run: list, outcomes: list, t_enq: int) -> None:
        done = [j for j, out in enumerate(outcomes) if out is not None]
        self._release(len(done))
        t_match = time.time_ns()
        replies: list = [None] * len(run)
        try:
            for j in done:
                self._complete([run[j][0]], outcomes, j, replies, t_enq, t_match, run[j][1])
            if self._balance_out:
                balances.flush(self)
        except Exception as e:
            if self.failed is None:
                self._fatal(e)
            raise
        self._publish([out for out in outcomes if out is not None])

    def _late_part(self, k: int, part: list, fut) -> None:
        """Engine thread: shard k's part answered after the grace: note and answer it, then run what waited
        for that shard."""
        try:
            results = fut.result()
            outcomes: list = [None] * len(part)
            self._note(list(range(len(part))), results, outcomes)
        except Exception as e:
            outcomes = self._fail([b for b, _ in part], e)
        self._complete_lanes(part, outcomes, part[0][0][7])
        waiting = self._blocked.pop(k, [])
        if waiting:
            self._run_lanes(waiting)

    def _on_journaled(self, rows: list) -> None:
        """Engine thread, inside the engine call (ShardCore.on_journaled): the batch is journaled, not yet
        matched: the requests that asked for it get their early answer."""
        cur = self._early
        if cur is None:
            return
        batch, idx = cur
        for k, seq, oid, ts in rows:
            b = batch[idx[k]]
            cb = b[8]
            if cb is not None:
                try:
                    cb(b[0], seq, oid, ts)
                except Exception as e:   # noqa: BLE001 - never between the journal and the matching
                    self.stats.sink_errors += 1
                    log.error("an early (journaled) answer failed: %r", e)

    def _complete(self, sub: list, outcomes: list, k0: int, replies: list, t_enq: int, t_match: int,
                  deliver) -> None:
        """Build each request's reply, remember sequenced outcomes, route other accounts' events, deliver."""
        st = self.stats
        lat = self.latency is not None
        put = self.state.dedup.put
        for n, (i, account, rid, key, ereq, t_recv, t_risk, t_q, _) in enumerate(sub):
            j = k0 + n
            kind, value = outcomes[j]
            stamps = None
            if kind == "events":
                own = []
                for ev in value:
                    if ev.get("account") == account:
                        own.append(ev)
                    else:
                        st.execs_routed += 1
                        self.route(ev["account"], ev)
                # state.reply_core, with the rid (the retry memory's copy is normalised by its digest)
                if own and own[0]["type"] == "rejected":
                    st.rejects += 1
                    reply = {"rid": rid, "status": "rejected", "reason": own[0].get("reason", ""), "events": own}
                elif own and own[0]["type"] == "unknown":
                    # the engine layer could not learn the outcome (a shard that did not answer in time): it
                    # settles it later; never an ack or a reject, never remembered as one
                    replies[j] = reply = {"rid": rid, "status": "unknown", "reason": own[0].get("reason", ""),
                                          "events": own}
                    if key is not None and self.state.dedup.get(account, key) is None:
                        # a retry meanwhile is told "unknown" again, never entered a second time; the
                        # settlement (engine.exchange.Exchange._on_settled) replaces it with the outcome
                        # (and is kept when it came first)
                        put(account, key, dumpb(reply))
                    reply["_stamps"] = None
                    try:
                        deliver(i, reply)
                    except Exception as e:
                        st.sink_errors += 1
                        log.error("delivering a reply to %s failed: %r", account, e)
                    continue
                else:
                    st.acks += 1
                    reply = {"rid": rid, "status": "ack", "events": own}
                if key is not None and (len(value) != 1 or value[0].get("seq") or value[0]["type"] != "rejected"):
                    put(account, key, dumpb(reply))        # sequenced (see state.sequenced)
                stamps = (t_recv, t_risk, t_q, t_match) if lat else None
            elif kind == "dup" or kind == "same":
                st.dups += 1
                if kind == "dup":
                    reply = loads(value)
                else:
                    prev = replies[value]
                    reply = {k: v for k, v in prev.items() if k not in ("rid", "_stamps", "dup")}
                reply["rid"] = rid
                reply["dup"] = True
            else:
                st.rejects += 1
                reply = {"rid": rid, **value}
            replies[j] = reply
            reply["_stamps"] = stamps
            try:
                deliver(i, reply)
            except Exception as e:   # the requester's transport failed: the outcome stays remembered
                st.sink_errors += 1
                log.error("delivering a reply to %s failed: %r", account, e)

    def _publish(self, outcomes: list) -> None:
        md = self.marketdata
        if md is not None:
            try:
                for kind, value in outcomes:
                    if kind == "events":
                        md.publish(value)
            except Exception as e:    # public data is not state: log, count, go on
                self.stats.sink_errors += 1
                log.error("market data publish failed: %r", e)

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
            sym = req.get("symbol")
            depth = req.get("depth", 10)
            if type(sym) is not str or len(sym) > MAX_SYMBOL_BYTES:
                raise BadRequest("symbol must be a string of at most 32 bytes")
            if type(depth) is not int or not 0 < depth <= MAX_BOOK_DEPTH:
                raise BadRequest(f"depth must be an integer 1..{MAX_BOOK_DEPTH}")
            try:
                bids, asks = self.in_engine(lambda: self.engine.book(sym, depth))
            except KeyError:
                return {"rid": rid, "status": "rejected", "reason": "unknown_symbol", "text": sym}
            except _SHARD_ERRORS as e:     # the symbol's shard server is stalled or down: this query only
                return {"rid": rid, "status": "rejected", "reason": "shard_unavailable", "text": str(e)[:200]}
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
        if what == "balances":
            return balances.query(self, account, rid, req)
        raise BadRequest(f"unknown query {what!r}"[:80])
