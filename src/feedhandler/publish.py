"""Normalized market data on a ZeroMQ PUB socket: ``feedhandler run|replay --publish tcp://...``.

The feed's consumer hands each enriched record batch (and, for BBO, the books' BBO events of that
batch) to :meth:`TickPublisher.publish`. The publisher groups the batch by instrument with numpy and
sends one message per instrument per batch; Python work is per batch and per instrument, never per
record, and no Python object is made for a record.

Wire (the same as the exchange's own market data, ``engine.marketdata``): multipart
``[topic, records]``; ``records`` is ``n * 64`` bytes of tick records (``csrc/include/fh/record.h``,
decoded with ``feedhandler.records``), all of one instrument, in stream order.

- topic: the instrument's symbol (ASCII, as in the stock directory, trailing spaces stripped);
  ``#<instrument_id>`` while the symbol is not known yet (no directory record seen: a live join);
  ``*`` for channel-wide records (instrument_id 0: sequencing gaps, system events). ZeroMQ matches
  subscriptions by prefix: a subscriber to ``AAPL`` also gets ``AAPLX``; compare the topic exactly.
- ``what="ticks"``: every record of the batch with its instrument (MBO, trades, directory, status...).
- ``what="bbo"``: one ``bbo`` record (rtype ``FH_RTYPE_BBO``, ``fh_bbo_update``) per change of an
  instrument's best bid or offer, made from ``feedhandler.books.mbo`` BBO events (the caller passes them: this
  module does not import ``engine``).

Threading: one thread calls :meth:`publish` (the consumer thread that owns the batches); :meth:`stats`
may be read from another (plain integer reads). The PUB socket never blocks: beyond its send high-water
mark ZeroMQ drops messages for the slow subscriber (PUB semantics), it does not slow the feed.
"""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from feedhandler import records
from feedhandler.cliopts import count_int, positive_int, zmq_endpoint

__all__ = ["TickPublisher", "WHAT", "bbo_records", "CHANNEL_TOPIC", "add_arguments", "from_args"]

WHAT = ("ticks", "bbo")
CHANNEL_TOPIC = b"*"
DEFAULT_HWM = 100_000            # messages queued per subscriber before PUB drops for it
#: seconds close() gives the messages still queued to reach their subscribers (the end of a replay is
#: published in a burst just before the command ends; closing at once would drop that tail)
DEFAULT_CLOSE_LINGER_S = 5.0
_BBO = records.DTYPES["bbo"]
_RT_BBO = records.RTYPE["bbo"]
_RT_DIRECTORY = records.RTYPE["stock_directory"]
_RT_INSTRUMENT_DEF = records.RTYPE["instrument_def"]
_U32_MAX = np.uint64(0xFFFFFFFF)
_F_LAST = 0x80
_ROW = records.TICK_DTYPE.itemsize


def _backend_send(zmq):
    """pyzmq's compiled ``send`` (below the pure-Python Socket.send wrapper, plain int flags; as
    engine.zmqio does, which this package may not import)."""
    for cls in zmq.Socket.__mro__[1:]:
        fn = vars(cls).get("send")
        if fn is not None:
            return fn
    return zmq.Socket.send      # pragma: no cover


def bbo_records(events: np.ndarray, sequence_start: int = 0) -> np.ndarray:
    """BBO events (fields instrument_id, ts_event, ts_recv, bid_px, bid_sz, ask_px, ask_sz: the layout of
    ``feedhandler.books.mbo.BBO_EVENT_DTYPE``) as ``bbo`` tick records, vectorized. Sizes saturate at 2**32-1."""
    n = events.shape[0]
    out = records.empty(n)
    v = out.view(_BBO)
    v["length"] = 0
    v["rtype"] = _RT_BBO
    v["instrument_id"] = events["instrument_id"]
    v["ts_event"] = events["ts_event"]
    v["ts_recv"] = events["ts_recv"]
    v["bid_px"] = events["bid_px"]
    v["ask_px"] = events["ask_px"]
    v["bid_sz"] = np.minimum(events["bid_sz"].astype(np.uint64), _U32_MAX)
    v["ask_sz"] = np.minimum(events["ask_sz"].astype(np.uint64), _U32_MAX)
    v["sequence"] = (np.arange(sequence_start + 1, sequence_start + n + 1, dtype=np.uint64) & _U32_MAX)
    v["flags"] = _F_LAST
    return out


