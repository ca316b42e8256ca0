"""The production history store: PostgreSQL through psycopg 3.

Same schema as the SQLite store (the same migration files). Per batch, one transaction: append-only rows
(order events, trades, position changes, balance changes) go in with binary ``COPY ... FROM STDIN``; orders (one row per order per
batch: :class:`engine.history.rows.Rows` collapses an order's events) accepted in the batch are COPYed too
(new order ids); changes of orders stored by earlier batches and refused new orders go through session-local
staging tables, merged with one set-based UPDATE ... FROM / INSERT ... ON CONFLICT DO NOTHING each. The shard's ``history_position`` row is written in the same transaction, so a writer
killed mid-batch stores none of it and resumes from the stored position.
"""
from __future__ import annotations

from engine.history import schema
from engine.history.rows import COLUMNS, UPDATE_COLUMNS, Rows

try:
    import psycopg
except ImportError:  # pragma: no cover - psycopg is a dependency; a broken install gets a clear error
    psycopg = None

_MIGRATION_LOCK = 0x46480001     # pg_advisory_xact_lock key: one migrating writer at a time


_ORDER_COLS = ", ".join(COLUMNS["orders"])
# orders go through session-local staging tables (COPY in, then one set-based statement each)
_STAGES = (
    "CREATE TEMP TABLE IF NOT EXISTS fh_orders_rejected (LIKE orders) ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE IF NOT EXISTS fh_orders_update (status TEXT, leaves_qty BIGINT, cum_qty BIGINT, price BIGINT, "
    "qty BIGINT, reason TEXT, updated_seq BIGINT, updated_ns BIGINT, order_id BIGINT) ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE IF NOT EXISTS fh_accounts_new (LIKE accounts) ON COMMIT DELETE ROWS",
)
_INSERT_REJECTED = (f"INSERT INTO orders ({_ORDER_COLS}) SELECT {_ORDER_COLS} FROM fh_orders_rejected "
                    "ON CONFLICT (order_id) DO NOTHING")
_UPDATE_ORDERS = ("UPDATE orders o SET status = u.status, leaves_qty = u.leaves_qty, cum_qty = u.cum_qty, "
                  "price = COALESCE(u.price, o.price), qty = COALESCE(u.qty, o.qty), "
                  "reason = COALESCE(u.reason, o.reason), updated_seq = u.updated_seq, updated_ns = u.updated_ns "
                  "FROM fh_orders_update u WHERE o.order_id = u.order_id")
_UPDATE_COLS = UPDATE_COLUMNS + ("order_id",)
_ACCOUNT_COLS = ", ".join(COLUMNS["accounts"])
_INSERT_ACCOUNTS = (f"INSERT INTO accounts ({_ACCOUNT_COLS}) SELECT {_ACCOUNT_COLS} FROM fh_accounts_new "
                    "ON CONFLICT (account) DO NOTHING")
_POSITION = ("INSERT INTO history_position (shard, seq, updated_ns) VALUES (%s, %s, %s) "
             "ON CONFLICT (shard) DO UPDATE SET seq = excluded.seq, updated_ns = excluded.updated_ns")


#: columns that are not BIGINT (the migrations' types; binary COPY needs each column's type)
_INT4 = frozenset({"shard", "n"})
_TEXT = frozenset({"symbol", "account", "side", "status", "client_order_id", "reason", "type", "liquidity",
                   "aggressor_side", "buyer", "seller", "asset", "cause"})


def column_types(columns) -> list[str]:
    return ["int4" if c in _INT4 else "text" if c in _TEXT else "int8" for c in columns]


def copy_rows(cur, table: str, rows: list[tuple], columns: tuple[str, ...] | None = None) -> None:
    """``COPY table (columns) FROM STDIN (FORMAT BINARY)`` of the rows: no text formatting of the integers
    on our side nor parsing on the server's (measured against text COPY: bench/bench_history.py)."""
    cols = columns or COLUMNS[table]
    with cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN (FORMAT BINARY)") as cp:
        cp.set_types(column_types(cols))
        write = cp.write_row
        for r in rows:
            write(r)


class PostgresStore:
    """History in PostgreSQL. ``url``: ``postgresql://user@host:port/db`` (libpq URL or key=value string)."""

    kind = "postgresql"

    def __init__(self, url: str):
        if psycopg is None:
            raise RuntimeError("--db postgresql:// needs psycopg 3 (pip install 'psycopg[binary]')")
        self.url = url
        # autocommit: each batch is one explicit conn.transaction() block
        self.conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
        self.applied = self.migrate()
        with self.conn.transaction(), self.conn.cursor() as cur:
            for st in _STAGES:
                cur.execute(st)

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
                copy_rows(cur, "fh_accounts_new", rows.accounts, COLUMNS["accounts"])
                cur.execute(_INSERT_ACCOUNTS)
            if rows.order_events:
                copy_rows(cur, "order_events", rows.order_events)
            if rows.new_orders:       # orders accepted in this batch: new ids (the primary key says so)
                copy_rows(cur, "orders", rows.order_rows())
            if rows.rejected_new:
                copy_rows(cur, "fh_orders_rejected", rows.rejected_rows(), COLUMNS["orders"])
                cur.execute(_INSERT_REJECTED)
            if rows.updates:
                copy_rows(cur, "fh_orders_update", rows.update_rows(), _UPDATE_COLS)
                cur.execute(_UPDATE_ORDERS)
            if rows.trades:
                copy_rows(cur, "trades", rows.trades)
            if rows.position_changes:
                copy_rows(cur, "position_changes", rows.position_changes)
            if rows.balance_changes:
                copy_rows(cur, "balance_changes", rows.balance_changes)
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
