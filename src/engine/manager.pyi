"""EngineManager: the one entry point of the exchange core (src/engine/manager.py).

Owns the books (an :class:`engine.matching.Engine`), assigns order ids and input sequence numbers,
journals every accepted input BEFORE applying it (``engine.journal``), and turns the engine's fixed-size
execution records into event dicts. One book is owned by exactly one engine: with ``shards > 1 and
processes=True`` the symbols are split across engine PROCESSES (one EngineManager each, talking over
pipes) and this object is only the symbol router.

Request dict (``submit``)::

    {"type": "new"|"cancel"|"amend"|"eod",
     "account": str, "client_order_id": str, "symbol": str,
     "side": "B"|"S", "price": int (1e-9 fixed point; ignored for market), "qty": int,
     "order_type": "limit"|"market" (default "limit"), "tif": "day"|"gtc"|"ioc"|"fok" (default "day"),
     "post_only": bool (default False), "post_only_mode": "reject"|"reprice" (default manager's),
     "stp": "cancel_newest"|"cancel_oldest"|"cancel_both" (default manager's),
     "order_id": int (cancel/amend; the symbol is encoded in the id, "symbol" optional there),
     "new_price": int | None (amend; None = unchanged), "new_qty": int | None (amend: new OPEN qty; None = unchanged),
     "ts_recv": int (optional, gateway receive ns; default: the manager stamps time.time_ns() at entry.
                It is journaled, so replay is deterministic; echoed as ts_event)}

  "eod" (end of day) takes an optional "symbol" (default: all symbols) and expires DAY orders.
  Malformed requests (unknown symbol, bad enum string, missing field) are NOT journaled: they return a
  single ``rejected`` event with ``seq`` 0 and reason ``bad_request``/``unknown_symbol``.

Event dict (every list returned by submit, and every item of events())::

    {"type": "accepted"|"rejected"|"fill"|"canceled"|"replaced"|"expired",
     "seq": int (input sequence of the owning shard that caused it; 0 for a malformed request that was
            not journaled),
     "order_id": int, "client_order_id": str (the ORDER's client id, e.g. the maker's on a maker fill),
     "request_client_order_id": str (client id of the request that caused the event),
     "account": str, "symbol": str, "side": "B"|"S", "price": int, "qty": int,
     "leaves_qty": int, "cum_qty": int, "trade_id": int (fills, else 0),
     "liquidity": "maker"|"taker"|"" , "contra_account": str, "contra_order_id": int,
     "reason": str ("" or a code from engine.matching.REASONS), "ts_event": int,
     "text": str (only on not-journaled rejects: what was wrong), "token": object (engine-thread mode)}

  "qty" is the fill quantity for fills, the order quantity for accepted/replaced, and the quantity
  removed for canceled/expired.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np

FsyncPolicy = Literal["every", "batch", "interval", "none"]
StpMode = Literal["cancel_newest", "cancel_oldest", "cancel_both"]

class EngineBusy(Exception):
    """submit_nowait() could not enqueue: the engine input queue is full (gateway answers "busy")."""

class BadRequest(ValueError):
    """A request dict that cannot become an order record; ``reason`` is the event's reason code."""
    reason: str

class ShardEngine:
    """One engine: an engine.matching.Engine with the books of some symbols, their input sequence
    counter and their journal. EngineManager owns one per shard (in process, or one per engine process).
    Construction with a journal_dir recovers the state by replaying its snapshot + journal."""

    symbols: list[str]
    seq: int
    def __init__(self, symbols: list[str], symbol_ids: list[int] | None = None, *, journal_dir: str | None = None,
                 fsync: FsyncPolicy = "batch", fsync_interval_ms: int = 10, stp: StpMode = "cancel_newest",
                 post_only_mode: str = "reject", tick_size: int = 1) -> None: ...
    def submit_many(self, reqs: list[dict], tokens: list | None = None) -> list[list[dict]]: ...
    def replay_payloads(self, payloads: list[bytes], source: str = "journal") -> int:
        """Apply journal payloads (records R and Q; an unknown record type is a ValueError naming it);
        the regenerated events go to replayed_events, each request's after a ``request`` marker."""
    def snapshot(self) -> str: ...
    def state_hash(self) -> str:
        """sha256 over books, priorities, trade counters, seq, order counters, accounts, the client order
        ids of live orders and the last trades."""

