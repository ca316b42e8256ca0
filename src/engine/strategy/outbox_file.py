"""A strategy's unacknowledged signals on disk (SQLite): what makes a killed strategy process safe to restart.

``feedhandler strategy --outbox PATH`` keeps, beside the in-memory :class:`engine.strategy.outbox.Outbox`:

- one row per signal not yet acknowledged, committed BEFORE the signal is first offered to the PUSH socket
  and deleted when the executor's acknowledgement arrives. A restarted process loads the rows and sends
  them again: the executor's ledger (:mod:`engine.strategy.ledger`) acts on an id once and answers a repeat
  from its row, so a resend never trades twice, and a signal the dead process sent but never saw
  acknowledged is not lost;
- per instance id, how many signals it ever issued, committed with the signal: the restarted process
  numbers its new signals after them (a reused id would be taken by the executor for a repeat);
- the instance id itself: without ``--id`` the restarted process takes the stored one, so the
  acknowledgements of its old signals reach it (topic = instance id). Rows of another instance (``--id``
  changed) are resent too; the process then also subscribes to their senders' acknowledgements.

One process at a time: the file is locked (``flock`` on ``PATH.lock``) while open; a second process gets
:class:`OutboxInUse`. The kernel drops the lock of a killed process. Durability as the ledger's: WAL with
``synchronous=NORMAL`` survives the process being killed; ``durable="power"`` (``synchronous=FULL``) a
power loss too, at the price of an fsync per signal. One thread uses an OutboxFile (the runner's loop).
"""
from __future__ import annotations

import fcntl
import os
import sqlite3
import time

__all__ = ["OutboxFile", "OutboxInUse", "Stored"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pending (
    id TEXT PRIMARY KEY,
    sender TEXT NOT NULL,
    signal BLOB NOT NULL,
    t_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS issued (
    sender TEXT PRIMARY KEY,
    count INTEGER NOT NULL,
    t_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


class OutboxInUse(RuntimeError):
    """Another live process has the outbox file open."""


class Stored:
    __slots__ = ("id", "sender", "data")

    def __init__(self, id: str, sender: str, data: bytes):
        self.id, self.sender, self.data = id, sender, data


class OutboxFile:
    def __init__(self, path: str, durable: str = "process"):
        if durable not in ("process", "power"):
            raise ValueError(f"durable must be process or power, not {durable!r}")
        self.path = path
        self._lock_fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise OutboxInUse(f"outbox {path} is in use by another strategy process") from None
        try:
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(f"PRAGMA synchronous={'FULL' if durable == 'power' else 'NORMAL'}")
            self.db.executescript(_SCHEMA)
        except sqlite3.Error:
            os.close(self._lock_fd)
            raise

    def close(self) -> None:
        if self._lock_fd is None:
            return
        self.db.close()
        os.close(self._lock_fd)         # releases the lock
        self._lock_fd = None

    # ---- the instance ------------------------------------------------------------------------------
    def instance(self) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = 'instance'").fetchone()
        return row[0] if row else None

    def set_instance(self, instance: str) -> None:
        self.db.execute("INSERT INTO meta (key, value) VALUES ('instance', ?) ON CONFLICT(key) DO UPDATE SET "
                        "value = excluded.value", (instance,))

    def issued(self, sender: str) -> int:
        row = self.db.execute("SELECT count FROM issued WHERE sender = ?", (sender,)).fetchone()
        return row[0] if row else 0

    # ---- the signals -------------------------------------------------------------------------------
    def put(self, signal_id: str, sender: str, n: int, data: bytes) -> None:
        """Keep a new signal (the ``n``-th of ``sender``) until :meth:`ack`; one commit."""
        now = time.time_ns()
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("INSERT INTO pending (id, sender, signal, t_ns) VALUES (?, ?, ?, ?)",
                       (signal_id, sender, data, now))
            db.execute("INSERT INTO issued (sender, count, t_ns) VALUES (?, ?, ?) ON CONFLICT(sender) DO UPDATE SET "
                       "count = max(count, excluded.count), t_ns = excluded.t_ns", (sender, n, now))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def ack(self, signal_ids) -> None:
        """Forget acknowledged signals (one commit for the lot). An acknowledgement lost with a killed process
        only means a resend that the executor answers from its ledger."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("DELETE FROM pending WHERE id = ?", [(i,) for i in signal_ids])
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def pending(self) -> list[Stored]:
        """The unacknowledged signals, oldest first."""
        return [Stored(*r) for r in self.db.execute("SELECT id, sender, signal FROM pending ORDER BY t_ns, rowid")]

    def __len__(self) -> int:
        return self.db.execute("SELECT count(*) FROM pending").fetchone()[0]
