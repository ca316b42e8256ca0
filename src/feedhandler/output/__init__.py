"""Record outputs of ``feedhandler replay --out``: DBN (MBO schema; ``.dbn.zst`` zstd-compressed),
Parquet (typed columns: ``feedhandler.frames.to_arrow``), raw ``.npy``.

Every writer has ``write(batch) -> int`` (a TICK_DTYPE batch, already enriched by the book and
filtered), ``close()`` and ``abort()``, and counts ``records``. :func:`open_writer` picks one by the
file extension or an explicit format. :class:`SymbolMap` follows the stock directory records of the
stream (instrument_id -> ticker) for the writers' symbol columns and mappings and for ``--symbols``.
"""
from __future__ import annotations

import os

import numpy as np

from feedhandler import records

__all__ = ["FORMATS", "SymbolMap", "extension", "format_for", "open_writer"]

FORMATS = {".dbn": "dbn", ".dbn.zst": "dbn", ".parquet": "parquet", ".pq": "parquet", ".npy": "npy"}


def extension(path: str) -> str:
    """The output extension of ``path``, lower case: ``.dbn.zst`` counts as one."""
    p = os.fspath(path).lower()
    if p.endswith(".dbn.zst"):
        return ".dbn.zst"
    return os.path.splitext(p)[1]


class SymbolMap:
    """instrument_id <-> ticker, learned as batches pass from the feed's own reference data: stock
    directory records (ITCH R) and instrument definitions (MDP3 MDInstrumentDefinition*). FIX and
    OUCH replays fill ``by_id`` from their decoders' symbol maps."""

    def __init__(self):
        self.by_id: dict[int, str] = {}

    def update(self, ticks: np.ndarray) -> int:
        """Learn the reference-data records of a batch; returns how many it held."""
        n = 0
        for kind in ("stock_directory", "instrument_def"):
            sd = ticks[ticks["rtype"] == records.RTYPE[kind]]
            if sd.shape[0]:
                sd = sd.view(records.DTYPES[kind])
                for iid, sym in zip(sd["instrument_id"].tolist(), sd["symbol"].tolist()):
                    name = sym.decode("latin-1").strip().strip("\0")
                    if name:
                        self.by_id[iid] = name
                n += sd.shape[0]
        return n

    def ids_of(self, tickers) -> dict[str, int]:
        want = set(tickers)
        return {t: i for i, t in self.by_id.items() if t in want}

    def __call__(self) -> dict[int, str]:
        return dict(self.by_id)


def format_for(path: str, fmt: str | None = None) -> str:
    """The output format: ``fmt`` when given, else from the extension (.dbn or .dbn.zst, .parquet/.pq,
    .npy)."""
    if fmt:
        fmt = fmt.lower()
        if fmt not in set(FORMATS.values()):
            raise ValueError(f"unknown output format {fmt!r} (dbn, parquet, npy)")
        return fmt
    ext = extension(path)
    if ext not in FORMATS:
        raise ValueError(f"cannot tell the output format of {path!r} from its extension "
                         "(.dbn, .dbn.zst, .parquet, .npy); use --out-format")
    return FORMATS[ext]


def open_writer(path: str | os.PathLike, fmt: str | None = None, *, symbols: SymbolMap | None = None,
                date=None, dataset: str | None = None):
    """A writer for ``path`` (see the module docstring); ``dataset`` names the DBN dataset code."""
    path = os.fspath(path)
    fmt = format_for(path, fmt)
    if fmt == "dbn":
        from feedhandler.output.dbn import DbnWriter

        kw = {"dataset": dataset} if dataset else {}
        return DbnWriter(path, symbols=symbols, date=date, **kw)
    if fmt == "parquet":
        from feedhandler.output.parquet import ParquetWriter

        return ParquetWriter(path, symbols=symbols)
    from feedhandler.output.npy import NpyWriter

    return NpyWriter(path)
