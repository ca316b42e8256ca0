"""The ``[http]`` configuration table (importable without the server's dependencies)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass
class HttpConfig:
    """The ``[http]`` table of the exchange configuration (``port`` set: the gateway runs)."""
    port: int = 8080
    host: str = "127.0.0.1"
    insecure_dev_auth: bool = False
    jwt_secret: str = ""                # empty: a random key per process (tokens die with it)
    jwt_ttl_s: int = 300
    max_body: int = 16_384              # bytes; larger bodies get 413 PAYLOAD_TOO_LARGE, unread
    ws_queue: int = 1024                # frames queued per WebSocket before it is closed as a slow consumer
    query_rate_per_s: int = 1000        # non-order requests per account per second (0: unlimited)
    query_burst: int = 200
    max_closed_orders: int = 100_000    # ended orders kept for GET order/{id}
    max_trades: int = 10_000            # trades kept per symbol for GET trades
    # "on": the HTTP event loop is the engine thread (when nothing else owns the engine at its start): REST
    # orders are sequenced, journaled and matched on the loop without a thread hop, one engine batch (one
    # journal commit) per loop iteration for all the requests it read; the other doors hand theirs over.
    # "off": the engine runs on the ZeroMQ gateway's worker (a thread hop each way; the loop keeps reading
    # requests while the journal fsyncs). "auto": on unless the journal fsyncs per batch or per record
    # (engine.fsync batch/every: an fsync would stop the loop), measured in bench/bench_http.py.
    engine_thread: str = "auto"

    def __post_init__(self):
        if self.engine_thread not in ("auto", "on", "off"):
            raise ValueError(f"[http] engine_thread must be auto, on or off, not {self.engine_thread!r}")


def config_defaults() -> dict:
    return {f.name: f.default for f in dataclasses.fields(HttpConfig)}
