"""``feedhandler run --iface IFACE``: live capture -> framing -> decoder -> ring -> books.

Protocols: ITCH 5.0 (MoldUDP64), CME MDP 3.0, and the TCP sessions FIX and OUCH (SoupBinTCP): for those the
framer reassembles TCP and decodes the messages each packet completes right away
(``framing.tcp.TcpSessionFramer`` in incremental mode); the summary adds replay's session section
(``tcp_session``). A TCP session on an interface is captured with AF_PACKET (AF_XDP redirects UDP only).

Threads: the capture backend's native receive thread (LiveFeed: receive, MoldUDP64 sequencing, ITCH
decoding, ring publish), a consumer thread applying ring batches to the books (``BookSet.consume``, a
nogil loop entered by Python once per batch), and the main thread, which only handles signals, prints
the periodic status line from counter snapshots and stops everything in order:
stop the receive thread -> it frames what it holds, publishes and closes the ring -> the consumer
drains the ring and returns -> summary.

Multicast: every ``--group ADDR:PORT`` is joined on the interface (IP_ADD_MEMBERSHIP on a UDP socket
kept open for the run; the kernel sends the IGMP report). A/B arbitration needs no separate stage:
both lines carry the same MoldUDP64 session, so the framer sequences them as one channel; the first
copy of a message wins, the second is counted as a duplicate, a loss on one line is covered by the
other (its hole fills from the other line within the reorder window).
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from feedhandler.cliopts import (add_date, add_debug, add_udp_port, count_int, cpu_index, deprecated_alias,
                                 positive_int, seconds)
from feedhandler.errors import CaptureError, FeedhandlerError, OutputError

__all__ = ["LiveOptions", "run", "run_main", "latency_percentiles", "join_groups", "iface_ipv4", "EXIT_NO_IFACE"]

RING_CAPACITY = 1 << 17          # records
TEE_CAPACITY = 1 << 18           # records of the --ring tee (16 MiB of shared memory)
BATCH = 4096                     # records per consume batch (small: books follow the wire closely)
GATHER_US = 200.0                # with a per-batch Python callback: collect a batch this long at most
IDLE_SLEEP_US = 20.0             # consumer: sleep between looks at an empty ring (no spinning: the
                                 # receive thread and the NAPI kthread need the cores)
from feedhandler.exitcodes import EXIT_DATA_QUALITY, EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_TERMINATED, EXIT_USAGE  # noqa: E402

TCP_PROTOCOLS = ("fix", "ouch", "ouch42", "ouch50")   # sessions over TCP: reassembly + incremental decoding
EXIT_NO_IFACE = EXIT_USAGE       # the interface (or --file) named does not exist: usage / unreadable input
EXIT_BACKEND = EXIT_FAILURE      # privilege missing, backend unusable, capture failed while running


@dataclass
class LiveOptions:
    """What :func:`run` does; defaults match the CLI's."""

    iface: str
    capture: str | None = None                   # auto|afxdp|dpdk|afpacket (None: $FEEDHANDLER_CAPTURE/auto)
    protocol: str = "itch50"                     # itch50 | mdp3 | auto (--file: from the bytes; live: itch50)
    groups: Sequence[str] = ()                   # "ADDR:PORT" multicast groups to join
    snapshot_groups: Sequence[str] = ()          # mdp3: "ADDR:PORT" snapshot groups, joined only while
                                                 # an instrument is stale (market recovery)
    udp_port: int | None = None                  # keep only this destination port
    date: str | None = None                      # trading day (default: today, America/New_York; for --file
                                                 # the capture's: its time stamps, else its NASDAQ file name)
    reorder_window: int = 64                     # MoldUDP64 packets held while a hole waits
    duration: float | None = None                # s: stop after this long
    count: int | None = None                     # stop once this many messages were decoded
    until_end_of_session: bool = False           # stop once a MoldUDP64 end-of-session was applied
    idle_stop: float | None = None               # s: stop after this long without a new packet (once
                                                 # at least one arrived)
    status_interval: float = 1.0                 # s between status lines (0: none)
    status: Callable[[str], None] | None = None  # where status lines go (default: stderr)
    status_more: Callable[[], str] | None = None  # more counters for the status line (--publish's)
    on_batch: Callable[[np.ndarray], None] | None = None   # every enriched record batch (tests, outputs)
    on_ready: Callable[[], None] | None = None   # called once capture is running
    out: str | None = None                       # output file (.dbn/.parquet/.npy) as in replay
    top: int = 10
    source_kw: dict = field(default_factory=dict)
    rx_cpu: int | None = None                    # pin the receive thread (fh-rx) to this CPU
    book_cpu: int | None = None                  # pin the book consumer thread to this CPU
    file: str | None = None                      # capture file for the pcap backend (no interface)
    speed: float = 0.0                           # pcap backend: 0 = as fast as possible, 1 = recorded pace
    install_signals: bool = True                 # SIGINT/SIGTERM -> clean stop (main thread only)
    retransmit: str | None = None                # "HOST:PORT" of a MoldUDP64 retransmission server
    stop_event: threading.Event | None = None    # set by the caller to stop the run
    books: object | None = None                  # an feedhandler.books.mbo.BookSet to fill (default: a new one)
    apply_books: bool = True                     # False: records are released unread (capture benchmark)
    sequencing: bool = True                      # False: no MoldUDP64 sequencing (arrival order)
    watch: object | None = None                  # a feedhandler.serve.BookSampler (--serve): samples the books
                                                 # on the book thread after each batch, at its own few Hz
    latency: bool = False                        # run to completion: books applied on the receive thread,
                                                 # busy polling (a core at 100 %): feedhandler.core.latency
    latency_spin_us: float = 0.0                 # latency mode: > 0 busy-polls only for this long after the
                                                 # last packet, then waits in the source (0: always spins)
    latency_wire: str = "ts_recv"                # the field wire -> book latency starts from ("ts_event":
                                                 # a sender stamping its clock in the messages, the bench)
    tcp_kw: dict = field(default_factory=dict)   # fix / ouch: symbols, dictionary_dir, max_ooo_segments,
                                                 # max_ooo_bytes (framing.tcp.live_session_framer)


# ---- latency --------------------------------------------------------------------------------------
def latency_percentiles(hist: np.ndarray, qs=(50, 90, 99, 99.9)) -> dict:
    """Percentiles (ns, bucket lower bounds: 12.5 % resolution) of a log-linear latency histogram."""
    from feedhandler.capture.live._live import lat_bucket_lower_ns
    total = int(hist.sum())
    out = {"count": total}
    if total == 0:
        return out
    cum = np.cumsum(hist)
    for q in qs:
        b = int(np.searchsorted(cum, total * q / 100.0, side="left"))
        out[f"p{q:g}"] = int(lat_bucket_lower_ns(b))
    return out


