"""Replay a capture file through the feed and the order books: the orchestration behind
``feedhandler replay`` (the CLI only parses arguments and prints).

Protocols (``ReplayOptions.protocol``; "auto" asks :func:`feedhandler.detect.detect`, which reads the
bytes, never the file name):

- ``itch50``: NASDAQ TotalView-ITCH 5.0 (MoldUDP64 pcap/pcapng, or BinaryFILE) through the native
  ``Feed`` into ``feedhandler.books.mbo.BookSet`` (the two modes below).
- ``mdp3``: CME MDP 3.0 (SBE over UDP): the same native ``Feed`` with the CME packet framer
  (``framing/cme_packets.pyx``) and ``Mdp3Decoder``, in either mode; MBO records go to ``BookSet``,
  MBP (price-level) records to ``feedhandler.books.mbp.MbpBookSet``. A and B feeds of a channel share a
  sequencing channel: ports listed in ``channels`` {port: channel}, else ports that differ by 1000
  (CME's A/B convention 14310/15310).
- ``fix`` / ``ouch42`` / ``ouch50`` / ``ouch``: TCP captures through the same ``Feed``, whose framer
  (``framing.tcp.TcpSessionFramer``) reassembles the connections and decodes them with
  ``fix_stream.decode_streams`` / ``ouch_events.decode_streams`` (FIX or SoupBinTCP framing, order
  lifecycles: the records of ``replay_stream``), in either mode; the records come out once the whole
  capture is decoded. The summary adds TCP, session and order-event statistics (events by kind,
  order->ack latency).

Every protocol has two modes, same results:

- ``single``: one thread. ``Feed.read`` fills a batch, ``BookSet.apply`` enriches it in place, then
  the batch goes to the outputs. Python runs once per batch (65536 records by default).
- ``pipelined``: ``Feed.start(ring)`` runs framing and decoding on a native producer thread; this
  thread runs ``BookSet.consume(ring)`` (a nogil loop) and handles each enriched batch in its callback.

Interruption (SIGINT, or SIGTERM through the CLI's handler, both arriving as ``KeyboardInterrupt``):
the replay stops at the end of the batch in hand, closes its outputs as complete, readable files
holding the records up to there (each is renamed from its temporary name only once complete), and
returns the partial summary with ``interrupted`` set to the signal's name. (FIX and OUCH replays
reassemble and decode the whole capture before their first batch: a signal during that ends the
replay with no summary and no output; in pipelined mode the decoding finishes first.)

Per batch, the Python side only does vectorized numpy work: learn the stock directory, select the
``--symbols``, count activity per instrument, hand the batch to the writer. Counters come from the
Feed and the BookSet at the end (and are read for the progress line, never printed from the loop).
"""
from __future__ import annotations

import datetime as _dt
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence
from zoneinfo import ZoneInfo

import numpy as np

from feedhandler import records
from feedhandler import summary as _summary_mod
from feedhandler.interrupts import BOUNDARY
from feedhandler.output import SymbolMap, open_writer
from feedhandler.summary import COMMON_KEYS, SUMMARY_KEYS  # noqa: F401  (the --json schema, re-exported)

__all__ = ["ReplayOptions", "replay", "Interrupted", "SUMMARY_KEYS", "COMMON_KEYS", "PROTOCOLS"]

PROTOCOLS = ("auto", "itch50", "mdp3", "fix", "ouch42", "ouch50", "ouch")

BATCH = 65536          # records per batch (single mode) / most records per consume batch (pipelined)
RING_CAPACITY = 1 << 17  # records (8 MiB of slots)
PACED_BATCH = 512      # records per read with --pace

