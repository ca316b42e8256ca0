"""The history writer as a child process of ``feedhandler exchange`` (off the hot path: its own process,
its own GIL) and the ``feedhandler history`` command.

The exchange starts it after its engine opened the journals and waits until it has opened the database
and applied the migrations (an unreachable ``--db`` or ``--redis`` is a one-line startup error). The child
follows the journal files, stores batches, and shares its stored and journal sequences with the exchange
through shared memory (the exchange's status line prints ``history_lag``). It stops with the exchange
(after storing what the journals hold) and on its own when the exchange is gone (kill -9): the next
exchange's writer resumes from the stored position. A writer that dies while the exchange runs is logged
and started again.
"""
from __future__ import annotations

import argparse
import multiprocessing
import signal
import sys
import threading
import time

from feedhandler.cliopts import positive_int

from engine.errors import EXIT_INTERRUPTED, EXIT_OK, CommandError, StartupError, one_line, run_command

#: the ``[history]`` section of the exchange configuration, with its defaults
DEFAULTS = {"enabled": True, "db": "", "redis": "", "batch_inputs": 10000, "poll_ms": 5, "redis_levels": 10,
            "redis_trades": 1000}


def _open(data_dir: str, h: dict, lock_wait_s: float = 0.0):
    from engine.history.writer import HistoryWriter, open_store

    store = open_store(h.get("db") or None, data_dir) if h.get("enabled", True) else None
    rb = None
    try:
        if h.get("redis"):
            from engine.redisbook import RedisBook
            rb = RedisBook(h["redis"], levels=int(h.get("redis_levels", 10)), trades=int(h.get("redis_trades", 1000)))
        return HistoryWriter(data_dir, store, redis_book=rb, batch_inputs=int(h.get("batch_inputs", 10000)),
                             lock_wait_s=lock_wait_s, accounts=h.get("accounts"))
    except BaseException:
        if store is not None:
            store.close()
        if rb is not None:
            rb.close()
        raise


class _SharedFlag:
    """The exchange's stop request as the Event-like object ``HistoryWriter.run`` polls: one byte of shared
    memory. Not a multiprocessing.Event: a writer that dies while waiting on one leaves the Event's condition
    expecting a waiter that never wakes, and the exchange's ``set()`` then blocks forever (seen in CI)."""

    def __init__(self, value):
        self.value = value

    def is_set(self) -> bool:
        return bool(self.value.value)

    def wait(self, timeout: float) -> bool:
        if not self.is_set():
            time.sleep(timeout)
        return self.is_set()


