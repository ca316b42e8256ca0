"""The history writer: follows an exchange's journals and stores what they sequenced, batched, off the hot path.

It reads the journal files the way the hot standby does (:class:`engine.journal.JournalFollower`) and turns
the journaled inputs into the engine's events with the recovery code itself
(:meth:`engine.manager.ShardEngine.replay_payloads`), so it never parses a journal record and needs nothing
from the running exchange: it works beside a live exchange (``feedhandler exchange`` starts it in a child
process) and on a data dir after the fact (``feedhandler history``).

Exactly once: each batch (at most ``batch_inputs`` journaled inputs of one shard) is stored in one
transaction together with the shard's new ``history_position``; on start the writer replays the journal
through its own engine (the state it needs to derive events) and stores only the events of inputs after the
stored position. Killed at any point, it resumes there: nothing lost, no row twice.

Lag: journal sequence (what the shard journals hold) minus stored sequence, per shard and in total
(:meth:`HistoryWriter.lag`; the exchange prints it in its status line).
"""
from __future__ import annotations

import fcntl
import json
import os
import queue
import sys
import threading
import time
from collections import deque
from pathlib import Path

from engine.errors import DataDirError
from engine.history.rows import BalanceLedger, Rows
from engine.journal import JournalFollower

MANIFEST = "exchange.json"
LOCK = "history.lock"


def open_store(url: str | None, data_dir: str):
    """The store named by ``url``: ``postgresql://...`` / ``postgres://...``, ``sqlite:///path`` or a path;
    None or "" -> ``<data_dir>/history.sqlite``."""
    if not url:
        from engine.history.sqlite import SqliteStore
        return SqliteStore(str(Path(data_dir) / "history.sqlite"))
    if url.startswith(("postgresql://", "postgres://")) or "dbname=" in url:
        from engine.history.postgres import PostgresStore
        return PostgresStore(url)
    if url.startswith("sqlite:") or "://" not in url:
        from engine.history.sqlite import SqliteStore
        return SqliteStore(url)
    raise ValueError(f"--db {url!r}: not a postgresql:// URL, sqlite:/// URL or file path")


def redact(url: str | None) -> str:
    """A database URL for logs, without its password."""
    if not url:
        return "sqlite (history.sqlite in the data dir)"
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        return f"{scheme}://{cred.split(':', 1)[0]}@{host}"
    return url


class JournalSource:
    """The shard journals of one exchange data dir, each replayed by its own engine as it grows."""

    def __init__(self, data_dir: str):
        from engine.manager import ShardEngine
        from engine.standby import resolve_journal_dirs

        self.data_dir = Path(data_dir)
        try:
            m = json.loads((self.data_dir / MANIFEST).read_text())
        except FileNotFoundError:
            raise DataDirError(f"history: {data_dir} is not an exchange data dir (no {MANIFEST})") from None
        except (OSError, ValueError) as err:
            raise DataDirError(f"history: {self.data_dir / MANIFEST} cannot be read: {err}") from None
        if not m.get("journal", True):
            raise DataDirError(f"history: the exchange of {data_dir} runs without a journal (engine.journal = "
                               "false): there is nothing to follow")
        self.symbols = list(m["symbols"])
        n = int(m["shards"])
        _, dirs = resolve_journal_dirs(str(self.data_dir), n)
        self.shards = []
        self.followers = []
        for k, d in enumerate(dirs):
            ids = [i for i in range(len(self.symbols)) if i % n == k]
            self.shards.append(ShardEngine([self.symbols[i] for i in ids], ids, journal_dir=None,
                                           stp=m.get("stp", "cancel_newest"), tick_size=int(m.get("tick_size", 1))))
            self.followers.append(JournalFollower(str(d / "journal.bin")))
        self.accounts = bool(m.get("accounts", False))
        self.pending: list[deque] = [deque() for _ in dirs]
        self.corrupt_seen = [False] * len(dirs)

    def read(self, k: int) -> int:
        """Read what shard k's journal gained; returns the number of new payloads."""
        f = self.followers[k]
        got = f.poll()
        if f.corrupt:
            # a whole frame that fails its crc: a crashed writer's torn tail, which the restarted exchange
            # truncates and overwrites; read it again from the last good frame
            if not self.corrupt_seen[k]:
                print(f"history: shard {k}: the journal ends in a damaged frame (a crashed writer's tail); "
                      "waiting for it to be rewritten", file=sys.stderr, flush=True)
                self.corrupt_seen[k] = True
            f.corrupt = False
        elif got:
            self.corrupt_seen[k] = False
        self.pending[k].extend(got)
        return len(got)

    def take(self, k: int, n: int) -> list[bytes]:
        q = self.pending[k]
        return [q.popleft() for _ in range(min(n, len(q)))]

    def journal_seq(self, k: int) -> int:
        """Sequence of the last input of shard k read from its journal: exact once what was read is replayed;
        records read and waiting count as one input each (the journal's records are opaque here)."""
        return self.shards[k].seq + len(self.pending[k])

    def close(self) -> None:
        for f in self.followers:
            f.close()