class Interrupted(KeyboardInterrupt):
    """A signal other than SIGINT (SIGTERM) turned into an exception by the CLI's handler, so that the
    replay stops the way Ctrl-C stops it."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _signal_name(e: BaseException) -> str:
    return signal.Signals(getattr(e, "signum", signal.SIGINT)).name


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
    protocol: str = "auto"                      # PROTOCOLS
    channels: dict | None = None                # MDP3: {udp_port: channel}; others paired by ab_offset
    ab_offset: int = 1000                       # MDP3: ports that differ by this share a channel (0: off)
    sequencing: bool = True                     # ITCH: False = no MoldUDP64 sequencing (arrival order)
    pace: float = 0.0                           # ITCH, single mode: 0 = as fast as possible, 1 = the recorded
                                                # pace (ts_event), x = x times faster (feedhandler.serve.pace)
    watch: object | None = None                 # a feedhandler.serve.BookSampler: samples the books after
                                                # each batch on this thread, at its own few Hz (--serve)
    publisher: object | None = None             # a started feedhandler.publish.TickPublisher (--publish)
    on_warning: Callable[[str], None] | None = None   # told a warning as soon as it is known (the summary's
                                                # ``warnings`` list has it too); the CLI prints it at once


class _Batches:
    """Per-batch bookkeeping shared by both modes (runs on the consumer thread): the counts are one
    native pass a batch (``feedhandler.tally.BatchTally``)."""

    def __init__(self, opts: ReplayOptions, symmap: SymbolMap, writer,
                 book_rtypes: Sequence[str] = ("mbo", "trade")):
        from feedhandler.tally import BatchTally

        self.opts = opts
        self.tally = BatchTally([records.RTYPE[k] for k in book_rtypes],
                                [records.RTYPE[k] for k in ("stock_directory", "instrument_def")])
        self.symmap = symmap
        self.writer = writer
        self.want = set(opts.symbols) if opts.symbols else None
        self.ids = np.zeros(0, np.uint32)
        self.records = 0
        self.kept = 0
        self.publish: Callable[[np.ndarray], object] | None = None   # --publish: every enriched batch

    @property
    def by_rtype(self) -> np.ndarray:
        """Records seen per rtype (int64[256])."""
        return self.tally.by_rtype

    def activity(self, iid: int) -> int:
        """MBO + trade records (the ``book_rtypes``) of one instrument_id (of the instruments kept)."""
        return self.tally.count(iid)

    def __call__(self, ticks: np.ndarray) -> None:
        if self.publish is not None:
            self.publish(ticks)
        self.records += ticks.shape[0]
        refs = self.tally.add(ticks, activity=self.want is None)
        if refs.shape[0] and self.symmap.update(ticks[refs]) and self.want is not None:
            self.ids = np.array(sorted(self.symmap.ids_of(self.want).values()), dtype=np.uint32)
        if self.want is not None:
            iid = ticks["instrument_id"]
            ticks = ticks[np.isin(iid, self.ids) | (iid == 0)]
            self.tally.add(ticks, rtypes=False)
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
    opts = opts or ReplayOptions()
    path = os.fspath(path)
    protocol = opts.protocol or "auto"
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r} ({', '.join(PROTOCOLS)})")
    if protocol == "auto":
        from feedhandler.detect import detect

        protocol = detect(path)
    if opts.out:
        _check_out_format(opts)
    if opts.channels and protocol != "mdp3":
        raise ValueError(f"--channel applies to mdp3 captures only (this one is {protocol})")
    if not opts.sequencing and protocol != "itch50":
        raise ValueError(f"--no-sequencing applies to itch50 (MoldUDP64) captures only (this one is {protocol})")
    if (opts.pace or opts.watch is not None) and protocol != "itch50":
        raise ValueError(f"--pace and --serve are implemented for itch50 replays (this one is {protocol})")
    if opts.publisher is not None and protocol not in ("itch50", "mdp3"):
        raise ValueError(f"--publish applies to market-data feeds (itch50, mdp3), not {protocol}")
    if _publishes_bbo(opts) and protocol != "itch50":
        raise ValueError(f"--publish-what bbo needs order-by-order books (itch50); {protocol}: use ticks")
    if protocol == "itch50":
        s = _replay_itch(path, opts)
    elif protocol == "mdp3":
        s = _replay_mdp3(path, opts)
    else:
        s = _replay_tcp(path, opts, protocol)
    s["warnings"] = list(s.get("warnings") or []) + _input_warnings(opts, protocol, s.pop("_handle"))
    return s


def _replay_itch(path: str, opts: ReplayOptions) -> dict:
    from feedhandler.books import BookSet
    from feedhandler.pipeline import Feed

    if opts.mode not in ("single", "pipelined"):
        raise ValueError(f"unknown mode {opts.mode!r} (single, pipelined)")
    if opts.batch < 64:
        raise ValueError("batch must be at least 64 records")
    from feedhandler.trading_day import check_date, date_from_filename, require_day

    kw = dict(opts.feed_kw)
    date_source = None
    if opts.date:
        kw["date"] = check_date(opts.date).isoformat()
        date_source = "--date"
    if opts.reorder_window is not None:
        kw["reorder_window"] = opts.reorder_window
    if opts.udp_port is not None:
        kw["udp_port"] = opts.udp_port
    if not opts.sequencing:
        kw["sequencing"] = False
    feed = Feed(path, "itch50", **kw)
    if date_source is None and "midnight_ns" not in kw:
        if feed.midnight_ns:
            date_source = "capture time stamps"
        else:
            named = date_from_filename(path)
            if named is not None:
                feed = Feed(path, "itch50", **kw, date=named.isoformat())
                date_source = "file name"
    require_day(path, bool(feed.midnight_ns), bool(opts.out))
    books = BookSet(track_bbo_events=_publishes_bbo(opts))
    symmap = SymbolMap()
    writer = None
    if opts.out:
        writer = open_writer(opts.out, opts.out_format, symbols=symmap, date=_date_of(feed.midnight_ns))
    handle = _Batches(opts, symmap, writer)
    handle.publish = _publish_hook(opts, books)
    t0 = time.perf_counter()
    watch = opts.watch
    pacer = None
    if opts.pace:
        if opts.mode != "single":
            raise ValueError("--pace replays in --mode single")
        from feedhandler.serve.pace import Pacer
        pacer = Pacer(opts.pace)
    if watch is not None:
        from feedhandler.serve.feeds import ReplayCounters
        watch.counters = ReplayCounters(feed, pacer)
    interrupted = _and_late_signal(_run_writer(writer, lambda: _pump(feed, opts, handle, books, None, t0, pacer,
                                                                       watch)))
    elapsed = time.perf_counter() - t0
    if watch is not None:
        watch.finish(books, handle.records, handle.symmap.by_id)
    s = _summary(path, opts, feed, books, handle, writer, elapsed, date_source)
    s["interrupted"] = interrupted
    s["bytes_read"] = int(feed.progress()[0])
    return s


def _publishes_bbo(opts: ReplayOptions) -> bool:
    return opts.publisher is not None and getattr(opts.publisher, "what", "ticks") == "bbo"


def _publish_hook(opts: ReplayOptions, books) -> Callable[[np.ndarray], object] | None:
    """--publish: hand each enriched batch (and, for BBO, the BBO changes the books recorded while applying
    it) to the publisher, on the thread that owns the batch."""
    pub = opts.publisher
    if pub is None:
        return None
    if _publishes_bbo(opts):
        return lambda ticks: pub.publish(ticks, books.bbo_events())
    return pub.publish


def _drain(ring) -> None:
    """Release everything a (stopping) producer still publishes, until it closes the ring."""
    while not ring.finished:
        b = ring.read(1 << 16, timeout=0.05)
        if b.shape[0]:
            ring.release(b.shape[0])


def _pump(feed, opts: ReplayOptions, handle: _Batches, books, mbp, t0: float, pacer=None, watch=None) -> str | None:
    """The replay's one pipeline, for every protocol the feed core decodes (ITCH, MDP3): ``single``
    reads batches from the Feed and applies them here; ``pipelined`` runs the Feed's producer thread
    into a ring and ``books.consume`` applies the batches (nogil). Each batch then goes to the price-level
    books (``mbp``, MDP3), to ``handle`` (symbols, activity, output) and to the progress callback.
    ``pacer`` (--pace, single mode) cuts each read into slices released at the recorded pace; ``watch``
    (--serve) samples the books after each batch on this thread, at its own few Hz.
    Returns the name of the signal that interrupted it (SIGINT / SIGTERM as KeyboardInterrupt), or None."""
    last = [t0]

    def progress():
        now = time.perf_counter()
        if opts.progress is not None and now - last[0] >= 0.2:
            last[0] = now
            done, total = feed.progress()
            opts.progress({"bytes_read": done, "total_bytes": total, "records": handle.records,
                           "elapsed_s": now - t0})

    def on_batch(batch):
        with BOUNDARY.batch():      # a signal now stops the replay once this batch is handled
            if mbp is not None:
                mbp.apply(batch)
            handle(batch)
            if watch is not None:
                watch.maybe_sample(books, handle.records, handle.symmap.by_id)
        progress()

    try:
        if opts.mode == "single":
            # paced: small reads, so that the framer's counters (packets, gaps) keep close to the books
            buf = records.empty(min(opts.batch, PACED_BATCH) if pacer is not None else opts.batch)
            while (n := feed.read(buf)):   # framing and decoding of thousands of packets (native, nogil)
                for batch in (pacer.parts(buf[:n]) if pacer is not None else (buf[:n],)):
                    with BOUNDARY.batch():      # books, output and counts: the whole batch or none of it
                        books.apply(batch)
                        on_batch(batch)
            return None
        from feedhandler.ring import Ring

        ring = Ring(RING_CAPACITY, overflow="block")
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
    except KeyboardInterrupt as e:       # SIGINT / SIGTERM: a partial replay, complete outputs
        return _signal_name(e)
    return None


def _price(p: int) -> float | None:
    return None if p == records.UNDEF_PRICE else p / records.PRICE_SCALE


def _summary(path, opts, feed, books, handle: _Batches, writer, elapsed: float, date_source=None) -> dict:
    """The ITCH replay's summary: the common counters and the itch50 section (feedhandler.summary)."""
    st = feed.stats()
    dec = st.get("decoder", {})
    symmap = handle.symmap
    # BBO of the busiest instruments (by MBO + trade records seen), restricted to --symbols
    rows = []
    for iid in _busiest(handle, opts.top):
        bid_px, bid_sz, bid_n, ask_px, ask_sz, ask_n = books.bbo(iid)
        rows.append({
            "symbol": symmap.by_id.get(iid), "instrument_id": iid, "records": handle.activity(iid),
            "bid_px": None if bid_px == records.UNDEF_PRICE else int(bid_px), "bid": _price(bid_px),
            "bid_sz": int(bid_sz), "bid_orders": int(bid_n),
            "ask_px": None if ask_px == records.UNDEF_PRICE else int(ask_px), "ask": _price(ask_px),
            "ask_sz": int(ask_sz), "ask_orders": int(ask_n), "stale": books.stale(iid),
        })
    summ = books.bbo_all()
    out = None
    if writer is not None:
        out = {"path": os.fspath(opts.out), "format": type(writer).__name__.replace("Writer", "").lower(),
               "records": int(writer.records), "files": dict(getattr(writer, "files", {}) or {"main": opts.out})}
    base = _summary_mod.common(
        file=path, protocol="itch50", fmt=st["format"], gzip=st["gzip"], mode=opts.mode,
        file_bytes=st["total_bytes"], packets=st["packets"], messages=st["messages"],
        messages_by_type={k: int(v) for k, v in sorted(dec.get("messages", {}).items())},
        records_=handle.records, records_by_kind=_by_kind(handle), gaps=st["gaps"], duplicates=st["duplicates"],
        malformed_by_reason={k: int(v) for k, v in st["malformed"].items() if v},
        unknown=dec.get("unknown", 0), bad_length=dec.get("bad_length", 0), truncated=st["truncated"],
        damage_stats=st, books=books, elapsed=elapsed, symbols=_symbols_info(handle), bbo=rows, output=out)
    section = _summary_mod.itch50_section(st, feed, date=_date_of(feed.midnight_ns), date_source=date_source,
                                          sequencing=opts.sequencing)
    section["stale_books"] = int(summ["stale"].sum()) if summ.shape[0] else 0
    section["_handle"] = handle   # replay() takes it out (input warnings)
    return _summary_mod.build(base, section)


