"""Glue between the feed's commands (``replay``, ``run``) and the market-data page: the ``--serve`` option's
server, and the counters each kind of feed shows."""
from __future__ import annotations

import sys
from collections import deque

import numpy as np

from feedhandler.serve.sampler import BookSampler
from feedhandler.serve.server import MarketDataServer, serve_address

SERVE_HELP = ("serve a live market-data page at http://[HOST:]PORT/ (BBO, depth and the feed's counters, sampled "
              "a few times a second on the book thread; default host 127.0.0.1; default: off)")


def open_page(spec: str, symbols=None, source: str = "", out=sys.stderr) -> tuple[BookSampler, MarketDataServer]:
    """Start the page's server for ``--serve spec``; ValueError for a bad spec, OSError when it cannot bind."""
    host, port = serve_address(spec)
    sampler = BookSampler(counters=dict, symbols=symbols, source=source)
    server = MarketDataServer(sampler, host, port).start()
    print(f"feedhandler: market-data page at {server.url}", file=out, flush=True)
    return sampler, server


def _pct(values, qs=(50, 99)) -> dict:
    if not len(values):
        return {}
    a = np.asarray(values, dtype=np.int64)
    return {f"p{q}": int(np.percentile(a, q)) for q in qs}


class ReplayCounters:
    """Counters of a capture replay (``feedhandler replay``): the framer's, and with ``--pace`` the schedule lag
    (how late the books are against the recorded time line)."""

    def __init__(self, feed, pacer=None, lags: int = 4096):
        self.feed = feed
        self.pacer = pacer
        self.lags: deque = deque(maxlen=lags)

    def __call__(self) -> dict:
        st = self.feed.stats()
        done, total = self.feed.progress()
        out = {"packets": int(st["packets"]), "messages": int(st["messages"]), "gaps": int(st["gaps"]),
               "lost_messages": int(st["lost_messages"]), "duplicates": int(st["duplicates"]),
               "drops": None,     # a file cannot drop packets: gaps and lost messages are the capture's own
               "progress_pct": round(100.0 * done / total, 1) if total else None}
        if self.pacer is not None:
            self.lags.append(self.pacer.last_lag_ns)
            p = _pct(self.lags)
            out.update(latency_label="schedule lag", latency_p50_us=round(p["p50"] / 1e3, 1),
                       latency_p99_us=round(p["p99"] / 1e3, 1), pace=self.pacer.speed)
        return out


class LiveCounters:
    """Counters of ``feedhandler run``: the framer's, the capture backend's drops, wire->book latency."""

    def __init__(self, feed, source, ring, book_hist, measured: bool):
        self.feed, self.source, self.ring, self.book_hist, self.measured = feed, source, ring, book_hist, measured

    def __call__(self) -> dict:
        st = self.feed.stats()
        src = self.source.stats()
        drops = (int(src.get("kernel_drops", 0)) + int(src.get("xdp_drops", 0)) + int(src.get("rx_dropped", 0))
                 + int(self.ring.stats().get("dropped", 0)))
        out = {"packets": int(src.get("packets", st["packets"])), "messages": int(st["messages"]),
               "gaps": int(st["gaps"]), "lost_messages": int(st["lost_messages"]),
               "duplicates": int(st["duplicates"]), "drops": drops}
        if self.measured:
            from feedhandler.live import latency_percentiles
            p = latency_percentiles(self.book_hist)
            if p.get("count"):
                out.update(latency_label="wire->book", latency_p50_us=round(p["p50"] / 1e3, 1),
                           latency_p99_us=round(p["p99"] / 1e3, 1))
        return out