class WriterLock:
    """One history writer per data dir: ``flock`` on ``<data dir>/history.lock``."""

    def __init__(self, data_dir: str):
        self.path = str(Path(data_dir) / LOCK)
        self.fd = -1

    def acquire(self, wait_s: float = 0.0) -> "WriterLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    try:
                        who = os.pread(fd, 64, 0).decode(errors="replace").strip()
                    except OSError:
                        who = ""
                    os.close(fd)
                    raise DataDirError(f"history: another history writer follows {Path(self.path).parent}"
                                       + (f" (pid {who})" if who else "") + "; one writer per data dir") from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd >= 0:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = -1


class HistoryWriter:
    """Follows ``data_dir``'s journals into ``store`` (and ``redis_book``); see the module docstring.

    ``store`` None: no database (only the Redis book). ``batch_inputs``: journaled inputs per transaction.
    """

    def __init__(self, data_dir: str, store=None, *, redis_book=None, batch_inputs: int = 10000,
                 lock_wait_s: float = 0.0, accounts=None):
        self.lock = WriterLock(data_dir).acquire(lock_wait_s)
        try:
            self.source = JournalSource(data_dir)
        except BaseException:
            self.lock.release()
            raise
        self.store = store
        self.redis_book = redis_book
        # balances (``accounts``: engine.accounts.Accounts.config() of the exchange's): balance_changes rows
        if accounts is not None:
            from engine.accounts import Accounts
            accounts = Accounts(self.source.symbols, **accounts)
        self.ledger = BalanceLedger(accounts) if accounts is not None else None
        if accounts is None and self.source.accounts and store is not None:
            print("history: the exchange runs with [accounts] but this writer has no accounts configuration "
                  "(feedhandler history --config): balance changes are not stored", file=sys.stderr, flush=True)
        self.batch_inputs = max(1, int(batch_inputs))
        n = len(self.source.shards)
        stored = store.positions() if store is not None else {}
        self.stored = [int(stored.get(k, 0)) for k in range(n)]
        self.known_accounts = store.known_accounts() if store is not None else set()
        self.parent_pid: int | None = None     # run(parent_pid=...): stop when that process is gone
        self.resume = list(self.stored)     # events of inputs up to here were stored by an earlier writer
        self.replayed = [0] * n             # input sequence replayed per shard
        self.rows = 0           # rows written by this writer
        self.batches = 0
        self.events = 0
        self._lock = threading.Lock()
        # the database writes run in a storer thread, one batch behind the replay (psycopg and sqlite3 release
        # the GIL while the database works): batches are still committed one at a time, in journal order
        self._queue: queue.Queue = queue.Queue(maxsize=2)
        self._store_error: BaseException | None = None
        self._storer = None
        if store is not None:
            self._storer = threading.Thread(target=self._store_loop, name="history-store", daemon=True)
            self._storer.start()

    # ---- one pass -----------------------------------------------------------------------------------------
    def step(self) -> int:
        """Read every shard journal and store what it gained (returns when it is stored); returns the number
        of inputs applied. A database error is raised here (nothing after the failed batch is stored)."""
        applied = 0
        for k in range(len(self.source.shards)):
            self.source.read(k)
            while self.source.pending[k]:
                self._check()
                if self.parent_gone():
                    break                   # a long catch-up ends at a batch boundary when the exchange dies
                applied += self._batch(k, self.source.take(k, self.batch_inputs))
        if self._storer is not None:
            self._queue.join()
        self._check()
        return applied

    def _check(self) -> None:
        if self._store_error is not None:
            raise self._store_error

    def _batch(self, k: int, payloads: list[bytes]) -> int:
        shard = self.source.shards[k]
        n = shard.replay_payloads(payloads, source=self.source.followers[k].path)
        events = shard.take_replayed()
        resume = self.resume[k]
        if self.ledger is not None and self.store is not None:
            # every input, those an earlier writer stored included: the balances are a function of all of them
            # (rows only for the inputs after ``resume``)
            rows = Rows(self.known_accounts)
            self.ledger.add(rows, k, events, resume)
        else:
            rows = None
        if shard.seq > resume:
            if resume:
                events = [e for e in events if e["seq"] > resume]
            if self.store is not None:
                rows = rows if rows is not None else Rows(self.known_accounts)
                rows.add(k, events)
                self._queue.put((k, shard.seq, rows))
            else:
                self.stored[k] = shard.seq
        self.replayed[k] = shard.seq
        if self.redis_book is not None:
            self.redis_book.update(shard, events)
        return n

    def _store_loop(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if self._store_error is not None:
                    continue                    # after a failure nothing later is stored (order kept)
                k, seq, rows = item
                self.store.write(rows, {k: seq})
                with self._lock:
                    self.stored[k] = seq
                    self.rows += len(rows)
                    self.batches += 1
                    self.events += rows.events
            except BaseException as e:  # noqa: BLE001 - handed to the replay thread, raised by step()
                self._store_error = e
            finally:
                self._queue.task_done()

    # ---- loop ---------------------------------------------------------------------------------------------
    def run(self, stop: threading.Event, *, follow: bool = True, poll_s: float = 0.005,
            on_progress=None, parent_pid: int | None = None, log_every_s: float = 10.0, out=sys.stdout) -> None:
        """Store until ``stop`` is set (``follow``) or the journals are read to their end (not ``follow``).
        After ``stop``, what the journals hold is stored before returning. ``parent_pid``: also return when
        that process is gone (a writer started by an exchange that was killed)."""
        last_log = time.monotonic()
        self.parent_pid = parent_pid
        while True:
            self.step()
            if on_progress is not None:
                on_progress(self)
            if not follow or stop.is_set():
                break
            if self.parent_gone():
                print("history: the exchange is gone; stopping", file=out, flush=True)
                break
            if time.monotonic() - last_log >= log_every_s:
                last_log = time.monotonic()
                print(self.status_line(), file=out, flush=True)
            stop.wait(poll_s)
        self.step()
        if on_progress is not None:
            on_progress(self)

    def parent_gone(self) -> bool:
        return self.parent_pid is not None and os.getppid() != self.parent_pid

    def journal_seqs(self) -> list[int]:
        """Per shard: the sequence of the last input read from its journal (replayed or waiting to be)."""
        return [self.source.journal_seq(k) for k in range(len(self.source.shards))]

    def lag(self) -> int:
        """Journal sequence minus stored sequence, summed over the shards (of what the writer has read: a writer
        resuming counts the journal from its start as it replays it)."""
        return sum(max(j - s, 0) for j, s in zip(self.journal_seqs(), self.stored))

    def status_line(self) -> str:
        return (f"history: stored seq {'/'.join(map(str, self.stored))} of {'/'.join(map(str, self.journal_seqs()))}"
                f" lag={self.lag()} rows={self.rows} batches={self.batches}")

    def close(self) -> None:
        if self._storer is not None:
            self._queue.put(None)
            self._storer.join()
            self._storer = None
        self.source.close()
        if self.store is not None:
            self.store.close()
        if self.redis_book is not None:
            self.redis_book.close()
        self.lock.release()