def _check_out_format(opts: ReplayOptions) -> None:
    """--out-format and --out's extension must not disagree (Parquet written as x.dbn helps nobody)."""
    from feedhandler.output import FORMATS, extension

    ext = extension(os.fspath(opts.out))
    if opts.out_format and ext in FORMATS and FORMATS[ext] != opts.out_format.lower():
        raise ValueError(f"--out {os.fspath(opts.out)} names a {FORMATS[ext]} file but --out-format is "
                         f"{opts.out_format}: give the file a .{opts.out_format} name (or drop --out-format)")


def _input_warnings(opts: ReplayOptions, protocol: str, handle) -> list[str]:
    """Options that did nothing on this capture, said rather than ignored."""
    out = []
    if opts.date and protocol != "itch50":
        out.append(f"--date has no effect on {protocol}: its messages carry full time stamps")
    if handle.want is not None:
        missing = sorted(handle.want - set(handle.symmap.ids_of(handle.want)))
        if missing:
            out.append(f"--symbols: not in the capture's reference data: {', '.join(missing)}"
                       + (" (nothing was kept)" if len(missing) == len(handle.want) else ""))
    return out


# ---- shared helpers of the other protocols -------------------------------------------------------
def _by_kind(handle: _Batches) -> dict:
    """{record kind: count} of the records seen (every kind, before the --symbols filter)."""
    return {records.RTYPE_NAME.get(rt, f"rtype_{rt}"): int(n) for rt, n in enumerate(handle.by_rtype.tolist()) if n}