def child_main(data_dir: str, h: dict, conn, stored, journal, stop, parent_pid: int) -> None:
    """Entry point of the writer process (multiprocessing, spawn)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # Ctrl-C reaches the exchange; it stops us in order
    try:
        w = _open(data_dir, h, lock_wait_s=15.0)
    except Exception as e:  # noqa: BLE001 - reported to the exchange as its startup error, in one line
        conn.send(("error", one_line(e) if isinstance(e, CommandError) else f"{type(e).__name__}: {one_line(e)}"))
        sys.exit(1)
    conn.send(("ready", {"stored": list(w.stored), "store": getattr(w.store, "kind", None)}))
    n = len(w.stored)

    def progress(wr) -> None:
        stored[:n] = wr.stored
        journal[:n] = wr.journal_seqs()

    try:
        w.run(_SharedFlag(stop), follow=True, poll_s=max(int(h.get("poll_ms", 5)), 1) / 1000, on_progress=progress,
              parent_pid=parent_pid, log_every_s=60.0)      # the exchange prints history_lag every 10 s
        print(w.status_line(), flush=True)
    except Exception as e:  # noqa: BLE001 - the writer's error boundary: one line; the exchange restarts it
        print(f"history writer: error: {type(e).__name__}: {one_line(e)} (stored seq "
              f"{'/'.join(map(str, w.stored))}; it resumes there)", file=sys.stderr, flush=True)
        sys.exit(1)
    finally:
        w.close()


class HistoryService:
    """The exchange's handle on its history writer process. Once started it supervises the writer from a
    thread of its own (``history-supervisor``): a writer that died (its database or Redis went away) is
    logged and started again, whether the exchange runs as ``feedhandler exchange`` or embedded through
    the Python API. ``restart_delay_s``: how long a dead writer stays down before it is started again."""

    SUPERVISE_S = 0.2           # how often the supervisor looks at the writer

    def __init__(self, data_dir: str, h: dict, n_shards: int, out=sys.stdout):
        self.data_dir = str(data_dir)
        self.h = dict(DEFAULTS, **h)
        self.n = n_shards
        self.out = out
        self._ctx = multiprocessing.get_context("spawn")
        self.stored = self._ctx.Array("q", n_shards, lock=False)
        self.journal = self._ctx.Array("q", n_shards, lock=False)
        self.proc = None
        self.restarts = 0
        self._next_restart = 0.0
        self._stop = None
        self._pending = None          # the pipe of a restarted writer until it says ready (or fails)
        self.restart_delay_s = 0.0
        self._dead_since = None
        self._lock = threading.Lock()           # check() from the supervisor thread and from callers
        self._supervisor: threading.Thread | None = None
        self._supervisor_stop = threading.Event()

    def _spawn(self):
        import os

        self._stop = self._ctx.Value("b", 0, lock=False)     # see _SharedFlag
        parent, child = self._ctx.Pipe(duplex=False)
        self.proc = self._ctx.Process(target=child_main, name="history-writer", daemon=True,
                                      args=(self.data_dir, self.h, child, self.stored, self.journal, self._stop,
                                            os.getpid()))
        self.proc.start()
        child.close()
        return parent

    def start(self, timeout: float = 60.0) -> "HistoryService":
        """Start the writer and wait until it opened the database (StartupError, one line, when it cannot)."""
        parent = self._spawn()
        try:
            if not parent.poll(timeout):
                self._kill()
                raise StartupError(f"history writer: not ready after {timeout:.0f} s")
            try:
                kind, info = parent.recv()
            except EOFError:
                self.proc.join(5)
                raise StartupError(f"history writer: exited at start (code {self.proc.exitcode})") from None
        finally:
            parent.close()
        if kind == "error":
            self.proc.join(5)
            raise StartupError(f"history writer: {info}")
        self.stored[:self.n] = info["stored"]
        self._supervisor = threading.Thread(target=self._supervise, name="history-supervisor", daemon=True)
        self._supervisor.start()
        return self

    def _supervise(self) -> None:
        while not self._supervisor_stop.wait(self.SUPERVISE_S):
            try:
                self.check()
            except Exception as e:  # noqa: BLE001 - a supervisor that died would supervise nothing: say it, go on
                print(f"history writer supervisor: {type(e).__name__}: {one_line(e)}", file=self.out, flush=True)

    def _kill(self) -> None:
        if self.proc is not None and self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)

    def check(self) -> None:
        """What the supervisor thread does every ``SUPERVISE_S`` (callable from any thread, never blocking): a
        writer that died is logged and started again once it has been down ``restart_delay_s``, at most every
        5 s; a restarted writer's startup error is logged."""
        with self._lock:
            self._check()

    def _check(self) -> None:
        if self._pending is not None:
            self._read_pending()
        if self.proc is None or self.proc.is_alive():
            self._dead_since = None
            return
        now = time.monotonic()
        if self._dead_since is None:
            self._dead_since = now
        if now < self._next_restart or now - self._dead_since < self.restart_delay_s:
            return
        print(f"history writer exited (code {self.proc.exitcode}); starting it again", file=self.out, flush=True)
        self._next_restart = time.monotonic() + 5.0
        self.restarts += 1
        self._pending = self._spawn()

    def _read_pending(self) -> None:
        conn = self._pending
        try:
            if not conn.poll(0):
                if self.proc is not None and self.proc.is_alive():
                    return
                msg = ("exited", None)
            else:
                msg = conn.recv()
        except (EOFError, OSError):
            msg = ("exited", None)
        conn.close()
        self._pending = None
        if msg[0] == "error":
            print(f"history writer: {msg[1]}; retrying in 5 s", file=self.out, flush=True)
        elif msg[0] == "exited":
            print("history writer: exited at start; retrying in 5 s", file=self.out, flush=True)

    def lag(self, engine_seq: int | None = None) -> int:
        """Sequences journaled but not yet stored: ``engine_seq`` (the exchange's, summed over shards) or the
        journal sequence the writer has read, minus the stored sequence."""
        stored = sum(self.stored[:self.n])
        head = engine_seq if engine_seq is not None else sum(self.journal[:self.n])
        return max(head - stored, 0)

    def stats(self, engine_seq: int | None = None) -> dict:
        return {"stored_seq": list(self.stored[:self.n]), "journal_seq": list(self.journal[:self.n]),
                "lag": self.lag(engine_seq), "alive": bool(self.proc is not None and self.proc.is_alive()),
                "restarts": self.restarts}

    def stop(self, timeout: float = 60.0) -> None:
        """Ask the writer to store what the journals hold and exit; killed after ``timeout`` seconds."""
        self._supervisor_stop.set()
        if self._supervisor is not None:
            self._supervisor.join(10)
            self._supervisor = None
        with self._lock:
            self._stop_writer(timeout)

    def _stop_writer(self, timeout: float) -> None:
        if self._pending is not None:
            self._pending.close()
            self._pending = None
        if self.proc is None:
            return
        if self._stop is not None:
            self._stop.value = 1
        self.proc.join(timeout)
        if self.proc.is_alive():
            print(f"history writer: still busy after {timeout:.0f} s; killed (it resumes where it stopped)",
                  file=self.out, flush=True)
            self._kill()
        self.proc = None


