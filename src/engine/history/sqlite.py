"""The embedded history store: SQLite (WAL) in the exchange's data directory (``history.sqlite``).

One transaction per batch holds the batch's rows and the new ``history_position`` of its shard, so a writer
killed at any point leaves either the whole batch or none of it: it resumes from the stored position and no
row is ever written twice (the primary keys would refuse it anyway).
"""
from __future__ import annotations

import sqlite3

from engine.history import schema
from engine.history.rows import COLUMNS, Rows


def _insert(table: str, verb: str = "INSERT") -> str:
    cols = COLUMNS[table]
    return f"{verb} INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"


_UPSERT_ORDER = (_insert("orders") + " ON CONFLICT (order_id) DO UPDATE SET "
                 + ", ".join(f"{c} = excluded.{c}" for c in COLUMNS["orders"]
                             if c not in ("order_id", "created_seq", "created_ns")))
_INSERT_REJECTED = _insert("orders") + " ON CONFLICT (order_id) DO NOTHING"
_INSERT_ACCOUNT = _insert("accounts") + " ON CONFLICT (account) DO NOTHING"
_UPDATE_ORDER = ("UPDATE orders SET status = ?, leaves_qty = ?, cum_qty = ?, price = COALESCE(?, price), "
                 "qty = COALESCE(?, qty), reason = COALESCE(?, reason), updated_seq = ?, updated_ns = ? "
                 "WHERE order_id = ?")
_POSITION = ("INSERT INTO history_position (shard, seq, updated_ns) VALUES (?, ?, ?) "
             "ON CONFLICT (shard) DO UPDATE SET seq = excluded.seq, updated_ns = excluded.updated_ns")


class SqliteStore:
    """History in one SQLite file. ``url``: ``sqlite:///abs/path`` or a plain path."""

    kind = "sqlite"

    def __init__(self, path: str):
        if path.startswith("sqlite:///"):
            path = path[len("sqlite://"):]
        elif path.startswith("sqlite://"):
            path = path[len("sqlite://"):]
        self.path = path
        self.url = f"sqlite:///{path.lstrip('/')}" if path.startswith("/") else path
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.applied = self.migrate()

    def migrate(self) -> list[int]:
        """Apply the pending migrations (each in its own transaction); returns the versions applied now."""
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            c.execute(schema.CREATE_VERSION_TABLE)
            have = {r[0] for r in c.execute("SELECT version FROM schema_version")}
            todo = schema.pending(have)
            for version, name, stmts in todo:
                for s in stmts:
                    c.execute(s)
                c.execute("INSERT INTO schema_version (version, name, applied_ns) VALUES (?, ?, ?)",
                          (version, name, schema.now_ns()))
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        return [v for v, _, _ in todo]

    def positions(self) -> dict[int, int]:
        return {int(s): int(q) for s, q in self.conn.execute("SELECT shard, seq FROM history_position")}

    def known_accounts(self) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT account FROM accounts")}

    def write(self, rows: Rows, positions: dict[int, int]) -> None:
        """Store one batch and the shards' new positions atomically."""
        c = self.conn
        now = schema.now_ns()
        c.execute("BEGIN")
        try:
            if rows.accounts:
                c.executemany(_INSERT_ACCOUNT, rows.accounts)
            if rows.order_events:
                c.executemany(_insert("order_events"), rows.order_events)
            if rows.new_orders:
                c.executemany(_UPSERT_ORDER, rows.order_rows())
            if rows.rejected_new:
                c.executemany(_INSERT_REJECTED, rows.rejected_rows())
            if rows.updates:
                c.executemany(_UPDATE_ORDER, rows.update_rows())
            if rows.trades:
                c.executemany(_insert("trades"), rows.trades)
            if rows.position_changes:
                c.executemany(_insert("position_changes"), rows.position_changes)
            if rows.balance_changes:
                c.executemany(_insert("balance_changes"), rows.balance_changes)
            c.executemany(_POSITION, [(k, q, now) for k, q in positions.items()])
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise

    def count(self, table: str) -> int:
        if table not in COLUMNS and table not in ("schema_version", "history_position"):
            raise ValueError(f"unknown table {table!r}")
        return int(self.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