class _BookLatency:
    """Wire (ts_recv) -> book histogram. The live consumer fills ``hist`` natively inside
    ``BookSet.consume(latency_hist=...)``; :meth:`add` is the numpy reference of the same
    computation (tests)."""

    def __init__(self):
        from feedhandler.capture.live._live import LATENCY_BUCKETS
        self.hist = np.zeros(LATENCY_BUCKETS, np.uint64)

    def add(self, batch: np.ndarray, now: int | None = None) -> None:
        from feedhandler import records
        from feedhandler.capture.live._live import lat_buckets_of
        now = time.time_ns() if now is None else now
        rt = batch["rtype"]
        raw = batch["raw"]
        for rtype, dt_name in ((records.RTYPE["mbo"], "mbo"), (records.RTYPE["trade"], "trade")):
            sel = rt == rtype
            if not sel.any():
                continue
            off = records.DTYPES[dt_name].fields["ts_recv"][1]
            ts = raw[sel][:, off:off + 8].copy().view("<u8").ravel()
            ts = ts[(ts > 0) & (ts <= now)]
            if ts.shape[0]:
                b = lat_buckets_of(np.uint64(now) - ts)
                np.add.at(self.hist, np.minimum(b, self.hist.shape[0] - 1), 1)


# ---- multicast ------------------------------------------------------------------------------------
def iface_ipv4(iface: str) -> str:
    """The interface's IPv4 address (SIOCGIFADDR)."""
    import fcntl
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        r = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", iface.encode()[:15]))
        return socket.inet_ntoa(r[20:24])
    finally:
        s.close()


def _parse_group(g: str) -> tuple[str, int | None]:
    host, _, port = g.rpartition(":") if ":" in g else (g, "", "")
    try:
        addr = ipaddress.IPv4Address(host)
        n = int(port) if port else None
    except ValueError:
        raise ValueError(f"group {g!r} is not ADDR or ADDR:PORT (an IPv4 address, a port 1..65535)") from None
    if n is not None and not 1 <= n <= 65535:
        raise ValueError(f"group {g!r}: {n} is not a UDP port (1..65535)")
    return str(addr), n


def join_groups(iface: str, groups: Sequence[str]) -> list[socket.socket]:
    """Join each multicast group on ``iface`` (the kernel sends IGMP membership reports); keep the
    returned sockets open for as long as the membership must last."""
    socks = []
    ifindex = socket.if_nametoindex(iface)
    for g in groups:
        addr, _ = _parse_group(g)
        if not ipaddress.IPv4Address(addr).is_multicast:
            continue
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        try:
            # struct ip_mreqn {imr_multiaddr, imr_address, imr_ifindex}
            mreq = socket.inet_aton(addr) + socket.inet_aton("0.0.0.0") + struct.pack("@i", ifindex)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
            # the socket itself must not queue the feed: a tiny receive buffer, never read
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
        except OSError:
            s.close()
            for x in socks:
                x.close()
            raise
        socks.append(s)
    return socks