class TickPublisher:
    """PUB socket of tick records (or BBO updates) by symbol, fed one batch at a time.

    Parameters
    ----------
    endpoint : str
        Bind address, e.g. ``tcp://127.0.0.1:5570`` (``:0`` or ``:*`` picks a free port: read
        :attr:`endpoint` after :meth:`start`).
    what : {"ticks", "bbo"}
        Normalized tick records, or BBO updates (then pass the books' BBO events to :meth:`publish`).
    symbols : sequence of str, optional
        Publish only these symbols (default all).
    hwm : int
        Send high-water mark in messages per subscriber (beyond it PUB drops for that subscriber).
    """

    def __init__(self, endpoint: str, what: str = "ticks", symbols: Sequence[str] | None = None,
                 hwm: int = DEFAULT_HWM, ctx=None):
        if what not in WHAT:
            raise ValueError(f"--publish-what must be one of {', '.join(WHAT)}, not {what!r}")
        if not endpoint.startswith(("tcp://", "ipc://", "inproc://")):
            raise ValueError(f"--publish {endpoint!r}: expected tcp://HOST:PORT, ipc://PATH or inproc://NAME")
        self.endpoint = endpoint
        self.what = what
        self.want = {s.strip().upper() for s in symbols} if symbols else None
        self.hwm = hwm
        self.ctx = ctx             # zmq.Context (default: one of its own, made at start(); zmq is imported
        self._own_ctx = ctx is None    # only when publishing, so that a replay without --publish never loads it)
        self._sock = None
        self._send = None
        self._flags = (0, 0)
        self._names: dict[int, str] = {}         # instrument_id -> symbol, learned from the records
        self._topics: dict[int, bytes | None] = {}   # instrument_id -> topic (None: filtered out)
        self._want_ids = np.zeros(0, np.uint32)
        self._bbo_seq = 0
        # counters (read by the monitor / summary)
        self.batches = 0
        self.records = 0            # records published
        self.messages = 0           # ZeroMQ messages sent (one per instrument per batch)
        self.unnamed = 0            # records published under #<instrument_id> (symbol not known yet)
        self.busy_ns = 0            # time spent inside publish()

    # ---- lifecycle ------------------------------------------------------------------------------
    def start(self) -> "TickPublisher":
        import zmq

        if self.ctx is None and self.endpoint.startswith("inproc://"):
            self.ctx, self._own_ctx = zmq.Context.instance(), False    # inproc peers share the process's
        elif self.ctx is None:
            # its own context: close() terminates it, which is what waits for the queued messages to be sent
            self.ctx = zmq.Context()
        self._send = _backend_send(zmq)
        self._flags = (int(zmq.SNDMORE) | int(zmq.NOBLOCK), int(zmq.NOBLOCK))
        # XPUB: PUB that also reads the subscriptions, so that wait_subscribers() can hold the feed until
        # the strategies listen (ZeroMQ's slow joiner); sending is the same as PUB's
        sock = self.ctx.socket(zmq.XPUB)
        sock.setsockopt(zmq.XPUB_VERBOSE, 1)    # every subscriber's subscription, not only a topic's first
        sock.setsockopt(zmq.SNDHWM, self.hwm)
        sock.setsockopt(zmq.LINGER, 0)
        ep = self.endpoint
        if ep.startswith("tcp://") and ep.endswith(":0"):
            ep = ep[:-2] + ":*"
        try:
            sock.bind(ep)
        except zmq.ZMQError as e:
            sock.close(linger=0)
            if self._own_ctx:
                self.ctx.term()
                self.ctx = None
            raise OSError(e.errno, f"--publish {self.endpoint}: {e.strerror}") from None
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._sock = sock
        return self

    def wait_subscribers(self, n: int, timeout: float = 30.0) -> int:
        """Block until ``n`` subscriptions arrived (a subscriber sends one per topic prefix it asks for;
        ``""`` counts once) or ``timeout`` seconds passed; returns how many arrived."""
        import zmq

        got = 0
        deadline = time.monotonic() + timeout
        while got < n:
            left = deadline - time.monotonic()
            if left <= 0 or not self._sock.poll(int(left * 1000) + 1):
                break
            msg = self._sock.recv()
            if msg[:1] == b"\x01":
                got += 1
        return got

    def close(self, linger_s: float = DEFAULT_CLOSE_LINGER_S) -> None:
        """Close the socket. Messages still queued get up to ``linger_s`` seconds to reach their subscribers
        (the socket's own context is terminated, which waits for them); a subscriber that stopped reading
        costs at most that. With a context passed in, the caller terminates it."""
        if self._sock is not None:
            self._sock.close(linger=max(0, int(linger_s * 1000)))
            self._sock = None
            if self._own_ctx and self.ctx is not None:
                self.ctx.term()
                self.ctx = None

    def __enter__(self):
        return self.start() if self._sock is None else self

    def __exit__(self, *exc):
        self.close()

    def status_part(self) -> str:
        """The publisher's counters for ``run``'s periodic status line (read on another thread: plain ints)."""
        return f"published {self.what} recs {self.records:,} msgs {self.messages:,} unnamed {self.unnamed:,}"

    def summary_line(self) -> str:
        s = self.stats()
        return (f"published: {s['records']:,} {self.what} records in {s['messages']:,} messages on {self.endpoint} "
                f"({s['publish_s']:.3f} s in publish)")

    # ---- the batch path -------------------------------------------------------------------------
    def _learn(self, ticks: np.ndarray) -> None:
        """Symbols from the batch's reference-data records (ITCH stock directory, MDP3 instrument
        definitions): a few records a day, vectorized selection."""
        rt = ticks["rtype"]
        for rtype, kind in ((_RT_DIRECTORY, "stock_directory"), (_RT_INSTRUMENT_DEF, "instrument_def")):
            sel = rt == rtype
            if not sel.any():
                continue
            v = ticks[sel].view(records.DTYPES[kind])
            for iid, sym in zip(v["instrument_id"].tolist(), v["symbol"].tolist()):
                name = sym.split(b"\0", 1)[0].decode("ascii", "replace").strip()
                if name and self._names.get(iid) != name:
                    self._names[iid] = name
                    self._topics.pop(iid, None)
            if self.want is not None:
                self._want_ids = np.array(sorted(i for i, s in self._names.items() if s in self.want), np.uint32)

    def _topic(self, iid: int) -> bytes | None:
        """The topic of an instrument (None: not published, --symbols). Cached once the symbol is known."""
        t = self._topics.get(iid, b"")
        if t != b"":
            return t
        if iid == 0:
            t = CHANNEL_TOPIC
        else:
            name = self._names.get(iid)
            if name is None:        # not cached: the directory may name it later
                return None if self.want is not None else f"#{iid}".encode()
            t = name.encode("ascii", "replace") if self.want is None or name in self.want else None
        self._topics[iid] = t
        return t

    def publish(self, ticks: np.ndarray, bbo_events: np.ndarray | None = None) -> int:
        """Publish one enriched batch (``TICK_DTYPE``); for ``what="bbo"`` also the BBO events the books
        recorded while applying it. Returns the number of records published."""
        t0 = time.perf_counter_ns()
        if ticks.shape[0]:
            self._learn(ticks)
        if self.what == "bbo":
            if bbo_events is None or not bbo_events.shape[0]:
                self.busy_ns += time.perf_counter_ns() - t0
                return 0
            out = bbo_records(bbo_events, self._bbo_seq)
            self._bbo_seq += out.shape[0]
        else:
            out = ticks
        n = self._send_grouped(out)
        self.batches += 1
        self.busy_ns += time.perf_counter_ns() - t0
        return n

    def _send_grouped(self, batch: np.ndarray) -> int:
        if not batch.shape[0] or self._sock is None:
            return 0
        iid = batch["instrument_id"]
        if self.want is not None:
            keep = np.isin(iid, self._want_ids)
            if not keep.all():
                batch = batch[keep]
                iid = batch["instrument_id"]
                if not batch.shape[0]:
                    return 0
        n = iid.shape[0]
        rows = np.ascontiguousarray(batch).view(np.uint8).reshape(n, _ROW)
        if n > 1 and (iid[1:] != iid[:-1]).any():
            # stable: stream order within an instrument; ids below 2**16 (ITCH stock locates) sort by radix
            key = iid.astype(np.uint16) if int(iid.max()) < 65536 else iid
            order = np.argsort(key, kind="stable")
            rows = np.take(rows, order, axis=0)          # whole 64-byte rows: ~20x a structured gather
            sid = iid[order]
            cuts = (np.flatnonzero(sid[1:] != sid[:-1]) + 1).tolist()
            ids = sid[[0] + cuts].tolist()
            bounds = [0] + cuts + [n]
        else:
            ids, bounds = [int(iid[0])], [0, n]
        raw = memoryview(rows.reshape(-1))
        sock = self._sock
        send = self._send
        more, last = self._flags
        size = records.TICK_DTYPE.itemsize
        sent = 0
        for k, i in enumerate(ids):
            topic = self._topic(i)
            if topic is None:
                continue
            a, b = bounds[k], bounds[k + 1]
            send(sock, topic, more)
            send(sock, raw[a * size:b * size], last)
            sent += b - a
            self.messages += 1
            if topic[:1] == b"#":
                self.unnamed += b - a
        self.records += sent
        return sent

    def stats(self) -> dict:
        return {"endpoint": self.endpoint, "what": self.what, "batches": self.batches, "records": self.records,
                "messages": self.messages, "unnamed_records": self.unnamed,
                "publish_s": round(self.busy_ns / 1e9, 6)}


