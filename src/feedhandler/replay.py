"""Replay a capture file through the feed and the order books: the orchestration behind
``feedhandler replay`` (the CLI only parses arguments and prints).

Two modes, same results:

- ``single``: one thread. ``Feed.read`` fills a batch, ``BookSet.apply`` enriches it in place, then
  the batch goes to the outputs. Python runs once per batch (65536 records by default).
- ``pipelined``: ``Feed.start(ring)`` runs framing and decoding on a native producer thread; this
  thread runs ``BookSet.consume(ring)`` (a nogil loop) and handles each enriched batch in its callback.

Per batch, the Python side only does vectorized numpy work: learn the stock directory, select the
``--symbols``, count activity per instrument, hand the batch to the writer. Counters come from the
Feed and the BookSet at the end (and are read for the progress line, never printed from the loop).
"""
from __future__ import annotations

import datetime as _dt
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence
from zoneinfo import ZoneInfo

import numpy as np

from feedhandler import records
from feedhandler.output import SymbolMap, open_writer

__all__ = ["ReplayOptions", "replay", "SUMMARY_KEYS"]

BATCH = 65536          # records per batch (single mode) / most records per consume batch (pipelined)
RING_CAPACITY = 1 << 17  # records (8 MiB of slots)

# Top-level keys of the summary (the ``--json`` schema); tests check them.
SUMMARY_KEYS = (
    "file", "format", "gzip", "mode", "date", "midnight_ns", "file_bytes", "packets", "moldudp64_packets",
    "heartbeats", "end_of_session", "sessions", "messages", "messages_by_type", "records", "gaps",
    "lost_messages", "missing_ranges", "duplicates", "out_of_order", "malformed", "malformed_by_reason",
    "unknown", "bad_length", "truncated", "link_rejects", "live_orders", "books", "stale_books",
    "book_counters", "elapsed_s", "messages_per_s", "symbols", "bbo", "output",
)


@dataclass
class ReplayOptions:
    """What ``replay`` does; defaults match the CLI's."""

    symbols: Sequence[str] | None = None       # keep only these tickers (outputs and the BBO table)
    out: str | None = None                      # output file (.dbn, .parquet, .npy)
    out_format: str | None = None               # force the output format
    mode: str = "single"                        # "single" | "pipelined"
    date: str | None = None                     # trading day YYYY-MM-DD (ts_event base)
    top: int = 10                               # rows of the final BBO table
    batch: int = BATCH
    reorder_window: int | None = None           # MoldUDP64 reorder window (packets); Feed default if None
    udp_port: int | None = None
    progress: Callable[[dict], None] | None = None   # called about 5 times a second with a snapshot
    feed_kw: dict = field(default_factory=dict)


class _Batches:
    """Per-batch bookkeeping shared by both modes (runs on the consumer thread)."""

    def __init__(self, opts: ReplayOptions, symmap: SymbolMap, writer):
        self.opts = opts
        self.symmap = symmap
        self.writer = writer
        self.want = set(opts.symbols) if opts.symbols else None
        self.ids = np.zeros(0, np.uint32)
        self.activity = np.zeros(1 << 16, np.int64)   # MBO + trade records per instrument_id
        self.records = 0
        self.kept = 0

    def __call__(self, ticks: np.ndarray) -> None:
        self.records += ticks.shape[0]
        if self.symmap.update(ticks) and self.want is not None:
            self.ids = np.array(sorted(self.symmap.ids_of(self.want).values()), dtype=np.uint32)
        iid = ticks["instrument_id"]
        if self.want is not None:
            keep = np.isin(iid, self.ids) | (iid == 0)
            ticks = ticks[keep]
            iid = ticks["instrument_id"]
        rt = ticks["rtype"]
        book_rec = (rt == records.RTYPE["mbo"]) | (rt == records.RTYPE["trade"])
        ids = iid[book_rec]
        if ids.shape[0]:
            top = int(ids.max())
            if top >= self.activity.shape[0]:
                grown = np.zeros(max(top + 1, 2 * self.activity.shape[0]), np.int64)
                grown[: self.activity.shape[0]] = self.activity
                self.activity = grown
            self.activity[: top + 1] += np.bincount(ids, minlength=top + 1)
        self.kept += ticks.shape[0]
        if self.writer is not None:
            self.writer.write(ticks)


def _date_of(midnight_ns: int) -> _dt.date | None:
    if not midnight_ns:
        return None
    return _dt.datetime.fromtimestamp(midnight_ns / 1e9, ZoneInfo("America/New_York")).date()