class StandbyEngine:
    """Hot standby (engine.standby): follows one shard's journal live, applying it through recovery's replay,
    and can take over, fenced by the journal's lock.

    >>> sb = StandbyEngine(symbols, journal_dir); sb.start()   # follow in a thread (a data dir works too)
    >>> sb.take_over()            # while the primary lives: engine.journal.JournalLocked, still following
    >>> ... primary dies (its journal lock is released by the kernel) ...
    >>> mgr = sb.take_over()      # EngineManager continuing the sequence; holds the journal lock
    """

    def __init__(self, symbols: list[str], journal_dir: str, *, stp: StpMode = "cancel_newest",
                 post_only_mode: str = "reject", tick_size: int = 1, symbol_ids: list[int] | None = None,
                 on_events: Callable[[list[dict]], None] | None = None) -> None: ...
    error: BaseException | None
    def poll(self) -> int:
        """Apply what was journaled since the last poll; number of inputs applied."""
    def start(self, interval_s: float = 0.001) -> None: ...
    def stop(self) -> None: ...
    @property
    def seq(self) -> int: ...
    def state_hash(self) -> str: ...
    def primary_alive(self) -> bool:
        """Whether a writer holds the journal's lock."""
    def take_over(self, *, fsync: FsyncPolicy = "batch", fsync_interval_ms: int = 10, trade_log: object | None = None,
                  portfolio: object | None = None) -> EngineManager:
        """Fence (take the journal lock; JournalLocked while the primary holds it), apply the rest of the
        journal, drop a torn tail, open it for appending, return the new primary. DataDirError when there is
        no journal to take over or it cannot be applied."""

class StandbyShards:
    """Hot standby of every shard journal of an exchange's data dir (engine.standby)."""

    def __init__(self, symbols: list[str], path: str, *, shards: int | None = None, stp: StpMode = "cancel_newest",
                 post_only_mode: str = "reject", tick_size: int = 1,
                 on_events: Callable[[list[dict]], None] | None = None) -> None: ...
    def take_over(self, *, fsync: FsyncPolicy = "batch", fsync_interval_ms: int = 10, trade_log: object | None = None,
                  portfolio: object | None = None) -> EngineManager: ...

class ShardTimeout(RuntimeError):
    """A remote engine shard (engine.shard_server) did not answer within remote_timeout_s: outcome unknown."""

class ShardUnavailable(RuntimeError):
    """A remote shard is down (an earlier call timed out): the call was not sent."""

def unknown_event(req: dict, reason: str, text: str) -> dict:
    """The event answering a request whose outcome the router does not know (type "unknown")."""

