"""Router-side handles of engine shards: in-process, in a spawned process (pipe), or a shard server (ZeroMQ).

Every handle has the same synchronous interface, ``call(name, *args)``, serialised by the handle's own
lock, so a slow or dead shard holds up only the requests for its own symbols (the router,
:class:`engine.manager.EngineManager`, takes no lock around shard calls and gives each shard a lane of
its own: ``EngineManager.submit_lanes``, used by the gateway's engine thread).

A shard server (:class:`ZmqShard`) can stall or die. The router's rules for it:

* A call that gets no answer within ``timeout_s`` raises :class:`ShardTimeout`. Its outcome is UNKNOWN
  (the server may have journaled and applied it): the router reports it as such, never as a reject, and
  remembers the call. When the answer arrives later, or when a restarted server's journal shows what
  happened, the call is *settled*: ``on_settled(call name, args, ("ok", value) | ("error", text))``.
* After a timeout the shard is *down*: further calls fail at once with :class:`ShardUnavailable` (never
  sent, so their outcome is known: not entered) instead of each waiting out the timeout. A probe thread
  asks the server every ``probe_s`` seconds; when it answers it is up again. A server that restarted
  empty ("not initialised") is re-initialised with the router's original ``init`` arguments (it recovers
  its books from its journal); calls still unsettled are then settled from the events its recovery
  replayed (a request that is not in its journal was never applied: settled as rejected).
* :meth:`ZmqShard.close` flushes the server's journal and disconnects; the server keeps running (the router
  did not start it). ``close(shutdown=True)`` also stops the server.
"""
from __future__ import annotations

import itertools
import json
import multiprocessing
import threading
import time
from collections.abc import Callable

import numpy as np


class ShardTimeout(RuntimeError):
    """A remote engine shard did not answer within the router's timeout: the call's outcome is unknown."""


class ShardUnavailable(RuntimeError):
    """The shard is down (an earlier call timed out, not answered since): the call was not sent."""


_NOT_INITIALISED = "shard server not initialised"


def _json_int(o):
    """JSON for numpy integers in request dicts (the dict API accepts them, see _int)."""
    if isinstance(o, np.integer):
        return int(o)
    raise TypeError(f"{type(o).__name__} cannot cross to a remote engine shard")


# ---- in-process ---------------------------------------------------------------------------------------------
class LocalShard:
    """A :class:`engine.manager.ShardEngine` in this process."""

    def __init__(self, args: tuple, kwargs: dict, shard=None):
        if shard is None:
            from engine.manager import ShardEngine
            shard = ShardEngine(*args, **kwargs)
        self.shard = shard
        self.lock = threading.Lock()

    @classmethod
    def wrap(cls, shard) -> "LocalShard":
        """A handle of an existing ShardEngine (a standby taking over)."""
        return cls((), {}, shard=shard)

    def call(self, name: str, *args):
        with self.lock:
            return getattr(self.shard, name)(*args)

    def take_replayed(self):
        return self.shard.take_replayed()

    def close(self, shutdown: bool = True) -> None:
        self.shard.close()


# ---- another process on this host (spawned and owned by the router) ------------------------------------------
def _shard_main(conn, args: tuple, kwargs: dict) -> None:
    """Body of an engine process: own one ShardEngine, serve calls from the router over a pipe."""
    from engine.manager import ShardEngine
    try:
        shard = ShardEngine(*args, **kwargs)
        conn.send(("ok", shard.take_replayed()))
    except BaseException as e:  # report construction errors to the parent instead of dying silently
        conn.send(("error", repr(e)))
        return
    while True:
        try:
            name, a = conn.recv()
        except EOFError:
            break
        try:
            result = ("ok", getattr(shard, name)(*a))
        except Exception as e:
            result = ("error", repr(e))
        conn.send(result)
        if name == "close":
            break
    shard.close()


