"""Record batches as tables: Arrow, pandas and polars, with real types.

A batch of tick records (``feedhandler.records``) keeps the wire's integers: prices in 1e-9 fixed point
with ``UNDEF_PRICE`` for "no price", times as uint64 ns since the epoch, character fields as padded
bytes. For analysis the same rows convert, one record kind at a time, to

- ``ts_event`` / ``ts_recv``: ``timestamp[ns, UTC]`` columns;
- fixed-point fields (prices, price limits, display factors): ``decimal128(38, 9)`` (exact, default),
  ``float64``, or the raw int64 (``prices="raw"``); ``UNDEF_PRICE`` becomes null either way;
- day counts (``trade_date``, ``trading_date``): ``date32``, 65535 (the wire's null) becomes null;
- character fields: strings without their padding;
- an optional ``symbol`` column from a ``{instrument_id: symbol}`` map.

    from feedhandler import frames
    ticks = batch[:n]
    df = frames.to_pandas(ticks, "mbo", symbols=frames.symbols_of(ticks))

Conversion happens once per batch in numpy/Arrow (no Python object per row). Needs pyarrow
(``pip install 'feedhandler[parquet]'``); ``to_pandas`` also needs pandas, ``to_polars`` polars.
"""
from __future__ import annotations

import numpy as np

from feedhandler import records
from feedhandler.errors import FeedhandlerError

__all__ = ["FIXED_POINT_FIELDS", "DATE_FIELDS", "TIME_FIELDS", "symbols_of", "to_arrow", "to_pandas", "to_polars"]

# int64 fields in 1e-9 units (csrc/include/fh/record.h says "1e-9 units" on each; a test checks the two
# agree). Every other integer keeps its width.
FIXED_POINT_FIELDS = frozenset({
    "price", "level1", "level2", "level3", "ipo_price", "reference_price", "upper_price", "lower_price",
    "current_reference_price", "far_price", "near_price", "near_execution_price", "minimum_allowable_price",
    "maximum_allowable_price", "lower_price_range_collar", "upper_price_range_collar", "min_price_increment",
    "display_factor", "strike_price", "bid_px", "ask_px",
})
TIME_FIELDS = frozenset({"ts_event", "ts_recv"})         # uint64 ns since the UNIX epoch
DATE_FIELDS = frozenset({"trade_date", "trading_date"})  # uint16 days since the UNIX epoch, 65535 = null
_DATE_NULL = 65535
_PRICES = ("decimal", "float", "raw")


class MissingDependency(FeedhandlerError, ImportError):
    """An optional dependency needed for the requested conversion is not installed."""


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise MissingDependency("tables need pyarrow: pip install 'feedhandler[parquet]'") from e
    return pa, pc


def _rows(ticks: np.ndarray, kind: str) -> np.ndarray:
    if kind not in records.DTYPES:
        raise ValueError(f"unknown record kind {kind!r} (one of {', '.join(sorted(records.DTYPES))})")
    if ticks.dtype != records.DTYPES[kind]:
        if ticks.dtype.itemsize != records.TICK_SIZE:
            raise ValueError(f"not a batch of {records.TICK_SIZE}-byte tick records: {ticks.dtype}")
        ticks = np.ascontiguousarray(ticks).view(records.TICK_DTYPE)
        ticks = ticks[ticks["rtype"] == records.RTYPE[kind]].view(records.DTYPES[kind])
    return ticks


def symbols_of(ticks: np.ndarray) -> dict[int, str]:
    """{instrument_id: symbol} from the stock directory (ITCH) and instrument definition (MDP3, FIX)
    records of a batch; later records win."""
    ticks = np.ascontiguousarray(ticks).view(records.TICK_DTYPE)
    out: dict[int, str] = {}
    for kind in ("stock_directory", "instrument_def"):
        rows = ticks[ticks["rtype"] == records.RTYPE[kind]].view(records.DTYPES[kind])
        for i, sym in zip(rows["instrument_id"].tolist(), rows["symbol"].tolist()):
            out[int(i)] = sym.decode("ascii", "replace").rstrip(" \0")
    return out