# ---- the run --------------------------------------------------------------------------------------
def run(opts: LiveOptions) -> dict:
    """Run the live pipeline until stopped (signal, ``duration``, ``count``, ``idle_stop`` or
    ``stop_event``) and return the summary.

    Raises
    ------
    feedhandler.capture.live.BackendUnavailable
        The chosen backend cannot run (reason in the message).
    feedhandler.errors.CaptureError
        The interface cannot be opened (missing, no privilege).
    """
    from feedhandler.books import BookSet
    from feedhandler.capture import live as backends
    from feedhandler.capture.live._live import LiveFeed
    from feedhandler.ring import Ring

    protocol = _protocol(opts)
    if opts.latency and opts.book_cpu is not None:
        raise ValueError("--book-cpu: the latency mode applies the books on the receive thread (--rx-cpu)")
    requested = opts.capture
    if opts.iface and opts.file and (requested or "").lower() != "pcap":
        raise ValueError("give --iface (capture live) or --file (replay a capture), not both")
    if not opts.iface and opts.file and (requested or os.environ.get(backends.ENV) or "auto") == "auto":
        requested = "pcap"      # no interface: replay the file (nothing else can run)
    if protocol in TCP_PROTOCOLS and opts.iface:
        # the AF_XDP program redirects the feed's UDP datagrams only: a TCP session is captured with
        # AF_PACKET (or DPDK, which takes every frame)
        want = (requested or os.environ.get(backends.ENV) or "auto").strip().lower()
        if want == "afxdp":
            raise ValueError(f"--capture afxdp redirects UDP only: {protocol} runs over TCP (use afpacket)")
        if want == "auto":
            requested = "afpacket"
    sel = backends.select(requested, opts.iface, pcap_file=opts.file)
    replaying = sel.backend == "pcap"
    if replaying and opts.retransmit:
        raise ValueError("--retransmit needs a live interface: a capture file has nothing to request from")
    snap_groups = [_parse_group(g) for g in opts.snapshot_groups]
    if snap_groups and protocol != "mdp3":
        raise ValueError("--snapshot-group is CME MDP 3.0's market recovery: give --protocol mdp3")
    if any(p is None for _, p in snap_groups):
        raise ValueError("--snapshot-group needs ADDR:PORT (the port tells the snapshot channel)")
    groups = [_parse_group(g) for g in opts.groups] + snap_groups
    ports = {p for _, p in groups if p}
    udp_port = opts.udp_port if opts.udp_port is not None else (ports.pop() if len(ports) == 1 else None)
    # retransmitted packets come unicast to our own address: no destination filter then
    group = groups[0][0] if len(groups) == 1 and not opts.retransmit else None
    source_kw = dict(opts.source_kw)
    if sel.backend == "afxdp":
        # the XDP program redirects only the feed: its ports and (multicast) destinations
        source_kw.setdefault("ports", sorted({p for _, p in groups if p} | ({udp_port} if udp_port else set())))
        dsts = [a for a, _ in groups]
        if dsts and opts.retransmit:
            dsts.append(iface_ipv4(opts.iface))
        source_kw.setdefault("groups", dsts)
    if replaying:
        source_kw = {"file": opts.file, "speed": opts.speed}
    if opts.latency:
        from feedhandler.core import latency as latency_mode
        source_kw = latency_mode.source_options(sel.backend, source_kw)
    midnight_ns, date_source = _trading_day(opts, replaying, protocol)
    source = backends.open_source(sel.backend, opts.iface, **source_kw)
    where = opts.iface or opts.file
    socks = []
    feed = None
    retx = None
    old: dict = {}      # the signal handlers run() replaced: restored once its outputs are closed
    try:
        socks = [] if replaying else join_groups(opts.iface, opts.groups)
        snap_ports = sorted({p for _, p in snap_groups})
        mdp3_kw = {}
        if snap_ports:
            from feedhandler.protocols.mdp3.recovery import channel_plan
            incremental = [p for _, p in groups[:len(groups) - len(snap_groups)] if p]
            mdp3_kw = {"snapshot_ports": snap_ports, "channels": channel_plan(incremental, snap_ports)}
        if protocol in TCP_PROTOCOLS:
            # FIX / OUCH: TCP reassembly and the incremental session decoder (framing.tcp.TcpSessionFramer)
            feed = LiveFeed(source, protocol, midnight_ns=midnight_ns, tcp_kw=dict(opts.tcp_kw))
        else:
            feed = LiveFeed(source, protocol, midnight_ns=midnight_ns, reorder_window=opts.reorder_window,
                            udp_port=udp_port, group=group, sequencing=opts.sequencing, **mdp3_kw)
        recovery = None
        if snap_ports and replaying:
            feed.framer.open_snapshots(True)        # a file holds what it holds: nothing to join
        elif snap_ports:
            from feedhandler.protocols.mdp3.recovery import SnapshotRecovery
            recovery = SnapshotRecovery(list(opts.snapshot_groups), feed.decoder, feed.framer,
                                        join=lambda g: join_groups(opts.iface, g),
                                        leave=lambda socks_: [x.close() for x in socks_])
        books = opts.books if opts.books is not None else BookSet()
        mbp = None
        tally = None
        if protocol in TCP_PROTOCOLS:
            from feedhandler.replay import _OrderEventTally
            tally = _OrderEventTally()      # order events by kind, order->ack latency (as replay's summary)
        if protocol in ("mdp3", "fix"):     # price-level books beside the order books (CME; FIX MBP entries)
            from feedhandler.books import MbpBookSet
            mbp = MbpBookSet()
        # latency mode: the ring is the fan-out (drop: a slow reader never holds up the books)
        ring = Ring(RING_CAPACITY, overflow="drop" if opts.latency else "block")
        book_lat = _BookLatency()
        writer = None
        from feedhandler.output import SymbolMap
        symmap = SymbolMap()       # learned from the records when they enter Python (--out, on_batch)
        if opts.out:
            from feedhandler.output import open_writer
            dataset = {"mdp3": "GLBX.MDP3", "fix": "FH.FIX"}.get(protocol, "FH.OUCH" if protocol in TCP_PROTOCOLS
                                                                     else None)
            writer = open_writer(opts.out, None, symbols=symmap, date=_day_of(midnight_ns),
                                 **({"dataset": dataset} if dataset else {}))
        consumed = [0]
        consumer_error: list[BaseException] = []
        # Python is entered per batch only when something needs the records there (retransmission
        # requests, the caller's on_batch, --out); the wire->book histogram is filled natively.
        need_batches = (bool(opts.retransmit) or opts.on_batch is not None or writer is not None
                        or (mbp is not None and not opts.latency)     # latency: MBP applied on the receive thread
                        or opts.watch is not None or tally is not None)
        watch = opts.watch
        if watch is not None:
            from feedhandler.serve.feeds import LiveCounters
            watch.counters = LiveCounters(feed, source, ring, book_lat.hist, not (replaying and not opts.speed))
            if replaying:
                symmap.by_id.update(_file_symbols(opts.file))

        def on_batch(batch):
            if mbp is not None and not opts.latency:
                mbp.apply(batch)
            if tally is not None:
                tally.add(batch)
            if watch is not None:
                if not replaying:
                    symmap.update(batch)
                watch.maybe_sample(books, consumed[0] + batch.shape[0], symmap.by_id)
            if retx is not None:
                retx.handle_batch(batch)
            if opts.on_batch is not None:
                opts.on_batch(batch)
            if writer is not None:
                symmap.update(batch)
                writer.write(batch)

        def drain_only():
            # capture + parse benchmark mode: records are released unread
            while not ring.finished:
                b = ring.read(1 << 16, timeout=0.05)
                if b.shape[0]:
                    consumed[0] += b.shape[0]
                    ring.release(b.shape[0])

        def consume():
            try:
                if opts.book_cpu is not None:
                    os.sched_setaffinity(0, {opts.book_cpu})     # this thread only (Linux)
                if not opts.apply_books:
                    drain_only()
                    return
                consumed[0] = books.consume(ring, BATCH, on_batch if need_batches else None,
                                            latency_hist=book_lat.hist,
                                            gather_us=GATHER_US if need_batches else 0.0,
                                            idle_sleep_us=IDLE_SLEEP_US, latency_wire=opts.latency_wire)
            except BaseException as e:      # reported by the main thread after the stop
                consumer_error.append(e)
                feed.stop()
                while not ring.finished:    # let the producer finish and close the ring
                    b = ring.read(1 << 16, timeout=0.05)
                    if b.shape[0]:
                        ring.release(b.shape[0])

        if opts.retransmit:
            from feedhandler.retransmit import RetransmitRequester
            retx = RetransmitRequester(opts.retransmit, bind_port=udp_port, bind_addr=iface_ipv4(opts.iface))
        stop = opts.stop_event or threading.Event()
        signalled = []
        if opts.install_signals and threading.current_thread() is threading.main_thread():
            def on_signal(signum, frame):
                # only a list append: no lock. The handler runs on the main thread between two bytecodes,
                # possibly inside stop.wait() holding the event's lock; stop.set() here deadlocked a
                # `run --file` in CI (main thread blocked in Event.set called from within Event.wait).
                # The loop below wakes every 20 ms and sees the signal.
                signalled.append(signum)
            for s in (signal.SIGINT, signal.SIGTERM):
                old[s] = signal.signal(s, on_signal)
        t0 = time.monotonic()
        fanout = None
        if opts.latency:
            # run to completion: no book thread; a fan-out reader only when something reads records
            fanout = latency_mode.FanoutReader(ring, on_batch) if need_batches else None
            feed.start(ring if fanout is not None else None, -1 if opts.rx_cpu is None else opts.rx_cpu,
                       latency=True, sinks=latency_mode.book_sinks(books if opts.apply_books else None, mbp),
                       wire=opts.latency_wire, spin_us=opts.latency_spin_us)
            cons = fanout.thread if fanout is not None else None
        else:
            feed.start(ring, -1 if opts.rx_cpu is None else opts.rx_cpu)
            cons = threading.Thread(target=consume, name="fh-books", daemon=True)
        if cons is not None:
            cons.start()
        if retx is not None:
            retx.start()
        if opts.on_ready is not None:
            opts.on_ready()
        emit = opts.status or (lambda line: print(line, file=sys.stderr, flush=True))
        last_status = t0
        last_pkts, last_change, first_change = 0, t0, None
        try:
            while not stop.is_set() and not signalled:
                stop.wait(0.02)
                if signalled:
                    break
                now = time.monotonic()
                st = feed.stats()
                if st["packets"] != last_pkts:
                    if not last_pkts:
                        first_change = now
                    last_pkts, last_change = st["packets"], now
                if opts.duration is not None and now - t0 >= opts.duration:
                    break
                if opts.count is not None and st["messages"] >= opts.count:
                    break
                if opts.until_end_of_session and st["resets"] >= 1:
                    break
                if opts.idle_stop is not None and last_pkts and now - last_change >= opts.idle_stop:
                    break
                if replaying and source.eof:
                    break       # every frame of the file went through the framer; stop() drains the rest
                if consumer_error or (fanout is not None and fanout.error is not None):
                    break
                if recovery is not None:
                    recovery.poll()
                if opts.status_interval and now - last_status >= opts.status_interval:
                    last_status = now
                    line = _status_line(sel.backend, where, st, source.stats(), ring.stats(), now - t0)
                    emit(line + "  " + opts.status_more() if opts.status_more is not None else line)
        finally:
            feed.stop()
            if cons is not None:
                cons.join()
            feed.join()
            joined_at_end = recovery is not None and recovery.joined
            if recovery is not None:
                recovery.close()
            if retx is not None:
                retx.stop()
        elapsed = time.monotonic() - t0
        if opts.watch is not None and opts.apply_books and not consumer_error:
            opts.watch.finish(books, consumed[0], symmap.by_id)
        if writer is not None:
            if consumer_error or (fanout is not None and fanout.error is not None):
                writer.abort()      # the run failed (a full disk, a book error): no output under its name
            else:
                if protocol in TCP_PROTOCOLS:
                    # the session decoder's symbol ids (FIX reference data, or first appearance), as replay's
                    res = feed.framer.result or feed.framer.progress() or {}
                    symmap.by_id.update({int(i): s for s, i in res.get("symbols", {}).items()})
                writer.close()
        if consumer_error:
            raise consumer_error[0]
        if fanout is not None and fanout.error is not None:
            raise fanout.error
        if opts.latency:
            consumed[0] = int(feed.producer_stats()["applied"])
            book_lat.hist = feed.book_latency_hist("message")
        summary = _summary(opts, sel, feed, source, ring, books, book_lat, elapsed, consumed[0])
        summary["protocol"] = protocol
        if opts.latency:
            summary["latency_mode"] = latency_mode.summary(feed, latency_percentiles, opts.latency_spin_us)
        if protocol in TCP_PROTOCOLS:
            _tcp_summary(summary, feed, tally, mbp, symmap)
        elif mbp is not None:
            summary["mbp_books"] = len(mbp.instruments())
            summary["channels"] = {str(p): ch for p, ch in sorted(feed.channels().items())}
            # the decoder's counters and schema versions, as in replay's mdp3 section
            summary["mdp3"] = {k: int(v) for k, v in feed.decoder.counters().items()}
            summary["schema_versions"] = {str(v): u for v, u in sorted(feed.decoder.schema_usage().items())}
        if opts.apply_books:
            # (FIX / OUCH: the symbols come from the session decoder, never from an ITCH stock directory)
            summary["bbo"] = _bbo_rows(books, symmap, opts, replaying and protocol not in TCP_PROTOCOLS, opts.top)
        if retx is not None:
            summary["retransmission"] = retx.stats()
        if recovery is not None:
            summary["snapshot_recovery"] = recovery.summary(joined_at_end)
        summary["signal"] = signal.Signals(signalled[0]).name if signalled else None
        summary["date"] = str(_day_of(midnight_ns)) if midnight_ns else None
        summary["date_source"] = date_source
        # receive rate while packets were arriving (monitor granularity 20 ms: for benchmarks, send >= 1 s)
        active = (last_change - first_change) if first_change is not None else 0.0
        summary["active_s"] = round(active, 6)
        summary["rx_pps"] = round(summary["packets"] / active, 1) if active > 0 else None
        summary["rx_msgs_per_s"] = round(summary["messages"] / active, 1) if active > 0 else None
        return summary
    finally:
        # (only now: a second SIGINT / SIGTERM while the output is being closed is counted, not obeyed, as
        # in replay: it would lose the output, or leave its temporary file behind)
        for sig, h in old.items():
            signal.signal(sig, h)
        for s in socks:
            s.close()
        if feed is not None:
            del feed
        source.close()