class EngineManager:
    """Route orders by symbol to the engine that owns the book; journal; return execution events.

    Parameters
    ----------
    symbols : list[str]
        Tradable symbols; their index in this list is the instrument_id.
    journal_dir : str, optional
        Directory of the journal (and snapshots). When it already holds a journal the state is
        recovered by replay before the constructor returns. None: no journal.
    fsync : {"every", "batch", "interval", "none"}
        Journal durability policy (see engine.journal for the data-loss window of each).
    fsync_interval_ms : int
        Period for fsync="interval".
    shards : int
        Number of engines; symbols are assigned round robin by their index.
    processes : bool
        True: each shard is a separate OS process (multiprocessing, spawn context, pipes). False: shards
        are ShardEngine objects in this process. With shards > 1 each shard journals to
        ``journal_dir/shard-<k>`` (symbol i belongs to shard i % shards).
    stp : str
        Default self-trade prevention mode.
    post_only_mode : {"reject", "reprice"}
        Default for post-only orders that would cross.
    tick_size : int
        Price increment (1e-9 units) for every symbol.
    trade_log : engine.tradelog.TradeLogger, optional
        Gets every fill (taker side) as it happens, including fills regenerated by recovery
        (it skips trade ids it already holds, so a recovered log equals an uninterrupted one).
    portfolio : engine.portfolio.PortfolioManager, optional
        Gets every fill.
    remote : list[str], optional
        Shard servers (``python -m engine.shard_server --bind tcp://HOST:PORT``, possibly on other hosts):
        one shard per endpoint (``shards`` is then len(remote)), symbol i on ``remote[i % len(remote)]``.
        The router configures each server (symbols, journal directory ``journal_dir/shard-<k>`` (or
        ``journal_dir`` with one shard), fsync, stp, tick size) with its first call; the calls and
        events are those of the pipe transport, JSON over a DEALER/ROUTER pair. A server already
        configured with the same arguments is reused (router restart); different ones are refused.
    remote_timeout_s : float
        Longest wait for one remote call. A request whose shard does not answer in time gets one event of
        type "unknown" (reason "shard_timeout"), never a reject; the shard is then *down* (its requests are
        rejected with "shard_unavailable" at once, never sent) until a probe finds it again (a restarted
        server is re-initialised and recovers its journal). Each shard has its own lock: a dead shard
        holds up only its own symbols.
    on_settled : callable, optional
        ``on_settled([(request, events), ...])``: requests answered "unknown" got their outcome (the shard's
        late answer, or its journal after a restart). The events also go to trade_log/portfolio.
    """

    symbols: list[str]

    def __init__(
        self,
        symbols: list[str],
        *,
        journal_dir: str | None = None,
        fsync: FsyncPolicy = "batch",
        fsync_interval_ms: int = 10,
        shards: int = 1,
        processes: bool = False,
        stp: StpMode = "cancel_newest",
        post_only_mode: Literal["reject", "reprice"] = "reject",
        tick_size: int = 1,
        trade_log: object | None = None,
        portfolio: object | None = None,
        remote: list[str] | None = None,
        remote_timeout_s: float = 30.0,
        on_settled: Callable[[list[tuple[dict, list[dict]]]], None] | None = None,
    ) -> None: ...
    on_settled: Callable[[list[tuple[dict, list[dict]]]], None] | None
    settled: int
    # ---- commands (synchronous)
    def submit(self, req: dict) -> list[dict]:
        """Sequence, journal (before applying), apply one request; return its events in order."""
    def submit_many(self, reqs: list[dict], tokens: list | None = None) -> list[list[dict]]:
        """Several requests as one journal batch per shard (one fsync under "batch"); events per request.
        ``tokens`` (one per request) are copied into each event as "token"."""
    lanes_useful: bool
    def route_shard(self, req: dict) -> int:
        """The shard a request goes to (0 for what cannot be routed)."""
    def submit_lanes(self, reqs: list[dict], grace_s: float) -> tuple[list, list]:
        """Per-shard lanes (FIFO per shard): ``(results, in_flight)``, results None where the shard has not
        answered within ``grace_s``; in_flight ``[(shard, positions, future)]`` (see manager.py)."""
    def end_of_day(self, symbol: str | None = None) -> list[dict]:
        """Expire DAY orders (all symbols by default). Same as submit({"type": "eod", ...})."""
    def snapshot(self) -> None:
        """Write journal_dir/snapshot.npz (atomically) so recovery replays only the journal after it.
        Note: a PortfolioManager is rebuilt by recovery only from the replayed part of the journal."""
    def close(self, shutdown_remote: bool = False) -> None:
        """Close every shard, flush and fsync the journal. Idempotent. Shard servers (``remote``) flush
        their journal and keep running (the router did not start them) unless ``shutdown_remote``."""
    def take_replayed(self) -> list[dict]:
        """The events regenerated by the journal recovery, each request's preceded by a ``request`` marker
        (seq, account, client_order_id, dedup_key, kind); handed out once (the gateway rebuilds its state
        from them). Live requests never produce markers."""
    recovered_events: list[dict]
    def __enter__(self) -> EngineManager: ...
    def __exit__(self, *exc: object) -> None: ...
    # ---- queries
    def book(self, symbol: str, depth: int = 10) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
        """(bids, asks), best first, as (price_raw, total_qty, order_count)."""
    def bbo(self, symbol: str) -> tuple[int | None, int | None]: ...
    def last_trade(self, symbol: str) -> tuple[int, int] | None:
        """(price_raw, qty) of the last trade in symbol, or None."""
    def order(self, order_id: int) -> dict | None:
        """A resting order (dict with order_id, symbol, side, price, leaves_qty, cum_qty, account, tif) or None."""
    def state_hash(self) -> str:
        """sha256 hex over every book, trade counter and the id/sequence counters (all shards)."""
    @property
    def seq(self) -> int:
        """Last input sequence number applied (single shard) / sum over shards."""
    def symbol_of(self, order_id: int) -> str:
        """The symbol an engine-assigned order id belongs to (KeyError if none)."""
    @property
    def n_shards(self) -> int: ...
    def shard_pids(self) -> list[int]:
        """OS process ids of the engine processes (empty when shards are in-process)."""
    trade_log: object | None
    portfolio: object | None