def _decimal9(pa, pc, col: np.ndarray, undef: np.ndarray):
    """int64 in 1e-9 units -> decimal128(38, 9) with the same unscaled integer (exact: no division)."""
    wide = np.empty((col.shape[0], 2), dtype="<i8")   # little-endian 128-bit two's complement
    wide[:, 0] = col
    wide[:, 1] = col >> 63
    arr = pa.Array.from_buffers(pa.decimal128(38, 9), col.shape[0], [None, pa.py_buffer(wide)])
    if undef.any():
        arr = pc.if_else(pa.array(undef), pa.scalar(None, pa.decimal128(38, 9)), arr)
    return arr


def to_arrow(ticks: np.ndarray, kind: str = "mbo", *, symbols: dict | None = None, prices: str = "decimal"):
    """The rows of record kind ``kind`` in ``ticks`` as a ``pyarrow.Table`` (see the module doc).

    ``ticks`` is a batch of tick records (rows of other kinds are left out) or rows already viewed as
    ``kind``. ``symbols`` maps instrument_id to symbol and adds a ``symbol`` column (null when
    unknown).
    """
    if prices not in _PRICES:
        raise ValueError(f"prices must be one of {_PRICES}, not {prices!r}")
    pa, pc = _pyarrow()
    rows = _rows(ticks, kind)
    names, cols = [], []
    for name in records.DTYPES[kind].names:
        if name.startswith("_"):
            continue                                    # reserved bytes
        col = np.ascontiguousarray(rows[name])
        if col.ndim > 1:
            continue
        if col.dtype.kind == "S":
            w = col.dtype.itemsize
            raw = col.view(np.uint8).reshape(-1, w).copy()
            if kind == "mbo" and name == "attribution":
                raw[rows["action"] != b"A"] = 0         # the union's other view: fills' match number
            raw[raw >= 0x80] = ord("?")                 # ASCII on the wire; never fail on damage
            arr = pa.array(raw.view(f"S{w}").ravel(), type=pa.binary()).cast(pa.string())
            arr = pc.utf8_rtrim(arr, characters=" \0")
        elif name in TIME_FIELDS:
            arr = pa.array(col.astype(np.int64), type=pa.timestamp("ns", tz="UTC"))
        elif name in DATE_FIELDS:
            arr = pa.array(col.astype(np.int32), type=pa.date32(), mask=col == _DATE_NULL)
        elif name in FIXED_POINT_FIELDS and col.dtype == np.int64:
            undef = col == records.UNDEF_PRICE
            if prices == "raw":
                arr = pa.array(col, mask=undef)
            elif prices == "float":
                arr = pa.array(col / records.PRICE_SCALE, mask=undef)
            else:
                arr = _decimal9(pa, pc, col, undef)
        else:
            arr = pa.array(col)
        names.append(name)
        cols.append(arr)
    if symbols is not None:
        keys = np.array(sorted(symbols), dtype=np.int64)
        vals = pa.array([symbols[int(k)] for k in keys] + [None], type=pa.string())
        inst = rows["instrument_id"].astype(np.int64)
        pos = np.full(inst.shape[0], len(keys), np.int64)           # -> null: unknown instrument
        if keys.size:
            i = np.minimum(np.searchsorted(keys, inst), keys.size - 1)
            hit = keys[i] == inst
            pos[hit] = i[hit]
        sym = vals.take(pa.array(pos))
        at = names.index("instrument_id") + 1
        names.insert(at, "symbol")
        cols.insert(at, sym)
    return pa.Table.from_arrays(cols, names=names)


def to_pandas(ticks: np.ndarray, kind: str = "mbo", **kw):
    """``to_arrow(...).to_pandas()``: timestamps as ``datetime64[ns, UTC]``, prices as ``Decimal`` (or
    float with ``prices="float"``), nulls as ``None``/``NaN``/``NaT``."""
    try:
        import pandas  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise MissingDependency("to_pandas needs pandas: pip install pandas") from e
    return to_arrow(ticks, kind, **kw).to_pandas()


def to_polars(ticks: np.ndarray, kind: str = "mbo", **kw):
    """``polars.from_arrow(to_arrow(...))``."""
    try:
        import polars as pl
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise MissingDependency("to_polars needs polars: pip install polars") from e
    return pl.from_arrow(to_arrow(ticks, kind, **kw))