def add_arguments(p) -> None:
    """The ``--publish*`` options of ``feedhandler run`` and ``feedhandler replay``."""
    p.add_argument("--publish", type=zmq_endpoint, metavar="ENDPOINT", default=None,
                   help="publish the normalized market data on a ZeroMQ PUB socket bound here, e.g. "
                        "tcp://127.0.0.1:5570 (topic = symbol; default: off)")
    p.add_argument("--publish-what", choices=WHAT, default="ticks",
                   help="with --publish: every tick record (ticks, default) or one BBO record per change of "
                        "a best bid/offer (bbo)")
    p.add_argument("--publish-wait-subs", type=count_int, default=0, metavar="N",
                   help="with --publish: before the feed starts, wait (up to 30 s) until N subscriptions arrived "
                        "(a subscriber sends one per symbol it asks for; default 0: do not wait)")
    p.add_argument("--publish-hwm", type=positive_int, default=DEFAULT_HWM,
                   help=f"with --publish: messages queued per subscriber before PUB drops for it (default "
                        f"{DEFAULT_HWM:,})")


def from_args(args, symbols: Sequence[str] | None = None) -> "TickPublisher | None":
    """A started publisher for ``--publish`` (None without it). Raises ValueError (bad options) or OSError
    (the endpoint cannot be bound)."""
    if not getattr(args, "publish", None):
        return None
    if args.publish_hwm <= 0:
        raise ValueError(f"--publish-hwm must be positive, not {args.publish_hwm}")
    pub = TickPublisher(args.publish, args.publish_what, symbols=symbols, hwm=args.publish_hwm).start()
    if args.publish_wait_subs > 0:
        got = pub.wait_subscribers(args.publish_wait_subs)
        if got < args.publish_wait_subs:
            import sys

            print(f"feedhandler: warning: --publish-wait-subs {args.publish_wait_subs}: only {got} subscriptions "
                  "within 30 s; publishing anyway", file=sys.stderr)
    return pub