def _busiest(handle: _Batches, top: int) -> list[int]:
    out = []
    for iid in handle.tally.busiest(max(top, 0) * 4 + 16):
        if len(out) >= top:
            break
        if handle.want is not None and handle.symmap.by_id.get(iid) not in handle.want:
            continue
        out.append(iid)
    return out


def _bbo_row(symmap: SymbolMap, iid: int, n: int, book: str, bid_px, bid_sz, ask_px, ask_sz, stale: bool,
             bid_n=None, ask_n=None) -> dict:
    row = {"symbol": symmap.by_id.get(iid), "instrument_id": iid, "book": book, "records": int(n),
           "bid_px": None if bid_px == records.UNDEF_PRICE else int(bid_px), "bid": _price(bid_px),
           "bid_sz": int(bid_sz),
           "ask_px": None if ask_px == records.UNDEF_PRICE else int(ask_px), "ask": _price(ask_px),
           "ask_sz": int(ask_sz), "stale": bool(stale)}
    if bid_n is not None:
        row["bid_orders"], row["ask_orders"] = int(bid_n), int(ask_n)
    return row


def _book_rows(handle: _Batches, top: int, books, mbp) -> list[dict]:
    """BBO rows of the busiest instruments: one per non-empty book (MBO order book, MBP price levels)."""
    rows = []
    for iid in _busiest(handle, top):
        n = handle.activity(iid)
        bid_px, bid_sz, bid_n, ask_px, ask_sz, ask_n = books.bbo(iid)
        if bid_sz or ask_sz:
            rows.append(_bbo_row(handle.symmap, iid, n, "mbo", bid_px, bid_sz, ask_px, ask_sz, books.stale(iid),
                                 bid_n, ask_n))
        if mbp is not None:
            b_px, b_sz, a_px, a_sz = mbp.bbo(iid)
            if b_sz or a_sz:
                rows.append(_bbo_row(handle.symmap, iid, n, "mbp", b_px, b_sz, a_px, a_sz, mbp.is_stale(iid)))
    return rows


