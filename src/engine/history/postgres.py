"""The production history store: PostgreSQL through psycopg 3.

Same schema as the SQLite store (the same migration files). Per batch, one transaction: append-only rows
(order events, trades, position changes) go in with ``COPY ... FROM STDIN``; orders are upserted with
pipelined batched statements (one row per order per batch: :class:`engine.history.rows.Rows` collapses an
order's events). The shard's ``history_position`` row is written in the same transaction, so a writer
killed mid-batch stores none of it and resumes from the stored position.
"""
from __future__ import annotations

from engine.history import schema
from engine.history.rows import COLUMNS, Rows

try:
    import psycopg
except ImportError:  # pragma: no cover - psycopg is a dependency; a broken install gets a clear error
    psycopg = None

_MIGRATION_LOCK = 0x46480001     # pg_advisory_xact_lock key: one migrating writer at a time


def _insert(table: str) -> str:
    cols = COLUMNS[table]
    return f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))})"


_UPSERT_ORDER = (_insert("orders") + " ON CONFLICT (order_id) DO UPDATE SET "
                 + ", ".join(f"{c} = excluded.{c}" for c in COLUMNS["orders"]
                             if c not in ("order_id", "created_seq", "created_ns")))
_INSERT_REJECTED = _insert("orders") + " ON CONFLICT (order_id) DO NOTHING"
_INSERT_ACCOUNT = _insert("accounts") + " ON CONFLICT (account) DO NOTHING"
_UPDATE_ORDER = ("UPDATE orders SET status = %s, leaves_qty = %s, cum_qty = %s, price = COALESCE(%s, price), "
                 "qty = COALESCE(%s, qty), reason = COALESCE(%s, reason), updated_seq = %s, updated_ns = %s "
                 "WHERE order_id = %s")
_POSITION = ("INSERT INTO history_position (shard, seq, updated_ns) VALUES (%s, %s, %s) "
             "ON CONFLICT (shard) DO UPDATE SET seq = excluded.seq, updated_ns = excluded.updated_ns")


def copy_rows(cur, table: str, rows: list[tuple]) -> None:
    """``COPY table (columns) FROM STDIN`` of the rows (text format)."""
    with cur.copy(f"COPY {table} ({', '.join(COLUMNS[table])}) FROM STDIN") as cp:
        for r in rows:
            cp.write_row(r)


class PostgresStore:
    """History in PostgreSQL. ``url``: ``postgresql://user@host:port/db`` (libpq URL or key=value string)."""

    kind = "postgresql"

    def __init__(self, url: str):
        if psycopg is None:
            raise RuntimeError("--db postgresql:// needs psycopg 3 (pip install 'psycopg[binary]')")
        self.url = url
        self.conn = psycopg.connect(url, autocommit=True)   # transactions: conn.transaction() blocks
        self.applied = self.migrate()

    def migrate(self) -> list[int]:
        c = self.conn
        with c.transaction():
            with c.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                cur.execute(schema.CREATE_VERSION_TABLE)
                cur.execute("SELECT version FROM schema_version")
                todo = schema.pending({r[0] for r in cur.fetchall()})
                for version, name, stmts in todo:
                    for s in stmts:
                        cur.execute(s)
                    cur.execute("INSERT INTO schema_version (version, name, applied_ns) VALUES (%s, %s, %s)",
                                (version, name, schema.now_ns()))
        return [v for v, _, _ in todo]

    def positions(self) -> dict[int, int]:
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.execute("SELECT shard, seq FROM history_position")
            return {int(s): int(q) for s, q in cur.fetchall()}

    def known_accounts(self) -> set[str]:
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.execute("SELECT account FROM accounts")
            return {r[0] for r in cur.fetchall()}

    def write(self, rows: Rows, positions: dict[int, int]) -> None:
        now = schema.now_ns()
        with self.conn.transaction(), self.conn.cursor() as cur:
            if rows.accounts:
                cur.executemany(_INSERT_ACCOUNT, rows.accounts)
            if rows.order_events:
                copy_rows(cur, "order_events", rows.order_events)
            if rows.new_orders:
                cur.executemany(_UPSERT_ORDER, rows.order_rows())
            if rows.rejected_new:
                cur.executemany(_INSERT_REJECTED, rows.rejected_rows())
            if rows.updates:
                cur.executemany(_UPDATE_ORDER, rows.update_rows())
            if rows.trades:
                copy_rows(cur, "trades", rows.trades)
            if rows.position_changes:
                copy_rows(cur, "position_changes", rows.position_changes)
            cur.executemany(_POSITION, [(k, q, now) for k, q in positions.items()])

    def count(self, table: str) -> int:
        if table not in COLUMNS and table not in ("schema_version", "history_position"):
            raise ValueError(f"unknown table {table!r}")
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.execute(f"SELECT COUNT(*) FROM {table}")
            return int(cur.fetchone()[0])

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
