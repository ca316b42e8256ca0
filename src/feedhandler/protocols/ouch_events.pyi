"""OUCH 4.2 / 5.0 sessions -> fh_order_event records (native; see ouch_events.pyx)."""
import os
from typing import Any

import numpy as np

REASONS: tuple[str, ...]

class OuchEventDecoder:
    ver: int
    orders: dict[Any, list[Any]]
    symbol_map: dict[str, int]
    stats: dict[str, Any]
    def __init__(self, version: str = "5.0", symbols: dict[str, int] | None = None) -> None: ...
    def decode(self, sessions: Any, table: np.ndarray | None = None) -> np.ndarray: ...

def detect_version(sessions: Any, table: np.ndarray | None = None, sample: int = 64) -> str: ...
def replay_stream(path: str | os.PathLike, protocol: str = "ouch50", *, symbols: dict[str, int] | None = None,
                  max_ooo_segments: int = 1024, max_ooo_bytes: int = ...) -> tuple[np.ndarray, dict[str, Any]]: ...
def decode_streams(reassembler: Any, protocol: str = "ouch50", *,
                   symbols: dict[str, int] | None = None) -> tuple[np.ndarray, dict[str, Any]]: ...
def synth_messages(n: int, seed: int = 0, version: str = "4.2") -> list[tuple[int, str, bytes]]: ...
def synth(path: str | os.PathLike, n: int = 1000, seed: int = 0, version: str = "4.2", *, t0: int = ...,
          mss: int = 1460) -> list[tuple[int, str, bytes]]: ...

DETECT_SAMPLE: int

class OuchLiveDecoder:
    protocol: str
    dec: OuchEventDecoder | None
    streams: list[Any]
    trim_bytes: int
    trimmed: int
    records: int
    def __init__(self, protocol: str = "ouch", symbols: dict[str, int] | None = None) -> None: ...
    def feed_marks(self, reassembler: Any, marks: list[tuple[Any, int, int]]) -> np.ndarray: ...
    def finish(self, reassembler: Any) -> tuple[np.ndarray, dict[str, Any]]: ...
    def snapshot(self, reassembler: Any) -> dict[str, Any]: ...
