"""The aiohttp application of the HTTP gateway and the thread that runs its event loop.

A request's path: aiohttp parses it on the gateway's event loop thread → size check, JSON, exact field
conversion (engine.http.codec) → authentication (engine.http.auth) → :meth:`OrderPipeline.handle_async`
(dedup, risk with the per-account token bucket, then the engine's input queue) → the engine thread
journals and applies the batch and calls back → the future resolves on the loop → 202. Queries read the
views that the engine thread keeps current (engine.http.views) or run in the engine thread through
``pipeline.in_engine`` (in an executor: the loop never blocks on the engine).

Why aiohttp: measured against Starlette on uvicorn for a constant endpoint in the same run
(bench/bench_http.py --libs; figures in bench/README.md), and one package serves both HTTP and WebSocket.
"""
from __future__ import annotations

import asyncio
import json
import threading
import time

from aiohttp import WSMsgType, web

from engine.gateway import dumpb, loads
from engine.http import codec, malloc
from engine.http.auth import HttpAuth, TokenBucket, retry_after
from engine.http.codec import ApiError, ok
from engine.http.config import HttpConfig
from engine.http.dashboard import Dashboard
from engine.http.metrics import label, render
from engine.http.openapi import ROUTES, document
from engine.http.views import OrderView
from engine.http.ws import DEPTH_LEVELS, Conn, WsHub
from engine.latency import Histogram


_STATUS_OF = {"rate_limited": "RATE_LIMITED", "bad_request": "INVALID_PARAMETER", "busy": "BUSY"}
_NEW_KEYS = ("symbol", "side", "type", "price", "qty", "cid", "tif", "post_only")


