"""Snapshots of the books and the feed's counters, taken on the consumer thread at a few Hz."""
from __future__ import annotations

import threading
import time
from typing import Callable

import numpy as np

from feedhandler import records

DEFAULT_HZ = 4.0
DEFAULT_LEVELS = 10
MAX_SYMBOLS = 16
AUTO_SYMBOLS = 4          # shown when none were chosen: the most active books


def _px(p: int) -> str | None:
    """A 1e-9 fixed-point price as an exact decimal string (None: no price)."""
    if p == records.UNDEF_PRICE:
        return None
    neg = p < 0
    ip, frac = divmod(abs(int(p)), records.PRICE_SCALE)
    s = str(ip) if not frac else f"{ip}.{frac:09d}".rstrip("0")
    return "-" + s if neg else s


class BookSampler:
    """Called with :meth:`maybe_sample` on the thread that applies records to ``books`` (an engine BookSet or
    anything with ``bbo(iid)``, ``depth(iid, n)`` and ``bbo_all()``), after each batch. At most ``hz`` times a
    second it builds a snapshot (a new dict, never mutated after) and wakes the web server's streams.

    ``counters``: a function returning the feed's counters (a dict of numbers) for the snapshot;
    ``symbols``: the tickers to show first (the page can change them: :meth:`choose`)."""

    def __init__(self, counters: Callable[[], dict], symbols=None, hz: float = DEFAULT_HZ,
                 levels: int = DEFAULT_LEVELS, source: str = ""):
        if not 0 < hz <= 50:
            raise ValueError(f"sampling rate must be in (0, 50] Hz, not {hz}")
        self.counters = counters
        self.period_ns = int(1e9 / hz)
        self.levels = int(levels)
        self.source = source
        self.chosen: list[str] = [s.upper() for s in (symbols or [])][:MAX_SYMBOLS]
        self.known: dict[int, str] = {}       # instrument_id -> ticker (the feed's reference data)
        self._by_name: dict[str, int] = {}
        self._next = 0
        self.latest: dict | None = None
        self.samples = 0
        self.errors = 0
        self.last_error = ""
        self.done = False
        self.cond = threading.Condition()
        self.t0 = time.monotonic_ns()

    # ---- web server side ----------------------------------------------------------------------------
    def choose(self, symbols) -> list[str]:
        """The tickers to sample from the next snapshot on (unknown ones are kept: they may appear later)."""
        self.chosen = [str(s).strip().upper() for s in symbols if str(s).strip()][:MAX_SYMBOLS]
        self._next = 0                      # sample soon
        return list(self.chosen)

    def wait(self, after: int, timeout: float) -> dict | None:
        """The first snapshot newer than sample number ``after`` (None after ``timeout`` seconds)."""
        with self.cond:
            self.cond.wait_for(lambda: self.samples > after or self.done, timeout)
            return self.latest if self.samples > after else None

    # ---- consumer thread -------------------------------------------------------------------------------
    def learn(self, symbols: dict[int, str]) -> None:
        """Names of instruments (from the feed's reference data, e.g. a SymbolMap's by_id)."""
        if len(symbols) != len(self.known):
            self.known = dict(symbols)
            self._by_name = {v: k for k, v in self.known.items()}

    def maybe_sample(self, books, records_applied: int, symbols: dict[int, str] | None = None,
                     extra: dict | None = None) -> bool:
        """One clock read; a snapshot when the period has passed. Returns True when it sampled."""
        now = time.monotonic_ns()
        if now < self._next:
            return False
        self._next = now + self.period_ns
        try:
            self.sample(books, records_applied, symbols, extra)
        except Exception as e:            # noqa: BLE001 - counted and shown; the feed goes on
            self.errors += 1
            self.last_error = f"{type(e).__name__}: {e}"[:200]
        return True

    def sample(self, books, records_applied: int, symbols: dict[int, str] | None = None,
               extra: dict | None = None, final: bool = False) -> dict:
        if symbols is not None:
            self.learn(symbols)
        names = list(self.chosen)
        if not names:
            names = self._busiest(books)
        books_out = []
        for name in names:
            iid = self._by_name.get(name)
            if iid is None:
                books_out.append({"symbol": name, "instrument_id": None, "known": False})
                continue
            bid_px, bid_sz, bid_n, ask_px, ask_sz, ask_n = books.bbo(iid)
            bids, asks = books.depth(iid, self.levels)
            books_out.append({
                "symbol": name, "instrument_id": int(iid), "known": True,
                "bid": _px(int(bid_px)), "bid_sz": int(bid_sz), "bid_orders": int(bid_n),
                "ask": _px(int(ask_px)), "ask_sz": int(ask_sz), "ask_orders": int(ask_n),
                "bids": _levels(bids), "asks": _levels(asks)})
        snap = {"seq": self.samples + 1, "ts": time.time_ns() // 1_000_000, "source": self.source,
                "elapsed_s": round((time.monotonic_ns() - self.t0) / 1e9, 3), "records": int(records_applied),
                "chosen": list(self.chosen), "books": books_out, "counters": self.counters(),
                "symbols_known": len(self.known), "final": final, "sampler_errors": self.errors}
        if extra:
            snap.update(extra)
        with self.cond:
            self.latest = snap
            self.samples += 1
            self.cond.notify_all()
        return snap

    def finish(self, books, records_applied: int, symbols=None, extra=None) -> None:
        """The last snapshot (the end of the capture or the run), then the streams are told it is over."""
        try:
            self.sample(books, records_applied, symbols, extra, final=True)
        finally:
            with self.cond:
                self.done = True
                self.cond.notify_all()

    def _busiest(self, books) -> list[str]:
        summ = books.bbo_all()
        if not summ.shape[0]:
            return []
        key = summ["live_orders"].astype(np.int64) if "live_orders" in summ.dtype.names else \
            (summ["bid_sz"].astype(np.int64) + summ["ask_sz"].astype(np.int64))
        out = []
        for i in np.argsort(-key, kind="stable")[:64].tolist():
            name = self.known.get(int(summ["instrument_id"][i]))
            if name:
                out.append(name)
            if len(out) >= AUTO_SYMBOLS:
                break
        return out


def _levels(rows) -> list:
    """A BookSet.depth side (structured array or rows of price, size[, orders]) -> [[price str, size, orders]]."""
    out = []
    names = getattr(getattr(rows, "dtype", None), "names", None)
    if names:
        px = rows["price"] if "price" in names else rows[names[0]]
        sz = rows["size"] if "size" in names else rows[names[1]]
        cnt = rows["count"] if "count" in names else (rows["orders"] if "orders" in names else None)
        for i in range(rows.shape[0]):
            out.append([_px(int(px[i])), int(sz[i]), int(cnt[i]) if cnt is not None else None])
        return out
    for r in rows:
        out.append([_px(int(r[0])), int(r[1]), int(r[2]) if len(r) > 2 else None])
    return out