def _tcp_summary(summary: dict, feed, tally, mbp, symmap) -> None:
    """FIX / OUCH: the session section of replay's summary (TCP reassembly, sessions, messages by type,
    order events, sequencing and damage counters) from the decoder's final statistics."""
    from feedhandler import summary as _summary_mod
    from feedhandler.replay import tcp_summary_parts

    st = feed.framer.result or feed.framer.progress()
    symmap.by_id.update({int(i): s for s, i in st.get("symbols", {}).items()})
    summary["protocol"] = st["protocol"]        # "ouch": the version told from the first messages
    messages, by_type, gaps, dups, malformed, truncated, sessions, extra = tcp_summary_parts(st)
    tcp = dict(st["tcp"])
    section = _summary_mod.tcp_section(st, tcp, extra, sessions, tally.stats(),
                                       mbp if mbp is not None else _NoMbp())
    section["session_protocol"] = st["protocol"]
    section["messages_by_type"] = by_type
    section["malformed_by_reason"] = malformed
    section["malformed"] = int(sum(malformed.values()))
    section["truncated"] = truncated
    section["live"] = st.get("live", {})
    summary["tcp_session"] = section
    summary["messages"] = messages
    summary["gaps"] = gaps
    summary["duplicates"] = dups
    summary["session_sessions"] = sessions


class _NoMbp:
    @staticmethod
    def instruments():
        return []


def _tcp_lines(s: dict) -> list[str]:
    """The text of replay's FIX / OUCH section, for a run."""
    from feedhandler.summary import _n, tcp_session_lines
    t = s["tcp_session"]
    lines = tcp_session_lines(t, s["gaps"], s["duplicates"], sequencing="session sequencing")
    if t["session_protocol"] == "fix":
        lines.append(f"  MBP books: {_n(t['mbp_books'])} instruments")
    return lines


def _day_of(midnight_ns: int | None):
    if not midnight_ns:
        return None
    import datetime as _dt
    from zoneinfo import ZoneInfo
    return _dt.datetime.fromtimestamp(midnight_ns / 1e9, ZoneInfo("America/New_York")).date()


