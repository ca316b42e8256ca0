"""History writer benchmark: rows/s into PostgreSQL against a plain psycopg COPY of the same rows, same run.

    python bench/bench_history.py [--postgres URL] [--rounds 20000] [--batch-inputs 2000] [--repeat 3] [--json]

A journal is written first (``--rounds`` rounds of: a resting sell, a buy crossing part of it, an amend, a
cancel: 4 journaled inputs (a cancel of an unknown order is refused at the edge, never journaled), 7 events,
2 orders, 1 trade, 2 position changes: 11 rows per round, accounts aside).
Then, in each repetition, into a fresh database:

* ``writer``: :class:`engine.history.HistoryWriter` from nothing to the journal's end: journal read, engine
  replay, row building, one transaction per ``--batch-inputs`` inputs (COPY for the append-only tables,
  batched upserts for orders). Everything the exchange's writer process does.
* ``copy``: the rows the writer stored, read back beforehand, written with one plain ``COPY ... FROM STDIN``
  per table in one transaction (``psycopg`` text COPY, no indexes dropped), and the same in binary COPY
  (what the writer itself uses): the floor for storing these rows from Python.
* ``sqlite``: the writer into a SQLite file (for information: the default store).
* ``no database``: the writer storing nothing (journal read, engine replay, rows): its own share.

The ratio is writer time / copy time for the same number of rows (the target of issue 11 is not set; 1.0
would mean the writer costs nothing beyond the COPY). Without ``--postgres`` (or FH_TEST_POSTGRES_URL) only
SQLite is measured.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from feedhandler.cliopts import positive_int


def make_journal(d: Path, rounds: int, symbols=("AAPL", "MSFT", "SPY")) -> int:
    from engine.manager import ShardEngine

    px0 = 1_000_000_000
    d.mkdir(parents=True, exist_ok=True)
    (d / "exchange.json").write_text(json.dumps({"symbols": list(symbols), "shards": 1, "tick_size": 1,
                                                 "stp": "cancel_newest", "journal": True}))
    sh = ShardEngine(list(symbols), journal_dir=str(d / "journal"), fsync="none")
    try:
        for i in range(rounds):
            sym = symbols[i % len(symbols)]
            px = (100 + i % 7) * px0
            out = sh.submit_many([
                {"type": "new", "account": "MM", "symbol": sym, "side": "S", "price": px, "qty": 10, "tif": "gtc",
                 "client_order_id": f"s{i}"},
                {"type": "new", "account": f"T{i % 50}", "symbol": sym, "side": "B", "price": px, "qty": 4,
                 "tif": "gtc", "client_order_id": f"b{i}"}])
            oid = out[0][0]["order_id"]
            sh.submit_many([{"type": "amend", "account": "MM", "order_id": oid, "new_price": px + px0, "new_qty": 6},
                            {"type": "cancel", "account": "MM", "order_id": oid},
                            {"type": "cancel", "account": "MM", "order_id": 12345}])
        n = sh.seq
    finally:
        sh.close()
    return n


def run_writer(d: Path, url: str, batch_inputs: int) -> tuple[float, int]:
    from engine.history import HistoryWriter, open_store

    w = HistoryWriter(str(d), open_store(url, str(d)), batch_inputs=batch_inputs)
    t0 = time.perf_counter()
    w.step()
    dt = time.perf_counter() - t0
    rows = w.rows
    w.close()
    return dt, rows


class NullStore:
    """Stores nothing: the writer's own work (journal read, replay, rows) without a database."""

    kind = "null"

    def positions(self) -> dict:
        return {}

    def known_accounts(self) -> set:
        return set()

    def write(self, rows, positions) -> None:
        self.last = positions

    def close(self) -> None:
        self.last = None


def run_null(d: Path, batch_inputs: int) -> tuple[float, int]:
    from engine.history import HistoryWriter

    w = HistoryWriter(str(d), NullStore(), batch_inputs=batch_inputs)
    t0 = time.perf_counter()
    w.step()
    dt = time.perf_counter() - t0
    rows = w.rows
    w.close()
    return dt, rows


TABLES = ("accounts", "order_events", "orders", "trades", "position_changes")


def read_rows(url: str) -> dict[str, list[tuple]]:
    import psycopg

    from engine.history import COLUMNS

    with psycopg.connect(url) as c, c.cursor() as cur:
        out = {}
        for t in TABLES:
            cur.execute(f"SELECT {', '.join(COLUMNS[t])} FROM {t}")
            out[t] = cur.fetchall()
        return out