class ProcessShard:
    """Router-side handle of an engine process (calls are synchronous, one at a time)."""

    def __init__(self, args: tuple, kwargs: dict):
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_shard_main, args=(child, args, kwargs), daemon=True, name="engine-shard")
        self.proc.start()
        child.close()
        self.lock = threading.Lock()
        status, value = self.conn.recv()
        if status != "ok":
            self.proc.join(5)
            raise RuntimeError(f"engine process failed to start: {value}")
        self.replayed = value

    def call(self, name: str, *args):
        with self.lock:
            self.conn.send((name, args))
            status, value = self.conn.recv()
        if status != "ok":
            raise RuntimeError(f"engine process: {name} failed: {value}")
        return value

    def take_replayed(self):
        evs, self.replayed = self.replayed, []
        return evs

    def close(self, shutdown: bool = True) -> None:
        if self.proc.is_alive():
            try:
                self.call("close")
            except (EOFError, OSError, RuntimeError):
                pass
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
        self.conn.close()


# ---- a shard server (engine.shard_server) on another host -----------------------------------------------------
class ZmqShard:
    """Router-side handle of an engine shard served by :mod:`engine.shard_server`.

    Same calls as :class:`ProcessShard`, one at a time over a DEALER; JSON on the wire (see
    engine.shard_server). See the module docstring for timeouts, unknown outcomes, settlement and
    re-initialisation.
    """

    _TUPLES = {"bbo": lambda v: tuple(v),
               "last_trade": lambda v: None if v is None else tuple(v),
               "book": lambda v: ([tuple(x) for x in v[0]], [tuple(x) for x in v[1]])}

    def __init__(self, endpoint: str, args: tuple, kwargs: dict, timeout_s: float = 30.0, ctx=None,
                 on_settled: Callable | None = None, probe_s: float = 0.2):
        import zmq

        self._zmq = zmq
        self.endpoint = endpoint
        self.timeout_ms = int(timeout_s * 1000)
        self.probe_s = probe_s
        self.ctx = ctx or zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.lock = threading.Lock()
        self._cid = itertools.count(1)
        self._init_args = (list(args), kwargs)
        self.on_settled = on_settled
        self.unsettled: dict[bytes, tuple[str, tuple]] = {}   # call id -> (name, args) whose outcome is unknown
        self.down = False
        self.reinits = 0
        self._closed = threading.Event()
        self._probe: threading.Thread | None = None
        try:
            self.replayed = self.call("init", *self._init_args)
        except BaseException:
            self.close()            # no probe thread or socket left behind by a router that failed to start
            raise

    # ---- calls ---------------------------------------------------------------------------------------
    def call(self, name: str, *args):
        if name == "submit_many" and len(args) > 1:
            reqs, tokens = args[0], args[1]
            res = self.call("submit_many", reqs)
            if tokens is not None:
                for evs, tok in zip(res, tokens):
                    for ev in evs:
                        ev["token"] = tok
            return res
        if self.down and name != "init":
            raise ShardUnavailable(f"engine shard {self.endpoint} is down (no answer since a call timed out)")
        body = json.dumps([name, list(args)], separators=(",", ":"), default=_json_int).encode()
        with self.lock:
            if self.sock is None:
                raise ShardUnavailable(f"engine shard {self.endpoint}: closed")
            status, value = self._exchange(name, args, body, self.timeout_ms)
            if status != "ok" and name != "init" and _NOT_INITIALISED in str(value):
                # a restarted server (it refused the call: not applied): initialise it again, then retry
                if not self._reinit_locked():
                    self._mark_down()
                    raise ShardUnavailable(f"engine shard {self.endpoint} restarted and could not be "
                                           "re-initialised")
                status, value = self._exchange(name, args, body, self.timeout_ms)
        if status != "ok":
            raise RuntimeError(f"engine shard {self.endpoint}: {name} failed: {value}")
        fix = self._TUPLES.get(name)
        return fix(value) if fix is not None else value

    def _exchange(self, name: str, args: tuple, body: bytes, timeout_ms: int):
        """Send one call and wait for its answer (lock held). Late answers of earlier calls met on the way are
        settled. On timeout the call joins the unsettled ones and ShardTimeout is raised."""
        cid = str(next(self._cid)).encode()
        self.sock.send_multipart([b"", cid, body])
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            left = int((deadline - time.monotonic()) * 1000)
            if left <= 0 or not self.sock.poll(left):
                if name not in ("ping", "init"):
                    self.unsettled[cid] = (name, args)
                self._mark_down()
                raise ShardTimeout(f"engine shard {self.endpoint}: no answer to {name} in {timeout_ms} ms "
                                   "(outcome unknown)")
            frames = self.sock.recv_multipart()
            if len(frames) != 3:
                continue
            if frames[1] == cid:
                return json.loads(frames[2])
            self._late(frames[1], frames[2])

    def _late(self, cid: bytes, body: bytes) -> None:
        """A late answer to a call that timed out: its outcome is known now."""
        call = self.unsettled.pop(cid, None)
        if call is None:
            return                      # a late answer to a ping: nothing to settle
        self._settle(call[0], call[1], tuple(json.loads(body)))

    def _settle(self, name: str, args: tuple, outcome: tuple) -> None:
        cb = self.on_settled
        if cb is not None:
            cb(name, args, outcome)

    # ---- health -----------------------------------------------------------------------------------------
    def _mark_down(self) -> None:
        if self.down:
            return
        self.down = True
        if self._probe is None or not self._probe.is_alive():
            self._probe = threading.Thread(target=self._probe_loop, name=f"shard-probe-{self.endpoint}",
                                           daemon=True)
            self._probe.start()

    def _probe_loop(self) -> None:
        while self.down and not self._closed.wait(self.probe_s):
            try:
                self.probe()
            except Exception:  # noqa: BLE001 - the probe keeps probing; the shard stays down meanwhile
                continue

    def probe(self) -> bool:
        """Ask the server whether it serves our shard; re-initialise a restarted one. True when up again."""
        with self.lock:
            if self.sock is None:
                return False
            body = json.dumps(["get_seq", []]).encode()
            try:
                status, value = self._exchange("ping", (), body, max(self.timeout_ms, 100))
            except ShardTimeout:
                self.down = True        # _exchange's _mark_down saw down already set
                return False
            if status != "ok":
                if _NOT_INITIALISED not in str(value) or not self._reinit_locked():
                    return False
            self.down = False
            return True

    def _reinit_locked(self) -> bool:
        """(lock held) Send the router's original init to a restarted server; it recovers its journal, whose
        replayed events settle what is still unsettled. True on success."""
        init = json.dumps(["init", list(self._init_args)], default=_json_int).encode()
        try:
            status, replayed = self._exchange("ping", (), init, max(self.timeout_ms, 100))
        except ShardTimeout:
            return False
        if status != "ok":
            return False
        self.reinits += 1
        self._settle_from_journal(replayed)
        return True

    def _settle_from_journal(self, replayed: list) -> None:
        """A restarted server recovered from its journal: each unsettled submit is settled from the events
        its recovery replayed (found by account and client order id), or as not entered."""
        by_key: dict[tuple, list] = {}
        for ev in replayed:
            if ev.get("type") == "request":     # recovery's marker before each request's events, not an event
                continue
            by_key.setdefault((ev.get("account"), ev.get("request_client_order_id") or ev.get("client_order_id")),
                              []).append(ev)
        for cid, (name, args) in list(self.unsettled.items()):
            del self.unsettled[cid]
            if name != "submit_many":
                continue
            from engine.shard_core import reject_event
            results = []
            for req in args[0]:
                key = (req.get("account"), req.get("client_order_id"))
                evs = by_key.get(key) if key[1] else None
                results.append(evs or [reject_event(req, "shard_restarted",
                                                    "not in the restarted shard's journal: never applied")])
            self._settle(name, args, ("ok", results))

    def take_replayed(self):
        evs, self.replayed = self.replayed, []
        return evs

    def close(self, shutdown: bool = False) -> None:
        """Flush the server's journal and disconnect; the server keeps serving its books (a router restart
        finds them). ``shutdown=True`` stops the server too."""
        if self.sock is None:
            return
        self._closed.set()
        if not self.down and hasattr(self, "replayed"):
            try:
                self.call("close" if shutdown else "sync")
            except RuntimeError:
                pass   # already gone (ShardTimeout and ShardUnavailable are RuntimeErrors)
        with self.lock:
            self.sock.close(linger=0)
            self.sock = None
        if self._probe is not None:
            self._probe.join(5)