def _protocol(opts: LiveOptions) -> str:
    """The protocol to decode: ``opts.protocol``, or for "auto" the capture file's (from its bytes,
    :func:`feedhandler.detect.detect`) or ITCH 5.0 on a live interface."""
    p = (opts.protocol or "auto").lower()
    if p == "itch":
        p = "itch50"
    if p == "auto":
        if not opts.file:
            return "itch50"
        from feedhandler.detect import detect
        p = detect(opts.file)
    if p not in ("itch50", "mdp3") + TCP_PROTOCOLS:
        raise ValueError(f"run decodes itch50, mdp3, fix and ouch (ouch42, ouch50), not {p}")
    if p in TCP_PROTOCOLS and opts.retransmit:
        raise ValueError("--retransmit is MoldUDP64's: a TCP session (FIX, OUCH) has none")
    if p == "mdp3" and opts.retransmit:
        raise ValueError("--retransmit is MoldUDP64's: CME MDP 3.0 has no UDP retransmission")
    if p == "mdp3" and not opts.sequencing:
        raise ValueError("--no-sequencing applies to itch50 (MoldUDP64) only")
    return p


def _trading_day(opts: LiveOptions, replaying: bool, protocol: str = "itch50") -> tuple[int, str | None]:
    """(midnight_ns, where the day came from) of the run: ``--date``; for a capture file its first time
    stamp, else its NASDAQ file name (MMDDYYYY.NASDAQ_ITCH50), else unknown (0: outputs are refused);
    live, today in New York."""
    from feedhandler.pipeline import Feed, midnight_ns_for_date, midnight_ns_for_ts
    from feedhandler.trading_day import check_date, date_from_filename, require_day

    if opts.date:
        return midnight_ns_for_date(check_date(opts.date)), "--date"
    if not replaying:
        return midnight_ns_for_ts(time.time_ns()), "today"
    m = int(Feed(opts.file, protocol).midnight_ns or 0)     # reads the first batch only
    if m:
        return m, "capture time stamps"
    named = date_from_filename(opts.file)
    if named is not None:
        return midnight_ns_for_date(named), "file name"
    require_day(opts.file, False, bool(opts.out))
    return 0, None


def _status_line(backend, iface, st, src, ring, elapsed) -> str:
    drops = src.get("kernel_drops", 0) + src.get("xdp_drops", 0) + src.get("rx_dropped", 0)
    return (f"[{elapsed:7.1f}s] {backend} {iface}: pkts {src.get('packets', st['packets']):,} "
            f"msgs {st['messages']:,} recs {st['records']:,} gaps {st['gaps']} lost {st['lost_messages']} "
            f"dups {st['duplicates']} drops nic/kernel {drops} ring-waits {ring.get('producer_waits', 0)}")


_NO_WIRE_CLOCK = "file replay as fast as possible: ts_recv is the capture's clock (--pace to measure)"


def _file_symbols(path: str, limit: int = 1 << 20) -> dict[int, str]:
    """{instrument_id: symbol} of the stock directory at the start of a capture file (ITCH sends it
    before the open): reads until the first book record after the directory, at most ``limit`` records."""
    from feedhandler import frames, records
    from feedhandler.pipeline import Feed

    feed, batch, out, n_read = Feed(path, "itch50"), records.empty(1 << 15), {}, 0
    book = (records.RTYPE["mbo"], records.RTYPE["trade"])
    while n_read < limit and (n := feed.read(batch)):
        n_read += n
        out.update(frames.symbols_of(batch[:n]))
        if out and np.isin(batch["rtype"][:n], book).any():
            break
    return out


def _bbo_rows(books, symmap, opts: LiveOptions, replaying: bool, top: int) -> list[dict]:
    """The BBO table rows of ``replay`` for the books of a run: the ``top`` books with the most live
    orders (a run keeps no per-instrument record counts on its hot path: ``records`` is None).
    Symbols: from the records when they entered Python (``--out``), else, for a capture file, from
    its stock directory; a live join after the directory was sent has none ("?")."""
    from feedhandler.replay import _bbo_row

    summ = books.bbo_all()
    if not summ.shape[0] or top <= 0:
        return []
    summ = summ[np.argsort(-summ["live_orders"].astype(np.int64), kind="stable")]
    summ = summ[(summ["bid_sz"] > 0) | (summ["ask_sz"] > 0)][:top]
    if replaying and opts.file and not symmap.by_id and summ.shape[0]:
        symmap.by_id.update(_file_symbols(opts.file))
    rows = []
    for r in summ:
        row = _bbo_row(symmap, int(r["instrument_id"]), 0, "mbo", r["bid_px"], r["bid_sz"], r["ask_px"],
                       r["ask_sz"], bool(r["stale"]))
        row["records"] = None
        row["live_orders"] = int(r["live_orders"])
        rows.append(row)
    return rows


def _no_latency_reason(opts: LiveOptions, st: dict, replaying: bool) -> str:
    """Why a run measured no wire->book latency (it is measured on book records: MBO and trades)."""
    if not st["records"]:
        return "no records arrived"
    why = (f"none of the {st['records']:,} records was an order-book record (MBO or trade): latency is "
           "measured to book changes")
    if replaying and opts.file and opts.speed:
        lead = _first_book_lead_s(opts.file)
        if lead is not None:
            why += (f"; in this capture they start {lead:,.0f} s (capture time) after its first packet, "
                    f"{lead / opts.speed:,.0f} s at --pace {opts.speed:g}: run longer (--duration) or pace faster")
    return why


def _ts_recv(ticks: np.ndarray) -> np.ndarray:
    """ts_recv of each record (its offset depends on the kind; 0 for kinds without one)."""
    from feedhandler import records

    out = np.zeros(ticks.shape[0], np.uint64)
    for rt in np.unique(ticks["rtype"]).tolist():
        kind = records.RTYPE_NAME.get(rt)
        if kind and "ts_recv" in records.DTYPES[kind].names:
            sel = ticks["rtype"] == rt
            out[sel] = ticks[sel].view(records.DTYPES[kind])["ts_recv"]
    return out


def _first_book_lead_s(path: str, limit: int = 1 << 22) -> float | None:
    """Capture seconds (``ts_recv``: what ``--pace`` follows) from a file's first record to its first
    book record (None: none in the first ``limit`` records)."""
    from feedhandler import records
    from feedhandler.pipeline import Feed

    feed, batch, first, n_read = Feed(path, "itch50"), records.empty(1 << 16), None, 0
    book = (records.RTYPE["mbo"], records.RTYPE["trade"])
    while n_read < limit and (n := feed.read(batch)):
        n_read += n
        b = batch[:n]
        ts = _ts_recv(b)
        if first is None and (ts > 0).any():
            first = int(ts[ts > 0][0])
        hit = np.flatnonzero(np.isin(b["rtype"], book))
        if hit.size and first is not None:
            return max(int(ts[hit[0]]) - first, 0) / 1e9
    return None