def _output_info(opts: ReplayOptions, writer) -> dict | None:
    if writer is None:
        return None
    return {"path": os.fspath(opts.out), "format": type(writer).__name__.replace("Writer", "").lower(),
            "records": int(writer.records), "files": dict(getattr(writer, "files", {}) or {"main": opts.out}),
            "not_written": dict(getattr(writer, "skipped", {}) or {})}


def _symbols_info(handle: _Batches) -> dict | None:
    if handle.want is None:
        return None
    found = handle.symmap.ids_of(handle.want)
    return {"requested": sorted(handle.want), "found": dict(sorted(found.items())),
            "not_found": sorted(handle.want - set(found))}


def _run_writer(writer, fn):
    """fn() (the replay), then the output written out under its name, or removed when fn failed. A signal
    while the output is written out waits for it to be complete (:func:`_and_late_signal` reports it)."""
    ok = False
    try:
        r = fn()
        ok = True
        return r
    finally:
        if writer is not None:
            if ok:
                with BOUNDARY.hold():
                    writer.close()
            else:
                writer.abort()


def _and_late_signal(interrupted: str | None) -> str | None:
    """The replay's interruption, or the signal that arrived while its outputs were written out."""
    late = BOUNDARY.take()
    return interrupted if interrupted or late is None else _signal_name(late)


