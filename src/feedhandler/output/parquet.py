"""Write normalized records as Parquet (needs the optional dependency pyarrow: ``pip install
feedhandler[parquet]``).

Layout: ``OUT.parquet`` holds the MBO records; every other record kind present in the stream goes to
a sibling file ``OUT.<kind>.parquet`` (``OUT.trade.parquet``, ``OUT.stock_directory.parquet``,
``OUT.gap.parquet``, ...), one table per kind with that kind's fields (``feedhandler.records.DTYPES``).
Integers keep their widths; prices stay int64 fixed point (1e-9 units, ``UNDEF_PRICE`` = no price);
times stay uint64 ns since the epoch; character fields become strings (trailing spaces/NULs
removed). MBO and trade tables get a ``symbol`` column from the stock directory. Rows are written in
row groups of about ``row_group`` records. Each file is written under a temporary name
(``.NAME.part-PID``) and renamed when ``close()`` has written its footer, so a final name always holds
a complete, readable file; ``abort()`` removes the temporaries.
"""
from __future__ import annotations

import os

import numpy as np

from feedhandler import records
from feedhandler.errors import FeedhandlerError
from feedhandler.output._spool import check_output_dir, discard, publish, temp_path

__all__ = ["ParquetWriter", "MissingDependency", "sibling_path"]


class MissingDependency(FeedhandlerError, ImportError):
    """An optional dependency needed for the requested output is not installed."""


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise MissingDependency("Parquet output needs pyarrow: pip install 'feedhandler[parquet]' "
                                "(or pip install pyarrow)") from e
    return pa, pc, pq


def sibling_path(path: str, kind: str) -> str:
    """``OUT.parquet`` for MBO, ``OUT.<kind>.parquet`` for the other kinds."""
    if kind == "mbo":
        return path
    stem = path[: -len(".parquet")] if path.endswith(".parquet") else path
    return f"{stem}.{kind}.parquet"


class ParquetWriter:
    """Streaming Parquet writer, one file per record kind (``write(batch)``, then ``close()``)."""

    def __init__(self, path: str | os.PathLike, *, symbols=None, row_group: int = 262_144, **_ignored):
        self.pa, self.pc, self.pq = _pyarrow()
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

    def write(self, ticks: np.ndarray) -> int:
        rt = ticks["rtype"]
        n = 0
        for r in np.unique(rt).tolist():
            kind = records.RTYPE_NAME.get(r)
            if kind is None:
                continue
            rows = ticks[rt == r].view(records.DTYPES[kind])
            self._pending.setdefault(kind, []).append(rows)
            self._pending_n[kind] = self._pending_n.get(kind, 0) + rows.shape[0]
            n += rows.shape[0]
            if self._pending_n[kind] >= self.row_group:
                self._flush(kind)
        self.records += n
        return n

    def _table(self, kind: str, rows: np.ndarray):
        pa, pc = self.pa, self.pc
        cols, names = [], []
        dt = records.DTYPES[kind]
        for name in dt.names:
            col = rows[name]
            if col.dtype.kind == "S":
                w = col.dtype.itemsize
                raw = np.ascontiguousarray(col).view(np.uint8).reshape(-1, w).copy()
                if kind == "mbo" and name == "attribution":
                    # the union's other view (the match number of fills): attribution is an add's
                    raw[rows["action"] != b"A"] = 0
                raw[raw >= 0x80] = ord("?")  # character fields are ASCII on the wire; never fail on damage
                arr = pa.array(raw.view(f"S{w}").ravel(), type=pa.binary()).cast(pa.string())
                arr = pc.utf8_rtrim(arr, characters=" \0")
            elif col.ndim > 1:
                continue
            else:
                arr = pa.array(col)
            names.append(name)
            cols.append(arr)
        if kind in ("mbo", "trade"):
            sym = self._symbols()
            keys = sorted(sym)
            vals = pa.array([sym[k] for k in keys] + [None], type=pa.string())
            ids = rows["instrument_id"].astype(np.int64)
            pos = np.full(ids.shape[0], len(keys), np.int64)        # -> None: no stock directory entry
            if keys:
                k = np.array(keys, dtype=np.int64)
                i = np.minimum(np.searchsorted(k, ids), len(keys) - 1)
                hit = k[i] == ids
                pos[hit] = i[hit]
            names.insert(5, "symbol")
            cols.insert(5, vals.take(pa.array(pos)))
        return pa.Table.from_arrays(cols, names=names)

    def _flush(self, kind: str) -> None:
        parts = self._pending.pop(kind, [])
        self._pending_n[kind] = 0
        if not parts:
            return
        rows = np.concatenate(parts)
        table = self._table(kind, rows)
        w = self._writers.get(kind)
        if w is None:
            p = sibling_path(self.path, kind)
            w = self.pq.ParquetWriter(temp_path(p), table.schema, compression="zstd")
            self._writers[kind] = w
            self.files[kind] = p
        w.write_table(table)

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
                t = self._table("mbo", np.zeros(0, records.DTYPES["mbo"]))
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