def _latency(opts, sel, feed, book_lat, st) -> dict:
    if sel.backend == "pcap" and not opts.speed:
        return {"wire_to_ring": {"count": 0, "not_measured": _NO_WIRE_CLOCK},
                "wire_to_book": {"count": 0, "not_measured": _NO_WIRE_CLOCK}}
    lat = {"wire_to_ring": latency_percentiles(feed.latency_hist()),
           "wire_to_book": latency_percentiles(book_lat.hist)}
    if not lat["wire_to_ring"].get("count"):
        why = _no_latency_reason(opts, st, sel.backend == "pcap")
        for v in lat.values():
            if not v.get("count"):
                v["not_measured"] = why
    return lat


def _summary(opts, sel, feed, source, ring, books, book_lat, elapsed, consumed) -> dict:
    """The run's summary: its live head (backend, clock, drops, latency) and the counters every
    summary has, from the same builders as replay's (feedhandler.summary)."""
    from feedhandler import summary
    st = feed.stats()
    src = source.stats()
    rows = []
    summ = books.bbo_all()
    ts_sw, ts_hw, ts_user = src.get("ts_sw", 0), src.get("ts_hw", 0), src.get("ts_none", src.get("ts_user", 0))
    clock = "hardware" if ts_hw else "software" if ts_sw else "user" if ts_user else None
    return {
        "iface": opts.iface,
        "file": opts.file if sel.backend == "pcap" else None,
        "backend": sel.backend,
        "backend_skipped": sel.skipped,
        "groups": list(opts.groups),
        "ts_recv_clock": clock,
        "ts_recv_counts": {"hardware": ts_hw, "software": ts_sw, "user": ts_user},
        "elapsed_s": round(elapsed, 6),
        "capture": src,
        "packets": st["packets"],
        "moldudp64_packets": st["moldudp64_packets"],
        "messages": st["messages"],
        "records": st["records"],
        "records_consumed": consumed,
        "sessions": st["sessions"],
        "gaps": st["gaps"],
        "gaps_filled": st["gaps_filled"],
        "lost_messages": st["lost_messages"],
        "missing_ranges": [list(r) for r in feed.missing_ranges()],
        "duplicates": st["duplicates"],
        "out_of_order": st["out_of_order"],
        "drops": {"kernel": src.get("kernel_drops", 0), "xdp": src.get("xdp_drops", 0),
                  "nic": src.get("rx_dropped", 0), "ring": ring.stats().get("dropped", 0), "ours": 0},
        "framing": st,
        # an unpaced file replay keeps the capture's stamps: wire -> now would be the capture's age
        "latency_ns": _latency(opts, sel, feed, book_lat, st),
        **summary.book_counts(books),
        "bbo_rows": int(summ.shape[0]),
        "warnings": summary.sequencing_warnings(st, opts.sequencing),
        # the capture file's damage (pcap backend): what, where, what was skipped
        **summary.file_damage(src),
    }


