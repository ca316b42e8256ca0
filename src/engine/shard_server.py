"""An engine shard served over ZeroMQ: the books of some symbols in a process on another host.

    feedhandler shard-server --bind tcp://0.0.0.0:7001 [--journal-root /var/lib/exch]

The server starts EMPTY and is configured by the symbol router (``EngineManager(...,
remote=["tcp://hostA:7001", "tcp://hostB:7001"])``): the router's first call is ``init`` with the same
``(args, kwargs)`` the pipe transport passes to a spawned process (symbols, their global ids, journal
directory, fsync policy, ...). From then on every call is one request and one reply, the same
``(method name, arguments) -> ("ok", value) | ("error", text)`` protocol as the pipe transport
(``engine.manager._shard_main``), so one router code path drives local, piped and remote shards.

Wire (ZeroMQ, the server binds a ROUTER, the router connects a DEALER)::

    request  [b"", call id (ASCII decimal), JSON [name, [args...]]]
    reply    [b"", call id, JSON ["ok", value] | ["error", "text"]]

JSON, not pickle: a pickle from the network would let any peer that reaches the port run code in the
engine. The values crossing here are request/event dicts of str/int/bool/None, so JSON is exact
(tuples come back as lists; :class:`engine.manager._ZmqShard` restores the few tuple-valued results).
Request tokens (engine-thread mode) never leave the router: it re-attaches them to the events.

Threading and ownership: one thread (the caller of :func:`serve`) owns the socket and the
:class:`engine.manager.ShardEngine`; calls are applied strictly in arrival order. A second router
configuring an already initialised server with the same arguments gets the current state (a router
restart); different arguments are refused (one book, one owner). A router that closes sends ``sync``
(journal flushed and fsynced) and disconnects: the server keeps its books for the next router; only
``close`` (``EngineManager.close(shutdown_remote=True)``), SIGTERM or SIGINT stop it.

Journal directories: a path given by the router is used as is, unless the server was started with
``--journal-root``, which then holds every shard's journal (``<root>/<basename of the router's path>``):
paths on the router host mean nothing on another host.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys

import zmq
from feedhandler.cliopts import zmq_endpoint

_dumps = json.JSONEncoder(separators=(",", ":")).encode


class ShardServer:
    """Serve one :class:`engine.manager.ShardEngine` on a ROUTER socket.

    Parameters
    ----------
    endpoint : str
        Bind address; ``tcp://127.0.0.1:*`` (or ``:0``) picks a free port, read :attr:`endpoint` after
        :meth:`bind`.
    journal_root : str, optional
        Directory that replaces the router-given journal directory's parent (see the module doc).
    """

    def __init__(self, endpoint: str, journal_root: str | None = None, ctx: zmq.Context | None = None):
        self.endpoint = endpoint[:-2] + ":*" if endpoint.endswith(":0") else endpoint
        self.journal_root = journal_root
        self.ctx = ctx or zmq.Context.instance()
        self.sock: zmq.Socket | None = None
        self.shard = None
        self._init_args = None
        self.calls = 0
        self.errors = 0
        self._stop = False

    def bind(self) -> str:
        s = self.ctx.socket(zmq.ROUTER)
        s.setsockopt(zmq.LINGER, 0)
        s.bind(self.endpoint)
        self.endpoint = s.getsockopt_string(zmq.LAST_ENDPOINT)
        self.sock = s
        return self.endpoint

    def _init(self, args: list, kwargs: dict):
        from engine.manager import ShardEngine

        jd = kwargs.get("journal_dir")
        if jd is not None and self.journal_root is not None:
            kwargs = dict(kwargs, journal_dir=os.path.join(self.journal_root, os.path.basename(jd.rstrip("/"))))
        key = _dumps([args, kwargs])
        if self.shard is not None:
            if key != self._init_args:
                raise ValueError("this shard server already owns other symbols/configuration")
            return []
        self.shard = ShardEngine(*args, **kwargs)
        self._init_args = key
        return self.shard.take_replayed()

    def _call(self, name: str, args: list):
        if name == "init":
            return self._init(*args)
        if name == "ping":
            return "pong"
        if self.shard is None:
            raise RuntimeError("shard server not initialised (the router sends init first)")
        if name == "submit_many":
            return self.shard.submit_many(args[0])     # tokens stay on the router side
        if name == "sync":                              # a router disconnecting: journal on disk, keep serving
            if self.shard.journal is not None:
                self.shard.journal.sync()
            return None
        if name not in _ALLOWED:
            raise ValueError(f"unknown call {name!r}")
        return getattr(self.shard, name)(*args)

    def serve(self, poll_ms: int = 200) -> None:
        """Answer calls until :meth:`stop` (or SIGTERM/SIGINT via :func:`main`); then close the shard."""
        if self.sock is None:
            self.bind()
        sock = self.sock
        try:
            while not self._stop:
                if not sock.poll(poll_ms):
                    continue
                frames = sock.recv_multipart()
                if len(frames) != 4:
                    self.errors += 1
                    continue   # not our protocol: no reply address we can trust
                ident, empty, cid, body = frames
                try:
                    name, args = json.loads(body)
                    value = ("ok", self._call(name, args))
                    out = _dumps(value)
                except Exception as e:  # report to the router; the shard keeps serving
                    self.errors += 1
                    out = _dumps(("error", repr(e)))
                self.calls += 1
                sock.send_multipart([ident, empty, cid, out.encode()])
                if name == "close":
                    break
        finally:
            self.close()

    def stop(self) -> None:
        self._stop = True

    def close(self) -> None:
        if self.shard is not None:
            self.shard.close()       # journal flushed and fsynced
            self.shard = None
        if self.sock is not None:
            self.sock.close(linger=0)
            self.sock = None


_ALLOWED = frozenset({"submit_many", "sync", "snapshot", "state_hash", "book", "bbo", "last_trade", "order", "get_seq",
                      "take_replayed", "close"})


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="feedhandler shard-server", description=__doc__.split("\n")[0],
        epilog="Exit codes: 0 ok or stopped by SIGTERM; 1 runtime failure (address in use); 2 bad arguments; "
               "130 interrupted (SIGINT). --debug prints the traceback of an error.")
    ap.add_argument("--bind", type=zmq_endpoint, default="tcp://127.0.0.1:7001",
                    help="ROUTER bind address (default tcp://127.0.0.1:7001; port 0: any free port)")
    ap.add_argument("--journal-root", help="directory for this host's shard journals (default: the path the "
                                           "router gives)")
    ap.add_argument("--debug", action="store_true", help="print the traceback of an error")
    return ap


def _main(argv: list[str]) -> int:
    from engine.errors import EXIT_INTERRUPTED, StartupError

    a = build_parser().parse_args(argv)
    # the engine's modules (numpy, the native engine) are loaded before the server says it listens: the
    # router's init is answered within its timeout (remote_timeout_s, 1 s by default) on a busy host too
    import engine.manager  # noqa: F401
    srv = ShardServer(a.bind, a.journal_root)
    try:
        ep = srv.bind()
    except zmq.ZMQError as e:
        raise StartupError(f"cannot listen on {a.bind}: {e.strerror}") from None
    why = {"signal": None}

    def on_signal(signum, frame):
        why["signal"] = signum
        srv.stop()

    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, on_signal)
    print(f"shard server listening on {ep}", flush=True)
    srv.serve()
    print(f"shard server stopped: calls={srv.calls} errors={srv.errors}", flush=True)
    return EXIT_INTERRUPTED if why["signal"] == signal.SIGINT else 0


def main(argv: list[str] | None = None) -> int:
    """``feedhandler shard-server``: exit codes 0 / 1 / 2 / 130 (see engine.errors); errors are one line."""
    from engine.errors import run_command
    return run_command("feedhandler shard-server", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
