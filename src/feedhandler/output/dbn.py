"""Write normalized records as a Databento Binary Encoding (DBN) file, schema MBO.

What goes in
------------
- MBO records (rtype 0xA0) as the first ``hd.length * 4`` (56) bytes of each slot: byte-identical to
  DBN's ``MboMsg``, so nothing is converted. Flag bits 0-1 (0x01 "non-printable execution",
  0x02 "whole order") are feedhandler-private: DBN reserves them and its readers ignore them; they are
  kept so that a DBN file and our own records never disagree byte for byte.
- Trade records (our rtype 0x00 ``fh_trade``) become MBO records with their own action, as
  Databento's MBO data carries them: ``'T'`` for a trade print (ITCH P and Q; one per MDP3
  TradeSummary MDTradeEntry), ``'F'`` for an order's fill (MDP3's per-order entries of a
  TradeSummary: order_id set, side ``'N'``). A DBN reader that sums the ``'T'`` sizes therefore
  counts each trade once. order_id (P's order reference, 0 for crosses), price, size, side
  (aggressor), flags, ts_recv, ts_in_delta and sequence are kept; channel_id is 0; the match number
  and the cross type (``depth``) are dropped. Trade busts (MDP3 TradeSummary entries with update
  action Delete: our action ``'C'``) have no MBO action (``'C'`` would cancel an order) and are not
  written (counted in ``skipped`` as ``trade_bust``). The file stays a single-schema MBO file that
  every DBN reader accepts.
- CME MDP 3.0 price-level updates (``mbp_update``) go to a second DBN file next to it,
  ``OUT.mbp-1.dbn``, schema MBP-1 (80-byte ``Mbp1Msg``: the update plus the top of the book after it,
  from ``feedhandler.output._mbp1.Mbp1Converter``, which keeps the outright books; top-of-book
  changes only, as Databento's MBP-1; implied-book updates are not written).
- Every other record (gaps, system events, stock directory, statistics, security status, instrument
  definitions, FIX/OUCH order events, ...) has no DBN record type that holds it without loss and is
  not written (counted by kind in ``skipped``); use ``.npy`` or Parquet output for those (Parquet
  writes one table per record kind, order events included). The stock directory becomes the metadata's
  symbol mappings instead (raw symbol -> instrument_id for the trading day), for the instruments that
  have records in the file only (``--symbols`` AAPL lists AAPL, not the whole directory).

Publisher and compression
-------------------------
Every record's ``publisher_id`` (0 in our records: the decoders do not know Databento's numbering) is
filled with the Databento publisher of the dataset, as Databento numbers them (:data:`PUBLISHER_ID`:
``XNAS.ITCH`` -> 2 "Nasdaq TotalView-ITCH", ``GLBX.MDP3`` -> 1 "CME Globex MDP 3.0"; tests check the
numbers against NautilusTrader's copy of Databento's publisher table). Readers such as NautilusTrader's
``DatabentoDataLoader`` derive the venue of an instrument from it (``AAPL.XNAS``, ``ESZ0.GLBX``) and
refuse records with publisher 0. FIX and OUCH replays are a private session, not a Databento dataset:
their files are named ``FH.FIX`` / ``FH.OUCH`` and keep publisher_id 0 (claiming a Databento
publisher would be a lie about where the data came from); give such readers the instrument id
yourself (NautilusTrader: ``from_dbn_file(path, instrument_id=InstrumentId.from_str("IBM.XNYS"))``).

``OUT.dbn.zst`` is written zstd-compressed (one zstd frame, as Databento delivers its files; the
MBP-1 sibling is then ``OUT.mbp-1.dbn.zst``); it uses the ``zstandard`` package (a core
dependency). Records are spooled uncompressed as they arrive and compressed in one pass at
close, streaming (bounded memory), into the temporary name that is renamed when complete.

The metadata header (DBN version 3 by default; version 2 has the same layout) is written by
:func:`encode_metadata` following the DBN specification; tests check it equals
``databento_dbn.Metadata.encode()`` and that ``databento_dbn.DBNDecoder`` reads every record back.
"""
from __future__ import annotations

import datetime as _dt
import os
import struct
from typing import Iterable, Sequence

import numpy as np

from feedhandler import records
from feedhandler.output._spool import SpoolWriter, names_the_output