class HttpGateway:
    """HTTP/WebSocket front door of an :class:`engine.gateway.OrderPipeline`.

    Wire it to the engine's events with ``EventTap(marketdata, [gateway.on_events])`` as the pipeline's
    ``marketdata`` (engine.exchange does), and give it the replayed events with :meth:`seed`."""

    def __init__(self, pipeline, authenticator, symbols: list[str], config: HttpConfig | None = None,
                 journal_fsync: str | None = None):
        self.pipeline = pipeline
        self.cfg = config or HttpConfig()
        #: the event loop becomes the engine thread at start (cfg.engine_thread; "auto": unless the journal
        #: fsyncs per batch/record, ``journal_fsync``)
        self.engine_thread = self.cfg.engine_thread == "on" or (
            self.cfg.engine_thread == "auto" and journal_fsync not in ("batch", "every"))
        self.symbols = list(symbols)
        self.auth = HttpAuth(authenticator, self.cfg.insecure_dev_auth, self.cfg.jwt_secret, self.cfg.jwt_ttl_s)
        self.views = OrderView(self.cfg.max_closed_orders, self.cfg.max_trades)
        self.hub = WsHub(pipeline.engine, self.symbols, self.cfg.ws_queue)
        accounts = getattr(getattr(pipeline, "state", None), "accounts", None)
        self.hub.balance_quote = accounts.quote if accounts is not None else None
        self.query_bucket = TokenBucket(self.cfg.query_rate_per_s, self.cfg.query_burst)
        self.hist = {name: Histogram() for name in ("create_order", "cancel_order", "amend_order")}
        self._lat: dict[str, list] = {name: [] for name in self.hist}
        self.counts: dict[tuple[str, int], int] = {}
        self.errors: dict[str, int] = {}
        self.listener_errors = 0
        self._view_waiters: list = []
        self._inflight: dict[int, tuple] = {}      # order id -> (account, symbol, seq): 202 sent, views behind
        self.late_rejects = 0                      # orders answered 202, then rejected by the engine
        self.hub.after_dispatch = self._wake_view_waiters
        self.last_listener_error = ""
        self.port: int | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._stop: asyncio.Event | None = None
        self._rid = 0
        self.started_at = time.time()
        self.owns_engine = False            # this gateway's event loop is the pipeline's engine thread
        self._drain_scheduled = False
        self.malloc = ""                    # what engine.http.malloc.tune did at start

    # ---- engine side ---------------------------------------------------------------------------------
    def on_events(self, events: list[dict]) -> None:
        """Engine thread (EventTap listener): the views, then the WebSocket streams."""
        try:
            self.views.apply(events)
            self.hub.on_events(events)
        except Exception as e:   # noqa: BLE001 - counted and exposed; the engine thread goes on
            self.listener_errors += 1
            self.last_listener_error = repr(e)[:200]
            raise

    def on_balance(self, ev: dict) -> None:
        """Engine thread (``pipeline.balance_listeners``): a balance event for the balance_updates streams."""
        try:
            self.hub.on_balance(ev)
        except Exception as e:   # noqa: BLE001 - counted and exposed; the engine thread goes on
            self.listener_errors += 1
            self.last_listener_error = repr(e)[:200]
            raise

    def seed(self, events: list[dict]) -> None:
        """Before start: the events the journal replay regenerated (orders and trades from before a restart)."""
        self.views.apply(events)

    # ---- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> "HttpGateway":
        """Bind and serve in a thread of its own; raises OSError when the address cannot be bound."""
        self.malloc = malloc.tune()          # fixed glibc thresholds: no mmap per request (engine.http.malloc)
        ready = threading.Event()
        failure: list = []

        def run():
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self.loop = loop
            self.hub.loop = loop
            self.hub.loop_thread = threading.get_ident()
            pl = self.pipeline
            if self.engine_thread and pl._owner is None and getattr(pl, "_thread", None) is None:
                pl.attach(self._bell)          # this loop is the engine thread from now on
                self.owns_engine = True
            try:
                loop.run_until_complete(self._serve(ready))
            except BaseException as e:  # noqa: BLE001 - handed to start()'s caller
                failure.append(e)
                ready.set()
            finally:
                if self.owns_engine:
                    self.owns_engine = False
                    pl.detach()            # answers what is queued; later requests run inline again
                self.hub.loop = None
                loop.close()

        self._thread = threading.Thread(target=run, name="http", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            raise failure[0]
        return self

    # ---- the engine thread (cfg.engine_thread) -----------------------------------------------------------
    def _bell(self) -> None:
        """Any thread, after a request was queued for the engine: one drain per loop iteration (coalesced).
        The flag is cleared before the drain reads the queue, so an item queued after that rings again."""
        if self._drain_scheduled:
            return
        self._drain_scheduled = True
        loop = self.loop
        if loop is None:
            return
        if threading.get_ident() == self.hub.loop_thread:
            loop.call_soon(self._drain)
        else:
            try:
                loop.call_soon_threadsafe(self._drain)
            except RuntimeError:        # the loop is closed: detach() answers what is queued
                self._drain_scheduled = False

    def _drain(self) -> None:
        self._drain_scheduled = False
        if self.owns_engine:
            self.pipeline.drain()

    async def _serve(self, ready: threading.Event) -> None:
        self._stop = asyncio.Event()
        app = self.app()
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.cfg.host, self.cfg.port, reuse_address=True, backlog=1024)
        try:
            await site.start()
            self.port = self._runner.addresses[0][1]
            ready.set()
            await self._stop.wait()
        finally:
            await self.hub.close_all()
            await self._runner.cleanup()

    def stop(self) -> None:
        """Close every connection and the listener; idempotent."""
        t, loop = self._thread, self.loop
        if t is None:
            return
        if loop is not None and self._stop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:
                pass
        t.join(10)
        self._thread = None

    @property
    def url(self) -> str:
        return f"http://{self.cfg.host}:{self.port}"

    # ---- the application ------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.cfg.max_body, middlewares=[self._envelope])
        dash = Dashboard(self)        # the web dashboard's pages and read endpoints (engine.http.dashboard)
        for method, path, handler, *_ in ROUTES:
            app.router.add_route(method, path, getattr(self, "h_" + handler, None) or getattr(dash, "h_" + handler))
        dash.add_pages(app)
        app.router.add_get("/openapi.json", self.h_docs)
        return app

    @web.middleware
    async def _envelope(self, request: web.Request, handler):
        """Every answer as {code, msg, data}; errors (ours and aiohttp's) with their codes; counted."""
        try:
            resp = await handler(request)
        except ApiError as e:
            resp = self._error(e)
        except web.HTTPRequestEntityTooLarge:
            resp = self._error(ApiError("PAYLOAD_TOO_LARGE", f"the body exceeds {self.cfg.max_body} bytes"))
        except web.HTTPNotFound:
            resp = self._error(ApiError("NOT_FOUND", f"no endpoint {request.path[:80]!r}"))
        except web.HTTPMethodNotAllowed:
            resp = self._error(ApiError("METHOD_NOT_ALLOWED", f"{request.method} is not served here"))
        except web.HTTPException as e:
            resp = self._error(ApiError("INVALID_PARAMETER", e.reason, e.status))
        except (asyncio.CancelledError, ConnectionError):
            raise
        except Exception as e:   # noqa: BLE001 - answered and counted, never a dropped connection
            resp = self._error(ApiError("INTERNAL_ERROR", f"{type(e).__name__}: {e}"[:200]))
        key = (request.method, resp.status)
        self.counts[key] = self.counts.get(key, 0) + 1
        return resp

    def _error(self, e: ApiError) -> web.Response:
        self.errors[e.code] = self.errors.get(e.code, 0) + 1
        return web.Response(body=dumpb(codec.err(e.code, e.msg)), status=e.status, headers=e.headers,
                            content_type="application/json")

    @staticmethod
    def _json(data, status: int = 200) -> web.Response:
        return web.Response(body=dumpb(ok(data)), status=status, content_type="application/json")

    async def _body(self, request: web.Request) -> bytes:
        cl = request.content_length
        if cl is not None and cl > self.cfg.max_body:
            raise ApiError("PAYLOAD_TOO_LARGE", f"the body ({cl} bytes) exceeds {self.cfg.max_body} bytes")
        payload = request.content
        if payload.is_eof():      # all of it has arrived (a small request): taken at once, not read in a loop
            body = payload.read_nowait(-1)
            if len(body) > self.cfg.max_body:   # what request.read() checks (its client_max_size)
                raise ApiError("PAYLOAD_TOO_LARGE", f"the body exceeds {self.cfg.max_body} bytes")
            return body
        return await request.read()

    @staticmethod
    def _object(body: bytes) -> dict:
        try:
            obj = loads(body) if body else None
        except ValueError:
            raise ApiError("INVALID_JSON", "the body is not valid JSON") from None
        if not isinstance(obj, dict):
            raise ApiError("INVALID_JSON", "the body must be a JSON object")
        return obj

    def _signer(self, request: web.Request, body: bytes) -> str:
        """The authenticated account of an order or admin request (no query rate limit: no await)."""
        return self.auth.account_of(request.headers, request.method, request.raw_path, body)

    async def _account(self, request: web.Request, body: bytes = b"", query: bool = True) -> str:
        account = self.auth.account_of(request.headers, request.method, request.raw_path, body)
        if query:
            wait = self.query_bucket.take(account)
            if wait:
                raise ApiError("RATE_LIMITED", "too many requests", headers=retry_after(wait))
        return account

    async def _submit(self, account: str, req: dict, t0: int, early: bool = False) -> dict:
        """Through the pipeline (same dedup, risk, sequencer as every door); the engine's reply.

        ``early``: answer as soon as the request is sequenced and journaled, before the matching (when the
        engine can say so, ``pipeline.early_acks``): the reply is then ``{"status": "journaled", "seq",
        "order_id", "ts"}``; the outcome follows on the account's ``order_updates``."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        journaled = None
        hub = self.hub
        here = hub.loop_thread      # the engine thread is this loop's (engine_thread on): no hand-off needed

        def answer(reply: dict) -> None:       # engine thread
            if threading.get_ident() == here:
                # the engine runs inside this loop's callback: the future directly (the task resumes in the
                # loop's next iteration, with the views already applied: the engine's whole batch, its
                # publication included, runs in that one callback)
                if not fut.done():
                    fut.set_result(reply)
            else:
                # through the hub's hand-off: the reply and the events the engine thread publishes right
                # after it usually reach this loop in one wake-up
                hub.hand_off([("r", fut, reply)])
        if early:
            sent: list = []

            def journaled(i: int, seq: int, oid: int, ts: int) -> None:    # engine thread, before matching
                sent.append(ts)
                answer({"status": "journaled", "seq": seq, "order_id": oid, "ts": ts})

            def deliver(i: int, reply: dict) -> None:      # engine thread, after matching
                if not sent:
                    answer(reply)
                elif threading.get_ident() == here:
                    self._late_reply((reply, sent[0]))
                else:           # already answered 202: only the latency stamps and the late outcome
                    hub.hand_off([("f", self._late_reply, (reply, sent[0]))])
        else:
            def deliver(i: int, reply: dict) -> None:      # engine thread
                answer(reply)

        # the engine's batch: queued for one drain per loop iteration (the requests of one iteration share one
        # engine call and journal write), unless nothing else is ready to run in this iteration: then no other
        # request can join the batch before the drain, and the engine runs now (two loop iterations less)
        queue = True
        if self.owns_engine and not self._drain_scheduled:
            ready = getattr(loop, "_ready", None)        # asyncio's ready queue (CPython's event loops)
            queue = ready is None or len(ready) > 0
        reply = self.pipeline.handle_async([(account, account, req, t0)], deliver, journaled, queue)[0]
        if reply is None:
            reply = await fut
        if reply.get("status") == "journaled":
            return reply
        self.pipeline.finish(reply)
        events = reply.get("events")
        if events and not self.views.caught_up(events):
            # the engine thread publishes (views, then the WebSocket hand-off) right after the replies of its
            # batch; the hand-off's dispatch on this loop wakes us (no polling)
            w = loop.create_future()
            self._view_waiters.append((events, w))
            try:
                await asyncio.wait_for(w, 5.0)
            except asyncio.TimeoutError:
                self.errors["VIEW_LAG"] = self.errors.get("VIEW_LAG", 0) + 1
        return reply

    def _late_reply(self, item: tuple) -> None:
        """Loop: the engine's outcome of an order already answered 202 (its events went to order_updates).
        Its latency stamps take the journal commit as the ack (the 202 left then, not after the matching)."""
        reply, journaled_ns = item
        self.pipeline.finish(reply, journaled_ns)
        if reply.get("status") != "ack":
            self.late_rejects += 1

    async def _read_own_writes(self, oid: int | None = None, account: str | None = None) -> None:
        """Loop: an order answered 202 may not be in the views yet (it is journaled, the engine thread
        applies and publishes it right after): a query or cancel of it waits for that (read your writes)."""
        pend = self._inflight
        if not pend:
            return
        if oid is not None:
            keys = [oid] if oid in pend else []
        else:
            keys = [k for k, v in pend.items() if v[0] == account]
        for k in keys:
            acct, sym, seq = pend[k]
            marker = [{"symbol": sym, "seq": seq}]
            if not self.views.caught_up(marker):
                w = asyncio.get_running_loop().create_future()
                self._view_waiters.append((marker, w))
                try:
                    await asyncio.wait_for(w, 5.0)
                except asyncio.TimeoutError:
                    self.errors["VIEW_LAG"] = self.errors.get("VIEW_LAG", 0) + 1
            pend.pop(k, None)

    def _wake_view_waiters(self) -> None:
        """Loop (after each hand-off from the engine thread): answer the requests whose events are applied."""
        if self._inflight:
            done = [k for k, (_, sym, seq) in self._inflight.items() if self.views.applied.get(sym, 0) >= seq]
            for k in done:
                del self._inflight[k]
        if self._view_waiters:
            keep = []
            for events, w in self._view_waiters:
                if w.done():
                    continue
                if self.views.caught_up(events):
                    w.set_result(None)
                else:
                    keep.append((events, w))
            self._view_waiters = keep

    def _check_reply(self, reply: dict) -> list:
        status = reply.get("status")
        if status == "ack" or status == "unknown":
            return reply.get("events") or []
        if status == "pending":
            raise ApiError("DUPLICATE_CID", "a request with this cid is still in flight", 409)
        reason = str(reply.get("reason", ""))
        code = _STATUS_OF.get(reason) or codec.reject_code(reason)
        text = reply.get("text") or reason
        if code == "RATE_LIMITED":
            raise ApiError(code, "order rate limit of this account reached", headers=retry_after(1))
        if code == "BUSY":
            raise ApiError(code, "the engine queue is full", headers=retry_after(1))
        if code == "INVALID_PARAMETER":
            raise ApiError(code, str(text)[:200])
        raise ApiError(code, f"rejected: {text}"[:200], 422)

    # ---- order entry ---------------------------------------------------------------------------------
    async def h_create_order(self, request: web.Request) -> web.Response:
        t0 = time.time_ns()
        body = await self._body(request)
        account = self._signer(request, body)
        b = self._object(body)
        codec.check_keys(b, _NEW_KEYS)
        sym = b.get("symbol")
        if not isinstance(sym, str) or sym not in self.symbols:
            if isinstance(sym, str) and codec._IDENT.match(sym):
                raise ApiError("UNKNOWN_SYMBOL", f"symbol {sym!r} is not traded here")
            raise ApiError("INVALID_PARAMETER", "symbol must be one of " + ", ".join(self.symbols))
        side = codec.enum(b.get("side"), codec.SIDES, "side")
        otype = codec.enum(b.get("type"), codec.ORDER_TYPES, "type", "LIMIT")
        tif = codec.enum(b.get("tif"), codec.TIFS, "tif", "DAY")
        qty = codec.parse_qty(b.get("qty"))
        if otype == "limit":
            price = codec.parse_price(b.get("price"))
        elif b.get("price") is not None:
            raise ApiError("INVALID_PARAMETER", "a MARKET order has no price")
        else:
            price = 0
        post_only = b.get("post_only", False)
        if not isinstance(post_only, bool):
            raise ApiError("INVALID_PARAMETER", "post_only must be true or false")
        cid = codec.ident(b.get("cid"), "cid")
        if cid is None:
            self._rid += 1
            cid = f"h{t0:x}{self._rid}"
        req = {"type": "new", "client_order_id": cid, "symbol": sym, "side": side, "price": price, "qty": qty,
               "order_type": otype, "tif": tif, "post_only": post_only}
        reply = await self._submit(account, req, t0, early=True)
        if reply.get("status") == "journaled":
            oid = reply["order_id"]
            seq = reply["seq"]
            if self.views.applied.get(sym, 0) < seq:    # views behind (engine on another thread): remembered
                self._inflight[oid] = (account, sym, seq)
            self._record("create_order", time.time_ns() - t0)
            return self._json({"order_id": str(oid), "cid": cid, "status": "ACCEPTED",
                               "accepted_at": reply["ts"] // 1_000_000}, 202)
        events = self._check_reply(reply)
        acc = next((e for e in events if e.get("type") == "accepted"), None)
        if acc is None:
            if reply.get("status") == "unknown":
                data = {"order_id": None, "cid": cid, "status": "UNKNOWN", "accepted_at": None}
                return self._json(data, 202)
            raise ApiError("INTERNAL_ERROR", "the engine acknowledged without an accepted event")
        data = {"order_id": str(acc["order_id"]), "cid": cid, "status": "ACCEPTED",
                "accepted_at": int(acc.get("ts_event") or t0) // 1_000_000}
        if reply.get("dup"):
            data["duplicate"] = True
        self._record("create_order", time.time_ns() - t0)
        return self._json(data, 202)

    async def _target(self, account: str, b: dict) -> dict:
        """order_id or cid of one of the caller's orders -> the pipeline's cancel/amend fields."""
        if b.get("order_id") is not None:
            oid = codec.order_id(b["order_id"])
            if oid in self._inflight:
                await self._read_own_writes(oid)
            if self.views.order(account, oid) is None:
                raise ApiError("UNKNOWN_ORDER", f"order {oid} is not an order of {account}")
            return {"order_id": oid}
        cid = codec.ident(b.get("cid"), "cid", required=True)
        return {"orig_client_order_id": cid}

    async def h_cancel_order(self, request: web.Request) -> web.Response:
        t0 = time.time_ns()
        body = await self._body(request)
        account = self._signer(request, body)
        b = self._object(body)
        codec.check_keys(b, ("order_id", "cid"))
        req = {"type": "cancel", **await self._target(account, b)}
        reply = await self._submit(account, req, t0)
        events = self._check_reply_order(reply)
        ev = events[0] if events else {}
        self._record("cancel_order", time.time_ns() - t0)
        return self._json({"order_id": str(ev.get("order_id", req.get("order_id", ""))), "status": "CANCELED"})

    async def h_amend_order(self, request: web.Request) -> web.Response:
        t0 = time.time_ns()
        body = await self._body(request)
        account = self._signer(request, body)
        b = self._object(body)
        codec.check_keys(b, ("order_id", "cid", "price", "qty"))
        req = {"type": "amend", **await self._target(account, b)}
        if b.get("price") is None and b.get("qty") is None:
            raise ApiError("INVALID_PARAMETER", "amend needs price or qty")
        req["new_price"] = codec.parse_price(b["price"]) if b.get("price") is not None else None
        req["new_qty"] = codec.parse_qty(b["qty"]) if b.get("qty") is not None else None
        reply = await self._submit(account, req, t0)
        events = self._check_reply_order(reply)
        ev = events[0] if events else {}
        self._record("amend_order", time.time_ns() - t0)
        return self._json({"order_id": str(ev.get("order_id", "")), "status": "REPLACED",
                           "price": codec.price_str(ev["price"]) if ev.get("price") else None,
                           "leaves_qty": str(ev.get("leaves_qty", ""))})

    def _check_reply_order(self, reply: dict) -> list:
        try:
            return self._check_reply(reply)
        except ApiError as e:
            if e.code in ("UNKNOWN_ORDER", "NOT_FOUND") or "unknown orig_client_order_id" in e.msg:
                raise ApiError("UNKNOWN_ORDER", e.msg) from None
            raise

    def _record(self, name: str, ns: int) -> None:
        buf = self._lat[name]
        buf.append(ns)
        if len(buf) >= 256:          # one vectorized histogram update per 256 requests
            self._flush_latency()

    def _flush_latency(self) -> None:
        for name, buf in self._lat.items():
            if buf:
                self._lat[name] = []
                self.hist[name].record_many(buf)

    # ---- queries -----------------------------------------------------------------------------------
    async def h_get_order(self, request: web.Request) -> web.Response:
        account = await self._account(request)
        oid = codec.order_id(request.match_info["order_id"])
        if oid in self._inflight:
            await self._read_own_writes(oid)
        o = self.views.order(account, oid)
        if o is None:
            raise ApiError("UNKNOWN_ORDER", f"order {oid} is not an order of {account}")
        o.pop("account", None)
        return self._json(o)

    async def h_get_orders(self, request: web.Request) -> web.Response:
        account = await self._account(request)
        status = request.query.get("status", "all")
        if status not in ("open", "all"):
            raise ApiError("INVALID_PARAMETER", "status must be open or all")
        await self._read_own_writes(account=account)
        out = self.views.orders(account, status)
        for o in out:
            o.pop("account", None)
        return self._json(out)

    async def h_get_trades(self, request: web.Request) -> web.Response:
        sym = self._symbol(request.query.get("symbol"))
        since = _int_param(request.query.get("since"), "since", 0, 0, 1 << 62)
        limit = _int_param(request.query.get("limit"), "limit", 100, 1, 1000)
        return self._json(self.views.trade_list(sym, since, limit))

    async def h_get_depth(self, request: web.Request) -> web.Response:
        sym = self._symbol(request.match_info["symbol"])
        levels = _int_param(request.query.get("levels"), "levels", 10, 1, 100)
        if levels <= DEPTH_LEVELS:
            await self.hub.ensure_watched(sym, self.pipeline.in_engine)
            b, a, seq = self.hub.books.get(sym, ({}, {}, 0))
            bids = sorted(b.items(), reverse=True)[:levels]
            asks = sorted(a.items())[:levels]
        else:
            loop = asyncio.get_running_loop()
            bids, asks = await loop.run_in_executor(
                None, self.pipeline.in_engine, lambda: self.pipeline.engine.book(sym, levels))
            bids = [(r[0], r[1]) for r in bids]
            asks = [(r[0], r[1]) for r in asks]
            seq = None
        return self._json({"symbol": sym, "seq": seq,
                           "bids": [[codec.price_str(p), str(q)] for p, q in bids],
                           "asks": [[codec.price_str(p), str(q)] for p, q in asks]})

    async def h_get_symbols(self, request: web.Request) -> web.Response:
        return self._json([{"symbol": s, "price_decimals": codec.PRICE_DIGITS, "qty_step": "1",
                            "status": "TRADING"} for s in self.symbols])

    def _accounts(self):
        acc = self.pipeline.state.accounts
        if acc is None:
            raise ApiError("UNSUPPORTED", "balances are off: this exchange runs without [accounts] enabled = true")
        return acc

    def balance_row(self, asset: str, available: int, locked: int) -> dict:
        q = asset == self.pipeline.state.accounts.quote
        return {"asset": asset, "available": codec.amount_str(available, q), "locked": codec.amount_str(locked, q)}

    async def h_get_balances(self, request: web.Request) -> web.Response:
        caller = await self._account(request)
        acc = self._accounts()
        account = request.query.get("account", caller)
        if account != caller:
            codec.ident(account, "account", required=True)
            if caller not in self.pipeline.admins:
                raise ApiError("UNAUTHORIZED", "another account's balances: admins only")
        loop = asyncio.get_running_loop()
        bal = await loop.run_in_executor(None, self.pipeline.in_engine, lambda: acc.balances(account))
        return self._json({"account": account,
                           "balances": [self.balance_row(a, c["available"], c["locked"]) for a, c in bal.items()]})

    # ---- admin (an account of [accounts] admins, signed with its API key; journaled like orders) -------
    async def _admin(self, request: web.Request, op: str) -> web.Response:
        body = await self._body(request)
        if request.headers.get("X-API-KEY") is None:
            self.auth.failures["UNAUTHORIZED"] = self.auth.failures.get("UNAUTHORIZED", 0) + 1
            raise ApiError("UNAUTHORIZED", "admin endpoints take an admin account's signed API key only")
        account = self._signer(request, body)
        acc = self._accounts()
        if account not in self.pipeline.admins:
            self.auth.failures["UNAUTHORIZED"] = self.auth.failures.get("UNAUTHORIZED", 0) + 1
            raise ApiError("UNAUTHORIZED", f"{account} is not an admin account ([accounts] admins)")
        b = self._object(body)
        req = {"type": "admin", "op": op}
        if op == "create_account":
            codec.check_keys(b, ("account", "rid"))
        else:
            codec.check_keys(b, ("account", "asset", "amount", "rid"))
            asset = b.get("asset")
            if not isinstance(asset, str) or asset not in acc.assets:
                raise ApiError("INVALID_PARAMETER", "asset must be one of " + ", ".join(acc.assets))
            req["asset"] = asset
            req["amount"] = codec.parse_amount(b.get("amount"), asset == acc.quote)
        req["account"] = codec.ident(b.get("account"), "account", required=True)
        req["rid"] = codec.ident(b.get("rid"), "rid")
        loop = asyncio.get_running_loop()
        reply = await loop.run_in_executor(None, self.pipeline.handle, account, account, req)
        events = self._check_reply(reply)
        ev = next((e for e in events if e.get("type") == "admin"), None)
        if ev is None:
            raise ApiError("INTERNAL_ERROR", "the engine acknowledged without an admin event")
        data = {"op": ev["op"], "account": ev["account"], "seq": ev.get("seq")}
        if op != "create_account":
            data["asset"] = ev["asset"]
            data["amount"] = codec.amount_str(ev["amount"], ev["asset"] == acc.quote)
        if reply.get("dup"):
            data["duplicate"] = True
        return self._json(data)

    async def h_admin_create_user(self, request: web.Request) -> web.Response:
        return await self._admin(request, "create_account")

    async def h_admin_deposit(self, request: web.Request) -> web.Response:
        return await self._admin(request, "deposit")

    async def h_admin_withdraw(self, request: web.Request) -> web.Response:
        return await self._admin(request, "withdraw")

    def _symbol(self, sym) -> str:
        if not isinstance(sym, str) or not sym:
            raise ApiError("INVALID_PARAMETER", "symbol is required")
        if sym not in self.symbols:
            raise ApiError("UNKNOWN_SYMBOL", f"symbol {sym[:40]!r} is not traded here")
        return sym

    async def h_login(self, request: web.Request) -> web.Response:
        b = self._object(await self._body(request))
        codec.check_keys(b, ("api_key", "secret"))
        return self._json(self.auth.login(b.get("api_key"), b.get("secret")))

    # ---- operations ------------------------------------------------------------------------------------
    def _history(self) -> dict | None:
        """The exchange's history writer: {stored_seq, journal_seq, lag, alive, restarts} (None when off or
        when this gateway runs without an exchange)."""
        ex = getattr(self, "exchange", None)
        hs = getattr(ex, "history_stats", None)
        try:
            return hs() if hs is not None else None
        except Exception as e:  # noqa: BLE001 - a status read must not fail the health answer
            return {"error": f"{type(e).__name__}: {e}"[:200]}

    async def h_health(self, request: web.Request) -> web.Response:
        st = self.pipeline.stats
        out = {"status": "UP", "uptime_s": round(time.time() - self.started_at, 3),
               "requests": st.requests, "ws_connections": len(self.hub.conns), "symbols": len(self.symbols)}
        h = self._history()
        if h is not None:
            out["history"] = h
            if not h.get("alive", False):
                out["status"] = "DEGRADED"      # orders are served; the history/Redis writer is down (restarting)
        return self._json(out)

    async def h_docs(self, request: web.Request) -> web.Response:
        return web.Response(text=json.dumps(document()), content_type="application/json")

    async def h_metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics_text().encode(),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    def metrics_text(self) -> str:
        self._flush_latency()
        pl = self.pipeline
        counters = {
            "exchange_pipeline_total": ("order pipeline counters (every door)",
                                        {label(what=k): v for k, v in pl.stats.as_dict().items()}),
            "exchange_http_responses_total": ("HTTP responses by method and status",
                                              {label(method=m, status=s): n for (m, s), n in self.counts.items()}),
            "exchange_http_errors_total": ("HTTP error answers by code",
                                           {label(code=c): n for c, n in self.errors.items()}),
            "exchange_http_auth_failures_total": ("failed authentications by code",
                                                  {label(code=c): n for c, n in self.auth.failures.items()}),
            "exchange_http_late_rejects_total": ("orders answered 202 (journaled), then rejected by the engine",
                                                 {"": self.late_rejects}),
            "exchange_http_event_errors_total": ("engine events the HTTP views/streams failed to take (a bug)",
                                                 {"": self.listener_errors}),
            "exchange_ws_messages_sent_total": ("WebSocket frames written", {"": self.hub.stats["messages_sent"]}),
            "exchange_ws_slow_consumer_disconnects_total": ("WebSocket connections closed as slow consumers",
                                                            {"": self.hub.stats["slow_disconnects"]}),
            "exchange_ws_connections_total": ("WebSocket connections accepted", {"": self.hub.stats["connections"]}),
            "exchange_risk_rejects_total": ("risk rejects by reason",
                                            {label(reason=r): n for r, n in dict(pl.risk.rejects).items()}),
        }
        queued = sum(c.queue.qsize() for c in self.hub.conns)
        gauges = {
            "exchange_ws_connections": ("open WebSocket connections", {"": len(self.hub.conns)}),
            "exchange_ws_queued_frames": ("frames waiting in WebSocket queues (fan-out lag)", {"": queued}),
            "exchange_ws_max_queue_fill": ("fullest WebSocket queue / its size (slow consumer lag)",
                                           {"": max((c.queue.qsize() / max(c.queue.maxsize, 1)
                                                     for c in self.hub.conns), default=0.0)}),
            "exchange_engine_queue_pending": ("orders queued for or inside the engine",
                                              {"": getattr(pl, "_pending", 0)}),
            "exchange_open_orders": ("open orders known to the HTTP views", {"": len(self.views.open)}),
        }
        h = self._history()
        if h is not None and "lag" in h:
            gauges["exchange_history_lag"] = ("journaled inputs the history writer has not stored yet",
                                              {"": h["lag"]})
            gauges["exchange_history_writer_up"] = ("1 while the history writer process runs",
                                                    {"": int(bool(h["alive"]))})
            counters["exchange_history_writer_restarts_total"] = ("history writer restarts after it exited",
                                                                  {"": h["restarts"]})
        hists = [("exchange_http_request_seconds", "HTTP handler time (receive to response)", label(endpoint=n), h)
                 for n, h in self.hist.items()]
        lat = getattr(pl, "latency", None)
        if lat is not None:
            with lat._lock:
                snap = {n: _copy_hist(h) for n, h in lat.hist.items()}
            hists += [("exchange_order_stage_seconds", "order latency per pipeline stage (every door)",
                       label(stage=n), h) for n, h in snap.items()]
        return render(counters, gauges, hists)

    # ---- WebSocket ---------------------------------------------------------------------------------------
    async def h_ws(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=self.cfg.max_body)
        await ws.prepare(request)
        conn = Conn(ws, self.cfg.ws_queue, request.transport)
        self.hub.add(conn)
        try:
            async for msg in ws:
                if conn.closed:
                    break
                if msg.type == WSMsgType.TEXT:
                    await self._ws_message(conn, msg.data)
                elif msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                    break
                else:
                    self.hub.kick(conn, "binary frames are not part of the protocol")
        finally:
            self.hub.remove(conn)
        return ws

    async def _ws_message(self, conn: Conn, text: str) -> None:
        def answer(kind: str, data=None, error: ApiError | None = None):
            msg = {"type": kind, "code": 0, "msg": "ok", "data": data} if error is None else \
                {"type": kind, "code": error.code, "msg": error.msg, "data": data}
            self.hub.send(conn, dumpb(msg).decode())
        try:
            m = loads(text)
        except ValueError:
            return answer("error", error=ApiError("INVALID_JSON", "not JSON"))
        if not isinstance(m, dict):
            return answer("error", error=ApiError("INVALID_JSON", "a message is a JSON object"))
        op = m.get("op")
        try:
            if op == "auth":
                if conn.account is not None:
                    raise ApiError("INVALID_PARAMETER", "already authenticated")
                if "token" in m:
                    conn.account = self.auth.verify_jwt(str(m["token"]))
                elif "api_key" in m:
                    conn.account = self.auth.verify_hmac(str(m["api_key"]), str(m.get("ts", "")), m.get("nonce"),
                                                         str(m.get("signature", "")), "WS", "/ws", b"")
                elif "user_id" in m:
                    conn.account = self.auth.dev_user(m["user_id"])
                else:
                    raise ApiError("UNAUTHORIZED", "auth needs token, api_key+ts+nonce+signature, or user_id")
                return answer("auth", {"account": conn.account})
            if op in ("subscribe", "unsubscribe"):
                chans = m.get("channels")
                if not isinstance(chans, list) or not chans or len(chans) > 100:
                    raise ApiError("INVALID_PARAMETER", "channels must be a non-empty list (at most 100)")
                if op == "unsubscribe":
                    return answer("unsubscribed", {"channels": self.hub.unsubscribe(conn, chans)})
                for ch in chans:      # books followed before the subscription: the snapshot is current
                    if isinstance(ch, str) and ch.partition(".")[0] in ("depth", "bbo") and \
                            ch.partition(".")[2] in self.symbols:
                        await self.hub.ensure_watched(ch.partition(".")[2], self.pipeline.in_engine)
                good, bad = self.hub.subscribe(conn, chans)
                if bad:
                    answer("subscribed", {"channels": good, "refused": [{"channel": c, "code": k} for c, k in bad]},
                           ApiError(bad[0][1], f"refused: {', '.join(c for c, _ in bad)}"))
                else:
                    answer("subscribed", {"channels": good})
                self.hub.snapshots(conn, good)
                return None
            if op == "ping":
                return answer("pong", {"ts": time.time_ns() // 1_000_000})
            raise ApiError("INVALID_PARAMETER", "op must be auth, subscribe, unsubscribe or ping")
        except ApiError as e:
            if op == "auth":
                self.hub.stats["auth_failures"] += 1
                self.auth.failures[e.code] = self.auth.failures.get(e.code, 0) + 1
            return answer(op if isinstance(op, str) and len(op) < 20 else "error", error=e)


def _copy_hist(h) -> Histogram:
    c = Histogram()
    c.merge(h)
    return c


def _int_param(v, name: str, default: int, lo: int, hi: int) -> int:
    if v is None or v == "":
        return default
    if not v.isascii() or not v.isdigit() or len(v) > 19:
        raise ApiError("INVALID_PARAMETER", f"{name} must be a non-negative integer")
    n = int(v)
    if not lo <= n <= hi:
        raise ApiError("INVALID_PARAMETER", f"{name} must be between {lo} and {hi}")
    return n