def format_summary(s: dict) -> str:
    from feedhandler.summary import book_errors_text, file_damage_lines, format_bbo_table, printable

    lw, lb = s["latency_ns"]["wire_to_ring"], s["latency_ns"]["wire_to_book"]

    def pct(d):
        if not d.get("count"):
            return "-"
        return " ".join(f"{k} {d[k] / 1e3:.1f}us" for k in ("p50", "p90", "p99", "p99.9") if k in d)

    day = (f", trading day {s['date']} (from the {s['date_source']})" if s.get("date") else
           ", trading day unknown" if s.get("file") else "")
    lines = [
        f"{s['iface'] or s.get('file')}: {s['backend']} for {s['elapsed_s']:.1f} s, ts_recv clock "
        f"{s['ts_recv_clock'] or '-'}{day}",
        f"  packets {s['packets']:,}"
        + (f" (MoldUDP64 {s['moldudp64_packets']:,})" if s.get("protocol", "itch50") == "itch50" else "")
        + f", messages {s['messages']:,}, "
        f"records {s['records']:,}; sessions {', '.join(map(printable, s['sessions'])) or '-'}",
        f"  sequencing: gaps {s['gaps']} (filled {s['gaps_filled']}, lost {s['lost_messages']} messages), "
        f"duplicates {s['duplicates']}, out of order {s['out_of_order']}",
        "  drops: " + ", ".join(f"{k} {v}" for k, v in s["drops"].items()),
        (f"  latency: not measured ({lw['not_measured']})" if lw.get("not_measured") else
         f"  latency wire->ring: {pct(lw)}; wire->book: {pct(lb)} (host clock; medians and p99 matter here)"),
        f"  books: {s['books']} instruments, {s['live_orders']:,} live orders"
        + book_errors_text(s.get("book_counters")),
    ]
    lm = s.get("latency_mode")
    if lm:
        lines.append(f"  latency mode: wire->book per packet {pct(lm['wire_to_book_per_packet'])}; "
                     f"{lm['messages_per_packet'] or 0:g} messages a packet; fan-out drops {lm['fanout_dropped']:,} "
                     + ("(receive thread busy-polls: one core at 100 %)" if not lm.get("spin_us") else
                        f"(busy-polls {lm['spin_us']:g} us after a packet, then waits: {lm['idle_waits']:,} waits)"))
    rec = s.get("snapshot_recovery")
    if rec:
        lines.append(f"  snapshot recovery ({', '.join(rec['groups'])}): joined {rec['joins']}x for {rec['joined_s']:.2f} s, "
                     f"left {rec['leaves']}x{' (STILL JOINED at the end)' if rec['joined_at_end'] else ''}; "
                     f"recovered MBP {rec['recoveries']}, MBO {rec['mbo_recoveries']}; snapshot packets taken "
                     f"{rec['snapshot_packets']:,}, skipped {rec['snapshot_skipped']:,} (not joined); "
                     f"stale {rec['stale_at_end']}; joined late for {rec.get('late_joins', 0):,} instruments "
                     "(first RptSeq > 1)")
    if s.get("tcp_session"):
        lines += _tcp_lines(s)
    lines += [f"  WARNING: {w}" for w in s.get("warnings") or ()]
    lines += file_damage_lines(s)
    cap = s.get("capture", {})
    if "rx_timestamp" in cap:     # AF_XDP: hardware stamps from the XDP RX metadata, or why not
        if cap["rx_timestamp"]:
            lines.append(f"  XDP RX metadata timestamps: on; {cap.get('ts_hw', 0):,} frames stamped by the NIC, "
                         f"{cap.get('meta_no_stamp', 0):,} without a stamp (user clock)")
        else:
            lines.append(f"  XDP RX metadata timestamps: off ({cap.get('rx_timestamp_reason') or 'not asked'})")
    for k, v in s.get("backend_skipped", {}).items():
        lines.append(f"  ({k} not used: {v})")
    lines += format_bbo_table(s.get("bbo") or [])
    return "\n".join(lines)


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or argparse.ArgumentParser(prog="feedhandler run", description="Live feed from a network interface.")
    p.add_argument("--iface", default=None, help="network interface to capture from")
    p.add_argument("--file", default=None, help="no interface: replay this capture file (pcap, pcapng, "
                   "BinaryFILE, gzip) through the same live pipeline (the pcap backend)")
    p.add_argument("--pace", default="max", metavar="max|recorded|FACTOR",
                   help="--file: as fast as possible (max, default; ts_recv = the capture's stamps), at the "
                        "recorded pace (recorded), or FACTOR times faster (e.g. 10); paced frames are "
                        "stamped with the replay's schedule")
    p.add_argument("--capture", choices=("auto", "afxdp", "dpdk", "afpacket", "pcap"), default=None,
                   help="capture backend (default: $FEEDHANDLER_CAPTURE or auto; pcap when only --file is given)")
    p.add_argument("--protocol", choices=("auto", "itch", "itch50", "mdp3", "fix", "ouch", "ouch42", "ouch50"),
                   default="auto",
                   help="feed protocol (default auto: --file from the capture's bytes; an interface: itch50). "
                        "mdp3: CME MDP 3.0, A/B lines as two --group ADDR:PORT (ports sharing a channel when "
                        "they differ by 1000, CME's convention). fix, ouch (version from the first messages), "
                        "ouch42, ouch50: TCP sessions, reassembled and decoded as the packets arrive")
    p.add_argument("--snapshot-group", action="append", default=[], metavar="ADDR:PORT",
                   help="mdp3: CME market recovery (snapshot) group, joined only while an instrument is stale "
                        "after a gap and left once every book is rebuilt from SnapshotFullRefresh / "
                        "SnapshotFullRefreshOrderBook (repeat for its A/B lines; default: none, so a gap "
                        "leaves the books stale). With it a run may start mid-session (late join): an instrument "
                        "first seen with RptSeq > 1 is stale until the snapshot loop rebuilds it")
    p.add_argument("--group", action="append", default=[], metavar="ADDR:PORT",
                   help="multicast group to join (repeat for A/B lines)")
    add_udp_port(p)
    deprecated_alias(p, "--port", "--udp-port", "udp_port", type=int)
    add_date(p)
    p.add_argument("--reorder-window", type=int, default=64, metavar="PACKETS",
                   help="MoldUDP64 / MDP3 packets held while a sequence hole waits for its packet (default 64)")
    p.add_argument("--no-sequencing", action="store_true",
                   help="no MoldUDP64 sequencing: decode every message in arrival order (for streams whose "
                        "sequence numbers are all 0; gaps and duplicates cannot be seen then)")
    p.add_argument("--duration", type=seconds, default=None, help="stop after this many seconds")
    p.add_argument("--count", type=positive_int, default=None, help="stop after this many messages")
    p.add_argument("--until-eos", action="store_true", help="stop at the MoldUDP64 end of session")
    p.add_argument("--idle-stop", type=seconds, default=None, help="stop after this many idle seconds")
    p.add_argument("--status-interval", type=seconds, default=1.0, help="seconds between status lines (0: off; default 1)")
    p.add_argument("--retransmit", default=None, metavar="HOST:PORT", help="MoldUDP64 retransmission server")
    p.add_argument("--out", default=None, help="write records (.dbn, .dbn.zst, .parquet, .npy)")
    p.add_argument("--xdp-mode", choices=("auto", "native", "skb"), default=None, help="AF_XDP attach mode")
    p.add_argument("--busy-poll-us", type=positive_int, default=None, help="AF_XDP preferred busy polling budget (us)")
    p.add_argument("--xdp-rx-timestamp", choices=("auto", "on", "off"), default=None,
                   help="AF_XDP: hardware receive stamps from the XDP RX metadata (default auto: where the "
                        "driver accepts the device-bound program)")
    p.add_argument("--queues", type=positive_int, default=None, help="AF_XDP / DPDK rx queues")
    p.add_argument("--eal", default=None, help="DPDK EAL arguments, space separated (default: --no-huge vdev)")
    p.add_argument("--no-books", action="store_true", help="do not build books (capture + parse benchmark)")
    p.add_argument("--latency", nargs="?", type=float, const=0.0, default=None, metavar="SPIN_US",
                   help="latency mode (run to completion): the receive thread busy-polls and applies each packet "
                        "to the books itself, the ring only fans records out to other readers; AF_PACKET uses "
                        "TPACKET_V2 per-frame slots. Cost: one core at 100 %% even when idle. With SPIN_US: busy-poll "
                        "only that long after the last packet, then wait for the next one in the source (frees the "
                        "core on a quiet feed; on shared or virtual cores, where a spinning thread is time-sliced, "
                        "it measured faster: bench/README.md). Default: off (batched: a book thread that sleeps "
                        "when idle)")
    p.add_argument("--rx-cpu", type=cpu_index, default=None, help="pin the receive thread to this CPU")
    p.add_argument("--book-cpu", type=cpu_index, default=None, help="pin the book thread to this CPU")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--serve", metavar="[HOST:]PORT", default=None,
                   help="serve a live market-data page at http://[HOST:]PORT/ (BBO, depth and the feed's counters; "
                        "default host 127.0.0.1; default: off)")
    p.add_argument("--top", type=count_int, default=10,
                   help="rows of the BBO table (the books with the most live orders; 0: none; default 10)")
    from feedhandler.publish import add_arguments as _publish_options

    _publish_options(p)
    p.add_argument("--ring", metavar="NAME", default=None,
                   help="also publish every enriched record batch to a shared-memory ring NAME (overflow: drop, "
                        "so a slow or absent reader never holds up the feed), for `feedhandler shell "
                        "--attach-ring NAME` or Ring.attach(NAME) (default: none)")
    p.add_argument("--strict", action="store_true",
                   help="exit 3 when the stream had gaps, duplicates or damage (default: report them, exit 0)")
    add_debug(p)
    return p