# ---- CME MDP 3.0 ---------------------------------------------------------------------------------
def _replay_mdp3(path: str, opts: ReplayOptions) -> dict:
    from feedhandler.books import BookSet
    from feedhandler.books import MbpBookSet
    from feedhandler.pipeline import Feed
    from feedhandler.protocols.mdp3 import REJECT_COUNTERS

    if opts.mode not in ("single", "pipelined"):
        raise ValueError(f"unknown mode {opts.mode!r} (single, pipelined)")
    if opts.batch < 1024:
        raise ValueError("batch must be at least 1024 records for mdp3 (a packet pair's records)")
    # the feed core: file -> CME packet framing (A/B ports share a channel) -> Mdp3Decoder, in nogil C
    kw = dict(opts.feed_kw)
    if opts.reorder_window is not None:
        kw["reorder_window"] = opts.reorder_window      # packets held for the other line's copy
    src = Feed(path, "mdp3", channels=opts.channels, ab_offset=opts.ab_offset, udp_port=opts.udp_port, **kw)
    dec = src.decoder
    books, mbp = BookSet(), MbpBookSet()
    symmap = SymbolMap()
    writer = open_writer(opts.out, opts.out_format, symbols=symmap, dataset="GLBX.MDP3") if opts.out else None
    handle = _Batches(opts, symmap, writer, book_rtypes=("mbo", "trade", "mbp_update"))
    handle.publish = _publish_hook(opts, books)
    t0 = time.perf_counter()
    interrupted = [None]

    def run():
        interrupted[0] = _pump(src, opts, handle, books, mbp, t0)
        st = src.stats()
        return {**st, "frames": st["framing"]["frames"], "tcp_frames": st["framing"]["tcp_frames"]}, src.channels()

    st, channels = _run_writer(writer, run)
    interrupted[0] = _and_late_signal(interrupted[0])
    elapsed = time.perf_counter() - t0
    c = dec.counters()
    counts = _summary_mod.mdp3_counts(c, REJECT_COUNTERS)
    base = _summary_mod.common(
        file=path, protocol="mdp3", fmt=st["format"], gzip=st["gzip"], mode=opts.mode,
        file_bytes=st["total_bytes"], packets=c["packets"], records_=handle.records,
        records_by_kind=_by_kind(handle), gaps=c["packet_gaps"], duplicates=c["packet_duplicate"],
        damage_stats=st, books=books, elapsed=elapsed, symbols=_symbols_info(handle),
        bbo=_book_rows(handle, opts.top, books, mbp), output=_output_info(opts, writer),
        interrupted=interrupted[0], **counts)
    section = _summary_mod.mdp3_section(c, st, dec, channels, mbp)
    section["_handle"] = handle
    return _summary_mod.build(base, section)


# ---- FIX and OUCH over TCP -----------------------------------------------------------------------
OE_EVENTS = {"N": "new", "A": "accepted", "P": "replace_request", "R": "replaced", "X": "cancel_request",
             "C": "canceled", "m": "modify_request", "M": "modified", "E": "executed", "B": "broken",
             "J": "rejected", "K": "cancel_reject", "S": "restated", "O": "other"}
OE_F_FROM_EXCHANGE, OE_F_LATENCY = 0x01, 0x08


def order_event_stats(recs: np.ndarray) -> dict:
    """Order events by kind and direction, and order->ack latency percentiles (ns) of a record batch."""
    oe = recs[recs["rtype"] == records.RTYPE["order_event"]]
    if not oe.shape[0]:
        return {"events": 0, "by_kind": {}, "from_client": 0, "from_exchange": 0, "latency_ns": None}
    e = records.view(oe, "order_event")
    kinds, counts = np.unique(e["event"], return_counts=True)
    by_kind = {OE_EVENTS.get(k.decode("latin-1"), k.decode("latin-1")): int(n) for k, n in zip(kinds, counts)}
    fx = (e["flags"] & OE_F_FROM_EXCHANGE) != 0
    lat = e["latency_ns"][(e["flags"] & OE_F_LATENCY) != 0].astype(np.int64)
    lat_info = None
    if lat.shape[0]:
        q = np.percentile(lat, [50, 90, 99], method="lower")
        lat_info = {"count": int(lat.shape[0]), "min": int(lat.min()), "p50": int(q[0]), "p90": int(q[1]),
                    "p99": int(q[2]), "max": int(lat.max())}
    return {"events": int(oe.shape[0]), "by_kind": dict(sorted(by_kind.items(), key=lambda kv: -kv[1])),
            "from_client": int((~fx).sum()), "from_exchange": int(fx.sum()), "latency_ns": lat_info}


