"""Write normalized records as Parquet (needs the optional dependency pyarrow: ``pip install
feedhandler[parquet]``).

Layout: ``OUT.parquet`` holds the MBO records; every other record kind present in the stream goes to
a sibling file ``OUT.<kind>.parquet`` (``OUT.trade.parquet``, ``OUT.stock_directory.parquet``,
``OUT.gap.parquet``, ...), one table per kind with that kind's fields (``feedhandler.records.DTYPES``).

Column types are those of :func:`feedhandler.frames.to_arrow` (one conversion for the Python API and
the files, done once per row group in numpy/Arrow):

- ``ts_event`` / ``ts_recv``: ``timestamp[ns, UTC]``;
- prices and the other 1e-9 fixed-point fields: ``decimal128(38, 9)``, null where the wire has no
  price (``UNDEF_PRICE``). Decimal because it is exact: the column's unscaled integer *is* our int64
  fixed-point value (no division, no rounding: ``0.1`` stays ``0.1`` and a 19-digit price keeps every
  digit), every Parquet reader (pyarrow, pandas, polars, DuckDB, Spark) knows the logical type, and
  ``float`` is one cast away for whoever wants it; float64 would round most prices on the way in;
- day counts (``trade_date``, ``trading_date``): ``date32``, null for the wire's 65535;
- character fields: strings (trailing spaces/NULs removed); other integers keep their widths;
- a ``symbol`` column after ``instrument_id`` (null when unknown) from the stream's own stock
  directory / instrument definitions, for every kind that has no symbol field of its own.

Rows are written in row groups of about ``row_group`` records. Each file is written under a temporary
name (``.NAME.part-PID``) and renamed when ``close()`` has written its footer, so a final name always
holds a complete, readable file; ``abort()`` removes the temporaries.
"""
from __future__ import annotations

import os

import numpy as np

from feedhandler import records
from feedhandler.errors import FeedhandlerError
from feedhandler.output._spool import check_output_dir, discard, names_the_output, publish, temp_path

__all__ = ["ParquetWriter", "MissingDependency", "sibling_path"]


class MissingDependency(FeedhandlerError, ImportError):
    """An optional dependency needed for the requested output is not installed."""


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise MissingDependency("Parquet output needs pyarrow: pip install 'feedhandler[parquet]' "
                                "(or pip install pyarrow)") from e
    return pa, pq


def sibling_path(path: str, kind: str) -> str:
    """``OUT.parquet`` for MBO, ``OUT.<kind>.parquet`` for the other kinds."""
    if kind == "mbo":
        return path
    stem = path[: -len(".parquet")] if path.endswith(".parquet") else path
    return f"{stem}.{kind}.parquet"


class ParquetWriter:
    """Streaming Parquet writer, one file per record kind (``write(batch)``, then ``close()``)."""

    @names_the_output
    def __init__(self, path: str | os.PathLike, *, symbols=None, row_group: int = 262_144, **_ignored):
        self.pa, self.pq = _pyarrow()
        self.path = os.fspath(path)
        check_output_dir(self.path)
        self._symbols = symbols or (lambda: {})
        self.row_group = row_group
        self._pending: dict[str, list[np.ndarray]] = {}
        self._pending_n: dict[str, int] = {}
        self._writers: dict[str, object] = {}
        self.records = 0
        self.files: dict[str, str] = {}
        self.closed = False

    @names_the_output
    def write(self, ticks: np.ndarray) -> int:
        rt = ticks["rtype"]
        n = 0
        for r in np.unique(rt).tolist():
            kind = records.RTYPE_NAME.get(r)
            if kind is None:
                continue
            rows = ticks[rt == r]
            self._pending.setdefault(kind, []).append(rows)
            self._pending_n[kind] = self._pending_n.get(kind, 0) + rows.shape[0]
            n += rows.shape[0]
            if self._pending_n[kind] >= self.row_group:
                self._flush(kind)
        self.records += n
        return n

    def _table(self, kind: str, rows: np.ndarray):
        from feedhandler import frames

        has_own = "symbol" in records.DTYPES[kind].names
        return frames.to_arrow(rows, kind, symbols=None if has_own else self._symbols(), prices="decimal")

    def _flush(self, kind: str) -> None:
        parts = self._pending.pop(kind, [])
        self._pending_n[kind] = 0
        if not parts:
            return
        rows = np.empty(sum(x.shape[0] for x in parts), records.TICK_DTYPE)   # np.concatenate would drop
        at = 0                                                                  # the dtype's overlapping view
        for x in parts:
            rows[at: at + x.shape[0]] = x
            at += x.shape[0]
        table = self._table(kind, rows)
        w = self._writers.get(kind)
        if w is None:
            p = sibling_path(self.path, kind)
            w = self.pq.ParquetWriter(temp_path(p), table.schema, compression="zstd")
            self._writers[kind] = w
            self.files[kind] = p
        w.write_table(table)

    @names_the_output
    def close(self) -> None:
        if self.closed:
            return
        try:
            for kind in list(self._pending):
                self._flush(kind)
        except BaseException:
            self.abort()
            raise
        try:
            for w in self._writers.values():
                w.close()
            if "mbo" not in self._writers:
                # an empty MBO table, so that OUT.parquet always exists
                t = self._table("mbo", np.zeros(0, records.TICK_DTYPE))
                self.pq.write_table(t, temp_path(self.path), compression="zstd")
                self.files["mbo"] = self.path
        except BaseException:
            self.closed = False
            self.abort()
            raise
        self.closed = True
        for p in self.files.values():     # every file is complete: give them their names
            publish(temp_path(p), p)

    def abort(self) -> None:
        if self.closed:
            return
        self.closed = True
        for w in self._writers.values():
            try:
                w.close()
            except OSError:  # best effort while already failing: the files are removed next
                pass
        for p in self.files.values():
            discard(temp_path(p))