__all__ = ["DbnWriter", "PUBLISHER_ID", "encode_metadata", "mbp1_path", "SCHEMA_MBO", "SCHEMA_MBP1", "STYPE_INSTRUMENT_ID",
           "STYPE_RAW_SYMBOL"]

DBN_VERSION = 3
SYMBOL_CSTR_LEN = 71         # bytes of a fixed-length symbol in DBN versions 2 and 3
METADATA_RESERVED_LEN = 53   # reserved bytes after symbol_cstr_len (versions 2 and 3)
SCHEMA_MBO = 0
SCHEMA_MBP1 = 1
NULL_SCHEMA = 0xFFFF
STYPE_INSTRUMENT_ID = 0
STYPE_RAW_SYMBOL = 1
UNDEF_TIMESTAMP = 2**64 - 1
# Databento's publisher ids (dataset + venue) of the datasets we write; other datasets get 0 (none).
PUBLISHER_ID = {"GLBX.MDP3": 1, "XNAS.ITCH": 2}
MBO_BYTES = records.DBN_LENGTH["mbo"]   # 56

Mapping = tuple  # (raw_symbol, [(start yyyymmdd int, end yyyymmdd int, symbol str), ...])


def _cstr(s: str, n: int = SYMBOL_CSTR_LEN) -> bytes:
    b = s.encode("ascii")
    if len(b) >= n:
        raise ValueError(f"{s!r} does not fit a {n}-byte C string")
    return b.ljust(n, b"\0")


def encode_metadata(*, dataset: str, start: int, end: int | None = None, schema: int | None = SCHEMA_MBO,
                    stype_in: int | None = STYPE_RAW_SYMBOL, stype_out: int = STYPE_INSTRUMENT_ID,
                    symbols: Sequence[str] = (), mappings: Iterable[Mapping] = (), limit: int = 0,
                    version: int = DBN_VERSION) -> bytes:
    """The DBN metadata block (``"DBN"``, version, u32 length, then the fields; version 3 pads it to a
    multiple of 8 bytes, version 2 does not, as Databento's own encoder).

    Dates in mappings are ``YYYYMMDD`` integers; the interval end date is exclusive.
    """
    if version not in (2, 3):
        raise ValueError("only DBN versions 2 and 3 are written")
    ds = dataset.encode("ascii")
    if len(ds) > 16:
        raise ValueError("a DBN dataset code is at most 16 bytes")
    body = [
        ds.ljust(16, b"\0"),
        struct.pack("<HQQQ", NULL_SCHEMA if schema is None else schema, start,
                    UNDEF_TIMESTAMP if end is None else end, limit),
        struct.pack("<BBBH", 0xFF if stype_in is None else stype_in, stype_out, 0, SYMBOL_CSTR_LEN),
        b"\0" * METADATA_RESERVED_LEN,
        struct.pack("<I", 0),  # schema_definition_length: always 0
    ]

    def strings(items):
        items = list(items)
        return struct.pack("<I", len(items)) + b"".join(_cstr(s) for s in items)

    body += [strings(symbols), strings(()), strings(())]  # symbols, partial, not_found
    maps = list(mappings)
    body.append(struct.pack("<I", len(maps)))
    for raw, intervals in maps:
        body.append(_cstr(raw) + struct.pack("<I", len(intervals)))
        for d0, d1, sym in intervals:
            body.append(struct.pack("<II", d0, d1) + _cstr(sym))
    data = b"".join(body)
    if version >= 3:
        # version 3 pads the metadata so that the records after it start 8-byte aligned
        data += b"\0" * (-(8 + len(data)) % 8)
    return b"DBN" + bytes([version]) + struct.pack("<I", len(data)) + data


def _yyyymmdd(d: _dt.date) -> int:
    return d.year * 10000 + d.month * 100 + d.day


TRADE_ACTIONS = (b"T", b"F")   # trade record actions written as MBO records (the rest: not written)


def trade_busts(ticks: np.ndarray) -> int:
    """Trade records of a batch that are not written to DBN (busts: action 'C')."""
    tr = ticks[ticks["rtype"] == records.RTYPE["trade"]]
    if not tr.shape[0]:
        return 0
    act = tr.view(records.DTYPES["trade"])["action"]
    return int((~np.isin(act, np.array(TRADE_ACTIONS + (b"\0",), "S1"))).sum())


