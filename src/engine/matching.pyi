"""Matching engine core (Cython, src/engine/matching.pyx): price-time priority books for many symbols.

The hot path is :meth:`Engine.process`: one call per batch of fixed-size order-entry records
(``engine.orders.REQ_DTYPE``, the C struct ``fh_order_req`` of ``csrc/include/fh/order.h``), a nogil loop
over the batch, and a numpy array of execution events (``engine.orders.EXEC_DTYPE``, ``fh_exec``) back.
Python is entered once per batch, never per order. Most callers use :class:`engine.manager.EngineManager`,
which owns an ``Engine``, sequences and journals requests and speaks dicts.

``process`` accepts a REQ_DTYPE ndarray or any C-contiguous bytes-like object holding whole 64-byte
records (a journal payload slice, a ring slot batch).

Semantics (identical in tests/reference_matcher.py):

* new order: validated (qty > 0, qty < 2**31, limit price > 0 and a multiple of the book's tick, side,
  type, tif; market + post-only is rejected), then ``accepted`` (or ``rejected`` with a reason) and then:
  - post-only: if it would cross, ``reject`` mode -> ``rejected`` reason ``would_cross`` (no ``accepted``
    before it); ``reprice`` mode -> the price becomes one tick away from the
    opposite best (buy: best_ask - tick, sell: best_bid + tick), then ``accepted`` and it rests.
  - FOK: the quantity fillable at acceptable prices is computed BEFORE any fill (self-trade rules
    included); if short, the order is ``canceled`` (reason ``fok``) and the book is untouched.
  - matching: walk the opposite side best price first, FIFO within a level, fill at the maker's
    price; each fill emits a ``fill`` for the taker and then one for the maker with the same trade_id.
  - self-trade prevention (taker's mode): ``cancel_newest`` cancels the taker's remainder,
    ``cancel_oldest`` cancels the resting order and continues, ``cancel_both`` cancels both (reason ``stp``).
  - leftover: market and IOC -> ``canceled`` (reason ``ioc``); day/GTC limit orders rest.
* cancel: ``canceled`` (reason ``user``) or ``rejected`` (``unknown_order`` / ``not_owner``).
* amend (``price`` = new price or UNDEF_PRICE for unchanged, ``qty`` = new OPEN (leaves) quantity or 0 for
  unchanged): same price and smaller/equal leaves keeps time priority; a price change or a larger leaves
  quantity loses it (the order goes to the back of its new level, and if the new price crosses, it matches
  as a taker first). Event ``replaced`` then any fills. A post-only order whose new price would cross is
  ``rejected`` (``would_cross``) and left unchanged.
* end of day (kind ``eod``): every resting DAY order is ``expired``, bids best-to-worst then asks
  best-to-worst, FIFO within a level.

Trade ids are ``(instrument_id << 40) | n`` with n counting from 1 per book, so they are unique across
symbols and independent of how symbols are sharded. No floats, no clocks, no hash iteration on the
matching path: the same input records give byte-identical output records.
"""
from __future__ import annotations

import numpy as np

REASONS: tuple[str, ...]
"""Reason code strings indexed by the ``reason`` byte of an exec record (0 = "")."""

def order_layouts() -> list[tuple[str, int, list[tuple[str, int, int, int, str]]]]:
    """[(name, size, [(field, offset, size, count, kind), ...]), ...] of fh/order.h (engine.orders builds dtypes)."""

class EngineError(Exception):
    """Raised by Engine methods for programming errors (bad dtype, unknown instrument, out of memory)."""

class Engine:
    """Books for instrument ids 0..n_instruments-1, each owned by this object (one thread at a time).

    Parameters
    ----------
    n_instruments : int
        Number of books; request records address them by ``instrument_id``.
    tick_size : int or sequence of int
        Price increment in 1e-9 units (per instrument or one for all); default 1.
    """

    def __init__(self, n_instruments: int, tick_size: int | list[int] = 1) -> None: ...
    # ---- commands
    def process(self, reqs: np.ndarray) -> np.ndarray:
        """Apply a batch of ``REQ_DTYPE`` records in order; return the ``EXEC_DTYPE`` events (a new array)."""
    def process_count(self, reqs: np.ndarray) -> int:
        """Like :meth:`process` but discards the events and returns how many there were (benchmarks)."""
    def process_latency(self, reqs: np.ndarray, ns_out: np.ndarray) -> None:
        """Apply requests one at a time inside the nogil loop, storing each one's CLOCK_MONOTONIC duration
        in ns_out (uint64, len >= len(reqs)). Benchmarks only; the matching code never reads a clock."""
    def restore(self, orders: np.ndarray, trade_counters: np.ndarray) -> None:
        """Load a snapshot taken with :meth:`snapshot` into an EMPTY engine."""
    # ---- queries
    def snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        """(resting orders as ``ORDER_DTYPE`` in deterministic book order, trade counter per instrument)."""
    def state_hash(self) -> str:
        """sha256 hex of the snapshot bytes: equal hashes mean identical books and counters."""
    def book(self, instrument_id: int, depth: int = 10) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
        """(bids, asks), each best first, as (price_raw, total_qty, order_count) per level."""
    def orders(self, instrument_id: int) -> np.ndarray:
        """Resting orders of one book (``ORDER_DTYPE``): bids best-to-worst then asks, FIFO in a level."""
    def order(self, order_id: int) -> dict | None:
        """One resting order as a dict (order_id, instrument_id, side, price, leaves_qty, cum_qty, account, tif), or None."""
    def bbo(self, instrument_id: int) -> tuple[int | None, int | None]:
        """(best bid price_raw, best ask price_raw); None for an empty side."""
    def n_orders(self, instrument_id: int | None = None) -> int:
        """Resting orders in one book, or in all books."""
    @property
    def n_instruments(self) -> int: ...