def run_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``feedhandler run``: returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from feedhandler.capture.live import BackendUnavailable
    from feedhandler.trading_day import UnknownTradingDay, check_date
    if args.latency is not None and not args.latency >= 0:
        parser.error(f"--latency SPIN_US must be >= 0, not {args.latency:g}")
    if args.date:
        try:
            check_date(args.date)
        except ValueError as e:
            parser.error(str(e))
    if not args.iface and not args.file:
        parser.error("give --iface IFACE to capture live, or --file CAPTURE to replay a capture file")
    if args.out:
        from feedhandler.output import format_for

        try:
            format_for(args.out)        # as replay: an output whose format is unknown is a usage error
        except ValueError as e:
            parser.error(str(e).replace("; use --out-format", ""))      # (run has no --out-format)
    try:
        speed = {"max": 0.0, "recorded": 1.0}[args.pace] if args.pace in ("max", "recorded") else float(args.pace)
        if not 0 < speed < 1e9 and args.pace != "max":     # as replay's --pace
            raise ValueError
    except ValueError:
        parser.error(f"--pace must be max, recorded or a positive speed factor, not {args.pace!r}")
    for g in list(args.group or ()) + list(args.snapshot_group or ()):
        try:
            _parse_group(g)
        except ValueError as e:
            parser.error(str(e))
    source_kw = {}
    if args.xdp_mode:
        source_kw["xdp_mode"] = args.xdp_mode
    if args.busy_poll_us:
        source_kw["busy_poll_us"] = args.busy_poll_us
    if args.xdp_rx_timestamp:
        source_kw["rx_timestamp"] = args.xdp_rx_timestamp
    if args.queues:
        source_kw["n_queues"] = args.queues
    if args.eal:
        source_kw["eal_args"] = ["feedhandler", *args.eal.split()]
    opts = LiveOptions(iface=args.iface, file=args.file, speed=speed, source_kw=source_kw, capture=args.capture, groups=args.group, udp_port=args.udp_port,
                       date=args.date, reorder_window=args.reorder_window, duration=args.duration,
                       count=args.count, idle_stop=args.idle_stop, until_end_of_session=args.until_eos, apply_books=not args.no_books, status_interval=args.status_interval,
                       out=args.out, retransmit=args.retransmit, rx_cpu=args.rx_cpu, book_cpu=args.book_cpu,
                       protocol=args.protocol, sequencing=not args.no_sequencing, top=args.top,
                       latency=args.latency is not None, latency_spin_us=args.latency or 0.0,
                       snapshot_groups=args.snapshot_group)
    if args.iface and not os.path.exists(f"/sys/class/net/{args.iface}"):
        print(f"feedhandler run: error: no interface {args.iface!r} in this network namespace", file=sys.stderr)
        return EXIT_NO_IFACE
    if args.file:
        from feedhandler.detect import capture_file_problem

        why = capture_file_problem(args.file)
        if why is not None:
            print(f"feedhandler run: error: {why}", file=sys.stderr)
            return EXIT_NO_IFACE
    if opts.latency and (args.serve or getattr(args, "publish_what", None) == "bbo"):
        # both read the books from the book thread; with --latency the receive thread writes them
        parser.error("--latency applies the books on the receive thread: --serve and --publish-what bbo read "
                     "them from the book thread and cannot be used with it")
    page = None
    if args.serve:      # the market-data page (feedhandler.serve)
        from feedhandler.serve import open_page
        try:
            opts.watch, page = open_page(args.serve, None, source=f"run {args.iface or args.file}")
        except ValueError as e:
            parser.error(str(e))
        except OSError as e:
            print(f"feedhandler run: --serve {args.serve}: {e.strerror or e}", file=sys.stderr)
            return 1
    try:
        publisher = _publisher(args, opts)
    except (ValueError, OSError) as e:
        print(f"feedhandler run: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    tee = None
    if args.ring:
        from feedhandler.ring import Ring

        try:
            tee = Ring(TEE_CAPACITY, overflow="drop", shm_name=args.ring)
        except (OSError, ValueError) as e:
            print(f"feedhandler run: error: --ring {args.ring}: {e}", file=sys.stderr)
            return EXIT_USAGE
        opts.on_batch = tee.push if opts.on_batch is None else _chain(opts.on_batch, tee.push)
    try:
        s = run(opts)
    except BackendUnavailable as e:
        print(f"feedhandler run: error: {e}", file=sys.stderr)
        return EXIT_BACKEND
    except UnknownTradingDay as e:
        print(f"feedhandler run: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except CaptureError as e:   # the --file cannot be read or is in no format we read
        print(f"feedhandler run: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OutputError as e:    # --out cannot be written (disk full, file-size limit): as replay's exit 2
        print(f"feedhandler run: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (FeedhandlerError, OSError, ValueError) as e:
        print(f"feedhandler run: error: {e}", file=sys.stderr)
        return EXIT_BACKEND
    finally:
        if page is not None:
            page.stop()
        if publisher is not None:
            publisher.close()
        if tee is not None:
            tee.close()     # readers see the end; the name is unlinked when this Ring is destroyed
    if publisher is not None:
        s["publish"] = publisher.stats()
        print(f"feedhandler run: {publisher.summary_line()}", file=sys.stderr)
    if tee is not None:
        s["ring"] = {"name": args.ring, **tee.stats()}
    if args.json:
        print(json.dumps(s, indent=2, default=int))
    else:
        print(format_summary(s))
    code = {"SIGINT": EXIT_INTERRUPTED, "SIGTERM": EXIT_TERMINATED}.get(s.get("signal"), EXIT_OK)
    if code == EXIT_OK and args.strict and damaged(s):
        print("feedhandler run: --strict: the stream had gaps, duplicates or damaged input", file=sys.stderr)
        return EXIT_DATA_QUALITY
    return code


def damaged(s: dict) -> bool:
    """--strict: did the run lose messages (gaps not filled by retransmission), see duplicates, malformed
    or truncated messages, or a damaged capture file?"""
    fr = s.get("framing") or {}

    def count(v) -> int:     # the framer's counters are ints or {reason: count}
        return sum(v.values()) if isinstance(v, dict) else int(v or 0)

    t = s.get("tcp_session") or {}      # FIX / OUCH: malformed messages, truncated ones, TCP holes
    return bool(s.get("lost_messages") or s.get("gaps", 0) > s.get("gaps_filled", 0) or s.get("duplicates")
                or s.get("file_damage") or any(count(fr.get(k)) for k in ("malformed", "truncated", "bad_length"))
                or t.get("malformed") or t.get("truncated") or t.get("tcp_holes"))


def _chain(first, second):
    """One on_batch callback that calls two (--publish and --ring together)."""
    def both(batch):
        first(batch)
        second(batch)
    return both


def _publisher(args, opts: LiveOptions):
    """--publish: a started feedhandler.publish.TickPublisher fed from the book thread's batches (with
    the books' BBO events for --publish-what bbo); None without --publish."""
    from feedhandler.publish import from_args

    if getattr(args, "publish", None) and args.no_books:
        raise ValueError("--publish sends the records after the books enriched them: it cannot run with --no-books")
    pub = from_args(args)
    if pub is None:
        return None
    from feedhandler.books import BookSet

    books = opts.books = BookSet(track_bbo_events=pub.what == "bbo")
    opts.on_batch = (lambda b: pub.publish(b, books.bbo_events())) if pub.what == "bbo" else pub.publish
    opts.status_more = pub.status_part
    return pub


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_main())