# ---- the `feedhandler history` command ---------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="feedhandler history",
        description="Store what an exchange's journal sequenced (users/accounts, orders and each status change, "
                    "trades, position changes) in SQLite or PostgreSQL, and/or keep its live book in Redis. "
                    "Resumes from the last sequence it stored; never stores a row twice.",
        epilog="Exit codes: 0 ok; 1 runtime failure (database unreachable); 2 usage or unreadable data dir; "
               "130 interrupted. feedhandler exchange runs this writer itself (see --db / --no-history there).")
    p.add_argument("--data-dir", default="exchange-data", help="the exchange's data dir (default ./exchange-data)")
    p.add_argument("--db", default="", help="postgresql://user@host:port/db, sqlite:///path or a file path "
                                            "(default <data dir>/history.sqlite)")
    p.add_argument("--no-db", action="store_true", help="no database (only --redis)")
    p.add_argument("--redis", default="", help="redis://host:port/db or unix:///path: keep the live book there")
    p.add_argument("--follow", action="store_true",
                   help="keep following the journal until SIGINT/SIGTERM (default: store what it holds, exit)")
    p.add_argument("--batch-inputs", type=positive_int, default=DEFAULTS["batch_inputs"],
                   help="journaled inputs per transaction (default %(default)s)")
    p.add_argument("--config", default="",
                   help="the exchange's TOML configuration: its [accounts] table (balances on) makes the writer "
                        "store balance changes too (default: none; without it no balance_changes rows)")
    p.add_argument("--debug", action="store_true", help="print the traceback of an error")
    return p


def _main(argv: list[str]) -> int:
    a = build_parser().parse_args(argv)
    import os

    from engine.errors import DataDirError
    if not os.path.isdir(a.data_dir):
        # (sqlite answered "unable to open database file", exit 1)
        what = "not a directory" if os.path.exists(a.data_dir) else "no such directory"
        raise DataDirError(f"{a.data_dir}: {what}: give the --data-dir of an exchange (default ./exchange-data)")
    h = {"enabled": not a.no_db, "db": a.db, "redis": a.redis, "batch_inputs": a.batch_inputs}
    if a.config:
        from engine.exchange import load_config, make_accounts
        acc = make_accounts(load_config(a.config, {}))
        if acc is not None:
            h["accounts"] = acc.config()
    from engine.signals import SignalSafeEvent
    stop = SignalSafeEvent()         # set by the signal handler: no lock (see engine.signals)
    why = {}

    def on_signal(signum, frame):
        why["signal"] = signum
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        w = _open(a.data_dir, h)
        try:
            from engine.history.writer import redact
            print(f"history: {a.data_dir} -> {redact(a.db) if not a.no_db else 'no database'}"
                  + (f", redis {a.redis}" if a.redis else "") + f"; resuming after seq {'/'.join(map(str, w.stored))}",
                  flush=True)
            t0 = time.monotonic()
            w.run(stop, follow=a.follow)
            print(w.status_line() + f" in {time.monotonic() - t0:.2f} s", flush=True)
            _check_damage(w)
        finally:
            w.close()
    finally:
        for s, hd in old.items():
            signal.signal(s, hd)
    return EXIT_INTERRUPTED if why.get("signal") == signal.SIGINT else EXIT_OK


def _check_damage(w) -> None:
    """A journal whose reading stopped at a damaged frame: a torn tail (a crashed exchange, not restarted
    yet, truncates it) is fine; valid frames after the damage are not, and what follows it was not stored."""
    from engine.errors import DataDirError
    from engine.journal import JournalCorrupt, read_journal
    src = w.source
    for k, seen in enumerate(getattr(src, "corrupt_seen", [])):
        if not seen:
            continue
        try:
            read_journal(src.followers[k].path)
        except JournalCorrupt as e:
            raise DataDirError(f"{e} (history stored what comes before it)") from None


def main(argv: list[str] | None = None) -> int:
    return run_command("feedhandler history", _main, argv)
