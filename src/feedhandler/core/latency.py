"""The latency mode of ``feedhandler run --latency``: run to completion on the receive thread.

One packet's way in this mode: the receive thread busy-polls the source (AF_XDP rx ring, AF_PACKET
TPACKET_V2 frame slots, DPDK rx burst), frames and decodes what one poll brought (at most a few frames),
applies the records to the books on the same thread (``Producer.start(latency=True, sinks=...)``, the
loop of :mod:`feedhandler.core.producer`) and only then publishes them to the ring, which is the fan-out
to other readers (``--out``, callbacks, retransmission requests): a "drop" ring, so a slow reader loses
records (counted) and never holds up the books.

Cost: the receive thread never sleeps; it keeps one core at 100 % whether packets arrive or not (pin it
with ``--rx-cpu`` to a core of its own). ``--latency SPIN_US`` bounds the spinning: after SPIN_US without
a packet the thread waits in the source (poll on the AF_XDP socket or the TPACKET_V2 ring, woken by the
next frame). On shared or virtual cores a thread that never sleeps is time-sliced with everything else
(and across cgroups nice does not help): measured on this project's shared VM, a spinner lost most of
its core in gaps of 1-16 ms, so there the bounded spin gives the lower latency (bench/README.md). The batched default sleeps when idle and gathers records for the book thread: cheaper,
and better for replays and floods, but its wire -> book latency is tens of microseconds.

AF_PACKET in this mode uses a TPACKET_V2 ring (per-frame slots, each frame ours as soon as the kernel
wrote it) instead of TPACKET_V3 blocks, whose retire timer (a jiffy: 1-4 ms) bounds the latency at low
rates.
"""
from __future__ import annotations

import threading
from typing import Callable

import numpy as np

__all__ = ["COST", "FANOUT_RING_CAPACITY", "source_options", "book_sinks", "FanoutReader", "summary"]

COST = ("latency mode: the receive thread busy-polls and applies the books itself, keeping one core at "
        "100 % even when the feed is idle")

FANOUT_RING_CAPACITY = 1 << 17      # records: the fan-out ring (drop policy)


def source_options(backend: str, kw: dict) -> dict:
    """The capture source's options for the latency mode (the caller's explicit options win)."""
    kw = dict(kw)
    if backend == "afpacket":
        kw.setdefault("tpacket_version", 2)     # per-frame slots: no block retire timer
    return kw


def book_sinks(*books) -> list:
    """Sinks applying records to each of ``books`` (BookSet / MbpBookSet; None skipped) on the receive
    thread."""
    from feedhandler.core.producer import book_sink
    return [book_sink(b) for b in books if b is not None]


class FanoutReader:
    """A reader of the fan-out ring on its own thread: hands each batch (a TICK_DTYPE view valid during
    the call, books already applied and records enriched) to ``on_batch``. Waits without spinning (the
    ring's back-off), so it leaves the cores to the receive thread. An exception from ``on_batch`` stops
    the reading (the rest is released unread) and is kept in ``error``."""

    def __init__(self, ring, on_batch: Callable[[np.ndarray], None], max_batch: int = 4096):
        self.ring = ring
        self.on_batch = on_batch
        self.max_batch = max_batch
        self.records = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="fh-fanout", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def join(self) -> None:
        self.thread.join()

    def _run(self) -> None:
        ring = self.ring
        while not ring.finished:
            b = ring.read(self.max_batch, timeout=0.05)
            n = b.shape[0]
            if not n:
                continue
            try:
                if self.error is None:
                    self.on_batch(b)
                    self.records += n
            except BaseException as e:      # reported by the caller after the run
                self.error = e
            finally:
                ring.release(n)


def summary(feed, percentiles: Callable[[np.ndarray], dict], spin_us: float = 0.0) -> dict:
    """The latency mode's own figures: wire -> book per message and per packet, messages per packet,
    records applied on the receive thread, records the fan-out ring had no room for, and the polling
    (spin_us 0: busy poll always; else the budget and how often the thread waited in the source)."""
    st = feed.producer_stats()
    fs = feed.stats()
    packets = fs.get("moldudp64_packets") or fs.get("packets") or 0
    return {
        "mode": "latency",
        "cost": COST,
        "wire_to_book_per_message": percentiles(feed.book_latency_hist("message")),
        "wire_to_book_per_packet": percentiles(feed.book_latency_hist("packet")),
        "messages_per_packet": round(fs.get("messages", 0) / packets, 2) if packets else None,
        "applied_on_receive_thread": int(st["applied"]),
        "fanout_dropped": int(st["fanout_dropped"]),
        "spin_us": spin_us,
        "idle_waits": int(st["idle_waits"]),
    }