def to_mbo_bytes(ticks: np.ndarray) -> np.ndarray:
    """The DBN MBO bytes ((n, 56) uint8) of the MBO and trade records of a batch, in stream order
    (trade prints as action 'T', order fills as 'F'; trade busts left out)."""
    rt = ticks["rtype"]
    keep = rt == records.RTYPE["mbo"]
    is_tr = rt == records.RTYPE["trade"]
    if is_tr.any():
        act = ticks.view(records.DTYPES["trade"])["action"]
        keep |= is_tr & np.isin(act, np.array(TRADE_ACTIONS + (b"\0",), "S1"))
    sel = ticks[keep]   # a copy we may edit
    out = sel.view(records.DTYPES["mbo"])
    is_trade = sel["rtype"] == records.RTYPE["trade"]
    if is_trade.any():
        tr = sel[is_trade].view(records.DTYPES["trade"])
        m = np.zeros(tr.shape[0], records.DTYPES["mbo"])
        for f in ("publisher_id", "instrument_id", "ts_event", "order_id", "price", "size", "flags", "side",
                  "ts_recv", "ts_in_delta", "sequence"):
            m[f] = tr[f]
        m["length"] = MBO_BYTES // 4
        m["rtype"] = records.RTYPE["mbo"]
        m["action"] = np.where(tr["action"] == b"F", b"F", b"T")   # 'T' (or unset: a print) or 'F' (fill)
        out[is_trade] = m
    return np.ascontiguousarray(out.view(np.uint8).reshape(-1, records.TICK_DTYPE.itemsize)[:, :MBO_BYTES])


def mbp1_path(path: str) -> str:
    """Where the MBP-1 records of an MBO file ``OUT.dbn`` go: ``OUT.mbp-1.dbn`` (``OUT.dbn.zst``:
    ``OUT.mbp-1.dbn.zst``)."""
    zst = path.endswith(".zst")
    stem = path[: -len(".zst")] if zst else path
    stem = stem[: -len(".dbn")] if stem.endswith(".dbn") else stem
    return f"{stem}.mbp-1.dbn" + (".zst" if zst else "")


def stamp_publisher(b: np.ndarray, publisher_id: int) -> None:
    """Set the publisher_id (bytes 2..4 of each DBN record of ``b``, (n, length) uint8) where it is 0."""
    if publisher_id and b.shape[0]:
        pid = b[:, 2:4].view("<u2")[:, 0]
        if pid.any():
            pid[...] = np.where(pid == 0, np.uint16(publisher_id), pid)
        else:
            pid[...] = publisher_id     # the usual case (our decoders leave it 0): a strided fill


class _Mbp1File(SpoolWriter):
    """The MBP-1 sibling of a DbnWriter (its header is the parent's, with schema MBP-1)."""

    def __init__(self, path: str, parent: "DbnWriter"):
        super().__init__(path)
        self.parent = parent
        self.start: int | None = None
        self.end: int | None = None

    def header(self) -> bytes:
        return self.parent._metadata(self.start, self.end, SCHEMA_MBP1)


