"""The ZeroMQ front of an :class:`~engine.gateway.pipeline.OrderPipeline`: ROUTER frontend, inproc DEALER
backend, N worker threads; worker 0 is the engine thread unless something else owns the engine.

Data path of one request::

    client DEALER ──tcp──► ROUTER (frontend) ══ zmq.proxy (C, own thread) ══ DEALER (backend, inproc)
        ──► worker k (DEALER): drain a burst (<= 64), per request: size limit → auth (HMAC) → JSON decode
            → OrderPipeline (validation, rate limit per API key) → the burst's orders appended to the
            engine's input queue (one entry per burst)
        ──► engine thread (worker 0): drain the queue, retry memory + risk in sequence order, ONE
            engine.submit_many per drain (journaled before applied and acknowledged), replies
        ◄── reply [identity, json] on worker 0's socket ──► proxy ──► ROUTER ──► the client
            then, after the replies of the batch: execution reports to other owners, market data (PUB)

Wire format (client → gateway), one ZeroMQ multipart message::

    [api_key, ts_ns (ASCII decimal), signature (hex HMAC-SHA256, see engine.auth), body (JSON)]

Gateway → client: ``[json]``; a reply carries the request's ``rid``; unsolicited execution reports
(fills of resting orders, caused by another client's order) have ``"type": "exec"``.

Limits (engine.limits): a frame above MAX_FRAME_BYTES disconnects the peer before it is read
(``ZMQ_MAXMSGSIZE``); a body above MAX_BODY_BYTES is answered ``message_too_large`` before the signature
or the JSON is looked at.

Threads: the proxy thread owns the frontend and backend sockets. Each worker owns one DEALER (requests
in, replies out) and one PULL outbox (``inproc://<name>-out-<k>``) that it forwards to its DEALER. The
engine thread's replies and execution reports leave on worker 0's own DEALER (or, with a dedicated
engine thread, through the outbox of the worker chosen by a hash of the client identity: one path per
client keeps its messages in engine order). A worker survives an exception of one burst (logged,
counted in ``stats.errors``); an engine failure ends the process (OrderPipeline.on_fatal).

Measured costs and the benchmark: see bench/bench_gateway.py.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time

import zmq

from engine.auth import AuthError, Authenticator
from engine.gateway.codec import dumpb, loads
from engine.gateway.pipeline import OrderPipeline
from engine.limits import MAX_BODY_BYTES, MAX_FRAME_BYTES
from engine.zmqio import recv_frames as _recv_frames, send2 as _send2

log = logging.getLogger("engine.gateway")
# zmq's flags are enum.IntFlag: every "|" or "&" on them is a Python-level enum call (~1 us here), so the
# hot path uses plain ints (and engine.zmqio's sends)
_NOBLOCK, _EVENTS, _POLLIN = int(zmq.NOBLOCK), int(zmq.EVENTS), int(zmq.POLLIN)


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
        front.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)   # larger frames: the peer is dropped unread
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
                    try:
                        handle(sock, burst)
                    except Exception as e:   # a bug on this burst's path: the worker goes on
                        self.pipeline.stats.errors += 1
                        log.exception("gateway worker %d: a burst failed: %r", k, e)
                if bell is not None and bell in ready:
                    while bell.getsockopt(_EVENTS) & _POLLIN:
                        bell.recv()
                    drain()         # failures in here are the engine's: fatal (OrderPipeline.on_fatal)
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
        except Exception as e:
            if self._stop.is_set() and isinstance(e, zmq.ContextTerminated):
                pass
            elif owner:      # the engine thread itself is gone: nothing would answer any more
                self.pipeline.stats.errors += 1
                if self.pipeline.failed is None:
                    self.pipeline._fatal(e)
            else:
                self.pipeline.stats.errors += 1
                log.exception("gateway worker %d stopped: %r", k, e)
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
            if len(body) > MAX_BODY_BYTES:
                st.too_large += 1   # refused before the signature is computed or the JSON decoded
                _send2(sock, ident, dumpb({"status": "rejected", "reason": "message_too_large",
                                           "text": f"body limit {MAX_BODY_BYTES} bytes"}))
                continue
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
            except (ValueError, RecursionError):    # RecursionError: json's answer to deep nesting
                st.bad_requests += 1
                _send2(sock, ident, dumpb({"status": "rejected", "reason": "bad_json"}))
                continue
            self._identities[account] = ident
            # the API key keys the rate limit (across connections); the signature names a request that
            # has neither client order id nor rid in the retry memory
            items.append((account, key, req, ts_recv, len(body), sig))
            idents.append(ident)
        if not items:
            return
        send = self._send_reply

        def deliver(i: int, reply: dict, idents=idents) -> None:   # engine thread
            send(idents[i], reply)

        replies = self.pipeline.handle_async(items, deliver)
        for ident, reply in zip(idents, replies):
            if reply is None:
                continue  # in the engine: the engine thread answers
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