class _OrderEventTally:
    """``order_event_stats`` over a stream of batches: the same dict as over their concatenation."""

    def __init__(self):
        self.kinds = np.zeros(256, np.int64)
        self.from_exchange = 0
        self.events = 0
        self.latencies: list[np.ndarray] = []

    def add(self, recs: np.ndarray) -> None:
        oe = recs[recs["rtype"] == records.RTYPE["order_event"]]
        if not oe.shape[0]:
            return
        e = records.view(oe, "order_event")
        self.events += int(oe.shape[0])
        self.kinds += np.bincount(e["event"].view(np.uint8), minlength=256)
        self.from_exchange += int(((e["flags"] & OE_F_FROM_EXCHANGE) != 0).sum())
        lat = e["latency_ns"][(e["flags"] & OE_F_LATENCY) != 0].astype(np.int64)
        if lat.shape[0]:
            self.latencies.append(lat)

    def stats(self) -> dict:
        if not self.events:
            return {"events": 0, "by_kind": {}, "from_client": 0, "from_exchange": 0, "latency_ns": None}
        by_kind = {}
        for k in np.flatnonzero(self.kinds).tolist():     # byte order, as np.unique's
            name = bytes([k]).decode("latin-1")
            by_kind[OE_EVENTS.get(name, name)] = int(self.kinds[k])
        lat_info = None
        if self.latencies:
            lat = np.concatenate(self.latencies)
            q = np.percentile(lat, [50, 90, 99], method="lower")
            lat_info = {"count": int(lat.shape[0]), "min": int(lat.min()), "p50": int(q[0]), "p90": int(q[1]),
                        "p99": int(q[2]), "max": int(lat.max())}
        return {"events": self.events, "by_kind": dict(sorted(by_kind.items(), key=lambda kv: -kv[1])),
                "from_client": self.events - self.from_exchange, "from_exchange": self.from_exchange,
                "latency_ns": lat_info}


class _TcpBatches(_Batches):
    """A FIX / OUCH replay's per-batch bookkeeping: the symbols the session decoder assigned (known
    once the capture is decoded, before the first batch) and the order-event statistics."""

    def __init__(self, feed, *args, **kw):
        super().__init__(*args, **kw)
        self.feed = feed
        self.order_events = _OrderEventTally()
        self.primed = False

    def prime(self) -> None:
        res = self.feed.framer.result
        if not self.primed and res is not None:
            self.symmap.by_id.update({int(i): s for s, i in res.get("symbols", {}).items()})
            if self.want is not None:
                # --symbols: the decoder's ids (no instrument-definition record need announce them)
                self.ids = np.array(sorted(self.symmap.ids_of(self.want).values()), dtype=np.uint32)
            self.primed = True

    def __call__(self, ticks: np.ndarray) -> None:
        self.prime()
        self.order_events.add(ticks)
        super().__call__(ticks)


def tcp_summary_parts(st: dict) -> tuple:
    """(messages, messages_by_type, gaps, duplicates, malformed_by_reason, truncated, sessions, extra) of
    a FIX / OUCH session decoder's statistics (``replay_stream``'s; ``feedhandler run``'s live decoder
    gives the same shape): the counters replay's summary prints for those protocols."""
    proto = st["protocol"]
    if proto == "fix":
        f = st["fix"]
        messages = int(f["messages"])
        by_type = {str(k): int(v) for k, v in f.get("by_msg_type", {}).items()}   # MsgType (35) -> messages
        from feedhandler.protocols.fix_msgtypes import msg_type_name

        type_names = {k: msg_type_name(k) for k in by_type}     # "D" -> "NewOrderSingle" (None: not in FIX)
        gaps, dups = int(f["seq_gaps"]), int(f["duplicates"])
        malformed = {k: int(f[k]) for k in ("bad_field", "garbled", "bad_body_length", "bad_checksum") if f[k]}
        truncated = int(f["truncated_tail"])
        sessions = None
        extra = {"message_type_names": type_names, "fix": {k: int(v) for k, v in f.items() if k != "by_msg_type"},
                 "seq_gap_messages": int(f["seq_gap_messages"]),
                 "bad_checksums": int(f["bad_checksum"]), "possdup": int(f["possdup"]),
                 "groups": st.get("groups"), "reference": st.get("reference", {})}
    else:
        so, o = st["soupbintcp"], st["ouch"]
        messages = int(o["messages"])
        by_type = {k: int(so[k]) for k in ("sequenced", "unsequenced", "server_heartbeats", "client_heartbeats",
                                           "login_requests", "login_accepted", "login_rejected",
                                           "end_of_session", "logout", "debug") if so.get(k)}
        gaps = sum(len(s.get("gaps", [])) for s in st["sessions"].values())
        dups = int(so["duplicates"])
        malformed = {k: int(v) for k, v in o["rejects"].items() if v}
        malformed.update({f"soupbintcp_{k}": int(so[k]) for k in ("bad_type", "bad_length") if so.get(k)})
        truncated = int(so["truncated"])
        sessions = {name: dict(s) for name, s in st["sessions"].items()}
        extra = {"soupbintcp": {k: int(v) for k, v in so.items()},
                 "ouch": {k: v for k, v in o.items()}, "gap_messages": int(so["gap_messages"]),
                 "logins": [list(x) for x in st.get("logins", [])]}
    return messages, by_type, gaps, dups, malformed, truncated, sessions, extra