class DbnWriter(SpoolWriter):
    """Streaming DBN (schema MBO) writer: ``write(batch)`` per enriched batch, then ``close()``.

    Parameters
    ----------
    path : output file.
    symbols : callable returning {instrument_id: ticker} at close (the stock directory seen).
    date : the trading day for the symbol mapping intervals (default: from the first ts_event, UTC).
    dataset : DBN dataset code.
    version : DBN version byte (2 or 3).
    publisher_id : Databento publisher id put in records that have none (default: the dataset's, from
        :data:`PUBLISHER_ID`; 0 for datasets that are not Databento's).

    A path ending in ``.zst`` is written zstd-compressed.
    """

    def __init__(self, path: str | os.PathLike, *, symbols=None, date: _dt.date | None = None,
                 dataset: str = "XNAS.ITCH", version: int = DBN_VERSION, publisher_id: int | None = None):
        super().__init__(path)
        self.publisher_id = PUBLISHER_ID.get(dataset, 0) if publisher_id is None else int(publisher_id)
        self._symbols = symbols or (lambda: {})
        self.date = date
        self.dataset = dataset
        self.version = version
        self.start: int | None = None
        self.end: int | None = None
        self._mbp1: _Mbp1File | None = None
        self._conv = None
        self.counts = {"mbo": 0, "mbp-1": 0}
        self._seen_small = np.zeros(1 << 16, bool)   # instrument_ids < 65536 with records (ITCH locates)
        self._seen_big: set[int] = set()               # the others (MDP3 security ids)
        self.skipped: dict[str, int] = {}
        self.files = {"mbo": self.path}

    def _note_ids(self, b: np.ndarray) -> None:
        """Remember the instrument_ids of written DBN records (bytes 4..8 of each): O(n) for ITCH's
        16-bit locate codes, a sort only for larger ids."""
        ids = b[:, 4:8].copy().view("<u4").ravel()
        small = ids < self._seen_small.shape[0]
        self._seen_small[ids[small]] = True
        if not small.all():
            self._seen_big.update(np.unique(ids[~small]).tolist())

    @property
    def written_ids(self) -> set[int]:
        """instrument_ids with records in the file(s)."""
        return set(np.flatnonzero(self._seen_small).tolist()) | self._seen_big

    @staticmethod
    def _span(w, b: np.ndarray) -> None:
        ts = b[:, 8:16].copy().view("<u8").ravel()
        lo, hi = int(ts.min()), int(ts.max())
        w.start = lo if w.start is None else min(w.start, lo)
        w.end = hi if w.end is None else max(w.end, hi)

    @names_the_output
    def write(self, ticks: np.ndarray) -> int:
        b = to_mbo_bytes(ticks)
        n = b.shape[0]
        stamp_publisher(b, self.publisher_id)
        if n:
            self._span(self, b)
            self._append(b)
            self._note_ids(b)
            self.counts["mbo"] += n
        rt = ticks["rtype"]
        m = 0
        if (rt == records.RTYPE["mbp_update"]).any():
            if self._conv is None:
                from feedhandler.output._mbp1 import Mbp1Converter

                self._conv = Mbp1Converter()
            mb = self._conv.convert(ticks)
            m = mb.shape[0]
            stamp_publisher(mb, self.publisher_id)
            if m:
                if self._mbp1 is None:
                    self._mbp1 = _Mbp1File(mbp1_path(self.path), self)
                    self.files["mbp-1"] = self._mbp1.path
                self._span(self._mbp1, mb)
                self._mbp1._append(mb)
                self._note_ids(mb)
                self.counts["mbp-1"] += m
        busts = trade_busts(ticks)
        if busts:
            self.skipped["trade_bust"] = self.skipped.get("trade_bust", 0) + busts
        other = ~np.isin(rt, np.array([records.RTYPE[k] for k in ("mbo", "trade", "mbp_update")], np.uint8))
        if other.any():
            kinds, cnt = np.unique(rt[other], return_counts=True)
            for k, c in zip(kinds.tolist(), cnt.tolist()):
                name = records.RTYPE_NAME.get(k, f"rtype_{k}")
                self.skipped[name] = self.skipped.get(name, 0) + c
        self.records += n + m
        return n + m

    def close(self) -> None:
        try:
            super().close()
        except BaseException:
            if self._mbp1 is not None:
                self._mbp1.abort()
            raise
        if self._mbp1 is not None:
            self._mbp1.close()

    def abort(self) -> None:
        super().abort()
        if self._mbp1 is not None:
            self._mbp1.abort()

    def header(self) -> bytes:
        return self._metadata(self.start, self.end, SCHEMA_MBO)

    def _metadata(self, start: int | None, end_: int | None, schema: int) -> bytes:
        start = start or 0
        end = (end_ + 1) if end_ is not None else start
        day = self.date or _dt.datetime.fromtimestamp(start / 1e9, _dt.timezone.utc).date()
        d0, d1 = _yyyymmdd(day), _yyyymmdd(day + _dt.timedelta(days=1))
        written = self.written_ids
        sym = {iid: tk for iid, tk in self._symbols().items() if iid in written}
        tickers = sorted(set(sym.values()))
        by_ticker: dict[str, list] = {}
        for iid, tk in sorted(sym.items()):
            by_ticker.setdefault(tk, []).append((d0, d1, str(iid)))
        maps = [(tk, by_ticker[tk][-1:]) for tk in tickers]  # one interval per symbol and day
        return encode_metadata(dataset=self.dataset, start=start, end=end, schema=schema, symbols=tickers,
                               mappings=maps, version=self.version)