def run_copy(url: str, rows: dict[str, list[tuple]], binary: bool = False) -> float:
    import psycopg

    from engine.history import COLUMNS, open_store
    from engine.history.postgres import column_types

    open_store(url, "").close()         # the same schema (migrations), empty
    with psycopg.connect(url) as c:
        t0 = time.perf_counter()
        with c.transaction(), c.cursor() as cur:
            for t in TABLES:
                fmt = " (FORMAT BINARY)" if binary else ""
                with cur.copy(f"COPY {t} ({', '.join(COLUMNS[t])}) FROM STDIN{fmt}") as cp:
                    if binary:
                        cp.set_types(column_types(COLUMNS[t]))
                    for r in rows[t]:
                        cp.write_row(r)
        return time.perf_counter() - t0


class Databases:
    """Fresh databases on one server, dropped at the end."""

    def __init__(self, url: str):
        import psycopg

        self.admin = psycopg.connect(url, autocommit=True)
        self.base = url.rsplit("/", 1)[0]
        self.names: list[str] = []

    def new(self) -> str:
        name = f"fh_bench_{uuid.uuid4().hex[:10]}"
        self.admin.execute(f"CREATE DATABASE {name}")
        self.names.append(name)
        return f"{self.base}/{name}"

    def close(self) -> None:
        for n in self.names:
            self.admin.execute(f"DROP DATABASE IF EXISTS {n} WITH (FORCE)")
        self.admin.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--postgres", default=os.environ.get("FH_TEST_POSTGRES_URL", ""),
                    help="a PostgreSQL URL whose user may CREATE DATABASE (default $FH_TEST_POSTGRES_URL)")
    ap.add_argument("--rounds", type=positive_int, default=20_000)
    ap.add_argument("--batch-inputs", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="fh-bench-history-"))
    res: dict = {"rounds": a.rounds, "batch_inputs": a.batch_inputs}
    try:
        d = tmp / "data"
        res["inputs"] = make_journal(d, a.rounds)
        sq = []
        for i in range(a.repeat):
            dt, rows = run_writer(d, str(tmp / f"h{i}.sqlite"), a.batch_inputs)
            sq.append(rows / dt)
            (tmp / f"h{i}.sqlite").unlink()
        res["rows"] = rows
        res["sqlite_rows_per_s"] = statistics.median(sq)
        res["no_db_rows_per_s"] = statistics.median([r / dt for dt, r in (run_null(d, a.batch_inputs)
                                                                           for _ in range(a.repeat))])
        if a.postgres:
            dbs = Databases(a.postgres)
            try:
                writer, copy, bcopy, ratios, bratios = [], [], [], [], []
                for i in range(a.repeat):       # interleaved: load from other tenants hits both alike
                    url = dbs.new()
                    dt_w, rows = run_writer(d, url, a.batch_inputs)
                    stored = read_rows(url)
                    n = sum(len(v) for v in stored.values())
                    dt_c = run_copy(dbs.new(), stored)
                    dt_b = run_copy(dbs.new(), stored, binary=True)
                    writer.append(rows / dt_w)
                    copy.append(n / dt_c)
                    bcopy.append(n / dt_b)
                    ratios.append(dt_w / dt_c * n / rows)     # time per row, writer / copy
                    bratios.append(dt_w / dt_b * n / rows)
                res.update(pg_rows=rows, writer_rows_per_s=statistics.median(writer),
                           copy_rows_per_s=statistics.median(copy), ratio=statistics.median(ratios),
                           ratios=ratios, binary_copy_rows_per_s=statistics.median(bcopy),
                           ratio_binary=statistics.median(bratios))
            finally:
                dbs.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if a.json:
        print(json.dumps(res))
        return 0
    print(f"journal: {res['inputs']} inputs ({a.rounds} rounds), {res['rows']} rows per run, "
          f"batches of {a.batch_inputs} inputs, median of {a.repeat}")
    print(f"  no database         {res['no_db_rows_per_s']:>12,.0f} rows/s  (journal replay + rows only)")
    print(f"  sqlite  writer      {res['sqlite_rows_per_s']:>12,.0f} rows/s")
    if "ratio" in res:
        print(f"  postgres writer     {res['writer_rows_per_s']:>12,.0f} rows/s  (journal replay + rows + COPY/upserts)")
        print(f"  postgres plain COPY {res['copy_rows_per_s']:>12,.0f} rows/s  (the same rows, one text COPY per table)")
        print(f"  postgres binary COPY{res['binary_copy_rows_per_s']:>12,.0f} rows/s  (the same, FORMAT BINARY)")
        print(f"  ratio writer/COPY (time per row): {res['ratio']:.2f}x  "
              f"(each run: {', '.join(f'{r:.2f}' for r in res['ratios'])}); "
              f"against binary COPY {res['ratio_binary']:.2f}x")
    else:
        print("  postgres: skipped (no --postgres URL and no FH_TEST_POSTGRES_URL)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
