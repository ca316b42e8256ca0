"""The executor's durable record of the signals it handled (SQLite): what makes a restart safe.

One row per signal id, written in two steps:

1. ``begin`` (state ``sending``) is committed BEFORE the order is sent for the first time;
2. ``finish`` (state ``done`` with the outcome) is committed after the exchange answered, BEFORE the
   strategy is acknowledged.

On a restart: a ``done`` id is acknowledged again from its row (nothing is sent: no second order); a
``sending`` id had its order sent, or maybe sent, by the executor that died: it is sent again with the
same client order id, and the exchange's retry memory answers with the first outcome (the last guard),
whatever the signal's age. An id with no row was never sent: it is handled as new (and may expire).

Durability: WAL journal; ``synchronous=NORMAL`` survives the process being killed (what kill -9 does),
``synchronous=FULL`` (``durable="power"``) also a power loss, at the price of an fsync per commit.
One thread uses a Ledger (the executor's loop).
"""
from __future__ import annotations

import sqlite3
import time

import msgpack

__all__ = ["Ledger"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS signals (
    id TEXT PRIMARY KEY,
    sender TEXT NOT NULL,
    client_order_id TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('sending', 'done')),
    signal BLOB NOT NULL,
    outcome BLOB,
    sends INTEGER NOT NULL DEFAULT 0,
    t_first_ns INTEGER NOT NULL,
    t_done_ns INTEGER
);
"""


class Ledger:
    def __init__(self, path: str, durable: str = "process"):
        if durable not in ("process", "power"):
            raise ValueError(f"durable must be process or power, not {durable!r}")
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={'FULL' if durable == 'power' else 'NORMAL'}")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def get(self, signal_id: str) -> tuple[str, dict | None, int] | None:
        """(state, outcome or None, sends) of a signal id, or None when it was never seen."""
        row = self.db.execute("SELECT state, outcome, sends FROM signals WHERE id = ?", (signal_id,)).fetchone()
        if row is None:
            return None
        return row[0], (msgpack.unpackb(row[1], raw=False) if row[1] is not None else None), row[2]

    def begin(self, signal_id: str, sender: str, client_order_id: str, signal: bytes) -> None:
        self.db.execute("INSERT INTO signals (id, sender, client_order_id, state, signal, t_first_ns) "
                        "VALUES (?, ?, ?, 'sending', ?, ?)", (signal_id, sender, client_order_id, signal, time.time_ns()))

    def sent(self, signal_id: str) -> None:
        self.db.execute("UPDATE signals SET sends = sends + 1 WHERE id = ?", (signal_id,))

    def finish(self, signal_id: str, sender: str, client_order_id: str, signal: bytes, outcome: dict) -> None:
        """Record the outcome (inserting the row for a signal that never reached the sending state)."""
        self.db.execute(
            "INSERT INTO signals (id, sender, client_order_id, state, signal, outcome, t_first_ns, t_done_ns) "
            "VALUES (?, ?, ?, 'done', ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET state = 'done', "
            "outcome = excluded.outcome, t_done_ns = excluded.t_done_ns",
            (signal_id, sender, client_order_id, signal, msgpack.packb(outcome), time.time_ns(), time.time_ns()))

    def in_flight(self) -> list[str]:
        """Ids left in the sending state (by an executor that stopped before the exchange answered)."""
        return [r[0] for r in self.db.execute("SELECT id FROM signals WHERE state = 'sending' ORDER BY t_first_ns")]

    def counts(self) -> dict:
        return dict(self.db.execute("SELECT state, count(*) FROM signals GROUP BY state").fetchall())
