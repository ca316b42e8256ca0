"""The dict edge of one shard's matching engine, in native code (src/engine/shard_core.pyx).

Request dicts -> ``fh_order_req`` records (one validation, written in place) -> journal -> Engine ->
``fh_exec`` records -> event dicts. :class:`ShardCore` is the base of :class:`engine.manager.ShardEngine`;
the semantics of the dict API are documented in manager.pyi.
"""
from typing import Any

from engine.matching import Engine

REC_V1: bytes   # journal record b"R": fh_order_req, account, client order id (older journals; still read)
REC_V2: bytes   # journal record b"Q": the same plus the request's dedup key (written now)

class JournalWriteFailed(RuntimeError):
    """The journal could not take a batch: nothing of it was sequenced or applied (sequence, order counters
    and new account numbers rolled back); the owner must stop, recovery decides what reached the file."""

class BadRequest(ValueError):
    """A request dict that cannot become an order record (answered with a rejected event, not journaled)."""

    reason: str
    def __init__(self, reason: str, text: str) -> None: ...

def pack_str(s: str) -> bytes:
    """A journal string: little-endian u16 length, UTF-8 bytes."""

def reject_event(req: dict[str, Any], reason: str, text: str) -> dict[str, Any]:
    """The one event answering a request that never reached the engine."""

class ShardCore:
    engine: Engine
    journal: Any
    seq: int
    inst: dict[str, int]
    symbols: list[str]
    symbol_ids: list[int]
    local_of_global: dict[int, int]
    next_n: list[int]
    accounts: dict[str, int]
    account_names: list[str]
    clordid: dict[int, str]
    last_trades: dict[str, tuple[int, int]]
    stp: int
    reprice: bool
    def submit_many(self, reqs: list[Any], tokens: list[Any] | None = None) -> list[list[dict[str, Any]]]:
        """Validate, sequence, journal (one commit), apply. Events per request, in order; a request that
        cannot become a record (bad types, unknown symbol, client_order_id or account beyond
        engine.limits) gets one ``rejected`` event (seq 0) and is neither sequenced nor journaled. The
        sequence advances only once the journal took the batch (else JournalWriteFailed, state unchanged).
        A request's optional ``dedup_key`` (str, <= 128 bytes) is journaled with it for the gateway."""
    def apply_records(self, recs: Any, metas: list[tuple[str, str]]) -> list[list[dict[str, Any]]]:
        """Apply already journaled records (REQ_DTYPE array or bytes; recovery, hot standby): events per
        record. ``metas`` holds (account, client order id, dedup key) per record."""