#: peak memory of a FIX / OUCH replay per byte of (uncompressed) capture: the whole-capture decoders hold
#: the reassembled streams, their records and the per-message state at once (measured: a 245 MB FIX pcap of
#: 1 M messages peaked at 857 MB; ``run --file`` on it at 168 MB)
WHOLE_CAPTURE_BYTES_PER_BYTE = 3.5


def _mem_available() -> int | None:
    """MemAvailable of /proc/meminfo in bytes (None where there is none)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def whole_capture_warning(path: str, gzip: bool, available: int | None = None) -> str | None:
    """A FIX / OUCH replay decodes the whole capture at once: a warning when that would not fit in the
    memory available now (or ``available`` bytes), naming the bounded-memory alternative."""
    size = os.path.getsize(path)
    need = int(size * WHOLE_CAPTURE_BYTES_PER_BYTE * (4 if gzip else 1))   # gzip: ~4x smaller on disk
    avail = _mem_available() if available is None else available
    if avail is None or need <= avail:
        return None
    return (f"replay decodes a FIX/OUCH capture whole: about {need / 2**30:.1f} GiB for this one, "
            f"{avail / 2**30:.1f} GiB available; `feedhandler run --file {path} --pace max` (with --out) "
            "decodes it incrementally in bounded memory")


def _replay_tcp(path: str, opts: ReplayOptions, protocol: str) -> dict:
    """FIX and OUCH through the feed core: ``Feed(path, protocol)`` (TCP reassembly and the session
    decoder as its framer, ``framing.tcp.TcpSessionFramer``), then ``_pump`` in either mode, as ITCH
    and MDP3. The records come out once the capture is decoded (the decoders need whole-capture state)."""
    from feedhandler.books import BookSet
    from feedhandler.books import MbpBookSet
    from feedhandler.detect import container
    from feedhandler.pipeline import Feed

    if opts.mode not in ("single", "pipelined"):
        raise ValueError(f"unknown mode {opts.mode!r} (single, pipelined)")
    if opts.batch < 64:
        raise ValueError("batch must be at least 64 records")
    fmt, gz = container(path)
    big = whole_capture_warning(path, gz)
    if big and opts.on_warning is not None:
        opts.on_warning(big)
    t0 = time.perf_counter()
    feed = Feed(path, protocol, **opts.feed_kw)
    books, mbp = BookSet(), MbpBookSet()
    symmap = SymbolMap()
    # DBN dataset code: no Databento dataset describes a captured FIX or OUCH session, so name ours
    dataset = "FH.FIX" if protocol == "fix" else "FH.OUCH"
    writer = open_writer(opts.out, opts.out_format, symbols=symmap, dataset=dataset) if opts.out else None
    handle = _TcpBatches(feed, opts, symmap, writer, book_rtypes=("mbo", "trade", "mbp_update", "order_event"))

    interrupted = _and_late_signal(_run_writer(writer, lambda: _pump(feed, opts, handle, books, mbp, t0)))
    st = feed.framer.result
    if st is None:
        # interrupted while the capture was still being reassembled or decoded: no records, no summary
        raise Interrupted(signal.SIGTERM) if interrupted == "SIGTERM" else KeyboardInterrupt()
    handle.prime()          # (a capture without records)
    elapsed = time.perf_counter() - t0
    tcp = {k: v for k, v in st["tcp"].items()}
    oes = handle.order_events.stats()
    proto = st["protocol"]
    messages, by_type, gaps, dups, malformed, truncated, sessions, extra = tcp_summary_parts(st)
    base = _summary_mod.common(
        file=path, protocol=proto, fmt=fmt, gzip=gz, mode=opts.mode, file_bytes=os.path.getsize(path),
        packets=tcp.get("frames", 0), messages=messages, messages_by_type=by_type, records_=handle.records,
        records_by_kind=_by_kind(handle), gaps=gaps, duplicates=dups, malformed_by_reason=malformed, unknown=0,
        bad_length=0, truncated=truncated, damage_stats=tcp, books=books, elapsed=elapsed,
        symbols=_symbols_info(handle), bbo=_book_rows(handle, opts.top, books, mbp),
        output=_output_info(opts, writer), interrupted=interrupted)
    section = _summary_mod.tcp_section(st, tcp, extra, sessions, oes, mbp)
    section["_handle"] = handle
    out = _summary_mod.build(base, section)
    if big:
        out["warnings"] = list(out.get("warnings") or []) + [big]
    return out