def replay(path: str | os.PathLike, opts: ReplayOptions | None = None) -> dict:
    """Replay ``path`` and return the summary (keys: ``SUMMARY_KEYS``).

    Raises
    ------
    feedhandler.errors.CaptureError / CaptureFormatError
        The file is missing, unreadable, or no capture format we read.
    feedhandler.errors.FeedError
        The pipeline failed.
    ValueError
        Bad options (unknown mode, output format).
    ImportError (feedhandler.output.parquet.MissingDependency)
        Parquet output without pyarrow.
    """
    from engine.book import BookSet
    from feedhandler.pipeline import Feed

    opts = opts or ReplayOptions()
    if opts.mode not in ("single", "pipelined"):
        raise ValueError(f"unknown mode {opts.mode!r} (single, pipelined)")
    if opts.batch < 64:
        raise ValueError("batch must be at least 64 records")
    kw = dict(opts.feed_kw)
    if opts.date:
        kw["date"] = opts.date
    if opts.reorder_window is not None:
        kw["reorder_window"] = opts.reorder_window
    if opts.udp_port is not None:
        kw["udp_port"] = opts.udp_port
    path = os.fspath(path)
    feed = Feed(path, "itch50", **kw)
    books = BookSet()
    symmap = SymbolMap()
    writer = None
    if opts.out:
        writer = open_writer(opts.out, opts.out_format, symbols=symmap, date=_date_of(feed.midnight_ns))
    handle = _Batches(opts, symmap, writer)
    t0 = time.perf_counter()
    last_progress = [t0]

    def progress():
        now = time.perf_counter()
        if opts.progress is not None and now - last_progress[0] >= 0.2:
            last_progress[0] = now
            done, total = feed.progress()
            opts.progress({"bytes_read": done, "total_bytes": total, "records": handle.records,
                           "elapsed_s": now - t0})

    ok = False
    try:
        if opts.mode == "single":
            buf = records.empty(opts.batch)
            while True:
                n = feed.read(buf)
                if n == 0:
                    break
                batch = buf[:n]
                books.apply(batch)
                handle(batch)
                progress()
        else:
            from feedhandler.ring import Ring

            ring = Ring(RING_CAPACITY, overflow="block")

            def on_batch(batch):
                handle(batch)
                progress()

            feed.start(ring)
            try:
                books.consume(ring, opts.batch, on_batch)
            except BaseException:
                # stop the producer and drain the ring so that it can close it and exit
                feed.stop()
                _drain(ring)
                raise
            finally:
                feed.join()
        ok = True
    finally:
        if writer is not None:
            if ok:
                writer.close()
            else:
                writer.abort()
    elapsed = time.perf_counter() - t0
    return _summary(path, opts, feed, books, handle, writer, elapsed)


def _drain(ring) -> None:
    """Release everything a (stopping) producer still publishes, until it closes the ring."""
    while not ring.finished:
        b = ring.read(1 << 16, timeout=0.05)
        if b.shape[0]:
            ring.release(b.shape[0])


def _price(p: int) -> float | None:
    return None if p == records.UNDEF_PRICE else p / records.PRICE_SCALE


def _summary(path, opts, feed, books, handle: _Batches, writer, elapsed: float) -> dict:
    st = feed.stats()
    dec = st.get("decoder", {})
    day = _date_of(feed.midnight_ns)
    messages = int(st["messages"])
    symmap = handle.symmap
    # BBO of the busiest instruments (by MBO + trade records seen), restricted to --symbols
    act = handle.activity
    order = np.argsort(-act, kind="stable")
    rows = []
    for iid in order[: max(opts.top, 0) * 4 + 16].tolist():
        if act[iid] == 0 or len(rows) >= opts.top:
            break
        if handle.want is not None and symmap.by_id.get(iid) not in handle.want:
            continue
        bid_px, bid_sz, bid_n, ask_px, ask_sz, ask_n = books.bbo(iid)
        rows.append({
            "symbol": symmap.by_id.get(iid), "instrument_id": iid, "records": int(act[iid]),
            "bid_px": None if bid_px == records.UNDEF_PRICE else int(bid_px), "bid": _price(bid_px),
            "bid_sz": int(bid_sz), "bid_orders": int(bid_n),
            "ask_px": None if ask_px == records.UNDEF_PRICE else int(ask_px), "ask": _price(ask_px),
            "ask_sz": int(ask_sz), "ask_orders": int(ask_n), "stale": books.stale(iid),
        })
    summ = books.bbo_all()
    sym_info = None
    if handle.want is not None:
        found = symmap.ids_of(handle.want)
        sym_info = {"requested": sorted(handle.want), "found": dict(sorted(found.items())),
                    "not_found": sorted(handle.want - set(found))}
    out = None
    if writer is not None:
        out = {"path": os.fspath(opts.out), "format": type(writer).__name__.replace("Writer", "").lower(),
               "records": int(writer.records), "files": dict(getattr(writer, "files", {}) or {"main": opts.out})}
    malformed = {k: int(v) for k, v in st["malformed"].items() if v}
    damage = {k: int(v) for k, v in st["file_damage"].items() if v}
    rejects = {k: int(v) for k, v in st["link_rejects"].items() if v}
    return {
        "file": path,
        "format": st["format"],
        "gzip": bool(st["gzip"]),
        "mode": opts.mode,
        "date": day.isoformat() if day else None,
        "midnight_ns": int(feed.midnight_ns or 0),
        "file_bytes": int(st["total_bytes"]),
        "packets": int(st["packets"]),
        "moldudp64_packets": int(st["moldudp64_packets"]),
        "heartbeats": int(st["heartbeats"]),
        "end_of_session": int(st["end_of_session"]),
        "sessions": list(st["sessions"]),
        "messages": messages,
        "messages_by_type": {k: int(v) for k, v in sorted(dec.get("messages", {}).items())},
        "records": int(handle.records),
        "gaps": int(st["gaps"]),
        "lost_messages": int(st["lost_messages"]),
        "missing_ranges": [list(r) for r in feed.missing_ranges()],
        "duplicates": int(st["duplicates"]),
        "out_of_order": int(st["out_of_order"]),
        "malformed": sum(malformed.values()),
        "malformed_by_reason": malformed,
        "unknown": int(dec.get("unknown", 0)),
        "bad_length": int(dec.get("bad_length", 0)),
        "truncated": int(st["truncated"]),
        "file_damage": damage,
        "link_rejects": sum(rejects.values()),
        "link_rejects_by_reason": rejects,
        "live_orders": int(books.live_orders),
        "books": int(books.instrument_count),
        "stale_books": int(summ["stale"].sum()) if summ.shape[0] else 0,
        "book_counters": {k: int(v) for k, v in books.counters().items()},
        "elapsed_s": round(elapsed, 6),
        "messages_per_s": round(messages / elapsed, 1) if elapsed > 0 else None,
        "symbols": sym_info,
        "bbo": rows,
        "output": out,
    }
